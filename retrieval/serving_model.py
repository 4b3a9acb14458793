"""The exported retrieval SavedModel: user id -> top-K movies via ScaNN.

`export(...)` writes (atomically, `export.save_atomic` with
`export.SCANN_SAVE_OPTIONS`)

    RUN/export/retrieval/   SavedModel
    RUN/export/candidates.npz   movie_ids [N] (str), embeddings [N, D]

Loading needs only TensorFlow and `import scann` (registers the ScaNN
ops); `tfrs_pipeline` does not have to be importable:

```python
import scann  # noqa: F401
import tensorflow as tf
m = tf.saved_model.load("runs/retrieval/export/retrieval")
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
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from retrieval import index
from tfrs_pipeline import export, features


class RetrievalServer(tf.Module):
  """Query tower + user lookup + ScaNN index over the movie embeddings.

  Args:
    query_model: Keras model, dict of query inputs [B] -> [B, D].
    users: users table columns (`pipeline.Data.table("users")`).
    movie_ids: [N] candidate ids.
    movie_embeddings: [N, D] candidate embeddings.
    default_timestamp: time context of the user-id signatures.
    index_config: ScaNN parameters (its `k` is K).
  """

  def __init__(self, query_model: tf.keras.Model,
               users: Mapping[str, np.ndarray], movie_ids: np.ndarray,
               movie_embeddings: np.ndarray, default_timestamp: int,
               index_config: index.IndexConfig):
    super().__init__(name="retrieval_server")
    self.query_inputs = features.inputs_for(features.QUERY)
    user_inputs = [i for i in self.query_inputs
                   if i.entity == features.USER and i.name in users]
    self.user_table = export.EntityTable("user_id", users, user_inputs)
    self.query_model = query_model
    self.k = int(index_config.k)
    self.index = index.build_scann(None, np.asarray(movie_ids).astype(str),
                                   movie_embeddings, index_config)
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


def export_model(query_model: tf.keras.Model, users: Mapping[str, np.ndarray],
                 movie_ids: np.ndarray, movie_embeddings: np.ndarray,
                 default_timestamp: int, export_dir: str, top_k: int = 100,
                 index_config: Optional[index.IndexConfig] = None,
                 log=print) -> Dict[str, Any]:
  """Writes EXPORT_DIR/retrieval (SavedModel) and EXPORT_DIR/candidates.npz.

  Returns {"saved_model": path, "candidates": path, "k": K}.
  """
  from retrieval import evaluate  # pylint: disable=g-import-not-at-top
  movie_ids = np.asarray(movie_ids).astype(str)
  movie_embeddings = np.asarray(movie_embeddings, np.float32)
  config = index_config or evaluate.index_config(len(movie_ids), top_k)
  server = RetrievalServer(query_model, users, movie_ids, movie_embeddings,
                           default_timestamp, config)
  path = export.save_atomic(
      server, os.path.join(export_dir, "retrieval"),
      signatures={"serving_default": server.serving_default,
                  "user_embedding": server.user_embedding,
                  "serve_features": server.serve_features},
      options=export.SCANN_SAVE_OPTIONS, log=log)
  os.makedirs(export_dir, exist_ok=True)
  candidates = os.path.join(export_dir, "candidates.npz")
  tmp = candidates + f".tmp{os.getpid()}.npz"
  np.savez(tmp, movie_ids=movie_ids, embeddings=movie_embeddings)
  os.replace(tmp, candidates)
  return {"saved_model": path, "candidates": candidates, "k": server.k}
