"""The joint retrieval + rating model (`retrieval/joint.py`) on fake data."""

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

from retrieval import joint, train
from retrieval import model as model_lib
from tfrs_pipeline import errors, export_layout, features, metrics, pipeline

JOINT = dict(model="joint", examples="rating", batch_size=64, members=1,
             eval_sample=50, hidden_units=(32,), embedding_dim=16, top_k=50,
             epochs=1, learning_rate=0.01, dropout=0.0)


def _quiet(*_):
  pass


def _joint(data, **overrides):
  config = model_lib.RetrievalConfig(**{**JOINT, **overrides})
  model = joint.JointModel(
      config, data.vocabularies,
      model_lib.candidate_frequencies(data.train_ratings.movie_id),
      corpus=data.table("movies"),
      global_mean=float(data.train_ratings[features.LABEL].mean()))
  model.compile(tf.keras.optimizers.Adam(config.learning_rate))
  return model


def _batch(model, data, n=64):
  return next(iter(model.training_examples(data.train).batch(n)))


def _losses(model, batch):
  """(total, retrieval per example, rating MSE) of one batch, inference."""
  for metric in (model.retrieval_loss, model.rating_loss):
    metric.reset_state()
  total = float(model.compute_loss(batch, training=False))
  return (total, float(model.retrieval_loss.result()),
          float(model.rating_loss.result()))


def test_joint_needs_rating_examples():
  assert joint.default_config(epochs=1).examples == "rating"
  with pytest.raises(errors.ConfigError, match="examples rating"):
    model_lib.RetrievalConfig(model="joint")  # examples="user" default
  with pytest.raises(errors.ConfigError, match="--model"):
    model_lib.RetrievalConfig(model="three_tower")
  with pytest.raises(errors.ConfigError, match="not both 0"):
    model_lib.RetrievalConfig(**{**JOINT, "retrieval_weight": 0.0,
                                 "rating_weight": 0.0})


def test_both_losses_decrease_and_weights_change_the_loss(fake_data):
  tf.keras.utils.set_random_seed(0)
  model = _joint(fake_data)
  batch = _batch(model, fake_data)
  total, retrieval, rating = _losses(model, batch)
  assert np.isfinite([total, retrieval, rating]).all()
  assert total == pytest.approx(retrieval + rating, rel=1e-5)
  # The weights scale their task's loss only.
  model.config = dataclasses.replace(model.config, retrieval_weight=0.5,
                                     rating_weight=3.0)
  weighted, retrieval2, rating2 = _losses(model, batch)
  assert (retrieval2, rating2) == pytest.approx((retrieval, rating))
  assert weighted == pytest.approx(0.5 * retrieval + 3.0 * rating, rel=1e-5)
  model.config = dataclasses.replace(model.config, retrieval_weight=1.0,
                                     rating_weight=1.0)
  for _ in range(15):
    model.train_step(batch)
  _, retrieval_after, rating_after = _losses(model, batch)
  assert retrieval_after < retrieval and rating_after < rating


_RELOAD = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    m = tf.saved_model.load(sys.argv[1])
    fn = m.signatures["serving_default"]
    values = json.loads(sys.argv[2])
    args = {n: tf.constant(values[n], s.dtype)
            for n, s in fn.structured_input_signature[1].items()}
    print(json.dumps(fn(**args)["rating"].numpy().tolist()))
""")


def test_run_reports_both_metrics_and_rating_export_reloads(
    fake_data, fake_raw, fake_data_dir, tmp_path):
  data_config = pipeline.DataConfig(raw_data=fake_raw["path"],
                                          data_dir=fake_data_dir)
  result = train.train_and_evaluate(
      model_lib.RetrievalConfig(**JOINT), data_config, str(tmp_path / "run"),
      log=_quiet, data=fake_data)
  for k in (10, 20):
    for name in ("precision", "recall", "map", "ndcg"):
      assert 0.0 <= result[f"{name}_at_{k}"] <= 1.0
  for key in ("rmse", "mae", "spearman", "liked_auc"):
    assert np.isfinite(result[key]), key
  assert result["rmse"] < result["global_mean_rmse"] * 1.5
  assert os.path.isdir(result["export"]["saved_model"])  # the two-tower's
  with open(tmp_path / "run" / "metrics.json", encoding="utf-8") as f:
    assert json.load(f)["spearman"] == pytest.approx(result["spearman"])

  # The rating export, reloaded in a fresh process, = the Keras model.
  model = _joint(fake_data)
  model.train_step(_batch(model, fake_data))
  path = joint.export_rating(model, str(tmp_path / "export"), log=_quiet)
  assert export_layout.version_of(path) == 1
  examples = next(iter(fake_data.test.batch(20)))
  names = set(joint._input_specs())  # pylint: disable=protected-access
  values = {n: ([x.decode() for x in v.numpy()] if v.dtype == tf.string
                else v.numpy().tolist())
            for n, v in examples.items() if n in names}
  expected = model.rating({n: examples[n] for n in names}).numpy()
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.run(
      [sys.executable, "-c", _RELOAD, path, json.dumps(values)],
      capture_output=True, text=True, cwd="/", env=env, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  # The rating metrics are computed from these predictions (clipped).
  out = joint.predict_ratings(model, fake_data.test.take(20))
  np.testing.assert_allclose(out["prediction"], expected, rtol=1e-5,
                             atol=1e-5)
  got = joint.rating_metrics(model, fake_data.test.take(20), 3.5)
  assert got["rmse"] == pytest.approx(
      metrics.rmse(out["label"], np.clip(expected, 1.0, 5.0)), rel=1e-5)
