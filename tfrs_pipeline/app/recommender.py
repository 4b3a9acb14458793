"""Two-stage recommendations from the exports of `make train`.

`Recommender` serves the path the bench measures (`tfrs_pipeline.app.cascade`):

1. a request (a known user's ratings and demographics, a new user's
   ratings and/or demographics) goes to every candidate source: the
   two-tower model (ScaNN), EASE, EASE over liked movies, segment
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

from tfrs_pipeline import errors, export
from tfrs_pipeline.app import cascade
from tfrs_pipeline.app.catalog import (CATALOG_FILE, Catalog,
                                       InvalidRequestError, UnknownMovieError,
                                       UnknownUserError, demographic_inputs,
                                       load_catalog, movie_row, occupations)

DEFAULT_CANDIDATES = 0  # 0: the trained list size (`CascadeConfig`)
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
    sources_dir: RUNS/sources/export/sources (EASE, EASE-liked,
      popularity and `cascade.json`: candidates per source, list size).
    retrieval_export: RUNS/retrieval/export (the two-tower SavedModel and
      `candidates.npz`).
    ranking_dir: RUNS/ranking/export/ranking (`rank_lists`).
    catalog: movie table, user table and the ratings that count as
      already rated (also the history of a known user).
    num_candidates: merged candidates ranked per request (default: the
      trained `list_size`).
  """

  def __init__(self, sources_dir: str, retrieval_export: str,
               ranking_dir: str, catalog: Catalog,
               num_candidates: Optional[int] = None):
    self.catalog = catalog
    self.dirs = {"sources": sources_dir, "retrieval": retrieval_export,
                 "ranking": ranking_dir}
    config = cascade.read_config(sources_dir)
    if num_candidates:
      config = dataclasses.replace(config, list_size=int(num_candidates))
    self.config = config
    fitted = cascade.FittedSources.load(sources_dir)
    self.two_tower = cascade.TwoTower(retrieval_export,
                                      fitted.ease.movie_ids)
    self.sources = cascade.CandidateSources(fitted, self.two_tower, config)
    self.ranker = cascade.Ranker(ranking_dir)
    self.similar_movies = None
    path = os.path.join(retrieval_export, "candidates.npz")
    if os.path.exists(path):
      self.similar_movies = SimilarMovies(path, catalog)
    probe = export.call_signature(self.two_tower.fn, {"user_id": [""]}, 1)
    self.exported_k = int(probe["movie_ids"].shape[1])

  @classmethod
  def from_runs(cls, runs_dir: str, catalog: Optional[Catalog] = None,
                history: str = "all", **kwargs) -> "Recommender":
    """From the exports under RUNS/{sources,retrieval,ranking} (`make
    train`) only; the catalogue is the sources export's `catalog.npz`
    unless given (`history`: see `catalog.load_catalog`)."""
    dirs = (os.path.join(runs_dir, "sources", "export", "sources"),
            os.path.join(runs_dir, "retrieval", "export"),
            os.path.join(runs_dir, "ranking", "export", "ranking"))
    checks = ((dirs[0], "ease.npz"), (dirs[1], "candidates.npz"),
              (dirs[2], "saved_model.pb"))
    for d, name in checks:
      if not os.path.exists(os.path.join(d, name)):
        raise errors.MissingError(f"no {os.path.join(d, name)}: train "
                                  "first (make train)")
    if catalog is None:
      catalog = load_catalog(os.path.join(dirs[0], CATALOG_FILE), history)
    return cls(*dirs, catalog, **kwargs)

  def info(self) -> dict:
    return {**{f"{k}_dir": v for k, v in self.dirs.items()},
            "ranking_signatures": sorted(self.ranker.model.signatures),
            "retrieval_signatures": sorted(
                self.two_tower.model.signatures),
            "exported_k": self.exported_k,
            "candidates_per_source": self.config.counts(),
            "num_candidates": self.config.list_size,
            "movies": len(self.catalog.movie_row),
            "users": len(self.catalog.user_row)}

  def retrieve(self, user_ids: Sequence[str]):
    """Two-tower retrieval alone for known ids: (movie_ids [B, K],
    scores [B, K])."""
    fn = self.two_tower.model.signatures["serving_default"]
    out = export.call_signature(fn, {"user_id": list(user_ids)},
                                len(user_ids))
    return _decode(out["movie_ids"]), out["scores"]

  # The one path: a request -> rows.
  def recommend_request(self, request: cascade.Request, k: int
                        ) -> List[dict]:
    """Top-k rows of one `cascade.Request` (the bench's path)."""
    check_k(k)
    cand, = self.sources.candidates([request], explain=False)
    out, = self.ranker([request], [cand])
    order = np.argsort(-out["score"], kind="stable")[:k]
    because = self.sources.because(  # only the rows returned
        request, [self.sources.position[m] for m in cand.movie_ids[order]],
        [cand.sources[j] for j in order])
    rows = []
    for rank, (j, brought) in enumerate(zip(order, because), 1):
      m = str(cand.movie_ids[j])
      row = {"rank": rank, **movie_row(self.catalog, m)}
      row["predicted_rating"] = float(out["rating"][j])
      row["score"] = float(out["score"][j])
      row["retrieval_score"] = float(cand.inputs["two_tower_score"][j])
      row["sources"] = list(cand.sources[j])
      row["because"] = (None if brought is None else {
          "movie_id": brought,
          "title": movie_row(self.catalog, brought)["title"]})
      row["why"] = _why(row, request)
      rows.append(row)
    return rows

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
    del num_candidates  # the list size is the trained one
    check_k(k)
    return self.recommend_request(self.known_request(user_id), k)

  def recommend_new_user(self, age, gender, occupation, zip_code,
                         k: int = 10, num_candidates: Optional[int] = None,
                         timestamp: Optional[int] = None) -> List[dict]:
    """Cold start from demographics (see `demographic_inputs`)."""
    del num_candidates
    check_k(k)
    user = demographic_inputs(age, gender, occupation, zip_code)
    return self.recommend_request(cascade.Request(
        demographics=user, timestamp=int(timestamp or 0)), k)

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
      raise InvalidRequestError("no candidates.npz next to the retrieval "
                                "export: similar movies unavailable")
    return self.similar_movies.similar(movie_id, k)


def _why(row: dict, request: cascade.Request) -> str:
  """A short reason: the liked movie that brought it, else its sources."""
  if row["because"]:
    return f"because you liked {row['because']['title']}"
  names = []
  for s in row["sources"]:
    label = SOURCE_LABELS.get(s, s)
    if s == "popularity" and request.demographics.get("user_gender"):
      d = request.demographics
      label = (f"popular with {d['user_gender']} "
               f"{_AGE_LABELS.get(d.get('bucketized_user_age', ''), '')}"
               ).strip()
    names.append(label)
  return ", ".join(names)


_AGE_LABELS = {"1": "under 18", "18": "18-24", "25": "25-34", "35": "35-44",
               "45": "45-49", "50": "50-55", "56": "56+"}


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
