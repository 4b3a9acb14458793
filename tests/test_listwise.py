"""Listwise losses and list metrics on small hand-computed cases."""

import math

import numpy as np
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from ranking import listwise
from tfrs_pipeline import metrics


def _np_softmax_ce(logits, gains, mask):
  out, n = 0.0, 0
  for s, g, m in zip(logits, gains, mask):
    s, g = np.asarray(s)[m > 0], np.asarray(g)[m > 0]
    if g.sum() <= 0:
      continue
    log_p = s - np.log(np.exp(s).sum())
    out += -(g / g.sum() * log_p).sum()
    n += 1
  return out / max(n, 1)


def test_softmax_cross_entropy_matches_numpy_and_ignores_padding():
  logits = np.array([[2.0, 1.0, 0.0, 5.0], [0.5, 0.1, -1.0, 0.0],
                     [1.0, 1.0, 1.0, 1.0]], np.float32)
  gains = np.array([[1.0, 0.0, 0.5, 3.0], [0.0, 1.0, 0.0, 0.0],
                    [0.0, 0.0, 0.0, 0.0]], np.float32)
  mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]], np.float32)
  got = float(listwise.softmax_cross_entropy(logits, gains, mask))
  assert got == pytest.approx(_np_softmax_ce(logits, gains, mask), rel=1e-5)
  # The padded candidate's logit and gain change nothing.
  logits[0, 3] = -50.0
  assert float(listwise.softmax_cross_entropy(logits, gains, mask)) == \
      pytest.approx(got, rel=1e-6)
  # Raising the positive's logit lowers the loss.
  logits[1, 1] = 3.0
  assert float(listwise.softmax_cross_entropy(logits, gains, mask)) < got


def test_list_mle_by_hand():
  # One list, gains order: item 1 > item 0 > item 2 (strict, no ties).
  logits = np.array([[1.0, 2.0, 0.0]], np.float32)
  gains = np.array([[0.5, 1.0, 0.1]], np.float32)
  mask = np.ones_like(gains)
  s = [2.0, 1.0, 0.0]  # in gain order
  want = sum(math.log(sum(math.exp(x) for x in s[i:])) - s[i]
             for i in range(3))
  assert float(listwise.list_mle(logits, gains, mask)) == pytest.approx(
      want, rel=1e-5)


def test_gains():
  r = tf.constant([[0.0, 1.0, 3.0, 4.0, 5.0]])
  np.testing.assert_allclose(listwise.gains(r, "binary"), [[0, 1, 1, 1, 1]])
  np.testing.assert_allclose(listwise.gains(r, "rating"),
                             [[0, .2, .6, .8, 1.]], rtol=1e-6)
  np.testing.assert_allclose(listwise.gains(r, "liked"),
                             [[0, .1, .1, 1, 1]], rtol=1e-6)
  with pytest.raises(ValueError, match="gain must be one of"):
    listwise.gains(r, "graded")


def test_list_ndcg():
  scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 9.0]])
  relevant = np.array([[False, True, False, False],
                       [True, False, False, True]])
  mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])  # item 3 of list 2: padding
  got = listwise.ndcg_at(scores, relevant, mask, k=2)
  # List 1: hit at rank 2 -> (1/log2 3) / 1. List 2: only item 0 relevant
  # (item 3 is padding), ranked 3rd -> 0 within k=2.
  assert got["ndcg_at_2"] == pytest.approx((1 / math.log2(3) + 0) / 2)
  assert got["lists"] == 2


def test_list_metrics_by_hand():
  m = metrics.ListMetrics(ks=(3,))
  m.update(["a", "b", "c", "d"], {"b", "d", "x"})
  m.update(["a"], set())  # skipped: nothing relevant
  got = m.result()
  assert m.count == 1
  dcg = 1 / math.log2(3)
  idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
  assert got["ndcg_at_3"] == pytest.approx(dcg / idcg)
  assert got["recall_at_3"] == pytest.approx(1 / 3)
  assert got["precision_at_3"] == pytest.approx(1 / 3)
  # AP@3: the hit at rank 2 has precision 1/2; over min(3, |R|) = 3.
  assert got["map_at_3"] == pytest.approx(0.5 / 3)
  m.update(["x", "b", "d"], {"b", "d", "x"})
  assert m.result()["map_at_3"] == pytest.approx((0.5 / 3 + 1.0) / 2)
