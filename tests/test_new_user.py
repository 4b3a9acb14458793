"""Tests of a new user who brings ratings: `catalog_lib.validate_ratings`,
`Catalog.search` (on a small in-memory catalog) and
`Recommender.recommend_for_ratings` (on the `small_runs` exports)."""

import numpy as np
import pytest

from test_recommend import catalog, rec, small_runs  # noqa: F401  pylint: disable=unused-import
from tfrs_pipeline.app import cascade
from tfrs_pipeline.app import catalog as catalog_lib

_TITLES = ("Matrix, The (1999)", "Café Society, The (1995)",
           "Schindler's List (1993)", "Toy Story (1995)",
           "Star Wars: Episode IV - A New Hope (1977)", "Lone Star (1996)",
           "Matrix Reloaded, The (2003)", "Star (2001)", "Mustard (1990)")
# movie id -> times rated
_COUNTS = {"1": 1, "5": 3, "6": 2, "7": 4, "9": 5}


@pytest.fixture(scope="module")
def tiny():
  n = len(_TITLES)
  obj = lambda v: np.array(v, dtype=object)  # noqa: E731
  movies = {"movie_id": obj([str(i + 1) for i in range(n)]),
            "movie_title": obj(_TITLES),
            "release_year": np.full(n, 1990, np.float32),
            "movie_genres": obj(["Drama"] * n),
            "director": obj(["Someone"] * n), "star": obj([""] * n)}
  rated = [m for m, c in _COUNTS.items() for _ in range(c)]
  ratings = {"user_id": obj([str(i) for i in range(len(rated))]),
             "movie_id": obj(rated),
             "user_rating": np.full(len(rated), 4.0, np.float32),
             "timestamp": np.arange(len(rated), dtype=np.int64)}
  return catalog_lib.Catalog(movies, {"user_id": obj(["1"])}, ratings)


def _titles(rows):
  return [r["title"] for r in rows]


def test_validate_ratings(tiny):  # pylint: disable=redefined-outer-name
  assert catalog_lib.validate_ratings(
      [{"movie_id": 3, "rating": 5}, ("1", None), {"movie_id": " 2 "},
       {"movie_id": "4", "rating": 3.5}, ("5", np.float32(1))], tiny) == [
           ("3", 5.0), ("1", None), ("2", None), ("4", 3.5), ("5", 1.0)]
  assert catalog_lib.validate_ratings([], tiny) == []
  assert catalog_lib.validate_ratings([("1", 1)] * 1 + [("2", 5)], tiny,
                                    max_ratings=2) == [("1", 1.0),
                                                       ("2", 5.0)]


@pytest.mark.parametrize("ratings,error,message", [
    ([("1", 5), {"movie_id": "99999"}], catalog_lib.UnknownMovieError,
     r"ratings\[1\]: unknown movie id '99999'"),
    ([("1", 5), ("2", 4), (1, 3)], catalog_lib.InvalidRequestError,
     r"ratings\[2\]: duplicate movie id '1' \(also ratings\[0\]\)"),
    ([("1", 0)], catalog_lib.InvalidRequestError,
     r"ratings\[0\] \(movie 1\): rating must be between 1 and 5, got 0"),
    ([("1", 6)], catalog_lib.InvalidRequestError, "between 1 and 5, got 6"),
    ([("1", 5.01)], catalog_lib.InvalidRequestError, "between 1 and 5"),
    ([("1", float("nan"))], catalog_lib.InvalidRequestError, "between 1 and 5"),
    ([("2", 4), ("1", True)], catalog_lib.InvalidRequestError,
     r"ratings\[1\] \(movie 1\): rating must be a number .* got True"),
    ([("1", "5")], catalog_lib.InvalidRequestError, "must be a number"),
    ([(True, 5)], catalog_lib.InvalidRequestError,
     "movie_id must be a string or an integer"),
    ([{"movie_id": "1", "stars": 5}], catalog_lib.InvalidRequestError,
     r"ratings\[0\]: expected \{movie_id, rating\}"),
    ([("1",)], catalog_lib.InvalidRequestError, r"ratings\[0\]: expected"),
    ([("1", 5)] * 4, catalog_lib.InvalidRequestError,
     "at most 3 ratings, got 4"),
    ("1:5", catalog_lib.InvalidRequestError, "must be a list"),
])
def test_validate_ratings_errors(tiny, ratings, error, message):  # pylint: disable=redefined-outer-name
  with pytest.raises(error, match=message):
    catalog_lib.validate_ratings(ratings, tiny, max_ratings=3)


def test_validate_ratings_default_max(tiny):  # pylint: disable=redefined-outer-name
  with pytest.raises(catalog_lib.InvalidRequestError, match="at most 500"):
    catalog_lib.validate_ratings([("1", 5)] * 501, tiny)
  with pytest.raises(catalog_lib.InvalidRequestError, match="duplicate"):
    catalog_lib.validate_ratings([("1", 5)] * 500, tiny)  # 500: counted ok


