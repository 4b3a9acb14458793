"""Candidate sources (`retrieval.sources`) on small hand-made DataFrames."""

import os

import numpy as np
import pandas as pd
import pytest

from retrieval import baselines
from retrieval import sources

L2 = 3.0


def _ratings(users, movies, ratings=None) -> pd.DataFrame:
  return pd.DataFrame({
      "user_id": [str(u) for u in users],
      "movie_id": [str(m) for m in movies],
      "user_rating": np.asarray(
          ratings if ratings is not None else np.full(len(users), 4.0),
          float),
  })


@pytest.fixture(name="random_data")
def _random_data():
  """(ratings, movie_ids, x [U, N] binary): 40 users x 12 movies, the last
  two never rated."""
  rng = np.random.default_rng(0)
  x = (rng.random((40, 12)) < 0.35).astype(np.float32)
  x[:, 10:] = 0
  users, items = np.nonzero(x)
  movie_ids = [f"m{i}" for i in range(12)]
  ratings = _ratings(users, [movie_ids[i] for i in items])
  return ratings, movie_ids, x


def _history(x_row, movie_ids):
  return [movie_ids[i] for i in np.flatnonzero(x_row)]


# --------------------------------------------------------------------------
# ItemToItem.


def test_all_neighbours_reproduce_dense_ease(random_data):
  ratings, movie_ids, x = random_data
  b = baselines.ease_weights(x, L2)
  assert (b < 0).any() and (b > 0).any()
  histories = [_history(x[u], movie_ids) for u in range(8)]
  full = sources.ItemToItem.fit(ratings, movie_ids, l2=L2, neighbours=100,
                                positive_only=False)
  np.testing.assert_allclose(full.score(histories), x[:8] @ b,
                             rtol=1e-5, atol=1e-6)
  positive = sources.ItemToItem.fit(ratings, movie_ids, l2=L2, neighbours=100)
  np.testing.assert_allclose(positive.score(histories),
                             x[:8] @ np.maximum(b, 0), rtol=1e-5, atol=1e-6)
  assert positive.neighbour_index.shape == (12, 11)
  # Never-rated movies bring nothing and are brought by nobody.
  assert not positive.neighbour_weight[10:].any()
  assert not positive.neighbour_weight[
      np.isin(positive.neighbour_index, [10, 11])].any()


def test_few_neighbours_keep_the_top_positive_weights(random_data):
  ratings, movie_ids, x = random_data
  b = baselines.ease_weights(x, L2)
  model = sources.ItemToItem.fit(ratings, movie_ids, l2=L2, neighbours=3)
  assert model.neighbour_index.shape == (12, 3)
  assert model.neighbour_index.dtype == np.int32
  assert model.neighbour_weight.dtype == np.float32
  for i in range(10):
    positive = np.flatnonzero(b[i] > 0)
    expected = positive[np.argsort(-b[i, positive], kind="stable")][:3]
    kept = len(expected)
    np.testing.assert_array_equal(model.neighbour_index[i, :kept], expected)
    np.testing.assert_allclose(model.neighbour_weight[i, :kept],
                               b[i, expected], rtol=1e-6)
    assert not model.neighbour_weight[i, kept:].any()  # padding
    assert not model.neighbour_index[i, kept:].any()


def test_min_rating_uses_only_liked_ratings():
  # m3 is only ever rated 3: with min_rating 4 it has no neighbours.
  ratings = _ratings([0, 0, 0, 1, 1, 1, 2, 2, 2],
                     ["m1", "m2", "m3", "m1", "m2", "m3", "m2", "m4", "m3"],
                     [5, 4, 3, 4, 5, 3, 4, 5, 3])
  movie_ids = ["m1", "m2", "m3", "m4"]
  liked = sources.ItemToItem.fit(ratings, movie_ids, l2=1.0, min_rating=4)
  everything = sources.ItemToItem.fit(ratings, movie_ids, l2=1.0)
  assert liked.min_rating == 4.0
  assert not liked.neighbour_weight[2].any()
  assert not liked.neighbour_weight[liked.neighbour_index == 2].any()
  assert not liked.score([["m3"]]).any()
  assert everything.neighbour_weight[2].any()  # m3 counts without the cut
  reference = sources.ItemToItem.fit(
      ratings[ratings.user_rating >= 4], movie_ids, l2=1.0)
  np.testing.assert_array_equal(liked.neighbour_index,
                                reference.neighbour_index)
  np.testing.assert_array_equal(liked.neighbour_weight,
                                reference.neighbour_weight)


