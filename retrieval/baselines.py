"""Retrieval baselines: popularity, EASE and the TFRS tutorial two-tower.

Every baseline takes train/test rating DataFrames (columns of
`data.raw.ratings_examples`; only `user_id` and `movie_id` are used) and
the candidate movie ids, and returns `(metrics, seconds)` where `metrics`
has the keys the retrieval model reports:

- `top_{1,5,10,50,100}_accuracy`: each test rating is a query (its user,
  with the user's train history where the baseline uses one); the true
  movie is a hit at k if fewer than k candidates score strictly higher.
  Nothing is excluded (`tfrs.metrics.FactorizedTopK` semantics).
- `recall_at_{10,20,100}`, `ndcg_at_{10,20,100}`: per user, train movies
  excluded, relevant = the user's test movies, averaged over users with
  a test rating.

All ratings count as positive interactions, whatever their value.
`capped_recall=True` switches recall to |hits| / min(k, |relevant|)
(see `tfrs_pipeline.metrics`).
`evaluate_user_scores` computes the same numbers for any scorer, e.g. a
trained two-tower model.
"""

import time
from typing import Callable, Dict, Iterable, List, Sequence, Tuple

import numpy as np
import pandas as pd

import tfrs_pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
from tfrs_pipeline import metrics

Metrics = Dict[str, float]
# Users scored at once by `evaluate_user_scores`.
USER_CHUNK = 512


def _log(verbose: bool, message: str) -> None:
  if verbose:
    print(message, flush=True)


def _ids(values) -> np.ndarray:
  return np.asarray(values).astype(str)


class Interactions:
  """Train/test ratings as index arrays over users and candidate movies.

  Attributes:
    user_ids: [U] str, the users of train or test, sorted.
    movie_ids: [N] str, the candidates, in the caller's order.
    train_users, train_items: [T] int indices of the train ratings that
      hit a candidate.
    test_users, test_items: [Q] int indices of the test ratings whose
      movie is a candidate (the others cannot be retrieved and are
      dropped).
  """

  def __init__(self, train: pd.DataFrame, test: pd.DataFrame,
               movie_ids: Sequence[str]):
    self.movie_ids = _ids(movie_ids)
    item_index = pd.Index(self.movie_ids)
    if not item_index.is_unique:
      raise ValueError("movie_ids has duplicates")
    self.user_ids = np.unique(np.concatenate(
        [_ids(train.user_id), _ids(test.user_id)]))
    user_index = pd.Index(self.user_ids)

    def encode(df):
      users = user_index.get_indexer(_ids(df.user_id))
      items = item_index.get_indexer(_ids(df.movie_id))
      known = items >= 0
      return users[known].astype(np.int64), items[known].astype(np.int64)

    self.train_users, self.train_items = encode(train)
    self.test_users, self.test_items = encode(test)
    self.num_test_dropped = len(test) - len(self.test_items)

  @property
  def shape(self) -> Tuple[int, int]:
    return len(self.user_ids), len(self.movie_ids)

  def train_matrix(self, dtype=np.float32) -> np.ndarray:
    """[U, N] binary matrix of train interactions."""
    x = np.zeros(self.shape, dtype=dtype)
    x[self.train_users, self.train_items] = 1
    return x

  def train_counts(self) -> np.ndarray:
    """[N] number of train ratings per candidate."""
    return np.bincount(self.train_items, minlength=self.shape[1])


