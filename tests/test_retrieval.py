"""Retrieval stage on small generated data (`tests/fakedata.py`).

One module-scoped fixture builds the TFDS dataset and trains a 2-epoch
model once (the export is reused by several tests); a second run resumes
from a checkpoint in its own run directory.
"""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

sys.path.insert(0, os.path.dirname(__file__))
import fakedata  # noqa: E402  pylint: disable=g-import-not-at-top

from retrieval import evaluate  # noqa: E402
from retrieval import model as model_lib  # noqa: E402
from retrieval import train  # noqa: E402
from tfrs_pipeline import export_layout, features, pipeline  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Unit tests below feed rating batches (`examples="rating"`); the training
# runs use the default, user examples.
FAST = dict(examples="rating", batch_size=64, eval_sample=50,
            history_length=8, hidden_units=(32,), embedding_dim=16,
            top_k=100)
USERS = dict(FAST, examples="user", batch_size=16, passes_per_epoch=2)


def _quiet(*_):
  pass


def _model(data, config):
  """A RetrievalModel over the fake data's vocabularies and movies."""
  return model_lib.RetrievalModel(
      config, data.vocabularies,
      model_lib.candidate_frequencies(data.train_ratings.movie_id),
      corpus=data.table("movies"))


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
  """(DataConfig, Data) of a generated raw dataset (TFDS built once)."""
  root = tmp_path_factory.mktemp("retrieval_fake")
  fakedata.write_raw_dir(str(root / "raw"))
  config = pipeline.DataConfig(raw_data=str(root / "raw"),
                               data_dir=str(root / "tfds"), history_length=8)
  return config, pipeline.load_data(config, log=_quiet)


@pytest.fixture(scope="module")
def data_config(fake):
  return fake[0]


@pytest.fixture(scope="module")
def data(fake):
  return fake[1]


@pytest.fixture(scope="module")
def trained(data_config, tmp_path_factory):
  """A run interrupted after epoch 1, then resumed in the same RUN."""
  run_dir = str(tmp_path_factory.mktemp("retrieval_run") / "run")
  config = train.RetrievalConfig(epochs=2, learning_rate=0.01, members=2,
                                 **USERS)
  first_logs, logs = [], []
  first = train.train_and_evaluate(dataclasses.replace(config, epochs=1),
                                   data_config, run_dir, log=first_logs.append)
  result = train.train_and_evaluate(config, data_config, run_dir,
                                    log=logs.append)
  return dict(run_dir=run_dir, result=result, logs=logs, config=config,
              first=first, first_logs=first_logs)


def _batch(data, n=16):
  return next(iter(data.train.batch(n)))


# ---------------------------------------------------------------------------
# Features and towers.


def test_user_history_excludes_target_and_test(data):
  train_pairs = set(zip(data.train_ratings.user_id,
                        data.train_ratings.movie_id))
  for x in data.train.take(200):
    history = x["user_history"].numpy().decode().split("|")
    user, movie = x["user_id"].numpy().decode(), x["movie_id"].numpy().decode()
    assert movie not in history
    assert all((user, m) in train_pairs for m in history if m)
    assert len(history) <= data.history_length
  # Retrieval trains on the fit part's histories; the served users table
  # holds every train movie (the ranker's label ratings too), never a
  # test one.
  fit_users = data.table("fit_users")
  for user, history in zip(fit_users["user_id"], fit_users["user_history"]):
    assert all((user, m) in train_pairs for m in history.split("|") if m)
  seen_pairs = set(zip(data.seen_ratings.user_id, data.seen_ratings.movie_id))
  assert len(seen_pairs) > len(train_pairs)
  users = data.table("users")
  assert "user_history" in users
  for user, history in zip(users["user_id"], users["user_history"]):
    assert all((user, m) in seen_pairs for m in history.split("|") if m)
  # The user_history feature shares the movie_id vocabulary.
  vocab = data.vocabularies.vocab
  assert vocab["user_history"] == vocab["movie_id"]


def test_tower_shapes(data):
  config = train.RetrievalConfig(**FAST, members=1)
  model = _model(data, config)
  batch = _batch(data)
  query = model.query_model(batch)
  candidate = model.candidate_model(batch)
  assert query.shape == (16, 16) and candidate.shape == (16, 16)
  np.testing.assert_allclose(np.linalg.norm(query.numpy(), axis=1), 1.0,
                             rtol=1e-4)
  # Both towers are built from the spec only.
  assert [f.name for f in model.query_model.encoder.features] == [
      f.name for f in features.features_for(features.QUERY)]
  assert [f.name for f in model.candidate_model.encoder.features] == [
      f.name for f in features.features_for(features.CANDIDATE)]
  assert "user_history" in model.query_model.encoder.slices


