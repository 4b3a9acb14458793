"""The wide part of Wide & Deep (Cheng et al. 2016): a linear model over
raw and crossed categorical feature values.

    wide(x) = sum_f w_f[x_f] + sum_(a, b) mean_(i in x_a, j in x_b)
              w_ab[cross(i, j)]                                [N, units]

* `LinearTerms`: one weight vector per value of every feature (the
  feature's own pooling for bags of ids: genres, rated movies; w_f * x for
  a numeric feature); also DeepFM's first-order term.
* `CrossedTerms`: one weight vector per pair of values of two features
  (e.g. `user_age:movie_genres`), looked up by the two features' ids in
  the shared input layer's vocabularies (exact when the pairs fit
  `buckets`, else hashed into `buckets`); a bag (genres) gives the mean
  over its pairs.

Weights start at 0 (the model starts from its deep part and bias); the
returned penalty is the batch mean of the squared looked-up weights.
`units` is 1 (rating) or 2 (rating and list score).
"""

from __future__ import annotations

import dataclasses
from typing import List, Mapping, Sequence, Tuple

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from ranking import rows
from tfrs_pipeline import errors, features

_HASH = 2654435761  # Knuth's multiplicative hash of a pair index


def parse_crosses(crosses: Sequence[str]) -> List[Tuple[str, str]]:
  """`("a:b", ...)` -> [(a, b), ...]; raises `errors.ConfigError` unless
  each is two spec features (`features.FEATURES`) with ids (not
  numeric)."""
  out = []
  for cross in crosses:
    names = tuple(n.strip() for n in str(cross).split(":"))
    if len(names) != 2 or not all(names):
      raise errors.ConfigError(
          f"wide_crosses: {cross!r} is not a pair 'feature_a:feature_b'")
    for name in names:
      spec = features.FEATURE_BY_NAME.get(name)
      if spec is None:
        raise errors.ConfigError(
            f"wide_crosses: {cross!r} names {name!r}, not a feature of the "
            f"spec (tfrs_pipeline/features.py); known: "
            f"{', '.join(features.FEATURE_BY_NAME)}")
      if spec.kind == "numeric":
        raise errors.ConfigError(
            f"wide_crosses: {cross!r}: {name} is numeric, only features "
            "with ids can be crossed")
    out.append(names)
  return out


def _zero_init(layer: features.FeatureEmbedding) -> features.FeatureEmbedding:
  if layer.embedding is not None:
    layer.embedding.embeddings_initializer = "zeros"
  return layer


class LinearTerms(tf.keras.layers.Layer):
  """sum_f w_f[x_f] over `feature_list`: raw inputs -> ([N, units],
  penalty)."""

  def __init__(self, feature_list: Sequence[features.Feature],
               vocabularies: features.Vocabularies, units: int, **kwargs):
    super().__init__(**kwargs)
    self.weights_of = [
        _zero_init(features.FeatureEmbedding(
            dataclasses.replace(f, dim=units), vocabularies,
            name=f"{f.name}_linear"))
        for f in feature_list]
    # A numeric feature is its standardized value x: w_f * x.
    self.numeric = {f.name: tf.keras.layers.Dense(
        units, use_bias=False, kernel_initializer="zeros",
        name=f"{f.name}_linear_weight")
                    for f in feature_list if f.kind == "numeric"}

  def call(self, inputs: Mapping[str, tf.Tensor], training=False
           ) -> Tuple[tf.Tensor, tf.Tensor]:
    per_row = rows.flat_inputs(inputs)
    terms = []
    for layer in self.weights_of:
      w = rows.embed_rows(layer, inputs, per_row, training)
      if layer.feature.name in self.numeric:
        w = self.numeric[layer.feature.name](w)
      terms.append(w)
    stacked = tf.stack(terms, axis=1)  # [N, F, units]
    penalty = tf.reduce_mean(tf.reduce_sum(tf.square(stacked), axis=[1, 2]))
    return tf.reduce_sum(stacked, axis=1), penalty


class _Untracked:
  """Holds layers without making them sublayers (no duplicate weights)."""

  def __init__(self, value):
    self.value = value


