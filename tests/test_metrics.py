"""Tests of tfrs_pipeline.metrics against hand-computed values and TFRS."""

import math

import numpy as np
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
from tfrs_pipeline import metrics


# --------------------------------------------------------------------------
# Top-k accuracy.


def test_top_k_hits_by_hand():
  scores = np.array([
      [3., 1., 2., 2.],  # target 2: one higher (3) -> hit at k >= 2
      [0., 5., 5., 1.],  # target 2: tie at the top, none higher -> k >= 1
      [4., 3., 2., 1.],  # target 3: three higher -> k >= 4
  ])
  hits = metrics.top_k_hits(scores, [2, 2, 3], ks=(1, 2, 3, 4))
  np.testing.assert_array_equal(hits, [1, 2, 2, 3])
  result = metrics.top_k_accuracy(scores, [2, 2, 3], ks=(1, 4))
  assert result == {"top_1_accuracy": 1 / 3, "top_4_accuracy": 1.0}


def test_top_k_rows_share_score_rows_and_chunking(monkeypatch):
  rng = np.random.default_rng(0)
  scores = rng.integers(-3, 4, size=(7, 30)).astype(np.float32)
  rows = rng.integers(0, 7, size=50)
  targets = rng.integers(0, 30, size=50)
  expected = metrics.top_k_hits(scores[rows], targets, ks=(1, 3, 10))
  monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 40)  # one row per chunk
  got = metrics.top_k_hits(scores, targets, ks=(1, 3, 10), rows=rows)
  np.testing.assert_array_equal(got, expected)
  accumulator = metrics.TopKAccuracy(ks=(1, 3, 10))
  accumulator.update(scores, targets[:20], rows[:20])
  accumulator.update(scores, targets[20:], rows[20:])
  assert accumulator.count == 50
  assert accumulator.result()["top_3_accuracy"] == expected[1] / 50


def test_top_k_needs_rows_when_shapes_differ():
  with pytest.raises(ValueError, match="rows"):
    metrics.top_k_hits(np.zeros((2, 5)), [0, 1, 2])


@pytest.mark.parametrize("integer_embeddings", [True, False])
def test_top_k_matches_tfrs_factorized_top_k(integer_embeddings):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(1)
  num_queries, num_items, dim = 96, 150, 3
  if integer_embeddings:  # exact float32 scores with many ties
    queries = rng.integers(-2, 3, (num_queries, dim)).astype(np.float32)
    items = rng.integers(-2, 3, (num_items, dim)).astype(np.float32)
  else:
    queries = rng.standard_normal((num_queries, dim)).astype(np.float32)
    items = rng.standard_normal((num_items, dim)).astype(np.float32)
  targets = rng.integers(0, num_items, num_queries)
  ks = (1, 5, 10, 50, 100)

  metric = tfrs.metrics.FactorizedTopK(
      candidates=tf.data.Dataset.from_tensor_slices(items).batch(32), ks=ks)
  metric.update_state(tf.constant(queries), tf.constant(items[targets]))
  expected = [float(v) for v in metric.result()]

  got = metrics.top_k_accuracy(queries @ items.T, targets, ks)
  assert list(got) == [f"top_{k}_accuracy" for k in ks]
  np.testing.assert_allclose(list(got.values()), expected, atol=1e-6)
  if integer_embeddings:  # ties make the semantics matter
    strict = [(np.sum((queries @ items.T)
                      >= (queries @ items.T)[np.arange(num_queries),
                                             targets][:, None], axis=1)
               <= k).mean() for k in ks]
    assert strict != expected


# --------------------------------------------------------------------------
# Top-k items and per-user ranking metrics.


def test_top_k_items_ties_and_exclusion():
  scores = np.array([[1., 3., 3., 0., 3.],
                     [2., 2., 2., 2., 2.]])
  exclude = np.array([[False, False, True, False, False],
                      [True, False, False, False, False]])
  np.testing.assert_array_equal(
      metrics.top_k_items(scores, 3), [[1, 2, 4], [0, 1, 2]])
  np.testing.assert_array_equal(
      metrics.top_k_items(scores, 3, exclude), [[1, 4, 0], [1, 2, 3]])
  assert metrics.top_k_items(scores, 10).shape == (2, 5)


def test_top_k_items_matches_stable_sort(monkeypatch):
  monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 100)
  rng = np.random.default_rng(2)
  scores = rng.integers(0, 5, size=(40, 60)).astype(np.float32)
  exclude = rng.random((40, 60)) < 0.3
  masked = np.where(exclude, -np.inf, scores)
  expected = np.argsort(-masked, axis=1, kind="stable")[:, :17]
  np.testing.assert_array_equal(
      metrics.top_k_items(scores, 17, exclude), expected)


