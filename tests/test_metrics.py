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


def test_precision_and_map_by_hand_with_exclusion():
  # The example of test_ranking_metrics_by_hand: user 0's list without
  # item 0 is 1, 2, 3, 4 with relevant {2, 4} (hits at ranks 2 and 4);
  # user 1's list is 4, 3, 2, 1, 0 with relevant {4} (hit at rank 1).
  scores = np.array([[9., 5., 4., 3., 2.],
                     [0., 1., 2., 3., 4.]])
  exclude = np.zeros((2, 5), bool)
  exclude[0, 0] = True
  relevant = np.zeros((2, 5), bool)
  relevant[0, [2, 4]] = True
  relevant[1, 4] = True
  got = metrics.ranking_metrics(scores, relevant, exclude, ks=(2, 4))
  # precision@2: 1/2, 1/2; precision@4: 2/4, 1/4.
  assert got["precision_at_2"] == pytest.approx(0.5)
  assert got["precision_at_4"] == pytest.approx((2 / 4 + 1 / 4) / 2)
  # AP@2: user 0 (1/2) / min(2, 2); user 1: 1 / 1.
  assert got["map_at_2"] == pytest.approx((0.25 + 1.0) / 2)
  # AP@4: user 0 (1/2 + 2/4) / 2; user 1: 1.
  assert got["map_at_4"] == pytest.approx((0.5 + 1.0) / 2)
  # Without the exclusion user 0's list is 0, 1, 2, 3: hit at rank 3 only.
  plain = metrics.ranking_metrics(scores, relevant, None, ks=(2, 4))
  assert plain["precision_at_2"] == pytest.approx((0 + 0.5) / 2)
  assert plain["map_at_4"] == pytest.approx(((1 / 3) / 2 + 1.0) / 2)


def test_list_metrics_equal_ranking_metrics():
  rng = np.random.default_rng(5)
  scores = rng.standard_normal((20, 30))
  relevant = rng.random((20, 30)) < 0.15
  exclude = (rng.random((20, 30)) < 0.2) & ~relevant
  ks = (3, 10, 40)  # 40 > N: lists shorter than k
  expected = metrics.ranking_metrics(scores, relevant, exclude, ks=ks)
  lists = metrics.ListMetrics(ks)
  for s, r, e in zip(scores, relevant, exclude):
    order = [i for i in np.argsort(-s, kind="stable") if not e[i]]
    lists.update(order, set(np.flatnonzero(r)))
  got = lists.result()
  assert set(got) == set(expected)
  for key, value in expected.items():
    assert got[key] == pytest.approx(value), key


def test_spearman_per_user_by_hand_with_ties():
  rows = [
      # a: true ranks 1, 2, 3, predicted 1, 3, 2: 1 - 6 * 2 / (3 * 8).
      ("a", 1, 0.1), ("a", 2, 0.3), ("a", 3, 0.2),
      # b: true 4, 4, 5, 3 -> ranks 2.5, 2.5, 4, 1; predicted 1, 2, 3, 4.
      # Centred: x = (0, 0, 1.5, -1.5), y = (-1.5, -.5, .5, 1.5):
      # sum xy = -1.5, sum x^2 = 4.5, sum y^2 = 5 -> -1 / sqrt(10).
      ("b", 4, 1.0), ("b", 4, 2.0), ("b", 5, 3.0), ("b", 3, 4.0),
      ("c", 5, 1.0),                 # one rating: skipped
      ("d", 3, 1.0), ("d", 3, 2.0),  # constant true ratings: skipped
      ("e", 1, 2.0), ("e", 2, 2.0),  # constant predictions: 0
  ]
  users, labels, predictions = zip(*rows)
  order = np.random.default_rng(6).permutation(len(rows))  # any order
  got = metrics.spearman_per_user(np.array(users)[order],
                                  np.array(labels)[order],
                                  np.array(predictions)[order])
  assert got["spearman_users"] == 3
  assert got["spearman"] == pytest.approx(
      (0.5 - 1 / math.sqrt(10) + 0.0) / 3)
  perfect = metrics.spearman_per_user([1, 1, 1], [1, 2, 2], [0, 5, 5])
  assert perfect == {"spearman": pytest.approx(1.0), "spearman_users": 1}
  none = metrics.spearman_per_user([1, 2], [3, 4], [3, 4])
  assert none["spearman_users"] == 0 and math.isnan(none["spearman"])


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