def evaluate_user_scores(
    score_users: Callable[[np.ndarray], np.ndarray],
    data: Interactions,
    top_ks: Sequence[int] = metrics.TOP_KS,
    ranking_ks: Sequence[int] = metrics.RANKING_KS,
    capped_recall: bool = False,
    user_chunk: int = USER_CHUNK) -> Metrics:
  """Top-k accuracy and per-user ranking metrics of a user scorer.

  Args:
    score_users: maps [u] user indices (into `data.user_ids`) to [u, N]
      candidate scores.
    data: the interactions.
    top_ks: cut-offs of top-k accuracy.
    ranking_ks: cut-offs of recall and NDCG.
    capped_recall: recall over min(k, |relevant|); see `metrics`.
    user_chunk: users scored per call.

  Returns:
    `top_{k}_accuracy`, `recall_at_{k}` and `ndcg_at_{k}`.
  """
  num_users, num_items = data.shape
  accuracy = metrics.TopKAccuracy(top_ks)
  ranking = metrics.RankingMetrics(ranking_ks, capped_recall)
  test_order = np.argsort(data.test_users, kind="stable")
  test_users = data.test_users[test_order]
  test_items = data.test_items[test_order]
  train_order = np.argsort(data.train_users, kind="stable")
  train_users = data.train_users[train_order]
  train_items = data.train_items[train_order]
  for start in range(0, num_users, user_chunk):
    stop = min(start + user_chunk, num_users)
    scores = np.asarray(score_users(np.arange(start, stop)))
    lo, hi = np.searchsorted(test_users, [start, stop])
    if hi == lo:
      continue
    accuracy.update(scores, test_items[lo:hi], rows=test_users[lo:hi] - start)
    relevant = metrics.interaction_mask(
        test_users[lo:hi] - start, test_items[lo:hi], scores.shape)
    lo, hi = np.searchsorted(train_users, [start, stop])
    exclude = metrics.interaction_mask(
        train_users[lo:hi] - start, train_items[lo:hi], scores.shape)
    ranking.update(scores, relevant, exclude)
  return {**accuracy.result(), **ranking.result()}


# --------------------------------------------------------------------------
# Popularity.


def popularity(train: pd.DataFrame, test: pd.DataFrame,
               movie_ids: Sequence[str],
               capped_recall: bool = False) -> Tuple[Metrics, float]:
  """Scores every candidate by its number of train ratings."""
  start = time.time()
  data = Interactions(train, test, movie_ids)
  counts = data.train_counts().astype(np.float32)
  result = evaluate_user_scores(
      lambda users: np.broadcast_to(counts, (len(users), len(counts))), data,
      capped_recall=capped_recall)
  return result, time.time() - start


# --------------------------------------------------------------------------
# EASE.


def ease_weights(x: np.ndarray, l2: float) -> np.ndarray:
  """EASE item-item weights (Steck, WWW 2019), closed form.

  Args:
    x: [U, I] binary interaction matrix.
    l2: L2 penalty lambda.

  Returns:
    [I, I] float32 B with zero diagonal: B = I - P diagMat(1 / diag(P)),
    P = (X^T X + lambda I)^-1. Scores are X B.
  """
  gram = x.T.astype(np.float64) @ x.astype(np.float64)
  return _ease_from_gram(gram, l2)


def _ease_from_gram(gram: np.ndarray, l2: float) -> np.ndarray:
  p = gram.copy()
  p[np.diag_indices_from(p)] += l2
  p = np.linalg.inv(p)
  b = p / -np.diag(p)[None, :]
  np.fill_diagonal(b, 0.0)
  return b.astype(np.float32)


def ease_sweep(train: pd.DataFrame, test: pd.DataFrame,
               movie_ids: Sequence[str], l2_values: Iterable[float],
               verbose: bool = True, capped_recall: bool = False
               ) -> List[Tuple[float, Metrics, float]]:
  """EASE for each lambda in `l2_values`: a list of (l2, metrics, seconds).

  The query of a test rating is its user's train history (no exclusion
  for top-k accuracy; train movies excluded for recall/NDCG). The model
  is fit on the movies with a train rating; other candidates score 0 (what
  the full-size closed form gives them). A user without train history
  gets the popularity scores. `seconds` includes the shared Gram matrix.
  """
  start = time.time()
  data = Interactions(train, test, movie_ids)
  x = data.train_matrix()
  counts = data.train_counts()
  seen = np.flatnonzero(counts > 0)
  x_seen = x[:, seen]
  has_history = x_seen.any(axis=1)
  fallback = counts.astype(np.float32)
  _log(verbose, f"EASE: Gram matrix of {len(seen)} movies x "
       f"{len(x)} users")
  gram = x_seen.T.astype(np.float64) @ x_seen.astype(np.float64)
  shared = time.time() - start
  out = []
  for l2 in l2_values:
    begin = time.time()
    b = _ease_from_gram(gram, float(l2))

    def score_users(users, b=b):
      scores = np.zeros((len(users), x.shape[1]), dtype=np.float32)
      scores[:, seen] = x_seen[users] @ b
      cold = ~has_history[users]
      scores[cold] = fallback
      return scores

    result = evaluate_user_scores(score_users, data,
                                  capped_recall=capped_recall)
    seconds = time.time() - begin + shared
    _log(verbose, f"EASE l2={l2:g}: recall@20 {result['recall_at_20']:.4f} "
         f"top-100 {result['top_100_accuracy']:.4f} ({seconds:.1f} s)")
    out.append((float(l2), result, seconds))
  return out


