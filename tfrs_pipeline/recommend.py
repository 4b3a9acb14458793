"""Two-stage recommendations from the exports of `make train`.

`Recommender` serves the path the bench measures (`tfrs_pipeline.cascade`):

1. a request (a known user's ratings and demographics, a new user's
   ratings and/or demographics) goes to every candidate source: the
   two-tower model (ScaNN), EASE, EASE over liked movies, segment
   popularity; the movies the user rated (`--history all`: anywhere in
   the data, the default; `train`: the train split) are never returned;
2. the merged candidates (per source: score and rank) are ranked in one
   call of the ranking export's `rank_lists`;
3. rows carry the movie, the predicted rating, the score, the sources
   that retrieved it and, for the item-to-item sources, the rated movie
   that brought it (`because`).

`SimilarMovies` ranks movies by cosine (or dot) similarity of the candidate
embeddings in `candidates.npz`.

    tfrs-pipeline recommend --user_id=42 --k=10 [--runs=runs] [--json]
    tfrs-pipeline recommend --age=30 --gender=F --occupation=writer \
        --zip=94110
    tfrs-pipeline recommend --ratings=2571:5,1:4,260 [--age ...]
    tfrs-pipeline similar --movie_id=1 --k=10
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
import unicodedata
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import scann  # noqa: F401  (registers the ScaNN ops before loading)
import tensorflow as tf

from data import raw
from tfrs_pipeline import cascade, dataset, export, features, pipeline

DEFAULT_CANDIDATES = 0  # 0: the trained list size (`CascadeConfig`)
MAX_K = 100
GENDERS = ("M", "F")
HISTORY_CHOICES = ("train", "all")
_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")


class InvalidRequestError(ValueError):
  """A request names an unknown id or has invalid values (HTTP 4xx)."""


class UnknownUserError(InvalidRequestError):
  pass


class UnknownMovieError(InvalidRequestError):
  pass


def occupations() -> List[str]:
  """The occupation labels the models know (TFDS `movielens` labels)."""
  return list(pipeline._OCCUPATION_NAMES.numpy().astype(str))  # pylint: disable=protected-access


def age_bucket(age: int) -> str:
  """An age in years -> its MovieLens bucket ('1', '18', ..., '56')."""
  age = int(age)
  if not 1 <= age <= 120:
    raise InvalidRequestError(f"age must be between 1 and 120, got {age}")
  return str(max(b for b in raw.AGE_BUCKETS if b <= age))


def demographic_inputs(age, gender, occupation, zip_code) -> Dict[str, str]:
  """Validated query inputs of a new user.

  age: years (mapped to the MovieLens bucket: 30 -> '25'); gender: M/F;
  occupation: a label of `occupations()` (case-insensitive); zip_code: 5
  digits (ZIP+4 accepted, cut to 5).
  """
  missing = [n for n, v in (("age", age), ("gender", gender),
                            ("occupation", occupation), ("zip", zip_code))
             if v is None or v == ""]
  if missing:
    raise InvalidRequestError(
        "a new user needs age, gender, occupation and zip; missing: "
        + ", ".join(missing))
  try:
    bucket = age_bucket(int(age))
  except (TypeError, ValueError) as e:
    if isinstance(e, InvalidRequestError):
      raise
    raise InvalidRequestError(f"age must be an integer, got {age!r}") from e
  g = str(gender).strip().upper()
  if g not in GENDERS:
    raise InvalidRequestError(f"gender must be M or F, got {gender!r}")
  labels = {o.lower(): o for o in occupations()}
  occ = labels.get(str(occupation).strip().lower())
  if occ is None:
    raise InvalidRequestError(
        f"unknown occupation {occupation!r}; one of: "
        + ", ".join(sorted(labels.values())))
  z = str(zip_code).strip()
  if not re.fullmatch(r"\d{5}(-\d{4})?", z):
    raise InvalidRequestError(
        f"zip must be a 5-digit zip code, got {zip_code!r}")
  return {"bucketized_user_age": bucket, "user_gender": g,
          "user_occupation_label": occ, "user_zip_code": z[:5]}


def validate_ratings(ratings, catalog: "Catalog", max_ratings: int = 500
                     ) -> List[Tuple[str, Optional[float]]]:
  """Validated ratings of a new user: [(movie_id, rating or None)], in the
  order given (the first is taken as the most recent).

  `ratings`: a list of `{"movie_id": str|int, "rating": number|None}`
  dicts ("rating" may be left out) or `(movie_id, rating)` pairs.
  `InvalidRequestError` (`UnknownMovieError` for an id not in the movie
  table) names the offending entry: not a list, more than `max_ratings`
  entries, a malformed entry, an unknown or duplicate movie id, a rating
  that is not a number (bools are not) or outside 1-5.
  """
  if ratings is None:
    return []
  if isinstance(ratings, (str, bytes, Mapping)) or not isinstance(
      ratings, Sequence):
    raise InvalidRequestError(
        "ratings must be a list of {movie_id, rating} entries")
  if len(ratings) > max_ratings:
    raise InvalidRequestError(
        f"at most {max_ratings} ratings, got {len(ratings)}")
  out: List[Tuple[str, Optional[float]]] = []
  first: Dict[str, int] = {}
  lo, hi = 1.0, 5.0
  for i, entry in enumerate(ratings):
    where = f"ratings[{i}]"
    if isinstance(entry, Mapping):
      extra = set(entry) - {"movie_id", "rating"}
      if "movie_id" not in entry or extra:
        raise InvalidRequestError(
            f"{where}: expected {{movie_id, rating}}, got keys "
            f"{sorted(map(str, entry))}")
      movie_id, rating = entry["movie_id"], entry.get("rating")
    elif isinstance(entry, Sequence) and not isinstance(
        entry, (str, bytes)) and len(entry) == 2:
      movie_id, rating = entry
    else:
      raise InvalidRequestError(
          f"{where}: expected {{movie_id, rating}} or a (movie_id, rating) "
          f"pair, got {entry!r}")
    if isinstance(movie_id, (bool, np.bool_)) or not isinstance(
        movie_id, (str, int, np.integer)):
      raise InvalidRequestError(
          f"{where}: movie_id must be a string or an integer, got "
          f"{movie_id!r}")
    movie_id = str(movie_id).strip()
    if movie_id not in catalog.movie_row:
      raise UnknownMovieError(f"{where}: unknown movie id {movie_id!r}")
    if movie_id in first:
      raise InvalidRequestError(
          f"{where}: duplicate movie id {movie_id!r} (also "
          f"ratings[{first[movie_id]}])")
    first[movie_id] = i
    if rating is not None:
      if isinstance(rating, (bool, np.bool_)) or not isinstance(
          rating, (int, float, np.integer, np.floating)):
        raise InvalidRequestError(
            f"{where} (movie {movie_id}): rating must be a number from "
            f"{lo:g} to {hi:g} or null, got {rating!r}")
      rating = float(rating)
      if not (math.isfinite(rating) and lo <= rating <= hi):
        raise InvalidRequestError(
            f"{where} (movie {movie_id}): rating must be between {lo:g} "
            f"and {hi:g}, got {rating:g}")
    out.append((movie_id, rating))
  return out


# --------------------------------------------------------------------------
# Tables.


def _to_numpy(ds: tf.data.Dataset, keys: Optional[Sequence[str]] = None
              ) -> Dict[str, np.ndarray]:
  if keys:
    ds = ds.map(lambda x: {k: x[k] for k in keys})
  chunks: Dict[str, list] = {}
  for batch in ds.batch(65_536).prefetch(2):
    for k, v in batch.items():
      chunks.setdefault(k, []).append(v.numpy())
  out = {}
  for k, parts in chunks.items():
    v = np.concatenate(parts) if parts else np.array([])
    if v.dtype == object:
      v = np.array([x.decode("utf-8") for x in v], dtype=object)
    out[k] = v
  return out


_RATING_KEYS = ("user_id", "movie_id", "user_rating", "timestamp")


@dataclasses.dataclass
class Catalog:
  """Movie and user tables and the ratings that count as "already rated".

  All three are numpy columns (as `pipeline.Data.table` returns them).
  """
  movies: Dict[str, np.ndarray]
  users: Dict[str, np.ndarray]
  ratings: Dict[str, np.ndarray]

  def __post_init__(self):
    self.movie_row = {m: i for i, m in enumerate(self.movies["movie_id"])}
    self.user_row = {u: i for i, u in enumerate(self.users["user_id"])}
    order = np.lexsort((-self.ratings["timestamp"].astype(np.int64),
                        self.ratings["user_id"].astype(str)))
    self._sorted = {k: v[order] for k, v in self.ratings.items()}
    uids = self._sorted["user_id"]
    self._span: Dict[str, tuple] = {}
    if len(uids):
      starts = np.flatnonzero(np.r_[True, uids[1:] != uids[:-1]])
      ends = np.r_[starts[1:], len(uids)]
      self._span = {uids[s]: (int(s), int(e)) for s, e in zip(starts, ends)}

  @classmethod
  def from_data(cls, data: pipeline.Data, history: str = "train"
                ) -> "Catalog":
    ratings = _to_numpy(data.train, _RATING_KEYS)
    if history == "all":
      test = _to_numpy(data.test, _RATING_KEYS)
      ratings = {k: np.concatenate([ratings[k], test[k]]) for k in ratings}
    return cls(data.table("movies"), data.table("users"), ratings)

  def history(self, user_id: str) -> List[str]:
    """Movie ids the user rated, most recent first."""
    s, e = self._span.get(user_id, (0, 0))
    return list(self._sorted["movie_id"][s:e])

  def history_ratings(self, user_id: str) -> List[float]:
    """The ratings of `history(user_id)`, aligned."""
    s, e = self._span.get(user_id, (0, 0))
    return [float(r) for r in self._sorted["user_rating"][s:e]]

  def latest_timestamp(self, user_id: str) -> int:
    """Time of the user's latest rating (0: none)."""
    s, e = self._span.get(user_id, (0, 0))
    return int(self._sorted["timestamp"][s]) if e > s else 0

  def recent_ratings(self, user_id: str, limit: int = 20) -> List[dict]:
    s, e = self._span.get(user_id, (0, 0))
    out = []
    for i in range(s, min(e, s + limit)):
      row = movie_row(self, self._sorted["movie_id"][i])
      row["rating"] = float(self._sorted["user_rating"][i])
      row["timestamp"] = int(self._sorted["timestamp"][i])
      out.append(row)
    return out

  def num_ratings(self, user_id: str) -> int:
    s, e = self._span.get(user_id, (0, 0))
    return int(e - s)

  def user(self, user_id: str) -> Optional[dict]:
    i = self.user_row.get(user_id)
    if i is None:
      return None
    return {k: (v[i].item() if hasattr(v[i], "item") else v[i])
            for k, v in self.users.items() if k != "user_history"}

  def search(self, query: str, limit: int = 20) -> List[dict]:
    """Movies whose title contains `query`: case, accents and punctuation
    ignored ("cafe" finds "Café Society, The"); a trailing article counts
    at the front too ("the matrix" finds "Matrix, The"). Best first:
    exact title, then title prefix, then a word start, then anywhere;
    within each, most rated in the catalog first, then by title. Rows are
    `movie_row`'s plus `num_ratings`."""
    if not isinstance(query, str) or not query.strip():
      raise InvalidRequestError("search query must not be empty")
    if not isinstance(limit, (int, np.integer)) or limit < 1:
      raise InvalidRequestError(
          f"limit must be a positive integer, got {limit!r}")

    def _fold(text: str) -> str:  # lower case, no accents or punctuation
      text = unicodedata.normalize("NFKD", text.casefold())
      text = "".join(c for c in text if not unicodedata.combining(c))
      text = re.sub(r"['\u2019]", "", text)  # Schindler's -> schindlers
      return " ".join(re.sub(r"[\W_]+", " ", text).split())

    q = _fold(query)
    if not q:
      raise InvalidRequestError(
          f"search query {query!r} has no letters or digits")
    index = getattr(self, "_search_index", None)
    if index is None:  # built once, most rated first
      ids = self.movies["movie_id"]
      rated, counts = np.unique(self.ratings["movie_id"].astype(str),
                                return_counts=True)
      count = dict(zip(rated, counts.tolist()))
      index = []
      for i, m in enumerate(ids):
        title = _YEAR_SUFFIX.sub("", self.movies["movie_title"][i])
        forms, exact = [_fold(title)], set()
        inverted = re.fullmatch(r"(.*), (The|A|An)", title)
        if inverted:  # "Matrix, The": also "the matrix"; "matrix" exact
          forms.append(_fold(f"{inverted.group(2)} {inverted.group(1)}"))
          exact.add(_fold(inverted.group(1)))
        exact.update(forms)
        index.append((tuple(forms), exact, count.get(m, 0),
                      title.casefold(), m))
      index.sort(key=lambda t: (-t[2], t[3], t[4]))
      self._search_index = index  # pylint: disable=attribute-defined-outside-init
    hits = []
    for forms, exact, n, _, m in index:
      tier = 0 if q in exact else min(
          (1 if f.startswith(q) else 2 if f" {q}" in f else 3 if q in f
           else 4) for f in forms)
      if tier < 4:
        hits.append((tier, len(hits), m, n))
    hits.sort()
    return [{**movie_row(self, m), "num_ratings": n}
            for _, _, m, n in hits[:limit]]


