"""Test-set evaluation of the ranking models.

Metrics (all on the test split, never used for tuning):

* every model: `rmse`, `mae` of the served (clipped) rating; the global
  mean's `global_mean_rmse` / `global_mean_mae` on the same split;
  `spearman` (mean per-user Spearman rank correlation of predicted and
  true ratings, `metrics.spearman_per_user`) over `spearman_users` users;
  `liked_auc` (rating >= 4) scored by the predicted rating (the MMoE's
  by its liked head, below);
* MMoE, per task:
    - `rating_rmse`, `rating_mae` (= `rmse`, `mae`);
    - `liked_auc`, `liked_log_loss`: P(liked) vs rating >= 4 on the test
      ratings; `rating_liked_auc`: the predicted rating used as the score;
    - `engagement_auc`, `engagement_log_loss`: served P(engage) (no bias
      tower) on test ratings (positives) plus `num_negatives` sampled
      movies per rating that the user rated neither in train nor in test
      (seed + 2); `engagement_auc_with_bias_tower` adds the bias logit;
    - `gate_utilization`: {task: [mean gate weight per expert]} over the
      test ratings.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from ranking.model import LIKED_THRESHOLD, RATED, MMoE, TASKS, RankingConfig
from tfrs_pipeline import features, metrics


def _batches(columns: Mapping[str, np.ndarray], batch_size: int, names):
  ds = tf.data.Dataset.from_tensor_slices(
      {k: columns[k] for k in names if k in columns})
  return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def predict(model: tf.keras.Model, columns: Mapping[str, np.ndarray],
            batch_size: int = 8192, with_gates: bool = False,
            with_bias_tower: bool = False) -> Dict[str, np.ndarray]:
  """Serving outputs of `model` on numpy columns: {name: [N]}; with
  `with_gates`, also `gate_<task>` [N, K] (MMoE); with `with_bias_tower`,
  `engagement_train` logits (MMoE)."""

  @tf.function
  def step(batch):
    out = dict(model(batch, training=False))
    if isinstance(model, MMoE) and (with_gates or with_bias_tower):
      raw = model.logits(batch, with_bias_tower=True)
      for t, g in raw["gates"].items():
        out[f"gate_{t}"] = g
      out["engagement_train"] = raw["engagement_train"]
    return out

  chunks: Dict[str, list] = {}
  names = [i.name for i in model.inputs_layer.input_specs]
  for batch in _batches(columns, batch_size, names):
    for k, v in step(batch).items():
      chunks.setdefault(k, []).append(v.numpy())
  return {k: np.concatenate(v) for k, v in chunks.items()}


def evaluate(model: tf.keras.Model, config: RankingConfig, prepared,
             engagement: Optional[Mapping[str, np.ndarray]], log=print
             ) -> Dict[str, Any]:
  """Test metrics of a trained model (see the module docstring);
  `engagement`: the test ratings with sampled unrated movies (column
  `RATED` 1 / 0), for the MMoE's engagement head."""
  test = prepared.test
  labels = test[features.LABEL].astype(np.float64)
  out = predict(model, test, with_gates=True)
  result: Dict[str, Any] = {
      "rmse": metrics.rmse(labels, out["rating"]),
      "mae": metrics.mae(labels, out["rating"]),
      "global_mean_rmse": metrics.rmse(
          labels, np.full_like(labels, prepared.global_mean)),
      "global_mean_mae": metrics.mae(
          labels, np.full_like(labels, prepared.global_mean)),
      "num_test": int(len(labels)),
      **metrics.spearman_per_user(test["user_id"], labels, out["rating"]),
  }
  liked = labels >= LIKED_THRESHOLD
  if not isinstance(model, MMoE):
    result["liked_auc"] = metrics.auc(liked, out["rating"])
    return result
  result.update(
      rating_rmse=result["rmse"], rating_mae=result["mae"],
      liked_auc=metrics.auc(liked, out["liked"]),
      liked_log_loss=metrics.log_loss(liked, out["liked"]),
      rating_liked_auc=metrics.auc(liked, out["rating"]),
      gate_utilization={t: out[f"gate_{t}"].mean(axis=0).tolist()
                        for t in TASKS})
  # Engagement: test ratings vs unrated movies (neither train nor test).
  eng_out = predict(model, engagement, with_bias_tower=True)
  rated = engagement[RATED] > 0
  with_bias = 1.0 / (1.0 + np.exp(-eng_out["engagement_train"]))
  result.update(
      engagement_auc=metrics.auc(rated, eng_out["engagement"]),
      engagement_log_loss=metrics.log_loss(rated, eng_out["engagement"]),
      engagement_auc_with_bias_tower=metrics.auc(rated, with_bias),
      engagement_log_loss_with_bias_tower=metrics.log_loss(rated, with_bias),
      score_engagement_auc=metrics.auc(rated, eng_out["score"]))
  return result
