"""The bench's zoo section: its tables from generated data and canned
section results (tfrs_pipeline/app/bench_zoo.py)."""

import dataclasses

import pytest
from absl import flags

from data import raw, splits
from ranking import model as kmodel
from tfrs_pipeline.app import bench, bench_common, bench_sections, bench_zoo
from tfrs_pipeline.app import cli, flag_specs


@pytest.fixture(scope="module")
def frames_and_movies(fake_raw):
  data = raw.load_raw(fake_raw["path"])
  examples = raw.ratings_examples(data)
  test = splits.test_mask(data.ratings, "random")
  frames = bench_common.Frames(
      train=examples[~test].reset_index(drop=True),
      test=examples[test].reset_index(drop=True),
      movie_ids=list(data.movies.movie_id))
  return frames, data.movies


def _canned_report(skip=()):
  names = [n for n in bench_zoo.ranking_configs(kmodel.RankingConfig())
           if n not in skip]
  models = {n: {"rmse": 0.9, "mae": 0.7, "spearman": 0.3, "liked_auc": 0.75,
                "train_seconds": 10.0} for n in names}
  methods = {f"two_stage/{n}": {"ndcg_at_10": 0.3} for n in kmodel.MODELS
             if n not in skip}
  return {
      "retrieval": {"model": {k: 0.1 for k in bench_zoo.TOP_N_KEYS}
                    | {"training_seconds": 50.0}},
      "ranking": {"models": models, "rows": [
          {"name": "global mean", "rmse": 1.1, "mae": 0.9, "seconds": 0.1},
          {"name": "biased MF (d64, validation-selected)", "rmse": 0.87,
           "mae": 0.68, "liked_auc": 0.7, "seconds": 9.0},
          {"name": "TFRS-tutorial DCN, seed 0", "rmse": 0.94}]},
      "e2e": {"quality": {"methods": methods}},
  }


def test_tables_list_every_model_and_column(frames_and_movies):
  frames, movies = frames_and_movies
  report = _canned_report()
  top_n, validation = bench_zoo.classical_rows(
      frames, movies, ease_l2=(10.0, 100.0), ks=(5,), shrinkages=(0.0, 5.0))
  assert len(validation["item_knn"]) == len(validation["user_knn"]) == 2
  assert len(validation["ease"]) == 2
  two_tower, notes = bench_zoo.two_tower_row(report)
  assert not notes
  ranking, notes = bench_zoo.ranking_rows(
      report, joint={"rmse": 0.95, "mae": 0.75, "spearman": 0.2,
                     "liked_auc": 0.7, "training_seconds": 30.0})
  assert not notes
  z = {"top_n": two_tower + top_n, "ranking": ranking, "notes": []}
  text = "\n".join(bench_zoo.markdown(z))
  header_lines = [l for l in text.splitlines() if l.startswith("| name")]
  assert header_lines == [
      "| " + " | ".join(bench_zoo.TOP_N_COLUMNS) + " |",
      "| " + " | ".join(bench_zoo.RANKING_COLUMNS) + " |"]
  for name in ("two-tower", "content-based", "item-kNN", "user-kNN",
               "EASE (lambda=", "popularity"):
    assert f"| {name}" in text, name
  ranking_names = {r["name"] for r in ranking}
  assert set(kmodel.MODELS) <= ranking_names
  assert {"joint (rating head)", "global mean"} <= ranking_names
  assert not any(n.startswith("TFRS-tutorial") for n in ranking_names)
  for row in ranking[:len(kmodel.MODELS)]:
    assert row["two_stage_ndcg_at_10"] == 0.3
  for row in top_n:
    assert set(bench_zoo.TOP_N_KEYS) <= set(row), row["name"]
    assert 0 <= row["ndcg_at_10"] <= 1


def test_a_missing_model_is_skipped_with_a_line():
  missing = kmodel.MODELS[-1]
  ranking, notes = bench_zoo.ranking_rows(_canned_report(skip=(missing,)))
  assert missing not in {r["name"] for r in ranking}
  assert any(n.startswith(f"{missing}: skipped") for n in notes)
  text = "\n".join(bench_zoo.markdown(
      {"top_n": [], "ranking": ranking, "notes": notes}))
  assert f"- {missing}: skipped" in text
  _, notes = bench_zoo.two_tower_row({})
  assert notes and "skipped" in notes[0]
  configs, notes = bench_zoo.neumf_configs()
  if "neumf" in kmodel.MODELS:
    assert [c.neumf_loss for c in configs.values()] == ["bpr", "logloss"]
  else:
    assert not configs and "skipped" in notes[0]


def test_ranking_section_trains_every_registered_model():
  base = kmodel.RankingConfig(examples="ratings")
  configs = bench_zoo.ranking_configs(base)
  assert list(configs)[:len(kmodel.MODELS)] == list(kmodel.MODELS)
  for name, model, field in bench_zoo.ABLATIONS:
    if name in configs:
      assert configs[name].model == model
      assert getattr(configs[name], field) is False
  assert all(c.examples == "ratings" for c in configs.values())


def test_sections_zoo_is_accepted_by_the_bench_flags():
  assert "zoo" in bench.SECTIONS
  assert bench_sections.zoo_section is bench_zoo.zoo_section
  flag_specs.define(cli.COMMANDS[("bench",)].flags())
  try:
    flags.FLAGS(["prog", "--sections=ranking,zoo"])
    assert flags.FLAGS.sections == ["ranking", "zoo"]
    assert "zoo" in flags.FLAGS["sections"].default
  finally:
    flags.FLAGS.unparse_flags()
  ctx = bench_sections.Context(data_config=None, out_dir="x", flags=None)
  assert dataclasses.fields(ctx)[-1].name == "report" and ctx.report == {}
