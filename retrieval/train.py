"""`tfrs-pipeline train retrieval`: train, evaluate and export the two-tower.

    tfrs-pipeline train retrieval --run_dir=runs/retrieval [--epochs=...]

Public API (used by the bench and the service):

* `RetrievalConfig` (from `retrieval.model`): hyperparameters, one flag
  per field.
* `train_and_evaluate(config, data_config, run_dir, log=print) -> dict`:
  the metrics written to RUN/metrics.json (see `retrieval.evaluate`) plus
  `training_seconds`, `epochs_trained`, `total_seconds` and `export`;
  with `config.model="joint"` (`retrieval.joint`) also the rating
  metrics `rmse`, `mae`, `spearman`, `liked_auc` on the test ratings.
* `main(argv)`: the command.

What a run writes (`tfrs_pipeline.runs`):

    RUN/config.json        {"retrieval": RetrievalConfig, "data": DataConfig}
    RUN/vocabularies.json  train vocabularies
    RUN/checkpoints/       per-epoch checkpoints (`tfrs_pipeline.resume`):
                           model, optimizer, epoch, history
    RUN/logs/              TensorBoard: epoch loss (`loss_per_example`:
                           the epoch's mean softmax loss; `loss` is
                           TFRS's last-batch sum) and sampled test top-k
                           accuracy per epoch, final metrics, hparams,
                           movie embeddings in the projector
                           (logs/projector, metadata title/genres/
                           director/star)
    RUN/metrics.json       evaluation
    RUN/rating_export/V/rating/  --model joint: the rating head over
                           both towers (`joint.export_rating`)
    RUN/export/V/          a new version V per export (one rename,
                           `export_layout`): ScaNN SavedModel
                           (retrieval/), its stock-ops twin for TF
                           Serving (tfserving/retrieval/1) and
                           candidates.npz (`serving_model`); the paths
                           and V in metrics.json's `export`

Resuming: rerunning with the same RUN restores the latest checkpoint (and
the saved vocabularies) and continues from the next epoch, exactly: the
weights, history and metrics equal an uninterrupted run's (each epoch's
shuffle and random ops are seeded by (seed, epoch), `tfrs_pipeline.resume`);
a run that had finished all its epochs is only re-evaluated and
re-exported.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, Optional

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf
from tensorboard.plugins import projector

from retrieval import evaluate as evaluate_lib
from retrieval import joint
from retrieval import model as model_lib
from retrieval import serving_model
from retrieval.model import RetrievalConfig
from tfrs_pipeline import errors, features, optim, pipeline, resume, runs

__all__ = ["RetrievalConfig", "train_and_evaluate"]


class _EpochEnd(tf.keras.callbacks.Callback):
  """Per epoch: sampled test top-k accuracy, added to the logs (so the
  epoch's checkpointed history and TensorBoard scalars hold it)."""

  def __init__(self, data, model, sample, log):
    super().__init__()
    self._data, self._model, self._sample = data, model, sample
    self._log = log

  def on_epoch_end(self, epoch, logs=None):
    logs = logs if logs is not None else {}
    if self._sample:
      _, movie_emb = evaluate_lib.candidate_table(
          self._data, self._model.candidate_model)
      queries, _, targets = evaluate_lib.test_queries(
          self._data, self._model.query_model, limit=self._sample)
      movie_ids = self._data.table("movies")["movie_id"]
      acc = evaluate_lib.top_k_accuracy(queries, targets, movie_ids,
                                        movie_emb, ks=(10, 100))
      for k, v in acc.items():
        logs[f"sampled_test_{k}"] = v
      self._log(f"[train] epoch {epoch + 1}: loss per example "
                f"{logs.get('loss_per_example', 0):.4f}, "
                + ", ".join(f"sampled test {k} {v:.4f}"
                            for k, v in acc.items()))


def _write_projector(logdir: str, movies: Dict[str, np.ndarray],
                     embeddings: np.ndarray) -> None:
  """Movie embeddings for the TensorBoard embedding projector.

  RUN/logs/projector holds the checkpoint, metadata.tsv and
  projector_config.pbtxt, and an event file (a text summary describing
  the embeddings): the projector plugin reads projector_config.pbtxt
  only in run directories, i.e. directories with an event file, so
  without it `tensorboard --logdir runs` shows no projector.
  """
  path = os.path.join(logdir, "projector")
  os.makedirs(path, exist_ok=True)

  def clean(v):
    return str(v).replace("\t", " ").replace("\n", " ") or "-"

  with open(os.path.join(path, "metadata.tsv"), "w", encoding="utf-8") as f:
    f.write("title\tgenres\tdirector\tstar\n")
    for i in range(len(embeddings)):
      f.write("\t".join(clean(movies[c][i]) if c in movies else "-"
                        for c in ("movie_title", "movie_genres", "director",
                                  "star")) + "\n")
  variable = tf.Variable(embeddings, name="movie_embeddings")
  checkpoint = tf.train.Checkpoint(embedding=variable)
  checkpoint.save(os.path.join(path, "embedding.ckpt"))
  config = projector.ProjectorConfig()
  embedding = config.embeddings.add()
  embedding.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
  embedding.metadata_path = "metadata.tsv"
  projector.visualize_embeddings(path, config)
  with tf.summary.create_file_writer(path).as_default() as writer:
    tf.summary.text(
        "movie_embeddings",
        f"{embeddings.shape[0]:,} movie embeddings of {embeddings.shape[1]} "
        "dimensions (the candidate tower's output), labelled by title, "
        "genres, director and star: open the Projector tab.", step=0)
    writer.flush()


# The HParams trial name: run directory, then these fields.
TRIAL_KEYS = (("examples", ""), ("learning_rate", "lr"),
              ("embedding_dim", "dim"), ("batch_size", "batch"),
              ("epochs", "epochs"))


def _write_summaries(logdir: str, config: RetrievalConfig,
                     result: Dict[str, Any], step: int) -> None:
  writer = tf.summary.create_file_writer(os.path.join(logdir, "eval"))
  with writer.as_default():
    runs.write_hparams(os.path.dirname(os.path.abspath(logdir)), config,
                       TRIAL_KEYS)
    for k, v in result.items():
      if isinstance(v, float):
        tf.summary.scalar(f"final/{k}", v, step=step)
    for k, v in result.get("popularity", {}).items():
      tf.summary.scalar(f"popularity/{k}", v, step=step)
  writer.flush()


# Fields that may change when resuming a run (the rest shape the model or
# its training and must match the checkpoint).
RESUMABLE_CHANGES = ("epochs", "eval_sample", "top_k")


def _check_resumable(run: runs.RunDir, config: RetrievalConfig) -> None:
  """Raises `errors.ConfigError` when RUN's checkpoint was trained with
  another configuration (restoring it would fail on shapes, or silently
  mix)."""
  path = run.file("config.json")
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    saved = json.load(f).get("retrieval", {})
  current = dataclasses.asdict(config)
  changed = sorted(
      k for k, v in current.items()
      if k not in RESUMABLE_CHANGES and k in saved
      and json.loads(json.dumps(v)) != saved[k])
  if changed:
    raise errors.ConfigError(
        f"{run.path} holds a checkpoint trained with different "
        f"{', '.join(changed)} (see its config.json); resume with the same "
        f"settings, or use a new --run_dir")


def train_and_evaluate(config: RetrievalConfig,
                       data_config: pipeline.DataConfig, run_dir: str,
                       log: Callable[[str], Any] = print,
                       data: Optional[pipeline.Data] = None
                       ) -> Dict[str, Any]:
  """Trains (resuming from RUN/checkpoints), evaluates and exports.

  `data`: already loaded with `data_config` (and `config.history_length`),
  else loaded here. Returns the metrics dict written to RUN/metrics.json.
  """
  start = time.perf_counter()
  run = runs.RunDir(run_dir)
  runs.set_seeds(config.seed)
  data_config = dataclasses.replace(data_config,
                                    history_length=config.history_length)
  if data is None:
    data = pipeline.load_data(data_config, log=log)
  latest = tf.train.latest_checkpoint(run.checkpoints)
  if latest:
    _check_resumable(run, config)
  vocab_path = run.file("vocabularies.json")
  if latest and os.path.exists(vocab_path):
    log(f"[train] resuming: vocabularies from {vocab_path}")
    data.vocabularies = features.Vocabularies.load(vocab_path)
  else:
    pipeline.save_vocabularies(data, run.path)
  run.write_config(retrieval=config, data=data_config)

  train_ratings = data.train_ratings
  frequencies = model_lib.candidate_frequencies(train_ratings.movie_id)
  if config.model == "joint":
    model = joint.JointModel(
        config, data.vocabularies, frequencies, corpus=data.table("movies"),
        global_mean=float(train_ratings[features.LABEL].mean()))
  else:
    model = model_lib.RetrievalModel(config, data.vocabularies, frequencies,
                                     corpus=data.table("movies"))
  if config.examples == "user":
    examples = model.user_examples(data.fit_users)
    users = int(train_ratings.user_id.nunique())
    num_examples = config.passes_per_epoch * users
    unit = f"{users} users x {config.passes_per_epoch} passes"
  else:
    examples = model.training_examples(data.train)
    num_examples = data.num_train
    unit = f"{num_examples} train ratings"
  optimizer = optim.adam(
      config.learning_rate, config.lr_schedule, config.epochs
      * optim.steps_per_epoch(num_examples, config.batch_size))
  model.compile(optimizer=optimizer)
  example_batch = next(iter(examples.batch(8)))  # builds the variables
  if config.examples == "user":  # one epoch: that many passes
    examples = examples.cache().repeat(config.passes_per_epoch)
  examples = examples.cache()
  steps = int(examples.batch(config.batch_size).reduce(
      np.int64(0), lambda n, _: n + 1))

  def epoch_data(epoch):  # epoch's own shuffle: recomputed on resume
    return examples.shuffle(100_000, seed=resume.epoch_seed(
        config.seed, epoch)).batch(config.batch_size)

  log(f"[train] {unit} per epoch ({steps} batches of {config.batch_size}), "
      f"{config.epochs} epochs")
  fitted = resume.fit(
      model, epoch_data, epochs=config.epochs, steps_per_epoch=steps,
      seed=config.seed, directory=run.checkpoints, logdir=run.logs,
      callbacks=[_EpochEnd(data, model, config.eval_sample, log)],
      example_batch=example_batch, log=log, verbose=2)
  initial_epoch, training_seconds = fitted.initial_epoch, fitted.seconds
  if initial_epoch >= config.epochs:
    log("[train] all epochs done already; evaluating")
  else:
    log(f"[train] trained epochs {initial_epoch + 1}..{fitted.epochs} in "
        f"{training_seconds:.0f} s")

  result = evaluate_lib.evaluate(model, data, log=log)
  if config.model == "joint":
    rating = joint.rating_metrics(
        model, data.test, float(train_ratings[features.LABEL].mean()))
    log("[eval] joint rating: " + ", ".join(
        f"{k} {rating[k]:.4f}" for k in ("rmse", "mae", "spearman",
                                         "liked_auc")))
    result.update(rating)
  movie_ids = result.pop("movie_ids")
  movie_embeddings = result.pop("movie_embeddings")
  timestamps, latest_ts = evaluate_lib.latest_train_timestamps(data)
  del timestamps
  exported = serving_model.export_model(
      model.query_model, data.table("users"), movie_ids, movie_embeddings,
      latest_ts, run.export, top_k=config.top_k, log=log)
  exported["default_timestamp"] = latest_ts
  if config.model == "joint":
    exported["rating_saved_model"] = joint.export_rating(model, run.path,
                                                         log=log)

  result.update(
      training_seconds=training_seconds,
      epochs_trained=fitted.epochs - initial_epoch,
      history=fitted.history,
      total_seconds=time.perf_counter() - start,
      export=exported,
      config=dataclasses.asdict(config),
  )
  _write_projector(run.logs, data.table("movies"), movie_embeddings)
  _write_summaries(run.logs, config, result, config.epochs)
  run.write_metrics(result)
  log(f"[train] wrote {run.file('metrics.json')}")
  return result
