"""Candidate sources of the two-stage recommender: EASE item-to-item,
segment popularity and demographic popularity, plus `top_n` and `standardize` to merge their scores.

Numpy and pandas only. Every source has a `movie_ids` [N] catalogue and
scores users as [B, N] float32; `save` / `load` use one `.npz` file
(`allow_pickle=False`), written atomically.

Ratings DataFrames have `user_id` and `movie_id` (read as strings) and,
when `min_rating > 0`, `user_rating`. An interaction is a (user, movie)
pair with `user_rating >= min_rating` (`min_rating` 0: every rating) on a
catalogue movie; ratings of other movies are dropped. Deterministic.
"""

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from retrieval import baselines


def _catalogue(movie_ids) -> np.ndarray:
  ids = np.asarray(movie_ids).astype(str).reshape(-1)
  if not len(ids):
    raise ValueError("movie_ids is empty")
  index = pd.Index(ids)
  if not index.is_unique:
    raise ValueError(f"duplicate movie id {index[index.duplicated()][0]!r}")
  return ids


def _require_columns(df: pd.DataFrame, columns: Sequence[str],
                     what: str) -> None:
  missing = [c for c in columns if c not in df.columns]
  if missing:
    raise ValueError(f"{what} has no column {missing[0]!r} "
                     f"(columns: {list(df.columns)})")


def _interactions(ratings: pd.DataFrame, movie_ids: np.ndarray,
                  min_rating: float) -> Tuple[np.ndarray, np.ndarray]:
  """Unique (user id [T] str, movie index [T] int64) interaction pairs."""
  _require_columns(ratings, ["user_id", "movie_id"]
                   + (["user_rating"] if min_rating > 0 else []), "ratings")
  if not len(ratings):
    raise ValueError("ratings is empty")
  if min_rating > 0:
    ratings = ratings[ratings.user_rating.to_numpy(float) >= min_rating]
  items = pd.Index(movie_ids).get_indexer(
      ratings.movie_id.to_numpy().astype(str))
  pairs = pd.DataFrame({"user": ratings.user_id.to_numpy().astype(str),
                        "item": items})
  pairs = pairs[pairs.item >= 0].drop_duplicates()
  if not len(pairs):
    raise ValueError(f"no ratings with user_rating >= {min_rating:g} on "
                     "catalogue movies")
  return pairs.user.to_numpy(), pairs.item.to_numpy(np.int64)


