"""`tf.data` input functions: TFDS examples -> model inputs -> batches.

`to_inputs` turns a TFDS example into the raw model inputs of
`features.INPUTS` (all categorical values as strings, so the exported
signatures and the HTTP service take the same plain values). `Data`
bundles what every trainer needs: train/test datasets, the movie and user
tables, and vocabularies fit on the train split only.

User history (`features` input `user_history`): every dataset carries the
user's most recent `DataConfig.history_length` train movie ids, newest
first, `|`-joined (`add_user_history`). A train example leaves its own
movie out (the next most recent one takes its place), so the model cannot
read the target from its input; test examples and the users table get all
of the user's recent train movies. Test ratings never enter a history.

Carving the train split (`DataConfig`, all deterministic hash rules on the
ids, in this order):

* `holdout_users`: a share of the users with ratings is left out of every
  fit (their train and test ratings form `Data.holdout`): new users for
  the cold-start evaluation. With `validation_share`, these test new
  users leave the data altogether and the same share of the others (salt
  `validation_holdout`) is held out instead, with their train ratings:
  new-user choices never see a test new user.
* `validation_share`: a share of each user's train ratings replaces the
  test split (`Data.test`), for choosing hyperparameters without reading
  the test split; the test split is then never opened.
* `label_share`: a share of each remaining train rating is held out of
  `Data.train` as `Data.labels`: the labels the two-stage ranker learns
  from candidates that sources fitted on `Data.train` retrieve. With it,
  `cold_users`: a share of the users (salt `cold_users`) has all of its
  remaining train ratings in `Data.labels` and none in `Data.train`: new
  users to every fit, whose lists the ranker learns new users from. Histories
  of train and label examples (and `Data.fit_users`) hold only
  `Data.train` movies; test examples and `Data.users` hold all of the
  user's train movies (`Data.seen_ratings`), as a request does.

The rule of a rating (user `u`, movie `m`) with salt `s`:
`tf.strings.to_hash_bucket_strong(f"{u}:{m}", 10000, [seed, SALT[s]]) <
share * 10000` (SipHash-2-4); of a user: the same on `f"{u}"`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Optional

import numpy as np
import pandas as pd

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from data import movielens_enriched
from tfrs_pipeline import dataset, features

_FEATURES = movielens_enriched.tfds_movielens_features()
# Plain lists (no tensor at import: importing the pipeline must not start
# TensorFlow's runtime, so a server can still set its thread counts).
_GENRE_NAMES = list(_FEATURES["movie_genres"].feature.names)
_OCCUPATION_NAMES = list(_FEATURES["user_occupation_label"].names)


# `Input.decode`: a MOVIELENS-stored value -> the model input.
DECODERS: Dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    # Genre ClassLabel ids -> "Action|Comedy".
    "class_names": lambda v: tf.strings.reduce_join(
        tf.gather(_GENRE_NAMES, v), separator=features.GENRE_SEPARATOR,
        axis=-1),
    # Occupation ClassLabel id -> its label.
    "class_name": lambda v: tf.gather(_OCCUPATION_NAMES, v),
    # bool (True = male) -> "M" / "F".
    "gender": lambda v: tf.where(v, "M", "F"),
    # 25.0 -> "25".
    "number_string": lambda v: tf.strings.as_string(tf.cast(v, tf.int64)),
}


def to_inputs(example: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """A TFDS example (any config) -> the raw model inputs it has, each
  decoded by its `Input.decode` (else cast to its dtype); `user_rating`
  is kept when present."""
  out = {}
  for name, value in example.items():
    spec = features.INPUT_BY_NAME.get(name)
    if spec is not None:
      out[name] = (DECODERS[spec.decode](value) if spec.decode
                   else tf.cast(value, spec.dtype))
    elif name == features.LABEL:
      out[name] = value
  return out


@dataclasses.dataclass
class DataConfig:
  """Where the data comes from and how it is split and batched."""
  raw_data: Optional[str] = None
  """Directory with ml-1m/ (or ml-1m.zip) and melu/movies_extrainfos.dat;
  unset: $TFRS_RAW_DATA, else the official files are downloaded."""
  data_dir: Optional[str] = None
  """TFDS data directory; unset: $TFRS_DATA_DIR, else
  ~/tensorflow_datasets."""
  split: str = "random"
  """Train/test split: `random` (a hash of user and movie puts 1 rating in
  5 in test) or `temporal` (each user's latest 20% are test)."""
  on_bad_line: str = "error"
  """On a malformed raw line: `error` stops naming file and line, `skip`
  skips and counts it."""
  seed: int = 42
  """Seed of shuffling, sampling, the train carving and initialization."""
  shuffle_buffer: int = 100_000
  """Examples in the training shuffle buffer."""
  history_length: int = 2000
  """Most recent train movie ids kept per user history; 0: empty."""
  # Carving of the train split (module docstring): label_share holds the
  # two-stage ranker's labels; validation_share > 0 replaces the test
  # split by a validation split; holdout_users are new users left out of
  # every fit.
  label_share: float = 0.2
  """Share of each user's train ratings held out of every fit as the
  two-stage ranker's labels, in [0, 1); 0: none."""
  validation_share: float = 0.0
  """> 0: that share of each user's train ratings replaces the test
  split (experiments; the test split is then never read), in [0, 1)."""
  holdout_users: float = 0.0
  """Share of the users with ratings left out of every fit (new-user
  evaluation), in [0, 1)."""
  # With label_share > 0, these users (seeded) are new users for the
  # ranker's new-user lists, as `holdout_users` are for the evaluation.
  cold_users: float = 0.1
  """With label_share > 0: share of the users whose train ratings are all
  labels, none in the fit part, in [0, 1)."""

  def __post_init__(self):
    for name in ("label_share", "validation_share", "holdout_users",
                 "cold_users"):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


@dataclasses.dataclass
class Data:
  """Everything a trainer reads. Datasets yield unbatched input dicts."""
  train: tf.data.Dataset
  test: tf.data.Dataset
  movies: tf.data.Dataset
  users: tf.data.Dataset
  vocabularies: features.Vocabularies
  num_train: int
  num_test: int
  # (user_id, movie_id, timestamp, user_rating) of the `train` ratings
  # (the fit part), strings as str.
  train_ratings: Optional[pd.DataFrame] = None
  history_length: int = 0
  # The ranker's labels (`DataConfig.label_share`; histories of the fit
  # part) and their frame; `seen_ratings` = train + label ratings (what a
  # user has rated, as far as training knows: excluded from candidates).
  labels: Optional[tf.data.Dataset] = None
  label_ratings: Optional[pd.DataFrame] = None
  seen_ratings: Optional[pd.DataFrame] = None
  # Users table with fit-part histories (what retrieval trains on); `users`
  # holds histories of all seen ratings.
  fit_users: Optional[tf.data.Dataset] = None
  # Every rating (train and test split) of the held-out users.
  holdout: Optional[pd.DataFrame] = None

  def batches(self, ds: tf.data.Dataset, batch_size: int,
              shuffle_seed: Optional[int] = None, buffer: int = 100_000
              ) -> tf.data.Dataset:
    """Cached, (seeded-)shuffled, batched, prefetched."""
    ds = ds.cache()
    if shuffle_seed is not None:
      ds = ds.shuffle(buffer, seed=shuffle_seed,
                      reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

  def table(self, name: str) -> Dict[str, np.ndarray]:
    """The `movies`, `users` or `fit_users` table as numpy columns
    (strings decoded)."""
    ds = {"movies": self.movies, "users": self.users,
          "fit_users": self.fit_users or self.users}[name]
    columns: Dict[str, list] = {}
    for batch in ds.batch(10_000):
      for k, v in batch.items():
        columns.setdefault(k, []).append(v.numpy())
    out = {}
    for k, chunks in columns.items():
      v = np.concatenate(chunks)
      if v.dtype == object:
        v = np.array([x.decode("utf-8") for x in v], dtype=object)
      out[k] = v
    return out


def _frame(chunks, columns) -> pd.DataFrame:
  out = {}
  for c in columns:
    v = (np.concatenate([chunk[c] for chunk in chunks]) if chunks
         else np.array([]))
    out[c] = v.astype(str) if v.dtype == object else v
  return pd.DataFrame(out)


RATING_COLUMNS = ("user_id", "movie_id", "timestamp", features.LABEL)
SALTS = {"holdout": 1, "validation": 2, "label": 3, "validation_holdout": 4,
         "cold_users": 5}


def hash_share(keys: tf.Tensor, share: float, seed: int, salt: str
               ) -> tf.Tensor:
  """Bool [B]: the `share` of `keys` (strings) that the seeded SipHash
  rule selects (module docstring)."""
  bucket = tf.strings.to_hash_bucket_strong(keys, 10000,
                                            [int(seed), SALTS[salt]])
  return bucket < int(round(share * 10000))


def rating_keys(batch: Dict[str, tf.Tensor]) -> tf.Tensor:
  return tf.strings.join([batch["user_id"], batch["movie_id"]], ":")


def ratings_frame(ds: tf.data.Dataset,
                  columns=("user_id", "movie_id", "timestamp")
                  ) -> pd.DataFrame:
  """Columns of an unbatched dataset of input dicts as a DataFrame."""
  chunks = [{c: v.numpy() for c, v in batch.items()}
            for batch in ds.map(lambda x: {c: x[c] for c in columns}
                                ).batch(65_536)]
  return _frame(chunks, columns)


def user_histories(train_ratings: pd.DataFrame, length: int
                   ) -> Dict[str, List[str]]:
  """user_id -> up to `length` train movie ids, newest first.

  Ordered by timestamp (descending), ties by movie id, so it is
  deterministic.
  """
  if length <= 0 or train_ratings.empty:
    return {}
  df = train_ratings.sort_values(["user_id", "timestamp", "movie_id"],
                                 ascending=[True, False, False])
  df = df[df.groupby("user_id").cumcount() < length]
  return {u: list(m) for u, m in df.groupby("user_id").movie_id}


def add_user_history(ds: tf.data.Dataset, histories: Dict[str, List[str]],
                     length: int, exclude_target: bool = False
                     ) -> tf.data.Dataset:
  """Adds the `user_history` input to each element of `ds`.

  Args:
    ds: unbatched input dicts with `user_id` (and `movie_id` when
      `exclude_target`).
    histories: from `user_histories(train_ratings, length + 1)`.
    length: ids kept per history.
    exclude_target: drop the element's own `movie_id` from its history
      (train examples), keeping `length` others.

  Returns:
    `ds` with `user_history`: `|`-joined ids, newest first ("" if none).
  """
  sep = features.GENRE_SEPARATOR
  keys = list(histories)
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant(keys if keys else [""], tf.string),
          tf.constant([sep.join(histories[k]) for k in keys] if keys
                      else [""], tf.string)),
      default_value="")

  def add(batch):
    tokens = tf.strings.split(table.lookup(batch["user_id"]), sep)
    if exclude_target:
      keep = tf.not_equal(tokens, tf.expand_dims(batch["movie_id"], 1))
      tokens = tf.ragged.boolean_mask(tokens, keep)
    tokens = tokens[:, :length]
    batch = dict(batch)
    batch["user_history"] = tf.strings.reduce_join(tokens, axis=1,
                                                   separator=sep)
    return batch

  return ds.batch(4096).map(add).unbatch()


