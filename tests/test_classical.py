"""Classical peers (retrieval/classical.py) on tiny hand-made frames."""

import numpy as np
import pandas as pd
import pytest

from retrieval import baselines, classical


def _ratings(rows):
  return pd.DataFrame(rows, columns=["user_id", "movie_id", "user_rating"])


MOVIES = pd.DataFrame({
    "movie_id": ["a", "b", "c", "d"],
    "movie_genres": [["Drama"], ["Comedy"], ["Action"], ["Drama"]],
    "director": ["Kurosawa", "Kurosawa", "Wilder", "Wilder"],
    "star": ["Mifune", "Lemmon", "Wayne", "Wayne"],
    "release_year": [1954, 1960, 1970, 1980],
})


def test_shrunk_cosine_matches_hand_computed():
  # Columns i, j: n_i = 3, n_j = 2, n_ij = 2.
  x = np.array([[1, 1], [1, 1], [1, 0], [0, 0]], np.float32)
  sim = classical.shrunk_cosine(x, shrinkage=3.0)
  expected = 2 / np.sqrt(3 * 2) * 2 / (2 + 3)
  assert sim[0, 1] == pytest.approx(expected, rel=1e-6)
  assert sim[1, 0] == pytest.approx(expected, rel=1e-6)
  assert sim[0, 0] == 0
  unshrunk = classical.shrunk_cosine(x, shrinkage=0.0)
  assert unshrunk[0, 1] == pytest.approx(2 / np.sqrt(6), rel=1e-6)


def test_keep_top_k_keeps_the_largest_per_row():
  sim = np.array([[0, 3, 1, 2], [3, 0, 2, 1], [1, 2, 0, 5], [2, 1, 5, 0]],
                 np.float32)
  kept = classical.keep_top_k(sim, 2)
  np.testing.assert_array_equal(kept[0], [0, 3, 0, 2])
  np.testing.assert_array_equal(kept[2], [0, 2, 0, 5])


@pytest.mark.parametrize("method", ["item_knn", "user_knn"])
def test_user_who_liked_only_a_gets_its_nearest_neighbour_first(method):
  # b co-occurs with a for 3 users, c for 1, d for none.
  train = _ratings([("u1", "a", 5), ("u1", "b", 5), ("u2", "a", 4),
                    ("u2", "b", 4), ("u3", "a", 4), ("u3", "b", 5),
                    ("u3", "c", 3), ("u4", "c", 4), ("u4", "d", 4),
                    ("u5", "d", 5), ("q", "a", 5)])
  test = _ratings([("q", "b", 5)])
  data = baselines.Interactions(train, test, ["a", "b", "c", "d"])
  score = classical.SCORERS[method](data.train_matrix(), 3, 1.0)
  q = list(data.user_ids).index("q")
  scores = score(np.array([q]))[0]
  scores[0] = -np.inf  # a is the user's own movie
  assert np.argmax(scores) == 1  # b
  m, _ = classical.knn(method, train, test, ["a", "b", "c", "d"], 3, 1.0)
  assert m["ndcg_at_10"] == pytest.approx(1.0)


def test_item_profiles_come_from_the_spec_movie_features():
  names = [f.name for f in classical.profile_features()]
  assert names == ["movie_genres", "director", "star", "release_year"]
  profiles = classical.item_profiles(MOVIES.assign(
      director=["Kurosawa"] * 4), ["a", "b", "zz"])
  np.testing.assert_allclose(np.linalg.norm(profiles[:2], axis=1), 1,
                             rtol=1e-6)
  assert not profiles[2].any()  # unknown candidate: zero profile


def test_content_based_prefers_the_liked_movies_director():
  # q liked a (Kurosawa, Mifune, Drama); b shares the director, c nothing.
  movies = MOVIES.assign(movie_genres=[["Drama"], ["Comedy"], ["Action"],
                                       ["Western"]],
                         star=["Mifune", "Lemmon", "Wayne", "Ryu"],
                         director=["Kurosawa", "Kurosawa", "Wilder", "Ozu"],
                         release_year=[1954, 1990, 1955, 1991])
  # min_count=2: each director/star must appear in two movies to count.
  movies = pd.concat([movies, pd.DataFrame({
      "movie_id": ["e", "f", "g"], "movie_genres": [["Horror"]] * 3,
      "director": ["Wilder", "Ozu", "X"], "star": ["Lemmon", "Wayne", "Ryu"],
      "release_year": [2000, 2000, 2000]})])
  ids = list(movies.movie_id)
  train = _ratings([("q", "a", 5), ("q", "g", 2), ("r", "c", 4)])
  test = _ratings([("q", "b", 4)])
  data = baselines.Interactions(train, test, ids)
  scores = classical.content_scorer(train, movies, data)(
      np.array([list(data.user_ids).index("q")]))[0]
  assert scores[ids.index("b")] > scores[ids.index("c")]
  assert scores[ids.index("c")] == pytest.approx(0.0, abs=1e-6)


def test_train_movies_are_excluded_in_the_evaluation():
  # Every model scores a (q's train movie) highest; it must not count.
  train = _ratings([("q", "a", 5), ("u1", "a", 5), ("u1", "b", 5),
                    ("u2", "a", 5), ("u2", "b", 4)])
  test = _ratings([("q", "b", 5)])
  ids = ["a", "b", "c", "d"]
  data = baselines.Interactions(train, test, ids)
  x = data.train_matrix()
  for score in (classical.item_knn_scorer(x, 3, 0.0),
                classical.user_knn_scorer(x, 3, 0.0),
                classical.content_scorer(train, MOVIES, data)):
    m = baselines.evaluate_user_scores(
        lambda u, score=score: np.where(np.arange(4) == 0, 99.0,
                                        score(u)), data, ranking_ks=(1, 10))
    assert m["precision_at_1"] == 1.0  # b first once a is excluded


def test_select_knn_uses_train_only_and_returns_the_grid():
  rng = np.random.default_rng(0)
  rows = [(f"u{u}", f"m{m}", 5) for u in range(40)
          for m in rng.choice(20, 8, replace=False) + (u % 2) * 10 % 20]
  train = _ratings(rows).drop_duplicates(["user_id", "movie_id"])
  ids = [f"m{i}" for i in range(30)]
  chosen = classical.select_knn("item_knn", train, ids, ks=(2, 5),
                                shrinkages=(0.0, 10.0))
  assert len(chosen["validation"]) == 4
  best = max(chosen["validation"], key=lambda r: r["ndcg_at_10"])
  assert (chosen["k"], chosen["shrinkage"]) == (best["k"], best["shrinkage"])
  out = classical.evaluate_all(train.iloc[:200], train.iloc[200:],
                               MOVIES.assign(movie_id=["m0", "m1", "m2",
                                                       "m3"]), ids,
                               ks=(2,), shrinkages=(0.0,))
  assert set(out) == {"content_based", "item_knn", "user_knn"}
  assert 0 <= out["item_knn"]["metrics"]["ndcg_at_10"] <= 1
