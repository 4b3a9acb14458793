"""A short ranking run on the real data (skipped without it).

Trains a small DCN-v2 for two epochs on the first 100k train ratings and
checks that its test RMSE beats the global mean of the same run; also
that the run wrote its artifacts and the export answers by id.
"""

import os

import numpy as np
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

pytestmark = pytest.mark.realdata


def test_short_real_run_beats_global_mean(real_raw, real_data_dir, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ranking import train  # pylint: disable=g-import-not-at-top
  from tfrs_pipeline import pipeline  # pylint: disable=g-import-not-at-top

  config = train.RankingConfig(
      model="dcn", max_train_examples=100_000, epochs=2, batch_size=4096,
      learning_rate=3e-3, deep_layers=(64,), validation_fraction=0.05)
  data_config = pipeline.DataConfig(raw_data=real_raw,
                                    data_dir=real_data_dir)
  run_dir = str(tmp_path / "ranking")
  metrics = train.train_and_evaluate(config, data_config, run_dir,
                                     log=lambda *a: None)
  assert metrics["num_test"] > 50_000
  assert metrics["rmse"] < metrics["global_mean_rmse"] - 0.05, metrics
  assert np.isfinite(metrics["mae"])
  for name in ("config.json", "metrics.json", "vocabularies.json",
               "interactions.png"):
    assert os.path.isfile(os.path.join(run_dir, name)), name
  loaded = tf.saved_model.load(metrics["export_dir"])
  out = loaded.signatures["serving_default"](
      user_id=tf.constant(["1", "1"]), movie_id=tf.constant(["1193", "?"]))
  assert np.all(np.isfinite(out["rating"].numpy()))