@pytest.mark.parametrize("options", [
    dict(negatives="in_batch", logq_correction=True, num_hard_negatives=4,
         embedding_l2=1e-4, dropout=0.1, corpus_negatives=16),
    dict(negatives="in_batch", logq_correction=False,
         remove_accidental_hits=False, normalize=False, temperature=0.0,
         hidden_units=()),
    dict(negatives="corpus", history_dropout=0.5, temperature=0.1),
])
def test_loss_options_train(data, options):
  config = train.RetrievalConfig(**{**FAST, **options})
  model = _model(data, config)
  tf.keras.utils.set_random_seed(0)
  batches = data.train.batch(64)
  fixed = next(iter(batches))
  before = float(model.compute_loss(fixed))
  model.compile(tf.keras.optimizers.Adam(0.01))
  history = model.fit(batches, epochs=3, verbose=0)
  assert all(np.isfinite(history.history["loss"]))
  assert float(model.compute_loss(fixed)) < before


def test_corpus_softmax_is_full_cross_entropy():
  rng = np.random.default_rng(0)
  query = rng.normal(size=(5, 3)).astype(np.float32)
  corpus = rng.normal(size=(7, 3)).astype(np.float32)
  positions = np.array([0, 6, 3, -1, 2])
  loss = float(model_lib.CorpusSoftmax(temperature=0.5)(
      tf.constant(query), tf.constant(corpus), tf.constant(positions)))
  scores = query @ corpus.T / 0.5
  log_softmax = scores - np.log(np.exp(scores).sum(1, keepdims=True))
  # The query whose positive is not in the corpus (-1) is ignored.
  expected = -sum(log_softmax[i, p] for i, p in enumerate(positions)
                  if p >= 0)
  assert loss == pytest.approx(expected, rel=1e-5)


def test_corpus_softmax_model_sees_every_movie(data):
  """negatives=corpus: the loss of a batch is the full softmax over all
  movies of the movies table."""
  config = train.RetrievalConfig(**{**FAST, "history_dropout": 0.0,
                                    "members": 1})
  movies = data.table("movies")
  model = _model(data, config)
  batch = _batch(data)
  loss = float(model.compute_loss(batch))
  query = model.query_model(batch).numpy()
  corpus = model_lib.embed(model.candidate_model, movies)
  scores = query @ corpus.T / config.temperature
  row = {m: i for i, m in enumerate(movies["movie_id"])}
  targets = [row[m.decode()] for m in batch["movie_id"].numpy()]
  log_softmax = scores - np.log(np.exp(scores).sum(1, keepdims=True))
  expected = -log_softmax[np.arange(len(targets)), targets].sum()
  assert loss == pytest.approx(expected, rel=1e-4)


def test_ensemble_concatenates_members_and_sums_their_losses(data):
  config = train.RetrievalConfig(**FAST, members=3, history_dropout=0.0)
  movies = data.table("movies")
  model = _model(data, config)
  batch = _batch(data)
  query = model.query_model(batch).numpy()
  assert query.shape == (16, 3 * 16) == (16, config.output_dim)
  assert model.query_model.embedding_dim == config.output_dim
  members = [(q(batch).numpy(), model_lib.embed(c, movies))
             for q, c in zip(model.query_towers, model.candidate_towers)]
  np.testing.assert_allclose(query, np.concatenate([q for q, _ in members],
                                                   1), rtol=1e-5)
  # Members start apart (independent initialization).
  assert not np.allclose(members[0][0], members[1][0])
  # Served score = sum of the members' scores.
  corpus = model_lib.embed(model.candidate_model, movies)
  np.testing.assert_allclose(query @ corpus.T,
                             sum(q @ c.T for q, c in members), rtol=1e-4,
                             atol=1e-5)
  # Loss = sum of each member's own full softmax loss.
  row = {m: i for i, m in enumerate(movies["movie_id"])}
  targets = [row[m.decode()] for m in batch["movie_id"].numpy()]
  expected = 0.0
  for q, c in members:
    scores = q @ c.T / config.temperature
    log_softmax = scores - np.log(np.exp(scores).sum(1, keepdims=True))
    expected -= log_softmax[np.arange(len(targets)), targets].sum()
  assert float(model.compute_loss(batch)) == pytest.approx(expected,
                                                           rel=1e-4)


