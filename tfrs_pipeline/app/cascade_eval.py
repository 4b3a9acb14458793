"""Offline evaluation of the two-stage recommender, through the exports.

`evaluate(cascade, data)`: users with a test movie rated >= 4 (relevant =
those movies, binary gains), their train movies excluded, the request
carrying all of their train ratings (as `recommend --history train`).
Each method's list is scored with `metrics.ListMetrics` at K = 10, 20:

* `source/<s>`: each candidate source alone, in its own order over the
  whole catalogue;
* `merged/<s>`: the merged candidates (what the ranker sees) in source
  `s`'s order;
* `two_stage/<ranker>`: the merged candidates in each ranker's order, the
  served path;
* `peer/ease_l2=<l>`: EASE over the whole catalogue fitted on every train
  rating, for each lambda; `peer/popularity`.
* `candidate_recall`: per source (its own `CascadeConfig` list) and
  merged: the share of relevant movies among the candidates (the ceiling
  of any ranker behind them).

`evaluate_new_users(cascade, data)` (data with `DataConfig.holdout_users`):
users left out of every fit, (a) demographics only: NDCG of the served
list on all their ratings rated >= 4, beside popularity and popularity in
their (gender, age) segment (each counting every rating, and `_liked`
ones counting ratings >= 4); (b) given their first 5 ratings by time: the
served list on the rest, beside EASE folded in from the same 5 ratings
and the same popularity peers. Both also show each source alone
(`source/<s>`, its own order over the catalogue).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

from retrieval import baselines, sources as sources_lib
from tfrs_pipeline.app import cascade as cascade_lib
from tfrs_pipeline.app import cascade_graph
from tfrs_pipeline import metrics, pipeline

KS = (10, 20)
RELEVANT = 4.0
EASE_L2 = (200.0, 500.0, 1000.0, 2000.0)


Cascade = cascade_graph.CascadeGraph  # sources and named rankers


def _relevant(ratings: pd.DataFrame) -> Dict[str, set]:
  liked = ratings[ratings.user_rating >= RELEVANT]
  return {u: set(g.movie_id.astype(str)) for u, g in liked.groupby("user_id")}


class _Peers:
  """EASE (per lambda) and popularity over the whole catalogue, fitted on
  `ratings` (binary interactions)."""

  def __init__(self, ratings: pd.DataFrame, catalogue: np.ndarray,
               l2_values: Sequence[float]):
    index = pd.Index(catalogue)
    users = pd.Index(sorted(set(ratings.user_id)))
    x = np.zeros((len(users), len(catalogue)), np.float32)
    x[users.get_indexer(ratings.user_id), index.get_indexer(
        ratings.movie_id.astype(str))] = 1.0
    self.counts = x.sum(axis=0)
    seen = np.flatnonzero(self.counts > 0)
    gram = x[:, seen].T.astype(np.float64) @ x[:, seen]
    self.seen = seen
    self.weights = {l2: baselines._ease_from_gram(gram, l2)  # pylint: disable=protected-access
                    for l2 in l2_values}
    self.position = {m: i for i, m in enumerate(catalogue)}
    self.n = len(catalogue)

  def ease(self, histories: Sequence[Sequence[str]], l2: float
           ) -> np.ndarray:
    x = np.zeros((len(histories), len(self.seen)), np.float32)
    col = {int(j): c for c, j in enumerate(self.seen)}
    for b, h in enumerate(histories):
      for m in h:
        j = col.get(self.position.get(m, -1))
        if j is not None:
          x[b, j] = 1.0
    out = np.zeros((len(histories), self.n), np.float32)
    out[:, self.seen] = x @ self.weights[l2]
    return out


def _top(scores: np.ndarray, exclude: Sequence[Sequence[int]], k: int
         ) -> np.ndarray:
  idx, _ = sources_lib.top_n(scores, k, exclude)
  return idx


def _ranked(catalogue, row) -> List[str]:
  return [catalogue[i] for i in row if i >= 0]


def evaluate(cascade: Cascade, data: pipeline.Data,
             batch_users: int = 256, max_users: Optional[int] = None,
             l2_values: Sequence[float] = EASE_L2, log=print
             ) -> Dict[str, object]:
  """The module docstring's metrics on `data.test` (test or validation)."""
  start = time.time()
  catalogue = cascade.catalogue_ids
  test = pipeline.ratings_frame(
      data.test, ("user_id", "movie_id", "user_rating"))
  relevant = _relevant(test)
  users = sorted(relevant, key=lambda u: (len(u), u))[:max_users]
  seen = data.seen_ratings
  requests = cascade_lib.user_requests(seen, data.table("users"), users)
  peers = _Peers(seen, catalogue, l2_values)
  k = max(KS)
  names = ([f"source/{s}" for s in cascade_lib.SOURCES]
           + [f"merged/{s}" for s in cascade_lib.SOURCES]
           + [f"two_stage/{r}" for r in cascade.rankers]
           + [f"peer/ease_l2={l2:g}" for l2 in l2_values]
           + ["peer/popularity"])
  results = {n: metrics.ListMetrics(KS) for n in names}
  recall = {s: 0.0 for s in (*cascade_lib.SOURCES, "merged")}
  for s0 in range(0, len(requests), batch_users):
    chunk = requests[s0:s0 + batch_users]
    inputs = cascade.inputs(chunk)
    exclude = [[i for i in row if i >= 0]
               for row in inputs["exclude"].numpy()]
    scores = {s: v.numpy() for s, v in cascade.source_scores(inputs).items()}
    cand = {s: v.numpy() for s, v in cascade.candidates(inputs).items()}
    ranked_by = {r: cascade.recommend(inputs, k, r)["index"].numpy()
                 for r in cascade.rankers}
    own = {s: _top(scores[s], exclude, k) for s in cascade_lib.SOURCES
           if s in scores}
    peer_rows = {f"peer/ease_l2={l2:g}": _top(
        peers.ease([r.history for r in chunk], l2), exclude, k)
                 for l2 in l2_values}
    peer_rows["peer/popularity"] = _top(
        np.broadcast_to(peers.counts, (len(chunk), peers.n)), exclude, k)
    for b, request in enumerate(chunk):
      rel = relevant[request.user_id]
      index = cand["index"][b]
      index = index[index >= 0]
      for s in cascade_lib.SOURCES:
        if s in own:
          results[f"source/{s}"].update(_ranked(catalogue, own[s][b]), rel)
          order = np.argsort(-cand[f"{s}_score"][b, :len(index)],
                             kind="stable")
          results[f"merged/{s}"].update(list(catalogue[index[order]]), rel)
          tops = np.flatnonzero(scores[f"{s}_rank"][b] > 0)
          recall[s] += len(rel & set(catalogue[tops])) / len(rel)
      recall["merged"] += len(rel & set(catalogue[index])) / len(rel)
      for r, rows in ranked_by.items():
        results[f"two_stage/{r}"].update(_ranked(catalogue, rows[b]), rel)
      for name, rows in peer_rows.items():
        results[name].update(_ranked(catalogue, rows[b]), rel)
    log(f"[two-stage] {min(s0 + batch_users, len(requests))}/"
        f"{len(requests)} users ({time.time() - start:.0f}s)")
  n = max(len(requests), 1)
  return {
      "methods": {name: m.result() for name, m in results.items()
                  if m.count},
      "candidate_recall": {s: v / n for s, v in recall.items()},
      "num_users": len(requests),
      "config": dataclasses.asdict(cascade.config),
      "seconds": round(time.time() - start, 1),
  }


