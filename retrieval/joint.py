"""The joint retrieval + rating model of TFRS's multitask tutorial.

`JointModel` is a `RetrievalModel` (same query and candidate towers, same
softmax retrieval task over the candidates) with a rating head on top of
the two towers' outputs:

    query = query_model(x)          [B, D]   (members concatenated)
    movie = candidate_model(x)      [B, D]
    rating = RatingHead([query, movie])  [B]  (dense ReLU layers -> 1)

    loss = retrieval_weight * softmax loss per example
         + rating_weight * mean squared error of the example's rating

It trains on rating examples (`RetrievalConfig.examples="rating"`: the
rating task needs each example's rating). The towers serve retrieval as
the two-tower's do (`serving_model.export_model`); `export_rating` writes
the rating head with both towers as its own SavedModel.

```python
config = default_config()  # RetrievalConfig(model="joint", ...)
model = JointModel(config, data.vocabularies, frequencies, corpus=movies)
model.compile(tf.keras.optimizers.Adam(config.learning_rate))
model.fit(data.batches(model.training_examples(data.train), 256, seed))
model.rating(inputs)  # [B] predicted ratings
```
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Sequence

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from retrieval import model as model_lib
from tfrs_pipeline import errors, export, export_layout, features, metrics

# The joint model's settings where they differ from RetrievalConfig's
# two-tower defaults: rating examples (the rating task needs them), one
# tower pair and 2 epochs (one epoch over the ratings costs ~10x a user
# pass; this trains in under 5 minutes on 2 cores), and the loss weights
# chosen on the validation split (README, "The joint model").
DEFAULTS = dict(model="joint", examples="rating", members=1, epochs=2,
                retrieval_weight=1.0, rating_weight=1.0)
RATING_HIDDEN_UNITS = (256, 64)  # the tutorial's rating model
RATING_EXPORT = "rating_export"  # RUN/rating_export/V/rating/
LIKED_THRESHOLD = 4.0


def default_config(**overrides) -> model_lib.RetrievalConfig:
  """`RetrievalConfig` of the joint model: `DEFAULTS`, then `overrides`."""
  return model_lib.RetrievalConfig(**{**DEFAULTS, **overrides})


class RatingHead(tf.keras.layers.Layer):
  """[query [B, D], candidate [B, D]] -> predicted rating [B].

  Args:
    hidden_units: sizes of the dense ReLU layers.
    bias: initial output bias (the train mean rating).
  """

  def __init__(self, hidden_units: Sequence[int] = RATING_HIDDEN_UNITS,
               bias: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.dense_layers = [tf.keras.layers.Dense(u, activation="relu")
                         for u in hidden_units]
    self.output_layer = tf.keras.layers.Dense(
        1, bias_initializer=tf.keras.initializers.Constant(bias))

  def call(self, query: tf.Tensor, candidate: tf.Tensor) -> tf.Tensor:
    x = tf.concat([query, candidate], axis=-1)
    for layer in self.dense_layers:
      x = layer(x)
    return tf.squeeze(self.output_layer(x), -1)


class JointModel(model_lib.RetrievalModel):
  """Retrieval and rating tasks over shared towers (see module docstring).

  Args: as `RetrievalModel`, plus `global_mean`: the train mean rating
  (the rating head's initial bias).
  """

  def __init__(self, config: model_lib.RetrievalConfig,
               vocabularies: features.Vocabularies,
               candidate_frequencies=None, corpus=None,
               global_mean: float = 0.0):
    if config.examples != "rating":
      raise errors.ConfigError("--model joint needs --examples rating")
    super().__init__(config, vocabularies, candidate_frequencies, corpus)
    self.rating_head = RatingHead(bias=global_mean, name="rating_head")
    self.rating_task = tfrs.tasks.Ranking(
        loss=tf.keras.losses.MeanSquaredError(),
        metrics=[tf.keras.metrics.RootMeanSquaredError(name="rating_rmse")])
    self.retrieval_loss = tf.keras.metrics.Mean(name="retrieval_loss")
    self.rating_loss = tf.keras.metrics.Mean(name="rating_loss")

  def rating(self, inputs: Mapping[str, tf.Tensor], training=False
             ) -> tf.Tensor:
    """Raw inputs of both towers [B] -> predicted ratings [B]."""
    return self.rating_head(self.query_model(inputs, training=training),
                            self.candidate_model(inputs, training=training))

  def compute_loss(self, inputs: Dict[str, tf.Tensor], training=False
                   ) -> tf.Tensor:
    """Weighted sum of the softmax loss per example (summed over members)
    and the rating MSE of a batch of rating examples."""
    queries, candidates, softmax = [], [], []
    for query_tower, candidate_tower in zip(self.query_towers,
                                            self.candidate_towers):
      query = query_tower(inputs, training=training)
      candidate = candidate_tower(inputs, training=training)
      softmax.append(self.softmax_loss(query, candidate, candidate_tower,
                                       inputs, training))
      queries.append(query)
      candidates.append(candidate)
    size = tf.cast(tf.shape(inputs["movie_id"])[0], tf.float32)
    retrieval = tf.add_n(softmax) / tf.maximum(size, 1.0)
    predicted = self.rating_head(tf.concat(queries, -1),
                                 tf.concat(candidates, -1))
    rating = self.rating_task(labels=inputs[features.LABEL],
                              predictions=predicted, training=training)
    self.loss_per_example.update_state(retrieval, sample_weight=size)
    self.retrieval_loss.update_state(retrieval, sample_weight=size)
    self.rating_loss.update_state(rating, sample_weight=size)
    return (self.config.retrieval_weight * retrieval
            + self.config.rating_weight * rating)


def _input_specs() -> Dict[str, tf.TensorSpec]:
  """Every input of both towers, each [B]."""
  inputs = {}
  for side in (features.QUERY, features.CANDIDATE):
    for spec in features.inputs_for(side):
      inputs.setdefault(spec.name, spec)
  return export.input_specs(list(inputs.values()))


def predict_ratings(model: JointModel, ds: tf.data.Dataset,
                    batch_size: int = 4096) -> Dict[str, np.ndarray]:
  """Predicted ratings of rating examples (unbatched, e.g. `Data.test`):
  {"user_id", "label", "prediction"}: [Q] each."""
  names = list(_input_specs())

  @tf.function
  def run(batch):
    return model.rating({n: batch[n] for n in names if n in batch})

  users, labels, predictions = [], [], []
  for batch in ds.batch(batch_size).prefetch(2):
    predictions.append(run(batch).numpy())
    users.append(batch["user_id"].numpy().astype(str))
    labels.append(batch[features.LABEL].numpy())
  if not predictions:
    return {k: np.zeros(0) for k in ("user_id", "label", "prediction")}
  return {"user_id": np.concatenate(users),
          "label": np.concatenate(labels).astype(np.float64),
          "prediction": np.concatenate(predictions).astype(np.float64)}


def rating_metrics(model: JointModel, ds: tf.data.Dataset,
                   global_mean: float) -> Dict[str, Any]:
  """`rmse`, `mae`, `spearman` (+ `spearman_users`), `liked_auc`
  (rating >= 4, the predicted rating as score) of the model's predicted
  rating (clipped to [1, 5], as a client would) on rating examples, and
  the global mean's `global_mean_rmse` beside them."""
  out = predict_ratings(model, ds)
  labels = out["label"]
  predicted = np.clip(out["prediction"], 1.0, 5.0)
  return {
      "rmse": metrics.rmse(labels, predicted),
      "mae": metrics.mae(labels, predicted),
      **metrics.spearman_per_user(out["user_id"], labels, predicted),
      "liked_auc": metrics.auc(labels >= LIKED_THRESHOLD, predicted),
      "global_mean_rmse": metrics.rmse(labels,
                                       np.full_like(labels, global_mean)),
      "num_rating_test": int(len(labels)),
  }


class RatingServer(tf.Module):
  """`serving_default`: every input of both towers [B] -> {rating: [B]}
  (the head's raw output, not clipped)."""

  def __init__(self, model: JointModel):
    super().__init__(name="rating_server")
    self.query_model = model.query_model
    self.candidate_model = model.candidate_model
    self.rating_head = model.rating_head
    self.serving_default = tf.function(
        self._serve, input_signature=[_input_specs()])

  def _serve(self, inputs):
    inputs = dict(inputs)
    return {"rating": self.rating_head(self.query_model(inputs),
                                       self.candidate_model(inputs))}


def export_rating(model: JointModel, run_dir: str, log=print) -> str:
  """Publishes RUN/rating_export/V/rating (`RatingServer`); returns its
  path. The retrieval export (RUN/export) is the two-tower's."""
  base = os.path.join(run_dir, RATING_EXPORT)
  with export_layout.new_version(base, "rating", log=log) as v:
    server = RatingServer(model)
    path = export.save_model(
        server, os.path.join(v.tmp, "rating"),
        signatures={"serving_default": server.serving_default}, log=log)
  return v.final(path)
