"""Rating-prediction baselines: global mean, biased MF and the TFRS DCN.

Each takes train/test rating DataFrames (columns of
`data.raw.ratings_examples`) and returns a `RatingResult`:
`metrics` ({"rmse", "mae"} on test), `predictions` ([len(test)] float32,
in test order, e.g. for an AUC of `user_rating >= 4`), `seconds` and
`params` (the settings used, including ones chosen on validation).
Only train ratings are used for fitting and model selection.
"""

import hashlib
import time
from typing import Dict, NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd

import tfrs_pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
from tfrs_pipeline import metrics

LABEL = "user_rating"
VALIDATION_SALT = "validation"


class RatingResult(NamedTuple):
  metrics: Dict[str, float]
  predictions: np.ndarray
  seconds: float
  params: Dict[str, object]


def _log(verbose: bool, message: str) -> None:
  if verbose:
    print(message, flush=True)


def _ids(values) -> np.ndarray:
  return np.asarray(values).astype(str)


def _result(test: pd.DataFrame, predictions, start: float,
            params: Dict[str, object]) -> RatingResult:
  predictions = np.asarray(predictions, dtype=np.float32).reshape(-1)
  labels = test[LABEL].to_numpy(np.float64)
  return RatingResult(
      metrics={"rmse": metrics.rmse(labels, predictions),
               "mae": metrics.mae(labels, predictions)},
      predictions=predictions, seconds=time.time() - start, params=params)


def validation_mask(ratings: pd.DataFrame, fraction: float = 0.1,
                    salt: str = VALIDATION_SALT) -> np.ndarray:
  """[len(ratings)] bool, True for a held-out validation rating.

  Same rule as `data.splits` with a salt: a rating is held out iff
  `int(sha256(f"{salt}:{user}:{movie}")[:8], 16) / 16**8 < fraction`.
  """
  def held_out(user, movie):
    digest = hashlib.sha256(f"{salt}:{user}:{movie}".encode()).hexdigest()
    return int(digest[:8], 16) < fraction * 16**8
  return np.fromiter(
      (held_out(u, m) for u, m in zip(ratings.user_id, ratings.movie_id)),
      dtype=bool, count=len(ratings))


# --------------------------------------------------------------------------
# Global mean.


def global_mean(train: pd.DataFrame, test: pd.DataFrame) -> RatingResult:
  """Predicts the mean train rating for every test rating."""
  start = time.time()
  mean = float(train[LABEL].mean())
  return _result(test, np.full(len(test), mean), start, {"mean": mean})


# --------------------------------------------------------------------------
# Keras helpers (TensorFlow is imported lazily: global_mean needs none).


# The tutorials' input pipeline: `shuffle(100_000).batch().cache()`.
TUTORIAL_SHUFFLE_BUFFER = 100_000