def _hand_model():
  # a brings c (0.5) and d (0.1); b brings c (0.9) and d (0.1); c, d nothing.
  return sources.ItemToItem(
      movie_ids=np.array(["a", "b", "c", "d"]),
      neighbour_index=np.array([[2, 3], [2, 3], [0, 0], [0, 0]]),
      neighbour_weight=np.array([[0.5, 0.1], [0.9, 0.1], [0, 0], [0, 0]]))


def test_because_names_the_largest_contribution():
  model = _hand_model()
  assert model.because(["a", "b"], [2, 3, 0, -1]) == ["b", "a", None, None]
  assert model.because(["b", "a"], [3]) == ["b"]  # tie: first in history
  assert model.because(["a"], [2, 1]) == ["a", None]
  np.testing.assert_allclose(model.score([["a", "b"], ["a", "a"], []]),
                             [[0, 0, 1.4, 0.2], [0, 0, 0.5, 0.1], [0] * 4],
                             rtol=1e-6)


@pytest.mark.parametrize("positive_only", [True, False])
def test_because_agrees_with_dense_weights(random_data, positive_only):
  ratings, movie_ids, x = random_data
  b = baselines.ease_weights(x, L2)
  model = sources.ItemToItem.fit(ratings, movie_ids, l2=L2, neighbours=100,
                                 positive_only=positive_only)
  for user in (0, 2):  # user 2: one movie, negative weights to several
    history = _history(x[user], movie_ids)
    rows = [movie_ids.index(m) for m in history]
    got = model.because(history, range(12))
    for j in range(12):
      contribution = b[rows, j]
      if (contribution > 0).any():
        assert got[j] == history[int(np.argmax(contribution))]
      else:
        assert got[j] is None
  assert any(g is not None for g in got) and None in got


def test_unknown_history_id():
  model = _hand_model()
  with pytest.raises(ValueError, match="'zzz'"):
    model.score([["a"], ["zzz", "b"]])
  with pytest.raises(ValueError, match="'zzz'"):
    model.because(["zzz"], [2])
  np.testing.assert_array_equal(
      model.score([["a"], ["zzz", "b"]], ignore_unknown=True),
      model.score([["a"], ["b"]]))
  assert model.because(["zzz", "a"], [2], ignore_unknown=True) == ["a"]


def test_bad_input(random_data):
  ratings, movie_ids, _ = random_data
  fit = sources.ItemToItem.fit
  with pytest.raises(ValueError, match="no column 'movie_id'"):
    fit(ratings.drop(columns="movie_id"), movie_ids)
  with pytest.raises(ValueError, match="no column 'user_rating'"):
    fit(ratings.drop(columns="user_rating"), movie_ids, min_rating=4)
  with pytest.raises(ValueError, match="empty"):
    fit(ratings.iloc[:0], movie_ids)
  with pytest.raises(ValueError, match="no ratings with user_rating >= 5"):
    fit(ratings, movie_ids, min_rating=5)
  with pytest.raises(ValueError, match="duplicate movie id 'm1'"):
    fit(ratings, movie_ids + ["m1"])
  with pytest.raises(ValueError, match="neighbours must be >= 1"):
    fit(ratings, movie_ids, neighbours=0)
  with pytest.raises(ValueError, match="candidate indices"):
    _hand_model().because(["a"], [4])
  with pytest.raises(ValueError, match="must both be"):
    sources.ItemToItem(["a", "b"], np.zeros((3, 1)), np.zeros((3, 1)))


# --------------------------------------------------------------------------
# Popularity.


def _popularity_data():
  users = pd.DataFrame({"user_id": ["1", "2", "3", "4", "5"],
                        "user_gender": ["F", "F", "M", "M", "M"],
                        "bucketized_user_age": ["25", "25", "35", "35", "35"]})
  # F|25 rates a twice, b once; M|35 rates b three times, c once.
  ratings = _ratings([1, 2, 1, 3, 4, 5, 3], ["a", "a", "b", "b", "b", "b", "c"])
  return ratings, users, ["a", "b", "c", "d"]


