"""Small generated data in the raw MovieLens-1M + MeLU layout, for tests.

`write_raw_dir(path)` writes

    path/ml-1m/users.dat, movies.dat (latin-1), ratings.dat
    path/melu/movies_extrainfos.dat (UTF-8, CRLF)

with the quirks the real files have: ZIP+4 and over-long zip codes,
latin-1 titles, `Children's`, names with role suffixes and stray spaces,
movies missing from the enrichment file, `N/A` directors. Ratings follow
a planted taste pattern (users like one of a few genre groups) so models
have something to learn. `bad_lines=True` appends malformed lines.
"""

import os
import random
from typing import Dict, List

from data import raw

GENRE_GROUPS = (
    ("Action", "Adventure", "Sci-Fi", "Thriller"),
    ("Comedy", "Romance", "Children", "Animation"),
    ("Drama", "Crime", "Film-Noir", "War"),
)
DIRECTORS = ["Ann Lee", "Bo Widerberg ", " Cy Endfield", "Dee Snider",
             "Ed Wood(co-director)"]
STARS = ["Al Pacino", "Bette Davis", "Cary Grant", "Doris Day", "Eli Wallach"]

# What the ratings file holds when bad_lines=True (appended at the end).
BAD_RATING_LINES = [
    "1::1::7::978300760",          # rating outside 1-5
    "1::99999::4::978300760",      # unknown movie
    "99999::1::4::978300760",      # unknown user
    "this line is malformed",      # wrong field count
]


def _title(i: int) -> str:
  if i == 1:
    return "Café Society, The (1995)"  # latin-1 encoded on disk
  if i == 2:
    return "Toy Story (1995)"
  return f"Movie {i} ({1950 + i % 50})"


def write_raw_dir(path: str, num_users: int = 60, num_movies: int = 40,
                  ratings_per_user: int = 15, seed: int = 0,
                  bad_lines: bool = False, num_users_without_ratings: int = 5,
                  ) -> Dict[str, object]:
  """Writes the raw files; returns facts the tests assert against."""
  rng = random.Random(seed)
  ml = os.path.join(path, "ml-1m")
  melu = os.path.join(path, "melu")
  os.makedirs(ml, exist_ok=True)
  os.makedirs(melu, exist_ok=True)

  users: List[str] = []
  user_group = {}
  total_users = num_users + num_users_without_ratings
  for u in range(1, total_users + 1):
    gender = "MF"[u % 2]
    age = raw.AGE_BUCKETS[u % len(raw.AGE_BUCKETS)]
    occupation = u % len(raw.OCCUPATIONS)
    zip_code = {0: f"{10000 + u:05d}-1234", 1: f"{50000 + u}77"}.get(
        u % 7, f"{20000 + u:05d}")
    users.append(f"{u}::{gender}::{age}::{occupation}::{zip_code}")
    user_group[u] = u % len(GENRE_GROUPS)

  movies: List[str] = []
  movie_group = {}
  for m in range(1, num_movies + 1):
    group = GENRE_GROUPS[m % len(GENRE_GROUPS)]
    genres = "|".join(sorted(set(rng.sample(group, 2))))
    genres = genres.replace("Children", "Children's")
    movies.append(f"{m}::{_title(m)}::{genres}")
    movie_group[m] = m % len(GENRE_GROUPS)

  ratings: List[str] = []
  for u in range(1, num_users + 1):
    rated = rng.sample(range(1, num_movies + 1),
                       min(ratings_per_user, num_movies))
    for j, m in enumerate(rated):
      liked = movie_group[m] == user_group[u]
      rating = min(5, max(1, round(rng.gauss(4.3 if liked else 2.3, 0.7))))
      ratings.append(f"{u}::{m}::{rating}::{978300000 + 3600 * j + u}")
  if bad_lines:
    ratings.extend(BAD_RATING_LINES)

  # Enrichment: every third movie missing, movie 4 has N/A director.
  extra: List[str] = []
  enriched = 0
  for m in range(1, num_movies + 1):
    if m % 3 == 0:
      continue
    director = "N/A" if m == 4 else DIRECTORS[m % len(DIRECTORS)]
    if m % 5 == 1:
      director += ", Second Person(co-director)"
    actors = ", ".join([STARS[m % len(STARS)], STARS[(m + 1) % len(STARS)]])
    extra.append("::".join([str(m), f"Movie {m}", "1990", "PG", "N/A",
                            "Drama", director, "Someone (writer)", actors,
                            "A plot :: with colons.", "N/A"]))
    enriched += 1

  with open(os.path.join(ml, "users.dat"), "wb") as f:
    f.write(("\n".join(users) + "\n").encode("latin-1"))
  with open(os.path.join(ml, "movies.dat"), "wb") as f:
    f.write(("\n".join(movies) + "\n").encode("latin-1"))
  with open(os.path.join(ml, "ratings.dat"), "wb") as f:
    f.write(("\n".join(ratings) + "\n").encode("latin-1"))
  with open(os.path.join(melu, "movies_extrainfos.dat"), "wb") as f:
    f.write(("\r\n".join(extra) + "\r\n").encode("utf-8"))
  return {
      "path": path,
      "num_users": total_users,
      "num_users_with_ratings": num_users,
      "num_movies": num_movies,
      "num_ratings": num_users * min(ratings_per_user, num_movies),
      "num_bad_rating_lines": len(BAD_RATING_LINES) if bad_lines else 0,
      "num_enriched_movies": enriched,
  }