def test_user_examples_list_each_users_train_movies(data):
  model = _model(data, train.RetrievalConfig(**USERS))
  movies = data.table("movies")["movie_id"]
  vocab = ["", "[UNK]"] + data.vocabularies.vocab["user_history"]
  rated = data.train_ratings.groupby("user_id").movie_id.apply(set)
  seen = set()
  for x in model.user_examples(data.fit_users):
    user = x["user_id"].numpy().decode()
    ids = x["user_history_ids"].numpy()
    positions = x["history_positions"].numpy()
    assert len(ids) == len(positions)
    # Ids (history vocabulary) and positions (corpus rows) name the same
    # movies: the user's most recent `history_length` train movies.
    history = [movies[p] for p in positions]
    assert [vocab[i] for i in ids] == history
    assert set(history) <= rated[user]
    assert len(set(history)) == min(data.history_length, len(rated[user]))
    seen.add(user)
  # Users without train ratings are not examples.
  assert seen == set(rated.index)


def test_user_loss_is_the_softmax_of_held_out_movies_given_the_rest(data):
  config = train.RetrievalConfig(**USERS, members=1, dropout=0.0)
  model = _model(data, config)
  batch = next(iter(model.user_examples(data.fit_users).batch(6)))
  ids, positions = batch["user_history_ids"], batch["history_positions"]
  tf.random.set_seed(3)
  held_out = (tf.random.uniform(tf.shape(ids.flat_values))
              < config.history_dropout).numpy()
  assert 0 < held_out.sum() < len(held_out)
  tf.random.set_seed(3)
  loss = float(model.compute_loss(batch, training=True))
  kept = dict(batch)
  kept["user_history_ids"] = tf.ragged.boolean_mask(
      ids, ids.with_flat_values(tf.constant(~held_out)))
  query = model.query_model(kept).numpy()
  corpus = model_lib.embed(model.candidate_model, data.table("movies"))
  scores = query @ corpus.T / config.temperature
  log_softmax = scores - np.log(np.exp(scores).sum(1, keepdims=True))
  rows = positions.value_rowids().numpy()
  columns = positions.flat_values.numpy()
  expected = -log_softmax[rows[held_out], columns[held_out]].sum()
  assert loss == pytest.approx(expected, rel=1e-4)
  assert float(model.loss_per_example.result()) == pytest.approx(
      expected / held_out.sum(), rel=1e-4)
  # Outside training nothing is held out: no positives, no loss.
  assert float(model.compute_loss(batch)) == 0.0


def test_user_examples_train(data):
  config = train.RetrievalConfig(**USERS, members=2)
  model = _model(data, config)
  examples = model.user_examples(data.users).cache()
  fixed = next(iter(examples.batch(64)))
  tf.keras.utils.set_random_seed(0)
  before = float(model.compute_loss(fixed, training=True))
  model.compile(tf.keras.optimizers.Adam(0.01))
  history = model.fit(examples.repeat(4).batch(16), epochs=3, verbose=0)
  assert all(np.isfinite(history.history["loss_per_example"]))
  tf.keras.utils.set_random_seed(0)
  assert float(model.compute_loss(fixed, training=True)) < before


def test_user_examples_need_the_corpus_softmax(data):
  with pytest.raises(ValueError, match="negatives='corpus'"):
    _model(data, train.RetrievalConfig(**{**USERS, "negatives": "in_batch"}))
  with pytest.raises(ValueError, match="must be in"):
    _model(data, train.RetrievalConfig(**{**USERS, "history_dropout": 0.0}))
  with pytest.raises(ValueError, match="examples must be one of"):
    _model(data, train.RetrievalConfig(**{**USERS, "examples": "movie"}))


