"""Tests for retrieval.index and retrieval.index_bench (small data, < 30 s)."""

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tfrs_pipeline  # noqa: F401  (before TensorFlow)
import tensorflow as tf

from retrieval import index, index_bench


def _data(n=2000, dim=16, q=64, seed=0):
  rng = np.random.default_rng(seed)
  emb = rng.standard_normal((n, dim)).astype(np.float32)
  queries = rng.standard_normal((q, dim)).astype(np.float32)
  ids = np.array([f"m{i}" for i in range(n)])
  return emb, ids, queries


# Every leaf searched and every candidate re-scored exactly: the result must
# be brute force's whatever the quantizer learned (the quantized pre-ranking
# differs between CPUs; with 200 of 2,000 re-scored, one CI machine lost a true
# top-10 item to it).
EXHAUSTIVE = index.IndexConfig(
    num_leaves=20, num_leaves_to_search=20, num_reordering_candidates=2000,
    k=10)


def test_config_validation():
  with pytest.raises(ValueError):
    index.IndexConfig(num_leaves=10, num_leaves_to_search=11)
  with pytest.raises(ValueError):
    index.IndexConfig(k=100, num_reordering_candidates=50)
  assert index.IndexConfig().name == "L32/s32/r1000/d2"


def test_scann_all_leaves_with_reordering_matches_brute_force():
  emb, ids, queries = _data()
  scann = index.build_scann(None, ids, emb, EXHAUSTIVE)
  brute = index.build_brute_force(None, ids, emb, k=10)
  s_scores, s_ids = scann(tf.constant(queries))
  b_scores, b_ids = brute(tf.constant(queries))
  assert s_ids.shape == (64, 10) and s_ids.dtype == tf.string
  assert index.recall_against_exact(b_ids, s_ids) >= 0.999
  np.testing.assert_allclose(s_scores, b_scores, rtol=1e-4, atol=1e-4)
  # Rank-1 queries go through ScaNN's single-query path.
  _, one = scann(tf.constant(queries[0]))
  assert one.numpy().tolist() == s_ids[0].numpy().tolist()


def test_query_model_and_dataset_inputs():
  emb, ids, _ = _data(n=500, dim=8)
  users = [f"u{i}" for i in range(30)]
  query_model = tf.keras.Sequential([
      tf.keras.layers.StringLookup(vocabulary=users),
      tf.keras.layers.Embedding(len(users) + 1, 8)])
  pairs = tf.data.Dataset.from_tensor_slices((ids, emb)).batch(128)
  config = index.IndexConfig(num_leaves=5, num_leaves_to_search=5,
                             num_reordering_candidates=500, k=10)
  scann = index.build_scann(query_model, None, pairs, config)
  brute = index.build_brute_force(
      query_model, ids, tf.data.Dataset.from_tensor_slices(emb).batch(100),
      k=10)
  _, s_ids = scann(tf.constant(users))
  _, b_ids = brute(tf.constant(users))
  assert s_ids.shape == (30, 10)
  assert index.recall_against_exact(b_ids, s_ids) >= 0.99


def test_default_config_recall_on_movie_sized_corpus():
  emb, queries = index_bench.make_synthetic_corpus(3883, 64, 200, seed=1)
  exact = index.exact_top_k(emb, queries, 100)
  scann = index.build_scann(None, None, emb, index.IndexConfig())
  _, got = scann(tf.constant(queries))
  assert index.recall_against_exact(exact, got) >= 0.99


def test_recall_against_exact_hand_cases():
  exact = [[1, 2, 3], [4, 5, 6]]
  assert index.recall_against_exact(exact, exact) == 1.0
  assert index.recall_against_exact(exact, [[3, 2, 1], [4, 7, 8]]) == (
      pytest.approx((1.0 + 1 / 3) / 2))
  assert index.recall_against_exact(exact, [[7, 8, 9], [0, 0, 0]]) == 0.0
  assert index.recall_against_exact(
      np.array([[b"a", b"b"]]), np.array([[b"b", b"c"]])) == 0.5
  with pytest.raises(ValueError):
    index.recall_against_exact(exact, [[1, 2, 3]])


def test_exact_top_k_matches_argsort():
  emb, _, queries = _data(n=1000, dim=8, q=5)
  got = index.exact_top_k(emb, queries, k=20, chunk=300)
  want = np.argsort(-(queries @ emb.T), axis=1)[:, :20]
  np.testing.assert_array_equal(got, want)


