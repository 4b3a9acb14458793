"""Ranking models: a shared input layer, DCN-v2 and MMoE with a bias tower.

Both models read the raw inputs of `features.inputs_for(RANKING)` (user and
movie ids, demographics, genres, title, director, star, release year, time
context, and any feature a teammate adds to the spec) through one shared
input layer, `RankingInputs`:

    x0 = dropout(concat(embedding(feature) for feature in RANKING))  [B, D]
    bias = global_mean + b_user[user_id] + b_movie[movie_id]         [B]
           + <p_user[user_id], q_movie[movie_id]>  (factorization_dim > 0)

The bias is the biased-MF rating (Koren et al. 2009) of the pair: with
`factorization_dim` > 0 dedicated user and movie factor tables (separate
from the feature embeddings in x0, with their own L2) add the classic
dot-product term, so the networks below only model the residual from
side features and crosses ("MF + side features" hybrid).

* `DCN` (Wang et al. 2021, "DCN V2"): a cross network of
  `tfrs.layers.dcn.Cross` layers (full rank, or low rank W = U V with
  `projection_dim`) and a deep network, either stacked (deep after cross)
  or parallel (deep beside cross, outputs concatenated), then a linear
  head. Rating = bias (incl. <p_u, q_i>) + head; trained with MSE.
* `MMoE` (Ma et al. KDD 2018; Zhao et al. RecSys 2019): optional cross
  layers in the shared bottom, `num_experts` expert MLPs, one softmax gate
  per task over the experts and one tower per task. Tasks:

    - engagement: did the user rate the movie (rated = 1, sampled unrated
      movie = 0), sigmoid cross-entropy on every example;
    - satisfaction (`rating`): rating regression (MSE), rated rows only;
      rating = bias (incl. <p_u, q_i>) + tower output, as in DCN;
    - liked: rating >= 4, sigmoid cross-entropy, rated rows only. With
      `liked_from_rating` its logit also gets a learned affine function
      of the rating output (a*rating + b): liked is a threshold of the
      rating, so the head starts from the rating estimate (with its
      biased-MF term) and its tower models the rest.

  A shallow selection-bias tower (`BiasTower`) reads bias features that
  describe exposure rather than preference (see `BiasFeatures`); its logit
  is added to the engagement logit in training only, so the served
  engagement probability is the de-biased one.

Every model's `call(inputs)` returns a dict of serving outputs (see
`serving_outputs`); `compute_loss` reads labels `user_rating` (and, for
MMoE, `rated`) from the same feature dict.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from ranking import deepfm, listwise, rows, widedeep
from tfrs_pipeline import errors, features, optim

LIKED_THRESHOLD = 4.0
EXAMPLES = ("lists", "ratings")
# MMoE serving score: log P(engage among the candidates) + log P(liked)
# (lists), P(engage) * E[rating], or the rating.
SCORES = ("engage_liked", "engage_x_rating", "rating")
MODELS = ("mmoe", "dcn", "widedeep", "deepfm")
STRUCTURES = ("stacked", "parallel")  # DCN-v2: cross -> deep, cross || deep
NEGATIVE_SAMPLINGS = ("uniform", "popularity")
LIST_MASK = "list_mask"  # lists: 1 for a real candidate, 0 for padding
RATED = "rated"  # label: 1 for a real rating, 0 for a sampled negative
MIN_RATING, MAX_RATING = 1.0, 5.0


@dataclasses.dataclass
class RankingConfig:
  """Hyperparameters of a ranking run (defaults: the shipped model).

  Default model: `mmoe`, the one that serves best. In the same `make
  bench` run, behind the same retrieval stage, it ranks the candidates
  better than DCN-v2 (two-stage NDCG@10 0.297 vs 0.266: its score
  P(engage) x rating knows what users watch, not only how they rate) and
  has the lower test RMSE (0.849 vs 0.857), for ~2.2x DCN-v2's fit time.
  """
  model: str = "mmoe"
  """The ranker: `mmoe` (multi-gate mixture of experts: engagement,
  rating and liked tasks), `dcn` (DCN-v2 rating model), `widedeep` (Wide
  & Deep) or `deepfm` (DeepFM)."""
  examples: str = "lists"
  """What one training example is: `lists` (a user's candidate list from
  the two-stage sources, labelled with held-out ratings) or `ratings`
  (one train rating, no source features; needs no retrieval run)."""
  gain: str = "binary"
  """lists: listwise gain of a labelled candidate: `binary` (any rating),
  `rating` or `liked` (rated 4 or 5)."""
  lists_per_batch: int = 32
  """lists: users per batch (each with its candidate rows)."""
  rating_lists: bool = False
  """lists: also fit the rating and liked tasks on every fit-part rating
  (one-candidate lists, batch_size ratings per batch)."""
  # Off: on the validation split it lowered NDCG@10 (known users 0.1758 vs
  # 0.1780, demographics-only new users 0.368 vs 0.392): at serving,
  # without the tower, the main model had not learned what the ranks say.
  position_bias: bool = False
  """lists: the selection-bias tower also reads the source ranks."""
  # Shared input layer. The spec's ranking features include
  # `rated_movies`, the user's other train movies pooled as SVD++'s
  # implicit feedback (sum / sqrt(n)): it lowered validation RMSE by
  # ~0.006 (0.8557 vs ~0.862 after 6 epochs in the same experiment).
  extra_features: Tuple[str, ...] = ()
  """Spec features (tfrs_pipeline/features.py) to use besides the ranking
  ones, comma-separated (empty: none)."""
  embedding_l2: float = 1e-3
  """L2 penalty on the embeddings looked up in a batch (batch mean of the
  squared norms); 0: none."""
  embedding_dropout: float = 0.2
  """Dropout rate on the concatenated input embeddings, in [0, 1)."""
  bias_terms: bool = True
  """Add global mean + per-user + per-movie rating biases."""
  # 64 chosen on the validation slice of train (it lowers validation RMSE
  # by about 0.005; factorization_l2 0.06 ties 0.03).
  factorization_dim: int = 64
  """d > 0 adds the matrix-factorization term <p_u, q_i> of d-dim user
  and movie factors to the rating (DCN, MMoE rating task); 0: off."""
  factorization_l2: float = 0.03
  """L2 weight on the looked-up factors (batch mean of |p_u|^2 +
  |q_i|^2)."""
  history_length: int = 2000
  """Most recent movie ids of a user's history, when a feature reads
  them."""
  # DCN-v2.
  cross_layers: int = 2
  """dcn: cross layers (0: deep network only)."""
  projection_dim: int = 0
  """dcn: rank r of the cross layers' weights (0: full rank)."""
  structure: str = "stacked"
  """dcn: `stacked` (cross then deep) or `parallel` (cross beside deep)."""
  deep_layers: Tuple[int, ...] = (256, 128)
  """dcn, widedeep, deepfm: units of the deep ReLU layers,
  comma-separated."""
  dropout: float = 0.2
  """dcn, widedeep, deepfm (and the MMoE's experts and towers): dropout
  rate after each deep layer, in [0, 1)."""
  diag_scale: float = 0.0
  """dcn: adds diag_scale * I to the cross layers' W (steadies a low
  rank)."""
  # MMoE.
  num_experts: int = 4
  """mmoe: shared experts."""
  expert_layers: Tuple[int, ...] = (128,)
  """mmoe: units of each expert's layers, comma-separated."""
  tower_layers: Tuple[int, ...] = (64,)
  """mmoe: units of each task tower's layers, comma-separated."""
  mmoe_cross_layers: int = 1
  """mmoe: cross layers in the shared bottom (0: none)."""
  engagement_weight: float = 0.5
  """mmoe: loss weight of the engagement task."""
  rating_weight: float = 1.0
  """mmoe: loss weight of the rating task."""
  liked_weight: float = 0.5
  """mmoe: loss weight of the liked (rated 4 or 5) task."""
  liked_from_rating: bool = True
  """mmoe: add a * rating + b (learned) to the liked logit."""
  num_negatives: int = 1
  """mmoe, examples=ratings: sampled unrated movies per train rating."""
  negative_sampling: str = "uniform"
  """mmoe, examples=ratings: how negatives are drawn: `uniform` or
  `popularity` (train count ** 0.75)."""
  bias_tower_layers: Tuple[int, ...] = (16,)
  """mmoe: units of the selection-bias tower, comma-separated."""
  bias_dropout: float = 0.3
  """mmoe: dropout rate in the selection-bias tower, in [0, 1)."""
  score: str = "engage_liked"
  """mmoe: the serving score that orders the list: `engage_liked` (log
  P(engage among the candidates) + log P(liked)), `engage_x_rating`
  (P(engage) x E[rating]) or `rating`."""
  # Wide & Deep.
  wide: bool = True
  """widedeep: the wide linear part over raw and crossed feature values
  (false: the deep part alone)."""
  wide_crosses: Tuple[str, ...] = (
      "user_age:movie_genres", "user_gender:movie_genres",
      "user_occupation:movie_genres", "user_occupation:director",
      "user_age:movie_id", "user_gender:movie_id")
  """widedeep: crossed features of the wide part, `a:b` pairs of spec
  feature names (tfrs_pipeline/features.py), comma-separated."""
  wide_buckets: int = 100_000
  """widedeep: most weights per cross (more value pairs are hashed)."""
  wide_l2: float = 1e-3
  """widedeep, deepfm: L2 weight on the looked-up wide / FM weights (batch
  mean of their squares)."""
  # DeepFM.
  fm: bool = True
  """deepfm: the factorization machine (first and second order) beside
  the deep part (false: the deep part alone)."""
  fm_dim: int = 16
  """deepfm: common dimension k the field embeddings are projected to for
  the pairwise terms."""
  max_train_seconds: float = 420.0
  """Fit time budget in seconds: no epoch starts that would end past it;
  0: none."""
  learning_rate: float = 2e-3
  """Adam learning rate."""
  lr_schedule: str = "cosine"
  """`cosine` decays the learning rate to 0 at the last epoch; `constant`
  keeps it."""
  batch_size: int = 4096
  """Ratings per training step (examples=ratings, and rating_lists)."""
  # lists: the validation NDCG peaked after the first epoch.
  epochs: int = 2
  """Maximum training epochs."""
  patience: int = 2
  """Early stopping: epochs without a better validation score (best
  weights restored)."""
  validation_fraction: float = 0.05
  """Share of the training examples held out for validation and early
  stopping."""
  max_train_examples: int = 0
  """0: every train example; else only the first N (short runs)."""
  seed: int = 42
  """Seed of initialization, validation split, shuffling and negative
  sampling."""

  def __post_init__(self):
    self.extra_features = tuple(str(f) for f in self.extra_features if f)
    self.deep_layers = tuple(int(u) for u in self.deep_layers)
    self.expert_layers = tuple(int(u) for u in self.expert_layers)
    self.tower_layers = tuple(int(u) for u in self.tower_layers)
    self.bias_tower_layers = tuple(int(u) for u in self.bias_tower_layers)
    self.wide_crosses = tuple(str(c) for c in self.wide_crosses if c)
    widedeep.parse_crosses(self.wide_crosses)  # ConfigError if unknown
    checks = {"model": MODELS, "structure": STRUCTURES,
              "negative_sampling": NEGATIVE_SAMPLINGS,
              "score": SCORES, "examples": EXAMPLES,
              "gain": listwise.GAINS,
              "lr_schedule": optim.LR_SCHEDULES}
    for name, allowed in checks.items():
      if getattr(self, name) not in allowed:
        raise errors.ConfigError(f"{name}={getattr(self, name)!r}: expected one of "
                         f"{allowed}")


