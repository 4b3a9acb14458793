"""Two-stage recommendations from the exported SavedModels.

`Recommender` chains the stages of a retrieval run and a ranking run:

1. retrieval `serving_default` (ScaNN inside the model) returns the top K
   movies for a user id; `serve_features` does the same for a new user
   from demographics. K is fixed at export (~100): when `num_candidates`
   asks for more, the K candidates the model returns are used as they are.
2. movies the user already rated (`history`) are dropped; movies missing
   from the movie table (ScaNN padding) too.
3. the ranking `serving_default` / `serve_features` scores the rest in one
   batch; rows are ordered by the ranking `score` (ties: retrieval score).

`SimilarMovies` ranks movies by cosine (or dot) similarity of the candidate
embeddings in `candidates.npz`.

    tfrs-pipeline recommend --user_id=42 --k=10 [--runs=runs] [--json]
    tfrs-pipeline recommend --age=30 --gender=F --occupation=writer \
        --zip=94110
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
from tfrs_pipeline import dataset, features, pipeline

DEFAULT_CANDIDATES = 200
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
# Signatures.


def _signature_inputs(fn) -> Dict[str, tf.TensorSpec]:
  return dict(fn.structured_input_signature[1])


def call_signature(fn, values: Mapping[str, Sequence], size: int
                   ) -> Dict[str, np.ndarray]:
  """Calls a signature with `values` (lists of length `size`); inputs it
  takes that are not given get their `features.INPUTS` default."""
  args = {}
  for name, spec in _signature_inputs(fn).items():
    if name in values:
      v = values[name]
    elif name in features.INPUT_BY_NAME:
      v = [features.INPUT_BY_NAME[name].default] * size
    elif name == "user_history":
      v = [""] * size
    else:
      raise ValueError(f"signature input {name!r} has no value")
    args[name] = tf.constant(np.asarray(v).astype(
        str if spec.dtype == tf.string else spec.dtype.as_numpy_dtype),
        dtype=spec.dtype)
  return {k: v.numpy() for k, v in fn(**args).items()}


def _decode(a: np.ndarray) -> np.ndarray:
  return np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b,
                      otypes=[object])(a) if a.size else a.astype(object)


class Recommender:
  """Retrieval -> drop already rated -> ranking, from two SavedModels.

  Args:
    retrieval_dir: RUN/export/retrieval (signatures `serving_default`,
      `serve_features`).
    ranking_dir: RUN/export/ranking (same signature names).
    catalog: movie table, user table and rated movies (`Catalog`).
    num_candidates: candidates to rank (capped by the exported K).
    candidates_path: RUN/export/candidates.npz for `similar` (optional).
  """

  def __init__(self, retrieval_dir: str, ranking_dir: str, catalog: Catalog,
               num_candidates: int = DEFAULT_CANDIDATES,
               candidates_path: Optional[str] = None):
    self.catalog = catalog
    self.num_candidates = num_candidates
    self.retrieval_dir, self.ranking_dir = retrieval_dir, ranking_dir
    self._retrieval = tf.saved_model.load(retrieval_dir)
    self._ranking = tf.saved_model.load(ranking_dir)
    self._r_sigs = self._retrieval.signatures
    self._k_sigs = self._ranking.signatures
    for name, sigs, d in (("retrieval", self._r_sigs, retrieval_dir),
                          ("ranking", self._k_sigs, ranking_dir)):
      if "serving_default" not in sigs:
        raise ValueError(f"{name} model {d} has no serving_default")
    self.similar_movies = None
    if candidates_path and os.path.exists(candidates_path):
      self.similar_movies = SimilarMovies(candidates_path, catalog)
    probe = call_signature(self._r_sigs["serving_default"],
                           {"user_id": [""]}, 1)
    self.exported_k = int(probe["movie_ids"].shape[1])

  @classmethod
  def from_runs(cls, runs_dir: str, catalog: Catalog, **kwargs
                ) -> "Recommender":
    """From `runs_dir/retrieval` and `runs_dir/ranking` run directories."""
    r = os.path.join(runs_dir, "retrieval", "export")
    k = os.path.join(runs_dir, "ranking", "export", "ranking")
    for d in (os.path.join(r, "retrieval"), k):
      if not os.path.exists(os.path.join(d, "saved_model.pb")):
        raise FileNotFoundError(
            f"no SavedModel in {d}: train first (make train-retrieval "
            "train-ranking)")
    return cls(os.path.join(r, "retrieval"), k, catalog,
               candidates_path=os.path.join(r, "candidates.npz"), **kwargs)

  def info(self) -> dict:
    return {"retrieval_dir": self.retrieval_dir,
            "ranking_dir": self.ranking_dir,
            "retrieval_signatures": sorted(self._r_sigs.keys()),
            "ranking_signatures": sorted(self._k_sigs.keys()),
            "exported_k": self.exported_k,
            "num_candidates": min(self.num_candidates, self.exported_k),
            "movies": len(self.catalog.movie_row),
            "users": len(self.catalog.user_row)}

  # Stage 1.
  def retrieve(self, user_ids: Sequence[str]):
    """Known-user retrieval: (movie_ids [B, K] str, scores [B, K])."""
    out = call_signature(self._r_sigs["serving_default"],
                         {"user_id": list(user_ids)}, len(user_ids))
    return _decode(out["movie_ids"]), out["scores"]

  def retrieve_features(self, inputs: Mapping[str, Sequence], size: int):
    """Retrieval from explicit query inputs (`serve_features`)."""
    out = call_signature(self._r_sigs["serve_features"], inputs, size)
    return _decode(out["movie_ids"]), out["scores"]

  # Stage 3.
  def rank(self, user_ids: Sequence[str], movie_ids: Sequence[str],
           batch_size: int = 8192) -> Dict[str, np.ndarray]:
    """Ranking outputs for (user, movie) pairs via `serving_default`."""
    parts = []
    for s in range(0, len(movie_ids), batch_size):
      n = len(movie_ids[s:s + batch_size])
      parts.append(call_signature(
          self._k_sigs["serving_default"],
          {"user_id": list(user_ids[s:s + batch_size]),
           "movie_id": list(movie_ids[s:s + batch_size])}, n))
    if not parts:
      return {"rating": np.zeros([0], np.float32),
              "score": np.zeros([0], np.float32)}
    return {k: np.concatenate([p[k].reshape(len(p[k]), -1)[:, 0]
                               for p in parts]) for k in parts[0]}

  def rank_features(self, user_inputs: Mapping[str, str],
                    movie_ids: Sequence[str]) -> Dict[str, np.ndarray]:
    """Ranking outputs for one new user via `serve_features`."""
    n = len(movie_ids)
    rows = [self.catalog.movie_row[m] for m in movie_ids]
    values = {k: [v] * n for k, v in user_inputs.items()}
    for i in features.entity_inputs(features.MOVIE):
      if i.name in self.catalog.movies:
        values[i.name] = self.catalog.movies[i.name][rows]
    values["movie_id"] = list(movie_ids)
    out = call_signature(self._k_sigs["serve_features"], values, n)
    return {k: v.reshape(n, -1)[:, 0] for k, v in out.items()}

  def candidates(self, movie_ids: np.ndarray, scores: np.ndarray,
                 seen: Iterable[str], num_candidates: Optional[int] = None):
    """Drops seen and unknown (padding) ids: (ids, retrieval scores)."""
    seen = set(seen)
    n = num_candidates or self.num_candidates
    keep = [(m, float(s)) for m, s in zip(movie_ids[:n], scores[:n])
            if m not in seen and m in self.catalog.movie_row]
    ids = [m for m, _ in keep]
    return ids, np.array([s for _, s in keep], np.float32)

  def _rows(self, ids, retrieval_scores, ranked, k) -> List[dict]:
    score = ranked["score"] if "score" in ranked else ranked["rating"]
    order = sorted(range(len(ids)),
                   key=lambda i: (-score[i], -retrieval_scores[i]))[:k]
    out = []
    for rank, i in enumerate(order, 1):
      row = {"rank": rank, **movie_row(self.catalog, ids[i])}
      row["predicted_rating"] = float(ranked.get("rating", score)[i])
      row["score"] = float(score[i])
      row["retrieval_score"] = float(retrieval_scores[i])
      out.append(row)
    return out

  def recommend(self, user_id: str, k: int = 10,
                num_candidates: Optional[int] = None) -> List[dict]:
    """Top-k rows for a known user (`UnknownUserError` otherwise)."""
    user_id = str(user_id).strip()
    _check_k(k)
    if user_id not in self.catalog.user_row:
      raise UnknownUserError(f"unknown user id {user_id!r}")
    ids, scores = self.retrieve([user_id])
    ids, scores = self.candidates(ids[0], scores[0],
                                  self.catalog.history(user_id),
                                  num_candidates)
    ranked = self.rank([user_id] * len(ids), ids)
    return self._rows(ids, scores, ranked, k)

  def recommend_new_user(self, age, gender, occupation, zip_code,
                         k: int = 10, num_candidates: Optional[int] = None,
                         timestamp: Optional[int] = None) -> List[dict]:
    """Cold start from demographics (see `demographic_inputs`)."""
    _check_k(k)
    user = demographic_inputs(age, gender, occupation, zip_code)
    user.update(user_id="", timestamp=int(timestamp or self.now()))
    ids, scores = self.retrieve_features({k_: [v] for k_, v in user.items()},
                                         1)
    ids, scores = self.candidates(ids[0], scores[0], (), num_candidates)
    ranked = self.rank_features(user, ids)
    return self._rows(ids, scores, ranked, k)

  def recommend_for_ratings(self, ratings: Sequence[Tuple[str, Optional[float]]],
                            demographics: Optional[Mapping[str, str]] = None,
                            k: int = 10) -> List[dict]:
    """Top-k rows for a new user who brings ratings (and maybe
    demographics). `ratings`: `validate_ratings` output (first = most
    recent); `demographics`: None or `demographic_inputs` output (None:
    each input's default). The rated movies are never returned. Rows are
    `recommend`'s plus `sources` (names of the candidate sources that
    retrieved the movie) and `because` (None, or {movie_id, title} of the
    rated movie that brought it).

    PROVISIONAL: two-tower retrieval from `serve_features` with the rated
    movies as `user_history`, then `rank_features`."""
    _check_k(k)
    if not ratings and demographics is None:
      raise InvalidRequestError(
          "a new user needs ratings or demographics (age, gender, "
          "occupation and zip)")
    names = ("bucketized_user_age", "user_gender", "user_occupation_label",
             "user_zip_code")
    user = {n: features.INPUT_BY_NAME[n].default for n in names}
    user.update(demographics or {})
    rated = [m for m, _ in ratings]
    user.update(user_id="", timestamp=int(self.now()),
                user_history="|".join(rated))
    ids, scores = self.retrieve_features({n: [v] for n, v in user.items()},
                                         1)
    ids, scores = self.candidates(ids[0], scores[0], rated)
    rows = self._rows(ids, scores, self.rank_features(user, ids), k)
    for row in rows:
      row.update(sources=["two_tower"], because=None)
    return rows

  def warm_up(self) -> float:
    """One known-user and one new-user request through both models, so
    the first real requests do not pay for TensorFlow's one-time graph
    optimization (seconds). Returns the seconds it took."""
    start = time.perf_counter()
    if self.catalog.user_row:
      self.recommend(next(iter(self.catalog.user_row)))
    self.recommend_new_user(30, "F", occupations()[0], "00000")
    return time.perf_counter() - start

  def now(self) -> int:
    """Time context of a new user: the retrieval model's
    `default_timestamp` (the latest train rating, what known users get),
    else the latest rating in the catalog, else the wall clock."""
    ts = getattr(self._retrieval, "default_timestamp", None)
    if ts is not None:
      return int(ts.numpy())
    if len(self.catalog.ratings["timestamp"]):
      return int(self.catalog.ratings["timestamp"].max())
    return int(time.time())

  def similar(self, movie_id: str, k: int = 10) -> List[dict]:
    if self.similar_movies is None:
      raise InvalidRequestError("no candidates.npz next to the retrieval "
                                "export: similar movies unavailable")
    return self.similar_movies.similar(movie_id, k)


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
         "Directory with the retrieval/ and ranking/ run directories.")
  define("integer", "k", 10, f"How many movies (1..{MAX_K}).")
  define("bool", "json", False, "Print a JSON list instead of a table.")
  define("string", "user_id", None, "MovieLens user id.")
  define("integer", "num_candidates", DEFAULT_CANDIDATES,
         "Retrieval candidates to rank (at most the K the retrieval model "
         "was exported with).")
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
