"""Trains, evaluates and exports the ranking stage.

    tfrs-pipeline train ranking --model dcn|mmoe --run_dir runs/ranking

writes into RUN:

    RUN/config.json          RankingConfig + DataConfig
    RUN/vocabularies.json    vocabularies fit on the train split
    RUN/metrics.json         test metrics (see `evaluate.evaluate`)
    RUN/logs/                TensorBoard: per-epoch losses/metrics, hparams,
                             feature-interaction heatmap (and MMoE gates)
    RUN/checkpoints/         per-epoch checkpoints (`tfrs_pipeline.resume`:
                             a rerun resumes exactly), best weights
                             so far in them
    RUN/interactions.png     DCN-v2 cross-weight heatmap
    RUN/gates.png            MMoE gate utilization (mmoe only)
    RUN/export/V/ranking/    SavedModel (`serving_model`), a new version
                             V per export (`export_layout`)

Public API: `train_and_evaluate(config, data_config, run_dir, log)` and
`main(argv)`.

Data: the train split is read once into memory (numpy columns); a seeded
`validation_fraction` of it is held out for early stopping (never the
test split). MMoE adds sampled negatives (`sample_negatives`).

Stopping: early stopping on the validation RMSE (`patience`), at most
`epochs`, and a fit-time budget `max_train_seconds` (default 420 s, so a
default run with data loading stays under 10 minutes on 2 cores): training
stops when one more epoch would exceed it; the best validation weights are
restored in every case.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from ranking import evaluate, interactions, listwise, serving_model
from ranking.model import (LIST_MASK, RATED, RankingConfig, build_model,
                           ranking_inputs)
from tfrs_pipeline import features, optim, pipeline, resume, runs

__all__ = ["RankingConfig", "Prepared", "train_and_evaluate",
           "sample_negatives", "prepare", "fit"]

Columns = Dict[str, np.ndarray]


def to_numpy(ds: tf.data.Dataset, batch_size: int = 16_384) -> Columns:
  """Unbatched dataset of dicts -> numpy columns (strings stay bytes)."""
  chunks: Dict[str, list] = {}
  for batch in ds.batch(batch_size).prefetch(2):
    for k, v in batch.items():
      chunks.setdefault(k, []).append(v.numpy())
  return {k: np.concatenate(v) for k, v in chunks.items()}


def take(columns: Columns, index: np.ndarray) -> Columns:
  return {k: v[index] for k, v in columns.items()}


def _str(x: np.ndarray) -> np.ndarray:
  return np.asarray([v.decode() if isinstance(v, bytes) else str(v)
                     for v in x], dtype=object)


# --------------------------------------------------------------------------
# Negative sampling (engagement task).


def sample_negatives(user_ids: np.ndarray, movie_ids: np.ndarray,
                     catalog: np.ndarray, num_negatives: int, seed: int,
                     weights: Optional[np.ndarray] = None,
                     exclude_users: Optional[np.ndarray] = None,
                     exclude_movies: Optional[np.ndarray] = None,
                     max_rounds: int = 50):
  """Samples unrated movies for the engagement task.

  For every (user, movie) rating i, draws `num_negatives` movies from
  `catalog` (uniformly, or with probability proportional to `weights`),
  rejecting any movie the user rated (in the given ratings or in the
  optional `exclude_*` pairs) and redrawing, seeded by `seed`.

  Args:
    user_ids, movie_ids: [N] the ratings (ids as str or bytes).
    catalog: [M] candidate movie ids.
    num_negatives: negatives per rating.
    seed: NumPy seed; the same inputs and seed give the same negatives.
    weights: optional [M] sampling weights (e.g. train count ** 0.75).
    exclude_users, exclude_movies: more rated pairs to reject (e.g. test
      ratings when sampling evaluation negatives).

  Returns:
    (rows [N * n] int64 index of the rating each negative comes from,
     movies [N * n] int64 index into `catalog`). Negatives of a user who
     rated every catalog movie are dropped.
  """
  rng = np.random.default_rng(seed)
  catalog = _str(catalog)
  movie_index = {m: i for i, m in enumerate(catalog)}
  m = len(catalog)
  users = _str(user_ids)
  all_users = users
  all_movies = _str(movie_ids)
  if exclude_users is not None:
    all_users = np.concatenate([users, _str(exclude_users)])
    all_movies = np.concatenate([all_movies, _str(exclude_movies)])
  user_codes, inverse = np.unique(all_users, return_inverse=True)
  del user_codes
  mi = np.asarray([movie_index.get(x, -1) for x in all_movies], np.int64)
  keys = np.unique(inverse[mi >= 0].astype(np.int64) * m + mi[mi >= 0])
  user_code = inverse[:len(users)].astype(np.int64)
  rows = np.repeat(np.arange(len(users), dtype=np.int64), num_negatives)
  p = None
  if weights is not None:
    p = np.asarray(weights, np.float64)
    p = p / p.sum()
  movies = rng.choice(m, size=len(rows), p=p)
  todo = np.arange(len(rows))
  for _ in range(max_rounds):
    bad = np.isin(user_code[rows[todo]] * m + movies[todo], keys)
    todo = todo[bad]
    if not len(todo):
      break
    movies[todo] = rng.choice(m, size=len(todo), p=p)
  if len(todo):  # users who rated (nearly) everything
    bad = np.isin(user_code[rows[todo]] * m + movies[todo], keys)
    keep = np.ones(len(rows), bool)
    keep[todo[bad]] = False
    rows, movies = rows[keep], movies[keep]
  return rows, movies.astype(np.int64)


def negative_examples(ratings: Columns, rows: np.ndarray,
                      movie_index: np.ndarray, movies: Columns) -> Columns:
  """Negative rows: the rating's user and time, the sampled movie's
  inputs (joined by id with `pipeline.join_movies`, the one join of movie
  attributes in training), `user_rating` 0 and `rated` 0."""
  ids = np.asarray(movies["movie_id"]).astype(str)[movie_index]
  joined = {"movie_id": ids, **pipeline.join_movies(movies, ids)}
  out = {}
  for name, col in ratings.items():
    spec = features.INPUT_BY_NAME.get(name)
    if spec is not None and spec.entity == features.MOVIE:
      values = joined.get(name, np.full(len(rows), spec.default))
      out[name] = values.astype(col.dtype) if col.dtype != object else (
          np.asarray([v.encode() if isinstance(v, str) else v
                      for v in values], dtype=object))
    else:
      out[name] = col[rows]
  out[features.LABEL] = np.zeros(len(rows), np.float32)
  out[RATED] = np.zeros(len(rows), np.float32)
  return out


def concat(a: Columns, b: Columns) -> Columns:
  return {k: np.concatenate([a[k], b[k]]) for k in a}


# --------------------------------------------------------------------------
# Data preparation.


@dataclasses.dataclass
class Prepared:
  """In-memory data of one run (numpy columns of raw inputs + labels)."""
  train: Columns
  validation: Columns
  test: Columns
  movies: Dict[str, np.ndarray]  # `Data.table("movies")`
  users: Dict[str, np.ndarray]   # `Data.table("users")`
  vocabularies: features.Vocabularies
  global_mean: float
  user_counts: Dict[str, int]
  movie_counts: Dict[str, int]
  latest_timestamp: int


def prepare(data: pipeline.Data, config: RankingConfig, log=print
            ) -> Prepared:
  """Reads the splits into memory and carves the validation split."""
  keep = [i.name for i in ranking_inputs(config)]
  keep += [features.LABEL]
  log("[ranking] reading train/test into memory ...")
  source = data.train
  if config.max_train_examples:  # the first N (TFDS files are shuffled)
    source = source.take(config.max_train_examples)
  train = {k: v for k, v in to_numpy(source).items() if k in keep}
  test = {k: v for k, v in to_numpy(data.test).items() if k in keep}
  rng = np.random.default_rng(config.seed)
  order = rng.permutation(len(train[features.LABEL]))
  num_val = int(round(len(order) * config.validation_fraction))
  validation, train_part = take(train, order[:num_val]), take(train,
                                                              order[num_val:])
  uids, ucounts = np.unique(_str(train_part["user_id"]), return_counts=True)
  mids, mcounts = np.unique(_str(train_part["movie_id"]), return_counts=True)
  return Prepared(
      train=train_part, validation=validation, test=test,
      movies=data.table("movies"), users=data.table("users"),
      vocabularies=data.vocabularies,
      global_mean=float(np.mean(train_part[features.LABEL])),
      user_counts=dict(zip(uids.tolist(), ucounts.tolist())),
      movie_counts=dict(zip(mids.tolist(), mcounts.tolist())),
      latest_timestamp=int(np.max(train["timestamp"]))
      if "timestamp" in train else 0)


def with_negatives(ratings: Columns, prepared: Prepared,
                   config: RankingConfig, seed: int,
                   exclude: Optional[Columns] = None) -> Columns:
  """Ratings (`rated` = 1) plus `num_negatives` sampled negatives each."""
  catalog = prepared.movies["movie_id"]
  weights = None
  if config.negative_sampling == "popularity":
    weights = np.asarray([prepared.movie_counts.get(str(m), 0) for m in
                          catalog], np.float64) ** 0.75 + 1e-3
  rows, movie_index = sample_negatives(
      ratings["user_id"], ratings["movie_id"], catalog,
      config.num_negatives, seed, weights,
      None if exclude is None else exclude["user_id"],
      None if exclude is None else exclude["movie_id"])
  positives = dict(ratings)
  positives[RATED] = np.ones(len(ratings[features.LABEL]), np.float32)
  return concat(positives, negative_examples(ratings, rows, movie_index,
                                             prepared.movies))


def examples(columns: Columns,
             encoder: Optional[features.FeatureEncoder] = None
             ) -> tf.data.Dataset:
  """Unbatched examples of `columns`; with `encoder`, its bag-of-ids
  features looked up once and cached (see `dataset`)."""
  ds = tf.data.Dataset.from_tensor_slices(dict(columns))
  if encoder is not None:
    ds = encoder.with_ids(ds, drop_sources=True).cache()
  return ds


def dataset(columns: Columns, batch_size: int,
            seed: Optional[int] = None,
            encoder: Optional[features.FeatureEncoder] = None
            ) -> tf.data.Dataset:
  """Batches of `columns` (shuffled when `seed` is given). With `encoder`
  its bag-of-ids features (user histories, genres) are looked up once and
  cached (`FeatureEncoder.with_ids`) instead of in every epoch's steps."""
  ds = examples(columns, encoder)
  if seed is not None:
    ds = ds.shuffle(len(next(iter(columns.values()))), seed=seed,
                    reshuffle_each_iteration=True)
  return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------