def load_catalog(config: pipeline.DataConfig, history: str = "train",
                 log=print) -> Catalog:
  """Reads the tables without fitting vocabularies (faster than
  `pipeline.load_data`). `history`: which ratings count as seen, the
  `train` split (as the evaluation) or `all` (train + test)."""
  if history not in HISTORY_CHOICES:
    raise ValueError(f"history must be one of {HISTORY_CHOICES}")
  kw = dict(data_dir=config.data_dir, raw_data=config.raw_data,
            on_bad_line=config.on_bad_line, log=log)
  dataset.prepare(configs=(config.split, "movies", "users"), **kw)

  def load(cfg, split, keys=None):
    ds = dataset.load(cfg, split, **kw).map(
        pipeline.to_inputs, num_parallel_calls=tf.data.AUTOTUNE)
    return _to_numpy(ds, keys)

  ratings = load(config.split, "train", _RATING_KEYS)
  if history == "all":
    test = load(config.split, "test", _RATING_KEYS)
    ratings = {k: np.concatenate([ratings[k], test[k]]) for k in ratings}
  return Catalog(load("movies", "train"), load("users", "train"), ratings)


def movie_row(catalog: Catalog, movie_id: str) -> dict:
  """Display fields of a movie (unknown director/star -> None)."""
  i = catalog.movie_row.get(movie_id)
  if i is None:
    return {"movie_id": movie_id, "title": None, "year": None, "genres": [],
            "director": None, "star": None}
  m = catalog.movies
  year = int(m["release_year"][i])
  person = lambda v: None if v in ("", raw.UNKNOWN) else v  # noqa: E731
  genres = m["movie_genres"][i]
  return {
      "movie_id": movie_id,
      "title": _YEAR_SUFFIX.sub("", m["movie_title"][i]),
      "year": year or None,
      "genres": [g for g in genres.split(features.GENRE_SEPARATOR) if g],
      "director": person(m["director"][i]),
      "star": person(m["star"][i]),
  }


