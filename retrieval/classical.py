"""Classical top-N peers: content-based and neighbourhood filtering.

Beside `retrieval.baselines` (popularity, EASE), with its conventions:
train/test rating DataFrames (columns of `data.raw.ratings_examples`),
candidate movie ids, metrics of `baselines.evaluate_user_scores` (train
movies excluded from the per-user lists). Numpy/pandas only: each model is
a few matrix products on a [users, movies] binary matrix, which a library
(e.g. `implicit`) would not make shorter or faster at this size.

- Content-based: an item profile from the feature specification's movie
  inputs (the `categorical`, `multi_categorical` and `bucketized` movie
  features except the id: genres, director, star, release year), one-hot /
  multi-hot, L2-normalized; a user profile = the sum of the profiles of
  the movies the user liked (rating >= 4), weighted by rating - 3; score
  = cosine similarity.
- Item-kNN / user-kNN: shrunk cosine similarity of the binary interaction
  columns (rows), sim * n_common / (n_common + shrinkage); each item
  (user) keeps its top-k neighbours; item-kNN scores a movie by the summed
  similarities to the user's movies, user-kNN by the summed similarities
  of the neighbours who rated it.

`select_knn` chooses k and shrinkage on a validation split carved from
train (per user, seeded hash, the rule of `ranking.baselines.
validation_mask`), never on test.
"""

import hashlib
import itertools
import time
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

import tfrs_pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
from data import raw
from tfrs_pipeline import features
from retrieval import baselines

Metrics = Dict[str, float]
LIKED = 4
PROFILE_KINDS = ("categorical", "multi_categorical", "bucketized")
VALIDATION_SALT = "validation"
SELECTION_KEY = "ndcg_at_10"


def validation_mask(ratings: pd.DataFrame, fraction: float = 0.1,
                    salt: str = VALIDATION_SALT) -> np.ndarray:
  """[len(ratings)] bool; the rule of `ranking.baselines.validation_mask`:
  held out iff `int(sha256(f"{salt}:{user}:{movie}")[:8], 16) < fraction *
  16**8`."""
  def held_out(user, movie):
    digest = hashlib.sha256(f"{salt}:{user}:{movie}".encode()).hexdigest()
    return int(digest[:8], 16) < fraction * 16**8
  return np.fromiter(
      (held_out(u, m) for u, m in zip(ratings.user_id, ratings.movie_id)),
      dtype=bool, count=len(ratings))


# --------------------------------------------------------------------------
# Content-based.


def profile_features() -> List[features.Feature]:
  """The spec's movie features that make the item profile."""
  return [f for f in features.FEATURES
          if f.entity == features.MOVIE and f.kind in PROFILE_KINDS
          and f.source != "movie_id"]


def _tokens(value) -> List[str]:
  """A cell's values; a missing director or star (`raw.UNKNOWN`) is none."""
  if isinstance(value, (list, tuple, np.ndarray)):
    values = [str(v) for v in value]
  else:
    values = str(value).split(features.GENRE_SEPARATOR)
  return [t for t in values if t and t != raw.UNKNOWN]


