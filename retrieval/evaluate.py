"""Offline evaluation of the retrieval model (numpy, all movies as candidates).

`evaluate(model, data)` returns (and `train.train_and_evaluate` writes to
RUN/metrics.json):

* `top_{1,5,10,50,100}_accuracy`: every test rating is a query (its user's
  features, user history and the rating's own timestamp); the rated movie
  is a hit at k if fewer than k of all movies score strictly higher.
  Nothing is excluded: `tfrs.metrics.FactorizedTopK` semantics, computed
  from exported query and candidate embeddings with
  `tfrs_pipeline.metrics` instead of `model.evaluate` (much faster).
* `recall_at_{10,20,100}`, `ndcg_at_{10,20,100}`,
  `precision_at_{10,20,100}`, `map_at_{10,20,100}` (`metrics.
  RankingMetrics`; and
  `capped_recall_at_{k}`: hits / min(k, |relevant|), the flavour some
  reports call recall): one query per user with
  a test rating: the user's features and history with the timestamp of the
  user's latest train rating (the latest train timestamp overall for a user
  without train ratings); the user's train movies are excluded, relevant =
  the user's test movies; averaged over users.
* `popularity`: the same metrics for the train-popularity baseline
  (train counts as scores, as `retrieval.baselines.popularity`), in the
  same run.
* `index`: ScaNN vs brute force over the movie corpus with the per-user
  queries (`retrieval.index_bench.compare_on_corpus`): `recall_at_k` (k=100) and
  latency p50/p99 at batch 1 and 256.

Helpers (`candidate_table`, `user_queries`, `test_queries`) are shared with
the exporter and the per-epoch evaluation.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import pandas as pd

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from retrieval import baselines, index, index_bench
from retrieval import model as model_lib
from tfrs_pipeline import features, metrics, pipeline


def candidate_table(data: pipeline.Data, candidate_model: tf.keras.Model
                    ) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
  """(movies table columns, movie embeddings [N, D]) over all movies."""
  movies = data.table("movies")
  return movies, model_lib.embed(candidate_model, movies)


def test_queries(data: pipeline.Data, query_model: tf.keras.Model,
                 limit: Optional[int] = None, batch_size: int = 4096
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Embeds test ratings: (query embeddings [Q, D], user ids [Q],
  movie ids [Q]); `limit` takes the first test ratings only."""
  ds = data.test if limit is None else data.test.take(limit)
  names = [i.name for i in features.inputs_for(features.QUERY)]

  @tf.function
  def run(batch):
    return query_model({n: batch[n] for n in names})

  embeddings, users, movies = [], [], []
  for batch in ds.batch(batch_size).prefetch(2):
    embeddings.append(run(batch).numpy())
    users.append(batch["user_id"].numpy().astype(str))
    movies.append(batch["movie_id"].numpy().astype(str))
  if not embeddings:
    return np.zeros((0, query_model.embedding_dim), np.float32), \
        np.array([], str), np.array([], str)
  return (np.concatenate(embeddings), np.concatenate(users),
          np.concatenate(movies))


def latest_train_timestamps(data: pipeline.Data) -> Tuple[Dict[str, int], int]:
  """(user id -> timestamp of the user's latest train rating, overall max)."""
  ratings = data.seen_ratings
  if ratings is None:
    ratings = pipeline.ratings_frame(data.train)
  latest = ratings.groupby("user_id").timestamp.max()
  overall = int(ratings.timestamp.max()) if len(ratings) else 0
  return {str(u): int(t) for u, t in latest.items()}, overall


def user_queries(data: pipeline.Data, user_ids: np.ndarray,
                 timestamps: Dict[str, int], default_timestamp: int
                 ) -> Dict[str, np.ndarray]:
  """Query-input columns for `user_ids` from the users table (unknown
  users get each input's default) with the timestamp context."""
  users = data.table("users")
  row = {u: i for i, u in enumerate(users["user_id"])}
  rows = np.array([row.get(u, -1) for u in user_ids])
  columns = {"user_id": np.asarray(user_ids).astype(str)}
  for spec in features.inputs_for(features.QUERY):
    if spec.entity != features.USER or spec.name == "user_id":
      continue
    values = users.get(spec.name)
    if values is None:
      columns[spec.name] = np.full(len(rows), spec.default, dtype=object)
      continue
    taken = np.asarray(values, dtype=object)[np.maximum(rows, 0)]
    columns[spec.name] = np.where(rows >= 0, taken, spec.default)
  columns["timestamp"] = np.array(
      [timestamps.get(u, default_timestamp) for u in columns["user_id"]],
      np.int64)
  return columns


