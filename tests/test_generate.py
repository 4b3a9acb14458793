"""Generated ML-10M/20M/25M-layout files: round trip, skew, determinism,
strict reading."""

import os

import numpy as np
import pytest

from data import generate, raw


@pytest.mark.parametrize("layout", sorted(raw.LAYOUTS))
def test_layout_parses_back_exactly(tmp_path, layout):
  tables = generate.generate_tables(layout, 5000, seed=3)
  generate.write_tables(tables, layout, str(tmp_path))
  data = raw.load_layout(str(tmp_path), layout)
  movies, ratings = tables["movies"], tables["ratings"]
  assert len(data.ratings) == len(ratings) == 5000
  assert len(data.movies) == len(movies)
  assert len(data.users) == ratings.userId.nunique()
  assert data.report.skipped_total == 0
  np.testing.assert_array_equal(data.ratings.user_id.astype(int),
                                ratings.userId)
  np.testing.assert_array_equal(data.ratings.movie_id.astype(int),
                                ratings.movieId)
  np.testing.assert_array_equal(data.ratings.user_rating, ratings.rating)
  np.testing.assert_array_equal(data.ratings.timestamp, ratings.timestamp)
  assert list(data.movies.movie_title) == list(movies.title)
  assert ["|".join(g) for g in data.movies.movie_genres] == list(
      movies.genres)
  # Titles with commas (and, in csv, double quotes) survive the quoting.
  assert any(", The (" in t for t in data.movies.movie_title)
  if raw.LAYOUTS[layout].csv:
    assert any('"' in t for t in data.movies.movie_title)
  years = data.movies.movie_title.str.extract(r"\((\d{4})\)$")[0]
  np.testing.assert_array_equal(years.astype(int), data.movies.release_year)
  assert set(data.ratings.user_rating) <= set(np.arange(1, 11) / 2)
  assert set(data.ratings.user_rating) > {1.0, 4.5}  # half stars present


def test_skew_activity_and_time():
  """On 200k ratings the top 1% of movies (20 of 2,000) hold > 6% of the
  ratings (6x a uniform draw; measured 9.3% with seed 0); every user has
  >= 20 ratings, the busiest > 5x the median; timestamps increase per
  user; ratings carry a user and a movie effect."""
  tables = generate.generate_tables("ml-25m", 200_000, seed=0)
  r = tables["ratings"]
  counts = np.sort(r.movieId.value_counts().to_numpy())[::-1]
  top = counts[:len(tables["movies"]) // 100].sum() / len(r)
  assert top > 0.06, top
  per_user = r.groupby("userId").size()
  assert per_user.min() >= generate.MIN_USER_RATINGS
  assert per_user.max() > 5 * per_user.median()
  assert not r.duplicated(["userId", "movieId"]).any()
  by_time = r.sort_values(["userId", "timestamp"])
  assert (by_time.groupby("userId").timestamp.diff().dropna() > 0).all()
  assert r.timestamp.min() >= generate.START
  assert r.timestamp.max() <= generate.END["ml-25m"]
  # Pure noise around 3.5 would give per-user means with std ~0.85 /
  # sqrt(154) ~0.07; the latent biases make it ~0.4.
  assert r.groupby("userId").rating.mean().std() > 0.2
  assert r.groupby("movieId").rating.mean().std() > 0.2


def test_deterministic_per_seed(tmp_path):
  def files(seed, name):
    paths = generate.generate("ml-20m", 3000, str(tmp_path / name), seed)
    return {k: open(p, "rb").read() for k, p in paths.items()}
  assert files(7, "a") == files(7, "b")
  assert files(7, "a")["ratings.csv"] != files(8, "c")["ratings.csv"]


@pytest.mark.parametrize("mutate,problem", [
    (lambda line: "x" + line, "user id 'x"),
    (lambda line: line.rsplit(",", 2)[0] + ",4.3," + line.rsplit(",", 1)[1],
     "rating '4.3' is not 0.5-5 in half stars"),
    (lambda line: line + ",1", "expected 4 ','-separated fields, got 5"),
])
def test_corrupted_csv_line_names_file_and_line(tmp_path, mutate, problem):
  generate.generate("ml-25m", 2000, str(tmp_path), seed=1)
  path = os.path.join(tmp_path, "ml-25m", "ratings.csv")
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  lines[41] = mutate(lines[41])  # line 42 (the header is line 1)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  with pytest.raises(raw.BadInputError, match=r"^ratings\.csv:42: ") as e:
    raw.load_layout(str(tmp_path), "ml-25m")
  assert problem in str(e.value)
  data = raw.load_layout(str(tmp_path), "ml-25m", on_bad_line="skip")
  assert len(data.ratings) == 1999
  assert data.report.skipped == {"ratings.csv": 1}


def test_unbalanced_quote_in_movies_csv(tmp_path):
  generate.generate("ml-25m", 2000, str(tmp_path), seed=1)
  path = os.path.join(tmp_path, "ml-25m", "movies.csv")
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  lines[4] = lines[4].split(",")[0] + ',"Open Title (1999),Drama'
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  with pytest.raises(raw.BadInputError,
                     match=r"^movies\.csv:5: unbalanced double quote"):
    raw.load_layout(str(tmp_path), "ml-25m")
