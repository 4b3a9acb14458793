"""Run directories: one folder holds a run's config, metrics and logs.

    RUN/config.json         the dataclass configs of the run
    RUN/vocabularies.json   vocabularies fit on the train split
    RUN/metrics.json        evaluation results
    RUN/logs/               TensorBoard (`make tensorboard` points here)
    RUN/checkpoints/        training checkpoints (resume)
    RUN/export/             SavedModels (written atomically)
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from typing import Any, Dict

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf


def _jsonable(obj: Any) -> Any:
  if dataclasses.is_dataclass(obj):
    return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
  if isinstance(obj, dict):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, (np.floating,)):
    return float(obj)
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  return obj


def write_json(path: str, obj: Any) -> str:
  """Writes JSON atomically (temp file, then rename)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(_jsonable(obj), f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)
  return path


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


@dataclasses.dataclass
class RunDir:
  """Paths inside a run directory."""
  path: str

  def __post_init__(self):
    os.makedirs(self.path, exist_ok=True)

  def file(self, *parts: str) -> str:
    return os.path.join(self.path, *parts)

  @property
  def logs(self) -> str:
    return self.file("logs")

  @property
  def checkpoints(self) -> str:
    return self.file("checkpoints")

  @property
  def export(self) -> str:
    return self.file("export")

  def write_config(self, **configs) -> str:
    return write_json(self.file("config.json"),
                      {**configs, "written_at": time.strftime("%FT%T%z")})

  def write_metrics(self, metrics: Dict[str, Any]) -> str:
    return write_json(self.file("metrics.json"), metrics)


def set_seeds(seed: int) -> None:
  """Seeds Python, NumPy and TensorFlow (op-level determinism is not
  forced: it would slow training; results vary within noise)."""
  random.seed(seed)
  np.random.seed(seed)
  tf.random.set_seed(seed)


class Timer:
  """`with Timer() as t: ...; t.seconds`."""

  def __enter__(self):
    self._start = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self._start
    return False