def _dataset(df: pd.DataFrame, columns: Dict[str, str], batch_size: int,
             shuffle_seed: Optional[int] = None,
             tutorial_pipeline: bool = False):
  """tf.data of {feature: tensor} with `user_rating`; columns: name->kind.

  With `shuffle_seed`, the whole set is reshuffled every epoch; with
  `tutorial_pipeline` too, the TFRS tutorials' pipeline is used instead: a
  100k shuffle buffer (a partial shuffle of file-ordered ratings) and the
  same cached order every epoch.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  features = {}
  for name, kind in columns.items():
    if kind == "str":
      features[name] = _ids(df[name])
    else:
      features[name] = df[name].to_numpy().astype(np.int64)
  features[LABEL] = df[LABEL].to_numpy(np.float32)
  ds = tf.data.Dataset.from_tensor_slices(features)
  if shuffle_seed is None:
    return ds.batch(batch_size).prefetch(2)
  if tutorial_pipeline:
    return ds.shuffle(TUTORIAL_SHUFFLE_BUFFER, seed=shuffle_seed,
                      reshuffle_each_iteration=False).batch(batch_size).cache()
  ds = ds.shuffle(len(df), seed=shuffle_seed, reshuffle_each_iteration=True)
  return ds.batch(batch_size).prefetch(2)


def _predict(model, df: pd.DataFrame, columns: Dict[str, str]) -> np.ndarray:
  return model.predict(_dataset(df, columns, 16384), verbose=0).reshape(-1)


# --------------------------------------------------------------------------
# Biased matrix factorization.

MF_COLUMNS = {"user_id": "str", "movie_id": "str"}


def _mf_model(train: pd.DataFrame, dim: int, reg: float, learning_rate: float,
              seed: int):
  """r = mu + b_u + b_i + p_u.q_i with per-example L2 on looked-up rows."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top

  mean = float(train[LABEL].mean())
  users = np.unique(_ids(train.user_id))
  movies = np.unique(_ids(train.movie_id))

  class BiasedMF(tfrs.Model):

    def __init__(self):
      super().__init__()
      # Unknown ids map to row 0, which training never touches: it keeps
      # a near-zero vector and zero bias, so a cold user or movie gets the
      # other side's bias.
      self.user_lookup = tf.keras.layers.StringLookup(
          vocabulary=users, mask_token=None)
      self.movie_lookup = tf.keras.layers.StringLookup(
          vocabulary=movies, mask_token=None)
      self.user_vector = tf.keras.layers.Embedding(
          len(users) + 1, dim, tf.keras.initializers.RandomNormal(
              stddev=0.01, seed=seed))
      self.movie_vector = tf.keras.layers.Embedding(
          len(movies) + 1, dim, tf.keras.initializers.RandomNormal(
              stddev=0.01, seed=seed + 1))
      self.user_bias = tf.keras.layers.Embedding(len(users) + 1, 1, "zeros")
      self.movie_bias = tf.keras.layers.Embedding(len(movies) + 1, 1, "zeros")
      self.task = tfrs.tasks.Ranking(
          loss=tf.keras.losses.MeanSquaredError(),
          metrics=[tf.keras.metrics.RootMeanSquaredError("rmse")])

    def _parts(self, features):
      u = self.user_lookup(features["user_id"])
      i = self.movie_lookup(features["movie_id"])
      return (self.user_vector(u), self.movie_vector(i),
              self.user_bias(u), self.movie_bias(i))

    def call(self, features):
      p, q, b_u, b_i = self._parts(features)
      return mean + b_u + b_i + tf.reduce_sum(p * q, axis=1, keepdims=True)

    def compute_loss(self, features, training=False):
      p, q, b_u, b_i = self._parts(features)
      predictions = mean + b_u + b_i + tf.reduce_sum(
          p * q, axis=1, keepdims=True)
      loss = self.task(labels=features[LABEL], predictions=predictions)
      penalty = tf.reduce_mean(
          tf.reduce_sum(p * p, axis=1) + tf.reduce_sum(q * q, axis=1)
          + tf.squeeze(b_u * b_u + b_i * b_i, axis=1))
      return loss + reg * penalty

  model = BiasedMF()
  model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
  return model