def _user_ids(users: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
  """[U] str ids of a users table that has `user_id` and `columns`, each
  id once."""
  _require_columns(users, ["user_id", *columns], "users")
  user_ids = users.user_id.to_numpy().astype(str)
  index = pd.Index(user_ids)
  if not index.is_unique:
    raise ValueError(f"duplicate user id {index[index.duplicated()][0]!r} "
                     "in users")
  return user_ids


def _keyed_table(keys, table, vector, n: int, what: Tuple[str, str, str]
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(keys [K] str, table [K, n] float32, vector [n] float32), checked:
  shapes, unique keys. `what`: the names of the three in messages."""
  keys = np.asarray(keys).astype(str).reshape(-1)
  table = np.asarray(table, np.float32)
  vector = np.asarray(vector, np.float32)
  k = len(keys)
  if table.shape != (k, n) or vector.shape != (n,):
    raise ValueError(f"{what[1]} {table.shape} must be [{k}, {n}] and "
                     f"{what[2]} {vector.shape} [{n}]")
  if not pd.Index(keys).is_unique:
    raise ValueError(f"duplicate {what[0]}")
  return keys, table, vector


def history_indices(movie_ids: np.ndarray, histories: Sequence[Sequence[str]],
                    ignore_unknown: bool = False) -> List[np.ndarray]:
  """Catalogue indices of each history: [B] int64 arrays, distinct, in
  order of first occurrence.

  Raises ValueError naming an id that is not in `movie_ids`, unless
  `ignore_unknown` (then unknown ids are dropped).
  """
  lookup = {m: i for i, m in enumerate(np.asarray(movie_ids).astype(str))}
  return _indices(lookup, histories, ignore_unknown)


def _indices(lookup: Dict[str, int], histories: Sequence[Sequence[str]],
             ignore_unknown: bool) -> List[np.ndarray]:
  if isinstance(histories, (str, bytes)):
    raise ValueError("histories must be a sequence of id sequences")
  out = []
  for history in histories:
    if isinstance(history, (str, bytes)):
      raise ValueError(f"a history must be a sequence of ids, got {history!r}")
    found = [lookup.get(m if isinstance(m, str) else str(m), -1)
             for m in history]
    if -1 in found:
      if not ignore_unknown:
        raise ValueError(
            f"unknown movie id {str(list(history)[found.index(-1)])!r} in a "
            "history (pass ignore_unknown=True to drop unknown ids)")
      found = [i for i in found if i >= 0]
    out.append(np.array(list(dict.fromkeys(found)), np.int64))
  return out


# --------------------------------------------------------------------------
# Files.


def _save(path: str, kind: str, arrays: Dict[str, np.ndarray]) -> None:
  """Writes `arrays` to `path` via a temporary file and `os.replace`."""
  tmp = f"{path}.tmp-{os.getpid()}.npz"
  try:
    with open(tmp, "wb") as f:
      np.savez(f, kind=np.asarray(kind), **arrays)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _load(path: str, kind: str, keys: Sequence[str]) -> Dict[str, np.ndarray]:
  if not os.path.isfile(path):
    raise ValueError(f"{path}: no such file")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {key: f[key] for key in f.files}
  except Exception as e:  # zipfile, zlib, format and OS errors alike
    raise ValueError(f"{path}: not a readable .npz file ({e})") from e
  if str(arrays.get("kind", "")) != kind:
    raise ValueError(f"{path}: not a {kind} file "
                     f"(kind {str(arrays.get('kind', 'missing'))!r})")
  missing = [key for key in keys if key not in arrays]
  if missing:
    raise ValueError(f"{path}: missing array {missing[0]!r}")
  return arrays


# --------------------------------------------------------------------------
# EASE item-to-item.


@dataclasses.dataclass(eq=False)
class ItemToItem:
  """EASE (Steck, WWW 2019) item-item weights, stored sparse by row.

  B = EASE closed form (zero diagonal) on the binary [users, N] matrix of
  interactions. A user with history set H scores candidate j as
  s_j = sum_{i in H} B[i, j]. Row i (a history movie) keeps its M largest
  positive B[i, j], the movies it "brings" (with `positive_only=False`:
  its M largest |B[i, j]|, negative weights included, which is what the
  served sources keep: on the validation split 300 of them score as the
  dense matrix), best first, ties by lower j, padded with index 0 and
  weight 0. Movies without interactions have no neighbours.

  Storage grows as N x M, not N^2: 62k movies x 200 neighbours x 8 bytes
  is ~100 MB against ~15 GB dense. Fitting still builds the dense Gram
  matrix and its inverse over the rated movies (N^2); at 62k movies that
  needs a sparse or approximate solver, out of scope here.

  Attributes:
    movie_ids: [N] str, the catalogue order (never-rated movies included).
    neighbour_index: [N, M] int32, the movies j each movie i brings.
    neighbour_weight: [N, M] float32, B[i, j] (0 for padding).
    name, min_rating, l2, positive_only: how it was fit.
  """
  movie_ids: np.ndarray
  neighbour_index: np.ndarray
  neighbour_weight: np.ndarray
  name: str = "ease"
  min_rating: float = 0.0
  l2: float = 500.0
  positive_only: bool = True

  _KIND = "retrieval.sources.ItemToItem/1"

  def __post_init__(self):
    self.movie_ids = _catalogue(self.movie_ids)
    self.neighbour_index = np.asarray(self.neighbour_index, np.int32)
    self.neighbour_weight = np.asarray(self.neighbour_weight, np.float32)
    n = len(self.movie_ids)
    if (self.neighbour_index.ndim != 2 or len(self.neighbour_index) != n
        or self.neighbour_weight.shape != self.neighbour_index.shape):
      raise ValueError(
          f"neighbour_index {self.neighbour_index.shape} and neighbour_weight "
          f"{self.neighbour_weight.shape} must both be [{n}, M]")
    if ((self.neighbour_index < 0) | (self.neighbour_index >= n)).any():
      raise ValueError(f"neighbour_index outside [0, {n})")
    if not np.isfinite(self.neighbour_weight).all():
      raise ValueError("neighbour_weight is not finite")
    self.name = str(self.name)
    self.min_rating = float(self.min_rating)
    self.l2 = float(self.l2)
    self.positive_only = bool(self.positive_only)
    self._index = self.neighbour_index.astype(np.intp)  # bincount's type
    self._lookup = {m: i for i, m in enumerate(self.movie_ids)}

  @classmethod
  def fit(cls, ratings: pd.DataFrame, movie_ids: Sequence[str],
          l2: float = 500.0, neighbours: int = 200, min_rating: float = 0.0,
          name: str = "ease", positive_only: bool = True) -> "ItemToItem":
    """Fits EASE on `ratings`; M = min(neighbours, N - 1) (at least 1)."""
    if neighbours < 1:
      raise ValueError(f"neighbours must be >= 1, got {neighbours}")
    if not l2 > 0:
      raise ValueError(f"l2 must be > 0, got {l2}")
    movie_ids = _catalogue(movie_ids)
    users, items = _interactions(ratings, movie_ids, min_rating)
    n = len(movie_ids)
    width = max(1, min(int(neighbours), n - 1))
    seen = np.unique(items)  # unrated movies: zero rows and columns of B
    user_rows = pd.factorize(users)[0]
    x = np.zeros((user_rows.max() + 1, len(seen)), np.float32)
    x[user_rows, np.searchsorted(seen, items)] = 1
    gram = (x.T @ x).astype(np.float64)  # exact: counts < 2^24
    del x
    # pylint: disable-next=protected-access
    b = baselines._ease_from_gram(gram, float(l2))
    del gram
    drop = (b <= 0) if positive_only else (b == 0)  # diagonal included
    key = b if positive_only else np.abs(b)
    key[drop] = -np.inf
    top, _ = top_n(key, min(width, len(seen)))
    weight = np.take_along_axis(b, np.maximum(top, 0), axis=1)
    del b, key
    index = np.zeros((n, width), np.int32)
    weights = np.zeros((n, width), np.float32)
    kept = top >= 0
    local = np.where(kept, top, 0)
    index[seen, :top.shape[1]] = np.where(kept, seen[local], 0)
    weights[seen, :top.shape[1]] = np.where(kept, weight, 0)
    return cls(movie_ids, index, weights, name=name, min_rating=min_rating,
               l2=l2, positive_only=positive_only)

  def score(self, histories: Sequence[Sequence[str]],
            ignore_unknown: bool = False) -> np.ndarray:
    """[B, N] float32 s_j = sum over the distinct history movies i of B[i, j].

    `histories`: [B] sequences of movie ids. An id outside the catalogue
    raises ValueError unless `ignore_unknown` (then it is dropped).
    """
    rows = _indices(self._lookup, histories, ignore_unknown)
    n = len(self.movie_ids)
    out = np.zeros((len(rows), n), np.float32)
    for r, items in enumerate(rows):  # by row: ~2x faster than one bincount
      if len(items):
        out[r] = np.bincount(
            self._index.take(items, axis=0).ravel(),
            self.neighbour_weight.take(items, axis=0).ravel(), minlength=n)
    return out

  def because(self, history: Sequence[str], candidates: Sequence[int],
              ignore_unknown: bool = False) -> List[Optional[str]]:
    """For each candidate index j, the history movie id with the largest
    stored positive B[i, j] (ties: earliest in `history`), or None when no
    history movie brings j (also for j = -1, `top_n` padding)."""
    candidates = np.asarray(candidates, np.int64).reshape(-1)
    n = len(self.movie_ids)
    if ((candidates < -1) | (candidates >= n)).any():
      raise ValueError(f"candidate indices must be in [0, {n}) or -1")
    items, = _indices(self._lookup, [history], ignore_unknown)
    j = self.neighbour_index[items].ravel()
    w = self.neighbour_weight[items].ravel()
    source = np.repeat(np.arange(len(items)), self.neighbour_index.shape[1])
    wanted = np.zeros(n, bool)  # only the candidates' neighbours: fewer
    wanted[candidates[candidates >= 0]] = True  # entries to sort
    keep = (w > 0) & wanted[j]
    j, w, source = j[keep], w[keep], source[keep]
    order = np.lexsort((source, -w, j))  # by j, then best weight, then first
    j, source = j[order], source[order]
    starts = np.flatnonzero(np.r_[True, j[1:] != j[:-1]][:len(j)])
    best = np.full(n + 1, -1, np.int64)  # slot n: the -1 candidate
    best[j[starts]] = source[starts]
    return [None if s < 0 else str(self.movie_ids[items[s]])
            for s in best[np.where(candidates < 0, n, candidates)]]

  def save(self, path: str) -> None:
    _save(path, self._KIND, dict(
        movie_ids=self.movie_ids, neighbour_index=self.neighbour_index,
        neighbour_weight=self.neighbour_weight, name=np.asarray(self.name),
        min_rating=np.asarray(self.min_rating), l2=np.asarray(self.l2),
        positive_only=np.asarray(self.positive_only)))

  @classmethod
  def load(cls, path: str) -> "ItemToItem":
    a = _load(path, cls._KIND, ["movie_ids", "neighbour_index",
                                "neighbour_weight", "name", "min_rating",
                                "l2", "positive_only"])
    try:
      return cls(a["movie_ids"], a["neighbour_index"], a["neighbour_weight"],
                 name=str(a["name"]), min_rating=float(a["min_rating"]),
                 l2=float(a["l2"]), positive_only=bool(a["positive_only"]))
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from e


# --------------------------------------------------------------------------
# Segment popularity.


def _gender_key(value) -> Optional[str]:
  if isinstance(value, (bool, np.bool_)):  # data.raw: True = M
    return "M" if value else "F"
  g = str(value).strip().upper()
  return g if g in ("M", "F") else None


def _age_key(value) -> Optional[str]:
  try:
    age = float(value)
  except (TypeError, ValueError):
    return None
  return str(int(age)) if np.isfinite(age) and age == int(age) else None


def segment_key(gender, age) -> Optional[str]:
  """The segment key, e.g. "F|25", of a gender ("M"/"F" or bool, True =
  M) and an age bucket ("25", 25 or 25.0); None if either is missing or
  malformed."""
  if gender is None or age is None:
    return None
  g, a = _gender_key(gender), _age_key(age)
  return None if g is None or a is None else f"{g}|{a}"


@dataclasses.dataclass(eq=False)
class Popularity:
  """Popularity within a gender|age segment (cold-start source).

  Scores: segment s, movie j: log1p(counts[s, j] + shrinkage * overall[j]
  * n_s / n_total), the segment's counts pulled towards the overall counts
  scaled to the segment's size (n_s = counts[s].sum(), n_total =
  overall.sum(), interactions). The prior's total weight is `shrinkage`
  times the segment's own, whatever its size; shrinkage 0 gives the raw
  segment counts. An unknown or missing segment scores log1p(overall).

  Attributes:
    movie_ids: [N] str.
    segments: [S] str keys "gender|age", e.g. "F|25", sorted.
    counts: [S, N] float32 interactions per segment.
    overall: [N] float32 interactions of all users (also users missing
      from the users table).
    name, min_rating, shrinkage: how it was fit / scores.
  """
  movie_ids: np.ndarray
  segments: np.ndarray
  counts: np.ndarray
  overall: np.ndarray
  name: str = "popularity"
  min_rating: float = 0.0
  shrinkage: float = 10.0

  _KIND = "retrieval.sources.Popularity/1"

  def __post_init__(self):
    self.movie_ids = _catalogue(self.movie_ids)
    self.segments, self.counts, self.overall = _keyed_table(
        self.segments, self.counts, self.overall, len(self.movie_ids),
        ("segments", "counts", "overall"))
    if (self.counts < 0).any() or (self.overall < 0).any():
      raise ValueError("counts must be >= 0")
    if self.shrinkage < 0:
      raise ValueError(f"shrinkage must be >= 0, got {self.shrinkage}")
    self.name = str(self.name)
    self.min_rating = float(self.min_rating)
    self.shrinkage = float(self.shrinkage)
    total = max(float(self.overall.sum()), 1.0)
    share = self.counts.sum(axis=1, dtype=np.float64) / total
    prior = self.shrinkage * self.overall[None, :] * share[:, None]
    # [S + 1, N]: segment rows, then the overall row.
    self._table = np.log1p(np.concatenate(
        [self.counts + prior, self.overall[None, :]])).astype(np.float32)
    self._row = {key: i for i, key in enumerate(self.segments)}

  @classmethod
  def fit(cls, ratings: pd.DataFrame, users: pd.DataFrame,
          movie_ids: Sequence[str], min_rating: float = 0.0,
          shrinkage: float = 10.0, name: str = "popularity") -> "Popularity":
    """Counts interactions per segment of `users` (`user_id`,
    `user_gender`, `bucketized_user_age`) and overall."""
    user_ids = _user_ids(users, ["user_gender", "bucketized_user_age"])
    movie_ids = _catalogue(movie_ids)
    keys = [segment_key(g, a) for g, a in
            zip(users.user_gender, users.bucketized_user_age)]
    bad = [i for i, k in enumerate(keys) if k is None]
    if bad:
      row = users.iloc[bad[0]]
      raise ValueError(
          f"user {user_ids[bad[0]]!r}: bad gender {row.user_gender!r} or age "
          f"{row.bucketized_user_age!r}")
    segments, segment_of_user = np.unique(np.asarray(keys, str),
                                          return_inverse=True)
    rated_users, items = _interactions(ratings, movie_ids, min_rating)
    n = len(movie_ids)
    overall = np.bincount(items, minlength=n).astype(np.float32)
    row = pd.Index(user_ids).get_indexer(rated_users)
    known = row >= 0
    flat = segment_of_user[row[known]] * n + items[known]
    counts = np.bincount(flat, minlength=len(segments) * n)
    return cls(movie_ids, segments,
               counts.reshape(len(segments), n).astype(np.float32), overall,
               name=name, min_rating=min_rating, shrinkage=shrinkage)

  def score(self, genders: Sequence[Optional[str]],
            ages: Sequence[Optional[str]]) -> np.ndarray:
    """[B, N] float32 scores of B users given by gender and age bucket."""
    if len(genders) != len(ages):
      raise ValueError(f"{len(genders)} genders but {len(ages)} ages")
    overall = len(self.segments)
    rows = [self._row.get(segment_key(g, a), overall)
            for g, a in zip(genders, ages)]
    return self._table[np.asarray(rows, np.int64)]

  def save(self, path: str) -> None:
    _save(path, self._KIND, dict(
        movie_ids=self.movie_ids, segments=self.segments, counts=self.counts,
        overall=self.overall, name=np.asarray(self.name),
        min_rating=np.asarray(self.min_rating),
        shrinkage=np.asarray(self.shrinkage)))

  @classmethod
  def load(cls, path: str) -> "Popularity":
    a = _load(path, cls._KIND, ["movie_ids", "segments", "counts", "overall",
                                "name", "min_rating", "shrinkage"])
    try:
      return cls(a["movie_ids"], a["segments"], a["counts"], a["overall"],
                 name=str(a["name"]), min_rating=float(a["min_rating"]),
                 shrinkage=float(a["shrinkage"]))
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from e


# --------------------------------------------------------------------------
# Demographic popularity (the cold-start source).


def demographic_key(attribute: str, value) -> Optional[str]:
  """"attribute=value" of one demographic input, None if missing or
  malformed; gender and age bucket normalized as in `segment_key`."""
  if value is None:
    return None
  if attribute == "user_gender":
    value = _gender_key(value)
  elif attribute == "bucketized_user_age":
    value = _age_key(value)
  else:
    value = str(value).strip() or None
  return None if value is None else f"{attribute}={value}"


@dataclasses.dataclass(eq=False)
class DemographicPopularity:
  """Popularity by demographics, additive over the attributes.

  A ridge regression of each user's liked movies (interactions with
  `user_rating >= min_rating`, 0/1 [U, N]) on the one-hot demographic
  values of `attributes` plus an unpenalized intercept:
  W = argmin |Y - [1, X] W|^2 + l2 |W_X|^2. A user's score is
  intercept + the rows of the user's known values; an unknown or missing
  value adds nothing. It generalizes segment popularity: with one
  attribute per (gender, age) pair and l2 -> 0 it is that segment's share
  of liked interactions, and it pools segments that are too small to
  count alone (an occupation within an age bucket). Chosen on validation
  users held out of the fit (README, "Two stages").

  Attributes:
    movie_ids: [N] str.
    keys: [F] str "attribute=value", sorted.
    weights: [F, N] float32 per-value effects.
    intercept: [N] float32.
    name, min_rating, l2: how it was fit.
  """
  movie_ids: np.ndarray
  keys: np.ndarray
  weights: np.ndarray
  intercept: np.ndarray
  name: str = "popularity"
  min_rating: float = 4.0
  l2: float = 100.0

  _KIND = "retrieval.sources.DemographicPopularity/1"

  def __post_init__(self):
    self.movie_ids = _catalogue(self.movie_ids)
    self.keys, self.weights, self.intercept = _keyed_table(
        self.keys, self.weights, self.intercept, len(self.movie_ids),
        ("demographic keys", "weights", "intercept"))
    if not (np.isfinite(self.weights).all()
            and np.isfinite(self.intercept).all()):
      raise ValueError("weights must be finite")
    self.name = str(self.name)
    self.min_rating = float(self.min_rating)
    self.l2 = float(self.l2)
    self.row = {k: i for i, k in enumerate(self.keys)}
    self.attributes = sorted({k.split("=", 1)[0] for k in self.keys})

  @classmethod
  def fit(cls, ratings: pd.DataFrame, users: pd.DataFrame,
          movie_ids: Sequence[str], attributes: Sequence[str],
          l2: float = 100.0, min_rating: float = 4.0,
          name: str = "popularity") -> "DemographicPopularity":
    """Fits W on the users of `ratings` (each a row, whether or not they
    liked anything) found in `users` (`user_id` and the `attributes`
    columns); ratings of other users are dropped (they have no
    demographics to regress on)."""
    if l2 <= 0:
      raise ValueError(f"l2 must be > 0, got {l2}")
    if not attributes:
      raise ValueError("attributes is empty")
    user_ids = _user_ids(users, attributes)
    movie_ids = _catalogue(movie_ids)
    rated_users, items = _interactions(ratings, movie_ids, min_rating)
    # Every user who rated (liked or not) and has demographics is a row.
    fitted = np.intersect1d(ratings.user_id.to_numpy().astype(str), user_ids)
    if not len(fitted):
      raise ValueError("no user of ratings is in users")
    row_of = pd.Index(fitted)
    table = users.set_index(users.user_id.astype(str)).reindex(fitted)
    values = {a: [demographic_key(a, v) for v in table[a].tolist()]
              for a in attributes}
    keys = sorted({k for v in values.values() for k in v if k is not None})
    if not keys:
      raise ValueError("no demographic values among the rated users")
    column = {k: i for i, k in enumerate(keys)}
    x = np.zeros((len(fitted), len(keys) + 1), np.float64)
    x[:, -1] = 1.0
    for a in attributes:
      for u, k in enumerate(values[a]):
        if k is not None:
          x[u, column[k]] = 1.0
    n = len(movie_ids)
    y_rows = row_of.get_indexer(rated_users)
    known = y_rows >= 0
    y_rows, items = y_rows[known], items[known]
    # X^T Y without the dense [U, N] Y: per value, its users' interactions.
    xty = np.zeros((x.shape[1], n), np.float64)
    for f in range(x.shape[1]):
      xty[f] = np.bincount(items[x[y_rows, f] > 0], minlength=n)
    penalty = np.full(x.shape[1], float(l2))
    penalty[-1] = 0.0
    w = np.linalg.solve(x.T @ x + np.diag(penalty), xty)
    return cls(movie_ids, np.asarray(keys), w[:-1].astype(np.float32),
               w[-1].astype(np.float32), name=name, min_rating=min_rating,
               l2=l2)

  def rows(self, demographics: Sequence[Dict[str, object]]
           ) -> np.ndarray:
    """[B, A] int32 rows of `weights` of each user's attribute values
    (`attributes` order); -1 = unknown or missing."""
    return np.asarray(
        [[self.row.get(demographic_key(a, d.get(a)), -1)
          for a in self.attributes] for d in demographics],
        np.int32).reshape(len(demographics), len(self.attributes))

  def score(self, demographics: Sequence[Dict[str, object]]) -> np.ndarray:
    """[B, N] float32 scores of users given as {attribute: value}."""
    rows = self.rows(demographics)
    padded = np.concatenate([self.weights, np.zeros((1, len(self.movie_ids)),
                                                    np.float32)])
    return (self.intercept[None, :]
            + padded[np.where(rows >= 0, rows, len(self.keys))].sum(axis=1))

  def save(self, path: str) -> None:
    _save(path, self._KIND, dict(
        movie_ids=self.movie_ids, keys=self.keys, weights=self.weights,
        intercept=self.intercept, name=np.asarray(self.name),
        min_rating=np.asarray(self.min_rating), l2=np.asarray(self.l2)))

  @classmethod
  def load(cls, path: str) -> "DemographicPopularity":
    a = _load(path, cls._KIND, ["movie_ids", "keys", "weights", "intercept",
                                "name", "min_rating", "l2"])
    try:
      return cls(a["movie_ids"], a["keys"], a["weights"], a["intercept"],
                 name=str(a["name"]), min_rating=float(a["min_rating"]),
                 l2=float(a["l2"]))
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from e


# --------------------------------------------------------------------------
# Merging.


def _exclude_mask(exclude: Optional[Sequence[Sequence[int]]],
                  shape: Tuple[int, int]) -> np.ndarray:
  """[B, N] bool, True at the excluded (row, index) pairs."""
  mask = np.zeros(shape, bool)
  if exclude is None:
    return mask
  if len(exclude) != shape[0]:
    raise ValueError(f"exclude has {len(exclude)} rows, scores {shape[0]}")
  for r, items in enumerate(exclude):
    items = np.asarray(items, np.int64).reshape(-1)
    if ((items < 0) | (items >= shape[1])).any():
      raise ValueError(f"exclude row {r}: indices must be in [0, {shape[1]})")
    mask[r, items] = True
  return mask


def _scores_2d(scores) -> np.ndarray:
  scores = np.asarray(scores)
  if scores.ndim != 2:
    raise ValueError(f"scores must be [B, N], got shape {scores.shape}")
  if not np.issubdtype(scores.dtype, np.floating):
    scores = scores.astype(np.float64)
  if np.isnan(scores).any():
    raise ValueError("scores contain NaN")
  return scores


def top_n(scores: np.ndarray, n: int,
          exclude: Optional[Sequence[Sequence[int]]] = None
          ) -> Tuple[np.ndarray, np.ndarray]:
  """The n best of each row: (indices [B, n] int64, scores [B, n]).

  Best first, ties broken by the lower index. `exclude[b]` are indices
  never returned for row b; scores of -inf count as excluded too. Rows
  with fewer than n left are padded with index -1 and score -inf. Scores
  keep their float dtype.
  """
  scores = _scores_2d(scores)
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}")
  batch, size = scores.shape
  masked = scores.copy()
  masked[_exclude_mask(exclude, scores.shape)] = -np.inf
  k = min(int(n), size)
  if k < size:
    # The k-th largest value; of the entries equal to it, the lowest
    # indices fill the remaining slots (argpartition picks ties arbitrarily).
    kth = np.partition(masked, size - k, axis=1)[:, size - k, None]
    above = masked > kth
    tied = masked == kth
    need = k - above.sum(axis=1, keepdims=True)
    rank = np.cumsum(tied, axis=1, dtype=np.int32)
    chosen = above | (tied & (rank <= need))
    index = np.nonzero(chosen)[1].reshape(batch, k)  # ascending per row
  else:
    index = np.broadcast_to(np.arange(size), (batch, size))
  value = np.take_along_axis(masked, index, axis=1)
  order = np.argsort(-value, axis=1, kind="stable")
  index = np.take_along_axis(index, order, axis=1).astype(np.int64)
  value = np.take_along_axis(value, order, axis=1)
  index[value == -np.inf] = -1
  if k < n:
    index = np.pad(index, ((0, 0), (0, n - k)), constant_values=-1)
    value = np.pad(value, ((0, 0), (0, n - k)), constant_values=-np.inf)
  return index, value


def standardize(scores: np.ndarray,
                exclude: Optional[Sequence[Sequence[int]]] = None
                ) -> np.ndarray:
  """[B, N] float32 per-row z-scores over the non-excluded entries (std
  floored at 1e-6); excluded entries are 0. Those entries must be finite."""
  scores = _scores_2d(scores)
  mask = _exclude_mask(exclude, scores.shape)
  keep = ~mask
  if not np.isfinite(scores[keep]).all():
    raise ValueError("scores must be finite outside the excluded entries")
  x = np.where(keep, scores, 0).astype(np.float64)
  count = np.maximum(keep.sum(axis=1, keepdims=True), 1)
  mean = x.sum(axis=1, keepdims=True) / count
  var = (np.where(keep, x - mean, 0) ** 2).sum(axis=1, keepdims=True) / count
  z = (x - mean) / np.maximum(np.sqrt(var), 1e-6)
  return np.where(keep, z, 0).astype(np.float32)
