"""The factorization-machine part of DeepFM (Guo et al. 2017).

    fm(x) = sum_f w_f[x_f]                       first order (`LinearTerms`)
          + sum_(f < g) <v_f, v_g>               second order

over the fields of the shared input layer: v_f = P_f e_f, each field's
embedding e_f (its columns of x0, `RankingInputs.slices`) projected to a
common `dim` (a numeric field: its standardized value times a learned
vector, as an FM's real-valued feature). The pairwise sum uses the O(F k)
identity sum_(f < g) <v_f, v_g> = 1/2 sum_k ((sum_f v_fk)^2 - sum_f
v_fk^2).
"""

from __future__ import annotations

from typing import Mapping, Sequence, Tuple

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from ranking import widedeep
from tfrs_pipeline import features


def pairwise_interactions(fields: tf.Tensor) -> tf.Tensor:
  """[N, F, k] field vectors -> [N, k]: 1/2 ((sum_f v_f)^2 - sum_f v_f^2);
  summed over k it is sum_(f < g) <v_f, v_g>."""
  return 0.5 * (tf.square(tf.reduce_sum(fields, axis=1))
                - tf.reduce_sum(tf.square(fields), axis=1))


class FMPart(tf.keras.layers.Layer):
  """First- and second-order FM terms -> ([N, units], penalty).

  Output column 0 is the FM (first order + sum_k of the pairwise vector);
  with `units` = 2, column 1 (the list score) weighs the pairwise vector
  with a learned [k] vector (starting at 1) and has its own first-order
  weights.
  """

  def __init__(self, feature_list: Sequence[features.Feature],
               vocabularies: features.Vocabularies,
               slices: Mapping[str, slice], dim: int, units: int,
               **kwargs):
    super().__init__(**kwargs)
    self.slices = dict(slices)
    self.first_order = widedeep.LinearTerms(feature_list, vocabularies,
                                            units, name="first_order")
    self.projections = {name: tf.keras.layers.Dense(
        dim, use_bias=False, name=f"{name}_fm_projection")
                        for name in self.slices}
    self.score_weights = (tf.keras.layers.Dense(
        1, use_bias=False, kernel_initializer="ones", name="fm_score")
                          if units == 2 else None)

  def fields(self, x0: tf.Tensor) -> tf.Tensor:
    """x0 [N, D] -> projected field vectors [N, F, dim]."""
    return tf.stack([self.projections[name](x0[:, s])
                     for name, s in self.slices.items()], axis=1)

  def call(self, inputs, x0: tf.Tensor, training=False
           ) -> Tuple[tf.Tensor, tf.Tensor]:
    first, penalty = self.first_order(inputs, training=training)
    pairs = pairwise_interactions(self.fields(x0))  # [N, dim]
    second = [tf.reduce_sum(pairs, axis=1, keepdims=True)]
    if self.score_weights is not None:
      second.append(self.score_weights(pairs))
    return first + tf.concat(second, axis=1), penalty