def test_popularity_segments():
  ratings, users, movie_ids = _popularity_data()
  model = sources.Popularity.fit(ratings, users, movie_ids, shrinkage=1.0)
  assert list(model.segments) == ["F|25", "M|35"]
  np.testing.assert_array_equal(model.overall, [2, 4, 1, 0])
  scores = model.score(["F", "M", None, "F"], ["25", "35", "25", "56"])
  assert scores.shape == (4, 4) and scores.dtype == np.float32
  assert np.argmax(scores[0]) == 0  # F|25 rates a most, overall b leads
  assert np.argmax(scores[1]) == 1
  for row in scores[2:]:  # unknown segment: overall popularity order
    np.testing.assert_allclose(row, np.log1p([2, 4, 1, 0]), rtol=1e-6)
  # The raw frames' bool gender (True = M) and float age name the same rows.
  np.testing.assert_array_equal(model.score([False, True], [25.0, 35]),
                                scores[:2])


def test_popularity_shrinkage():
  ratings, users, movie_ids = _popularity_data()
  raw = sources.Popularity.fit(ratings, users, movie_ids, shrinkage=0.0)
  np.testing.assert_allclose(np.expm1(raw.score(["F", "M"], ["25", "35"])),
                             [[2, 1, 0, 0], [0, 3, 1, 0]], atol=1e-5)
  default = sources.Popularity.fit(ratings, users, movie_ids)
  # F|25: 3 of the 7 interactions, prior 10 * overall * 3 / 7.
  expected = np.log1p(np.array([2, 1, 0, 0]) + 10 * np.array([2, 4, 1, 0])
                      * 3 / 7)
  np.testing.assert_allclose(default.score(["F"], ["25"])[0], expected,
                             rtol=1e-6)
  with pytest.raises(ValueError, match="no column 'user_gender'"):
    sources.Popularity.fit(ratings, users.drop(columns="user_gender"),
                           movie_ids)
  with pytest.raises(ValueError, match="duplicate user id '1'"):
    sources.Popularity.fit(ratings, pd.concat([users, users.iloc[:1]]),
                           movie_ids)


# --------------------------------------------------------------------------
# Demographic popularity.

_ATTRS = ("user_gender", "bucketized_user_age", "user_occupation_label")


def _demographic_data(seed=0, users=60, movies=9):
  rng = np.random.default_rng(seed)
  table = pd.DataFrame({
      "user_id": [str(u) for u in range(users)],
      "user_gender": rng.choice(["F", "M"], users),
      "bucketized_user_age": rng.choice(["18", "25", "35"], users),
      "user_occupation_label": rng.choice(["writer", "doctor"], users)})
  pairs = [(u, m, r) for u in range(users) for m in range(movies)
           if rng.random() < 0.5 for r in [rng.integers(1, 6)]]
  u, m, r = zip(*pairs)
  return _ratings(u, [f"m{j}" for j in m], r), table, [
      f"m{j}" for j in range(movies + 1)]  # the last movie: never rated


def test_demographic_popularity_is_the_ridge_solution():
  ratings, users, movie_ids = _demographic_data()
  model = sources.DemographicPopularity.fit(ratings, users, movie_ids,
                                            _ATTRS, l2=3.0)
  # Dense reference: one-hot X plus an unpenalized intercept, liked Y.
  keys = sorted({f"{a}={v}" for a in _ATTRS for v in users[a]})
  assert list(model.keys) == keys
  x = np.array([[float(any(k == f"{a}={row[a]}" for a in _ATTRS))
                 for k in keys] + [1.0] for _, row in users.iterrows()])
  liked = ratings[ratings.user_rating >= 4]
  y = np.zeros((len(users), len(movie_ids)))
  y[liked.user_id.astype(int), [movie_ids.index(m) for m in liked.movie_id]] = 1
  penalty = np.diag([3.0] * len(keys) + [0.0])
  w = np.linalg.solve(x.T @ x + penalty, x.T @ y)
  np.testing.assert_allclose(model.weights, w[:-1], atol=1e-5)
  np.testing.assert_allclose(model.intercept, w[-1], atol=1e-5)
  np.testing.assert_allclose(
      model.score([dict(users.iloc[i]) for i in range(5)]), (x @ w)[:5],
      atol=1e-5)
  # No demographics: the intercept; a movie nobody rated scores 0.
  assert model.score([{}]).dtype == np.float32
  np.testing.assert_array_equal(model.score([{}])[0], model.intercept)
  np.testing.assert_allclose(model.score([{}])[0, -1], 0.0, atol=1e-6)


