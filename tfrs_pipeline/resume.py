"""Exact resume of Keras training: `fit` checkpoints every epoch, and a
run killed at any point and rerun with the same command ends with the
weights and metrics of an uninterrupted run.

    result = resume.fit(model, epoch_data, epochs=10, steps_per_epoch=S,
                        seed=42, directory=run.checkpoints, logdir=run.logs)

What makes epoch e the same whether or not the run was interrupted:

* input: epoch e's batches are `epoch_data(e)` (e an int64 tensor; shuffle
  with `seed=epoch_seed(seed, e)`), so the input position is recomputed
  instead of saved (no shuffle buffer in the checkpoint);
* random ops (dropout, held-out histories, sampled negatives: stateful TF
  ops, seeded when the train step is traced): at each epoch start the
  global seed is set to `epoch_seed(seed, e)` and the train step is
  retraced, so epoch e's random stream depends on (seed, e) only;
* state: one `tf.train.Checkpoint` per epoch holds the model, the
  optimizer (slots, step counter, so the learning-rate schedule too), the
  best weights of `EarlyStopping` and a JSON state (epoch, per-epoch
  history, fit seconds, the callbacks' `get_state()`). CheckpointManager
  writes the files and then the `checkpoint` index, so a kill mid-save
  keeps the previous one.
* TensorBoard: the epoch scalars (`logs/train`, `logs/validation`, as
  Keras's TensorBoard callback names them, with `learning_rate`) are
  written from the history after each checkpoint; a resumed run rewrites
  them from the saved history, dropping what the killed run wrote after
  its last checkpoint.

A callback may keep state across a resume with `get_state() -> JSON` and
`set_state(state)` (applied after its `on_train_begin`).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from tfrs_pipeline import errors

STATE_VERSION = 1
_TB_DIRS = ("train", "validation")


def epoch_seed(seed, epoch):
  """Seed of epoch `epoch` (0-based; an int or an int64 tensor)."""
  return (seed * 1_000_003 + epoch * 7_919 + 1) % 2_147_483_647


@dataclasses.dataclass
class FitResult:
  """history: {metric: one value per epoch, from the first epoch};
  initial_epoch: epochs restored from the checkpoint; epochs: epochs done;
  seconds: fit seconds of this process; total_seconds: of all runs."""
  history: Dict[str, List[float]]
  initial_epoch: int
  epochs: int
  seconds: float
  total_seconds: float
  stopped: bool


class EarlyStopping(tf.keras.callbacks.EarlyStopping):
  """Keras's EarlyStopping whose counters and best weights survive a
  resume (the best weights in the checkpoint, `checkpoint_objects`)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._saved_best: List[tf.Variable] = []
    self._pending: Optional[Dict[str, Any]] = None

  def checkpoint_objects(self, model: tf.keras.Model) -> Dict[str, Any]:
    if not self.restore_best_weights:
      return {}
    self._saved_best = [tf.Variable(w, trainable=False)
                        for w in model.get_weights()]
    return {"best_weights": self._saved_best}

  def get_state(self) -> Dict[str, Any]:
    if self.best_weights is not None:
      for var, value in zip(self._saved_best, self.best_weights):
        var.assign(value)
    return {"wait": self.wait, "stopped_epoch": self.stopped_epoch,
            "best": float(self.best), "best_epoch": self.best_epoch,
            "has_best_weights": self.best_weights is not None}

  def set_state(self, state: Dict[str, Any]) -> None:
    self._pending = state

  def on_train_begin(self, logs=None):
    super().on_train_begin(logs)
    state, self._pending = self._pending, None
    if state:
      self.wait, self.stopped_epoch = state["wait"], state["stopped_epoch"]
      self.best, self.best_epoch = state["best"], state["best_epoch"]
      if state["has_best_weights"] and self._saved_best:
        self.best_weights = [v.numpy() for v in self._saved_best]


def _scalar(value: Any) -> Optional[float]:
  try:
    return float(np.asarray(value))
  except (TypeError, ValueError):
    return None


