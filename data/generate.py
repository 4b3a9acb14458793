"""Generated raw MovieLens files in the ML-10M, ML-20M and ML-25M layouts.

No such file is on this machine, so tests and benches of larger data use
these. `generate(layout, num_ratings, out_dir, seed)` writes

    OUT/ml-10M100K/{movies,ratings}.dat   `::`-separated, ratings 0.5-5
    OUT/ml-20m/{movies,ratings}.csv       (also ml-25m/) csv with a header,
                                          quoted titles, half stars

(`data.raw.LAYOUTS`; the folder names of the official zips). The data has
MovieLens's shape, not its values:

* movie popularity is Zipf-like (the movie of popularity rank r is drawn
  with probability ~ r^-`movie_zipf`), user activity is Pareto-like (every
  user has >= 20 ratings, as MovieLens guarantees; ~154 ratings per user
  and ~400 per movie on average, as ML-25M);
* each movie has 1-3 genres drawn from the TFDS genre labels (a few have
  `(no genres listed)`), a `Title (Year)` title, some with commas and
  double quotes (csv quoting);
* timestamps increase strictly per user from a start in 1995 to the
  layout's end date;
* ratings are mu + b_u + b_m + <p_u, q_m> + noise rounded to half stars,
  with rank-8 latent factors, so models have something to learn.

Deterministic per seed (one `np.random.default_rng(seed)`), vectorised:
the few Python loops run over rejection rounds, not ratings.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict

import numpy as np
import pandas as pd

from data import raw

MIN_USER_RATINGS = 20
RATINGS_PER_USER = 154  # ML-25M: 25,000,095 / 162,541
RATINGS_PER_MOVIE = 400  # ML-25M: 25,000,095 / 62,423
START = 789652009  # 1995-01-09, the first MovieLens rating
LAYOUT_NAMES = ("ml-10m", "ml-20m", "ml-25m")  # keys of data.raw.LAYOUTS
# Last rating of each official release (unix seconds).
END = {"ml-10m": 1231131736, "ml-20m": 1427784002, "ml-25m": 1574327703}
# Genre weights: roughly the ML-25M shares (Drama, Comedy most common).
_GENRE_WEIGHTS = {
    "Action": 7, "Adventure": 4, "Animation": 2, "Children": 2,
    "Comedy": 16, "Crime": 5, "Documentary": 5, "Drama": 25, "Fantasy": 2,
    "Film-Noir": 0.3, "Horror": 5, "IMAX": 0.2, "Musical": 1, "Mystery": 2,
    "Romance": 7, "Sci-Fi": 3, "Thriller": 8, "War": 1.5, "Western": 1,
}
NO_GENRES = "(no genres listed)"
_WORDS = (
    "Silent River Last Summer Night Dark City Long Road Blue Moon Lost "
    "Kingdom Red Storm Secret Garden Cold Heart Little Star Broken Wings "
    "Iron Bridge Golden Hour Wild Coast Hidden Valley Paper Moon Empty "
    "Room Winter Song Glass House Electric Dream Crimson Tide Distant "
    "Shore Quiet Earth Burning Sky Velvet Rain").split()


@dataclasses.dataclass(frozen=True)
class Options:
  """Shape of the generated data (defaults: ML-25M's)."""
  movie_zipf: float = 0.9
  """Exponent s of movie popularity: rank r drawn with weight r^-s."""
  user_sigma: float = 1.25
  """Log-normal sigma of user activity above the 20-rating minimum (1.25:
  mean / median ~2.2, as ML-25M's 154 / 71)."""
  factors: int = 8
  """Rank of the latent user/movie factors behind the ratings."""
  noise: float = 0.6
  """Standard deviation of the rating noise (stars)."""


def sizes(num_ratings: int) -> Dict[str, int]:
  """Users and movies for `num_ratings` (ML-25M's ratios; below 800k
  ratings 2,000 movies, so that heavy users, capped at half the movies,
  do not cover the catalogue and flatten the popularity skew)."""
  users = max(1, num_ratings // RATINGS_PER_USER)
  movies = max(num_ratings // RATINGS_PER_MOVIE, 2000)
  if num_ratings < MIN_USER_RATINGS:
    raise ValueError(f"at least {MIN_USER_RATINGS} ratings (one user)")
  return {"users": users, "movies": movies}


def _user_counts(rng, num_ratings: int, users: int, cap: int, opts
                 ) -> np.ndarray:
  """Ratings per user: >= 20, log-normal tail, at most `cap`, sum exact
  (what the cap clips goes to the others by their weights)."""
  weights = rng.lognormal(0.0, opts.user_sigma, users)
  extra = num_ratings - MIN_USER_RATINGS * users
  counts = MIN_USER_RATINGS + np.floor(extra * weights / weights.sum()
                                       ).astype(np.int64)
  counts = np.minimum(counts, cap)
  deficit = num_ratings - int(counts.sum())
  while deficit > 0:  # hand the rounding and the clipped rest out
    room = np.flatnonzero(counts < cap)
    if not len(room):
      raise ValueError(f"{num_ratings} ratings do not fit {users} users x "
                       f"{cap} movies")
    add = np.floor(deficit * weights[room] / weights[room].sum())
    add = np.minimum(add.astype(np.int64), cap - counts[room])
    if not add.sum():  # the last few, one each
      add = np.zeros(len(room), np.int64)
      add[rng.permutation(len(room))[:deficit]] = 1
    counts[room] += add
    deficit -= int(add.sum())
  return counts


def _pairs(rng, counts: np.ndarray, popularity: np.ndarray) -> np.ndarray:
  """Distinct (user, movie) keys `user * M + movie`: `counts[u]` movies
  per user drawn by `popularity` without replacement (draw with
  replacement, drop repeats, redraw the deficit; after 4 rounds the rest
  is drawn uniformly, which only the heaviest users reach)."""
  movies = len(popularity)
  users = np.arange(len(counts), dtype=np.int64)
  cdf = np.cumsum(popularity / popularity.sum())
  accepted = np.empty(0, np.int64)
  need = counts.astype(np.int64)
  for round_ in range(200):
    active = need > 0
    if not active.any():
      break
    draws = np.ceil(need[active] * 1.2).astype(np.int64) + 2
    who = np.repeat(users[active], draws)
    if round_ < 4:
      what = np.searchsorted(cdf, rng.random(len(who)), side="right")
      what = np.minimum(what, movies - 1)
    else:
      what = rng.integers(0, movies, len(who))
    keys = who * movies + what
    # First occurrence of each new key, in draw order (random order).
    keys, first = np.unique(keys, return_index=True)
    keys = keys[np.argsort(first, kind="stable")]
    keys = keys[~np.isin(keys, accepted)]
    # Keep at most need[u] per user: rank within user in draw order.
    owner = keys // movies
    order = np.argsort(owner, kind="stable")
    keys, owner = keys[order], owner[order]
    starts = np.searchsorted(owner, owner, side="left")
    rank = np.arange(len(keys)) - starts
    keep = rank < need[owner]
    keys = keys[keep]
    accepted = np.concatenate([accepted, keys])
    need -= np.bincount(keys // movies, minlength=len(counts))
  else:
    raise RuntimeError("could not draw distinct movies")  # pragma: no cover
  return np.sort(accepted)


def _titles(rng, years: np.ndarray, layout: str) -> np.ndarray:
  """`Title (Year)`; ~10% have a comma (`..., The`), csv layouts ~2% a
  double quote (both must survive the csv quoting)."""
  n = len(years)
  words = np.array(_WORDS, dtype=object)
  first = words[rng.integers(0, len(words), n)]
  second = words[rng.integers(0, len(words), n)]
  titles = first + " " + second
  comma = rng.random(n) < 0.1
  titles[comma] = titles[comma] + ", The"
  if layout != "ml-10m":
    quote = rng.random(n) < 0.02
    titles[quote] = '"' + titles[quote] + '" Part II'
  # Distinct titles (as MovieLens's, mostly): a number where repeated.
  numbered = pd.Series(titles).groupby(titles).cumcount().to_numpy()
  titles = np.where(numbered > 0, titles + " " + (numbered + 1).astype(str),
                    titles)
  return titles + " (" + years.astype(str) + ")"


def _genres(rng, n: int) -> np.ndarray:
  """1-3 distinct genres per movie joined by `|`; 0.5% have none
  listed."""
  names = np.array(list(_GENRE_WEIGHTS), dtype=object)
  p = np.array(list(_GENRE_WEIGHTS.values()), dtype=np.float64)
  p /= p.sum()
  k = rng.choice([1, 2, 3], size=n, p=[0.45, 0.35, 0.2])
  # Gumbel top-k: k distinct genres per movie with probabilities p.
  scores = np.log(p)[None, :] - np.log(-np.log(rng.random((n, len(p)))))
  order = np.argsort(-scores, axis=1)
  out = np.empty(n, dtype=object)
  for size in (1, 2, 3):
    rows = np.flatnonzero(k == size)
    chosen = np.sort(order[rows, :size], axis=1)
    joined = names[chosen[:, 0]]
    for j in range(1, size):
      joined = joined + "|" + names[chosen[:, j]]
    out[rows] = joined
  out[rng.random(n) < 0.005] = NO_GENRES
  return out


def generate_tables(layout: str, num_ratings: int, seed: int = 0,
                    options: Options = Options()
                    ) -> Dict[str, pd.DataFrame]:
  """The generated `movies` (movieId, title, genres) and `ratings`
  (userId, movieId, rating, timestamp; sorted by user, then movie)."""
  if layout not in END:
    raise ValueError(f"layout must be one of {tuple(END)}, not {layout!r}")
  rng = np.random.default_rng(seed)
  n = sizes(num_ratings)
  num_users, num_movies = n["users"], n["movies"]
  # Sparse ids, as MovieLens's (ML-25M's run to 209,171).
  movie_ids = np.sort(rng.choice(np.arange(1, 3 * num_movies + 1),
                                 num_movies, replace=False))
  years = np.clip(np.round(2020 - rng.gamma(2.0, 12.0, num_movies)), 1902,
                  2019).astype(np.int64)
  movies = pd.DataFrame({"movieId": movie_ids,
                         "title": _titles(rng, years, layout),
                         "genres": _genres(rng, num_movies)})
  # Popularity rank of each movie (a random permutation of ranks).
  rank = rng.permutation(num_movies) + 1
  popularity = rank.astype(np.float64) ** -options.movie_zipf
  counts = _user_counts(rng, num_ratings, num_users, num_movies // 2,
                        options)
  keys = _pairs(rng, counts, popularity)
  user, movie = keys // num_movies, keys % num_movies
  # Ratings: mu + b_u + b_m + <p_u, q_m> + noise, to half stars.
  k = options.factors
  p = rng.normal(0, 1 / np.sqrt(k), (num_users, k)) * 0.9
  q = rng.normal(0, 1 / np.sqrt(k), (num_movies, k)) * 0.9
  b_u = rng.normal(0, 0.4, num_users)
  # Popular movies are rated a little higher, as in MovieLens.
  b_m = rng.normal(0, 0.4, num_movies) + 0.15 * (np.log(popularity)
                                                 - np.log(popularity).mean()
                                                 ) / np.log(num_movies)
  score = (3.5 + b_u[user] + b_m[movie] + np.einsum("ij,ij->i", p[user],
                                                    q[movie])
           + rng.normal(0, options.noise, len(keys)))
  stars = np.clip(np.round(score * 2) / 2, 0.5, 5.0)
  # Timestamps: per user a start and strictly increasing gaps (random
  # order of the user's movies), ending before the release's end date.
  end = END[layout]
  span = np.minimum(rng.lognormal(np.log(86400 * 200), 1.5, num_users),
                    (end - START) * 0.9)
  step = span / counts
  gaps = 1 + np.floor(rng.exponential(1.0, len(keys)) * step[user])
  # Random order within each user before the running sum.
  order = np.lexsort((rng.random(len(keys)), user))
  ordered_user = user[order]
  offsets = np.cumsum(gaps[order])
  first = np.searchsorted(ordered_user, ordered_user, side="left")
  offsets = offsets - np.concatenate([[0], offsets])[first]
  total = np.zeros(num_users)
  np.maximum.at(total, ordered_user, offsets)
  # A user whose gaps overrun the release is compressed into it (floor
  # plus the rank in the user's order keeps the times strictly rising).
  room = end - START - counts - 1.0
  shrink = np.minimum(1.0, room / np.maximum(total, 1.0))
  rank = np.arange(len(keys)) - first
  offsets = np.where(shrink[ordered_user] < 1.0,
                     np.floor(offsets * shrink[ordered_user]) + rank,
                     offsets)
  # The start leaves room for the user's last rating before `end`.
  start = START + rng.random(num_users) * np.maximum(end - START - total, 0)
  stamp = np.empty(len(keys), np.int64)
  stamp[order] = (np.floor(start[ordered_user]) + offsets).astype(np.int64)
  ratings = pd.DataFrame({"userId": user + 1, "movieId": movie_ids[movie],
                          "rating": stars, "timestamp": stamp})
  return {"movies": movies, "ratings": ratings}


_STAR_TEXT = {  # ML-10M writes whole stars without ".0", csv with ".0"
    "ml-10m": {v / 2: (str(v // 2) if v % 2 == 0 else str(v / 2))
               for v in range(1, 11)},
    "csv": {v / 2: str(v / 2) for v in range(1, 11)},
}


def write_tables(tables: Dict[str, pd.DataFrame], layout: str,
                 out_dir: str) -> Dict[str, str]:
  """Writes the tables in `layout`'s files; returns name -> path."""
  folder = os.path.join(out_dir, raw.LAYOUTS[layout].folder)
  os.makedirs(folder, exist_ok=True)
  movies, ratings = tables["movies"], tables["ratings"]
  paths = {}
  if layout == "ml-10m":
    stars = ratings.rating.map(_STAR_TEXT["ml-10m"])
    lines = {
        "movies.dat": (movies.movieId.astype(str) + "::" + movies.title
                       + "::" + movies.genres),
        "ratings.dat": (ratings.userId.astype(str) + "::"
                        + ratings.movieId.astype(str) + "::" + stars + "::"
                        + ratings.timestamp.astype(str)),
    }
    for name, series in lines.items():
      paths[name] = os.path.join(folder, name)
      with open(paths[name], "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(series) + "\n")
    return paths
  paths["movies.csv"] = os.path.join(folder, "movies.csv")
  movies.to_csv(paths["movies.csv"], index=False, lineterminator="\n")
  paths["ratings.csv"] = os.path.join(folder, "ratings.csv")
  out = ratings.assign(rating=ratings.rating.map(_STAR_TEXT["csv"]))
  out.to_csv(paths["ratings.csv"], index=False, lineterminator="\n")
  return paths


def generate(layout: str, num_ratings: int, out_dir: str, seed: int = 0,
             options: Options = Options()) -> Dict[str, str]:
  """Generates and writes `num_ratings` ratings in `layout` under
  `out_dir` (module docstring); returns file name -> path."""
  return write_tables(generate_tables(layout, num_ratings, seed, options),
                      layout, out_dir)