# Training.


class _Progress(tf.keras.callbacks.Callback):
  """One line per epoch through `log`."""

  def __init__(self, log, timer_start):
    super().__init__()
    self._log, self._start = log, timer_start

  def on_epoch_end(self, epoch, logs=None):
    shown = {k: v for k, v in (logs or {}).items()
             if "rmse" in k or "auc" in k or k in ("loss", "val_loss")}
    text = " ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items()))
    self._log(f"[ranking] epoch {epoch + 1}: {text} "
              f"({time.perf_counter() - self._start:.0f}s)")


class _TimeBudget(tf.keras.callbacks.Callback):
  """Stops after the epoch when another epoch (at the mean epoch time so
  far) would end past `seconds`; EarlyStopping then restores the best
  weights. Keeps default runs inside the time budget on slow machines."""

  def __init__(self, seconds: float, log):
    super().__init__()
    self._seconds, self._log = seconds, log
    self._spent = 0.0  # fit seconds before a resume

  def get_state(self):
    return {"seconds": time.perf_counter() - self._start}

  def set_state(self, state):
    self._spent = float(state["seconds"])

  def on_train_begin(self, logs=None):
    self._start = time.perf_counter() - self._spent

  def on_epoch_end(self, epoch, logs=None):
    elapsed = time.perf_counter() - self._start
    if elapsed * (epoch + 2) / (epoch + 1) > self._seconds:
      self._log(f"[ranking] time budget ({self._seconds:.0f}s): stopping "
                f"after epoch {epoch + 1}")
      self.model.stop_training = True