# --------------------------------------------------------------------------
# The two-stage recommender.

SOURCE_LABELS = {"two_tower": "two-tower", "ease": "similar to your movies",
                 "ease_liked": "similar to movies you liked",
                 "popularity": "popular"}


def _decode(a: np.ndarray) -> np.ndarray:
  return np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b,
                      otypes=[object])(a) if a.size else a.astype(object)


class Recommender:
  """Candidate sources -> merged candidates -> ranker, from the exports
  of a `make train` (`tfrs_pipeline.cascade`: the path the bench
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
  def from_runs(cls, runs_dir: str, catalog: Catalog, **kwargs
                ) -> "Recommender":
    """From RUNS/{sources,retrieval,ranking} (`make train`)."""
    dirs = (os.path.join(runs_dir, "sources", "export", "sources"),
            os.path.join(runs_dir, "retrieval", "export"),
            os.path.join(runs_dir, "ranking", "export", "ranking"))
    checks = ((dirs[0], "ease.npz"), (dirs[1], "candidates.npz"),
              (dirs[2], "saved_model.pb"))
    for d, name in checks:
      if not os.path.exists(os.path.join(d, name)):
        raise FileNotFoundError(f"no {os.path.join(d, name)}: train first "
                                "(make train)")
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
    _check_k(k)
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
    _check_k(k)
    return self.recommend_request(self.known_request(user_id), k)

  def recommend_new_user(self, age, gender, occupation, zip_code,
                         k: int = 10, num_candidates: Optional[int] = None,
                         timestamp: Optional[int] = None) -> List[dict]:
    """Cold start from demographics (see `demographic_inputs`)."""
    del num_candidates
    _check_k(k)
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
    _check_k(k)
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


def _check_k(k) -> None:
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
    _check_k(k)
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


# --------------------------------------------------------------------------
# Command line.

_COLUMNS = (("rank", "#", 3), ("movie_id", "movie", 5), ("title", "title", 34),
            ("year", "year", 4),
            ("genres", "genres", 22), ("director", "director", 18),
            ("star", "star", 18))


def format_table(rows: List[dict], numbers: Sequence[str]) -> str:
  """Aligned text table of recommendation / similarity rows."""
  def cell(row, key, width):
    v = row.get(key)
    if isinstance(v, list):
      v = "|".join(v)
    v = "-" if v is None else str(v)
    return v if len(v) <= width else v[:width - 1] + "~"
  cols = list(_COLUMNS) + [(n, n, max(len(n), 7)) for n in numbers]
  lines = ["  ".join(h.ljust(w) if k not in numbers else h.rjust(w)
                     for k, h, w in cols)]
  for row in rows:
    lines.append("  ".join(
        f"{row[k]:.3f}".rjust(w) if k in numbers else
        cell(row, k, w).ljust(w) for k, _, w in cols))
  return "\n".join(line.rstrip() for line in lines)


def _define_flags():
  """Defines this module's absl flags (skipping names already defined, so
  that importing it as a library next to other commands never clashes)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tfrs_pipeline import flags as common  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

  def define(kind, name, default, doc, *args):
    if name not in flags.FLAGS:
      getattr(flags, f"DEFINE_{kind}")(name, default, *args, doc)

  define("string", "runs", "runs",
         "Directory with the retrieval/, sources/ and ranking/ runs (make "
         "train).")
  define("integer", "k", 10, f"How many movies (1..{MAX_K}).")
  define("bool", "json", False, "Print a JSON list instead of a table.")
  define("string", "user_id", None, "MovieLens user id.")
  define("integer", "num_candidates", DEFAULT_CANDIDATES,
         "Merged candidates to rank per request (0: the list size the "
         "ranker was trained with).")
  define("integer", "age", None, "New user: age in years (bucketized).")
  define("string", "gender", None, "New user: M or F.")
  define("string", "occupation", None,
         "New user: occupation label, e.g. programmer.")
  define("string", "zip", None, "New user: 5-digit zip code.")
  define("string", "ratings", None,
         "New user: rated movie ids, comma-separated, each with an optional "
         ":rating 1-5, e.g. 2571:5,1:4,260 (with or without --age "
         "--gender --occupation --zip).")
  define("enum", "history", "all",
         "Movies a known user is never recommended: those rated in `all` "
         "the data (train + test, for serving) or only in the `train` split "
         "(what the offline evaluation drops).",
         list(HISTORY_CHOICES))
  define("string", "movie_id", None, "similar: the movie id.")
  define("enum", "metric", "cosine",
         "similar: similarity of candidate embeddings.", ["cosine", "dot"])
  return flags.FLAGS


