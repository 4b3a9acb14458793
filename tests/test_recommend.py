"""Tests of `tfrs_pipeline.app.recommend` (library and CLI) on small exports.

`small_runs` builds RUNS/{retrieval,sources,ranking} once per session with
`train all` (small configurations, 1 epoch, on the fake data).
test_serving.py and test_browser.py import the fixture from here.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from tfrs_pipeline import export, export_layout, features, pipeline
from tfrs_pipeline.app import catalog as catalog_lib
from tfrs_pipeline.app import recommend_cli, recommender

_CACHE = {}



_TRAIN = """
import sys, tfrs_pipeline
from tfrs_pipeline import pipeline
from tfrs_pipeline.app import cascade, train_commands
from ranking.model import RankingConfig
from retrieval.model import RetrievalConfig
config = pipeline.DataConfig(raw_data=sys.argv[1], data_dir=sys.argv[2])
train_commands.train_all(
    sys.argv[3], config,
    RetrievalConfig(epochs=1, batch_size=256, members=2, passes_per_epoch=3),
    RankingConfig(epochs=1, lists_per_batch=16),
    cascade.CascadeConfig(two_tower=20, ease=20, ease_liked=10,
                          popularity=10, list_size=40),
    log=lambda *a: None)
"""


def _train_real(data_config, runs) -> str:
  """`train all` (retrieval, sources, ranker) with small configurations,
  in its own process (the trainers' modules define absl flags)."""
  p = subprocess.run(
      [sys.executable, "-c", _TRAIN, data_config.raw_data,
       data_config.data_dir, runs],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      timeout=900, check=False)
  if p.returncode:
    raise RuntimeError(f"trainer failed: {p.stdout[-3000:]}")
  return "real"


def small_runs_value(tmp_path_factory, fake_raw, fake_data_dir, fake_data):
  """The cached {'runs', 'raw', 'data_dir', 'kind'} (built once)."""
  if "runs" not in _CACHE:
    runs = str(tmp_path_factory.mktemp("runs"))
    config = pipeline.DataConfig(raw_data=fake_raw["path"],
                                 data_dir=fake_data_dir)
    kind = _train_real(config, runs)  # a trainer failure fails the tests
    _CACHE["runs"] = {"runs": runs, "raw": fake_raw["path"],
                      "data_dir": fake_data_dir, "kind": kind,
                      "config": config}
  return _CACHE["runs"]


@pytest.fixture(scope="session")
def small_runs(tmp_path_factory, fake_raw, fake_data_dir, fake_data):
  return small_runs_value(tmp_path_factory, fake_raw, fake_data_dir,
                          fake_data)


# --------------------------------------------------------------------------
# Library.


@pytest.fixture(scope="module")
def catalog(small_runs):
  return catalog_lib.load_catalog(export_layout.locate(
      os.path.join(small_runs["runs"], "sources"), "sources",
      catalog_lib.CATALOG_FILE), history="train")


@pytest.fixture(scope="module")
def rec(small_runs, catalog):
  return recommender.Recommender.from_runs(small_runs["runs"], catalog)


def test_recommend_known_user(rec, catalog):
  rows = rec.recommend("7", k=5)
  assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
  assert 1 <= len(rows) <= 5
  keys = {"rank", "movie_id", "title", "year", "genres", "director", "star",
          "predicted_rating", "score", "retrieval_score", "sources",
          "because", "why"}
  assert all(keys <= set(r) for r in rows)
  sources = set(features.CANDIDATE_SOURCES)
  assert all(r["sources"] and set(r["sources"]) <= sources for r in rows)
  for r in rows:  # a "because" movie is one the user rated
    if r["because"] is not None:
      assert r["because"]["movie_id"] in set(catalog.history("7"))
      assert r["why"] == f"because you liked {r['because']['title']}"
  seen = set(catalog.history("7"))
  assert seen and not seen & {r["movie_id"] for r in rows}
  scores = [r["score"] for r in rows]
  assert scores == sorted(scores, reverse=True)
  assert all(r["title"] and isinstance(r["genres"], list) for r in rows)


def test_warm_up(rec):
  seconds = rec.warm_up()
  assert 0 < seconds < 60


def test_exported_k_and_list_size(rec, catalog):
  # K of the exported index covers a two-tower request (up to all movies).
  assert rec.exported_k == min(500, len(catalog.movie_row))
  assert rec.exported_k >= rec.config.two_tower
  assert rec.info()["num_candidates"] == rec.config.list_size
  ids, scores = rec.retrieve(["1", "2"])
  assert ids.shape == scores.shape == (2, rec.exported_k)
  # A request for N two-tower candidates gets N (none excluded here).
  request = rec.known_request("7")
  scores = rec.graph.source_scores(rec.graph.inputs([request]))
  excluded = len(set(request.history) | set(request.exclude))
  wanted = min(rec.config.two_tower, len(catalog.movie_row) - excluded)
  assert int((scores["two_tower_rank"].numpy()[0] > 0).sum()) == wanted


def test_cold_start_and_validation(rec):
  rows = rec.recommend_new_user(30, "f", "Writer", "94110-1234", k=3)
  assert len(rows) == 3 and rows[0]["title"]
  assert catalog_lib.demographic_inputs(30, "f", "writer", "94110") == {
      "bucketized_user_age": "25", "user_gender": "F",
      "user_occupation_label": "writer", "user_zip_code": "94110"}
  for args, message in (((0, "F", "writer", "94110"), "age"),
                        ((30, "X", "writer", "94110"), "gender"),
                        ((30, "F", "astronaut", "94110"), "occupation"),
                        ((30, "F", "\u00b2", "94110"), "occupation"),
                        ((30, "F", "writer", "9411"), "zip"),
                        ((30, None, "writer", "94110"), "missing: gender")):
    with pytest.raises(catalog_lib.InvalidRequestError, match=message):
      catalog_lib.demographic_inputs(*args)


def test_unknown_user_and_bad_k(rec):
  with pytest.raises(catalog_lib.UnknownUserError):
    rec.recommend("999999")
  for k in (0, 101):
    with pytest.raises(catalog_lib.InvalidRequestError, match="k must"):
      rec.recommend("7", k=k)


def test_similar(rec):
  rows = rec.similar("1", k=5)
  assert len(rows) == 5 and "1" not in {r["movie_id"] for r in rows}
  sims = [r["similarity"] for r in rows]
  assert sims == sorted(sims, reverse=True) and sims[0] <= 1.0 + 1e-5
  with pytest.raises(catalog_lib.UnknownMovieError):
    rec.similar("nope")


def test_recent_ratings(catalog):
  ratings = catalog.recent_ratings("7", limit=3)
  assert len(ratings) == 3
  ts = [r["timestamp"] for r in ratings]
  assert ts == sorted(ts, reverse=True)
  assert {"title", "director", "star", "rating"} <= set(ratings[0])


def test_format_table():
  long = "A very long title " * 3
  rows = [{"rank": 1, "movie_id": "7", "title": long.strip(), "year": 1995,
           "genres": ["Comedy", "Drama"], "director": None,
           "star": "Arnold Schwarzenegger", "score": 0.5, "why": "popular"}]
  full = recommend_cli.format_table(rows, ("score",), texts=("why",))
  lines = full.splitlines()
  assert len(lines) == 2 and lines[0].split()[-2:] == ["score", "why"]
  assert long.strip() in lines[1] and "Arnold Schwarzenegger" in lines[1]
  assert "Comedy|Drama" in lines[1] and " - " in lines[1]
  assert "…" not in full and lines[1].endswith("0.500  popular")
  # A terminal 100 wide: the widest text column (the title) is cut, the
  # numbers, ids and the other columns are not; every line fits.
  lines = recommend_cli.format_table(rows, ("score",), width=100,
                                     texts=("why",)).splitlines()
  assert all(len(line) <= 100 for line in lines), lines
  assert "…" in lines[1] and "0.500" in lines[1] and "1995" in lines[1]
  assert "Arnold Schwarzenegger" in lines[1]  # not the widest: kept
  # Too narrow for the 8-character floor: cut to it, no further.
  lines = recommend_cli.format_table(rows, ("score",), width=10,
                                     texts=("why",)).splitlines()
  assert "A very …" in lines[1] and "Arnold …" in lines[1]


# --------------------------------------------------------------------------
# CLI: in-process through `cli.run` (absl flags reset between calls), and
# one real subprocess for the exit status of an expected error.


def _flags(small_runs):
  return [f"--runs={small_runs['runs']}"]


def _run_cli(small_runs, capsys, *args):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tfrs_pipeline.app import cli  # pylint: disable=g-import-not-at-top
  flags.FLAGS.unparse_flags()
  capsys.readouterr()
  try:
    cli.run(["tfrs-pipeline", *args, *_flags(small_runs)])
    code = 0
  except SystemExit as e:
    code = e.code or 0
  out = capsys.readouterr()
  return code, out.out, out.err


def test_cli(small_runs, capsys):
  proc = subprocess.Popen(
      [sys.executable, "-c", "from tfrs_pipeline.app import cli; cli.run()",
       "recommend", "--user_id=424242", *_flags(small_runs)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

  code, stdout, stderr = _run_cli(small_runs, capsys, "recommend",
                                  "--user_id=7", "--k=4", "--json")
  assert code == 0, stderr
  rows = json.loads(stdout)
  assert len(rows) == 4
  assert {"movie_id", "title", "year", "genres", "director", "star",
          "predicted_rating", "retrieval_score"} <= set(rows[0])

  code, stdout, stderr = _run_cli(
      small_runs, capsys, "recommend", "--age=30", "--gender=M",
      "--occupation=programmer", "--zip=10001", "--k=3")
  assert code == 0, stderr
  lines = stdout.strip().splitlines()
  assert lines[0] == "Top 3 for a new user: M 25-34 programmer", stdout
  assert lines[1].split()[:4] == ["#", "movie", "title", "year"]
  assert lines[1].split()[-4:] == ["rating", "score", "two_tower", "why"]
  assert "director" in lines[1] and lines[5] == ""
  assert lines[6].startswith("score: the ranker's score, log P(watched "
                             "among the candidates) + log P(liked)")
  assert "two_tower: the retrieval model's score" in stdout
  assert "…" not in stdout  # not a terminal: full text
  assert stderr.startswith("[recommend] loading the exports under ")
  assert "(split random, history all)" in stderr and "loaded in" in stderr

  code, stdout, stderr = _run_cli(small_runs, capsys, "similar",
                                  "--movie_id=2", "--k=3")
  assert code == 0, stderr
  lines = stdout.strip().splitlines()
  assert lines[0].startswith("Movies most similar to 2: Toy Story"), stdout
  assert "similarity" in lines[1] and len(lines) == 5
  assert "Toy Story" not in "\n".join(lines[1:])  # movie 2: excluded

  for args, message in (
      (("recommend", "--user_id=424242", "--age=30", "--gender=M",
        "--occupation=astronaut", "--zip=10001"),
       "unknown occupation 'astronaut'"),
      (("recommend", "--user_id=7", "--k=0"), "k must be"),
      (("recommend",), "pass --user_id"),
      (("similar", "--movie_id=nope"), "unknown movie id 'nope'")):
    code, stdout, stderr = _run_cli(small_runs, capsys, *args)
    last = stderr.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: "), stderr
    assert message in last and "Traceback" not in stderr

  # The split is the runs' own: one that contradicts them is refused.
  code, stdout, stderr = _run_cli(small_runs, capsys, "recommend",
                                  "--user_id=7", "--split=temporal")
  assert code == 2 and stderr.strip().startswith(
      "error: --split temporal contradicts the runs: "), stderr
  code, stdout, stderr = _run_cli(small_runs, capsys, "recommend",
                                  "--user_id=7", "--k=2", "--split=random")
  assert code == 0 and stdout.startswith("Top 2 for user 7 ("), stderr

  stdout, stderr = proc.communicate(timeout=240)
  assert proc.returncode == 2, stderr
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("error: unknown user id '424242'"), stderr
  assert "Traceback" not in stderr


def test_cli_ratings(small_runs, capsys):
  code, stdout, stderr = _run_cli(small_runs, capsys, "recommend",
                                  "--ratings=2:5, 5:4,11", "--k=100",
                                  "--json")
  assert code == 0, stderr
  rows = json.loads(stdout)
  assert rows and not {"2", "5", "11"} & {r["movie_id"] for r in rows}
  assert all("sources" in r and "because" in r for r in rows)

  code, stdout, stderr = _run_cli(small_runs, capsys, "recommend",
                                  "--ratings=2:5,5:4.5,11:", "--k=3")
  assert code == 0, stderr
  lines = stdout.strip().splitlines()
  assert lines[0] == "Top 3 for a new user with 3 ratings", stdout
  lines = lines[1:5]
  assert lines[0].split()[:4] == ["#", "movie", "title", "year"]
  assert lines[0].split()[-1] == "why"
  # The why column: the rated movie that brought it, else its sources.
  whys = ("because you liked ", "two-tower", "similar to", "popular")
  assert all(any(w in line for w in whys) for line in lines[1:]), stdout
  assert not {"2", "5", "11"} & {line.split()[1] for line in lines[1:]}

  code, stdout, stderr = _run_cli(
      small_runs, capsys, "recommend", "--ratings=2:5", "--age=30",
      "--gender=F", "--occupation=writer", "--zip=94110", "--k=2", "--json")
  assert code == 0, stderr
  rows = json.loads(stdout)
  assert len(rows) == 2 and "2" not in {r["movie_id"] for r in rows}

  for args, message in (
      (("--ratings=2:5,99999",), "ratings[1]: unknown movie id '99999'"),
      (("--ratings=2:5,2:4",), "ratings[1]: duplicate movie id '2'"),
      (("--ratings=2:0",), "rating must be between 1 and 5, got 0"),
      (("--ratings=2:6",), "rating must be between 1 and 5, got 6"),
      (("--ratings=2:five",), "--ratings entry '2:five': rating must be a "
       "number from 1 to 5, got 'five'"),
      (("--ratings=2,,5",), "--ratings: entry 2 is empty"),
      (("--ratings=",), "--ratings is empty"),
      (("--ratings=" + ",".join(str(i) for i in range(501)),),
       "at most 500 ratings, got 501"),
      (("--ratings=2", "--user_id=7"), "pass --user_id or --ratings, not "
       "both"),
      (("--ratings=2", "--age=30"), "missing: gender, occupation, zip")):
    code, stdout, stderr = _run_cli(small_runs, capsys, "recommend", *args)
    last = stderr.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: "), stderr
    assert message in last and "Traceback" not in stderr, stderr