def test_history_embedding_pools_ragged_ids_with_train_only_dropout(data):
  feature = features.FEATURE_BY_NAME["user_history"]
  layer = features.FeatureEmbedding(feature, data.vocabularies,
                                    token_dropout=0.5)
  vocab = data.vocabularies.vocab["user_history"]
  inputs = {"user_history": tf.constant(
      [f"{vocab[0]}|{vocab[1]}|{vocab[2]}", "", vocab[3], "no-such-id"])}
  served = layer(inputs).numpy()
  table = layer.embedding.embeddings.numpy()
  ids = layer.ids(inputs)
  assert feature.combiner == "mean"
  expected_first = table[ids[0].numpy()].mean(0)
  np.testing.assert_allclose(served[0], expected_first, rtol=1e-5)
  # rated_movies (ranking) pools the same ids as sum / sqrt(count).
  assert features.FEATURE_BY_NAME["rated_movies"].combiner == "sqrtn"
  sqrtn = features.FeatureEmbedding(
      dataclasses.replace(feature, combiner="sqrtn"), data.vocabularies)
  sqrtn(inputs)
  sqrtn.set_weights(layer.get_weights())
  np.testing.assert_allclose(sqrtn(inputs).numpy()[0],
                             table[ids[0].numpy()].sum(0) / np.sqrt(3),
                             rtol=1e-5)
  np.testing.assert_allclose(served[1], 0.0)  # empty history
  np.testing.assert_allclose(served[2], table[ids[2].numpy()[0]], rtol=1e-5)
  assert np.abs(served[3]).sum() > 0  # unknown id -> OOV bucket
  # Serving is deterministic; training drops ids at random.
  np.testing.assert_allclose(layer(inputs).numpy(), served)
  tf.random.set_seed(1)
  trained = [layer(inputs, training=True).numpy()[0] for _ in range(20)]
  assert any(not np.allclose(t, served[0]) for t in trained)
  # Layers after it (Dense, Cross) need the static width.
  traced = tf.function(lambda x: layer({"user_history": x})).get_concrete_function(
      tf.TensorSpec([None], tf.string))
  assert traced.output_shapes.as_list() == [None, feature.dim]
  with pytest.raises(ValueError, match="combiner"):
    features.FeatureEmbedding(dataclasses.replace(feature, combiner="max"),
                              data.vocabularies)
  with pytest.raises(ValueError, match="multi_categorical"):
    features.FeatureEmbedding(features.FEATURE_BY_NAME["movie_id"],
                              data.vocabularies, token_dropout=0.5)
  with pytest.raises(ValueError, match="not encoded here"):
    features.FeatureEncoder([features.FEATURE_BY_NAME["movie_id"]],
                            data.vocabularies, token_dropout={"star": 0.1})


def test_precomputed_history_ids_give_the_same_query_and_loss(data):
  config = train.RetrievalConfig(**FAST)
  model = model_lib.RetrievalModel(config, data.vocabularies, {"1": 1.0},
                                   corpus=data.table("movies"))
  raw = next(iter(data.train.batch(16)))
  with_ids = next(iter(model.training_examples(data.train).batch(16)))
  assert "user_history" not in with_ids  # looked up once, strings dropped
  ids = with_ids["user_history_ids"]
  assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
  np.testing.assert_array_equal(raw["user_id"], with_ids["user_id"])
  np.testing.assert_allclose(model.query_model(with_ids).numpy(),
                             model.query_model(raw).numpy(), rtol=1e-5)
  assert float(model.compute_loss(with_ids)) == pytest.approx(
      float(model.compute_loss(raw)), rel=1e-5)


def test_oov_ids_embed(data):
  config = train.RetrievalConfig(**FAST)
  model = model_lib.RetrievalModel(config, data.vocabularies, {"1": 1.0},
                                   corpus=data.table("movies"))
  batch = {k: v for k, v in _batch(data, 2).items()}
  batch["user_id"] = tf.constant(["no-such-user", "x"])
  batch["user_history"] = tf.constant(["", "99999|1"])
  assert np.all(np.isfinite(model.query_model(batch).numpy()))


# ---------------------------------------------------------------------------
# Training run, metrics, TensorBoard, checkpoints.


def test_train_writes_run(trained):
  run_dir, result = trained["run_dir"], trained["result"]
  for name in ("config.json", "vocabularies.json", "metrics.json"):
    assert os.path.exists(os.path.join(run_dir, name)), name
  metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
  for k in (1, 5, 10, 50, 100):
    assert 0 <= metrics[f"top_{k}_accuracy"] <= 1
  for k in (10, 20, 100):
    assert 0 <= metrics[f"recall_at_{k}"] <= 1
    assert 0 <= metrics[f"ndcg_at_{k}"] <= 1
    assert f"recall_at_{k}" in metrics["popularity"]
  assert metrics["index"]["recall_at_k"] >= 0.99
  assert "p99_ms" in metrics["index"]["scann"]["batch_256"]
  assert metrics["training_seconds"] > 0
  assert result["top_100_accuracy"] == metrics["top_100_accuracy"]
  config = json.load(open(os.path.join(run_dir, "config.json")))
  assert config["retrieval"]["epochs"] == 2
  assert config["data"]["history_length"] == 8
  # TensorBoard: scalars, hparams, projector.
  logs = os.path.join(run_dir, "logs")
  assert os.listdir(os.path.join(logs, "train"))
  projector = os.path.join(logs, "projector")
  assert os.path.exists(os.path.join(projector, "projector_config.pbtxt"))
  header = open(os.path.join(projector, "metadata.tsv")).readline()
  assert header.strip().split("\t") == ["title", "genres", "director", "star"]
  # Loss went down.
  events = " ".join(trained["logs"])
  assert "epoch 2" in events
  ckpt = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
  assert ckpt.endswith("ckpt-2")