FLAGS = _define_flags()


def _quiet(*_):
  pass


def _quiet_logs():
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)


def _print(rows, numbers):
  if FLAGS.json:
    print(json.dumps(rows, indent=1, ensure_ascii=False))
  else:
    print(format_table(rows, numbers))


def recommend_main(argv) -> None:
  from tfrs_pipeline import cli, flags as common  # pylint: disable=g-import-not-at-top
  del argv
  _quiet_logs()
  demo = (FLAGS.age, FLAGS.gender, FLAGS.occupation, FLAGS.zip)
  has_demo = any(v is not None for v in demo)
  has_ratings = FLAGS.ratings is not None
  if FLAGS.user_id is None and not has_demo and not has_ratings:
    raise cli.UsageError("pass --user_id, or --ratings and/or --age "
                         "--gender --occupation --zip for a new user")
  if FLAGS.user_id is not None and has_ratings:
    raise cli.UsageError("pass --user_id or --ratings, not both")
  pairs = []
  for i, item in enumerate((FLAGS.ratings or "").split(",")):
    item = item.strip()
    if not item and (FLAGS.ratings or "").strip():
      raise cli.UsageError(f"--ratings: entry {i + 1} is empty")
    if item:
      movie_id, _, value = item.partition(":")
      rating = None
      if value.strip():
        try:
          rating = float(value)
        except ValueError:
          raise cli.UsageError(  # pylint: disable=raise-missing-from
              f"--ratings entry {item!r}: rating must be a number from 1 "
              f"to 5, got {value.strip()!r}")
      pairs.append((movie_id.strip(), rating))
  try:
    inputs = demographic_inputs(*demo) if has_demo else None  # fail fast
    _check_k(FLAGS.k)
    catalog = load_catalog(common.data_config(), FLAGS.history, log=_quiet)
    ratings = validate_ratings(pairs, catalog) if has_ratings else None
    if has_ratings and not ratings and inputs is None:
      raise cli.UsageError("--ratings is empty: pass movie ids, or --age "
                           "--gender --occupation --zip")
    known = FLAGS.user_id is not None and (
        FLAGS.user_id.strip() in catalog.user_row)
    if FLAGS.user_id is not None and not known and not has_demo:
      raise cli.UsageError(
          f"unknown user id {FLAGS.user_id!r} (not in the users table); "
          "pass --age --gender --occupation --zip to recommend for a new "
          "user")
    rec = Recommender.from_runs(FLAGS.runs, catalog,
                                num_candidates=FLAGS.num_candidates)
    if known:
      rows = rec.recommend(FLAGS.user_id, FLAGS.k)
    elif has_ratings:
      rows = rec.recommend_for_ratings(ratings, inputs, k=FLAGS.k)
    else:
      rows = rec.recommend_new_user(*demo, k=FLAGS.k)
  except (InvalidRequestError, FileNotFoundError) as e:
    raise cli.UsageError(str(e)) from e
  numbers = ("predicted_rating", "score", "retrieval_score")
  if FLAGS.json:
    _print(rows, numbers)
    return

  def why(row) -> str:
    """"because you liked <title>", else the sources that retrieved it."""
    if row.get("because"):
      return f"because you liked {row['because'].get('title')}"
    if row.get("why"):
      return str(row["why"])
    return ", ".join(s.replace("_", "-") for s in row.get("sources") or ())

  lines = format_table(rows, numbers).splitlines()
  width = max(len(line) for line in lines)
  print("\n".join(
      (line.ljust(width) + "  " + text).rstrip() for line, text in zip(
          lines, ["why"] + [why(r) or "-" for r in rows])))


def similar_main(argv) -> None:
  from tfrs_pipeline import cli, flags as common  # pylint: disable=g-import-not-at-top
  del argv
  _quiet_logs()
  if FLAGS.movie_id is None:
    raise cli.UsageError("pass --movie_id")
  path = os.path.join(FLAGS.runs, "retrieval", "export", "candidates.npz")
  if not os.path.exists(path):
    raise cli.UsageError(f"no {path}: train retrieval first")
  try:
    _check_k(FLAGS.k)
    catalog = load_catalog(common.data_config(), log=_quiet)
    rows = SimilarMovies(path, catalog).similar(FLAGS.movie_id, FLAGS.k,
                                                FLAGS.metric)
  except InvalidRequestError as e:
    raise cli.UsageError(str(e)) from e
  _print(rows, ("similarity",))
