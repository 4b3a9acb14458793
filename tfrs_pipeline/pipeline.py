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
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from data import movielens_enriched
from tfrs_pipeline import dataset, features

_FEATURES = movielens_enriched.tfds_movielens_features()
_GENRE_NAMES = tf.constant(_FEATURES["movie_genres"].feature.names)
_OCCUPATION_NAMES = tf.constant(_FEATURES["user_occupation_label"].names)


def to_inputs(example: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """A TFDS example (any config) -> the raw model inputs it has.

  Genres (ClassLabel ids) become a `|`-joined string, the occupation label
  its name, gender `M`/`F`, the age bucket its integer as a string.
  `user_rating` is kept when present.
  """
  out = {}
  for name, value in example.items():
    if name == "movie_genres":
      value = tf.strings.reduce_join(
          tf.gather(_GENRE_NAMES, value), separator=features.GENRE_SEPARATOR,
          axis=-1)
    elif name == "user_occupation_label":
      value = tf.gather(_OCCUPATION_NAMES, value)
    elif name == "user_gender":
      value = tf.where(value, "M", "F")
    elif name == "bucketized_user_age":
      value = tf.strings.as_string(tf.cast(value, tf.int64))
    elif name == "release_year":
      value = tf.cast(value, tf.float32)
    if name in features.INPUT_BY_NAME or name == features.LABEL:
      out[name] = value
  return out


@dataclasses.dataclass
class DataConfig:
  """Where the data comes from and how it is split and batched."""
  raw_data: Optional[str] = None  # default: $TFRS_RAW_DATA, else download
  data_dir: Optional[str] = None  # default: $TFRS_DATA_DIR, else ~/tensorflow_datasets
  split: str = "random"  # random | temporal (see README, "Splits")
  on_bad_line: str = "error"  # error | skip
  seed: int = 42
  shuffle_buffer: int = 100_000
  history_length: int = 2000  # user_history ids per user; 0: empty histories


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
  # (user_id, movie_id, timestamp) of every train rating, strings as str.
  train_ratings: Optional[pd.DataFrame] = None
  history_length: int = 0

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
    """The `movies` or `users` table as numpy columns (strings decoded)."""
    ds = self.movies if name == "movies" else self.users
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


def load_data(config: DataConfig, log=print) -> Data:
  """Loads (building if needed) the dataset and fits vocabularies on train."""
  kwargs = dict(data_dir=config.data_dir, raw_data=config.raw_data,
                on_bad_line=config.on_bad_line, log=log)
  dataset.prepare(configs=(config.split, "movies", "users"), **kwargs)
  b = dataset.builder(config.split, config.data_dir, config.raw_data,
                      config.on_bad_line)

  def split(config_name, split_name):
    return dataset.load(config_name, split_name, **kwargs).map(
        to_inputs, num_parallel_calls=tf.data.AUTOTUNE)

  train = split(config.split, "train")
  test = split(config.split, "test")
  users = split("users", "train")
  log("[data] fitting vocabularies on the train split ...")
  # One pass: vocabularies and the (user, movie, timestamp) columns.
  columns = ("user_id", "movie_id", "timestamp")
  chunks = []

  def batches():
    for batch in train.batch(16_384).prefetch(tf.data.AUTOTUNE):
      chunks.append({c: batch[c].numpy() for c in columns})
      yield batch

  vocabularies = features.Vocabularies.fit(batches())
  train_ratings = _frame(chunks, columns)
  if "user_history" in features.INPUT_BY_NAME:
    length = max(int(config.history_length), 0)
    log(f"[data] user histories: most recent {length} train movies")
    histories = user_histories(train_ratings, length + 1)
    train = add_user_history(train, histories, length, exclude_target=True)
    test = add_user_history(test, histories, length)
    users = add_user_history(users, histories, length)
  return Data(
      train=train,
      test=test,
      movies=split("movies", "train"),
      users=users,
      vocabularies=vocabularies,
      num_train=b.info.splits["train"].num_examples,
      num_test=b.info.splits["test"].num_examples,
      train_ratings=train_ratings,
      history_length=max(int(config.history_length), 0),
  )


def save_vocabularies(data: Data, run_dir: str) -> str:
  path = os.path.join(run_dir, "vocabularies.json")
  data.vocabularies.save(path)
  return path