def test_loss_per_example_is_the_mean_over_all_examples(data):
  # No dropout: training-mode losses equal the ones computed here.
  config = train.RetrievalConfig(**FAST, history_dropout=0.0, dropout=0.0)
  model = _model(data, config)
  big, small = list(data.train.batch(64).take(2))
  small = {k: v[:5] for k, v in small.items()}  # a short last batch
  sums = [float(model.compute_loss(b)) for b in (big, small)]
  assert float(model.loss_per_example.result()) == pytest.approx(
      sum(sums) / 69, rel=1e-5)
  model.compile(tf.keras.optimizers.Adam(0.0))
  history = model.fit(tf.data.Dataset.from_tensors(big).concatenate(
      tf.data.Dataset.from_tensors(small)), epochs=1, verbose=0)
  # TFRS's own `loss` is the last batch's sum; ours averages the epoch.
  assert history.history["loss"][0] == pytest.approx(sums[1], rel=1e-4)
  assert history.history["loss_per_example"][0] == pytest.approx(
      sum(sums) / 69, rel=1e-4)


def test_training_improves_loss(trained):
  # fakedata picks which movies a user rates at random (the planted taste
  # only shows in rating values), so retrieval can at best match
  # popularity there; check that training makes progress instead.
  losses = [float(line.split("loss per example ")[1].split(",")[0])
            for line in trained["first_logs"] + trained["logs"]
            if line.startswith("[train] epoch")]
  assert len(losses) == 2 and losses[1] < losses[0]


def test_resume_from_checkpoint(trained):
  assert trained["first"]["epochs_trained"] == 1
  assert any("restored" in line and "epoch 1 of 2" in line
             for line in trained["logs"])
  assert trained["result"]["epochs_trained"] == 1
  ckpt_dir = os.path.join(trained["run_dir"], "checkpoints")
  assert tf.train.latest_checkpoint(ckpt_dir).endswith("ckpt-2")


def test_finished_run_is_only_reevaluated(trained, data_config):
  logs = []
  result = train.train_and_evaluate(trained["config"], data_config,
                                    trained["run_dir"], log=logs.append)
  assert result["epochs_trained"] == 0
  assert any("all epochs done" in line for line in logs)
  assert result["top_10_accuracy"] == pytest.approx(
      trained["result"]["top_10_accuracy"])


def test_resume_with_another_config_is_refused(trained, data_config):
  from tfrs_pipeline import runs  # pylint: disable=g-import-not-at-top
  from tfrs_pipeline.app import cli  # pylint: disable=g-import-not-at-top
  run = runs.RunDir(trained["run_dir"])
  config = trained["config"]
  # More epochs (or another eval sample / K) may continue the run ...
  train._check_resumable(run, dataclasses.replace(
      config, epochs=config.epochs + 1, eval_sample=7))
  # ... a different model may not: one clear line, before any restore.
  other = dataclasses.replace(config, embedding_dim=config.embedding_dim * 2,
                              temperature=0.3)
  with pytest.raises(cli.UsageError,
                     match="different embedding_dim, temperature"):
    train.train_and_evaluate(other, data_config, trained["run_dir"],
                             log=_quiet)


# ---------------------------------------------------------------------------
# Export.

_RELOAD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import scann  # noqa: F401  (registers the ScaNN ops)
    import tensorflow as tf
    assert "tfrs_pipeline" not in sys.modules
    m = tf.saved_model.load(sys.argv[1])
    users = tf.constant(json.loads(sys.argv[2]))
    out = m.signatures["serving_default"](user_id=users)
    emb = m.signatures["user_embedding"](user_id=users)["embedding"]
    feats = json.loads(sys.argv[3])
    spec = m.signatures["serve_features"].structured_input_signature[1]
    sf = m.signatures["serve_features"](**{
        k: tf.constant(v, spec[k].dtype) for k, v in feats.items()})
    print(json.dumps({
        "movie_ids": out["movie_ids"].numpy().astype(str).tolist(),
        "scores": out["scores"].numpy().tolist(),
        "embedding": emb.numpy().tolist(),
        "sf_movie_ids": sf["movie_ids"].numpy().astype(str).tolist(),
        "sf_scores": sf["scores"].numpy().tolist(),
        "inputs": sorted(spec),
    }))