def item_profiles(movies: pd.DataFrame, movie_ids: Sequence[str]
                  ) -> np.ndarray:
  """[N, F] float32 L2-normalized one-/multi-hot profiles of `movie_ids`.

  `movies` has a `movie_id` column and one column per profile feature's
  source (e.g. the movie table, or rating rows with the movies joined);
  a candidate missing from it gets a zero profile. Categorical values seen
  in fewer than the feature's `min_count` movies, and `raw.UNKNOWN`, are
  dropped; numbers fall
  into the feature's `num_buckets` quantile buckets.
  """
  unique = movies.drop_duplicates("movie_id")
  movies = unique.set_index(unique.movie_id.astype(str)).reindex(baselines._ids(movie_ids))  # pylint: disable=protected-access
  present = movies.movie_id.notna().to_numpy()
  blocks = []
  for feature in profile_features():
    column = movies[feature.source]
    if feature.kind == "bucketized":
      values = column.to_numpy(np.float64)
      known = present & (values > 0)
      edges = np.unique(np.quantile(values[known], np.linspace(
          0, 1, feature.num_buckets + 1)[1:-1])) if known.any() else []
      block = np.zeros((len(movies), len(edges) + 1), np.float32)
      block[np.flatnonzero(known), np.searchsorted(
          edges, values[known], side="right")] = 1
    else:
      lists = [_tokens(v) if ok else [] for v, ok in zip(column, present)]
      counts = pd.Series([t for ts in lists for t in set(ts)]).value_counts()
      vocab = pd.Index(counts.index[counts >= feature.min_count])
      block = np.zeros((len(movies), len(vocab)), np.float32)
      for row, ts in enumerate(lists):
        cols = vocab.get_indexer(ts)
        block[row, cols[cols >= 0]] = 1
    blocks.append(block)
  profile = np.concatenate(blocks, axis=1)
  norm = np.linalg.norm(profile, axis=1, keepdims=True)
  return profile / np.maximum(norm, 1e-12)


def _liked_weights(train: pd.DataFrame, data: baselines.Interactions
                   ) -> np.ndarray:
  """[U, N] rating - (LIKED - 1) for train ratings >= LIKED, else 0."""
  weights = np.zeros(data.shape, np.float32)
  users = pd.Index(data.user_ids).get_indexer(baselines._ids(train.user_id))  # pylint: disable=protected-access
  items = pd.Index(data.movie_ids).get_indexer(baselines._ids(train.movie_id))  # pylint: disable=protected-access
  rating = train.user_rating.to_numpy(np.float32)
  keep = (items >= 0) & (rating >= LIKED)
  weights[users[keep], items[keep]] = rating[keep] - (LIKED - 1)
  return weights


def content_scorer(train: pd.DataFrame, movies: pd.DataFrame,
                   data: baselines.Interactions
                   ) -> Callable[[np.ndarray], np.ndarray]:
  """Maps [u] user indices to [u, N] cosine(user profile, item profile).

  A user without a liked train movie gets the popularity scores.
  """
  items = item_profiles(movies, data.movie_ids)
  users = _liked_weights(train, data) @ items
  norm = np.linalg.norm(users, axis=1, keepdims=True)
  cold = norm[:, 0] == 0
  users /= np.maximum(norm, 1e-12)
  fallback = data.train_counts().astype(np.float32)
  fallback /= max(fallback.max(), 1.0)

  def score(u):
    out = users[u] @ items.T
    out[cold[u]] = fallback
    return out
  return score


def content_based(train: pd.DataFrame, test: pd.DataFrame,
                  movies: pd.DataFrame, movie_ids: Sequence[str],
                  ) -> Tuple[Metrics, float]:
  """Content-based filtering on test; `(metrics, seconds)`."""
  start = time.time()
  data = baselines.Interactions(train, test, movie_ids)
  result = baselines.evaluate_user_scores(
      content_scorer(train, movies, data), data)
  return result, time.time() - start


# --------------------------------------------------------------------------
# Neighbourhood CF.


def shrunk_cosine(x: np.ndarray, shrinkage: float) -> np.ndarray:
  """[C, C] shrunk cosine similarity of the columns of binary `x` [R, C].

  sim(i, j) = n_ij / sqrt(n_i n_j) * n_ij / (n_ij + shrinkage), n_ij = rows
  with both, n_i = rows with i; zero diagonal, zero for an empty column.
  """
  x = np.asarray(x, np.float32)
  common = x.T @ x
  n = np.diag(common).copy()
  norm = np.sqrt(np.maximum(n, 1e-12))
  sim = common / norm[:, None] / norm[None, :]
  if shrinkage > 0:
    sim *= common / (common + shrinkage)
  np.fill_diagonal(sim, 0.0)
  sim[:, n == 0] = 0
  sim[n == 0] = 0
  return sim.astype(np.float32)