# Fields that may change when resuming a run (the rest must match).
RESUMABLE_CHANGES = ("epochs", "patience", "max_train_seconds")


def _signature(config: RankingConfig, **data) -> Dict[str, Any]:
  """What a checkpoint must have been trained with to be resumed."""
  return {"config": {k: v for k, v in dataclasses.asdict(config).items()
                     if k not in RESUMABLE_CHANGES}, "data": data}


def monitor_metric(config: RankingConfig) -> str:
  return "val_rmse" if config.model == "dcn" else "val_rating_rmse"


def fit(config: RankingConfig, prepared: Prepared, run: runs.RunDir,
        log=print, verbose: int = 0) -> tf.keras.Model:
  """Builds and trains the model with early stopping, resuming from
  RUN/checkpoints (`resume.fit`); returns it with the best validation
  weights restored and the run's `resume.FitResult` as `fit_result`."""
  runs.set_seeds(config.seed)
  model = build_model(config, prepared.vocabularies, prepared.global_mean,
                      prepared.user_counts, prepared.movie_counts)
  train, validation = prepared.train, prepared.validation
  if config.model == "mmoe":
    train = with_negatives(train, prepared, config, config.seed)
    validation = with_negatives(validation, prepared, config,
                                config.seed + 1, exclude=prepared.train)
  log(f"[ranking] {config.model}: {len(train[features.LABEL])} train / "
      f"{len(validation[features.LABEL])} validation examples")
  n = len(train[features.LABEL])
  steps = optim.steps_per_epoch(n, config.batch_size)
  model.compile(optimizer=optim.adam(
      config.learning_rate, config.lr_schedule, config.epochs * steps))
  callbacks = [
      resume.EarlyStopping(
          monitor=monitor_metric(config), mode="min",
          patience=config.patience, restore_best_weights=True),
      _Progress(log, time.perf_counter()),
  ]
  if config.max_train_seconds:
    callbacks.append(_TimeBudget(config.max_train_seconds, log))
  encoder = model.inputs_layer.encoder
  train_examples = examples(train, encoder)

  def epoch_data(epoch):  # epoch's own shuffle: recomputed on resume
    return train_examples.shuffle(n, seed=resume.epoch_seed(
        config.seed, epoch)).batch(config.batch_size)

  model.fit_result = resume.fit(
      model, epoch_data, epochs=config.epochs, steps_per_epoch=steps,
      seed=config.seed, directory=run.checkpoints, logdir=run.logs,
      callbacks=callbacks,
      validation_data=dataset(validation, 8192, encoder=encoder),
      signature=_signature(config, n=n),
      example_batch=next(iter(train_examples.batch(8))), log=log,
      verbose=verbose)
  return model


