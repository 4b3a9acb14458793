"""The exported retrieval SavedModels: user id -> top-K movies.

`export_model(...)` publishes one new version V of RUN/export
(`export_layout.new_version`: written under a temporary name, published
by one rename, so the SavedModels and the candidates always match):

    RUN/export/V/retrieval/   SavedModel, top-K by ScaNN
                            (`export.SCANN_SAVE_OPTIONS`)
    RUN/export/V/tfserving/retrieval/1/   SavedModel, the same signatures
                            with an exact top-K in stock TensorFlow ops
                            (matmul + top_k, `index.build_brute_force`),
                            for stock TensorFlow Serving (model base path
                            RUN/export/V/tfserving/retrieval, version 1);
                            saved with `STOCK_OPS_SAVE_OPTIONS`, which
                            refuses any custom-op namespace
    RUN/export/V/candidates.npz   movie_ids [N] (str), embeddings [N, D]

TensorFlow Serving has no ScaNN ops, so it cannot load the first one;
the second loads anywhere TensorFlow does (no `import scann`). At the
movie corpus size ScaNN re-scores its candidates exactly, so both return
the same top-K.

Loading needs only TensorFlow and `import scann` (registers the ScaNN
ops); `tfrs_pipeline` does not have to be importable:

```python
import scann  # noqa: F401
import tensorflow as tf
m = tf.saved_model.load("runs/retrieval/export/1/retrieval")  # V = 1
out = m.signatures["serving_default"](user_id=tf.constant(["42"]))
out["movie_ids"]  # string [B, K], best first
out["scores"]     # float32 [B, K]
```

Signatures:

* `serving_default`: {user_id: string [B]} -> {movie_ids: string [B, K],
  scores: float32 [B, K], embedding: float32 [B, D] (the query embedding:
  the two-stage recommender scores candidates of other sources with it
  against `candidates.npz`)}. The user's inputs (demographics, history) are
  looked up inside the model (`export.EntityTable`); an unknown id gets
  every input's default (OOV embeddings, empty history) and still gets K
  results. `default_timestamp` (the latest train timestamp, stored in the
  model) is "now" as of training: the time context of the user-id
  signatures if the query tower reads `timestamp` (the default spec keeps
  time for ranking only), and what the recommender gives the ranking
  stage for a new user.
  K = `RetrievalConfig.top_k` (default 500), at most the number of movies.
* `user_embedding`: {user_id: string [B]} -> {embedding: float32 [B, D]}
  (same lookups and time context as `serving_default`).
* `serve_features`: every query-tower input explicit (names and dtypes of
  `features.inputs_for(QUERY)`, e.g. user_id, user_gender, ...,
  user_history, each [B]) -> same outputs as
  `serving_default`.

Both exports have these signatures; only the index inside differs.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from retrieval import index
from tfrs_pipeline import export, export_layout, features, runs

# Saving with an empty whitelist refuses every custom-op namespace
# (`Scann>...`, ...); `namespace_whitelist=None`, the default, allows all.
STOCK_OPS_SAVE_OPTIONS = tf.saved_model.SaveOptions(namespace_whitelist=[])

# The TF Serving export under EXPORT_DIR: model base path and version.
TFSERVING_MODEL = os.path.join("tfserving", "retrieval")
TFSERVING_VERSION = 1


class RetrievalServer(tf.Module):
  """Query tower + user lookup + a top-K index over the movie embeddings.

  Args:
    query_model: Keras model, dict of query inputs [B] -> [B, D].
    users: users table columns (`pipeline.Data.table("users")`).
    index_layer: an indexed `tfrs.layers.factorized_top_k` layer over the
      movie embeddings, without a query model (called on [B, D]): ScaNN
      (`index.build_scann`) or brute force (`index.build_brute_force`,
      stock TensorFlow ops only).
    k: K, the number of movies returned.
    default_timestamp: time context of the user-id signatures.
  """

  def __init__(self, query_model: tf.keras.Model,
               users: Mapping[str, np.ndarray],
               index_layer: tfrs.layers.factorized_top_k.TopK, k: int,
               default_timestamp: int):
    super().__init__(name="retrieval_server")
    self.query_inputs = features.inputs_for(features.QUERY)
    user_inputs = [i for i in self.query_inputs
                   if i.entity == features.USER and i.name in users]
    self.user_table = export.EntityTable("user_id", users, user_inputs)
    self.query_model = query_model
    self.k = int(k)
    self.index = index_layer
    self.default_timestamp = tf.Variable(
        int(default_timestamp), dtype=tf.int64, trainable=False,
        name="default_timestamp")
    specs = export.input_specs(self.query_inputs)
    self.serve_features = tf.function(self._serve_features,
                                      input_signature=[specs])
    id_spec = tf.TensorSpec([None], tf.string, name="user_id")
    self.serving_default = tf.function(self._serve_user_id,
                                       input_signature=[id_spec])
    self.user_embedding = tf.function(self._user_embedding,
                                      input_signature=[id_spec])

  def _inputs_of(self, user_id: tf.Tensor) -> Dict[str, tf.Tensor]:
    inputs = self.user_table(user_id)
    batch = tf.shape(user_id)[0]
    export.complete_inputs(inputs, self.query_inputs, batch,
                           self.default_timestamp)
    return inputs

  def _search(self, embeddings: tf.Tensor) -> Dict[str, tf.Tensor]:
    scores, ids = self.index(embeddings, k=self.k)
    return {"movie_ids": ids, "scores": scores}

  def _search_and_embed(self, inputs):
    embeddings = self.query_model(inputs)
    return {**self._search(embeddings), "embedding": embeddings}

  def _serve_features(self, inputs):
    return self._search_and_embed(dict(inputs))

  def _serve_user_id(self, user_id):
    return self._search_and_embed(self._inputs_of(user_id))

  def _user_embedding(self, user_id):
    return {"embedding": self.query_model(self._inputs_of(user_id))}

  def signature_map(self) -> Dict[str, Any]:
    """The SavedModel signatures, for `tf.saved_model.save`."""
    return {"serving_default": self.serving_default,
            "user_embedding": self.user_embedding,
            "serve_features": self.serve_features}


def export_model(query_model: tf.keras.Model, users: Mapping[str, np.ndarray],
                 movie_ids: np.ndarray, movie_embeddings: np.ndarray,
                 default_timestamp: int, export_dir: str, top_k: int = 100,
                 index_config: Optional[index.IndexConfig] = None,
                 log=print) -> Dict[str, Any]:
  """Publishes a new version V of EXPORT_DIR (RUN/export) holding
  retrieval/ (ScaNN SavedModel), tfserving/retrieval/1/ (brute-force
  SavedModel, stock ops) and candidates.npz.

  Returns {"saved_model": path, "tfserving": path, "candidates": path,
  "version": V, "k": K, "tfserving_seconds": time the second export
  took}.
  """
  movie_ids = np.asarray(movie_ids).astype(str)
  movie_embeddings = np.asarray(movie_embeddings, np.float32)
  config = index_config or index.movie_index_config(len(movie_ids), top_k)
  k = int(config.k)
  with export_layout.new_version(export_dir, "retrieval", log=log) as v:
    server = RetrievalServer(
        query_model, users,
        index.build_scann(None, movie_ids, movie_embeddings, config), k,
        default_timestamp)
    path = export.save_model(
        server, os.path.join(v.tmp, "retrieval"),
        signatures=server.signature_map(),
        options=export.SCANN_SAVE_OPTIONS, log=log)
    with runs.Timer() as timer:
      stock = RetrievalServer(
          query_model, users,
          index.build_brute_force(None, movie_ids, movie_embeddings, k=k),
          k, default_timestamp)
      tfserving = export.save_model(
          stock, os.path.join(v.tmp, TFSERVING_MODEL,
                              str(TFSERVING_VERSION)),
          signatures=stock.signature_map(), options=STOCK_OPS_SAVE_OPTIONS,
          log=log)
    candidates = os.path.join(v.tmp, "candidates.npz")
    np.savez(candidates, movie_ids=movie_ids, embeddings=movie_embeddings)
  log(f"[export] TF Serving model (stock ops, brute-force top-{k}) in "
      f"{timer.seconds:.1f} s: base path "
      f"{os.path.dirname(v.final(tfserving))}")
  return {"saved_model": v.final(path), "tfserving": v.final(tfserving),
          "candidates": v.final(candidates), "version": v.number, "k": k,
          "tfserving_seconds": round(timer.seconds, 2)}