""")


def test_export_reloads_in_fresh_process(trained, data):
  run_dir = trained["run_dir"]
  path = export_layout.locate(run_dir, "retrieval")
  candidates = np.load(export_layout.locate(run_dir, "candidates.npz"))
  num_movies, dim = candidates["embeddings"].shape
  assert len(candidates["movie_ids"]) == num_movies
  config = trained["config"]
  assert dim == config.output_dim == config.members * 16
  k = min(100, num_movies)
  default_ts = trained["result"]["export"]["default_timestamp"]

  users = ["1", "2", "no-such-user"]
  table = data.table("users")
  row = {u: i for i, u in enumerate(table["user_id"])}
  feats = {"user_id": users}
  if any(i.name == "timestamp" for i in features.inputs_for(features.QUERY)):
    feats["timestamp"] = [default_ts] * 3
  for spec in features.inputs_for(features.QUERY):
    if spec.entity == features.USER and spec.name != "user_id":
      feats[spec.name] = [str(table[spec.name][row[u]]) if u in row
                          else spec.default for u in users]
  # A client-supplied history for the unknown user.
  feats["user_history"][2] = "1|2|3"

  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.run(
      [sys.executable, "-c", _RELOAD, path, json.dumps(users),
       json.dumps(feats)], capture_output=True, text=True, cwd="/",
      env=env, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = json.loads(proc.stdout.strip().splitlines()[-1])

  # Same as the in-process model: query tower + exact scores.
  assert got["inputs"] == sorted(
      i.name for i in features.inputs_for(features.QUERY))
  embedding = np.array(got["embedding"])
  assert embedding.shape == (3, dim)
  scores = embedding @ candidates["embeddings"].T
  for b in range(3):
    assert len(got["movie_ids"][b]) == k  # unknown user too
    best = candidates["movie_ids"][np.argsort(-scores[b])[:5]].tolist()
    assert got["movie_ids"][b][:5] == best
    np.testing.assert_allclose(got["scores"][b][:5],
                               np.sort(scores[b])[::-1][:5], rtol=1e-4,
                               atol=1e-5)
  # serve_features with the looked-up inputs = serving_default.
  for b in range(2):
    assert got["sf_movie_ids"][b][:10] == got["movie_ids"][b][:10]
  assert len(got["sf_movie_ids"][2]) == k


def test_export_matches_trained_model(trained, data):
  """The reloaded user_embedding equals the training-time query tower on
  the same looked-up inputs."""
  import scann  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  run_dir = trained["run_dir"]
  loaded = tf.saved_model.load(export_layout.locate(run_dir, "retrieval"))
  default_ts = trained["result"]["export"]["default_timestamp"]
  users = np.array(["1", "5", "unknown"])
  columns = evaluate.user_queries(data, users, {}, default_ts)
  config = trained["config"]
  model = model_lib.RetrievalModel(
      config, features.Vocabularies.load(
          os.path.join(run_dir, "vocabularies.json")),
      model_lib.candidate_frequencies(data.train_ratings.movie_id),
      corpus=data.table("movies"))
  for batch in data.train.batch(4).take(1):  # builds the variables
    model.query_model(batch)
    model.candidate_model(batch)
  tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(
      os.path.join(run_dir, "checkpoints"))).expect_partial()
  expected = model_lib.embed(model.query_model, columns)
  got = loaded.signatures["user_embedding"](
      user_id=tf.constant(users))["embedding"].numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_saved_model_cli_wrapper_runs_the_export(trained):  # pylint: disable=redefined-outer-name
  """`python -m tfrs_pipeline.app.saved_model_cli` loads the ScaNN ops."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  export_dir = export_layout.locate(trained["run_dir"], "retrieval")
  out = subprocess.run(
      [sys.executable, "-m", "tfrs_pipeline.app.saved_model_cli", "run",
       "--dir", export_dir, "--tag_set", "serve", "--signature_def",
       "serving_default", "--input_exprs", 'user_id=["1"]'],
      capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "movie_ids" in out.stdout
