"""Building and loading the enriched MovieLens-1M TFDS dataset.

`prepare` builds the TFDS configs into a data directory; `load` returns
`tf.data` datasets, rebuilding first when the raw source changed since the
last build (the source fingerprint is stored in the dataset metadata).

Data directory: `--data_dir`, else `$TFRS_DATA_DIR`, else
`~/tensorflow_datasets` (TFDS' own default).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from typing import Dict, Iterable, Iterator, Optional

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf
import tensorflow_datasets as tfds

from data import movielens_enriched, raw, splits

DATA_DIR_ENV = "TFRS_DATA_DIR"
DEFAULT_CONFIGS = ("random", "movies", "users")


def resolve_data_dir(data_dir: Optional[str]) -> str:
  return os.path.expanduser(
      data_dir or os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets")


def _source_id(raw_dir: Optional[str]) -> str:
  return raw.fingerprint(raw_dir) if raw_dir else movielens_enriched.ML1M_URL


def builder(config: str, data_dir: Optional[str] = None,
            raw_data: Optional[str] = None, on_bad_line: str = "error"
            ) -> movielens_enriched.MovielensEnriched:
  return movielens_enriched.MovielensEnriched(
      config=config, data_dir=resolve_data_dir(data_dir),
      raw_data_dir=raw.resolve_raw_dir(raw_data), on_bad_line=on_bad_line)


def _is_current(b, source: str, on_bad_line: str) -> bool:
  """Built from this source with these options and the current spec
  (`movielens_enriched.spec_hash`: a new stored input rebuilds)."""
  if not b.is_prepared():
    return False
  meta = b.info.metadata or {}
  return (meta.get("source_id") == source
          and meta.get("on_bad_line") == on_bad_line
          and meta.get("spec_hash") == movielens_enriched.spec_hash(
              b.builder_config.name))


def prepare(data_dir: Optional[str] = None, raw_data: Optional[str] = None,
            configs: Iterable[str] = DEFAULT_CONFIGS,
            on_bad_line: str = "error", overwrite: bool = False,
            log=print) -> Dict[str, dict]:
  """Builds (or reuses) each config; returns the metadata of each."""
  raw_dir = raw.resolve_raw_dir(raw_data)
  source = _source_id(raw_dir)
  out = {}
  for config in configs:
    b = builder(config, data_dir, raw_data, on_bad_line)
    if not overwrite and b.is_prepared() and raw_dir is None:
      # No source given: nothing says the data changed, so an existing
      # build is used as it is (never deleted to try a download).
      log(f"[data] {b.info.full_name}: using the existing build in "
          f"{b.data_dir}")
    elif not overwrite and _is_current(b, source, on_bad_line):
      log(f"[data] {b.info.full_name}: up to date in {b.data_dir}")
    else:
      with build_lock(b, log):
        # Another process may have built it while this one waited.
        b = builder(config, data_dir, raw_data, on_bad_line)
        if not overwrite and _is_current(b, source, on_bad_line):
          log(f"[data] {b.info.full_name}: built by another process")
        else:
          b = _build(config, b, data_dir, raw_data, raw_dir, source,
                     on_bad_line, log)
    out[config] = dict(b.info.metadata)
    skipped = out[config].get("skipped", {}).get("skipped_total", 0)
    if skipped:
      log(f"[data] skipped {skipped} bad lines: "
          f"{out[config]['skipped']['skipped_lines']}")
  return out


@contextlib.contextmanager
def build_lock(b, log=print) -> Iterator[None]:
  """Exclusive lock (`fcntl.flock`) on building one config in one data
  directory, so two processes never build into the same folder; a second
  one waits, then finds the build done."""
  folder = os.path.dirname(os.path.dirname(b.data_dir))  # .../<name>/<config>
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f".{b.builder_config.name}.lock")
  with open(path, "a", encoding="utf-8") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      log(f"[data] {b.info.full_name}: another process is building it; "
          f"waiting for {path}")
      fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _build(config, b, data_dir, raw_data, raw_dir, source, on_bad_line, log):
  """Builds one config. A previous build is moved aside first and put
  back if the new build fails, so a failed rebuild loses nothing."""
  aside = None
  if b.is_prepared():
    log(f"[data] {b.info.full_name}: raw source or options changed, "
        "rebuilding")
    aside = f"{b.data_dir}.previous-{os.getpid()}"
    os.replace(b.data_dir, aside)
    b = builder(config, data_dir, raw_data, on_bad_line)
  log(f"[data] building {b.info.full_name} from "
      f"{raw_dir or 'the official download'} ...")
  b.info.metadata["source_id"] = source
  b.info.metadata["on_bad_line"] = on_bad_line
  try:
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  except Exception as e:
    if aside:
      shutil.rmtree(b.data_dir, ignore_errors=True)
      os.replace(aside, b.data_dir)
      log(f"[data] build failed; kept the previous build in {b.data_dir}")
    if isinstance(e, (raw.BadInputError, raw.MissingDataError)):
      raise
    if raw_dir is None:  # network errors surface from deep in TFDS
      raise raw.MissingDataError(
          f"could not download MovieLens-1M ({type(e).__name__}: "
          f"{str(e)[:200]}). " + raw.HOW_TO_SUPPLY) from e
    raise
  if aside:
    shutil.rmtree(aside, ignore_errors=True)
  b = builder(config, data_dir, raw_data, on_bad_line)
  log(f"[data] wrote {b.data_dir}")
  return b


def load(config: str, split: str, data_dir: Optional[str] = None,
         raw_data: Optional[str] = None, on_bad_line: str = "error",
         log=print) -> tf.data.Dataset:
  """A split of a config as a `tf.data.Dataset` of TFDS examples.

  Builds the config first if it is missing or stale.
  """
  prepare(data_dir, raw_data, [config], on_bad_line, log=log)
  b = builder(config, data_dir, raw_data, on_bad_line)
  return b.as_dataset(split=split, shuffle_files=False)


def describe(data_dir: Optional[str] = None, raw_data: Optional[str] = None,
             split: str = "random", on_bad_line: str = "error",
             log=print) -> dict:
  """Counts of the built dataset (see README, "Data")."""
  meta = prepare(data_dir, raw_data, [split, "movies", "users"], on_bad_line,
                 log=log)
  b = builder(split, data_dir, raw_data, on_bad_line)
  m = meta[split]
  return {
      "split_rule": split,
      "ratings": m["ratings"],
      "train": b.info.splits["train"].num_examples,
      "test": b.info.splits["test"].num_examples,
      "users": builder("users", data_dir, raw_data,
                       on_bad_line).info.splits["train"].num_examples,
      "users_with_ratings": m["users_with_ratings"],
      "movies": builder("movies", data_dir, raw_data,
                        on_bad_line).info.splits["train"].num_examples,
      "rated_movies": m["rated_movies"],
      "director_coverage": m["director_coverage"],
      "star_coverage": m["star_coverage"],
      "skipped_lines": m["skipped"]["skipped_total"],
      "skipped_by_file": m["skipped"]["skipped_lines"],
      "zip_codes_cleaned": m["skipped"]["zip_codes_cleaned"],
      "source": m["source"],
      "data_dir": b.data_dir,
  }


def describe_json(**kwargs) -> str:
  return json.dumps(describe(**kwargs), indent=2)


SPLIT_RULES = splits.SPLITS
