"""SavedModel export helpers shared by the retrieval and ranking stages.

* `EntityTable`: user or movie features looked up by id inside the model
  (`tf.lookup.StaticHashTable` per input of `features.INPUTS`), so a
  signature can take just `user_id` / `movie_id`; unknown ids get each
  input's `default`, which the embedding layers map to OOV buckets.
* `input_specs`: `tf.TensorSpec`s for a signature that takes every input
  explicitly, derived from the feature specification.
* `save_model`: `tf.saved_model.save` without the Keras call traces,
  into a version being written (`export_layout.new_version`: a run's
  exports are versions published by one rename, never half-written).
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf
# tf-keras keeps the switch for its layers' call traces in SavedModels here
# (what `model.save(save_traces=False)` sets).
from tf_keras.src.saving.legacy.saved_model import utils as keras_saved_model

from tfrs_pipeline import features

SCANN_SAVE_OPTIONS = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])


def input_specs(inputs: Sequence[features.Input]) -> Dict[str, tf.TensorSpec]:
  """{name: TensorSpec([None], dtype)} for each input, in spec order."""
  return {i.name: tf.TensorSpec([None], i.dtype, name=i.name)
          for i in inputs}


class EntityTable(tf.Module):
  """Looks up an entity's raw inputs by id: ids [B] -> {input: [B]}.

  Args:
    key: the id input, `user_id` or `movie_id`.
    columns: numpy columns of the table (from `pipeline.Data.table`),
      already converted by `pipeline.to_inputs` (strings as str).
    inputs: which inputs to store (default: all inputs of the key's
      entity).
  """

  def __init__(self, key: str, columns: Mapping[str, np.ndarray],
               inputs: Optional[Sequence[features.Input]] = None,
               name: Optional[str] = None):
    super().__init__(name=name or f"{key}_table")
    entity = features.INPUT_BY_NAME[key].entity
    self.key = key
    self.inputs = [i for i in (inputs or features.entity_inputs(entity))
                   if i.name != key]
    keys = tf.constant(np.asarray(columns[key]).astype(str))
    self.size = int(keys.shape[0])
    self._known = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            keys, tf.ones_like(keys, dtype=tf.int64)), default_value=0)
    self._tables = {}
    for spec in self.inputs:
      values = np.asarray(columns[spec.name])
      if spec.dtype == tf.string:
        values = tf.constant(values.astype(str))
      else:
        values = tf.constant(values.astype(spec.dtype.as_numpy_dtype))
      self._tables[spec.name] = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(keys, values),
          default_value=tf.constant(spec.default, dtype=spec.dtype))

  def __call__(self, ids: tf.Tensor) -> Dict[str, tf.Tensor]:
    out = {self.key: ids}
    for name, table in self._tables.items():
      out[name] = table.lookup(ids)
    return out

  def known(self, ids: tf.Tensor) -> tf.Tensor:
    """Bool [B]: whether each id is in the table."""
    return tf.equal(self._known.lookup(ids), 1)


def complete_inputs(inputs: Dict[str, tf.Tensor],
                    specs: Sequence[features.Input], batch: tf.Tensor,
                    timestamp: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Adds each input of `specs` missing from `inputs` (looked up by id):
  `timestamp` for the time context, else the input's default."""
  for spec in specs:
    if spec.name in inputs:
      continue
    if spec.name == "timestamp":
      inputs[spec.name] = tf.fill([batch], timestamp)
    else:
      inputs[spec.name] = tf.fill([batch], tf.constant(spec.default,
                                                       spec.dtype))
  return inputs


def save_model(obj, export_dir: str, signatures=None,
               options: Optional[tf.saved_model.SaveOptions] = None,
               log=print) -> str:
  """`tf.saved_model.save` into `export_dir` (inside a version being
  written: `export_layout.new_version` publishes it); returns the path."""
  # Without the Keras layers' own call traces: the exports are served by
  # their signatures and functions, never rebuilt as Keras models, and the
  # traces made the ranking model take 4.4 s to load instead of ~1 s.
  with keras_saved_model.keras_option_scope(save_traces=False):
    tf.saved_model.save(obj, export_dir, signatures=signatures,
                        options=options)
  log(f"[export] wrote {export_dir}")
  return export_dir


def call_signature(fn, values: Mapping[str, object], size: int
                   ) -> Dict[str, np.ndarray]:
  """Calls a SavedModel signature with numpy-like `values`; inputs it
  takes that are not given get their `features.INPUTS` default, in the
  input's shape ([size] or [size, L] as the signature declares, L from
  a given per-candidate input). Returns numpy outputs."""
  specs = dict(fn.structured_input_signature[1])
  width = next((np.shape(v)[1] for n, v in values.items()
                if n in specs and specs[n].shape.rank == 2), 1)
  args = {}
  for name, spec in specs.items():
    if name in values:
      v = np.asarray(values[name])
    elif name in features.INPUT_BY_NAME:
      shape = [size] if spec.shape.rank == 1 else [size, width]
      v = np.full(shape, features.INPUT_BY_NAME[name].default)
    else:
      raise ValueError(f"signature input {name!r} has no value")
    dtype = spec.dtype
    v = v.astype(str) if dtype == tf.string else v.astype(
        dtype.as_numpy_dtype)
    args[name] = tf.constant(v, dtype=dtype)
  return {k: v.numpy() for k, v in fn(**args).items()}
