"""The TF Serving export (EXPORT_DIR/tfserving/retrieval/1): stock
TensorFlow ops only, same signatures and top-K as the ScaNN export.

Stock TensorFlow Serving has no ScaNN ops. The check here stands in for
running it: the export loads and answers in a fresh process that imports
TensorFlow and nothing of this project (no scann), it has no `Scann>` op
anywhere in its graph, and it returns what the ScaNN export returns.

The query tower is untrained (seeded random weights) over the shared fake
data (`conftest.fake_data`): the export does not depend on training, and
nothing is trained here.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from retrieval import evaluate, index, serving_model
from retrieval import model as model_lib
from tfrs_pipeline import export_layout

TOP_K = 10  # < the 40 fake movies, so the top-K is a real choice
USERS = ["1", "2", "3", "no-such-user"]
SIGNATURES = ("serving_default", "user_embedding", "serve_features")

_STOCK_TF = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    m = tf.saved_model.load(sys.argv[1])
    users = tf.constant(json.loads(sys.argv[2]))
    out = m.signatures["serving_default"](user_id=users)
    emb = m.signatures["user_embedding"](user_id=users)["embedding"]
    spec = m.signatures["serve_features"].structured_input_signature[1]
    feats = json.loads(sys.argv[3])
    sf = m.signatures["serve_features"](**{
        k: tf.constant(v, spec[k].dtype) for k, v in feats.items()})
    loaded = sorted(n for n in sys.modules
                    if n.split(".")[0] in ("scann", "tfrs_pipeline",
                                           "retrieval",
                                           "tensorflow_recommenders"))
    print(json.dumps({
        "signatures": {
            name: {"inputs": {k: s.dtype.name for k, s in
                              f.structured_input_signature[1].items()},
                   "outputs": {k: s.dtype.name for k, s in
                               f.structured_outputs.items()}}
            for name, f in m.signatures.items()},
        "movie_ids": out["movie_ids"].numpy().astype(str).tolist(),
        "scores": out["scores"].numpy().tolist(),
        "embedding": out["embedding"].numpy().tolist(),
        "user_embedding": emb.numpy().tolist(),
        "sf_movie_ids": sf["movie_ids"].numpy().astype(str).tolist(),
        "sf_scores": sf["scores"].numpy().tolist(),
        "project_modules": loaded,
    }))
""")


def _quiet(*_):
  pass


def _op_types(saved_model_dir):
  """Every op type in a SavedModel: graph nodes and function library."""
  proto = saved_model_pb2.SavedModel()
  with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
    proto.ParseFromString(f.read())
  ops = set()
  for meta in proto.meta_graphs:
    ops.update(n.op for n in meta.graph_def.node)
    for fn in meta.graph_def.library.function:
      ops.update(n.op for n in fn.node_def)
  return ops


@pytest.fixture(scope="module")
def exported(fake_data, tmp_path_factory):
  """export_model of a small untrained two-tower over the fake data."""
  tf.keras.utils.set_random_seed(0)
  config = model_lib.RetrievalConfig(embedding_dim=8, members=2,
                                     hidden_units=(16,), top_k=TOP_K)
  model = model_lib.RetrievalModel(
      config, fake_data.vocabularies,
      model_lib.candidate_frequencies(fake_data.train_ratings.movie_id),
      corpus=fake_data.table("movies"))
  movies, movie_embeddings = evaluate.candidate_table(
      fake_data, model.candidate_model)
  _, default_ts = evaluate.latest_train_timestamps(fake_data)
  export_dir = str(tmp_path_factory.mktemp("tfserving") / "export")
  logs = []
  result = serving_model.export_model(
      model.query_model, fake_data.table("users"), movies["movie_id"],
      movie_embeddings, default_ts, export_dir, top_k=TOP_K,
      log=logs.append)
  return dict(result=result, export_dir=export_dir, logs=logs,
              default_ts=default_ts, movie_ids=np.asarray(
                  movies["movie_id"]).astype(str),
              movie_embeddings=movie_embeddings)


def test_tfserving_layout(exported):
  export_dir, result = exported["export_dir"], exported["result"]
  # One published version (RUN/export/1) holding both SavedModels and
  # the candidates, and nothing else under the base.
  version = export_layout.latest(export_dir)
  assert version == os.path.join(export_dir, "1") and result["version"] == 1
  assert sorted(os.listdir(export_dir)) == ["1"]
  base = os.path.join(version, "tfserving", "retrieval")
  assert result["tfserving"] == os.path.join(base, "1")
  assert result["saved_model"] == os.path.join(version, "retrieval")
  assert result["candidates"] == os.path.join(version, "candidates.npz")
  # Only the numeric version directory: no temporary or old copy left.
  assert os.listdir(base) == ["1"]
  assert os.path.isfile(os.path.join(base, "1", "saved_model.pb"))
  assert os.path.isdir(os.path.join(base, "1", "variables"))
  assert result["k"] == TOP_K
  assert result["tfserving_seconds"] > 0
  assert any(base in line and "TF Serving" in line
             for line in exported["logs"]), exported["logs"]


