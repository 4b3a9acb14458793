"""The exported ranking SavedModel: (user id, movie id) -> rating and score.

`export_model(...)` publishes a new version V of RUN/export holding
ranking/ (`export_layout.new_version`: one rename, never half-written).
Loading needs only TensorFlow:

```python
import tensorflow as tf
m = tf.saved_model.load("runs/ranking/export/1/ranking")  # V = 1
out = m.signatures["serving_default"](user_id=tf.constant(["42", "42"]),
                                      movie_id=tf.constant(["1", "2"]))
out["rating"]  # float32 [B], predicted rating in [1, 5]
out["score"]   # float32 [B], sort candidates by this (higher = better)
```

Signatures:

* `serving_default`: {user_id: string [B], movie_id: string [B]} ->
  {rating: float32 [B], score: float32 [B]}, plus for MMoE
  {engagement: P(user rates the movie) WITHOUT the selection-bias tower,
  liked: P(rating >= 4), rating}. User and movie inputs are looked up
  inside the model (`export.EntityTable`); unknown ids get each input's
  default (OOV embeddings) and still get predictions. The time context
  (`timestamp`) is the latest timestamp of the train data, stored in the
  model: "now" as of training.
* `rank_lists`: candidate lists, what the two-stage recommender calls:
  the user and context inputs [B] (`user_id`, demographics,
  `user_history`, `timestamp`), `movie_id` [B, L] and each candidate
  source's `<source>_score` / `<source>_rank` [B, L] (see
  `features.CANDIDATE_SOURCES`) -> every output [B, L]. The other movie
  inputs are looked up by id inside.
* `serve_features`: every ranking input explicit (names and dtypes of
  `features.inputs_for(RANKING)` plus the inputs of
  `RankingConfig.extra_features`, each [B]; `user_history` is the
  `|`-joined movie ids `rated_movies` reads; timestamp int64 unix
  seconds) -> the same outputs. The user-id signature looks
  `user_history` up in the users table (all of the user's train movies,
  most recent first).

`score`: DCN: the predicted rating. MMoE: P(engage) * E[rating] by default
(`RankingConfig.score="engage_x_rating"`: the expected rating mass of
showing the movie: a likely-watched, well-rated movie first), or the
rating (`score="rating"`).
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from tfrs_pipeline import export, export_layout, features

EXPORT_NAME = "ranking"
OUTPUTS_DCN = ("rating", "score")
OUTPUTS_MMOE = ("rating", "score", "engagement", "liked")


class RankingServer(tf.Module):
  """Ranking model + user and movie lookups.

  Args:
    model: trained `ranking.model.DCN` or `MMoE` (call: inputs -> dict).
    users: users table columns (`pipeline.Data.table("users")`).
    movies: movies table columns (`pipeline.Data.table("movies")`).
    default_timestamp: time context of the id signature.
  """

  def __init__(self, model: tf.keras.Model, users: Mapping[str, np.ndarray],
               movies: Mapping[str, np.ndarray], default_timestamp: int):
    super().__init__(name="ranking_server")
    self.model = model
    # `features.inputs_for(RANKING)` plus the inputs of the config's
    # `extra_features`, as the model reads them.
    self.ranking_inputs = list(model.inputs_layer.input_specs)
    self.outputs = (OUTPUTS_MMOE if type(model).__name__ == "MMoE"
                    else OUTPUTS_DCN)
    by_entity = {features.USER: ("user_id", users),
                 features.MOVIE: ("movie_id", movies)}
    self.tables = {}
    for entity, (key, columns) in by_entity.items():
      inputs = [i for i in self.ranking_inputs
                if i.entity == entity and i.name in columns]
      self.tables[entity] = export.EntityTable(key, columns, inputs)
    self.user_table = self.tables[features.USER]
    self.movie_table = self.tables[features.MOVIE]
    self.default_timestamp = tf.Variable(
        int(default_timestamp), dtype=tf.int64, trainable=False,
        name="default_timestamp")
    self.serve_features = tf.function(
        self._serve_features,
        input_signature=[export.input_specs(self.ranking_inputs)])
    self.serving_default = tf.function(
        self._serve_ids,
        input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                         tf.TensorSpec([None], tf.string, name="movie_id")])
    # Candidate lists: user-side inputs [B], movie_id and source inputs
    # [B, L]; movie attributes are looked up inside.
    self.list_inputs = list_inputs(self.ranking_inputs)
    self.rank_lists = tf.function(
        self._rank_lists, input_signature=[self.list_input_specs()])

  def list_input_specs(self) -> Dict[str, tf.TensorSpec]:
    """`rank_lists` input specs: [None] per user, [None, None] per
    candidate."""
    return {i.name: tf.TensorSpec(
        [None, None] if per_candidate(i) else [None], i.dtype, name=i.name)
            for i in self.list_inputs}

  def _rank_lists(self, inputs):
    inputs = dict(inputs)
    movie_inputs = self.movie_table(inputs["movie_id"])
    for spec in self.ranking_inputs:
      if spec.name not in inputs:
        inputs[spec.name] = movie_inputs[spec.name]
    out = self.model(inputs, training=False)
    shape = tf.shape(inputs["movie_id"])
    return {k: tf.reshape(tf.cast(out[k], tf.float32), shape)
            for k in self.outputs}

  def _predict(self, inputs) -> Dict[str, tf.Tensor]:
    out = self.model(dict(inputs), training=False)
    return {k: tf.cast(out[k], tf.float32) for k in self.outputs}

  def _serve_features(self, inputs):
    return self._predict(inputs)

  def _serve_ids(self, user_id, movie_id):
    inputs = {**self.user_table(user_id), **self.movie_table(movie_id)}
    batch = tf.shape(user_id)[0]
    export.complete_inputs(inputs, self.ranking_inputs, batch,
                           self.default_timestamp)
    return self._predict({s.name: inputs[s.name]
                          for s in self.ranking_inputs})


def per_candidate(spec: features.Input) -> bool:
  """Whether a list input is per candidate ([B, L]) or per user ([B])."""
  return spec.entity in (features.MOVIE, features.SOURCE)


def list_inputs(ranking_inputs: Sequence[features.Input]
                ) -> List[features.Input]:
  """What `rank_lists` takes: the user and context inputs, `movie_id` and
  the source inputs (other movie inputs are looked up by id)."""
  return [i for i in ranking_inputs
          if i.entity != features.MOVIE or i.name == "movie_id"]


def export_model(model: tf.keras.Model, users: Mapping[str, np.ndarray],
                 movies: Mapping[str, np.ndarray], default_timestamp: int,
                 export_dir: str, log=print,
                 also: Optional[Callable[[str], None]] = None) -> str:
  """Publishes a new version of EXPORT_DIR (RUN/export) holding
  ranking/ (SavedModel); `also(directory)` writes more files into the
  same version before it is published. Returns the SavedModel's path."""
  server = RankingServer(model, users, movies, default_timestamp)
  with export_layout.new_version(export_dir, "ranking", log=log) as v:
    path = export.save_model(
        server, os.path.join(v.tmp, EXPORT_NAME),
        signatures={"serving_default": server.serving_default,
                    "serve_features": server.serve_features,
                    "rank_lists": server.rank_lists}, log=log)
    if also is not None:
      also(v.tmp)
  return v.final(path)
