"""Two-stage recommendations from the exports of `make train`.

`Recommender` serves the path the bench measures (`tfrs_pipeline.app.cascade`):

1. a request (a known user's ratings and demographics, a new user's
   ratings and/or demographics) goes to every candidate source: the
   two-tower model (ScaNN), EASE, EASE over liked movies, demographic
   popularity; the movies the user rated (`history="all"`: anywhere in
   the data, the default; `train`: the train split) are never returned;
2. the merged candidates (per source: score and rank) are ranked in one
   call of the ranking export's `rank_lists`;
3. rows carry the movie, the predicted rating, the score, the sources
   that retrieved it and, for the item-to-item sources, the rated movie
   that brought it (`because`).

`SimilarMovies` ranks movies by cosine (or dot) similarity of the candidate
embeddings in `candidates.npz`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from tfrs_pipeline import export
from tfrs_pipeline.app import cascade, cascade_graph, export_check
from tfrs_pipeline.app.batching import Batcher
from tfrs_pipeline.app.catalog import (Catalog,
                                       InvalidRequestError, UnknownMovieError,
                                       UnknownUserError, demographic_inputs,
                                       load_catalog, movie_row, occupations)

DEFAULT_CANDIDATES = 0  # 0: the trained list size (`CascadeConfig`)
# One thread per op: a request's ops are small, and splitting them over
# the cores cost more than it saved on 2 cores (one request's graph call
# and a batch of 8 were both faster); concurrency comes from batching.
SERVING_INTRA_OP_THREADS = 1
MAX_K = 100


SOURCE_LABELS = {"two_tower": "two-tower", "ease": "similar to your movies",
                 "ease_liked": "similar to movies you liked",
                 "popularity": "popular"}


def _decode(a: np.ndarray) -> np.ndarray:
  return np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b,
                      otypes=[object])(a) if a.size else a.astype(object)


class Recommender:
  """Candidate sources -> merged candidates -> ranker, from the exports
  of a `make train` (`tfrs_pipeline.app.cascade`: the path the bench
  measures).

  Args:
    sources_dir: RUNS/sources/export/V/sources (EASE, EASE-liked,
      popularity and `cascade.json`: candidates per source, list size).
    retrieval_export: RUNS/retrieval/export/V (the two-tower SavedModel and
      `candidates.npz`).
    ranking_dir: RUNS/ranking/export/V/ranking (`rank_lists`); V: each
      run's newest complete export version (`export_layout`).
    catalog: movie table, user table and the ratings that count as
      already rated (also the history of a known user).
    num_candidates: merged candidates ranked per request (default:
      `CascadeConfig.serve_list_size`).
  """

  def __init__(self, sources_dir: str, retrieval_export: str,
               ranking_dir: str, catalog: Catalog,
               num_candidates: Optional[int] = None):
    self.catalog = catalog
    self.dirs = {"sources": sources_dir, "retrieval": retrieval_export,
                 "ranking": ranking_dir}
    config = cascade.read_config(sources_dir).served()
    if num_candidates:
      config = dataclasses.replace(config, list_size=int(num_candidates))
    self.config = config
    fitted = cascade.FittedSources.load(sources_dir)
    self.graph = cascade_graph.CascadeGraph(
        fitted, retrieval_export, {"ranker": ranking_dir}, config)
    self.catalogue = self.graph.catalogue_ids
    self._rows = [movie_row(catalog, m) for m in self.catalogue]
    self.similar_movies = None
    path = os.path.join(retrieval_export, "candidates.npz")
    if os.path.exists(path):
      self.similar_movies = SimilarMovies(path, catalog)
    self.exported_k = self.graph.exported_k
    self.versions = {}  # component -> export version (`from_runs`)
    self.batcher = Batcher(self.recommend_requests)

  @classmethod
  def from_runs(cls, runs_dir: str, catalog: Optional[Catalog] = None,
                history: str = "all",
                found: Optional[Mapping[str, export_check.Component]] = None,
                **kwargs) -> "Recommender":
    """From the newest complete export versions under
    RUNS/{sources,retrieval,ranking} (`make train`) only; the catalogue
    is the sources export's `catalog.npz` unless given (`history`: see
    `catalog.load_catalog`). `found`: `export_check.check(runs_dir)`
    when done already (the versions it checked are the ones loaded).
    A missing or broken file raises its typed error, naming it."""
    found = found or export_check.check(runs_dir)
    problem = export_check.error(found)
    if problem is not None:
      raise problem
    if catalog is None:
      catalog = load_catalog(found["catalog"].path, history)
    rec = cls(os.path.dirname(found["sources"].path),
              os.path.dirname(found["retrieval"].path),
              found["ranking"].path, catalog, **kwargs)
    rec.versions = {name: c.version for name, c in found.items()}
    return rec

  def info(self) -> dict:
    g = self.graph
    return {**{f"{k}_dir": v for k, v in self.dirs.items()},
            "versions": self.versions,
            "ranking_signatures": sorted(
                g.ranking_models["ranker"].signatures),
            "retrieval_signatures": sorted(g.retrieval.signatures),
            "exported_k": self.exported_k,
            "candidates_per_source": self.config.counts(),
            "num_candidates": self.config.list_size,
            "intra_op_threads":
                tf.config.threading.get_intra_op_parallelism_threads(),
            "movies": len(self.catalog.movie_row),
            "users": len(self.catalog.user_row)}

  def retrieve(self, user_ids: Sequence[str]):
    """Two-tower retrieval alone for known ids: (movie_ids [B, K],
    scores [B, K])."""
    fn = self.graph.retrieval.signatures["serving_default"]
    out = export.call_signature(fn, {"user_id": list(user_ids)},
                                len(user_ids))
    return _decode(out["movie_ids"]), out["scores"]

  # The one path: requests -> rows.
  def recommend_requests(self, requests: Sequence[cascade.Request],
                         k: int) -> List[List[dict]]:
    """Top-k rows of each `cascade.Request`, in one call of the cascade
    graph (the bench's path)."""
    check_k(k)
    if not requests:
      return []
    out = {name: v.numpy() for name, v in self.graph.recommend(
        self.graph.inputs(requests), k).items()}
    sources = np.asarray(cascade.SOURCES)
    result = []
    for b, request in enumerate(requests):
      rows = []
      for j, i in enumerate(out["index"][b]):
        if i < 0:
          break
        row = {"rank": j + 1, **self._rows[i]}
        row["genres"] = list(row["genres"])
        row["predicted_rating"] = float(out["rating"][b, j])
        row["score"] = float(out["score"][b, j])
        row["retrieval_score"] = float(out["two_tower_score"][b, j])
        row["sources"] = sources[out["retrieved"][b, j]].tolist()
        brought = out["because"][b, j]
        row["because"] = None if brought < 0 else {
            "movie_id": self.catalogue[brought],
            "title": self._rows[brought]["title"]}
        row["why"] = _why(row, request)
        rows.append(row)
      result.append(rows)
    return result

  def recommend_request(self, request: cascade.Request, k: int
                        ) -> List[dict]:
    """Top-k rows of one request (through the batcher, so concurrent
    requests share one graph call)."""
    check_k(k)
    return self.batcher(request, k)

  def known_request(self, user_id: str) -> cascade.Request:
    """A known user's request: the catalog's ratings of the user (newest
    first) as history and exclusion, demographics from the users
    table."""
    user_id = str(user_id).strip()
    if user_id not in self.catalog.user_row:
      raise UnknownUserError(f"unknown user id {user_id!r}")
    history = self.catalog.history(user_id)
    ratings = self.catalog.history_ratings(user_id)
    user = self.catalog.user(user_id) or {}
    demo = {n: str(user[n]) for n in cascade.DEMOGRAPHICS if n in user}
    ts = self.catalog.latest_timestamp(user_id)
    return cascade.Request(user_id, history, ratings, demo, (), ts)

  def recommend(self, user_id: str, k: int = 10,
                num_candidates: Optional[int] = None) -> List[dict]:
    """Top-k rows for a known user (`UnknownUserError` otherwise)."""
    del num_candidates  # the list size is the served one
    check_k(k)
    return self.recommend_request(self.known_request(user_id), k)

  def recommend_new_user(self, age, gender, occupation, zip_code,
                         k: int = 10, num_candidates: Optional[int] = None,
                         timestamp: Optional[int] = None) -> List[dict]:
    """Cold start from demographics (see `demographic_inputs`)."""
    del num_candidates
    return self.recommend_for_inputs(
        demographic_inputs(age, gender, occupation, zip_code), k, timestamp)

  def recommend_for_inputs(self, inputs: Mapping[str, str], k: int = 10,
                           timestamp: Optional[int] = None) -> List[dict]:
    """Cold start from validated request inputs (`catalog.request_inputs`:
    input name -> value)."""
    check_k(k)
    return self.recommend_request(cascade.Request(
        demographics=dict(inputs), timestamp=int(timestamp or 0)), k)

  def recommend_for_ratings(self, ratings: Sequence[Tuple[str,
                                                          Optional[float]]],
                            demographics: Optional[Mapping[str, str]] = None,
                            k: int = 10) -> List[dict]:
    """Top-k rows for a new user who brings ratings (and maybe
    demographics). `ratings`: `validate_ratings` output (first = most
    recent); `demographics`: None or `demographic_inputs` output. The
    rated movies are never returned; every stage reads the ratings (the
    two-tower history, the item-to-item sources, the ranker's rated
    movies)."""
    check_k(k)
    if not ratings and demographics is None:
      raise InvalidRequestError(
          "a new user needs ratings or demographics (age, gender, "
          "occupation and zip)")
    return self.recommend_request(cascade.Request(
        history=[m for m, _ in ratings], ratings=[r for _, r in ratings],
        demographics=dict(demographics or {})), k)

  def k_note(self, k: int, returned: int) -> Optional[str]:
    """Why a request for `k` rows got `returned` (None when it got k)."""
    size = min(self.config.list_size, len(self.catalogue))
    return k_note(k, returned, size, self.config.counts())

  def warm_up(self) -> float:
    """One known-user, one new-user and one ratings request, so the
    first real requests do not pay for TensorFlow's one-time graph
    optimization (seconds). Returns the seconds it took."""
    start = time.perf_counter()
    if self.catalog.user_row:
      self.recommend(next(iter(self.catalog.user_row)))
    self.recommend_new_user(30, "F", occupations()[0], "00000")
    if self.catalog.movie_row:
      self.recommend_for_ratings([(next(iter(self.catalog.movie_row)), 5.0)])
    return time.perf_counter() - start

  def similar(self, movie_id: str, k: int = 10) -> List[dict]:
    if self.similar_movies is None:
      raise Unavailable(f"similar movies unavailable: no "
                        f"{os.path.join(self.dirs['retrieval'], 'candidates.npz')}")
    return self.similar_movies.similar(movie_id, k)


class Unavailable(Exception):
  """A part of the service is not there (an export file): HTTP 503."""


def set_op_threads(intra_op_threads: int) -> bool:
  """Threads per TensorFlow op for serving (0: TensorFlow's default).
  Must run before TensorFlow executes its first op; returns False (and
  changes nothing) when it is too late."""
  if intra_op_threads <= 0:
    return True
  try:
    tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
  except RuntimeError:
    return False
  return True


def _why(row: dict, request: cascade.Request) -> str:
  """A short reason: the liked movie that brought it, else its sources."""
  if row["because"]:
    return f"because you liked {row['because']['title']}"
  who = describe_demographics(request.demographics)
  return ", ".join(
      f"popular with {who}" if s == "popularity" and who
      else SOURCE_LABELS.get(s, s) for s in row["sources"])


def describe_demographics(d: Optional[Mapping[str, object]]) -> str:
  """"F 25-34 writer": gender, age bucket as a range, occupation (the
  known ones); "" for none."""
  d = d or {}
  who = [str(d.get("user_gender") or ""),
         _AGE_LABELS.get(str(d.get("bucketized_user_age", "")), ""),
         str(d.get("user_occupation_label") or "")]
  return " ".join(w for w in who if w)


_AGE_LABELS = {"1": "under 18", "18": "18-24", "25": "25-34", "35": "35-44",
               "45": "45-49", "50": "50-55", "56": "56+"}


def k_note(k: int, returned: int, list_size: int,
           counts: Optional[Mapping[str, int]] = None) -> Optional[str]:
  """Why `returned` < `k` rows came back, None when all k did: the ranker
  orders at most `list_size` merged candidates per request
  (`CascadeGraph.recommend`), and the sources (at most `counts[source]`
  movies each) may bring fewer movies the user has not rated."""
  if returned >= k:
    return None
  if returned >= list_size:
    return (f"{returned} of {k}: the ranker orders the {list_size} merged "
            "candidates of the sources per request (serve "
            "--num_candidates to rank more)")
  each = ", ".join(f"{s} {n}" for s, n in (counts or {}).items())
  return (f"{returned} of {k}: the candidate sources brought only "
          f"{returned} movies not yet rated"
          + (f" (at most {each})" if each else ""))


def check_k(k) -> None:
  if not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
    raise InvalidRequestError(f"k must be an integer in 1..{MAX_K}, got {k}")


class SimilarMovies:
  """Nearest movies by cosine (or dot) of the candidate embeddings."""

  def __init__(self, candidates_path: str, catalog: Catalog):
    with np.load(candidates_path, allow_pickle=False) as f:
      self.movie_ids = f["movie_ids"].astype(str)
      self.embeddings = f["embeddings"].astype(np.float32)
    norms = np.linalg.norm(self.embeddings, axis=1, keepdims=True)
    self.normalized = self.embeddings / np.maximum(norms, 1e-12)
    self.index = {m: i for i, m in enumerate(self.movie_ids)}
    self.catalog = catalog

  def similar(self, movie_id: str, k: int = 10, metric: str = "cosine"
              ) -> List[dict]:
    check_k(k)
    movie_id = str(movie_id).strip()
    i = self.index.get(movie_id)
    if i is None:
      raise UnknownMovieError(f"unknown movie id {movie_id!r}")
    e = self.normalized if metric == "cosine" else self.embeddings
    scores = e @ e[i]
    scores[i] = -np.inf
    top = np.argsort(-scores, kind="stable")[:k]
    return [{"rank": r, **movie_row(self.catalog, self.movie_ids[j]),
             "similarity": float(scores[j])}
            for r, j in enumerate(top, 1) if np.isfinite(scores[j])]
