"""Wide & Deep and DeepFM rankers on the generated data.

Each model trains through the real code in both example modes (ratings:
`train.fit`; candidate lists: `train.fit_lists` on lists cut from the
ratings, with made-up source features), is exported and reloaded in one
fresh process that must give the in-process server's outputs. The
ablation flags and the crosses' config checks are checked eagerly.
"""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from ranking import deepfm, serving_model, train, widedeep
from ranking.model import LIST_MASK, RankingConfig, WideDeep, build_model
from tfrs_pipeline import errors, features, runs

SMALL = dict(examples="ratings", deep_layers=(16,), batch_size=128,
             epochs=1, validation_fraction=0.1, max_train_seconds=0,
             fm_dim=4, lists_per_batch=8)
MODELS = ("widedeep", "deepfm")
LIST_SIZE = 5


def _quiet(*_):
  pass


@pytest.fixture(scope="module")
def prepared(fake_data):
  return train.prepare(fake_data, RankingConfig(**SMALL), log=_quiet)


def _context(prepared):
  return train.ListContext(
      prepared.vocabularies, prepared.global_mean, prepared.user_counts,
      prepared.movie_counts, prepared.movies, prepared.users,
      prepared.latest_timestamp)


def _lists(prepared):
  """Lists of LIST_SIZE candidates: each list's user (and time) from its
  first rating, the movies and labels of LIST_SIZE consecutive ratings,
  seeded random source scores and ranks, the last candidate padding."""
  cols = prepared.train
  n = len(cols[features.LABEL]) // LIST_SIZE
  user_side = {i.name for i in features.INPUTS
               if i.entity in (features.USER, features.CONTEXT)}
  users = {k: v[:n * LIST_SIZE:LIST_SIZE] for k, v in cols.items()
           if k in user_side}
  cands = {k: v[:n * LIST_SIZE].reshape(n, LIST_SIZE) for k, v in
           cols.items() if k not in user_side}
  rng = np.random.default_rng(0)
  for spec in features.entity_inputs(features.SOURCE):
    cands[spec.name] = (rng.integers(0, 9, (n, LIST_SIZE)).astype(np.float32)
                        if spec.name.endswith("_rank") else
                        rng.normal(size=(n, LIST_SIZE)).astype(np.float32))
  mask = np.ones((n, LIST_SIZE), np.float32)
  mask[:, -1] = 0.0
  cands[LIST_MASK] = mask
  cands[features.LABEL] = (cands[features.LABEL] * mask).astype(np.float32)
  return train.Lists(users, cands)


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
  """{(model, examples): (model, export path)} trained and exported."""
  out = {}
  for name, examples in itertools.product(MODELS, ("ratings", "lists")):
    config = RankingConfig(**{**SMALL, "model": name, "examples": examples})
    run = runs.RunDir(str(tmp_path_factory.mktemp(f"{name}_{examples}")))
    if examples == "ratings":
      model = train.fit(config, prepared, run, log=_quiet)
      path = serving_model.export_model(
          model, prepared.users, prepared.movies, prepared.latest_timestamp,
          run.export, log=_quiet)
    else:
      model, val = train.fit_lists(config, _lists(prepared),
                                   _context(prepared), run, log=_quiet)
      assert np.isfinite(val["ndcg_at_10"])
      path = train.export_lists_model(model, _context(prepared), run,
                                      log=_quiet)
    out[name, examples] = (model, path)
  return out


_RELOAD = r"""
import json, sys
import numpy as np
import tensorflow as tf
req = json.loads(sys.argv[1])
out = {}
for key, path in req["paths"].items():
  m = tf.saved_model.load(path)
  res = m.signatures["serving_default"](
      user_id=tf.constant(req["users"]), movie_id=tf.constant(req["movies"]))
  got = {"ids": {k: v.numpy().tolist() for k, v in res.items()}}
  if "lists" in key:
    lists = {k: tf.constant(np.asarray(v, dtype=req["dtypes"][k]))
             for k, v in req["lists"].items()}
    res = m.signatures["rank_lists"](**lists)
    got["lists"] = {k: v.numpy().tolist() for k, v in res.items()}
  out[key] = got
print(json.dumps(out))
"""


def _list_request(server, prepared):
  """`rank_lists` inputs of two users' 3 candidates (numpy)."""
  users = ["1", "2"]
  user_rows = server.user_table(tf.constant(users))
  out = {}
  for spec in server.list_inputs:
    if spec.name == "movie_id":
      out[spec.name] = np.array([["1", "2", "3"], ["4", "5", "zzz"]])
    elif serving_model.per_candidate(spec):
      out[spec.name] = np.arange(6, dtype=np.float32).reshape(2, 3) % 4
    elif spec.name == "timestamp":
      out[spec.name] = np.full(2, prepared.latest_timestamp, np.int64)
    else:
      out[spec.name] = user_rows[spec.name].numpy().astype(str)
  return out