def test_ranking_metrics_by_hand():
  # User 0: ranking after excluding item 0 is 1, 2, 3, 4; relevant {2, 4}.
  # User 1: ranking 4, 3, 2, 1, 0; relevant {4}.
  # User 2: no relevant item -> not averaged.
  scores = np.array([[9., 5., 4., 3., 2.],
                     [0., 1., 2., 3., 4.],
                     [1., 1., 1., 1., 1.]])
  exclude = np.zeros((3, 5), bool)
  exclude[0, 0] = True
  relevant = np.zeros((3, 5), bool)
  relevant[0, [2, 4]] = True
  relevant[1, 4] = True
  got = metrics.ranking_metrics(scores, relevant, exclude, ks=(1, 2, 4))
  log2 = math.log2
  # recall@k: user 0 -> 0, 1/2, 1; user 1 -> 1, 1, 1.
  assert got["recall_at_1"] == pytest.approx((0 + 1) / 2)
  assert got["recall_at_2"] == pytest.approx((0.5 + 1) / 2)
  assert got["recall_at_4"] == pytest.approx(1.0)
  # ndcg: user 0 hits at ranks 2 and 4.
  idcg2 = 1 + 1 / log2(3)
  assert got["ndcg_at_1"] == pytest.approx((0 + 1) / 2)
  assert got["ndcg_at_2"] == pytest.approx(((1 / log2(3)) / idcg2 + 1) / 2)
  assert got["ndcg_at_4"] == pytest.approx(
      ((1 / log2(3) + 1 / log2(5)) / idcg2 + 1) / 2)
  capped = metrics.ranking_metrics(scores, relevant, exclude, ks=(1,),
                                   capped_recall=True)
  assert capped["recall_at_1"] == pytest.approx((0 + 1) / 2)
  capped = metrics.ranking_metrics(scores, relevant, exclude, ks=(2,),
                                   capped_recall=True)
  assert capped["recall_at_2"] == pytest.approx((0.5 + 1) / 2)
  rel3 = np.zeros((1, 5), bool)
  rel3[0, [1, 2, 3]] = True
  one = metrics.ranking_metrics(scores[:1], rel3, exclude[:1], ks=(2,),
                                capped_recall=True)
  assert one["recall_at_2"] == pytest.approx(1.0)  # 2 hits / min(2, 3)
  plain = metrics.ranking_metrics(scores[:1], rel3, exclude[:1], ks=(2,))
  assert plain["recall_at_2"] == pytest.approx(2 / 3)


def test_ranking_accumulator_counts_users_and_matches_batch():
  rng = np.random.default_rng(3)
  scores = rng.standard_normal((30, 25))
  relevant = rng.random((30, 25)) < 0.1
  relevant[0] = False
  exclude = rng.random((30, 25)) < 0.2
  whole = metrics.ranking_metrics(scores, relevant, exclude)
  accumulator = metrics.RankingMetrics()
  accumulator.update(scores[:11], relevant[:11], exclude[:11])
  accumulator.update(scores[11:], relevant[11:], exclude[11:])
  assert accumulator.count == int(relevant.any(axis=1).sum())
  for key, value in accumulator.result().items():
    assert value == pytest.approx(whole[key])


def test_interaction_mask():
  mask = metrics.interaction_mask([0, 1, 1], [2, 0, 2], (2, 3))
  np.testing.assert_array_equal(mask, [[0, 0, 1], [1, 0, 1]])


# --------------------------------------------------------------------------
# Point-wise metrics.


def test_rmse_mae():
  assert metrics.rmse([1, 2, 3], [1, 4, 3]) == pytest.approx(
      math.sqrt(4 / 3))
  assert metrics.mae([1, 2, 3], [2, 4, 3]) == pytest.approx(1.0)


def _pairwise_auc(labels, scores):
  pos = [s for y, s in zip(labels, scores) if y]
  neg = [s for y, s in zip(labels, scores) if not y]
  wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
  return wins / (len(pos) * len(neg))


def test_auc_with_ties():
  labels = [1, 0, 1, 0, 1]
  scores = [0.9, 0.9, 0.5, 0.1, 0.1]
  # pos 0.9: beats 0.1, ties 0.9 -> 1.5; pos 0.5: 1; pos 0.1: ties -> 0.5.
  assert metrics.auc(labels, scores) == pytest.approx(3 / 6)
  rng = np.random.default_rng(4)
  labels = rng.random(200) < 0.4
  scores = rng.integers(0, 6, 200)
  assert metrics.auc(labels, scores) == pytest.approx(
      _pairwise_auc(labels, scores))
  assert math.isnan(metrics.auc([1, 1], [0.2, 0.3]))


def test_log_loss_clipped():
  assert metrics.log_loss([1, 0], [0.8, 0.4]) == pytest.approx(
      -(math.log(0.8) + math.log(0.6)) / 2)
  assert metrics.log_loss([1], [0.0]) == pytest.approx(-math.log(1e-7))
  assert math.isfinite(metrics.log_loss([0], [1.0]))
