"""Exact resume (`tfrs_pipeline.resume`): a `train retrieval` and a `train
ranking` process killed with SIGKILL after their first epoch's checkpoint
and rerun with the same command end with the same weights, per-epoch
history, TensorBoard scalars and metrics as an uninterrupted run.

Tolerance: none (max abs diff == 0). Both runs execute the same ops in
the same order on the same CPU with the same thread pools, and every
input and random draw of epoch e depends on (seed, e) only, so the
floating-point results are bitwise equal.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from tfrs_pipeline import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RETRIEVAL = ["--epochs=2", "--batch_size=32", "--members=1",
             "--passes_per_epoch=1", "--eval_sample=20",
             "--hidden_units=16", "--embedding_dim=8", "--history_length=8",
             "--top_k=20"]
RANKING = ["--epochs=2", "--lists_per_batch=16", "--two_tower=10",
           "--ease=10", "--ease_liked=5", "--popularity=5", "--list_size=20",
           "--patience=5", "--max_train_seconds=0"]
# Keys of metrics.json that measure time or name paths, not the model.
VOLATILE = ("seconds", "_ms", "qps", "speedup", "build_s", "export",
            "epochs_trained", "total")


def _command(stage, data, run_dir, extra):
  return [sys.executable, "-m", "tfrs_pipeline.app.cli", "train", stage,
          f"--raw_data={data.raw_data}", f"--data_dir={data.data_dir}",
          f"--run_dir={run_dir}", *extra]


def _start(cmd, log_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.Popen(cmd, stdout=open(log_path, "w"),
                          stderr=subprocess.STDOUT, cwd=REPO, env=env)


def _wait(proc, log_path, timeout=300):
  assert proc.wait(timeout=timeout) == 0, open(log_path).read()[-3000:]


def _kill_after_first_checkpoint(proc, run_dir, timeout=300):
  index = os.path.join(run_dir, "checkpoints", "checkpoint")
  deadline = time.time() + timeout
  while not os.path.exists(index):
    assert proc.poll() is None, "exited before its first checkpoint"
    assert time.time() < deadline
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert tf.train.latest_checkpoint(os.path.dirname(index)).endswith("ckpt-1")


def _pair(stage, data, tmp, extra):
  """(uninterrupted run, killed-then-rerun run) directories and logs;
  both started at once (2 cores), the second killed and rerun."""
  full, resumed = str(tmp / f"{stage}_full"), str(tmp / f"{stage}_resumed")
  a = _start(_command(stage, data, full, extra), full + ".log")
  b = _start(_command(stage, data, resumed, extra), resumed + ".log")
  _kill_after_first_checkpoint(b, resumed)
  b = _start(_command(stage, data, resumed, extra), resumed + ".rerun.log")
  _wait(a, full + ".log")
  _wait(b, resumed + ".rerun.log")
  return full, resumed, open(resumed + ".rerun.log").read()


def _checkpoint(run_dir):
  path = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
  reader = tf.train.load_checkpoint(path)
  state = json.loads(reader.get_tensor("state/.ATTRIBUTES/VARIABLE_VALUE"))
  tensors = {name: reader.get_tensor(name)
             for name, _ in tf.train.list_variables(path)
             if not name.startswith(("state/", "_CHECKPOINTABLE"))}
  return path, tensors, state


def _scalars(run_dir):
  out = []
  for sub in ("train", "validation"):
    for path in sorted(glob.glob(os.path.join(run_dir, "logs", sub,
                                              "events.out.tfevents.*"))):
      for event in tf.compat.v1.train.summary_iterator(path):
        for v in event.summary.value:
          out.append((sub, v.tag, event.step,
                      float(tf.make_ndarray(v.tensor))))
  return sorted(out)


def _flat(d, prefix=""):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _flat(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v


def _metrics(run_dir):
  with open(os.path.join(run_dir, "metrics.json")) as f:
    metrics = dict(_flat(json.load(f)))
  return {k: v for k, v in metrics.items()
          if not any(s in k for s in VOLATILE)}


def _assert_same_run(full, resumed, epochs):
  path_a, a, state_a = _checkpoint(full)
  path_b, b, state_b = _checkpoint(resumed)
  assert path_a.endswith(f"ckpt-{epochs}") and path_b.endswith(
      f"ckpt-{epochs}")
  assert a.keys() == b.keys() and len(a) > 10
  diffs = {k: float(np.max(np.abs(a[k].astype(np.float64) - b[k])))
           for k in a if a[k].dtype.kind in "fiu" and a[k].size}
  assert max(diffs.values()) == 0, sorted(diffs.items(),
                                         key=lambda kv: -kv[1])[:5]
  assert len(state_a["history"]) == epochs
  assert state_a["history"] == state_b["history"]
  scalars = _scalars(full)
  assert {s[2] for s in scalars} == set(range(epochs))
  assert scalars == _scalars(resumed)
  metrics = _metrics(full)
  assert len(metrics) > 3
  assert metrics == _metrics(resumed)


@pytest.fixture(scope="module")
def data(fake_raw, tmp_path_factory):
  """DataConfig of the generated data, its TFDS build done here (a run
  that builds it reads it in another order than one that finds it)."""
  config = pipeline.DataConfig(raw_data=fake_raw["path"],
                               data_dir=str(tmp_path_factory.mktemp("tfds")))
  pipeline.load_data(config, log=lambda *a: None)
  return config


@pytest.fixture(scope="module")
def retrieval_runs(data, tmp_path_factory):
  return _pair("retrieval", data, tmp_path_factory.mktemp("resume"),
               RETRIEVAL)


def test_retrieval_resumes_exactly(retrieval_runs):
  full, resumed, log = retrieval_runs
  assert "restored" in log and "ckpt-1 (epoch 1 of 2)" in log
  with open(os.path.join(resumed, "metrics.json")) as f:
    assert json.load(f)["epochs_trained"] == 1
  _assert_same_run(full, resumed, epochs=2)


def test_ranking_resumes_exactly(retrieval_runs, data, tmp_path_factory):
  retrieval_full = retrieval_runs[0]
  full, resumed, log = _pair(
      "ranking", data, tmp_path_factory.mktemp("resume"),
      [*RANKING, f"--retrieval_run={retrieval_full}"])
  assert "restored" in log and "ckpt-1 (epoch 1 of 2)" in log
  assert "[ranking] epoch 1:" not in log  # epoch 1 was not trained again
  _assert_same_run(full, resumed, epochs=2)
