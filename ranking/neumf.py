"""NeuMF: neural collaborative filtering (He et al. 2017).

Two branches over the user and movie ids of the feature spec, each with its
own embedding tables (as in the paper):

    gmf = p_u * q_i                                  [B, gmf_dim]
    mlp = MLP(concat(p'_u, q'_i))                    [B, mlp_layers[-1]]
    logit = w^T concat(gmf, mlp) + b                 [B]

Losses (`loss`):

* `mse`: rating = global_mean + logit, MSE on `user_rating` (rating
  prediction, as the other rankers);
* `logloss`: implicit feedback, sigmoid cross-entropy of the logit against
  `rated` (1 = a train rating, 0 = a sampled unrated movie);
* `bpr`: pairwise, -mean(log sigmoid(s(u, i) - s(u, j))) of a rated movie
  i (`movie_id`) and a sampled unrated one j (`negative_movie_id`).

Candidate lists (`is_list`): the logit scores every candidate and a
listwise softmax cross-entropy is added (source features are ignored).
`call(inputs)` -> {"rating_raw", "rating" [B] in [1, 5], "score" [B]}:
with `mse` score = the clipped rating; with the implicit losses score =
the preference logit and rating = 1 + 4 * sigmoid(logit) (a preference
on the rating scale, not a rating estimate).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Sequence

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from ranking import listwise
from ranking.model import (MLP, RATED, clip_rating, flat_inputs, is_list,
                           list_labels)
from tfrs_pipeline import errors, features, metrics

LOSSES = ("mse", "logloss", "bpr")
USER_ID, MOVIE_ID = "user_id", "movie_id"  # spec features (FEATURE_BY_NAME)
NEGATIVE_MOVIE = "negative_movie_id"  # bpr: the sampled unrated movie


def bpr_loss(positive: tf.Tensor, negative: tf.Tensor) -> tf.Tensor:
  """-mean(log sigmoid(positive - negative)) of scores [B] -> scalar."""
  return -tf.reduce_mean(tf.math.log_sigmoid(positive - negative))


def _id_embedding(name: str, dim: int, vocabularies, layer_name: str
                  ) -> features.FeatureEmbedding:
  spec = dataclasses.replace(features.FEATURE_BY_NAME[name], dim=int(dim))
  return features.FeatureEmbedding(spec, vocabularies, name=layer_name)


class IdInputs:
  """What the export and evaluation read of a ranker's input layer: the
  raw inputs NeuMF reads (`user_id`, `movie_id` of `features.INPUTS`)."""
  encoder = None  # no bag-of-ids features to cache

  @property
  def input_specs(self):
    return [i for i in features.INPUTS if i.name in (USER_ID, MOVIE_ID)]


class NeuMF(tfrs.models.Model):
  """GMF + MLP over user / movie id embeddings, fused by a linear layer.

  Args:
    vocabularies: fit on train (`pipeline.Data.vocabularies`).
    loss: one of `LOSSES`.
    gmf_dim: width of the GMF user / movie embeddings.
    mlp_dim: width of the MLP branch's user / movie embeddings.
    mlp_layers: units of the MLP's ReLU layers.
    l2: weight of the penalty (batch mean of the looked-up rows' squared
      norms, all four tables).
    global_mean: mean train rating (`mse`: the rating's offset).
    gain: lists: `listwise.GAINS` of a labelled candidate.
  """

  def __init__(self, vocabularies: features.Vocabularies, loss: str = "mse",
               gmf_dim: int = 32, mlp_dim: int = 32,
               mlp_layers: Sequence[int] = (64, 32), l2: float = 1e-4,
               global_mean: float = 0.0, gain: str = "binary"):
    super().__init__()
    if loss not in LOSSES:
      raise errors.ConfigError(f"neumf_loss={loss!r}: expected one of "
                               f"{LOSSES}")
    self.loss_name, self.l2, self.gain = loss, float(l2), gain
    self.global_mean = float(global_mean) if loss == "mse" else 0.0
    self.tables = {
        f"{branch}_{name}": _id_embedding(name, dim, vocabularies,
                                      f"{branch}_{name}")
        for branch, dim in (("gmf", gmf_dim), ("mlp", mlp_dim))
        for name in (USER_ID, MOVIE_ID)}
    self.mlp = MLP(mlp_layers, name="mlp")
    self.fuse = tf.keras.layers.Dense(1, name="fuse")
    self.list_loss = tf.keras.metrics.Mean("list_loss")
    self.rmse = tf.keras.metrics.RootMeanSquaredError("rmse")
    self.inputs_layer = IdInputs()

  def logit(self, rows: Mapping[str, tf.Tensor], training=False):
    """Rows {user_id [N], movie_id [N]} -> (logit [N], penalty scalar)."""
    emb = {key: layer(rows, training=training)
           for key, layer in self.tables.items()}
    gmf = emb[f"gmf_{USER_ID}"] * emb[f"gmf_{MOVIE_ID}"]
    mlp = self.mlp(tf.concat([emb[f"mlp_{USER_ID}"],
                              emb[f"mlp_{MOVIE_ID}"]], axis=1),
                   training=training)
    logit = tf.squeeze(self.fuse(tf.concat([gmf, mlp], axis=1)), axis=1)
    penalty = self.l2 * tf.add_n([tf.reduce_mean(tf.reduce_sum(
        tf.square(e), axis=1)) for e in emb.values()])
    return logit, penalty

  def call(self, inputs: Mapping[str, tf.Tensor], training=False
           ) -> Dict[str, tf.Tensor]:
    logit, _ = self.logit(flat_inputs(inputs), training)
    if self.loss_name == "mse":
      raw = self.global_mean + logit
      rating = clip_rating(raw)
      return {"rating_raw": raw, "rating": rating, "score": rating}
    rating = 1.0 + 4.0 * tf.sigmoid(logit)
    return {"rating_raw": rating, "rating": rating, "score": logit}

  def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
    per_row = flat_inputs(inputs)
    logit, penalty = self.logit(per_row, training)
    if is_list(inputs):
      return self._list_loss(inputs, logit) + penalty
    if self.loss_name == "bpr":
      negative, neg_penalty = self.logit(
          {USER_ID: per_row[USER_ID], MOVIE_ID: per_row[NEGATIVE_MOVIE]},
          training)
      return bpr_loss(logit, negative) + penalty + neg_penalty
    if self.loss_name == "logloss":
      labels = tf.cast(inputs[RATED], tf.float32)
      return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
          labels=labels, logits=logit)) + penalty
    labels = tf.cast(inputs[features.LABEL], tf.float32)
    rating = self.global_mean + logit
    self.rmse.update_state(labels, rating)
    return tf.reduce_mean(tf.square(labels - rating)) + penalty

  def _list_loss(self, inputs, logit) -> tf.Tensor:
    """Listwise softmax over each list's candidates; with `mse` also the
    rating loss on the labelled candidates."""
    ratings, mask, rated = list_labels(inputs)
    loss = listwise.softmax_cross_entropy(
        tf.reshape(logit, tf.shape(ratings)),
        listwise.gains(ratings, self.gain), mask)
    self.list_loss.update_state(loss)
    if self.loss_name != "mse":
      return loss
    flat, weight = tf.reshape(ratings, [-1]), tf.reshape(rated, [-1])
    squared = tf.square(flat - (self.global_mean + logit)) * weight
    return loss + tf.reduce_sum(squared) / tf.maximum(
        tf.reduce_sum(weight), 1.0)


# --------------------------------------------------------------------------
# Top-N evaluation over the whole catalogue (implicit losses).


def _ids(x) -> np.ndarray:
  return np.asarray([v.decode() if isinstance(v, bytes) else str(v)
                     for v in x], dtype=object)


def top_n_metrics(score_fn, prepared, ks: Sequence[int] = (10, 20),
                  batch_users: int = 256) -> Dict[str, float]:
  """precision/recall/map/ndcg at each k of `score_fn(users [U]) -> [U, M]`
  scores of the catalogue (`prepared.movies`), relevant = the user's test
  movies, the user's train and validation movies excluded."""
  catalog = _ids(prepared.movies["movie_id"])
  col = {m: j for j, m in enumerate(catalog)}
  seen = {}
  for part in (prepared.train, prepared.validation):
    for u, m in zip(_ids(part["user_id"]), _ids(part["movie_id"])):
      seen.setdefault(u, []).append(col.get(m, -1))
  test = {}
  for u, m in zip(_ids(prepared.test["user_id"]),
                  _ids(prepared.test["movie_id"])):
    test.setdefault(u, []).append(col.get(m, -1))
  users = sorted(test)
  metric = metrics.RankingMetrics(ks)
  for start in range(0, len(users), batch_users):
    chunk = users[start:start + batch_users]
    relevant = np.zeros((len(chunk), len(catalog)), bool)
    exclude = np.zeros_like(relevant)
    for r, u in enumerate(chunk):
      relevant[r, [j for j in test[u] if j >= 0]] = True
      exclude[r, [j for j in seen.get(u, []) if j >= 0]] = True
    metric.update(score_fn(np.asarray(chunk, object)), relevant & ~exclude,
                  exclude)
  return {**metric.result(), "top_n_users": metric.count}


def model_scores(model: tf.keras.Model, catalog) -> callable:
  """`score_fn` of `top_n_metrics`: the model's `score` of every
  (user, catalogue movie) pair."""
  movies = tf.constant(_ids(catalog).astype(str))

  @tf.function
  def scores(users):
    u = tf.repeat(users, tf.shape(movies)[0])
    m = tf.tile(movies, tf.shape(users))
    out = model({USER_ID: u, MOVIE_ID: m}, training=False)["score"]
    return tf.reshape(out, [tf.shape(users)[0], -1])

  return lambda users: scores(tf.constant(users.astype(str))).numpy()


def popularity_scores(prepared) -> callable:
  """`score_fn` of the popularity peer: train ratings of each movie."""
  counts = np.asarray([prepared.movie_counts.get(m, 0) for m in
                       _ids(prepared.movies["movie_id"])], np.float32)
  return lambda users: np.tile(counts, (len(users), 1))