class CrossedTerms(tf.keras.layers.Layer):
  """sum over crosses (a, b) of the mean w_ab over the rows' value pairs.

  Args:
    crosses: pairs of feature names (`parse_crosses`).
    encoder: the shared input layer's `FeatureEncoder` (its lookups give
      the ids; each crossed feature must be one of its features).
    units: outputs per row.
    buckets: most weights per cross (more value pairs are hashed).
  """

  def __init__(self, crosses: Sequence[Tuple[str, str]],
               encoder: features.FeatureEncoder, units: int,
               buckets: int, **kwargs):
    super().__init__(**kwargs)
    encoded = {f.name for f in encoder.features}
    for pair in crosses:
      missing = [n for n in pair if n not in encoded]
      if missing:
        raise errors.ConfigError(
            f"wide_crosses: {':'.join(pair)}: {', '.join(missing)} is not "
            "a feature of this model (add it with --extra_features)")
    # The encoder's lookups, not tracked here (the input layer owns them).
    self._lookups = _Untracked([tuple(encoder.embedding_of(n) for n in pair)
                                for pair in crosses])
    self.sizes, self.tables = [], []
    for a, b in self.crosses:
      exact = a.vocabulary_size * b.vocabulary_size
      size = exact if exact <= buckets else int(buckets)
      self.sizes.append((b.vocabulary_size, size, exact > buckets))
      self.tables.append(tf.keras.layers.Embedding(
          size, units, embeddings_initializer="zeros",
          name=f"{a.feature.name}_x_{b.feature.name}"))

  @property
  def crosses(self) -> List[Tuple[features.FeatureEmbedding,
                                  features.FeatureEmbedding]]:
    """The two features' `FeatureEmbedding`s (their `ids`) per cross."""
    return self._lookups.value

  def call(self, inputs: Mapping[str, tf.Tensor]
           ) -> Tuple[tf.Tensor, tf.Tensor]:
    per_row = rows.flat_inputs(inputs)
    total, penalty = 0.0, 0.0
    for (a, b), (size_b, size, hashed), table in zip(
        self.crosses, self.sizes, self.tables):
      ids_a, valid_a = rows.row_ids(a, inputs, per_row)  # [N, Ta]
      ids_b, valid_b = rows.row_ids(b, inputs, per_row)  # [N, Tb]
      pair = ids_a[:, :, tf.newaxis] * size_b + ids_b[:, tf.newaxis, :]
      if hashed:
        pair = tf.math.floormod(pair * _HASH, size)
      valid = tf.cast(valid_a[:, :, tf.newaxis] & valid_b[:, tf.newaxis, :],
                      tf.float32)[..., tf.newaxis]  # [N, Ta, Tb, 1]
      w = table(pair) * valid  # [N, Ta, Tb, units]
      count = tf.maximum(tf.reduce_sum(valid, axis=[1, 2]), 1.0)
      total += tf.reduce_sum(w, axis=[1, 2]) / count
      penalty += tf.reduce_mean(tf.reduce_sum(tf.square(w), axis=[1, 2, 3])
                                / count[:, 0])
    return total, penalty


class WidePart(tf.keras.layers.Layer):
  """`LinearTerms` over `feature_list` + `CrossedTerms`: -> ([N, units],
  penalty)."""

  def __init__(self, feature_list: Sequence[features.Feature],
               vocabularies: features.Vocabularies,
               encoder: features.FeatureEncoder,
               crosses: Sequence[Tuple[str, str]], units: int,
               buckets: int, **kwargs):
    super().__init__(**kwargs)
    self.linear = LinearTerms(feature_list, vocabularies, units,
                              name="linear")
    self.crossed = (CrossedTerms(crosses, encoder, units, buckets,
                                 name="crossed") if crosses else None)

  def call(self, inputs, training=False) -> Tuple[tf.Tensor, tf.Tensor]:
    out, penalty = self.linear(inputs, training=training)
    if self.crossed is not None:
      crossed, more = self.crossed(inputs)
      out, penalty = out + crossed, penalty + more
    return out, penalty