def ease(train: pd.DataFrame, test: pd.DataFrame, movie_ids: Sequence[str],
         l2: float = 500.0, verbose: bool = True,
         capped_recall: bool = False) -> Tuple[Metrics, float]:
  """EASE with one lambda; see `ease_sweep`."""
  (_, result, seconds), = ease_sweep(train, test, movie_ids, [l2], verbose,
                                     capped_recall)
  return result, seconds


# --------------------------------------------------------------------------
# The TFRS basic-retrieval tutorial two-tower model.


def two_tower(train: pd.DataFrame, test: pd.DataFrame,
              movie_ids: Sequence[str], epochs: int = 5,
              embedding_dimension: int = 32, learning_rate: float = 0.1,
              batch_size: int = 8192, seed: int = 42,
              verbose: bool = True, capped_recall: bool = False,
              tutorial_pipeline: bool = False) -> Tuple[Metrics, float]:
  """The two-tower model of the TFRS basic_retrieval tutorial.

  (https://www.tensorflow.org/recommenders/examples/basic_retrieval):
  user_id and movie StringLookup + Embedding(`embedding_dimension`)
  towers, `tfrs.tasks.Retrieval` (in-batch softmax), Adagrad, batches of
  `batch_size` reshuffled every epoch (with `tutorial_pipeline`: the
  tutorial's `shuffle(100_000).batch().cache()`, a partial shuffle of
  user-ordered ratings in the same order every epoch, which trains a
  worse model). The movie tower is keyed by
  movie_id rather than title (the ML-1M titles are unique, so this is the
  same model). Evaluated from the extracted embeddings with
  `evaluate_user_scores`, not with `FactorizedTopK` in `model.evaluate`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top

  start = time.time()
  tf.keras.utils.set_random_seed(seed)
  data = Interactions(train, test, movie_ids)
  train_user_ids = np.unique(_ids(train.user_id))

  user_model = tf.keras.Sequential([
      tf.keras.layers.StringLookup(vocabulary=train_user_ids,
                                   mask_token=None),
      tf.keras.layers.Embedding(len(train_user_ids) + 1, embedding_dimension),
  ])
  movie_model = tf.keras.Sequential([
      tf.keras.layers.StringLookup(vocabulary=data.movie_ids,
                                   mask_token=None),
      tf.keras.layers.Embedding(len(data.movie_ids) + 1, embedding_dimension),
  ])

  class TwoTower(tfrs.Model):

    def __init__(self):
      super().__init__()
      self.user_model = user_model
      self.movie_model = movie_model
      self.task = tfrs.tasks.Retrieval()

    def compute_loss(self, features, training=False):
      return self.task(self.user_model(features["user_id"]),
                       self.movie_model(features["movie_id"]))

  model = TwoTower()
  model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate))
  dataset = tf.data.Dataset.from_tensor_slices({
      "user_id": _ids(train.user_id),
      "movie_id": _ids(train.movie_id),
  })
  if tutorial_pipeline:
    dataset = dataset.shuffle(100_000, seed=seed,
                              reshuffle_each_iteration=False)
    dataset = dataset.batch(batch_size).cache()
  else:
    dataset = dataset.shuffle(len(train), seed=seed,
                              reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).prefetch(2)
  _log(verbose, f"two-tower: {epochs} epochs on {len(train)} ratings")
  model.fit(dataset, epochs=epochs, verbose=2 if verbose else 0)

  user_embeddings = user_model(tf.constant(data.user_ids)).numpy()
  movie_embeddings = movie_model(tf.constant(data.movie_ids)).numpy()
  result = evaluate_user_scores(
      lambda users: user_embeddings[users] @ movie_embeddings.T, data,
      capped_recall=capped_recall)
  return result, time.time() - start
