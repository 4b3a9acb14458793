"""The two stages as TensorFlow functions over a batch of requests.

`CascadeGraph` holds every candidate source as tensors (the two-tower
export, `candidates.npz` aligned with the catalogue, EASE and EASE-liked
neighbour tables, the demographic popularity weights) and, when given, the ranking
export. One call of

* `candidates(inputs)` scores the catalogue with every source, removes
  the excluded (rated) movies, takes each source's top `CascadeConfig`
  movies, merges them round-robin by rank and returns the merged
  catalogue indices [B, L] with each source's standardized score and
  rank per candidate [B, L] and the request's `history_size` (what the
  ranker reads, `LIST_INPUTS`): the training lists,
  the evaluation and serving all take their candidates from here;
* `recommend(inputs, k)` runs `candidates`, the ranking export's
  `rank_lists` on them and returns the top k [B, k] with their outputs,
  the sources that retrieved each, and for the item-to-item sources the
  history movie that brought it (`because`);
* `source_scores(inputs)` returns each source's scores over the whole
  catalogue, excluded movies at -inf (the evaluation's per-source lists).

Batch inputs (`GraphInputs.build`): `history` [B, H] / `liked` [B, H']
catalogue indices of the rated / liked movies (-1 pads), `exclude` [B, E]
(history and any other excluded movie), `demographics` [B, A] (rows of
the demographic popularity weights, one per attribute; the zero row when
unknown), plus the query and user inputs of the two exports.

Round-robin merge: candidate j of source s (order `SOURCES`) at rank r
(1-based) gets the key (r - 1) * S + s; a movie takes its smallest key
over the sources; the merged list is the `list_size` smallest keys, which
is exactly "first of each source, then second of each, ..., duplicates
dropped". Ties of any top-k go to the lower catalogue index (`top_k`).
Two-tower: the ScaNN top K of the export with the excluded movies
dropped; a request that keeps fewer than `two_tower` of them (more than
K - n rated movies among them) takes the exact top n of the query
embedding against every movie instead.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import scann  # noqa: F401  (registers the ScaNN ops before loading)
import tensorflow as tf

from ranking.model import LIST_MASK
from tfrs_pipeline import export, features

SOURCES = tuple(features.CANDIDATE_SOURCES)
ITEM_TO_ITEM = ("ease", "ease_liked")
# Per-candidate inputs `candidates` computes for the ranker.
LIST_INPUTS = tuple(i.name for i in features.entity_inputs(features.SOURCE))
_BIG = 1 << 30


def _padded(rows: Sequence[Sequence[int]], width: int = 0) -> np.ndarray:
  """[B, max(len, width, 1)] int32, -1 padded."""
  width = max([width, 1] + [len(r) for r in rows])
  out = np.full((len(rows), width), -1, np.int32)
  for b, r in enumerate(rows):
    out[b, :len(r)] = r
  return out


def user_values(requests, names: Sequence[str]) -> Dict[str, np.ndarray]:
  """Per-user input columns [B] of `names` (unknown: the input's
  default): `user_id`, `user_history` (|-joined ids), `timestamp` and
  demographics."""
  out = {}
  for name in names:
    spec = features.INPUT_BY_NAME[name]
    if name == "user_id":
      col = [r.user_id for r in requests]
    elif name == "user_history":
      col = [features.GENRE_SEPARATOR.join(r.history) for r in requests]
    elif name == "timestamp":
      col = [r.timestamp for r in requests]
    else:
      col = [r.demographics.get(name, spec.default) for r in requests]
    out[name] = np.asarray(col, dtype=object if spec.dtype == tf.string
                           else spec.dtype.as_numpy_dtype)
  return out


class CascadeGraph(tf.Module):
  """Candidate sources (and a ranker) as one TensorFlow function.

  Args:
    fitted: `cascade.FittedSources` (EASE, EASE-liked, popularity) over
      the catalogue.
    retrieval_export: EXPORT_DIR of the retrieval run (`retrieval/` and
      `candidates.npz`); None leaves the two-tower source out.
    rankers: name -> ranking SavedModel directory (`rank_lists`); the
      first is the default of `recommend`; empty: candidates only.
    config: `cascade.CascadeConfig` (candidates per source, list size).
    default_timestamp: the time of a request without one (else the
      ranking export's).
  """

  def __init__(self, fitted, retrieval_export: Optional[str],
               rankers: Mapping[str, str], config):
    super().__init__(name="cascade_graph")
    self.config = config
    catalogue = np.asarray(fitted.ease.movie_ids).astype(str)
    self.catalogue_ids = catalogue
    self.n = len(catalogue)
    self.position = {m: i for i, m in enumerate(catalogue)}
    self.counts = {s: int(n) for s, n in config.counts().items()}
    self.catalogue = tf.constant(catalogue)
    self.lookup = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            self.catalogue, tf.range(self.n, dtype=tf.int32)), -1)
    # Item-to-item: neighbour tables and, for `because`, the positive
    # weights by (history movie, candidate) key.
    self.neighbours, self.because_tables = {}, {}
    for s in ITEM_TO_ITEM:
      source = getattr(fitted, s)
      index = source.neighbour_index.astype(np.int32)
      weight = source.neighbour_weight.astype(np.float32)
      self.neighbours[s] = (tf.constant(index), tf.constant(weight))
      rows = np.repeat(np.arange(self.n, dtype=np.int64), index.shape[1])
      keep = weight.ravel() > 0
      keys = rows[keep] * self.n + index.ravel()[keep]
      keys, first = np.unique(keys, return_index=True)
      self.because_tables[s] = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(
              tf.constant(keys, tf.int64),
              tf.constant(weight.ravel()[keep][first], tf.float32)), 0.0)
    # Demographic popularity: intercept + the rows of the known values
    # (the last row, zeros, for an unknown one).
    self.popularity_source = pop = fitted.popularity
    self.popularity_intercept = tf.constant(pop.intercept)
    self.popularity_weights = tf.constant(np.concatenate(
        [pop.weights, np.zeros((1, self.n), np.float32)]))
    # Two-tower.
    self.two_tower = None
    self.query_inputs: List[str] = []
    self.exported_k = 0
    if retrieval_export is not None and self.counts["two_tower"]:
      self.retrieval = tf.saved_model.load(
          os.path.join(retrieval_export, "retrieval"))
      self.two_tower = self.retrieval.signatures["serve_features"]
      self.query_inputs = list(self.two_tower.structured_input_signature[1])
      with np.load(os.path.join(retrieval_export, "candidates.npz")) as f:
        ids, emb = f["movie_ids"].astype(str), f["embeddings"]
      row = pd.Index(ids).get_indexer(catalogue)
      aligned = np.zeros((self.n, emb.shape[1]), np.float32)
      aligned[row >= 0] = emb[row[row >= 0]]
      self.embeddings = tf.constant(aligned)
      probe = export.call_signature(self.two_tower, {"user_id": [""]}, 1)
      self.exported_k = int(probe["movie_ids"].shape[1])
    # Rankers.
    self.rankers, self.ranking_models = {}, {}
    self.user_inputs: List[str] = []
    self.default_timestamp = 0
    for name, directory in rankers.items():
      model = tf.saved_model.load(directory)
      if "rank_lists" not in model.signatures:
        raise ValueError(f"ranking model {directory} has no rank_lists "
                         "signature: retrain it (make train)")
      fn = model.signatures["rank_lists"]
      self.ranking_models[name], self.rankers[name] = model, fn
      self.user_inputs = sorted(set(self.user_inputs) | {
          n for n, s in fn.structured_input_signature[1].items()
          if s.shape.rank == 1})
      if not self.default_timestamp:
        self.default_timestamp = int(model.default_timestamp.numpy())
    self.default_ranker = next(iter(rankers), None)
    # One concrete function each (input signatures with free batch and
    # history sizes): no retracing and a cheap dispatch per call.
    specs = self._specs = self.input_specs()
    self.candidates = tf.function(self._candidates, input_signature=[specs])
    self.source_scores = tf.function(self._source_scores,
                                     input_signature=[specs])
    k_spec = tf.TensorSpec([], tf.int32, name="k")
    self._recommend_fns = {
        name: tf.function(functools.partial(self._recommend, ranker=name),
                          input_signature=[specs, k_spec])
        for name in self.rankers}

  def input_specs(self) -> Dict[str, tf.TensorSpec]:
    """Specs of `inputs()`: [None, None] index lists, [None] the rest."""
    specs = {name: tf.TensorSpec([None, None], tf.int32, name=name)
             for name in ("history", "liked", "exclude")}
    specs["demographics"] = tf.TensorSpec(
        [None, len(self.popularity_source.attributes)], tf.int32,
        name="demographics")
    for name in sorted(set(self.query_inputs) | set(self.user_inputs)):
      specs[name] = tf.TensorSpec([None], features.INPUT_BY_NAME[name].dtype,
                                  name=name)
    return specs

  def recommend(self, inputs, k: int, ranker: Optional[str] = None
                ) -> Dict[str, tf.Tensor]:
    """Top k [B, k] of the ranker `ranker` (default: the first): `index`
    (catalogue indices, -1 pads), the ranker's outputs, each source's
    score, `retrieved` [B, k, S] and `because` (module docstring)."""
    fn = self._recommend_fns[ranker or self.default_ranker]
    return fn(inputs, tf.constant(int(k), tf.int32))

  # ------------------------------------------------------------------
  # Python side: requests -> batch inputs.

  def inputs(self, requests) -> Dict[str, tf.Tensor]:
    """The batch inputs of `cascade.Request`s (module docstring)."""
    pos = self.position
    history = [[pos[m] for m in dict.fromkeys(r.history) if m in pos]
               for r in requests]
    liked = [[pos[m] for m in dict.fromkeys(r.liked()) if m in pos]
             for r in requests]
    exclude = [sorted(set(h) | {pos[m] for m in r.exclude if m in pos})
               for h, r in zip(history, requests)]
    rows = self.popularity_source.rows([r.demographics for r in requests])
    out = {"history": _padded(history), "liked": _padded(liked),
           "exclude": _padded(exclude),
           "demographics": np.where(rows >= 0, rows, len(
               self.popularity_source.keys)).astype(np.int32)}
    stamp = self.default_timestamp
    stamped = [r if r.timestamp or not stamp else dataclasses.replace(
        r, timestamp=stamp) for r in requests]
    out.update(user_values(stamped, sorted(
        set(self.query_inputs) | set(self.user_inputs))))
    specs = self._specs
    return {k: tf.constant(v.astype(str) if v.dtype == object else v,
                           dtype=specs[k].dtype) for k, v in out.items()}

  # ------------------------------------------------------------------
  # Graph.

  def _mask(self, rows: tf.Tensor) -> tf.Tensor:
    """[B, N] bool, True at the catalogue indices of `rows` [B, E]."""
    b = tf.shape(rows)[0]
    where = tf.where(rows >= 0)
    index = tf.stack([where[:, 0], tf.cast(tf.gather_nd(rows, where),
                                           tf.int64)], axis=1)
    hits = tf.scatter_nd(index, tf.ones(tf.shape(where)[:1], tf.int32),
                         tf.cast(tf.stack([b, self.n]), tf.int64))
    return hits > 0

  def _item_to_item(self, source: str, items: tf.Tensor) -> tf.Tensor:
    """[B, N] s_j = sum over the history items i of B[i, j]."""
    index, weight = self.neighbours[source]
    b = tf.shape(items)[0]
    where = tf.where(items >= 0)  # [T, 2]: only real history entries
    item = tf.gather_nd(items, where)
    j = tf.gather(index, item)  # [T, M]
    w = tf.gather(weight, item)
    ids = j + tf.cast(where[:, :1], tf.int32) * self.n
    # A weighted bincount is the segment sum, 2x faster on CPU here.
    out = tf.math.bincount(tf.reshape(ids, [-1]), tf.reshape(w, [-1]),
                           minlength=b * self.n, maxlength=b * self.n)
    return tf.reshape(out, [b, self.n])

  def _query(self, inputs) -> Dict[str, tf.Tensor]:
    return self.two_tower(**{n: inputs[n] for n in self.query_inputs})

  def _raw_scores(self, inputs) -> Dict[str, tf.Tensor]:
    scores = {}
    if self.two_tower is not None:
      query = self._query(inputs)
      scores["two_tower"] = tf.matmul(query["embedding"], self.embeddings,
                                      transpose_b=True)
      scores["_scann"] = self.lookup.lookup(query["movie_ids"])
    scores["ease"] = self._item_to_item("ease", inputs["history"])
    scores["ease_liked"] = self._item_to_item("ease_liked", inputs["liked"])
    scores["popularity"] = self.popularity_intercept + tf.reduce_sum(
        tf.gather(self.popularity_weights, inputs["demographics"]), axis=1)
    return scores

  def _source_scores(self, inputs) -> Dict[str, tf.Tensor]:
    """{source: [B, N] scores, excluded movies -inf; `<source>_rank`:
    [B, N] each movie's rank in the source's list, 0 = not in it}."""
    excluded = self._mask(inputs["exclude"])
    scores = self._raw_scores(inputs)
    ranks = self._tops(scores, excluded, inputs)
    scores.pop("_scann", None)
    out = {s: tf.where(excluded, -np.inf, v) for s, v in scores.items()}
    out.update({f"{s}_rank": r for s, r in ranks.items()})
    return out

  def _tops(self, scores, excluded, inputs) -> Dict[str, tf.Tensor]:
    """{source: [B, N] rank of each movie in its list (0: not in it)}."""
    b = tf.shape(excluded)[0]
    active = {"ease": tf.reduce_any(inputs["history"] >= 0, axis=1),
              "ease_liked": tf.reduce_any(inputs["liked"] >= 0, axis=1),
              "popularity": tf.ones([b], tf.bool),
              "two_tower": tf.ones([b], tf.bool)}
    ranks = {}
    for s in SOURCES:
      n = min(self.counts[s], self.n)
      if s not in scores or n < 1:
        continue
      masked = tf.where(excluded, -np.inf, scores[s])
      values, top = tf.math.top_k(masked, n)
      keep = (values > -np.inf) & active[s][:, None]
      if s == "two_tower":
        top, keep = self._scann_top(scores["_scann"], excluded, top, keep, n)
      rank = tf.cumsum(tf.cast(keep, tf.int32), axis=1)
      where = tf.where(keep)
      index = tf.stack([where[:, 0], tf.cast(tf.gather_nd(top, where),
                                             tf.int64)], axis=1)
      ranks[s] = tf.scatter_nd(index, tf.gather_nd(rank, where),
                               tf.cast(tf.stack([b, self.n]), tf.int64))
    return ranks

  def _scann_top(self, scann_top, excluded, exact_top, exact_keep, n):
    """The ScaNN top K without excluded movies, its first n; rows left
    with fewer than n take the exact top n."""
    valid = (scann_top >= 0) & ~tf.gather(
        excluded, tf.maximum(scann_top, 0), batch_dims=1)
    position = tf.cumsum(tf.cast(valid, tf.int32), axis=1)
    keep = valid & (position <= n)
    enough = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1) >= n
    # Left-align the kept ScaNN entries into [B, n].
    order = tf.argsort(tf.where(keep, position, _BIG), axis=1,
                       stable=True)[:, :n]
    scann_n = tf.gather(scann_top, order, batch_dims=1)
    scann_keep = tf.gather(keep, order, batch_dims=1)
    width = tf.shape(scann_n)[1]
    pad = n - width  # K < n: pad with nothing (exact rows are used)
    scann_n = tf.pad(scann_n, [[0, 0], [0, pad]], constant_values=0)
    scann_keep = tf.pad(scann_keep, [[0, 0], [0, pad]])
    top = tf.where(enough[:, None], scann_n, exact_top)
    keep = tf.where(enough[:, None], scann_keep, exact_keep)
    return top, keep

  def _candidates(self, inputs) -> Dict[str, tf.Tensor]:
    excluded = self._mask(inputs["exclude"])
    scores = self._raw_scores(inputs)
    ranks = self._tops(scores, excluded, inputs)
    count = len(SOURCES)
    key = tf.fill(tf.shape(excluded), _BIG)
    for i, s in enumerate(SOURCES):
      if s in ranks:
        key = tf.minimum(key, tf.where(ranks[s] > 0,
                                       (ranks[s] - 1) * count + i, _BIG))
    size = min(int(self.config.list_size), self.n)
    neg, index = tf.math.top_k(-key, size)
    valid = -neg < _BIG
    index = tf.where(valid, index, -1)
    safe = tf.maximum(index, 0)
    out = {"index": index, LIST_MASK: tf.cast(valid, tf.float32)}
    keep = tf.cast(~excluded, tf.float32)
    count_keep = tf.maximum(tf.reduce_sum(keep, 1, keepdims=True), 1.0)
    for s in SOURCES:
      if s in ranks:
        x = scores[s]
        mean = tf.reduce_sum(x * keep, 1, keepdims=True) / count_keep
        var = tf.reduce_sum(tf.square(x - mean) * keep, 1,
                            keepdims=True) / count_keep
        z = (x - mean) / tf.maximum(tf.sqrt(var), 1e-6) * keep
        out[f"{s}_score"] = tf.gather(z, safe, batch_dims=1) * out[LIST_MASK]
        out[f"{s}_rank"] = tf.cast(tf.gather(ranks[s], safe, batch_dims=1),
                                   tf.float32) * out[LIST_MASK]
      else:
        out[f"{s}_score"] = tf.zeros_like(out[LIST_MASK])
        out[f"{s}_rank"] = tf.zeros_like(out[LIST_MASK])
    size = tf.reduce_sum(tf.cast(inputs["history"] >= 0, tf.float32), 1)
    out["history_size"] = size[:, None] * out[LIST_MASK]
    return out

  def _because(self, inputs, top: tf.Tensor, retrieved: tf.Tensor
               ) -> tf.Tensor:
    """[B, k] catalogue index of the liked (else rated) history movie with
    the largest positive weight towards each of `top` [B, k] retrieved by
    an item-to-item source (`retrieved` [B, k] bool); ties: earliest in
    the history; -1: none."""
    best = tf.fill(tf.shape(top), -1)
    for source, items in (("ease", inputs["history"]),
                          ("ease_liked", inputs["liked"])):
      keys = (tf.cast(tf.maximum(items, 0), tf.int64)[:, :, None] * self.n
              + tf.cast(tf.maximum(top, 0), tf.int64)[:, None, :])
      w = self.because_tables[source].lookup(keys)  # [B, H, k]
      w = tf.where((items >= 0)[:, :, None], w, 0.0)
      peak = tf.reduce_max(w, axis=1, keepdims=True)
      h = tf.shape(items)[1]
      first = tf.reduce_min(tf.where(
          (w == peak) & (peak > 0), tf.range(h)[None, :, None], h), axis=1)
      found = first < h
      movie = tf.gather(items, tf.minimum(first, h - 1), batch_dims=1)
      # EASE-liked first, so it overrides EASE where it has a movie.
      best = tf.where(found, movie, best)
    return tf.where(retrieved & (top >= 0), best, -1)

  def _recommend(self, inputs, k, ranker: Optional[str] = None
                 ) -> Dict[str, tf.Tensor]:
    """Top k [B, k] of the ranker `ranker` (default: the first)."""
    fn = self.rankers[ranker or self.default_ranker]
    cand = self._candidates(inputs)
    index = cand["index"]
    specs = fn.structured_input_signature[1]
    args = {n: inputs[n] for n in self.user_inputs if n in specs}
    args["movie_id"] = tf.where(index >= 0,
                                tf.gather(self.catalogue, tf.maximum(index, 0)),
                                "")
    for name in LIST_INPUTS:
      args[name] = cand[name]
    out = fn(**args)
    score = tf.where(cand[LIST_MASK] > 0, out["score"], -np.inf)
    k = tf.minimum(k, tf.shape(score)[1])
    values, order = tf.math.top_k(score, k)
    top = tf.gather(index, order, batch_dims=1)
    top = tf.where(values > -np.inf, top, -1)
    result = {"index": top, "score": values}
    for name, v in out.items():
      if name != "score":
        result[name] = tf.gather(v, order, batch_dims=1)
    retrieved = []
    for s in SOURCES:
      rank = tf.gather(cand[f"{s}_rank"], order, batch_dims=1)
      retrieved.append(rank > 0)
      result[f"{s}_score"] = tf.gather(cand[f"{s}_score"], order,
                                       batch_dims=1)
    result["retrieved"] = tf.stack(retrieved, axis=-1)  # [B, k, S]
    item = tf.reduce_any(tf.stack(
        [retrieved[SOURCES.index(s)] for s in ITEM_TO_ITEM], -1), -1)
    result["because"] = self._because(inputs, top, item)
    return result