# The HParams trial name: run directory, then these fields.
TRIAL_KEYS = (("model", ""), ("examples", ""), ("learning_rate", "lr"),
              ("batch_size", "batch"), ("epochs", "epochs"))


def log_hparams(config: RankingConfig, metrics: Mapping[str, Any],
                logdir: str, split: str = "test") -> None:
  """TensorBoard HParams (RUN/logs/hparams): the config, under a trial
  named after the run and its main fields, and the headline metrics of
  `split` as `split/name` scalars."""
  with tf.summary.create_file_writer(os.path.join(logdir, "hparams")
                                     ).as_default():
    runs.write_hparams(os.path.dirname(os.path.abspath(logdir)), config,
                       TRIAL_KEYS)
    for k, v in metrics.items():
      if (isinstance(v, (int, float)) and not isinstance(v, bool)
          and np.isfinite(v)):
        tf.summary.scalar(f"{split}/{k}", float(v), step=0)


def ranking_data_config(config: RankingConfig,
                        data_config: pipeline.DataConfig
                        ) -> pipeline.DataConfig:
  """`data_config` with the user-history length the model reads (0 when
  no ranking feature uses `user_history`: nothing to build)."""
  uses_history = any(i.name == "user_history"
                     for i in ranking_inputs(config))
  return dataclasses.replace(
      data_config,
      history_length=config.history_length if uses_history else 0)


