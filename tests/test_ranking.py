"""Ranking stage on the generated fake data: models, plots, sampling, export.

Fast: model-building tests run eagerly on one small batch; one short MMoE
run and one DCN export go through the real train/export code and are
reloaded in a fresh process.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from ranking import evaluate, interactions, serving_model, train
from ranking.model import (DCN, MMoE, RATED, TASKS, RankingConfig,
                           ranking_features, ranking_inputs)
from tfrs_pipeline import features, runs
from tfrs_pipeline import metrics as metrics_lib

SMALL = dict(model="dcn", examples="ratings", score="engage_x_rating",
             deep_layers=(16,), expert_layers=(8,),
             tower_layers=(8,), num_experts=3, bias_tower_layers=(4,),
             batch_size=256,
             epochs=1, validation_fraction=0.1)


@pytest.fixture(scope="module")
def prepared(fake_data):
  return train.prepare(fake_data, RankingConfig(**SMALL), log=lambda *a: None)


def _batch(columns, n=64):
  return {k: tf.constant(v[:n]) for k, v in columns.items()}


def _mmoe_batch(prepared, config):
  cols = train.with_negatives(prepared.train, prepared, config, seed=0)
  order = np.random.default_rng(0).permutation(len(cols[RATED]))[:96]
  return _batch(train.take(cols, order), 96)


def _build(prepared, **overrides):
  config = RankingConfig(**{**SMALL, **overrides})
  model = (DCN(prepared.vocabularies, config, prepared.global_mean)
           if config.model == "dcn" else
           MMoE(prepared.vocabularies, config, prepared.global_mean,
                prepared.user_counts, prepared.movie_counts))
  model.compile(tf.keras.optimizers.Adam(1e-3), run_eagerly=True)
  return model, config


def _step(model, batch):
  """One eager training step; returns the logged metrics as floats."""
  return {k: float(v) for k, v in model.train_step(batch).items()}


@pytest.mark.parametrize("projection_dim", [0, 4])
@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_dcn_variants_build_and_train(prepared, projection_dim, structure):
  model, _ = _build(prepared, projection_dim=projection_dim,
                    structure=structure, cross_layers=2)
  batch = _batch(prepared.train)
  before = model(batch)["rating"].numpy()
  logs = _step(model, batch)
  assert np.isfinite(logs["loss"]) and "rmse" in logs
  after = model(batch)
  assert after["rating"].shape == (64,)
  assert not np.allclose(before, after["rating"].numpy())
  assert np.all((after["rating"] >= 1) & (after["rating"] <= 5))
  np.testing.assert_allclose(after["score"], after["rating"])
  cross = model.cross_network.cross_layers
  assert len(cross) == 2
  if projection_dim:
    assert cross[0]._dense_u.kernel.shape[1] == projection_dim
  else:
    d = model.inputs_layer.output_dim
    assert cross[0]._dense.kernel.shape == (d, d)


def test_interaction_matrix_blocks_and_png(prepared, tmp_path):
  model, _ = _build(prepared, projection_dim=4)
  model(_batch(prepared.train))
  names, matrix = interactions.model_interactions(model)
  ranking = [f.name for f in ranking_features(RankingConfig(**SMALL))]
  assert names == ranking
  assert matrix.shape == (len(ranking), len(ranking))
  assert np.all(matrix > 0)
  # Low rank: W = (U V)^T, block (i, j) = ||W[i, j]||_F.
  layer = model.cross_network.cross_layers[0]
  w = (layer._dense_u.kernel.numpy() @ layer._dense_v.kernel.numpy()).T
  s = model.inputs_layer.slices
  a, b = ranking[0], ranking[-1]
  assert matrix[0, -1] == pytest.approx(np.linalg.norm(w[s[a], s[b]]),
                                        rel=1e-5)
  # Exact on a hand-made matrix.
  toy = np.zeros((3, 3))
  toy[0, 1:] = [3.0, 4.0]
  _, m = interactions.interaction_matrix(
      toy, {"a": slice(0, 1), "b": slice(1, 3)})
  np.testing.assert_allclose(m, [[0, 5], [0, 0]])
  _, m = interactions.interaction_matrix(
      toy, {"a": slice(0, 1), "b": slice(1, 3)}, per_weight=True)
  np.testing.assert_allclose(m, [[0, 5 / np.sqrt(2)], [0, 0]])
  path = interactions.plot_heatmap(names, matrix, str(tmp_path / "h.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_mmoe_gates_sum_to_one_and_trains(prepared):
  model, config = _build(prepared, model="mmoe")
  batch = _mmoe_batch(prepared, config)
  gates = model.gate_weights(batch)
  assert set(gates) == set(TASKS)
  for g in gates.values():
    assert g.shape == (96, config.num_experts)
    np.testing.assert_allclose(tf.reduce_sum(g, axis=1), 1.0, rtol=1e-5)
  logs = _step(model, batch)
  for key in ("loss", "engagement_auc", "rating_rmse", "liked_auc"):
    assert np.isfinite(logs[key]), key
  out = model(batch)
  for key in ("rating", "score", "engagement", "liked"):
    assert out[key].shape == (96,)
  np.testing.assert_allclose(out["score"], out["engagement"] * out["rating"],
                             rtol=1e-5)


@pytest.mark.parametrize("liked_from_rating", [True, False])
def test_liked_logit_adds_affine_rating(prepared, liked_from_rating):
  model, config = _build(prepared, model="mmoe",
                         liked_from_rating=liked_from_rating)
  batch = _mmoe_batch(prepared, config)
  out = model.logits(batch)
  o, _ = model.mmoe(model.cross(model.inputs_layer(batch)[0]))
  head = tf.squeeze(model.heads["liked"](model.towers["liked"](
      o[TASKS.index("liked")])), axis=1).numpy()
  if liked_from_rating:
    layer = model.liked_from_rating
    a, b = layer.kernel.numpy()[0, 0], layer.bias.numpy()[0]
    expected = head + a * out["rating"].numpy() + b
  else:
    assert model.liked_from_rating is None
    expected = head
  np.testing.assert_allclose(out["liked"].numpy(), expected, rtol=1e-4,
                             atol=1e-5)


def test_bias_tower_in_training_only(prepared):
  model, config = _build(prepared, model="mmoe")
  batch = _mmoe_batch(prepared, config)
  model(batch)
  raw = model.logits(batch, with_bias_tower=True)
  bias = model.bias_tower(batch)
  np.testing.assert_allclose(raw["engagement_train"],
                             raw["engagement"] + bias, rtol=1e-5, atol=1e-6)
  # Changing the bias tower changes the training loss, not serving.
  served = model(batch)
  loss = model.compute_loss(batch)
  logit = model.bias_tower.logit
  logit.set_weights([w + 3.0 for w in logit.get_weights()])
  for k, v in model(batch).items():
    np.testing.assert_allclose(v, served[k], err_msg=k)
  assert abs(float(model.compute_loss(batch)) - float(loss)) > 1e-3
  # Bias features: log train counts (standardized) by id.
  feats = model.bias_tower.bias_features(
      {"movie_id": tf.constant(["no-such-movie"]),
       "user_id": tf.constant(["no-such-user"])}).numpy()
  assert feats.shape == (1, 2)


def test_negatives_exclude_rated_and_are_seeded():
  users = np.array(["u1"] * 3 + ["u2"] * 2, dtype=object)
  movies = np.array(["a", "b", "c", "a", "d"], dtype=object)
  catalog = np.array(["a", "b", "c", "d", "e", "f"], dtype=object)
  rows, idx = train.sample_negatives(users, movies, catalog, 4, seed=7)
  assert len(rows) == len(idx) == 20
  rated = set(zip(users, movies))
  for r, m in zip(rows, idx):
    assert (users[r], catalog[m]) not in rated
  rows2, idx2 = train.sample_negatives(users, movies, catalog, 4, seed=7)
  np.testing.assert_array_equal(idx, idx2)
  _, idx3 = train.sample_negatives(users, movies, catalog, 4, seed=8)
  assert not np.array_equal(idx, idx3)
  # Extra exclusions (test ratings) and popularity weights.
  _, idx4 = train.sample_negatives(
      users, movies, catalog, 50, seed=1,
      weights=np.array([1, 1, 1, 1, 1, 1e-9]),
      exclude_users=np.array(["u1", "u2"], dtype=object),
      exclude_movies=np.array(["e", "e"], dtype=object))
  assert "e" not in set(catalog[idx4])
  assert np.mean(catalog[idx4] == "f") < 0.01
  # A user who rated everything gets no negatives.
  rows5, _ = train.sample_negatives(
      np.array(["x"] * 6, dtype=object), catalog, catalog, 2, seed=0)
  assert len(rows5) == 0


def test_negative_examples_carry_user_and_movie_features(prepared):
  config = RankingConfig(**SMALL, num_negatives=2)
  cols = train.with_negatives(prepared.train, prepared, config, seed=3)
  n = len(prepared.train[features.LABEL])
  assert len(cols[RATED]) == 3 * n
  assert cols[RATED][:n].all() and not cols[RATED][n:].any()
  movies = {m: t for m, t in zip(prepared.movies["movie_id"],
                                 prepared.movies["movie_title"])}
  for i in range(n, n + 20):
    assert movies[cols["movie_id"][i].decode()] == (
        cols["movie_title"][i].decode())


_RELOAD = r"""
import json, sys
import tensorflow as tf
path, out = sys.argv[1], {}
m = tf.saved_model.load(path)
ids = json.loads(sys.argv[2])
res = m.signatures["serving_default"](user_id=tf.constant(ids["users"]),
                                      movie_id=tf.constant(ids["movies"]))
