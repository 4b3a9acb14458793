"""Run directories: one folder holds a run's config, metrics and logs.

    RUN/config.json         the dataclass configs of the run
    RUN/vocabularies.json   vocabularies fit on the train split
    RUN/metrics.json        evaluation results
    RUN/logs/               TensorBoard (`make tensorboard` points here;
                            `write_hparams` names the HParams trials)
    RUN/checkpoints/        training checkpoints (resume)
    RUN/export/             SavedModels (written atomically)
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from typing import Any, Dict, Sequence, Tuple

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp


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


def hparam_values(config: Any) -> Dict[str, Any]:
  """A dataclass config as TensorBoard HParams values (bool, number or
  string; a tuple becomes "a,b")."""
  out = {}
  for k, v in dataclasses.asdict(config).items():
    if isinstance(v, (tuple, list)):
      v = ",".join(map(str, v))
    out[k] = v if isinstance(v, (bool, int, float, str)) else str(v)
  return out


def trial_name(run_dir: str, config: Any,
               keys: Sequence[Tuple[str, str]]) -> str:
  """A readable HParams trial name: the run directory's name, then
  `short=value` for each (field, short) of `keys` (the bare value when
  short is ""), e.g. "retrieval lr=0.003 dim=128 epochs=10"."""
  values = hparam_values(config)
  parts = [os.path.basename(os.path.abspath(run_dir))]
  for field, short in keys:
    value = values[field]
    parts.append(f"{short}={value}" if short else str(value))
  return " ".join(parts)


def write_hparams(run_dir: str, config: Any,
                  keys: Sequence[Tuple[str, str]]) -> str:
  """Writes the HParams summary of `config` to the default summary writer
  under the trial name `trial_name(run_dir, config, keys)` (the name the
  HParams dashboard lists); returns that name."""
  name = trial_name(run_dir, config, keys)
  hp.hparams(hparam_values(config), trial_id=name)
  return name


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