def train_and_evaluate(config: RankingConfig,
                       data_config: pipeline.DataConfig, run_dir: str,
                       log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Trains, evaluates and exports a ranking model into `run_dir`.

  Returns the metrics written to RUN/metrics.json: test `rmse`, `mae`
  (and for MMoE per-task `rating_*`, `liked_*`, `engagement_*`, gate
  utilization), `global_mean_rmse` of the same split, `train_seconds`
  (fit only), `total_seconds`, `epochs`, `export_dir`.
  """
  if config.examples != "ratings":
    raise ValueError("train_and_evaluate trains on ratings "
                     "(examples='ratings'); a ranker on candidate lists is "
                     "trained by `tfrs-pipeline train ranking` "
                     "(tfrs_pipeline.app.cascade.train_ranker)")
  with runs.Timer() as total:
    run = runs.RunDir(run_dir)
    data_config = ranking_data_config(config, data_config)
    run.write_config(ranking=config, data=data_config)
    data = pipeline.load_data(data_config, log=log)
    pipeline.save_vocabularies(data, run.path)
    prepared = prepare(data, config, log)
    metrics = train_prepared(config, prepared, run, log)
  metrics["total_seconds"] = total.seconds
  run.write_metrics(metrics)
  return metrics


def evaluate_model(model: tf.keras.Model, config: RankingConfig,
                   prepared: Prepared, log=print) -> Dict[str, Any]:
  """`evaluate.evaluate` on the test ratings; for the MMoE's engagement
  head, with sampled movies the user rated in neither split."""
  engagement = None
  if config.model == "mmoe":
    seen = concat(concat(prepared.train, prepared.validation), prepared.test)
    engagement = with_negatives(prepared.test, prepared, config,
                                config.seed + 2, exclude=seen)
  return evaluate.evaluate(model, config, prepared, engagement, log=log)


def train_prepared(config: RankingConfig, prepared: Prepared,
                   run: runs.RunDir, log=print,
                   export: bool = True) -> Dict[str, Any]:
  """`train_and_evaluate` after the data is in memory (benchmarks and
  experiments reuse one `Prepared`)."""
  with runs.Timer() as t:
    model = fit(config, prepared, run, log)
  epochs = model.fit_result.epochs
  log(f"[ranking] trained {epochs} epochs in {t.seconds:.0f}s")
  metrics = evaluate_model(model, config, prepared, log)
  metrics.update(model=config.model, train_seconds=t.seconds, epochs=epochs,
                 history=model.fit_result.history,
                 num_train=len(prepared.train[features.LABEL]))
  interactions.write_all(model, config, prepared, run, metrics, log=log)
  log_hparams(config, metrics, run.logs)
  if export:
    path = serving_model.export_model(
        model, prepared.users, prepared.movies, prepared.latest_timestamp,
        run.export, log=log)
    metrics["export_dir"] = path
  run.write_metrics(metrics)
  keys = [k for k in ("rmse", "mae", "liked_auc", "engagement_auc",
                      "global_mean_rmse") if k in metrics]
  log("[ranking] test: " + " ".join(f"{k}={metrics[k]:.4f}" for k in keys))
  return metrics


# --------------------------------------------------------------------------
# Candidate lists (`RankingConfig.examples="lists"`).


@dataclasses.dataclass
class Lists:
  """Candidate lists of U users, L candidates each (padded).

  users: per-user ranking inputs [U] (`user_id`, demographics,
    `user_history`, `timestamp`).
  candidates: per-candidate columns [U, L]: `movie_id` ("" = padding),
    the other movie inputs, the source inputs, `user_rating` (the
    held-out label, 0 = none) and `list_mask` (1 = a real candidate).
  """
  users: Columns
  candidates: Columns

  @property
  def size(self) -> int:
    return len(self.candidates["movie_id"])

  def take(self, rows: np.ndarray) -> "Lists":
    return Lists(take(self.users, rows), take(self.candidates, rows))


@dataclasses.dataclass
class ListContext:
  """What a list-trained ranker needs besides the lists."""
  vocabularies: features.Vocabularies  # of the rating features
  global_mean: float
  user_counts: Dict[str, int]
  movie_counts: Dict[str, int]
  movies: Dict[str, np.ndarray]  # table served by the export
  users: Dict[str, np.ndarray]
  latest_timestamp: int


def fit_source_vocabularies(lists: Lists) -> features.Vocabularies:
  """Vocabularies and statistics of the source features, from the real
  candidates of the training lists."""
  mask = lists.candidates[LIST_MASK] > 0
  batch = {f.source: tf.constant(lists.candidates[f.source][mask])
           for f in features.source_features()}
  return features.Vocabularies.fit([batch], features.source_features())


def list_dataset(lists: Lists, batch_size: Optional[int],
                 encoder: features.FeatureEncoder,
                 seed: Optional[int] = None) -> tf.data.Dataset:
  """Batches of lists: per-user inputs [B], per-candidate [B, L]; the
  ids of the user-side bag features (rated movies) looked up once and
  cached. `batch_size` None: the cached lists, unbatched."""
  ds = tf.data.Dataset.from_tensor_slices({**lists.users,
                                           **lists.candidates})
  bags = [e for e in encoder.embeddings
          if e.feature.kind == "multi_categorical"
          and e.feature.entity == features.USER]

  def add(batch):
    batch = dict(batch)
    for layer in bags:
      batch[layer.ids_key] = tf.cast(layer.ids(batch), tf.int32)
    for source in {layer.feature.source for layer in bags}:
      del batch[source]
    return batch

  ds = ds.batch(256).map(add).unbatch().cache()
  if seed is not None:
    ds = ds.shuffle(lists.size, seed=seed, reshuffle_each_iteration=True)
  if batch_size is None:
    return ds
  return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def predict_lists(model: tf.keras.Model, lists: Lists,
                  batch_size: int = 32) -> Dict[str, np.ndarray]:
  """Serving outputs of `model` per candidate: {name: [U, L]}."""
  encoder = model.inputs_layer.encoder

  @tf.function
  def step(batch):
    out = model(batch, training=False)
    shape = tf.shape(batch["movie_id"])
    return {k: tf.reshape(v, shape) for k, v in out.items()}

  chunks: Dict[str, list] = {}
  for batch in list_dataset(lists, batch_size, encoder):
    for k, v in step(batch).items():
      chunks.setdefault(k, []).append(v.numpy())
  return {k: np.concatenate(v) for k, v in chunks.items()}


class _ListValidation(tf.keras.callbacks.Callback):
  """Adds `val_ndcg_at_10` (list-local NDCG@10 of the serving score over
  the validation lists, relevant = held-out rating >= 4) to the logs."""

  def __init__(self, lists: Lists):
    super().__init__()
    self.lists = lists

  def on_epoch_end(self, epoch, logs=None):
    out = predict_lists(self.model, self.lists)
    c = self.lists.candidates
    for key, value in listwise.ndcg_at(
        out["score"], c[features.LABEL] >= 4.0, c[LIST_MASK]).items():
      if key != "lists":
        logs[f"val_{key}"] = value


def rating_lists(columns: Columns) -> Lists:
  """Ratings (numpy columns of train examples: inputs + `user_rating`) as
  one-candidate lists without source features (`rating_lists`)."""
  user_side = {i.name for i in features.INPUTS
               if i.entity in (features.USER, features.CONTEXT)}
  users = {k: v for k, v in columns.items() if k in user_side}
  n = len(columns[features.LABEL])
  cands = {k: v[:, None] for k, v in columns.items()
           if k not in user_side}
  for spec in features.entity_inputs(features.SOURCE):
    cands[spec.name] = np.full((n, 1), spec.default, np.float32)
  cands[LIST_MASK] = np.ones((n, 1), np.float32)
  cands[features.LABEL] = cands[features.LABEL].astype(np.float32)
  return Lists(users, cands)


def fit_lists(config: RankingConfig, lists: Lists, context: ListContext,
              run: runs.RunDir, log=print, verbose: int = 0,
              ratings: Optional[Lists] = None
              ) -> Tuple[tf.keras.Model, Dict[str, float]]:
  """Trains a list ranker with early stopping on the validation lists (a
  seeded `validation_fraction` of the users, at least 10% of them);
  returns the model with the best weights and the validation metrics of
  its best epoch. `ratings` (`rating_lists`): one-candidate lists of
  train ratings interleaved with the candidate lists."""
  runs.set_seeds(config.seed)
  vocabularies = context.vocabularies.merged(fit_source_vocabularies(lists))
  model = build_model(config, vocabularies, context.global_mean,
                      context.user_counts, context.movie_counts)
  rng = np.random.default_rng(config.seed)
  order = rng.permutation(lists.size)
  num_val = max(1, int(round(lists.size * max(config.validation_fraction,
                                               0.1))))
  validation, train = lists.take(order[:num_val]), lists.take(order[num_val:])
  log(f"[ranking] {config.model} on candidate lists: {train.size} train / "
      f"{validation.size} validation users, "
      f"{lists.candidates['movie_id'].shape[1]} candidates each")
  encoder = model.inputs_layer.encoder
  steps = optim.steps_per_epoch(train.size, config.lists_per_batch)
  list_steps, rating_steps = steps, 0
  train_lists = list_dataset(train, None, encoder)
  rating_examples = None
  if ratings is not None:
    rating_steps = optim.steps_per_epoch(ratings.size, config.batch_size)
    rating_examples = list_dataset(ratings, None, encoder)
    log(f"[ranking] + {ratings.size} ratings as one-candidate lists "
        f"({rating_steps} batches per epoch)")
    steps += rating_steps

  def epoch_data(epoch):  # epoch's own shuffles: recomputed on resume
    seed = resume.epoch_seed(config.seed, epoch)
    ds = train_lists.shuffle(train.size, seed=seed).batch(
        config.lists_per_batch)
    if rating_examples is None:
      return ds
    rating_ds = rating_examples.shuffle(ratings.size, seed=seed + 1).batch(
        config.batch_size)
    return tf.data.Dataset.sample_from_datasets(
        [ds.repeat(), rating_ds.repeat()],
        weights=[float(list_steps), float(rating_steps)],
        seed=seed + 2).take(steps)

  model.compile(optimizer=optim.adam(
      config.learning_rate, config.lr_schedule, config.epochs * steps))
  callbacks = [
      _ListValidation(validation),
      resume.EarlyStopping(
          monitor="val_ndcg_at_10", mode="max", patience=config.patience,
          restore_best_weights=True),
      _Progress(log, time.perf_counter()),
  ]
  if config.max_train_seconds:
    callbacks.append(_TimeBudget(config.max_train_seconds, log))
  fitted = resume.fit(
      model, epoch_data, epochs=config.epochs, steps_per_epoch=steps,
      seed=config.seed, directory=run.checkpoints, logdir=run.logs,
      callbacks=callbacks,
      signature=_signature(config, lists=list(lists.candidates[
          "movie_id"].shape),
                           ratings=0 if ratings is None else ratings.size),
      example_batch=next(iter(train_lists.batch(2))), log=log,
      verbose=verbose)
  history = fitted.history
  ndcg = history.get("val_ndcg_at_10", [])
  best = int(np.argmax(ndcg)) if ndcg else 0
  val = {k[4:]: float(v[best]) for k, v in history.items()
         if k.startswith("val_")}
  val["epochs"] = len(ndcg)
  val["best_epoch"] = best + 1
  log_hparams(config, val, run.logs, split="validation")
  # The cross-layer heatmap (TensorBoard's Images, RUN/interactions.png).
  interactions.write_all(model, config, None, run, {}, log=log)
  return model, val


def export_lists_model(model: tf.keras.Model, context: ListContext,
                       run: runs.RunDir, log=print, also=None) -> str:
  """A new version of RUN/export with the list ranker (and what
  `also(directory)` writes into it); returns the SavedModel's path."""
  return serving_model.export_model(model, context.users, context.movies,
                                    context.latest_timestamp, run.export,
                                    log=log, also=also)