def test_tfserving_graph_has_no_scann_op(exported):
  result = exported["result"]
  stock = _op_types(result["tfserving"])
  scann_ops = _op_types(result["saved_model"])
  # The scan sees ScaNN's ops where they are ...
  assert any(op.startswith("Scann") for op in scann_ops), sorted(scann_ops)
  # ... and the TF Serving export has none, nor any other custom namespace.
  assert not [op for op in stock if op.startswith("Scann") or ">" in op]
  assert {"MatMul", "TopKV2"} <= stock  # the brute-force top-K


def test_stock_save_options_refuse_scann_ops(exported, tmp_path):
  """The options the TF Serving export is saved with reject a ScaNN op."""
  layer = index.build_scann(
      None, exported["movie_ids"], exported["movie_embeddings"],
      index.movie_index_config(len(exported["movie_ids"]), TOP_K))
  module = tf.Module()
  module.index = layer
  dim = exported["movie_embeddings"].shape[1]
  module.search = tf.function(
      lambda q: layer(q, k=TOP_K),
      input_signature=[tf.TensorSpec([None, dim], tf.float32)])
  with pytest.raises(ValueError, match="Scann"):
    tf.saved_model.save(module, str(tmp_path / "m"),
                        options=serving_model.STOCK_OPS_SAVE_OPTIONS)


def test_tfserving_export_matches_scann_in_stock_tensorflow(
    exported, fake_data):
  result = exported["result"]
  scann_model = tf.saved_model.load(result["saved_model"])  # scann imported
  assert "scann" in sys.modules
  spec = scann_model.signatures["serve_features"].structured_input_signature[1]
  columns = evaluate.user_queries(fake_data, np.array(USERS), {},
                                  exported["default_ts"])
  feats = {}
  for name, s in spec.items():
    values = np.asarray(columns[name])
    feats[name] = (values.astype(str).tolist() if s.dtype == tf.string
                   else values.astype(s.dtype.as_numpy_dtype).tolist())

  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.run(
      [sys.executable, "-c", _STOCK_TF, result["tfserving"],
       json.dumps(USERS), json.dumps(feats)],
      capture_output=True, text=True, cwd="/", env=env, timeout=180)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = json.loads(proc.stdout.strip().splitlines()[-1])
  assert got["project_modules"] == []  # no scann, no project code

  # Same signatures: names, input names and dtypes, output keys and dtypes.
  want = {name: {"inputs": {k: s.dtype.name for k, s in
                            f.structured_input_signature[1].items()},
                 "outputs": {k: s.dtype.name for k, s in
                             f.structured_outputs.items()}}
          for name, f in scann_model.signatures.items()}
  assert sorted(want) == sorted(SIGNATURES)
  assert got["signatures"] == want

  out = scann_model.signatures["serving_default"](
      user_id=tf.constant(USERS))
  scann_ids = out["movie_ids"].numpy().astype(str)
  scann_scores = out["scores"].numpy()
  assert scann_ids.shape == (len(USERS), TOP_K)
  # The same top-K, in the same order (at 40 movies ScaNN re-scores all
  # of them exactly), and the same scores and embeddings.
  assert got["movie_ids"] == scann_ids.tolist()
  np.testing.assert_allclose(got["scores"], scann_scores, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(got["embedding"], out["embedding"].numpy(),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["user_embedding"], got["embedding"],
                             rtol=1e-6, atol=1e-7)
  # Both are the exact top-K of the query against candidates.npz.
  candidates = np.load(result["candidates"])
  exact = np.array(got["embedding"]) @ candidates["embeddings"].T
  best = candidates["movie_ids"][np.argsort(-exact, axis=1)[:, :TOP_K]]
  assert got["movie_ids"] == best.astype(str).tolist()
  # Different users get different lists (the comparison is not vacuous).
  assert len({tuple(ids) for ids in got["movie_ids"]}) > 1

  # serve_features with the looked-up inputs answers as serving_default.
  scann_sf = scann_model.signatures["serve_features"](**{
      k: tf.constant(v, spec[k].dtype) for k, v in feats.items()})
  assert got["sf_movie_ids"] == scann_sf["movie_ids"].numpy().astype(
      str).tolist()
  assert got["sf_movie_ids"] == got["movie_ids"]
  np.testing.assert_allclose(got["sf_scores"], got["scores"], rtol=1e-5,
                             atol=1e-6)