def test_search(tiny):  # pylint: disable=redefined-outer-name
  # Exact ("matrix" is "Matrix, The" without its article) first, then
  # prefixes by number of ratings.
  assert _titles(tiny.search("MATRIX")) == ["Matrix, The",
                                            "Matrix Reloaded, The"]
  assert _titles(tiny.search("the matrix")) == ["Matrix, The",
                                                "Matrix Reloaded, The"]
  # Exact, prefix, word start (by ratings: Lone Star 2 > none), anywhere.
  assert _titles(tiny.search("star")) == [
      "Star", "Star Wars: Episode IV - A New Hope", "Lone Star", "Mustard"]
  assert _titles(tiny.search("star", limit=2)) == [
      "Star", "Star Wars: Episode IV - A New Hope"]
  assert _titles(tiny.search("cafe")) == ["Café Society, The"]
  assert _titles(tiny.search("CAFÉ  society")) == ["Café Society, The"]
  assert _titles(tiny.search("schindlers")) == ["Schindler's List"]
  assert _titles(tiny.search(" star wars: episode ")) == [
      "Star Wars: Episode IV - A New Hope"]
  assert tiny.search("nothing like this") == []
  row = tiny.search("toy")[0]
  assert row == {**catalog_lib.movie_row(tiny, "4"), "num_ratings": 0}
  counts = {r["movie_id"]: r["num_ratings"] for r in tiny.search("a", 50)}
  assert counts["9"] == 5 and counts["7"] == 4 and counts["2"] == 0


@pytest.mark.parametrize("query,limit,message", [
    ("", 10, "must not be empty"), ("   ", 10, "must not be empty"),
    ("?!", 10, "no letters or digits"), ("star", 0, "limit"),
])
def test_search_errors(tiny, query, limit, message):  # pylint: disable=redefined-outer-name
  with pytest.raises(catalog_lib.InvalidRequestError, match=message):
    tiny.search(query, limit)


def test_search_fake_catalog(catalog):  # pylint: disable=redefined-outer-name
  rows = catalog.search("toy STORY")
  assert [r["movie_id"] for r in rows] == ["2"]
  assert rows[0]["num_ratings"] == int(
      np.sum(catalog.ratings["movie_id"] == "2"))
  assert [r["movie_id"] for r in catalog.search("cafe")] == ["1"]
  rows = catalog.search("movie", limit=50)
  assert len(rows) == 38  # movies 3..40
  n = [r["num_ratings"] for r in rows]
  assert n == sorted(n, reverse=True) and n[0] > n[-1]


def test_recommend_for_ratings(rec, catalog):  # pylint: disable=redefined-outer-name
  ratings = catalog_lib.validate_ratings(
      [("2", 5), ("5", 4), ("11", None)], catalog)
  rows = rec.recommend_for_ratings(ratings, k=100)
  ids = [r["movie_id"] for r in rows]
  assert rows and not {"2", "5", "11"} & set(ids)
  assert len(ids) == len(set(ids))
  # Every movie a source retrieved is there (the rated ones were dropped
  # by the sources, not just ranked low): the merged candidates.
  request = cascade.Request(history=["2", "5", "11"], ratings=[5, 4, None])
  scores = rec.graph.source_scores(rec.graph.inputs([request]))
  union = set().union(*(set(np.flatnonzero(v.numpy()[0] > 0))
                        for k, v in scores.items() if k.endswith("_rank")))
  assert len(rows) == min(rec.config.list_size, len(union), 100)
  for r in rows:
    assert isinstance(r["sources"], list) and r["sources"]
    assert r["because"] is None or set(r["because"]) == {"movie_id",
                                                         "title"}
  assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
  top = rec.recommend_for_ratings(ratings, k=3)
  assert len(top) == 3 and {"title", "predicted_rating", "score",
                            "retrieval_score"} <= set(top[0])

  demo = catalog_lib.demographic_inputs(30, "F", "writer", "94110")
  # users.dat's numeric occupation codes name the same labels (20 =
  # writer; 4 and 10, both students, the one TFDS label).
  assert catalog_lib.demographic_inputs(30, "F", "20", "94110") == demo
  assert (catalog_lib.demographic_inputs(30, "F", 4, "94110")
          == catalog_lib.demographic_inputs(30, "F", "10", "94110")
          == catalog_lib.demographic_inputs(30, "F", "Student", "94110"))
  for age in (True, 30.5):  # no bool or fraction taken as an age
    with pytest.raises(catalog_lib.InvalidRequestError,
                       match="age must be an integer"):
      catalog_lib.demographic_inputs(age, "F", "writer", "94110")
  with pytest.raises(catalog_lib.InvalidRequestError,
                     match="ML-1M code 0-20"):
    catalog_lib.demographic_inputs(30, "F", "21", "94110")
  rows = rec.recommend_for_ratings(ratings, demo, k=5)
  assert len(rows) == 5 and not {"2", "5", "11"} & {r["movie_id"]
                                                    for r in rows}
  assert len(rec.recommend_for_ratings([], demo, k=4)) == 4
  with pytest.raises(catalog_lib.InvalidRequestError,
                     match="needs ratings or demographics"):
    rec.recommend_for_ratings([], None)
  with pytest.raises(catalog_lib.InvalidRequestError, match="k must"):
    rec.recommend_for_ratings(ratings, k=0)
