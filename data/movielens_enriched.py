"""TFDS builder: MovieLens-1M ratings enriched with director and star.

Configs:
  `random`, `temporal`: one example per rating, splits `train` / `test`
      (rules in `data/splits.py`); exactly the features of TFDS's
      `movielens/1m-ratings` (taken from that builder, so names and dtypes
      cannot drift) plus `raw_user_age`, `director`, `star`,
      `release_year`.
  `movies`: one example per movie (the candidate corpus), split `train`
      (the name TFDS' own `movielens/1m-movies` uses for a table).
  `users`: one example per user (demographics), split `train`.

Sources: `raw_data_dir` (a directory in the layout of `data/raw.py`) or,
when it is None, the official `ml-1m.zip` and the MeLU enrichment file at
a pinned commit, downloaded by TFDS and verified against
`data/checksums.tsv`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import os
import tempfile
from typing import Optional

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import numpy as np
import tensorflow_datasets as tfds

from data import raw, splits
from tfrs_pipeline import features

ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
MELU_COMMIT = "f70c8ff91471193cd598bc241c6b0f22665f6375"
MELU_URL = ("https://raw.githubusercontent.com/hoyeoplee/MeLU/"
            f"{MELU_COMMIT}/movielens/ml-1m/movies_extrainfos.dat")
RATINGS_CONFIGS = splits.SPLITS
TABLE_CONFIGS = ("movies", "users")
# Columns of TFDS's movielens users that are no model input but kept.
_USER_EXTRA = ("raw_user_age", "user_occupation_text")


def _stored(entity: str):
  return features.stored_inputs(entity)


def _movie_columns():
  return tuple(i.name for i in _stored(features.MOVIE))


def _user_columns():
  return tuple(i.name for i in _stored(features.USER)) + _USER_EXTRA


@functools.lru_cache(maxsize=None)
def tfds_movielens_features() -> tfds.features.FeaturesDict:
  """The features of TFDS's own `movielens/1m-ratings` (no download)."""
  builder = tfds.builder("movielens/1m-ratings",
                         data_dir=tempfile.mkdtemp(prefix="tfds_ml_"))
  return builder.info.features


def _features(config: str) -> tfds.features.FeaturesDict:
  """The config's features, from the spec (`features.Input.stored`):
  MOVIELENS inputs as TFDS's movielens has them, the others with their
  numpy type; the ratings configs keep every movielens feature."""
  base = dict(tfds_movielens_features().items())
  added = {i.name: i.stored for i in features.stored_inputs()
           if i.stored != features.MOVIELENS}
  if config in RATINGS_CONFIGS:
    extra = {k: v for k, v in added.items()
             if features.INPUT_BY_NAME[k].entity in (features.USER,
                                                     features.MOVIE)}
    return tfds.features.FeaturesDict(
        {**base, "raw_user_age": np.float32, **extra})
  columns = _movie_columns() if config == "movies" else _user_columns()
  out = {}
  for name in columns:
    if name in added:
      out[name] = added[name]
    elif name == "raw_user_age":
      out[name] = np.float32
    else:
      out[name] = base[name]
  return tfds.features.FeaturesDict(out)


def spec_hash(config: str) -> str:
  """A hash of what the spec makes the config store: its features and,
  for added columns, where they come from. A build with another hash is
  rebuilt (`tfrs_pipeline.dataset`)."""
  parts = [repr(_features(config))]
  for i in features.stored_inputs():
    if i.stored != features.MOVIELENS:
      source = _source_of(i.raw)
      parts.append(f"{i.name}:{i.stored}:{source}")
  return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _source_of(fn) -> str:
  """A stable text of an `Input.raw`: the column name, or the function's
  source (its bytecode when the source is not in a file)."""
  if fn is None or isinstance(fn, str):
    return str(fn)
  try:
    return inspect.getsource(fn)
  except (OSError, TypeError):
    code = getattr(fn, "__code__", None)
    return (code.co_code.hex() + repr(code.co_consts) if code is not None
            else repr(fn))


def _with_added_columns(frame, entity: str):
  """The raw table with the spec's added columns of `entity` computed
  (`Input.raw`: a function of the table, or another column's name)."""
  frame = frame.copy()
  for i in _stored(entity):
    if i.stored == features.MOVIELENS:
      continue
    if callable(i.raw):
      frame[i.name] = i.raw(frame)
    elif i.raw:
      frame[i.name] = frame[i.raw]
    if i.name not in frame.columns:
      raise raw.BadInputError(f"the raw {entity}s have no column {i.name!r} "
                              "(set Input.raw in tfrs_pipeline/features.py)")
  return frame