def test_exports_reload_in_a_fresh_process_and_match(trained, prepared):
  users, movies = ["1", "2", "no-such-user"], ["1", "5", "no-such-movie"]
  servers, lists = {}, None
  for key, (model, _) in trained.items():
    servers[key] = serving_model.RankingServer(
        model, prepared.users, prepared.movies, prepared.latest_timestamp)
  lists = _list_request(servers[MODELS[0], "lists"], prepared)
  req = {"paths": {"/".join(k): p for k, (_, p) in trained.items()},
         "users": users, "movies": movies,
         "lists": {k: v.tolist() for k, v in lists.items()},
         "dtypes": {k: str(v.dtype) if v.dtype.kind != "U" else "str"
                    for k, v in lists.items()}}
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("PYTHONPATH", None)
  done = subprocess.run([sys.executable, "-c", _RELOAD, json.dumps(req)],
                        capture_output=True, text=True, env=env, cwd="/",
                        timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  got = json.loads(done.stdout.strip().splitlines()[-1])
  for key, server in servers.items():
    name = "/".join(key)
    want = server.serving_default(tf.constant(users), tf.constant(movies))
    assert set(got[name]["ids"]) == {"rating", "score"}, name
    for k, v in want.items():
      np.testing.assert_allclose(got[name]["ids"][k], v.numpy(), rtol=1e-4,
                                 atol=1e-5, err_msg=f"{name} {k}")
    assert all(1 <= r <= 5 for r in got[name]["ids"]["rating"])
    if key[1] == "lists":
      want = server.rank_lists({k: tf.constant(v) for k, v in lists.items()})
      for k, v in want.items():
        assert v.shape == (2, 3)
        np.testing.assert_allclose(got[name]["lists"][k], v.numpy(),
                                   rtol=1e-4, atol=1e-5,
                                   err_msg=f"{name} {k}")
      # The list score is its own head (listwise loss), not the rating.
      assert not np.allclose(want["score"], want["rating"])


def test_rating_models_learn_and_report_rating_metrics(trained, prepared):
  for name in MODELS:
    model, _ = trained[name, "ratings"]
    history = model.fit_result.history
    assert np.isfinite(history["val_rating_rmse"][0]), name
    # The wide / FM weights moved away from their zero start.
    side = model.wide if name == "widedeep" else model.fm
    assert any(np.abs(w.numpy()).max() > 0 for w in side.trainable_weights)


def _batch(prepared, n=32):
  return {k: tf.constant(v[:n]) for k, v in prepared.train.items()}


@pytest.mark.parametrize("name,flag", [("widedeep", "wide"),
                                       ("deepfm", "fm")])
def test_ablation_removes_the_side_part(prepared, name, flag):
  full = build_model(RankingConfig(**{**SMALL, "model": name}),
                     prepared.vocabularies, prepared.global_mean)
  deep = build_model(RankingConfig(**{**SMALL, "model": name, flag: False}),
                     prepared.vocabularies, prepared.global_mean)
  batch = _batch(prepared)
  full(batch)
  deep(batch)
  count = lambda m: sum(int(np.prod(w.shape)) for w in m.trainable_weights)
  assert count(deep) < count(full)
  side = getattr(full, flag)
  assert getattr(deep, flag) is None
  # Same shared layers: the outputs differ by exactly the side part.
  for layer in ("inputs_layer", "deep", "head"):
    getattr(deep, layer).set_weights(getattr(full, layer).get_weights())
  rng = np.random.default_rng(0)
  side.set_weights([rng.normal(scale=0.1, size=w.shape).astype(np.float32)
                    for w in side.get_weights()])
  x0 = full.inputs_layer(batch)[0]
  extra = (side(batch)[0] if flag == "wide" else side(batch, x0)[0])
  got = full(batch)["rating_raw"] - deep(batch)["rating_raw"]
  assert np.abs(got.numpy()).max() > 1e-3
  np.testing.assert_allclose(got, extra[:, 0], rtol=1e-4, atol=1e-5)


def test_fm_pairwise_term_is_the_sum_over_pairs():
  v = np.random.default_rng(1).normal(size=(3, 5, 4)).astype(np.float32)
  want = np.zeros((3,))
  for f in range(5):
    for g in range(f + 1, 5):
      want += (v[:, f] * v[:, g]).sum(axis=1)
  got = tf.reduce_sum(deepfm.pairwise_interactions(tf.constant(v)), axis=1)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_crossed_weights_are_looked_up_by_value_pair(prepared):
  model = WideDeep(prepared.vocabularies, RankingConfig(
      **SMALL, model="widedeep",
      wide_crosses=("user_gender:movie_genres",)), prepared.global_mean)
  batch = _batch(prepared, 4)
  model(batch)
  crossed = model.wide.crossed
  table = crossed.tables[0]
  size = int(table.embeddings.shape[0])
  table.set_weights([np.arange(size, dtype=np.float32)[:, None]])
  gender, genres = crossed.crosses[0]
  g = gender.ids(batch).numpy()
  tokens = genres.ids(batch).to_list()
  want = [np.mean([g[i] * genres.vocabulary_size + t for t in row if t])
          for i, row in enumerate(tokens)]
  got, _ = crossed(batch)
  np.testing.assert_allclose(got[:, 0], want, rtol=1e-6)


def test_crosses_must_name_spec_features(prepared):
  with pytest.raises(errors.ConfigError, match="no_such_feature"):
    RankingConfig(model="widedeep",
                  wide_crosses=("user_age:no_such_feature",))
  with pytest.raises(errors.ConfigError, match="not a pair"):
    RankingConfig(wide_crosses=("user_age",))
  with pytest.raises(errors.ConfigError, match="numeric"):
    widedeep.parse_crosses(["user_age:two_tower_score"])
  # A spec feature the model does not read (retrieval only).
  with pytest.raises(errors.ConfigError, match="extra_features"):
    WideDeep(prepared.vocabularies, RankingConfig(
        **SMALL, model="widedeep", wide_crosses=("user_history:movie_id",)),
             prepared.global_mean)