def keep_top_k(sim: np.ndarray, k: int) -> np.ndarray:
  """`sim` [C, C] with all but each row's k largest entries zeroed."""
  k = min(int(k), sim.shape[1])
  if k >= sim.shape[1]:
    return sim
  top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
  out = np.zeros_like(sim)
  rows = np.arange(len(sim))[:, None]
  out[rows, top] = sim[rows, top]
  return out


def item_knn_scorer(x: np.ndarray, k: int, shrinkage: float
                    ) -> Callable[[np.ndarray], np.ndarray]:
  """[u] -> [u, N]: sum over the user's movies i of sim_k(i, j)."""
  sim = keep_top_k(shrunk_cosine(x, shrinkage), k)
  return lambda u: x[u] @ sim


def user_knn_scorer(x: np.ndarray, k: int, shrinkage: float
                    ) -> Callable[[np.ndarray], np.ndarray]:
  """[u] -> [u, N]: sum over the user's k neighbours v of sim(u, v) x_vj."""
  sim = keep_top_k(shrunk_cosine(x.T, shrinkage), k)
  return lambda u: sim[u] @ x


SCORERS = {"item_knn": item_knn_scorer, "user_knn": user_knn_scorer}
K_GRID = (20, 50, 100, 200)
SHRINKAGE_GRID = (0.0, 10.0, 50.0, 200.0)


def knn(method: str, train: pd.DataFrame, test: pd.DataFrame,
        movie_ids: Sequence[str], k: int, shrinkage: float
        ) -> Tuple[Metrics, float]:
  """`method` in `SCORERS` fitted on train, evaluated on test."""
  start = time.time()
  data = baselines.Interactions(train, test, movie_ids)
  scorer = SCORERS[method](data.train_matrix(), k, shrinkage)
  return baselines.evaluate_user_scores(scorer, data), time.time() - start


def select_knn(method: str, train: pd.DataFrame, movie_ids: Sequence[str],
               ks: Sequence[int] = K_GRID,
               shrinkages: Sequence[float] = SHRINKAGE_GRID,
               validation_fraction: float = 0.1) -> Dict[str, object]:
  """Grid of (k, shrinkage) on a validation split carved from train.

  Returns `{"k", "shrinkage", "validation": [{"k", "shrinkage",
  SELECTION_KEY, "recall_at_20"}, ...]}`, the best by validation NDCG@10.
  """
  held = validation_mask(train, validation_fraction)
  data = baselines.Interactions(train[~held], train[held], movie_ids)
  x = data.train_matrix()
  rows = []
  for k, shrinkage in itertools.product(ks, shrinkages):
    m = baselines.evaluate_user_scores(
        SCORERS[method](x, k, shrinkage), data, ranking_ks=(10, 20))
    rows.append({"k": int(k), "shrinkage": float(shrinkage),
                 SELECTION_KEY: m[SELECTION_KEY],
                 "recall_at_20": m["recall_at_20"]})
  best = max(rows, key=lambda r: r[SELECTION_KEY])
  return {"k": best["k"], "shrinkage": best["shrinkage"], "validation": rows}


def evaluate_all(train: pd.DataFrame, test: pd.DataFrame,
                 movies: pd.DataFrame, movie_ids: Sequence[str],
                 ks: Sequence[int] = K_GRID,
                 shrinkages: Sequence[float] = SHRINKAGE_GRID
                 ) -> Dict[str, Dict[str, object]]:
  """The three peers on test, kNN settings chosen on validation.

  Returns `{name: {"metrics", "seconds", "params"}}` for `content_based`,
  `item_knn`, `user_knn`; a kNN's seconds include its selection, its
  params hold the validation grid.
  """
  out = {}
  m, s = content_based(train, test, movies, movie_ids)
  out["content_based"] = {"metrics": m, "seconds": s, "params": {
      "features": [f.name for f in profile_features()]}}
  for method in SCORERS:
    start = time.time()
    chosen = select_knn(method, train, movie_ids, ks, shrinkages)
    m, _ = knn(method, train, test, movie_ids, chosen["k"],
               chosen["shrinkage"])
    out[method] = {"metrics": m, "seconds": time.time() - start,
                   "params": chosen}
  return out
