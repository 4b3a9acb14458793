"""What the runs under RUNS were trained with, from their config.json
(`runs.RunDir.write_config`), read without TensorFlow: serving takes the
train/test split from the runs, never from a flag."""

from __future__ import annotations

import json
import os
from typing import Optional

from tfrs_pipeline import errors


def _read(path: str) -> Optional[dict]:
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.InputError(f"{path}: not a run config ({e})") from e
  if not isinstance(config, dict):
    raise errors.InputError(f"{path}: not a run config (not an object)")
  return config


def split(runs_dir: str, given: Optional[str] = None) -> Optional[str]:
  """The train/test split of the runs under RUNS: `data.split` of
  RUNS/sources/config.json (whose catalogue marks the test ratings) and
  of RUNS/retrieval/config.json, which must agree; None when neither
  records it. A `given` split (--split) that contradicts them raises
  `errors.ConfigError`."""
  found = {}
  for part in ("sources", "retrieval"):
    path = os.path.join(runs_dir, part, "config.json")
    value = ((_read(path) or {}).get("data") or {}).get("split")
    if value:
      found[path] = value
  if len(set(found.values())) > 1:
    raise errors.ConfigError(
        "the runs were trained on different splits: " + ", ".join(
            f"{p} has split {s!r}" for p, s in found.items())
        + "; retrain them with the same --split")
  value = next(iter(found.values()), None)
  if given is not None and value is not None and given != value:
    raise errors.ConfigError(
        f"--split {given} contradicts the runs: {next(iter(found))} was "
        f"trained with split {value!r} (the split is read from the runs: "
        "drop --split)")
  return value


def ranking_score(runs_dir: str) -> Optional[str]:
  """The served ranker's score (`RankingConfig.score`, `rating` for a
  DCN ranker) from RUNS/ranking/config.json; None if not recorded."""
  config = (_read(os.path.join(runs_dir, "ranking", "config.json")) or {}
            ).get("ranking") or {}
  return "rating" if config.get("model") == "dcn" else config.get("score")