def _learning_rate(optimizer) -> Optional[float]:
  schedule = getattr(optimizer, "_learning_rate", None)
  if isinstance(schedule, tf.keras.optimizers.schedules.LearningRateSchedule):
    return float(schedule(optimizer.iterations))
  return None


class _Scalars:
  """TensorBoard epoch scalars, named as Keras's TensorBoard callback
  names them (`epoch_<metric>`; `val_` ones under logs/validation)."""

  def __init__(self, logdir: Optional[str]):
    self._logdir = logdir
    self._writers: Dict[str, Any] = {}

  def clear(self) -> None:
    if not self._logdir:
      return
    for sub in _TB_DIRS:
      for path in glob.glob(os.path.join(self._logdir, sub,
                                         "events.out.tfevents.*")):
        os.remove(path)

  def write(self, epoch: int, logs: Dict[str, float]) -> None:
    if not self._logdir:
      return
    parts = {"train": {}, "validation": {}}
    for k, v in logs.items():
      if k.startswith("val_"):
        parts["validation"][k[4:]] = v
      else:
        parts["train"][k] = v
    for sub, values in parts.items():
      if not values:
        continue
      if sub not in self._writers:
        self._writers[sub] = tf.summary.create_file_writer(
            os.path.join(self._logdir, sub))
      with self._writers[sub].as_default():
        for k, v in sorted(values.items()):
          tf.summary.scalar(f"epoch_{k}", v, step=epoch)
      self._writers[sub].flush()


class _Reseed(tf.keras.callbacks.Callback):
  """Each epoch: the global seed from (seed, epoch), the train step
  retraced (its stateful random ops are seeded when traced)."""

  def __init__(self, seed: int):
    super().__init__()
    self._seed = seed

  def on_epoch_begin(self, epoch, logs=None):
    tf.random.set_seed(epoch_seed(self._seed, epoch))
    self.model.make_train_function(force=True)


class _Checkpointer(tf.keras.callbacks.Callback):
  """After every epoch (and after the other callbacks): history, state
  and checkpoint, then the TensorBoard scalars."""

  def __init__(self, manager, state_var, state, stateful, scalars, log):
    super().__init__()
    self._manager, self._var, self._state = manager, state_var, state
    self._stateful, self._scalars, self._log = stateful, scalars, log

  def on_train_begin(self, logs=None):
    self._start = time.perf_counter()
    self._seconds = self._state["seconds"]

  def on_epoch_end(self, epoch, logs=None):
    entry = {k: f for k, f in ((k, _scalar(v)) for k, v in
                               (logs or {}).items()) if f is not None}
    lr = _learning_rate(self.model.optimizer)
    if lr is not None:
      entry["learning_rate"] = lr
    state = self._state
    state["history"].append(entry)
    state["epoch"] = epoch + 1
    state["stopped"] = bool(self.model.stop_training)
    state["seconds"] = self._seconds + time.perf_counter() - self._start
    state["callbacks"] = [cb.get_state() for cb in self._stateful]
    self._var.assign(json.dumps(state))
    path = self._manager.save(checkpoint_number=epoch + 1)
    self._log(f"[resume] epoch {epoch + 1} checkpoint {path}")
    self._scalars.write(epoch, entry)


def _history(entries: Sequence[Dict[str, float]]) -> Dict[str, List[float]]:
  keys = sorted({k for e in entries for k in e})
  return {k: [e.get(k, float("nan")) for e in entries] for k in keys}


def _build(model: tf.keras.Model, batch) -> None:
  """Creates the model's and the optimizer's variables (a checkpoint is
  restored into existing variables, before any train step is traced)."""
  if hasattr(model, "compute_loss"):
    model.compute_loss(batch, training=True)
  else:
    model(batch, training=True)
  model.optimizer.build(model.trainable_variables)


