"""What the server needs from RUNS, checked before anything heavy loads.

`check(runs)` looks at the newest complete version of each run's export
(`export_layout`) and returns one `Component` per part the server uses:

    sources     RUNS/sources/export/V/sources/{ease,ease_liked,popularity}.npz
                and cascade.json (the candidate sources)
    catalog     RUNS/sources/export/V/sources/catalog.npz (movies, users,
                ratings: every route)
    retrieval   RUNS/retrieval/export/V/retrieval (two-tower SavedModel)
    candidates  RUNS/retrieval/export/V/candidates.npz (two-tower
                embeddings; /similar)
    ranking     RUNS/ranking/export/V/ranking (SavedModel, `rank_lists`)

The pass is cheap (no TensorFlow: file sizes against the version's
manifest, SavedModel files, `.npz` zip CRCs and keys) and every problem
names its file. A component is `ok`, `missing` or `broken`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Tuple

from tfrs_pipeline import errors, export_layout

SOURCE_FILES = ("ease", "ease_liked", "popularity")  # cascade.FittedSources


@dataclasses.dataclass
class Component:
  """One part the server loads, in the newest version of its run."""
  name: str
  run: str  # the run's directory name under RUNS
  files: Tuple[str, ...]  # inside the version
  kind: str  # "saved_model", "npz" or "files"
  keys: Tuple[str, ...] = ()  # an npz's required arrays
  version: Optional[int] = None
  path: Optional[str] = None  # files[0] in the version
  problems: List[errors.Error] = dataclasses.field(default_factory=list)

  @property
  def state(self) -> str:
    if not self.problems:
      return "ok"
    return ("missing" if all(isinstance(p, errors.MissingError)
                             for p in self.problems) else "broken")

  def summary(self) -> dict:
    return {"state": self.state, "version": self.version,
            "path": self.path,
            "problem": "; ".join(str(p) for p in self.problems) or None}


def components() -> List[Component]:
  return [
      Component("sources", "sources",
                tuple(f"sources/{n}.npz" for n in SOURCE_FILES)
                + ("sources/cascade.json",), "files"),
      Component("catalog", "sources", ("sources/catalog.npz",), "npz",
                ("kind",)),
      Component("retrieval", "retrieval", ("retrieval",), "saved_model"),
      Component("candidates", "retrieval", ("candidates.npz",), "npz",
                ("movie_ids", "embeddings")),
      Component("ranking", "ranking", ("ranking",), "saved_model"),
  ]


def _check_one(c: Component, version_dir: str,
               manifest_problems: List[errors.Error]) -> None:
  paths = [os.path.join(version_dir, f) for f in c.files]
  c.path = paths[0]
  # The manifest's size check, for this component's files only.
  manifest = os.path.join(version_dir, export_layout.MANIFEST)
  for p in manifest_problems:
    text = str(p)
    if text.startswith(manifest) or any(
        text.startswith(q + os.sep) or text.startswith(q + ":")
        for q in paths):
      c.problems.append(p)
  if c.problems:
    return
  if c.kind == "saved_model":
    c.problems += export_layout.check_saved_model(paths[0])
  elif c.kind == "npz":
    c.problems += export_layout.check_npz(paths[0], c.keys)
  else:
    for p in paths:
      if not os.path.isfile(p):
        c.problems.append(errors.MissingError(f"{p}: missing"))
      elif p.endswith(".npz"):
        c.problems += export_layout.check_npz(p)


def check(runs_dir: str) -> Dict[str, Component]:
  """name -> `Component` of every part the server needs from RUNS."""
  out = {}
  per_run: Dict[str, tuple] = {}
  for c in components():
    if c.run not in per_run:
      base = export_layout.run_export(os.path.join(runs_dir, c.run))
      try:
        version_dir = export_layout.latest(base)
      except errors.MissingError:
        per_run[c.run] = (None, [errors.MissingError(
            f"{base}: no complete export version (train it: make "
            "train)")])
      else:
        per_run[c.run] = (version_dir,
                          export_layout.check_files(version_dir))
    version_dir, problems = per_run[c.run]
    if version_dir is None:
      c.problems = list(problems)
    else:
      c.version = export_layout.version_of(version_dir)
      _check_one(c, version_dir, problems)
    out[c.name] = c
  return out


def problems(found: Dict[str, Component]) -> List[errors.Error]:
  """Every problem of `check`'s components (each names its file)."""
  seen, out = set(), []
  for c in found.values():
    for p in c.problems:
      if str(p) not in seen:
        seen.add(str(p))
        out.append(p)
  return out


def error(found: Dict[str, Component]) -> Optional[errors.Error]:
  """One typed error naming every problem (the first one's type), or
  None when every component is ok."""
  found_problems = problems(found)
  if not found_problems:
    return None
  first = found_problems[0]
  return type(first)("broken or missing export: "
                     + "; ".join(str(p) for p in found_problems))