def biased_mf(train: pd.DataFrame, test: pd.DataFrame, dim: int = 64,
              regs: Sequence[float] = (0.02, 0.03, 0.05),
              learning_rate: float = 0.003, batch_size: int = 4096,
              max_epochs: int = 30, patience: int = 2,
              validation_fraction: float = 0.1, seed: int = 42,
              verbose: bool = True) -> RatingResult:
  """Biased MF trained with Adam; L2 and epochs chosen on validation.

  For each `reg` the model is fit on train minus a hashed
  `validation_fraction` (see `validation_mask`) with early stopping on
  validation RMSE (`patience` epochs). The best (reg, epochs) is refit on
  all of train and evaluated on test.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  start = time.time()
  held_out = validation_mask(train, validation_fraction)
  fit, valid = train[~held_out], train[held_out]
  valid_ds = _dataset(valid, MF_COLUMNS, 16384)
  trials = []
  for reg in regs:
    tf.keras.utils.set_random_seed(seed)
    model = _mf_model(fit, dim, reg, learning_rate, seed)
    stop = tf.keras.callbacks.EarlyStopping(
        monitor="val_rmse", patience=patience, restore_best_weights=True)
    history = model.fit(
        _dataset(fit, MF_COLUMNS, batch_size, seed), epochs=max_epochs,
        validation_data=valid_ds, callbacks=[stop], verbose=0)
    curve = history.history["val_rmse"]
    best = int(np.argmin(curve))
    trials.append({"reg": float(reg), "epochs": best + 1,
                   "val_rmse": float(curve[best])})
    _log(verbose, f"biased MF reg={reg:g}: val RMSE {curve[best]:.4f} after "
         f"{best + 1} epochs ({time.time() - start:.0f} s)")
  chosen = min(trials, key=lambda t: t["val_rmse"])
  tf.keras.utils.set_random_seed(seed)
  model = _mf_model(train, dim, chosen["reg"], learning_rate, seed)
  model.fit(_dataset(train, MF_COLUMNS, batch_size, seed),
            epochs=chosen["epochs"], verbose=0)
  params = {"dim": dim, "learning_rate": learning_rate,
            "batch_size": batch_size, "seed": seed, **chosen,
            "trials": trials}
  return _result(test, _predict(model, test, MF_COLUMNS), start, params)


# --------------------------------------------------------------------------
# The TFRS DCN tutorial model.

DCN_COLUMNS = {
    "movie_id": "str", "user_id": "str", "user_zip_code": "str",
    "user_occupation_text": "str", "user_gender": "int",
    "bucketized_user_age": "int",
}


def dcn(train: pd.DataFrame, test: pd.DataFrame, epochs: int = 8,
        embedding_dimension: int = 32,
        deep_layer_sizes: Sequence[int] = (192, 192),
        projection_dim: Optional[int] = None, learning_rate: float = 0.01,
        batch_size: int = 8192, seed: int = 42, verbose: bool = True,
        tutorial_pipeline: bool = False) -> RatingResult:
  """The stacked DCN of tensorflow.org/recommenders/examples/dcn.

  Six features (StringLookup / IntegerLookup + Embedding), concatenated,
  one `tfrs.layers.dcn.Cross` layer (full rank unless `projection_dim`),
  ReLU deep layers, Dense(1), MSE, Adam. Vocabularies come from train.
  Train batches are reshuffled every epoch, or come from the tutorial's
  pipeline with `tutorial_pipeline` (see `_dataset`; worse on
  user-ordered ratings).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top

  start = time.time()
  tf.keras.utils.set_random_seed(seed)
  train_ds = _dataset(train, DCN_COLUMNS, batch_size, seed,
                      tutorial_pipeline)

  class DCN(tfrs.Model):

    def __init__(self):
      super().__init__()
      self._embeddings = {}
      for name, kind in DCN_COLUMNS.items():
        if kind == "str":
          vocabulary = np.unique(_ids(train[name]))
          lookup = tf.keras.layers.StringLookup(
              vocabulary=vocabulary, mask_token=None)
        else:
          vocabulary = np.unique(train[name].to_numpy().astype(np.int64))
          lookup = tf.keras.layers.IntegerLookup(
              vocabulary=vocabulary, mask_token=None)
        self._embeddings[name] = tf.keras.Sequential([
            lookup,
            tf.keras.layers.Embedding(len(vocabulary) + 1,
                                      embedding_dimension)])
      self._cross_layer = tfrs.layers.dcn.Cross(
          projection_dim=projection_dim, kernel_initializer="glorot_uniform")
      self._deep_layers = [tf.keras.layers.Dense(size, activation="relu")
                           for size in deep_layer_sizes]
      self._logit_layer = tf.keras.layers.Dense(1)
      self.task = tfrs.tasks.Ranking(
          loss=tf.keras.losses.MeanSquaredError(),
          metrics=[tf.keras.metrics.RootMeanSquaredError("rmse")])

    def call(self, features):
      x = tf.concat([self._embeddings[name](features[name])
                     for name in DCN_COLUMNS], axis=1)
      x = self._cross_layer(x)
      for layer in self._deep_layers:
        x = layer(x)
      return self._logit_layer(x)

    def compute_loss(self, features, training=False):
      return self.task(labels=features[LABEL], predictions=self(features))

  model = DCN()
  model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
  _log(verbose, f"DCN: {epochs} epochs on {len(train)} ratings")
  model.fit(train_ds, epochs=epochs, verbose=2 if verbose else 0)
  params = {"epochs": epochs, "embedding_dimension": embedding_dimension,
            "deep_layer_sizes": list(deep_layer_sizes),
            "projection_dim": projection_dim, "learning_rate": learning_rate,
            "batch_size": batch_size, "seed": seed,
            "tutorial_pipeline": tutorial_pipeline}
  return _result(test, _predict(model, test, DCN_COLUMNS), start, params)
