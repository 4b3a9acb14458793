"""Retrieval and ranking baselines on tiny generated DataFrames."""

import math

import numpy as np
import pandas as pd
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
from data import splits
from ranking import baselines as ranking_baselines
from retrieval import baselines as retrieval_baselines
from tfrs_pipeline import metrics

RETRIEVAL_KEYS = {f"top_{k}_accuracy" for k in metrics.TOP_KS} | {
    f"{name}_at_{k}" for name in metrics.RankingMetrics.NAMES
    for k in metrics.RANKING_KS}


def _frame(users, movies, ratings=None) -> pd.DataFrame:
  """Ratings with the columns the baselines read (ids as strings)."""
  users = np.asarray(users)
  df = pd.DataFrame({
      "user_id": [str(u) for u in users],
      "movie_id": [str(m) for m in movies],
      "user_rating": np.asarray(
          ratings if ratings is not None else np.full(len(users), 4.0),
          np.float32),
  })
  df["user_gender"] = users % 2 == 0
  df["bucketized_user_age"] = np.array([1., 18., 25.])[users % 3]
  df["user_occupation_text"] = np.array(["writer", "lawyer"])[users % 2]
  df["user_zip_code"] = [f"{10000 + u % 7}" for u in users]
  return df


# --------------------------------------------------------------------------
# Retrieval.


def test_evaluate_user_scores_by_hand():
  train = _frame([0, 1, 1], [0, 1, 2])
  test = _frame([0, 0, 1, 1], [1, 3, 3, 99])  # movie 99 is no candidate
  data = retrieval_baselines.Interactions(train, test, ["0", "1", "2", "3"])
  assert data.num_test_dropped == 1
  table = np.array([[4., 3., 2., 1.], [1., 2., 3., 4.]])
  got = retrieval_baselines.evaluate_user_scores(
      lambda users: table[users], data, top_ks=(1, 2), ranking_ks=(1, 2),
      user_chunk=1)
  # Queries (no exclusion): u0/m1 has 1 higher, u0/m3 3, u1/m3 none.
  assert got["top_1_accuracy"] == pytest.approx(1 / 3)
  assert got["top_2_accuracy"] == pytest.approx(2 / 3)
  # u0 without m0: m1, m2, m3; relevant {m1, m3}. u1 without m1, m2: m3.
  assert got["recall_at_1"] == pytest.approx((1 / 2 + 1) / 2)
  assert got["recall_at_2"] == pytest.approx((1 / 2 + 1) / 2)
  assert got["ndcg_at_2"] == pytest.approx(
      (1 / (1 + 1 / math.log2(3)) + 1) / 2)