def ranking_features(config: Optional[RankingConfig] = None
                     ) -> List[features.Feature]:
  """The model's features: `features_for(RANKING)` plus the config's
  `extra_features` that the spec defines, in spec order."""
  extra = set(config.extra_features if config else ())
  pointwise = config is not None and config.examples == "ratings"
  return [f for f in features.FEATURES
          if (features.RANKING in f.models or f.name in extra)
          and not (pointwise and f.entity == features.SOURCE)]


def ranking_inputs(config: Optional[RankingConfig] = None
                   ) -> List[features.Input]:
  """The raw inputs of `ranking_features(config)`, in `INPUTS` order."""
  needed = {f.source for f in ranking_features(config)}
  return [i for i in features.INPUTS if i.name in needed]


# --------------------------------------------------------------------------
# Building blocks.


class RankingInputs(tf.keras.layers.Layer):
  """The shared input layer: raw inputs -> x0 [B, D] and a rating bias [B].

  Args:
    vocabularies: fit on train (`pipeline.Data.vocabularies`).
    feature_list: features to embed; default `features_for(RANKING)`
      (the models pass `ranking_features(config)`).
    dropout: dropout rate on x0 (training only).
    bias_terms: add per-user and per-movie scalar biases (embeddings of
      width 1 over the `user_id` / `movie_id` vocabularies, OOV buckets
      for unknown ids) to `global_mean`.
    global_mean: mean train rating (the bias of an unknown user and movie
      before training).
    factorization_dim: d > 0 adds <p_u, q_i> to the bias, from d-dim
      user-id / movie-id factor tables (N(0, 0.01) init, OOV buckets as
      the id features) kept apart from the x0 embeddings; 0 = none.
    embedding_l2, factorization_l2: weights of the returned penalty:
      embedding_l2 * (|x0|^2 + b_u^2 + b_i^2) + factorization_l2 *
      (|p_u|^2 + |q_i|^2), each a batch mean of looked-up rows.
  """

  def __init__(self, vocabularies: features.Vocabularies,
               feature_list: Optional[Sequence[features.Feature]] = None,
               dropout: float = 0.0, bias_terms: bool = True,
               global_mean: float = 0.0, factorization_dim: int = 0,
               embedding_l2: float = 1.0, factorization_l2: float = 0.0,
               **kwargs):
    super().__init__(name=kwargs.pop("name", "ranking_inputs"), **kwargs)
    self.feature_list = list(feature_list or
                             features.features_for(features.RANKING))
    self.encoder = features.FeatureEncoder(self.feature_list, vocabularies,
                                           name="feature_encoder")
    self.dropout = tf.keras.layers.Dropout(dropout)
    self.global_mean = float(global_mean)
    self.biases = []
    names = {f.name for f in self.feature_list}
    if bias_terms:
      for name in ("user_id", "movie_id"):
        if name in names:
          spec = dataclasses.replace(features.FEATURE_BY_NAME[name], dim=1)
          self.biases.append(features.FeatureEmbedding(
              spec, vocabularies, name=f"{name}_bias"))
    self.embedding_l2 = float(embedding_l2)
    self.factorization_l2 = float(factorization_l2)
    self.factors = []
    if factorization_dim and {"user_id", "movie_id"} <= names:
      for name in ("user_id", "movie_id"):
        spec = dataclasses.replace(features.FEATURE_BY_NAME[name],
                                   dim=int(factorization_dim))
        layer = features.FeatureEmbedding(spec, vocabularies,
                                          name=f"{name}_factors")
        # Small init, as biased MF: the dot product starts near 0.
        layer.embedding.embeddings_initializer = (
            tf.keras.initializers.RandomNormal(stddev=0.01))
        self.factors.append(layer)

  @property
  def slices(self) -> Dict[str, slice]:
    """Columns of each feature in x0 (`FeatureEncoder.slices`)."""
    return self.encoder.slices

  @property
  def output_dim(self) -> int:
    return self.encoder.output_dim

  @property
  def input_specs(self) -> List[features.Input]:
    """The raw inputs this layer reads, in `INPUTS` order."""
    needed = {f.source for f in self.feature_list}
    return [i for i in features.INPUTS if i.name in needed]

  @classmethod
  def from_ranking_config(
      cls, vocabularies: features.Vocabularies, config: "RankingConfig",
      global_mean: float = 0.0,
      feature_list: Optional[Sequence[features.Feature]] = None
  ) -> "RankingInputs":
    """The input layer both ranking models build from a `RankingConfig`."""
    return cls(vocabularies, feature_list or ranking_features(config),
               config.embedding_dropout, config.bias_terms, global_mean,
               config.factorization_dim, config.embedding_l2,
               config.factorization_l2)

  def call(self, inputs: Mapping[str, tf.Tensor], training=False
           ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Returns x0 [B, D], bias [B] (incl. <p_u, q_i>) and the weighted
    L2 penalty (scalar, see the class docstring).

    Candidate lists (`is_list`): user and context inputs [B], movie and
    source inputs [B, L]; user-side features are computed once per list
    and repeated, and every output is per candidate, flattened: [B * L].
    """
    per_row = flat_inputs(inputs)
    x0 = tf.concat([self._embed(e, inputs, per_row, training)
                    for e in self.encoder.embeddings], axis=1)
    penalty = tf.reduce_mean(tf.reduce_sum(tf.square(x0), axis=1))
    bias = tf.fill(tf.shape(x0)[:1], self.global_mean)
    for layer in self.biases:
      b = tf.squeeze(self._embed(layer, inputs, per_row, training), axis=1)
      bias += b
      penalty += tf.reduce_mean(tf.square(b))
    penalty *= self.embedding_l2
    if self.factors:
      p, q = (self._embed(layer, inputs, per_row, training)
              for layer in self.factors)
      bias += tf.reduce_sum(p * q, axis=1)
      penalty += self.factorization_l2 * tf.reduce_mean(
          tf.reduce_sum(tf.square(p) + tf.square(q), axis=1))
    return self.dropout(x0, training=training), bias, penalty

  @staticmethod
  def _embed(layer: features.FeatureEmbedding, inputs, per_row, training):
    """One feature's embedding per candidate row: [B * L, dim]."""
    return rows.embed_rows(layer, inputs, per_row, training)


# Row helpers, defined in `ranking.rows` (kept here for existing callers).
is_list, list_size, flat_inputs = (rows.is_list, rows.list_size,
                                   rows.flat_inputs)


def list_labels(inputs: Mapping[str, tf.Tensor]):
  """(held-out ratings [B, L] (0 = unlabelled), mask [B, L], labelled
  [B, L]) of a batch of candidate lists, as float32."""
  ratings = tf.cast(inputs[features.LABEL], tf.float32)
  mask = tf.cast(inputs[LIST_MASK], tf.float32)
  rated = tf.cast(ratings > 0, tf.float32) * mask
  return ratings * mask, mask, rated


class MLP(tf.keras.layers.Layer):
  """ReLU layers with dropout: [B, D] -> [B, units[-1]] (identity if none)."""

  def __init__(self, units: Sequence[int], dropout: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.dense = [tf.keras.layers.Dense(u, activation="relu") for u in units]
    self.drop = [tf.keras.layers.Dropout(dropout) for _ in units]

  def call(self, x: tf.Tensor, training=False) -> tf.Tensor:
    for dense, drop in zip(self.dense, self.drop):
      x = drop(dense(x), training=training)
    return x


class CrossNetwork(tf.keras.layers.Layer):
  """`num_layers` DCN-v2 cross layers: x_{l+1} = x0 * (W x_l + b) + x_l.

  Args:
    num_layers: number of `tfrs.layers.dcn.Cross` layers.
    projection_dim: 0 = full-rank W [D, D]; r > 0 = low-rank W = U V with
      U [D, r], V [r, D].
    diag_scale: adds `diag_scale * I` to W (stabilizes low rank).

  Input [B, D] -> output [B, D].
  """

  def __init__(self, num_layers: int, projection_dim: int = 0,
               diag_scale: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.cross_layers = [
        tfrs.layers.dcn.Cross(projection_dim=projection_dim or None,
                              diag_scale=diag_scale,
                              kernel_initializer="glorot_uniform",
                              name=f"cross_{i}")
        for i in range(num_layers)
    ]

  def call(self, x0: tf.Tensor) -> tf.Tensor:
    x = x0
    for layer in self.cross_layers:
      x = layer(x0, x)
    return x

  def weight_matrices(self) -> List[np.ndarray]:
    """The learned W [D, D] of each layer (U @ V for low rank), in the
    paper's orientation: row = output column, column = input column."""
    out = []
    for layer in self.cross_layers:
      if getattr(layer, "_projection_dim", None):
        kernel = (layer._dense_u.kernel.numpy()  # pylint: disable=protected-access
                  @ layer._dense_v.kernel.numpy())  # pylint: disable=protected-access
      else:
        kernel = layer._dense.kernel.numpy()  # pylint: disable=protected-access
      out.append(kernel.T)  # Dense computes x @ K, i.e. W = K^T.
    return out


class DCNv2Body(tf.keras.layers.Layer):
  """Cross network and deep network, stacked or parallel.

  stacked:  x0 -> cross -> deep -> [B, deep_layers[-1]]
  parallel: concat(cross(x0), deep(x0)) -> [B, D + deep_layers[-1]]
  """

  def __init__(self, cross_layers: int, projection_dim: int,
               structure: str, deep_layers: Sequence[int],
               dropout: float = 0.0, diag_scale: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    if structure not in ("stacked", "parallel"):
      raise ValueError(f"unknown structure {structure!r}")
    self.structure = structure
    self.cross = CrossNetwork(cross_layers, projection_dim, diag_scale,
                              name="cross_network")
    self.deep = MLP(deep_layers, dropout, name="deep_network")

  def call(self, x0: tf.Tensor, training=False) -> tf.Tensor:
    if self.structure == "stacked":
      return self.deep(self.cross(x0), training=training)
    return tf.concat([self.cross(x0), self.deep(x0, training=training)],
                     axis=1)


def rating_task(prefix: str = "") -> tfrs.tasks.Ranking:
  """MSE regression task reporting RMSE and MAE."""
  return tfrs.tasks.Ranking(
      loss=tf.keras.losses.MeanSquaredError(),
      metrics=[tf.keras.metrics.RootMeanSquaredError(name=f"{prefix}rmse"),
               tf.keras.metrics.MeanAbsoluteError(name=f"{prefix}mae")])


def binary_task(prefix: str) -> tfrs.tasks.Ranking:
  """Sigmoid cross-entropy task (logits) reporting AUC."""
  return tfrs.tasks.Ranking(
      loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
      metrics=[tf.keras.metrics.AUC(from_logits=True, name=f"{prefix}auc")])


def clip_rating(x: tf.Tensor) -> tf.Tensor:
  """Served / evaluated ratings are clipped to the rating scale [1, 5]."""
  return tf.clip_by_value(x, MIN_RATING, MAX_RATING)


# --------------------------------------------------------------------------
# DCN-v2.


class RatingRanker(tfrs.models.Model):
  """The single-rating rankers (DCN-v2, Wide & Deep, DeepFM):

      x0, bias = inputs_layer(inputs)        [B, D], [B]
      h, side = transform(x0, inputs)        [B, H], [B, units] or None
      rating = bias + rating_head(h) (+ side[:, 0])                  [B]
      score = score_head(h) (+ side[:, 1])   lists only, else = rating

  Subclasses build their body and implement `transform`. `compute_loss`:
  ratings: MSE of the rating; lists: listwise softmax of the score
  (`gain`) + the rating MSE on the labelled candidates
  (`engagement_weight`, `rating_weight`). `call(inputs)` ->
  {"rating_raw": [B] unclipped, "rating": [B] clipped to [1, 5],
  "score": [B]}.
  """

  metric_prefix = ""  # of the rating task's metrics (`rmse`, `mae`)

  def __init__(self, vocabularies: features.Vocabularies,
               config: RankingConfig, global_mean: float = 0.0,
               feature_list: Optional[Sequence[features.Feature]] = None):
    super().__init__()
    self.config = config
    self.inputs_layer = RankingInputs.from_ranking_config(
        vocabularies, config, global_mean, feature_list)
    self.head = tf.keras.layers.Dense(1, name="rating_head")
    # Lists: a second head scores the candidates (listwise loss).
    self.score_head = (tf.keras.layers.Dense(1, name="score_head")
                       if config.examples == "lists" else None)
    self.task = rating_task(self.metric_prefix)
    self.list_loss = tf.keras.metrics.Mean("list_loss")

  @property
  def units(self) -> int:
    """Outputs of a side part: rating (and list score)."""
    return 1 if self.score_head is None else 2

  @property
  def cross_network(self) -> Optional[CrossNetwork]:
    """Cross layers for the interaction heatmap (None: none)."""
    return None

  def transform(self, x0: tf.Tensor, inputs, training=False
                ) -> Tuple[tf.Tensor, Optional[tf.Tensor], tf.Tensor]:
    """(h [B, H], side [B, units] or None, extra penalty)."""
    raise NotImplementedError

  def _forward(self, inputs, training=False):
    x0, bias, penalty = self.inputs_layer(inputs, training=training)
    h, side, more = self.transform(x0, inputs, training)
    rating = bias + tf.squeeze(self.head(h), axis=1)
    score = (tf.squeeze(self.score_head(h), axis=1)
             if self.score_head is not None else None)
    if side is not None:
      rating += side[:, 0]
      if score is not None:
        score += side[:, 1]
    return rating, score, penalty + more

  def call(self, inputs: Mapping[str, tf.Tensor], training=False
           ) -> Dict[str, tf.Tensor]:
    rating, score, _ = self._forward(inputs, training)
    clipped = clip_rating(rating)
    return {"rating_raw": rating, "rating": clipped,
            "score": clipped if score is None else score}

  def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
    rating, score, penalty = self._forward(inputs, training)
    if not is_list(inputs):
      loss = self.task(labels=inputs[features.LABEL][:, tf.newaxis],
                       predictions=rating[:, tf.newaxis])
      return loss + penalty  # already weighted (RankingInputs)
    ratings, mask, rated = list_labels(inputs)
    list_loss = listwise.softmax_cross_entropy(
        tf.reshape(score, tf.shape(ratings)),
        listwise.gains(ratings, self.config.gain), mask)
    self.list_loss.update_state(list_loss)
    flat_rated = tf.reshape(rated, [-1, 1])
    norm = tf.cast(tf.size(flat_rated), tf.float32) / tf.maximum(
        tf.reduce_sum(flat_rated), 1.0)
    rating_loss = self.task(labels=tf.reshape(ratings, [-1, 1]),
                            predictions=rating[:, tf.newaxis],
                            sample_weight=flat_rated)
    return (self.config.engagement_weight * list_loss
            + norm * self.config.rating_weight * rating_loss + penalty)


class DCN(RatingRanker):
  """DCN-v2 rating model: h = `DCNv2Body`(x0) (cross and deep networks)."""

  def __init__(self, vocabularies: features.Vocabularies,
               config: RankingConfig, global_mean: float = 0.0,
               feature_list: Optional[Sequence[features.Feature]] = None):
    super().__init__(vocabularies, config, global_mean, feature_list)
    self.body = DCNv2Body(config.cross_layers, config.projection_dim,
                          config.structure, config.deep_layers,
                          config.dropout, config.diag_scale, name="dcn")

  @property
  def cross_network(self) -> CrossNetwork:
    return self.body.cross

  def transform(self, x0, inputs, training=False):
    return self.body(x0, training=training), None, 0.0


class WideDeep(RatingRanker):
  """Wide & Deep (Cheng et al. 2016): h = MLP(x0) (deep part); side = the
  linear model over raw and crossed feature values (`widedeep.WidePart`,
  `wide_crosses`), absent with `wide=False`."""

  metric_prefix = "rating_"

  def __init__(self, vocabularies: features.Vocabularies,
               config: RankingConfig, global_mean: float = 0.0,
               feature_list: Optional[Sequence[features.Feature]] = None):
    super().__init__(vocabularies, config, global_mean, feature_list)
    self.deep = MLP(config.deep_layers, config.dropout, name="deep")
    encoder = self.inputs_layer.encoder
    self.wide = (widedeep.WidePart(
        encoder.features, vocabularies, encoder,
        widedeep.parse_crosses(config.wide_crosses), self.units,
        config.wide_buckets, name="wide") if config.wide else None)

  def transform(self, x0, inputs, training=False):
    h = self.deep(x0, training=training)
    if self.wide is None:
      return h, None, 0.0
    side, penalty = self.wide(inputs, training=training)
    return h, side, self.config.wide_l2 * penalty


class DeepFM(RatingRanker):
  """DeepFM (Guo et al. 2017): h = MLP(x0) (deep part); side = a
  factorization machine over the same field embeddings
  (`deepfm.FMPart`: first order + pairwise <v_f, v_g>), absent with
  `fm=False`."""

  metric_prefix = "rating_"

  def __init__(self, vocabularies: features.Vocabularies,
               config: RankingConfig, global_mean: float = 0.0,
               feature_list: Optional[Sequence[features.Feature]] = None):
    super().__init__(vocabularies, config, global_mean, feature_list)
    self.deep = MLP(config.deep_layers, config.dropout, name="deep")
    self.fm = (deepfm.FMPart(
        self.inputs_layer.encoder.features, vocabularies,
        self.inputs_layer.slices, config.fm_dim, self.units, name="fm")
               if config.fm else None)

  def transform(self, x0, inputs, training=False):
    h = self.deep(x0, training=training)
    if self.fm is None:
      return h, None, 0.0
    side, penalty = self.fm(inputs, x0, training=training)
    return h, side, self.config.wide_l2 * penalty


# --------------------------------------------------------------------------
# MMoE.


class MMoELayer(tf.keras.layers.Layer):
  """Multi-gate mixture of experts.

  x [B, D] -> experts E_k(x) [B, K, H]; per task t a softmax gate
  g_t(x) [B, K]; output_t = sum_k g_t(x)_k E_k(x) [B, H].

  `call` returns (list of task outputs [B, H], list of gates [B, K]).
  """

  def __init__(self, num_tasks: int, num_experts: int,
               expert_layers: Sequence[int], dropout: float = 0.0,
               **kwargs):
    super().__init__(**kwargs)
    self.experts = [MLP(expert_layers, dropout, name=f"expert_{k}")
                    for k in range(num_experts)]
    self.gates = [tf.keras.layers.Dense(num_experts, activation="softmax",
                                        name=f"gate_{t}")
                  for t in range(num_tasks)]

  def call(self, x: tf.Tensor, training=False):
    experts = tf.stack([e(x, training=training) for e in self.experts],
                       axis=1)  # [B, K, H]
    gates = [g(x) for g in self.gates]  # each [B, K]
    outputs = [tf.einsum("bk,bkh->bh", g, experts) for g in gates]
    return outputs, gates


class BiasFeatures(tf.keras.layers.Layer):
  """Selection-bias features of an (user, movie) pair: [B, 2].

  * movie popularity = log(1 + train ratings of the movie): popular movies
    are shown, found and rated more, whatever a given user thinks of
    them (exposure bias);
  * user activity = log(1 + train ratings of the user): heavy raters rate
    (engage with) more of everything, a position/exposure-like propensity,
    not a preference for this movie.

  Both are looked up by id in tables built from the train split (unknown
  id -> 0 ratings) and standardized with train statistics. With
  `position`, also each candidate source's position for the candidate
  (log2(1 + rank), and 1 when the source did not retrieve it): the
  position bias of Zhao et al. 2019, for candidate lists. Output
  [B, 2 (+ 2 * sources)].
  """

  def __init__(self, user_counts: Mapping[str, int],
               movie_counts: Mapping[str, int], position: bool = False,
               **kwargs):
    super().__init__(**kwargs)
    self.position = position
    self._tables, self._stats = [], []
    for key, counts in (("movie_id", movie_counts),
                        ("user_id", user_counts)):
      keys = np.asarray(list(counts.keys())).astype(str)
      values = np.log1p(np.asarray(list(counts.values()), np.float32))
      self._tables.append((key, tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(
              tf.constant(keys), tf.constant(values, tf.float32)),
          default_value=0.0)))
      self._stats.append((float(values.mean()) if len(values) else 0.0,
                          float(values.std()) + 1e-6 if len(values) else 1.))

  def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
    cols = [(table.lookup(inputs[key]) - mean) / std
            for (key, table), (mean, std) in zip(self._tables, self._stats)]
    if self.position:
      for source in features.CANDIDATE_SOURCES:
        rank = tf.cast(inputs[f"{source}_rank"], tf.float32)
        cols += [tf.math.log(1.0 + rank) / tf.math.log(2.0) / 8.0,
                 tf.cast(rank < 1.0, tf.float32)]
    return tf.stack(cols, axis=1)


class BiasTower(tf.keras.layers.Layer):
  """Shallow tower: bias features [B, F] -> bias logit [B].

  Dropout on its input keeps the main model from leaning on it alone
  (as the position-bias tower of Zhao et al. 2019).
  """

  def __init__(self, bias_features: BiasFeatures, units: Sequence[int],
               dropout: float, **kwargs):
    super().__init__(**kwargs)
    self.bias_features = bias_features
    self.input_dropout = tf.keras.layers.Dropout(dropout)
    self.mlp = MLP(units)
    self.logit = tf.keras.layers.Dense(1)

  def call(self, inputs, training=False) -> tf.Tensor:
    x = self.input_dropout(self.bias_features(inputs), training=training)
    return tf.squeeze(self.logit(self.mlp(x)), axis=1)


TASKS = ("engagement", "rating", "liked")


class MMoE(tfrs.models.Model):
  """Multitask MMoE ranking model with a selection-bias tower.

  `call(inputs)` (serving; no bias tower) -> {
    "rating_raw": [B], "rating": [B] clipped to [1, 5],
    "engagement": [B] P(rate | user, movie) without the bias tower,
    "liked": [B] P(rating >= 4 | rated),
    "score": [B] P(engage) * rating (`score="engage_x_rating"`) or rating,
  }.
  `logits(inputs, training)` -> the raw per-task outputs, the engagement
  logit with the bias-tower logit added (`engagement_train`) and gates.
  """

  def __init__(self, vocabularies: features.Vocabularies,
               config: RankingConfig, global_mean: float = 0.0,
               user_counts: Optional[Mapping[str, int]] = None,
               movie_counts: Optional[Mapping[str, int]] = None,
               feature_list: Optional[Sequence[features.Feature]] = None):
    super().__init__()
    self.config = config
    self.inputs_layer = RankingInputs.from_ranking_config(
        vocabularies, config, global_mean, feature_list)
    self.cross = CrossNetwork(config.mmoe_cross_layers,
                              config.projection_dim, config.diag_scale,
                              name="shared_cross")
    self.mmoe = MMoELayer(len(TASKS), config.num_experts,
                          config.expert_layers, config.dropout, name="mmoe")
    self.towers = {t: MLP(config.tower_layers, config.dropout,
                          name=f"{t}_tower") for t in TASKS}
    self.heads = {t: tf.keras.layers.Dense(1, name=f"{t}_head")
                  for t in TASKS}
    self.liked_from_rating = (
        # Starts as sigmoid(2 * (rating - 3.5)): liked = rating >= 4.
        tf.keras.layers.Dense(
            1, kernel_initializer=tf.keras.initializers.Constant(2.0),
            bias_initializer=tf.keras.initializers.Constant(-7.0),
            name="liked_from_rating")
        if config.liked_from_rating else None)
    self.bias_tower = BiasTower(
        BiasFeatures(user_counts or {}, movie_counts or {},
                     position=config.position_bias
                     and config.examples == "lists",
                     name="bias_features"),
        config.bias_tower_layers, config.bias_dropout, name="bias_tower")
    self.engagement_task = binary_task("engagement_")
    self.rating_task = rating_task("rating_")
    self.liked_task = binary_task("liked_")
    self.list_engagement_loss = tf.keras.metrics.Mean("engagement_list_loss")

  @property
  def cross_network(self) -> CrossNetwork:
    return self.cross

  def logits(self, inputs, training=False, with_bias_tower=False):
    """Per-task raw outputs [B] and gates {task: [B, K]}."""
    x0, bias, penalty = self.inputs_layer(inputs, training=training)
    h = self.cross(x0)
    outputs, gates = self.mmoe(h, training=training)
    out = {}
    for t, o in zip(TASKS, outputs):
      out[t] = tf.squeeze(self.heads[t](self.towers[t](o, training=training)),
                          axis=1)
    out["rating"] += bias
    if self.liked_from_rating is not None:
      out["liked"] += tf.squeeze(
          self.liked_from_rating(out["rating"][:, tf.newaxis]), axis=1)
    if with_bias_tower:
      out["engagement_train"] = out["engagement"] + self.bias_tower(
          flat_inputs(inputs), training=training)
    out["penalty"] = penalty
    out["gates"] = dict(zip(TASKS, gates))
    return out

  def call(self, inputs: Mapping[str, tf.Tensor], training=False
           ) -> Dict[str, tf.Tensor]:
    out = self.logits(inputs, training)
    rating = clip_rating(out["rating"])
    engagement = tf.sigmoid(out["engagement"])
    if self.config.score == "engage_liked":
      # log P(engage) + log P(liked): for lists, the engagement logit is a
      # log-probability among the request's candidates up to a constant.
      score = out["engagement"] + tf.math.log_sigmoid(out["liked"])
    elif self.config.score == "engage_x_rating":
      score = engagement * rating
    else:
      score = rating
    return {"rating_raw": out["rating"], "rating": rating,
            "engagement": engagement, "liked": tf.sigmoid(out["liked"]),
            "score": score}

  def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
    c = self.config
    out = self.logits(inputs, training, with_bias_tower=True)
    if is_list(inputs):
      return self._list_loss(inputs, out)
    rating = inputs[features.LABEL][:, tf.newaxis]
    rated = tf.cast(inputs[RATED], tf.float32)[:, tf.newaxis]
    liked = tf.cast(rating >= LIKED_THRESHOLD, tf.float32)
    # Masked tasks: weight 0 on sampled negatives. Keras averages over the
    # whole batch, so divide by the rated fraction to get per-rating means.
    norm = tf.cast(tf.size(rated), tf.float32) / tf.maximum(
        tf.reduce_sum(rated), 1.0)
    engagement = self.engagement_task(
        labels=rated, predictions=out["engagement_train"][:, tf.newaxis])
    rating_loss = self.rating_task(
        labels=rating, predictions=out["rating"][:, tf.newaxis],
        sample_weight=rated)
    liked_loss = self.liked_task(
        labels=liked, predictions=out["liked"][:, tf.newaxis],
        sample_weight=rated)
    return (c.engagement_weight * engagement
            + norm * (c.rating_weight * rating_loss
                      + c.liked_weight * liked_loss)
            + out["penalty"])  # already weighted (RankingInputs)

  def _list_loss(self, inputs, out) -> tf.Tensor:
    """Candidate lists: engagement listwise (softmax over each list,
    positives = labelled candidates with `config.gain`), rating and liked
    on the labelled candidates."""
    c = self.config
    ratings, mask, rated = list_labels(inputs)
    shape = tf.shape(ratings)
    engagement = listwise.softmax_cross_entropy(
        tf.reshape(out["engagement_train"], shape),
        listwise.gains(ratings, c.gain), mask)
    self.list_engagement_loss.update_state(engagement)
    flat_rating = tf.reshape(ratings, [-1, 1])
    flat_rated = tf.reshape(rated, [-1, 1])
    norm = tf.cast(tf.size(flat_rated), tf.float32) / tf.maximum(
        tf.reduce_sum(flat_rated), 1.0)
    rating_loss = self.rating_task(
        labels=flat_rating, predictions=out["rating"][:, tf.newaxis],
        sample_weight=flat_rated)
    liked_loss = self.liked_task(
        labels=tf.cast(flat_rating >= LIKED_THRESHOLD, tf.float32),
        predictions=out["liked"][:, tf.newaxis], sample_weight=flat_rated)
    return (c.engagement_weight * engagement
            + norm * (c.rating_weight * rating_loss
                      + c.liked_weight * liked_loss)
            + out["penalty"])

  def gate_weights(self, inputs) -> Dict[str, tf.Tensor]:
    """{task: gate weights [B, K]} (rows sum to 1)."""
    return self.logits(inputs)["gates"]


def build_model(config: RankingConfig, vocabularies: features.Vocabularies,
                global_mean: float,
                user_counts: Optional[Mapping[str, int]] = None,
                movie_counts: Optional[Mapping[str, int]] = None,
                feature_list: Optional[Sequence[features.Feature]] = None
                ) -> tfrs.models.Model:
  """The model named by `config.model` (`dcn` or `mmoe`)."""
  if config.model == "dcn":
    return DCN(vocabularies, config, global_mean, feature_list)
  if config.model == "widedeep":
    return WideDeep(vocabularies, config, global_mean, feature_list)
  if config.model == "deepfm":
    return DeepFM(vocabularies, config, global_mean, feature_list)
  return MMoE(vocabularies, config, global_mean, user_counts, movie_counts,
              feature_list)
