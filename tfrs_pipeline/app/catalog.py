"""The catalogue a recommender serves: movie display fields, the users'
attributes and the ratings that count as "already rated", plus the
validation of what a request may send (demographics, a new user's
ratings) and the title search of the page.

`Catalog.save` / `Catalog.load` write and read it as one `.npz` in the
exports (`make train` writes RUNS/sources/export/sources/catalog.npz), so
serving reads no dataset; `Catalog.from_data` builds it from the loaded
data at training time.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import unicodedata
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from data import raw
from tfrs_pipeline import dataset, errors, features, pipeline

GENDERS = ("M", "F")
HISTORY_CHOICES = ("train", "all")
_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")


class InvalidRequestError(errors.RequestError):
  """A request names an unknown id or has invalid values (HTTP 4xx)."""


class UnknownUserError(InvalidRequestError):
  pass


class UnknownMovieError(InvalidRequestError):
  pass


def occupations() -> List[str]:
  """The occupation labels the models know (TFDS `movielens` labels)."""
  return list(pipeline._OCCUPATION_NAMES)  # pylint: disable=protected-access


def age_bucket(age: int) -> str:
  """An age in years -> its MovieLens bucket ('1', '18', ..., '56')."""
  age = int(age)
  if not 1 <= age <= 120:
    raise InvalidRequestError(f"age must be between 1 and 120, got {age}")
  return str(max(b for b in raw.AGE_BUCKETS if b <= age))


def _parse_age(v) -> str:
  if isinstance(v, (bool, np.bool_)) or (
      isinstance(v, float) and not v.is_integer()):
    raise InvalidRequestError(f"age must be an integer, got {v!r}")
  try:
    return age_bucket(int(v))
  except (TypeError, ValueError) as e:
    if isinstance(e, InvalidRequestError):
      raise
    raise InvalidRequestError(f"age must be an integer, got {v!r}") from e


def _parse_gender(v) -> str:
  g = str(v).strip().upper()
  if g not in GENDERS:
    raise InvalidRequestError(f"gender must be M or F, got {v!r}")
  return g


def _parse_occupation(v) -> str:
  """A TFDS occupation label (any case) or an ML-1M `users.dat` code."""
  labels = {o.lower(): o for o in occupations()}
  text = str(v).strip()
  if text.isascii() and text.isdigit() and int(text) < len(raw.OCCUPATIONS):
    text = raw.occupation_label(int(text))
  occ = labels.get(text.lower())
  if occ is None:
    raise InvalidRequestError(
        f"unknown occupation {v!r}; one of: "
        + ", ".join(sorted(labels.values()))
        + f", or an ML-1M code 0-{len(raw.OCCUPATIONS) - 1}")
  return occ


def _parse_zip(v) -> str:
  z = str(v).strip()
  if not re.fullmatch(r"\d{5}(-\d{4})?", z):
    raise InvalidRequestError(f"zip must be a 5-digit zip code, got {v!r}")
  return z[:5]


# How a request field becomes its model input (by input name); a request
# input without one is taken as its stripped string.
REQUEST_PARSERS = {"bucketized_user_age": _parse_age,
                   "user_gender": _parse_gender,
                   "user_occupation_label": _parse_occupation,
                   "user_zip_code": _parse_zip}


def request_inputs(values: Mapping[str, object]) -> Dict[str, str]:
  """Validated model inputs of a new user from request fields: {field
  (`Input.request`, e.g. "age"): value} for every input of
  `features.request_inputs()`; all are required."""
  specs = features.request_inputs()
  missing = [i.request for i in specs
             if values.get(i.request) is None or values.get(i.request) == ""]
  if missing:
    raise InvalidRequestError(
        "a new user needs " + ", ".join(i.request for i in specs[:-1])
        + f" and {specs[-1].request}; missing: " + ", ".join(missing))
  out = {}
  for i in specs:
    parse = REQUEST_PARSERS.get(i.name, lambda v: str(v).strip())
    out[i.name] = parse(values[i.request])
  return out


def demographic_inputs(age, gender, occupation, zip_code) -> Dict[str, str]:
  """Validated query inputs of a new user (`request_inputs` of the four
  demographics): age in years (mapped to the MovieLens bucket: 30 ->
  '25'); gender M/F; occupation, a label of `occupations()`
  (case-insensitive); zip_code, 5 digits (ZIP+4 accepted, cut to 5)."""
  return request_inputs({"age": age, "gender": gender,
                         "occupation": occupation, "zip": zip_code})


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
    codes, uniques = pd.factorize(self.ratings["user_id"])
    order = np.lexsort((-self.ratings["timestamp"].astype(np.int64), codes))
    self._sorted = {k: v[order] for k, v in self.ratings.items()}
    codes = codes[order]
    self._span: Dict[str, tuple] = {}
    if len(codes):
      starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
      ends = np.r_[starts[1:], len(codes)]
      self._span = {str(uniques[codes[s]]): (int(s), int(e))
                    for s, e in zip(starts, ends)}

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


def build_catalog(config: pipeline.DataConfig, log=print
                  ) -> Tuple["Catalog", np.ndarray]:
  """The catalogue of the whole dataset (training time): the movie and
  user tables and every rating of the `config.split` split, with a
  per-rating flag [R] bool, True for the test split."""
  kw = dict(data_dir=config.data_dir, raw_data=config.raw_data,
            on_bad_line=config.on_bad_line, log=log)
  dataset.prepare(configs=(config.split, "movies", "users"), **kw)

  def load(cfg, split, keys=None):
    ds = dataset.load(cfg, split, **kw).map(
        pipeline.to_inputs, num_parallel_calls=tf.data.AUTOTUNE)
    return _to_numpy(ds, keys)

  train = load(config.split, "train", _RATING_KEYS)
  test = load(config.split, "test", _RATING_KEYS)
  ratings = {k: np.concatenate([train[k], test[k]]) for k in train}
  is_test = np.r_[np.zeros(len(train["user_id"]), bool),
                  np.ones(len(test["user_id"]), bool)]
  users = {k: v for k, v in load("users", "train").items()
           if k != "user_history"}
  return Catalog(load("movies", "train"), users, ratings), is_test


CATALOG_FILE = "catalog.npz"
_KIND = "tfrs_pipeline.catalog/1"


def save_catalog(path: str, catalog: "Catalog", is_test: np.ndarray) -> str:
  """Writes the catalogue (`build_catalog`'s) to one `.npz` atomically:
  `movies/<column>`, `users/<column>` and the ratings as indices into
  them (`ratings/user`, `ratings/movie`), `ratings/user_rating`,
  `ratings/timestamp`, `ratings/is_test`."""
  arrays = {"kind": np.asarray(_KIND)}
  for table in ("movies", "users"):
    for k, v in getattr(catalog, table).items():
      arrays[f"{table}/{k}"] = (v.astype(str) if v.dtype == object else v)
  r = catalog.ratings
  for name, key, table in (("user", "user_id", catalog.users),
                           ("movie", "movie_id", catalog.movies)):
    index = pd.Index(np.asarray(table[key]).astype(str)).get_indexer(
        np.asarray(r[key]).astype(str))
    if (index < 0).any():
      raise errors.InputError(f"a rating names an unknown {name} id "
                              f"{np.asarray(r[key])[index < 0][0]!r}")
    arrays[f"ratings/{name}"] = index.astype(np.int32)
  arrays["ratings/user_rating"] = r["user_rating"].astype(np.float32)
  arrays["ratings/timestamp"] = r["timestamp"].astype(np.int64)
  arrays["ratings/is_test"] = np.asarray(is_test, bool)
  tmp = f"{path}.tmp-{os.getpid()}.npz"
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)
  return path


def load_catalog(path: str, history: str = "all") -> "Catalog":
  """The catalogue of an export (`save_catalog`). `history`: which
  ratings count as already rated, `all` of them (serving) or the `train`
  split's only (the offline evaluation's view)."""
  if history not in HISTORY_CHOICES:
    raise errors.ConfigError(
        f"history must be one of {HISTORY_CHOICES}, got {history!r}")
  if not os.path.isfile(path):
    raise errors.MissingError(f"no {path}: train the sources first "
                              "(make train)")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except Exception as e:  # zipfile, zlib, format and OS errors alike
    raise errors.InputError(f"{path}: not a readable catalogue ({e})") from e
  if str(arrays.get("kind", "")) != _KIND:
    raise errors.InputError(f"{path}: not a catalogue file")

  def table(name):
    out = {}
    for k, v in arrays.items():
      if k.startswith(name + "/"):
        out[k[len(name) + 1:]] = v.astype(object) if v.dtype.kind == "U" else v
    return out

  movies, users = table("movies"), table("users")
  r = table("ratings")
  keep = np.ones(len(r["user"]), bool) if history == "all" else ~r["is_test"]
  ratings = {"user_id": users["user_id"][r["user"][keep]],
             "movie_id": movies["movie_id"][r["movie"][keep]],
             "user_rating": r["user_rating"][keep],
             "timestamp": r["timestamp"][keep]}
  return Catalog(movies, users, ratings)


def _person(v):
  return None if v in ("", raw.UNKNOWN) else v


# `features.Input.display_as` -> how a stored value is shown.
DISPLAY = {
    "text": lambda v: v,
    "title": lambda v: _YEAR_SUFFIX.sub("", v),
    "year": lambda v: int(v) or None,
    "list": lambda v: [g for g in v.split(features.GENRE_SEPARATOR) if g],
    "person": _person,
    "number": float,
}
_EMPTY = {"list": []}


def movie_row(catalog: Catalog, movie_id: str) -> dict:
  """Display fields of a movie, one per `features.display_inputs()`
  (`Input.display` -> the value formatted by `Input.display_as`); an
  unknown movie shows None (genres: [])."""
  i = catalog.movie_row.get(movie_id)
  row = {"movie_id": movie_id}
  for spec in features.display_inputs():
    if spec.name == "movie_id":
      continue
    if i is None or spec.name not in catalog.movies:
      row[spec.display] = _EMPTY.get(spec.display_as)
    else:
      value = catalog.movies[spec.name][i]
      row[spec.display] = DISPLAY[spec.display_as](
          value.item() if hasattr(value, "item") else value)
  return row