"""One row per candidate: how ranking layers read pointwise and list batches.

A pointwise batch holds one (user, movie) example per row: every input
[B]. A batch of candidate lists (`is_list`) holds the user and context
inputs [B] (bags of ids ragged [B, None]) and the movie and source inputs
[B, L]; the ranking layers score B * L rows, in row-major order (row
b * L + l is candidate l of list b).
"""

from __future__ import annotations

from typing import Dict, Mapping, Tuple

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from tfrs_pipeline import features

PER_CANDIDATE = (features.MOVIE, features.SOURCE)


def is_list(inputs: Mapping[str, tf.Tensor]) -> bool:
  """True for a batch of candidate lists (`movie_id` [B, L])."""
  return inputs["movie_id"].shape.rank == 2


def list_size(inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
  return tf.shape(inputs["movie_id"])[1]


def flat_inputs(inputs: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """One row per candidate: [B, L] inputs flattened to [B * L], [B] inputs
  repeated L times (a pointwise batch is returned as it is)."""
  if not is_list(inputs):
    return dict(inputs)
  size = list_size(inputs)
  out = {}
  for k, v in inputs.items():
    if isinstance(v, tf.RaggedTensor):
      continue  # per-user bags of ids: embedded once per list
    out[k] = (tf.reshape(v, [-1]) if v.shape.rank == 2
              else tf.repeat(v, size, axis=0))
  return out


def _per_candidate(layer: features.FeatureEmbedding, inputs) -> bool:
  return not is_list(inputs) or layer.feature.entity in PER_CANDIDATE


def embed_rows(layer: features.FeatureEmbedding,
               inputs: Mapping[str, tf.Tensor],
               per_row: Mapping[str, tf.Tensor], training=False
               ) -> tf.Tensor:
  """`layer`'s embedding of every row: [B * L, dim] ([B, dim] pointwise).
  `per_row` = `flat_inputs(inputs)`; user-side features of a list are
  embedded once per list and repeated."""
  if _per_candidate(layer, inputs):
    return layer(per_row, training=training)
  return tf.repeat(layer(inputs, training=training), list_size(inputs),
                   axis=0)


def row_ids(layer: features.FeatureEmbedding,
            inputs: Mapping[str, tf.Tensor],
            per_row: Mapping[str, tf.Tensor]
            ) -> Tuple[tf.Tensor, tf.Tensor]:
  """The looked-up ids of `layer`'s feature in every row, padded:
  (ids int64 [N, T], valid bool [N, T]). One id per row (T = 1) for
  `categorical` / `bucketized` features; the tokens of a
  `multi_categorical` / `text` value (id 0, padding, is not valid)."""
  if layer.feature.kind == "numeric":
    raise ValueError(f"{layer.feature.name} is numeric: it has no ids")
  source = per_row if _per_candidate(layer, inputs) else inputs
  ids = (source[layer.ids_key] if layer.ids_key in source
         else layer.ids(source))
  if isinstance(ids, tf.RaggedTensor):
    ids = ids.to_tensor(0)
  ids = tf.cast(ids, tf.int64)
  if ids.shape.rank == 1:
    ids = ids[:, tf.newaxis]
    valid = tf.ones_like(ids, tf.bool)
  else:
    valid = tf.not_equal(ids, 0)
  if not _per_candidate(layer, inputs):
    size = list_size(inputs)
    ids, valid = (tf.repeat(t, size, axis=0) for t in (ids, valid))
  return ids, valid
