"""A short retrieval run on the real MovieLens-1M data.

Skipped unless the raw data is there: `$TFRS_RAW_DATA`, else
`../shared/data` next to the repository. The TFDS data directory is
`$TFRS_DATA_DIR` (reused, e.g. a prebuilt one) or a session temporary
directory (built once, ~3 minutes). One short epoch, then sanity checks against
the popularity baseline computed in the same run.
"""

import json
import os

import numpy as np
import pandas as pd
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

from retrieval import train  # noqa: E402
from tfrs_pipeline import export_layout, pipeline  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _raw_dir():
  for path in (os.environ.get("TFRS_RAW_DATA"),
               os.path.join(REPO, "..", "shared", "data")):
    if path and os.path.isdir(os.path.join(path, "ml-1m")):
      return os.path.abspath(path)
  return None


pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(_raw_dir() is None, reason="real data not found"),
]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, real_data_dir):
  data_dir = real_data_dir  # $TFRS_DATA_DIR, else one build per session
  data_config = pipeline.DataConfig(raw_data=_raw_dir(), data_dir=data_dir)
  # The shipped defaults (user examples) but one epoch (six passes over
  # the users) of one member (the ensemble's code path is covered on the
  # generated data; the full default run: `make bench`).
  # Six passes: the fit part holds 90% of the users (`cold_users`), and
  # three passes left recall@100 at popularity's.
  config = train.RetrievalConfig(epochs=1, members=1, eval_sample=2000,
                                 passes_per_epoch=6)
  run_dir = str(tmp_path_factory.mktemp("retrieval_real") / "run")
  logs = []
  # Loaded once for this run and the two-stage test (same data config).
  data = pipeline.load_data(data_config, log=logs.append)
  result = train.train_and_evaluate(config, data_config, run_dir,
                                    log=logs.append, data=data)
  return dict(result=result, run_dir=run_dir, logs=logs, data_dir=data_dir,
              data=data, data_config=data_config)


def test_real_metrics_are_sane(real_run):
  result = real_run["result"]
  popularity = result["popularity"]
  assert result["num_test_queries"] > 90_000
  assert result["num_users"] > 2_500  # users with a rating
  # Beats popularity after one epoch (the full default run: see README).
  assert result["top_100_accuracy"] > popularity["top_100_accuracy"]
  assert result["recall_at_100"] > popularity["recall_at_100"]
  assert result["recall_at_20"] > popularity["recall_at_20"]
  for k in (1, 5, 10, 50):
    assert result[f"top_{k}_accuracy"] <= result["top_100_accuracy"]
  assert result["index"]["recall_at_k"] >= 0.95
  metrics = json.load(open(os.path.join(real_run["run_dir"],
                                        "metrics.json")))
  assert metrics["top_100_accuracy"] == pytest.approx(
      result["top_100_accuracy"])


def test_real_export_serves(real_run):
  import scann  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = tf.saved_model.load(
      export_layout.locate(real_run["run_dir"], "retrieval"))
  out = model.signatures["serving_default"](
      user_id=tf.constant(["1", "6040", "unknown-user"]))
  assert out["movie_ids"].shape == (3, 500)
  assert out["scores"].shape == (3, 500)
  assert out["embedding"].shape == (3, 128)


def test_real_two_stage_beats_its_sources_order(real_run, tmp_path):
  """The ranker trained on the real candidate lists (one short epoch)
  behind the short retrieval run: its list beats popularity and the
  two-tower source alone on the test split (first 300 users)."""
  from ranking.model import RankingConfig  # pylint: disable=g-import-not-at-top
  from tfrs_pipeline.app import cascade, cascade_eval  # pylint: disable=g-import-not-at-top
  data = real_run["data"]
  config = cascade.CascadeConfig(two_tower=100, ease=100, ease_liked=50,
                                 popularity=20, list_size=150)
  export = export_layout.locate(real_run["run_dir"])
  metrics = cascade.train_ranker(
      data, export, str(tmp_path / "ranking"),
      RankingConfig(epochs=1, max_train_seconds=0, lists_per_batch=64),
      config,
      log=lambda *a: None)
  assert metrics["labels_in_lists"] > 10_000
  # The served sources, fitted as `train sources` fits them (its export,
  # catalogue included, is tested on the generated data).
  users = pd.DataFrame({k: v for k, v in data.table("users").items()
                        if k != "user_history"})
  fitted = cascade.FittedSources.fit(
      data.seen_ratings, users, np.asarray(data.table("movies")["movie_id"]),
      config)
  system = cascade_eval.Cascade(fitted, export,
                                {"mmoe": metrics["export_dir"]},
                                config.served())
  result = cascade_eval.evaluate(system, data, max_users=300,
                                 l2_values=(500.0,), log=lambda *a: None)
  m = result["methods"]
  served = m["two_stage/mmoe"]["ndcg_at_10"]
  assert served > m["peer/popularity"]["ndcg_at_10"] * 1.5, m
  assert served > m["source/two_tower"]["ndcg_at_10"], m
  assert result["candidate_recall"]["merged"] > 0.5
