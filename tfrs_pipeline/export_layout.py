"""Versioned exports: where a run's export lives, how a new one is
published, and a cheap check of its files (no TensorFlow imported, so a
server can check its exports in a second and exit before loading).

    RUN/export/
      1/ 2/ ...               complete versions (TF Serving's integer
                              versions), each with MANIFEST inside
      .tmp-PID-XXXX/          a version being written

Each export step writes everything that belongs together (retrieval: the
SavedModels and `candidates.npz`; sources: the fitted sources and
`catalog.npz`; ranking: its SavedModel and `cascade.json`) into a
temporary directory, adds MANIFEST (every file and its size) and
publishes it by one `os.rename` to the next integer: a reader sees a
whole version or none. `latest(base)` is the newest complete version;
temporary directories of dead processes are removed at the next export;
the newest KEEP_VERSIONS versions are kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from typing import Iterator, List, Optional, Sequence

import numpy as np

from tfrs_pipeline import errors

EXPORT = "export"  # RUN/export: the base of a run's versions
MANIFEST = "export.json"
KEEP_VERSIONS = 3
_FORMAT = "tfrs_pipeline.export/1"
_TMP = ".tmp-"
# Temporary names of this layout (.tmp-PID-...) and of the unversioned
# one before it (NAME.tmp-PID, NAME.old-PID, NAME.tmpPID.npz).
_STALE = re.compile(r"(?:^\.tmp-|\.tmp-|\.old-|\.tmp)(\d+)")


def versions(base: str) -> List[int]:
  """The complete versions under `base` (integer names with MANIFEST),
  oldest first."""
  try:
    names = os.listdir(base)
  except OSError:
    return []
  return sorted(int(n) for n in names if n.isdigit() and os.path.isfile(
      os.path.join(base, n, MANIFEST)))


def latest(base: str) -> str:
  """The newest complete version of `base` (RUN/export); MissingError
  when there is none."""
  found = versions(base)
  if not found:
    raise errors.MissingError(f"no complete export in {base}: train first "
                              "(make train)")
  return os.path.join(base, str(found[-1]))


def run_export(run_dir: str) -> str:
  """RUN/export, the base of a run's versions."""
  return os.path.join(run_dir, EXPORT)


def locate(run_dir: str, *parts: str) -> str:
  """A path inside the newest complete version of RUN's export."""
  return os.path.join(latest(run_export(run_dir)), *parts)


def version_of(path: str) -> Optional[int]:
  """The version number of a path inside a version directory."""
  for part in reversed(os.path.normpath(path).split(os.sep)):
    if part.isdigit():
      return int(part)
  return None