def top_k_accuracy(query_embeddings: np.ndarray, target_ids: np.ndarray,
                   movie_ids: np.ndarray, movie_embeddings: np.ndarray,
                   ks=metrics.TOP_KS, chunk: int = 2048) -> Dict[str, float]:
  """FactorizedTopK-style accuracy of [Q, D] queries against [N, D]
  candidates; queries whose target is not a candidate are misses."""
  position = {m: i for i, m in enumerate(np.asarray(movie_ids).astype(str))}
  targets = np.array([position.get(m, -1) for m in target_ids], np.int64)
  known = targets >= 0
  accuracy = metrics.TopKAccuracy(ks)
  q, t = query_embeddings[known], targets[known]
  for start in range(0, len(q), chunk):
    accuracy.update(q[start:start + chunk] @ movie_embeddings.T,
                    t[start:start + chunk])
  result = accuracy.result()
  scale = accuracy.count / max(len(targets), 1)
  return {k: v * scale for k, v in result.items()}


def evaluate(model: model_lib.RetrievalModel, data: pipeline.Data,
             log: Callable[[str], Any] = print, compare_index: bool = True,
             popularity: bool = True) -> Dict[str, Any]:
  """All metrics of the module docstring; see there."""
  movies, movie_embeddings = candidate_table(data, model.candidate_model)
  movie_ids = np.asarray(movies["movie_id"]).astype(str)
  log(f"[eval] embedding {data.num_test} test ratings ...")
  queries, test_users, test_movies = test_queries(data, model.query_model)
  result: Dict[str, Any] = top_k_accuracy(queries, test_movies, movie_ids,
                                          movie_embeddings)
  result["num_test_queries"] = int(len(queries))

  # Per-user ranking metrics, train movies excluded (label ratings too:
  # they are the user's train movies as a request sees them).
  train = data.seen_ratings
  if train is None:
    train = pipeline.ratings_frame(data.train)
  test = pd.DataFrame({"user_id": test_users, "movie_id": test_movies})
  interactions = baselines.Interactions(train, test, movie_ids)
  timestamps, latest = latest_train_timestamps(data)
  columns = user_queries(data, interactions.user_ids, timestamps, latest)
  user_embeddings = model_lib.embed(model.query_model, columns)
  def score_users(users):
    return user_embeddings[users] @ movie_embeddings.T

  result.update(_ranking(score_users, interactions))
  result["num_users"] = int(len(interactions.user_ids))
  log("[eval] model: " + _summary(result))

  if popularity:
    counts = interactions.train_counts().astype(np.float32)
    pop = _ranking(lambda users: np.broadcast_to(
        counts, (len(users), len(counts))), interactions, top_k=True)
    result["popularity"] = pop
    log("[eval] popularity: " + _summary(pop))

  if compare_index:
    has_test = np.isin(interactions.user_ids, test_users)
    comparison = index_bench.compare_on_corpus(
        movie_embeddings, movie_ids, user_embeddings[has_test],
        index.movie_index_config(len(movie_ids)), k=min(100, len(movie_ids)))
    result["index"] = _index_summary(comparison)
    log("[eval] ScaNN vs brute force: recall@{k} {r:.4f}, batch-1 p50 "
        "{s:.2f} ms vs {b:.2f} ms".format(
            k=comparison["k"], r=comparison["recall_at_k"],
            s=comparison["scann"]["batch_1"]["p50_ms"],
            b=comparison["brute_force"]["batch_1"]["p50_ms"]))
  result["movie_embeddings"] = movie_embeddings  # removed before writing
  result["movie_ids"] = movie_ids
  return result


def _ranking(score_users, interactions: baselines.Interactions,
             top_k: bool = False) -> Dict[str, float]:
  """recall/NDCG/precision/MAP (train excluded) and `capped_recall_at_{k}`
  (recall over min(k, |relevant|)); with `top_k`, also top-k accuracy (per
  user query, as `baselines.popularity` reports it)."""
  top_ks = metrics.TOP_KS if top_k else ()
  out = baselines.evaluate_user_scores(
      score_users, interactions, top_ks=top_ks,
      ranking_ks=metrics.RANKING_KS)
  capped = baselines.evaluate_user_scores(
      score_users, interactions, top_ks=(), ranking_ks=metrics.RANKING_KS,
      capped_recall=True)
  for k in metrics.RANKING_KS:
    out[f"capped_recall_at_{k}"] = capped[f"recall_at_{k}"]
  return out


def _index_summary(c: Dict[str, Any]) -> Dict[str, Any]:
  out = {"k": c["k"], "recall_at_k": c["recall_at_k"],
         "num_candidates": c["num_candidates"], "num_queries": c["num_queries"],
         "config": c["config"]}
  for method in ("scann", "brute_force"):
    out[method] = {"build_s": c[method]["build_s"]}
    for b in (1, 256):
      lat = c[method][f"batch_{b}"]
      out[method][f"batch_{b}"] = {k: lat[k] for k in ("p50_ms", "p99_ms",
                                                       "qps")}
  for b in (1, 256):
    out[f"speedup_batch_{b}"] = c[f"speedup_batch_{b}"]
  return out


def _summary(m: Dict[str, Any]) -> str:
  keys = ["top_10_accuracy", "top_100_accuracy", "recall_at_20",
          "capped_recall_at_20", "ndcg_at_20", "recall_at_100"]
  return ", ".join(f"{k} {m[k]:.4f}" for k in keys if k in m)