def test_demographic_popularity_unknown_values_and_forms():
  ratings, users, movie_ids = _demographic_data(seed=1)
  model = sources.DemographicPopularity.fit(ratings, users, movie_ids,
                                            _ATTRS)
  f = model.score([{"user_gender": "F"}])[0]
  # Unknown values and attributes add nothing; a missing one neither.
  np.testing.assert_allclose(model.score([
      {"user_gender": "F", "bucketized_user_age": "99",
       "user_occupation_label": "astronaut", "user_zip_code": "12345"},
      {"user_gender": "F", "bucketized_user_age": None}]),
      [f, f], rtol=1e-6)
  np.testing.assert_allclose(
      f, model.intercept + model.weights[model.row["user_gender=F"]],
      rtol=1e-6)
  # The raw frames' bool gender (True = M) and float age name the same rows.
  np.testing.assert_array_equal(
      model.rows([{"user_gender": True, "bucketized_user_age": 25.0}]),
      model.rows([{"user_gender": "M", "bucketized_user_age": "25"}]))
  # One attribute, l2 -> 0: each value's share of users liking the movie.
  gender = sources.DemographicPopularity.fit(ratings, users, movie_ids,
                                             ["user_gender"], l2=1e-6)
  liked = ratings[ratings.user_rating >= 4].merge(users, on="user_id")
  for g in ("F", "M"):
    share = (liked[liked.user_gender == g].groupby("movie_id").size()
             / (users.user_gender == g).sum())
    got = gender.score([{"user_gender": g}])[0]
    np.testing.assert_allclose(
        got, share.reindex(movie_ids).fillna(0).to_numpy(), atol=1e-4)


def test_demographic_popularity_errors_and_roundtrip(tmp_path):
  ratings, users, movie_ids = _demographic_data(seed=2)
  with pytest.raises(ValueError, match="no column 'user_occupation_label'"):
    sources.DemographicPopularity.fit(
        ratings, users.drop(columns="user_occupation_label"), movie_ids,
        _ATTRS)
  with pytest.raises(ValueError, match="l2 must be > 0"):
    sources.DemographicPopularity.fit(ratings, users, movie_ids, _ATTRS,
                                      l2=0.0)
  with pytest.raises(ValueError, match="duplicate user id '1'"):
    sources.DemographicPopularity.fit(
        ratings, pd.concat([users, users.iloc[1:2]]), movie_ids, _ATTRS)
  model = sources.DemographicPopularity.fit(ratings, users, movie_ids,
                                            _ATTRS, l2=7.0)
  path = str(tmp_path / "popularity.npz")
  model.save(path)
  loaded = sources.DemographicPopularity.load(path)
  assert (loaded.l2, loaded.min_rating, list(loaded.keys)) == (
      7.0, 4.0, list(model.keys))
  request = [{"user_gender": "M", "user_occupation_label": "writer"}]
  np.testing.assert_array_equal(loaded.score(request), model.score(request))
  with pytest.raises(ValueError, match="not a retrieval.sources.Demographic"):
    other = str(tmp_path / "ease.npz")
    _hand_model().save(other)
    sources.DemographicPopularity.load(other)


# --------------------------------------------------------------------------
# Merging.


def test_top_n_excludes_pads_and_breaks_ties_by_index():
  scores = np.array([[1, 3, 3, 2, 0], [5, 5, 5, 1, 5]], np.float32)
  index, value = sources.top_n(scores, 3, exclude=[[1], []])
  np.testing.assert_array_equal(index, [[2, 3, 0], [0, 1, 2]])
  np.testing.assert_array_equal(value, [[3, 2, 1], [5, 5, 5]])
  assert index.dtype == np.int64 and value.dtype == np.float32
  index, value = sources.top_n(scores[:, :3], 4, exclude=[[0, 2], []])
  np.testing.assert_array_equal(index, [[1, -1, -1, -1], [0, 1, 2, -1]])
  np.testing.assert_array_equal(value[0], [3, -np.inf, -np.inf, -np.inf])
  with pytest.raises(ValueError, match="exclude row 0"):
    sources.top_n(scores, 2, exclude=[[5], []])