def _alive(pid: int) -> bool:
  if pid == os.getpid():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def remove_stale(base: str, log=print) -> List[str]:
  """Removes the temporary directories and files under `base` left by
  processes that are gone (killed exports); returns their paths."""
  removed = []
  try:
    names = os.listdir(base)
  except OSError:
    return removed
  for name in names:
    m = _STALE.search(name)
    if not m or name.isdigit() or _alive(int(m.group(1))):
      continue
    path = os.path.join(base, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      with contextlib.suppress(OSError):
        os.remove(path)
    removed.append(path)
  if removed:
    log(f"[export] removed {len(removed)} stale temporary export(s): "
        + ", ".join(removed))
  return removed


class Version:
  """A version being written: files go under `tmp`; `path` is set once
  it is published."""

  def __init__(self, base: str, tmp: str, kind: str):
    self.base, self.tmp, self.kind = base, tmp, kind
    self.path: Optional[str] = None
    self.number: Optional[int] = None

  def final(self, path: str) -> str:
    """Where a path written under `tmp` is after publishing."""
    return os.path.join(self.path, os.path.relpath(path, self.tmp))


def _manifest(tmp: str, kind: str) -> dict:
  files = {}
  for d, _, names in os.walk(tmp):
    for n in names:
      p = os.path.join(d, n)
      files[os.path.relpath(p, tmp)] = os.path.getsize(p)
  return {"format": _FORMAT, "kind": kind, "created": time.time(),
          "files": dict(sorted(files.items()))}


def _publish(version: Version, keep: int) -> None:
  manifest = _manifest(version.tmp, version.kind)
  with open(os.path.join(version.tmp, MANIFEST), "w") as f:
    json.dump(manifest, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  names = [n for n in os.listdir(version.base) if n.isdigit()]
  number = max((int(n) for n in names), default=0) + 1
  while True:  # another exporter may take a number first
    final = os.path.join(version.base, str(number))
    try:
      os.rename(version.tmp, final)
      break
    except OSError:
      if not os.path.exists(final):
        raise
      number += 1
  version.path, version.number = final, number
  for old in versions(version.base)[:-keep] if keep else ():
    shutil.rmtree(os.path.join(version.base, str(old)), ignore_errors=True)


@contextlib.contextmanager
def new_version(base: str, kind: str, keep: int = KEEP_VERSIONS,
                log=print) -> Iterator[Version]:
  """Writes a new version of `base` (RUN/export): the block writes into
  `version.tmp`; on success it is published as the next integer version
  (`version.path`), on an exception removed. Stale temporary directories
  are removed first."""
  os.makedirs(base, exist_ok=True)
  remove_stale(base, log)
  tmp = tempfile.mkdtemp(prefix=f"{_TMP}{os.getpid()}-", dir=base)
  version = Version(base, tmp, kind)
  try:
    yield version
    _publish(version, keep)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  log(f"[export] published {version.path} ({kind})")


# --------------------------------------------------------------------------
# Checks: cheap (sizes, zip directories and CRCs), naming file and problem.


def read_manifest(version_dir: str) -> dict:
  path = os.path.join(version_dir, MANIFEST)
  try:
    with open(path) as f:
      manifest = json.load(f)
  except FileNotFoundError:
    raise errors.MissingError(f"{path}: missing (not a complete export "
                              "version)") from None
  except (OSError, ValueError) as e:
    raise errors.InputError(f"{path}: unreadable ({e})") from e
  if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
    raise errors.InputError(f"{path}: not an export manifest")
  return manifest


def check_files(version_dir: str) -> List[errors.Error]:
  """Each file MANIFEST lists is there with its size."""
  try:
    manifest = read_manifest(version_dir)
  except errors.Error as e:
    return [e]
  problems: List[errors.Error] = []
  for rel, size in manifest.get("files", {}).items():
    path = os.path.join(version_dir, rel)
    try:
      actual = os.path.getsize(path)
    except OSError:
      problems.append(errors.MissingError(f"{path}: missing"))
      continue
    if actual != size:
      problems.append(errors.InputError(
          f"{path}: {actual} bytes, the export wrote {size} "
          f"({'truncated' if actual < size else 'changed'})"))
  return problems


def check_saved_model(directory: str) -> List[errors.Error]:
  """saved_model.pb and the variables index and data files are there and
  not empty."""
  pb = os.path.join(directory, "saved_model.pb")
  if not os.path.isdir(directory):
    return [errors.MissingError(f"{directory}: missing (no SavedModel)")]
  problems: List[errors.Error] = []
  variables = os.path.join(directory, "variables")
  index = os.path.join(variables, "variables.index")
  data = sorted(n for n in (os.listdir(variables) if os.path.isdir(
      variables) else ()) if n.startswith("variables.data-"))
  for path in [pb, index] + [os.path.join(variables, n) for n in data]:
    if not os.path.isfile(path):
      problems.append(errors.MissingError(f"{path}: missing"))
    elif os.path.getsize(path) == 0:
      problems.append(errors.InputError(f"{path}: empty"))
  if os.path.isfile(index) and not data:
    problems.append(errors.MissingError(
        f"{os.path.join(variables, 'variables.data-00000-of-00001')}: "
        "missing"))
  return problems


def check_npz(path: str, keys: Sequence[str] = ()) -> List[errors.Error]:
  """An `.npz` that numpy opens, whose members pass their CRC and that
  holds `keys`."""
  if not os.path.isfile(path):
    return [errors.MissingError(f"{path}: missing")]
  try:
    with zipfile.ZipFile(path) as z:
      bad = z.testzip()
      if bad is not None:
        return [errors.InputError(f"{path}: member {bad} is corrupt")]
    with np.load(path, allow_pickle=False) as f:
      missing = [k for k in keys if k not in f.files]
  except Exception as e:  # pylint: disable=broad-except  (zip, zlib, OS)
    return [errors.InputError(f"{path}: not a readable .npz "
                              f"({type(e).__name__}: {e})")]
  if missing:
    return [errors.InputError(f"{path}: no {', '.join(missing)}")]
  return []
