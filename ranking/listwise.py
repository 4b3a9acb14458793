"""Listwise ranking losses and metrics over candidate lists.

A batch holds B lists of L candidates: logits [B, L], graded gains
[B, L] (0 = not a positive) and a mask [B, L] (1 = a real candidate,
0 = padding).

* `softmax_cross_entropy` (the default): the list's softmax over its
  candidates against the gains normalized to a distribution,
  -sum_i (g_i / sum_j g_j) log softmax(s)_i (Cao et al. 2007, ListNet
  with top-one probabilities; the softmax loss of Bruch et al. 2019,
  a bound on NDCG). Chosen over ListMLE because it needs no sampled
  permutation of tied gains (most of a list's gains are 0) and costs one
  log-softmax.
* `list_mle`: the Plackett-Luce likelihood of the candidates ordered by
  gain (Xia et al. 2008), ties broken at random; for comparison.

Lists without a positive contribute 0 and are not counted in the mean.
Written in tf-keras beside TFRS: TF-Ranking needs TF < 2.16 and Keras-RS
is Keras 3 only.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

# How a labelled candidate's held-out rating r becomes its gain:
# `binary` 1 for any rating (the user watched it), `rating` r / 5,
# `liked` 1 for r >= 4 and 0.1 below (watched, not liked).
GAINS = ("binary", "rating", "liked")
_NEG = -1e9


def gains(ratings: tf.Tensor, kind: str) -> tf.Tensor:
  """Held-out ratings [B, L] (0 = unlabelled) -> gains [B, L]."""
  rated = tf.cast(ratings > 0, tf.float32)
  if kind == "binary":
    return rated
  if kind == "rating":
    return rated * ratings / 5.0
  if kind == "liked":
    return rated * tf.where(ratings >= 4.0, 1.0, 0.1)
  raise ValueError(f"gain must be one of {GAINS}, got {kind!r}")


def _masked(logits: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  return tf.where(mask > 0, logits, _NEG)


def softmax_cross_entropy(logits: tf.Tensor, gain: tf.Tensor,
                          mask: tf.Tensor) -> tf.Tensor:
  """Mean over lists with a positive of -sum_i p_i log softmax(s)_i,
  p = gain / sum(gain), padding excluded. Returns a scalar."""
  gain = gain * mask
  total = tf.reduce_sum(gain, axis=1)
  has = tf.cast(total > 0, tf.float32)
  target = gain / tf.maximum(total, 1e-12)[:, tf.newaxis]
  log_p = tf.nn.log_softmax(_masked(logits, mask), axis=1)
  per_list = -tf.reduce_sum(target * tf.where(mask > 0, log_p, 0.0), axis=1)
  return tf.reduce_sum(per_list * has) / tf.maximum(tf.reduce_sum(has), 1.0)


def list_mle(logits: tf.Tensor, gain: tf.Tensor, mask: tf.Tensor,
             seed: int = 0) -> tf.Tensor:
  """Mean over lists with a positive of the ListMLE negative
  log-likelihood of the order by gain (random tie order); scalar."""
  noise = tf.random.stateless_uniform(tf.shape(gain), [seed, 0]) * 1e-3
  order = tf.argsort(tf.where(mask > 0, gain + noise, -1.0), axis=1,
                     direction="DESCENDING")
  s = tf.gather(_masked(logits, mask), order, batch_dims=1)
  m = tf.gather(mask, order, batch_dims=1)
  # log sum_{j >= i} exp(s_j): reverse cumulative logsumexp.
  tail = tf.reverse(tf.math.cumulative_logsumexp(tf.reverse(s, [1]), axis=1),
                    [1])
  per_list = tf.reduce_sum((tail - s) * m, axis=1)
  has = tf.cast(tf.reduce_sum(gain * mask, axis=1) > 0, tf.float32)
  return tf.reduce_sum(per_list * has) / tf.maximum(tf.reduce_sum(has), 1.0)


LOSSES = {"softmax": softmax_cross_entropy, "list_mle": list_mle}


def ndcg_at(scores: np.ndarray, relevant: np.ndarray, mask: np.ndarray,
            k: int = 10) -> Dict[str, float]:
  """Mean NDCG@k and recall@k over lists with a relevant candidate.

  Args:
    scores, relevant (bool), mask: [B, L] numpy arrays; the ideal DCG is
      over the list's own relevant candidates (a list-local NDCG, for
      validation: it measures the ordering, not the candidates' recall).
  """
  relevant = relevant & (mask > 0)
  has = relevant.any(axis=1)
  s = np.where(mask > 0, scores, -np.inf)[has]
  rel = relevant[has]
  if not len(s):
    return {f"ndcg_at_{k}": 0.0, f"recall_at_{k}": 0.0, "lists": 0}
  top = np.argsort(-s, axis=1, kind="stable")[:, :k]
  hits = np.take_along_axis(rel, top, axis=1)
  discount = 1.0 / np.log2(np.arange(2, k + 2))
  dcg = (hits * discount[:hits.shape[1]]).sum(axis=1)
  n_rel = rel.sum(axis=1)
  ideal = np.array([discount[:min(k, n)].sum() for n in n_rel])
  return {f"ndcg_at_{k}": float(np.mean(dcg / ideal)),
          f"recall_at_{k}": float(np.mean(hits.sum(axis=1) / n_rel)),
          "lists": int(len(s))}