class MovielensEnriched(tfds.core.GeneratorBasedBuilder):
  """MovieLens-1M with per-movie director, star and release year."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=n, description=d) for n, d in (
          ("random", "ratings; test iff sha256(f'{user}:{movie}') % 5 == 0"),
          ("temporal", "ratings; each user's latest 20% are test"),
          ("movies", "all movies (the candidate corpus)"),
          ("users", "all users with demographics"),
      )
  ]

  def __init__(self, *, raw_data_dir: Optional[str] = None,
               on_bad_line: str = "error", **kwargs):
    self._raw_data_dir = raw_data_dir
    self._on_bad_line = on_bad_line
    self._raw = None  # set while download_and_prepare runs
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=_features(self.builder_config.name),
        homepage="https://grouplens.org/datasets/movielens/1m/",
        metadata=tfds.core.MetadataDict(),
    )

  def download_and_prepare(self, *args, **kwargs):
    """Reads and checks a local raw directory first, so a bad or empty
    file stops the run before TFDS starts a build."""
    if self._raw_data_dir:
      self._raw = raw.load_raw(self._raw_data_dir, self._on_bad_line)
    try:
      return super().download_and_prepare(*args, **kwargs)
    finally:
      self._raw = None

  def _load(self, dl_manager) -> raw.RawData:
    if self._raw is not None:
      return self._raw
    if self._raw_data_dir:
      return raw.load_raw(self._raw_data_dir, self._on_bad_line)
    extracted = dl_manager.download_and_extract(ML1M_URL)
    enrichment = dl_manager.download(MELU_URL)
    ml1m, _ = raw.read_ml1m_files(os.fspath(extracted))
    with open(enrichment, "rb") as f:
      return raw.load_raw_files(ml1m, f.read(), self._on_bad_line,
                                source=ML1M_URL)

  def _split_generators(self, dl_manager):
    data = self._load(dl_manager)
    self.info.metadata.update(describe_raw(data))
    name = self.builder_config.name
    self.info.metadata["spec_hash"] = spec_hash(name)
    data = dataclasses.replace(
        data, movies=_with_added_columns(data.movies, features.MOVIE),
        users=_with_added_columns(data.users, features.USER))
    if name == "movies":
      return {"train": self._generate_table(data.movies, _movie_columns(),
                                          "movie_id")}
    if name == "users":
      return {"train": self._generate_table(data.users, _user_columns(),
                                          "user_id")}
    examples = raw.ratings_examples(data)
    test = splits.test_mask(data.ratings, name)
    for split, mask in (("train", ~test), ("test", test)):
      if not mask.any():
        raise raw.BadInputError(
            f"ratings.dat: the {name} split rule leaves no {split} ratings "
            f"(of {len(test)})")
    return {
        "train": self._generate_ratings(examples[~test]),
        "test": self._generate_ratings(examples[test]),
    }

  def _generate_table(self, frame, columns, key):
    for row in frame.loc[:, list(columns)].itertuples(index=False):
      ex = row._asdict()
      yield ex[key], ex

  def _generate_ratings(self, frame):
    columns = list(self.info.features.keys())
    for row in frame.loc[:, columns].itertuples(index=False):
      ex = row._asdict()
      yield f"{ex['user_id']}:{ex['movie_id']}", ex

  # pylint: disable=arguments-differ
  def _generate_examples(self, *args, **kwargs):  # pragma: no cover
    raise NotImplementedError("examples come from _split_generators")


def describe_raw(data: raw.RawData) -> dict:
  """Counts that `tfrs-pipeline data describe` prints (split-independent)."""
  rated = set(data.ratings.movie_id)
  movies = data.movies[data.movies.movie_id.isin(rated)]
  return {
      "source": data.source,
      "ratings": int(len(data.ratings)),
      "users": int(len(data.users)),
      "users_with_ratings": int(data.ratings.user_id.nunique()),
      "movies": int(len(data.movies)),
      "rated_movies": int(len(rated)),
      "director_coverage": {
          "known": int((movies.director != raw.UNKNOWN).sum()),
          "of_rated_movies": int(len(movies)),
          "fraction": float((movies.director != raw.UNKNOWN).mean()),
      },
      "star_coverage": {
          "known": int((movies.star != raw.UNKNOWN).sum()),
          "of_rated_movies": int(len(movies)),
          "fraction": float((movies.star != raw.UNKNOWN).mean()),
      },
      "skipped": data.report.as_dict(),
  }