def _carve(ds: tf.data.Dataset, keep: Callable[[Dict[str, tf.Tensor]],
                                               tf.Tensor]) -> tf.data.Dataset:
  """Elements of `ds` (unbatched) whose batch-wise `keep` is true."""
  return ds.batch(4096).map(
      lambda b: {k: tf.boolean_mask(v, keep(b)) for k, v in b.items()},
      num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def load_data(config: DataConfig, log=print) -> Data:
  """Loads (building if needed) the dataset, carves the train split
  (module docstring) and fits vocabularies on the fit part only."""
  kwargs = dict(data_dir=config.data_dir, raw_data=config.raw_data,
                on_bad_line=config.on_bad_line, log=log)
  dataset.prepare(configs=(config.split, "movies", "users"), **kwargs)
  b = dataset.builder(config.split, config.data_dir, config.raw_data,
                      config.on_bad_line)

  def split(config_name, split_name):
    return dataset.load(config_name, split_name, **kwargs).map(
        to_inputs, num_parallel_calls=tf.data.AUTOTUNE)

  seed = config.seed
  train_all = split(config.split, "train")
  test = split(config.split, "test")
  users = split("users", "train")
  holdout = None
  if config.holdout_users:
    def test_new_user(batch):
      return hash_share(batch["user_id"], config.holdout_users, seed,
                        "holdout")

    def validation_new_user(batch):
      return hash_share(batch["user_id"], config.holdout_users, seed,
                        "validation_holdout")
    held, sources = test_new_user, (train_all, test)
    if config.validation_share:
      # The test new users are never read: they leave the data, and the
      # same share of the other users, by another rule, plays them with
      # their train ratings.
      train_all = _carve(train_all, lambda b: ~test_new_user(b))
      test = _carve(test, lambda b: ~test_new_user(b))
      held, sources = validation_new_user, (train_all,)
    holdout = pd.concat([ratings_frame(_carve(ds, held), RATING_COLUMNS)
                         for ds in sources], ignore_index=True)
    train_all = _carve(train_all, lambda b: ~held(b))
    test = _carve(test, lambda b: ~held(b))
    log(f"[data] held out {holdout.user_id.nunique()} users "
        f"({len(holdout)} ratings) of every fit"
        + (" (validation new users)" if config.validation_share else ""))
  if config.validation_share:
    def valid(batch):
      return hash_share(rating_keys(batch), config.validation_share, seed,
                        "validation")
    test = _carve(train_all, valid)  # the test split is never read
    train_all = _carve(train_all, lambda b: ~valid(b))
    log(f"[data] validation mode: {config.validation_share:.0%} of each "
        "user's train ratings replace the test split")
  labels = None
  train = train_all
  if config.label_share:
    def label(batch):
      return hash_share(rating_keys(batch), config.label_share, seed,
                        "label")

    def cold_user(batch):
      return hash_share(batch["user_id"], config.cold_users, seed,
                        "cold_users")

    def is_label(batch):
      return label(batch) | cold_user(batch)
    labels = _carve(train_all, is_label)
    train = _carve(train_all, lambda b: ~is_label(b))
  log("[data] fitting vocabularies on the train split ...")
  # One pass: vocabularies and the rating columns.
  chunks = []

  def batches():
    for batch in train.batch(16_384).prefetch(tf.data.AUTOTUNE):
      chunks.append({c: batch[c].numpy() for c in RATING_COLUMNS})
      yield batch

  vocabularies = features.Vocabularies.fit(batches(),
                                           features.rating_features())
  train_ratings = _frame(chunks, RATING_COLUMNS)
  label_ratings = (ratings_frame(labels, RATING_COLUMNS)
                   if labels is not None else train_ratings.iloc[:0])
  seen_ratings = pd.concat([train_ratings, label_ratings], ignore_index=True)
  fit_users = users
  length = max(int(config.history_length), 0)
  if "user_history" in features.INPUT_BY_NAME:
    log(f"[data] user histories: most recent {length} train movies")
    fit_histories = user_histories(train_ratings, length + 1)
    seen_histories = (user_histories(seen_ratings, length + 1)
                      if labels is not None else fit_histories)
    train = add_user_history(train, fit_histories, length,
                             exclude_target=True)
    if labels is not None:
      labels = add_user_history(labels, fit_histories, length)
    test = add_user_history(test, seen_histories, length)
    fit_users = add_user_history(users, fit_histories, length)
    users = add_user_history(users, seen_histories, length)
  return Data(
      train=train,
      test=test,
      movies=split("movies", "train"),
      users=users,
      vocabularies=vocabularies,
      num_train=len(train_ratings),
      num_test=(b.info.splits["test"].num_examples
                if not (config.validation_share or config.holdout_users)
                else None),
      train_ratings=train_ratings,
      history_length=length,
      labels=labels,
      label_ratings=label_ratings,
      seen_ratings=seen_ratings,
      fit_users=fit_users,
      holdout=holdout,
  )


def save_vocabularies(data: Data, run_dir: str) -> str:
  path = os.path.join(run_dir, "vocabularies.json")
  data.vocabularies.save(path)
  return path


def join_movies(movies: Dict[str, np.ndarray], movie_ids: np.ndarray
                ) -> Dict[str, np.ndarray]:
  """The movie inputs of `movies` (a `Data.table("movies")`) for an array
  of movie ids of any shape; unknown ids (and "" padding) get each
  input's default. The one join of movie attributes by id in training
  (the exports use `export.EntityTable`, the same columns)."""
  ids = np.asarray(movie_ids).astype(str)
  row = pd.Index(np.asarray(movies["movie_id"]).astype(str)).get_indexer(
      ids.reshape(-1))
  out = {}
  for spec in features.entity_inputs(features.MOVIE):
    if spec.name == "movie_id" or spec.name not in movies:
      continue
    values = np.asarray(movies[spec.name])
    col = np.where(row >= 0, values[np.maximum(row, 0)], spec.default)
    if spec.dtype != tf.string:
      col = col.astype(spec.dtype.as_numpy_dtype)
    out[spec.name] = col.reshape(ids.shape)
  return out