def fit(model: tf.keras.Model,
        epoch_data: Callable[[tf.Tensor], tf.data.Dataset], *,
        epochs: int, steps_per_epoch: int, seed: int, directory: str,
        logdir: Optional[str] = None,
        callbacks: Sequence[tf.keras.callbacks.Callback] = (),
        validation_data: Optional[tf.data.Dataset] = None,
        signature: Optional[Dict[str, Any]] = None,
        example_batch: Any = None,
        max_to_keep: int = 2, log: Callable[[str], Any] = print,
        verbose: int = 0) -> FitResult:
  """Trains compiled `model` for `epochs` epochs of `steps_per_epoch`
  batches of `epoch_data(e)`, resuming from the latest checkpoint in
  `directory` (module docstring).

  `example_batch`: a train batch to build the variables with (default:
  epoch 0's first). `signature`: JSON of what shapes the training (e.g. the config); a
  checkpoint saved with another one is refused (`errors.ConfigError`).
  Callbacks run in the given order before the checkpoint; training ends
  early when one sets `model.stop_training` (the state records it, so a
  rerun does not train on). Returns the whole run's history.
  """
  tf.random.set_seed(seed)
  if example_batch is None:
    example_batch = next(iter(epoch_data(tf.constant(0, tf.int64))))
  _build(model, example_batch)
  state_var = tf.Variable("", dtype=tf.string, trainable=False)
  stateful = [cb for cb in callbacks if hasattr(cb, "get_state")]
  objects: Dict[str, Any] = {}
  for i, cb in enumerate(stateful):
    for k, v in getattr(cb, "checkpoint_objects", lambda m: {})(
        model).items():
      objects[f"callback{i}_{k}"] = v
  checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                   state=state_var, **objects)
  manager = tf.train.CheckpointManager(checkpoint, directory,
                                       max_to_keep=max_to_keep)
  state = {"version": STATE_VERSION, "epoch": 0, "history": [],
           "seconds": 0.0, "stopped": False, "callbacks": [],
           "signature": signature}
  scalars = _Scalars(logdir)
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    saved = json.loads(state_var.numpy().decode() or "{}")
    if saved.get("version") != STATE_VERSION:
      raise errors.ConfigError(
          f"{manager.latest_checkpoint}: not a checkpoint of this version "
          f"(no resume state); use a new --run_dir")
    if json.loads(json.dumps(signature)) != saved.get("signature"):
      raise errors.ConfigError(
          f"{directory} holds a checkpoint trained with other settings; "
          f"resume with the same settings, or use a new --run_dir")
    state.update(saved)
    for cb, cb_state in zip(stateful, state["callbacks"]):
      cb.set_state(cb_state)
    log(f"[resume] restored {manager.latest_checkpoint} (epoch "
        f"{state['epoch']} of {epochs}"
        f"{', stopped early' if state['stopped'] else ''})")
  initial = int(state["epoch"])
  scalars.clear()
  for e, entry in enumerate(state["history"]):
    scalars.write(e, entry)

  seconds = 0.0
  stopped = bool(state["stopped"])
  all_callbacks = [_Reseed(seed), *callbacks,
                   _Checkpointer(manager, state_var, state, stateful,
                                 scalars, log)]
  if initial < epochs and not stopped:
    tf.random.set_seed(seed)
    stream = tf.data.Dataset.range(initial, epochs).flat_map(
        epoch_data).prefetch(tf.data.AUTOTUNE)
    start = time.perf_counter()
    model.fit(stream, epochs=epochs, initial_epoch=initial,
              steps_per_epoch=steps_per_epoch,
              validation_data=validation_data, callbacks=all_callbacks,
              verbose=verbose)
    seconds = time.perf_counter() - start
  else:  # nothing to train: the callbacks' end of training (best weights)
    hooks = tf.keras.callbacks.CallbackList(list(callbacks), model=model)
    hooks.on_train_begin()
    hooks.on_train_end()
  return FitResult(history=_history(state["history"]), initial_epoch=initial,
                   epochs=int(state["epoch"]), seconds=seconds,
                   total_seconds=float(state["seconds"]),
                   stopped=bool(state["stopped"]))