out["ids"] = {k: v.numpy().tolist() for k, v in res.items()}
sig = m.signatures["serve_features"]
print(json.dumps({"ids": out["ids"],
                  "inputs": sorted(sig.structured_input_signature[1])}))
"""


def _reload(path, users, movies):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("PYTHONPATH", None)
  done = subprocess.run(
      [sys.executable, "-c", _RELOAD, path,
       json.dumps({"users": users, "movies": movies})],
      capture_output=True, text=True, env=env, cwd="/", timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def mmoe_run(prepared, tmp_path_factory):
  """One short MMoE run through the real code (fit, evaluate, export)."""
  run = runs.RunDir(str(tmp_path_factory.mktemp("mmoe_run")))
  config = RankingConfig(**{**SMALL, "model": "mmoe"})
  runs.set_seeds(0)
  model = train.fit(config, prepared, run, log=lambda *a: None)
  metrics = train.evaluate_model(model, config, prepared,
                                    log=lambda *a: None)
  interactions.write_all(model, config, prepared, run, metrics,
                         log=lambda *a: None)
  path = serving_model.export_model(model, prepared.users, prepared.movies,
                                    prepared.latest_timestamp, run.export,
                                    log=lambda *a: None)
  return model, metrics, run, path


def test_mmoe_metrics_and_plots(mmoe_run):
  _, metrics, run, _ = mmoe_run
  for key in ("rmse", "mae", "liked_auc", "liked_log_loss", "engagement_auc",
              "engagement_log_loss", "global_mean_rmse", "spearman"):
    assert np.isfinite(metrics[key]), key
  util = metrics["gate_utilization"]
  assert set(util) == set(TASKS)
  for v in util.values():
    assert len(v) == 3 and sum(v) == pytest.approx(1.0, abs=1e-4)
  assert os.path.isfile(run.file(interactions.GATES_FILE))
  assert os.path.isfile(run.file(interactions.HEATMAP_FILE))
  assert os.path.isdir(run.logs)


def test_export_reloads_in_fresh_process_and_matches(mmoe_run, prepared):
  model, _, _, path = mmoe_run
  users = ["1", "2", "no-such-user", "3"]
  movies = ["1", "5", "7", "no-such-movie"]
  got = _reload(path, users, movies)
  want_inputs = {i.name for i in ranking_inputs(RankingConfig(**SMALL))}
  assert got["inputs"] == sorted(want_inputs)
  # Same lookups and time context in process.
  server = serving_model.RankingServer(model, prepared.users,
                                       prepared.movies,
                                       prepared.latest_timestamp)
  want = server.serving_default(tf.constant(users), tf.constant(movies))
  assert set(got["ids"]) == {"rating", "score", "engagement", "liked"}
  for k, v in want.items():
    np.testing.assert_allclose(got["ids"][k], v.numpy(), rtol=1e-4,
                               atol=1e-5, err_msg=k)
  # Unknown ids still get finite predictions in range.
  assert np.all(np.isfinite(got["ids"]["rating"]))
  assert all(1 <= r <= 5 for r in got["ids"]["rating"])
  # The id signature equals the model on the looked-up features.
  i = int(np.flatnonzero(prepared.test["user_id"] == b"1")[0]) if np.any(
      prepared.test["user_id"] == b"1") else 0
  row = {k: v[i:i + 1] for k, v in prepared.test.items()
         if k in {s.name for s in model.inputs_layer.input_specs}}
  row["timestamp"] = np.array([prepared.latest_timestamp])
  direct = model({k: tf.constant(v) for k, v in row.items()})
  via_ids = server.serving_default(tf.constant(row["user_id"]),
                                   tf.constant(row["movie_id"]))
  np.testing.assert_allclose(direct["rating"], via_ids["rating"], rtol=1e-5)


def test_dcn_evaluation_has_the_rating_metrics(prepared):
  model, config = _build(prepared)
  _step(model, _batch(prepared.train))
  got = evaluate.evaluate(model, config, prepared, None, log=lambda *a: None)
  predicted = evaluate.predict(model, prepared.test)["rating"]
  labels = prepared.test[features.LABEL]
  assert got["liked_auc"] == pytest.approx(
      metrics_lib.auc(labels >= 4, predicted))
  expected = metrics_lib.spearman_per_user(prepared.test["user_id"], labels,
                                           predicted)
  assert got["spearman_users"] == expected["spearman_users"] > 0
  assert got["spearman"] == pytest.approx(expected["spearman"])


def test_dcn_export_outputs(prepared, tmp_path):
  model, _ = _build(prepared)
  _step(model, _batch(prepared.train))
  path = serving_model.export_model(model, prepared.users, prepared.movies,
                                    prepared.latest_timestamp,
                                    str(tmp_path), log=lambda *a: None)
  loaded = tf.saved_model.load(path)
  out = loaded.signatures["serving_default"](
      user_id=tf.constant(["1", "zzz"]), movie_id=tf.constant(["2", "zzz"]))
  assert set(out) == {"rating", "score"}
  np.testing.assert_allclose(out["score"], out["rating"])
  assert out["rating"].dtype == tf.float32 and out["rating"].shape == (2,)


def test_time_budget_stops_training():
  class Stub:
    stop_training = False
  stub = Stub()
  budget = train._TimeBudget(1e-6, log=lambda *a: None)
  budget.set_model(stub)
  budget.on_train_begin()
  budget.on_epoch_end(0)
  assert stub.stop_training
  assert RankingConfig().max_train_seconds > 0