def test_measure_latency():
  queries = np.zeros((10, 4), np.float32)
  calls = []

  def slow(q):
    calls.append(q.shape[0])
    time.sleep(0.002)
    return q

  lat = index_bench.measure_latency(slow, queries, batch_size=4, num_batches=12,
                              warmup=2)
  assert set(lat) == {"p50_ms", "p99_ms", "mean_ms", "qps"}
  assert len(calls) == 14 and set(calls) == {4}
  assert 2.0 <= lat["p50_ms"] <= lat["p99_ms"] < 200
  assert 0 < lat["qps"] <= 4 / 0.002


def test_compare_on_corpus():
  emb, ids, queries = _data(n=1500, dim=16, q=40)
  config = index.IndexConfig(num_leaves=10, num_leaves_to_search=10,
                             num_reordering_candidates=300, k=20)
  result = index_bench.compare_on_corpus(emb, ids, queries, config, k=20,
                                   num_batches=(20, 2), warmup=1)
  assert result["recall_at_k"] >= 0.99
  assert result["k"] == 20 and result["num_candidates"] == 1500
  for method in ("scann", "brute_force"):
    for b in ("batch_1", "batch_256"):
      assert result[method][b]["p50_ms"] > 0
  assert result["speedup_batch_1"] > 0


_LOAD = textwrap.dedent("""
    import json, sys
    import tfrs_pipeline
    import tensorflow as tf
    import scann  # registers the Scann>... ops
    loaded = tf.saved_model.load(sys.argv[1])
    users = tf.constant(["u1", "u7"])
    ids = loaded.serve(users)["ids"]
    sig = loaded.signatures["serving_default"](queries=users)["ids"]
    decode = lambda t: [[x.decode() for x in row] for row in t.numpy()]
    print(json.dumps({"ids": decode(ids), "sig": decode(sig)}))
""")


def test_saved_model_roundtrip_in_fresh_process(tmp_path):
  emb, ids, _ = _data(n=600, dim=8)
  users = [f"u{i}" for i in range(10)]
  query_model = tf.keras.Sequential([
      tf.keras.layers.StringLookup(vocabulary=users),
      tf.keras.layers.Embedding(len(users) + 1, 8)])
  config = index.IndexConfig(num_leaves=8, num_leaves_to_search=3,
                             num_reordering_candidates=40, k=5)
  layer = index.build_scann(query_model, ids, emb, config)
  _, want = layer(tf.constant(["u1", "u7"]))
  path = str(tmp_path / "scann_index")
  index.save_index(layer, path, tf.TensorSpec([None], tf.string))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  out = subprocess.run([sys.executable, "-c", _LOAD, path], env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  want = [[x.decode() for x in row] for row in want.numpy()]
  assert got["ids"] == want
  assert got["sig"] == want


def test_synthetic_tradeoff_plot_and_markdown(tmp_path):
  """Each tree in its own process; a tree that fails is reported, not fatal."""
  configs = [
      index.IndexConfig(num_leaves=20, num_leaves_to_search=2,
                        num_reordering_candidates=100),
      index.IndexConfig(num_leaves=20, num_leaves_to_search=20,
                        num_reordering_candidates=1000),
      # More leaves than vectors: ScaNN refuses to build this tree.
      index.IndexConfig(num_leaves=5000, num_leaves_to_search=2,
                        num_reordering_candidates=100)]
  lines = []
  rows = index_bench.synthetic_tradeoff(
      num_vectors=3000, dim=16, num_queries=30,
      methods=index_bench.scann_methods(configs),
      num_batches=(10, 2), brute_force_batches=(10, 2), progress=lines.append,
      work_dir=str(tmp_path))
  assert [r["method"] for r in rows] == ["brute_force"] + ["scann"] * 3
  assert rows[0]["recall"] == 1.0 and rows[2]["recall"] >= 0.99
  assert sum(r["chosen"] for r in rows) == 1
  assert "error" not in rows[1] and rows[1]["build_s"] == rows[2]["build_s"]
  assert "less than the number of clusters" in rows[3]["error"]
  assert "function_node" not in rows[3]["error"]
  assert any("exact top-100" in line for line in lines)
  assert any("built ScaNN L20" in line for line in lines)  # the worker's
  assert any("ScaNN L5000 skipped" in line for line in lines)
  assert os.listdir(tmp_path) == []  # the corpus file is removed
  table = index_bench.tradeoff_markdown(rows)
  assert table.count("L20/s") == 2 and "(chosen)" in table
  assert "- L5000/s2/r100/d2: not measured (InvalidArgumentError" in table
  assert "| ScaNN | L20/s" in table and rows[1]["corpus"] == "clustered"
  png = index_bench.plot_tradeoff({"clustered": rows},
                                  str(tmp_path / "tradeoff.png"))
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