def test_top_n_matches_a_full_stable_sort():
  rng = np.random.default_rng(1)
  scores = rng.integers(0, 4, (50, 40)).astype(np.float32)  # many ties
  exclude = [rng.choice(40, rng.integers(0, 38), replace=False)
             for _ in range(50)]
  index, value = sources.top_n(scores, 7, exclude)
  for row, excluded, got in zip(scores, exclude, index):
    masked = row.copy()
    masked[excluded] = -np.inf
    order = np.argsort(-masked, kind="stable")[:7]
    expected = np.where(masked[order] > -np.inf, order, -1)
    np.testing.assert_array_equal(got, expected)
    assert not np.isin(got, excluded).any()
  assert (index == -1).any()
  np.testing.assert_array_equal(value == -np.inf, index == -1)


def test_standardize_ignores_excluded_entries():
  scores = np.array([[1, 2, 3, 100], [4, 4, 4, 4]], np.float32)
  z = sources.standardize(scores, exclude=[[3], []])
  np.testing.assert_allclose(z[0], [-np.sqrt(1.5), 0, np.sqrt(1.5), 0],
                             rtol=1e-5)
  np.testing.assert_array_equal(z[1], 0)  # constant row: std floor
  np.testing.assert_allclose(
      sources.standardize(scores[:1])[0],
      (scores[0] - scores[0].mean()) / scores[0].std(), rtol=1e-5)


# --------------------------------------------------------------------------
# Files.


def test_save_load_roundtrip(tmp_path, random_data):
  ratings, movie_ids, x = random_data
  model = sources.ItemToItem.fit(ratings, movie_ids, l2=L2, neighbours=4,
                                 min_rating=4, name="ease-liked")
  path = str(tmp_path / "ease.npz")
  model.save(path)
  loaded = sources.ItemToItem.load(path)
  for field in ("movie_ids", "neighbour_index", "neighbour_weight"):
    np.testing.assert_array_equal(getattr(loaded, field), getattr(model, field))
    assert getattr(loaded, field).dtype == getattr(model, field).dtype
  assert (loaded.name, loaded.min_rating, loaded.l2, loaded.positive_only) == (
      "ease-liked", 4.0, L2, True)
  histories = [_history(x[0], movie_ids)]
  np.testing.assert_array_equal(loaded.score(histories), model.score(histories))

  popularity = sources.Popularity.fit(*_popularity_data(), shrinkage=2.0)
  pop_path = str(tmp_path / "pop.npz")
  popularity.save(pop_path)
  pop = sources.Popularity.load(pop_path)
  assert list(pop.segments) == ["F|25", "M|35"] and pop.shrinkage == 2.0
  np.testing.assert_array_equal(pop.counts, popularity.counts)
  np.testing.assert_array_equal(pop.score(["F", None], ["25", None]),
                                popularity.score(["F", None], ["25", None]))
  assert sorted(os.listdir(tmp_path)) == ["ease.npz", "pop.npz"]  # no .tmp
  with pytest.raises(ValueError, match="not a retrieval.sources.ItemToItem"):
    sources.ItemToItem.load(pop_path)


def test_load_bad_files(tmp_path):
  path = str(tmp_path / "ease.npz")
  _hand_model().save(path)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(ValueError, match="ease.npz: not a readable"):
    sources.ItemToItem.load(path)
  missing = str(tmp_path / "missing.npz")
  with pytest.raises(ValueError, match="missing.npz: no such file"):
    sources.ItemToItem.load(missing)
  with pytest.raises(ValueError, match="missing.npz: no such file"):
    sources.Popularity.load(missing)


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
  path = str(tmp_path / "ease.npz")
  _hand_model().save(path)

  def broken_savez(f, **arrays):
    f.write(b"PK\x03\x04 half a file")
    raise OSError("disk full")

  monkeypatch.setattr(sources.np, "savez", broken_savez)
  with pytest.raises(OSError, match="disk full"):
    _hand_model().save(path)
  monkeypatch.undo()
  assert os.listdir(tmp_path) == ["ease.npz"]
  np.testing.assert_array_equal(sources.ItemToItem.load(path).neighbour_index,
                                _hand_model().neighbour_index)


def test_load_checks_the_arrays(tmp_path):
  path = str(tmp_path / "ease.npz")
  model = _hand_model()
  np.savez(path, kind=np.asarray(model._KIND), movie_ids=model.movie_ids)
  with pytest.raises(ValueError, match="ease.npz: missing array"):
    sources.ItemToItem.load(path)
  model.save(path)
  with np.load(path) as f:
    arrays = dict(f)
  arrays["neighbour_index"] = arrays["neighbour_index"][:2]
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match="ease.npz: neighbour_index"):
    sources.ItemToItem.load(path)