def evaluate_new_users(cascade: Cascade, data: pipeline.Data,
                       given: int = 5, batch_users: int = 256,
                       l2: float = 500.0, log=print) -> Dict[str, object]:
  """(a) demographics only and (b) `given` first ratings, on the users of
  `data.holdout` (module docstring)."""
  if data.holdout is None or not len(data.holdout):
    raise ValueError("no held-out users: set DataConfig.holdout_users")
  start = time.time()
  catalogue = cascade.catalogue_ids
  hold = data.holdout.copy()
  hold["user_id"] = hold.user_id.astype(str)
  hold["movie_id"] = hold.movie_id.astype(str)
  users_table = data.table("users")
  all_users = sorted(hold.user_id.unique(), key=lambda u: (len(u), u))
  peers = _Peers(data.seen_ratings, catalogue, (l2,))
  users_frame = pd.DataFrame(
      {k: v for k, v in users_table.items() if k != "user_history"})
  # Peers count every rating and, as stronger peers, liked ones only.
  segment = {
      suffix: sources_lib.Popularity.fit(data.seen_ratings, users_frame,
                                         catalogue, min_rating=minimum,
                                         shrinkage=0.0)
      for suffix, minimum in (("", 0.0), ("_liked", RELEVANT))}
  liked_counts = segment["_liked"].overall
  out = {}
  for mode in ("demographics", f"first_{given}"):
    ordered = hold.sort_values(["user_id", "timestamp", "movie_id"])
    if mode == "demographics":
      given_part = ordered.iloc[:0]
      rest = ordered
    else:
      rank = ordered.groupby("user_id").cumcount()
      given_part, rest = ordered[rank < given], ordered[rank >= given]
    relevant = _relevant(rest)
    users = [u for u in all_users if u in relevant]
    requests = cascade_lib.user_requests(given_part, users_table, users)
    for r in requests:
      r.user_id = ""  # a new user: not in any model's vocabulary
    active = [s for s in cascade_lib.SOURCES
              if s != "two_tower" or cascade.two_tower is not None]
    names = ([f"source/{s}" for s in active]
             + [f"two_stage/{r}" for r in cascade.rankers]
             + ["peer/popularity", "peer/popularity_liked",
                "peer/segment_popularity", "peer/segment_popularity_liked"]
             + ([f"peer/ease_l2={l2:g}"] if mode != "demographics" else []))
    results = {n: metrics.ListMetrics(KS) for n in names}
    for s0 in range(0, len(requests), batch_users):
      chunk = requests[s0:s0 + batch_users]
      inputs = cascade.inputs(chunk)
      exclude = [[i for i in row if i >= 0]
                 for row in inputs["exclude"].numpy()]
      scores = cascade.source_scores(inputs)
      rows = {f"source/{s}": _top(scores[s].numpy(), exclude, max(KS))
              for s in active}
      for suffix, counts in (("", peers.counts), ("_liked", liked_counts)):
        rows[f"peer/popularity{suffix}"] = _top(np.broadcast_to(
            counts, (len(chunk), peers.n)), exclude, max(KS))
        rows[f"peer/segment_popularity{suffix}"] = _top(
            segment[suffix].score(
                [r.demographics.get("user_gender") for r in chunk],
                [r.demographics.get("bucketized_user_age") for r in chunk]),
            exclude, max(KS))
      if mode != "demographics":
        rows[f"peer/ease_l2={l2:g}"] = _top(
            peers.ease([r.history for r in chunk], l2), exclude, max(KS))
      for name in cascade.rankers:
        rows[f"two_stage/{name}"] = cascade.recommend(
            inputs, max(KS), name)["index"].numpy()
      for name, r in rows.items():
        for b in range(len(chunk)):
          results[name].update(_ranked(catalogue, r[b]),
                               relevant[users[s0 + b]])
    out[mode] = {"methods": {n: m.result() for n, m in results.items()},
                 "num_users": len(requests)}
    log(f"[new users] {mode}: {len(requests)} users "
        f"({time.time() - start:.0f}s)")
  return out