def _two_groups(num_users=24, num_extra_movies=20):
  """Even users watch movies a0-a2, odd ones b0-b2, everyone watches `hit`.

  Train has `hit` and the user's group movies except, for the second half
  of the users, one held-out group movie, which is their test rating.
  """
  train_u, train_m, test_u, test_m = [], [], [], []
  for u in range(num_users):
    group = ["a0", "a1", "a2"] if u % 2 == 0 else ["b0", "b1", "b2"]
    held = group[u // 2 % 3] if u >= num_users // 2 else None
    for m in group + ["hit"]:
      if m == held:
        test_u.append(u)
        test_m.append(m)
      else:
        train_u.append(u)
        train_m.append(m)
  movie_ids = ["hit", "a0", "a1", "a2", "b0", "b1", "b2"] + [
      f"x{i}" for i in range(num_extra_movies)]
  return _frame(train_u, train_m), _frame(test_u, test_m), movie_ids


def test_popularity_counts_train_ratings():
  train, test, movie_ids = _two_groups()
  result, seconds = retrieval_baselines.popularity(train, test, movie_ids)
  assert set(result) == RETRIEVAL_KEYS and seconds >= 0
  # `hit` (24 ratings) beats every group movie (10 each): no top-1 hit,
  # but the group movies tie for 2nd, so every query is a top-5 hit.
  assert result["top_1_accuracy"] == 0.0
  assert result["top_5_accuracy"] == 1.0
  assert result["recall_at_10"] == 1.0
  # After excluding the user's train movies, 2 other-group movies tie
  # with the held-out one and come first by candidate order for a*
  # users (a* precede b*): ranks 1 (a*) and 4 (b*).
  assert result["ndcg_at_10"] == pytest.approx((1 + 1 / math.log2(5)) / 2)


def test_ease_recovers_co_occurrence():
  train, test, movie_ids = _two_groups()
  popular, _ = retrieval_baselines.popularity(train, test, movie_ids)
  result, _ = retrieval_baselines.ease(train, test, movie_ids, l2=1.0,
                                       verbose=False)
  assert set(result) == RETRIEVAL_KEYS
  assert result["top_1_accuracy"] == 1.0
  # With train movies excluded the held-out movie ranks first.
  assert result["ndcg_at_10"] == pytest.approx(1.0)
  assert popular["ndcg_at_10"] < 0.9
  data = retrieval_baselines.Interactions(train, test, movie_ids)
  b = retrieval_baselines.ease_weights(data.train_matrix(), 1.0)
  a0, b0, b1 = 1, 4, 5
  assert np.all(np.diag(b) == 0)
  assert b[b0, b1] > 0.1 and b[a0, b1] < b[b0, b1]


def test_ease_sweep_and_cold_users():
  train, test, movie_ids = _two_groups()
  cold = _frame([100], ["a0"])  # a test user without train history
  sweep = retrieval_baselines.ease_sweep(
      train, pd.concat([test, cold]), movie_ids, [1.0, 1e4], verbose=False)
  assert [l2 for l2, _, _ in sweep] == [1.0, 1e4]
  # The cold user falls back to popularity: a0 ties b*, below `hit`.
  (_, small, _), _ = sweep
  assert small["top_1_accuracy"] == pytest.approx(12 / 13)


def test_two_tower_runs_and_is_deterministic():
  train, test, movie_ids = _two_groups()
  kwargs = dict(epochs=1, embedding_dimension=4, batch_size=64, seed=7,
                verbose=False)
  first, _ = retrieval_baselines.two_tower(train, test, movie_ids, **kwargs)
  second, _ = retrieval_baselines.two_tower(train, test, movie_ids, **kwargs)
  assert set(first) == RETRIEVAL_KEYS
  assert all(0.0 <= v <= 1.0 for v in first.values())
  assert first == second


# --------------------------------------------------------------------------
# Ranking.


def test_validation_mask_is_seeded_and_differs_from_test_split():
  df = _frame(np.arange(3000) % 300, np.arange(3000) // 300 + 1)
  mask = ranking_baselines.validation_mask(df, 0.1)
  assert 0.08 < mask.mean() < 0.12
  np.testing.assert_array_equal(
      mask, ranking_baselines.validation_mask(df, 0.1))
  test = splits.test_mask(df, "random")
  assert (mask != test).any()
  assert not ranking_baselines.validation_mask(df, 0.0).any()


def test_global_mean():
  train = _frame([0, 1, 2], [0, 0, 1], [1., 2., 3.])
  test = _frame([0, 1], [1, 2], [2., 4.])
  result = ranking_baselines.global_mean(train, test)
  np.testing.assert_allclose(result.predictions, [2., 2.])
  assert result.metrics == pytest.approx({"rmse": math.sqrt(2), "mae": 1.0})


def _low_rank(num_users=80, num_movies=60, seed=0):
  """Ratings from a rank-2 model plus small noise, 60% observed."""
  rng = np.random.default_rng(seed)
  u = rng.normal(size=(num_users, 2))
  v = rng.normal(size=(num_movies, 2))
  users, movies = np.nonzero(rng.random((num_users, num_movies)) < 0.6)
  ratings = np.clip(3 + (u[users] * v[movies]).sum(1)
                    + 0.1 * rng.normal(size=len(users)), 1, 5)
  df = _frame(users, movies, ratings)
  is_test = splits.test_mask(df, "random")
  return df[~is_test].reset_index(drop=True), df[is_test].reset_index(
      drop=True)


def test_biased_mf_beats_global_mean_and_selects_reg():
  train, test = _low_rank()
  baseline = ranking_baselines.global_mean(train, test)
  result = ranking_baselines.biased_mf(
      train, test, dim=4, regs=(1e-3, 30.0), learning_rate=0.1,
      batch_size=512, max_epochs=6, patience=1, verbose=False)
  assert result.predictions.shape == (len(test),)
  assert result.params["reg"] == 1e-3
  assert [t["reg"] for t in result.params["trials"]] == [1e-3, 30.0]
  assert result.metrics["rmse"] < 0.6 * baseline.metrics["rmse"]


def test_dcn_runs_and_is_deterministic():
  train, test = _low_rank(num_users=40, num_movies=30)
  kwargs = dict(epochs=1, embedding_dimension=4, deep_layer_sizes=(8,),
                batch_size=256, seed=3, verbose=False)
  first = ranking_baselines.dcn(train, test, **kwargs)
  second = ranking_baselines.dcn(train, test, **kwargs)
  assert first.predictions.shape == (len(test),)
  assert np.isfinite(first.predictions).all()
  assert set(first.metrics) == {"rmse", "mae"}
  np.testing.assert_array_equal(first.predictions, second.predictions)
