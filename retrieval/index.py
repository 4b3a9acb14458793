"""Top-K candidate indexes (ScaNN and brute force); benchmarks of them live
in `retrieval.index_bench`.

Both indexes are TFRS `factorized_top_k` layers: `build_scann` returns a
`tfrs.layers.factorized_top_k.ScaNN` (tree partitioning + asymmetric hashing,
dot product, optional exact reordering) and `build_brute_force` a
`BruteForce` layer used as the exact reference. Called on `[B, ...]` query
features (or `[B, D]` embeddings when there is no query model) they return
`(scores [B, k], identifiers [B, k])`.

Exporting a ScaNN index (the pattern the retrieval model uses; it is what
`save_index` / `load_index` do and what `tests/test_index.py` checks in a
fresh process):

```python
import tfrs_pipeline  # before TensorFlow
import tensorflow as tf

layer = build_scann(query_model, movie_ids, movie_embeddings, IndexConfig())
module = tf.Module()
module.index = layer  # tracks the ScaNN state variables

@tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
def serve(queries):
  scores, ids = layer(queries)
  return {"scores": scores, "ids": ids}

module.serve = serve
tf.saved_model.save(
    module, path, signatures={"serving_default": serve},
    options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]))

# Loading process: `import scann` registers the Scann>... custom ops.
import scann  # noqa: F401
loaded = tf.saved_model.load(path)
ids = loaded.serve(tf.constant(["42"]))["ids"]  # [1, k] bytes
ids = loaded.signatures["serving_default"](queries=tf.constant(["42"]))["ids"]
```

Saving the Keras layer itself (`tf.saved_model.save(layer, path,
options=...)` after one call, as in the TFRS tutorial) also works; the
loaded object is then called as `loaded(queries) -> (scores, ids)`.
Loading without `import scann` fails with "Op type not registered
'Scann>TensorsToScann'". On TF 2.20 saving without the whitelist succeeds
too (`namespace_whitelist=None` allows every namespace); passing
`["Scann"]` keeps the check that no other custom-op namespace slipped in.
"""

import dataclasses

from typing import Any, Callable, Optional, Tuple, Union

import numpy as np

import tfrs_pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
import scann  # noqa: F401  (registers the ScaNN ops for load_index)
import tensorflow as tf
import tensorflow_recommenders as tfrs

SAVE_OPTIONS = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])

Array = Union[np.ndarray, tf.Tensor]
Candidates = Union[Array, tf.data.Dataset]


@dataclasses.dataclass(frozen=True)
class IndexConfig:
  """ScaNN index parameters (tree + asymmetric hashing, dot product).

  The defaults are for the 3,883-movie corpus with k=100: there the top-100
  (2.6% of the corpus) of popularity-skewed embeddings spans most leaves
  (rank-64 SVD factors of MovieLens-1M: recall 0.98 searching 3/4 of the
  leaves, 0.96 at 1/2), so all 32 leaves are searched and the speed comes
  from asymmetric hashing plus an exact re-score of 1,000 candidates:
  recall@100 >= 0.9986 on SVD factors, 0.995 on `make_synthetic_corpus(3883)`
  (0.988 with 500). See `LARGE_CORPUS_CONFIG` for 1M candidates.
  """

  num_leaves: int = 32
  num_leaves_to_search: int = 32
  num_reordering_candidates: Optional[int] = 1000
  dimensions_per_block: int = 2
  training_iterations: int = 12
  k: int = 100
  distance_measure: str = "dot_product"
  parallelize_batch_searches: bool = True

  def __post_init__(self):
    if not 0 < self.num_leaves_to_search <= self.num_leaves:
      raise ValueError(
          f"num_leaves_to_search must be in [1, num_leaves={self.num_leaves}],"
          f" got {self.num_leaves_to_search}.")
    if (self.num_reordering_candidates is not None
        and self.num_reordering_candidates < self.k):
      raise ValueError(
          f"num_reordering_candidates ({self.num_reordering_candidates}) must"
          f" be >= k ({self.k}).")

  @property
  def name(self) -> str:
    reorder = self.num_reordering_candidates or 0
    return (f"L{self.num_leaves}/s{self.num_leaves_to_search}/r{reorder}"
            f"/d{self.dimensions_per_block}")


# For ~1M candidates of the served dimension (640): `make bench`'s sweep
# (`synthetic_tradeoff(1_000_000, 640)`) chose 1000 leaves, 2 searched, 250
# re-scored (recall@100 0.994, 114x brute force at batch 1, 47x at 256);
# searching 1 leaf fell to 0.93, so this takes the next step, 5 searched
# (0.9955, 106x and 39x in the same run). The choice depends on the
# dimension: at 64-d 2000 leaves, 80 searched and 2,000 re-scored were
# needed for 0.959.
LARGE_CORPUS_CONFIG = IndexConfig(
    num_leaves=1000, num_leaves_to_search=5, num_reordering_candidates=250)


# ScaNN over the 3,883 movies: 32 leaves, 24 searched, 1,000 re-scored
# exactly. Measured on trained (L2-normalized) movie embeddings with the
# per-user queries: recall@100 vs brute force 0.997 (the `index` defaults,
# 64/16/500, gave 0.91: the partitioning, not the re-scoring, loses
# neighbours). At this size brute force is as fast; ScaNN is what scales.
MOVIE_INDEX_CONFIG = IndexConfig(
    num_leaves=32, num_leaves_to_search=24, num_reordering_candidates=1000)


def movie_index_config(num_candidates: int, k: int = 100) -> IndexConfig:
  """ScaNN parameters for a corpus size: `MOVIE_INDEX_CONFIG`, with fewer
  leaves (~40 movies each, 3/4 searched) for tiny test corpora."""
  k = max(1, min(k, num_candidates))
  default = MOVIE_INDEX_CONFIG
  num_leaves = max(1, min(default.num_leaves, num_candidates // 40))
  to_search = max(1, -(-num_leaves * default.num_leaves_to_search
                       // default.num_leaves))
  return dataclasses.replace(
      default, k=k, num_leaves=num_leaves, num_leaves_to_search=to_search,
      num_reordering_candidates=max(k, min(
          default.num_reordering_candidates, num_candidates)))


def _to_tensors(
    candidate_ids: Optional[Array], embeddings: Candidates
) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
  """Returns (embeddings [N, D] float32, identifiers [N] or None)."""
  if isinstance(embeddings, tf.data.Dataset):
    batches = list(embeddings)
    if isinstance(embeddings.element_spec, tuple):
      if candidate_ids is not None:
        raise ValueError("Identifiers given twice (dataset yields pairs).")
      candidate_ids = tf.concat([ids for ids, _ in batches], axis=0)
      batches = [emb for _, emb in batches]
    embeddings = tf.concat(batches, axis=0)
  embeddings = tf.convert_to_tensor(embeddings, tf.float32)
  if candidate_ids is not None:
    candidate_ids = tf.convert_to_tensor(candidate_ids)
  return embeddings, candidate_ids


def build_scann(
    query_model: Optional[tf.keras.Model],
    candidate_ids: Optional[Array],
    embeddings: Candidates,
    config: IndexConfig = IndexConfig(),
) -> tfrs.layers.factorized_top_k.ScaNN:
  """Builds a ScaNN index over candidate embeddings.

  Args:
    query_model: Keras model mapping query features to `[B, D]` embeddings, or
      None to query with embeddings directly.
    candidate_ids: `[N]` identifiers (str or int) returned by searches, or
      None for row indices (or when `embeddings` yields `(ids, emb)` pairs).
    embeddings: `[N, D]` candidate embeddings, or a batched `tf.data.Dataset`
      of `[b, D]` embeddings or of `([b], [b, D])` (ids, embeddings) pairs.
    config: Index parameters.

  Returns:
    The indexed layer: `layer(queries, k=None) -> (scores [B, k], ids [B, k])`.
  """
  embeddings, candidate_ids = _to_tensors(candidate_ids, embeddings)
  layer = tfrs.layers.factorized_top_k.ScaNN(
      query_model=query_model,
      k=config.k,
      distance_measure=config.distance_measure,
      num_leaves=config.num_leaves,
      num_leaves_to_search=config.num_leaves_to_search,
      training_iterations=config.training_iterations,
      dimensions_per_block=config.dimensions_per_block,
      num_reordering_candidates=config.num_reordering_candidates,
      parallelize_batch_searches=config.parallelize_batch_searches)
  return layer.index(candidates=embeddings, identifiers=candidate_ids)


def build_brute_force(
    query_model: Optional[tf.keras.Model],
    candidate_ids: Optional[Array],
    embeddings: Candidates,
    k: int = 100,
) -> tfrs.layers.factorized_top_k.BruteForce:
  """Builds the exact (matmul + top_k) index; arguments as `build_scann`."""
  embeddings, candidate_ids = _to_tensors(candidate_ids, embeddings)
  layer = tfrs.layers.factorized_top_k.BruteForce(query_model=query_model, k=k)
  return layer.index(candidates=embeddings, identifiers=candidate_ids)


def search_fn(
    layer: tfrs.layers.factorized_top_k.TopK, dim: int, k: Optional[int] = None
) -> Callable[[tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]:
  """Wraps `layer` for `[B, dim]` embedding queries in a `tf.function`."""

  @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32)])
  def search(queries):
    return layer(queries, k=k)

  return search


def save_index(
    layer: tfrs.layers.factorized_top_k.TopK,
    path: str,
    query_signature: tf.TensorSpec,
) -> None:
  """Saves `layer` as a SavedModel with a `serve` / `serving_default` function.

  Args:
    layer: An indexed ScaNN or BruteForce layer.
    path: Export directory.
    query_signature: Spec of the queries the layer takes, e.g.
      `tf.TensorSpec([None], tf.string)` for user ids through a query model or
      `tf.TensorSpec([None, D], tf.float32)` for embeddings.
  """
  module = tf.Module()
  module.index = layer

  @tf.function(input_signature=[query_signature])
  def serve(queries):
    scores, ids = layer(queries)
    return {"scores": scores, "ids": ids}

  module.serve = serve
  tf.saved_model.save(
      module, path, signatures={"serving_default": serve},
      options=SAVE_OPTIONS)


def load_index(path: str) -> Any:
  """Loads a `save_index` export (this module imports scann, which
  registers the ScaNN ops)."""
  return tf.saved_model.load(path)


def recall_against_exact(exact_ids: Array, approx_ids: Array) -> float:
  """Mean fraction of the exact top-K found by the approximate top-K.

  Args:
    exact_ids: `[Q, K]` exact identifiers.
    approx_ids: `[Q, K']` approximate identifiers (K' is normally K).

  Returns:
    Mean over queries of |exact & approx| / K.
  """
  exact_ids, approx_ids = np.asarray(exact_ids), np.asarray(approx_ids)
  if exact_ids.ndim != 2 or approx_ids.ndim != 2:
    raise ValueError("Identifiers must be [Q, K] matrices.")
  if exact_ids.shape[0] != approx_ids.shape[0]:
    raise ValueError(f"Query counts differ: {exact_ids.shape[0]} vs "
                     f"{approx_ids.shape[0]}.")
  k = exact_ids.shape[1]
  if exact_ids.shape[0] == 0 or k == 0:
    raise ValueError("Empty identifiers.")
  hits = [len(set(e.tolist()) & set(a.tolist()))
          for e, a in zip(exact_ids, approx_ids)]
  return float(np.mean(hits) / k)


def exact_top_k(
    embeddings: np.ndarray,
    queries: np.ndarray,
    k: int = 100,
    chunk: int = 100_000,
    progress: Optional[Callable[[str], None]] = None,
) -> np.ndarray:
  """Exact dot-product top-k row indices `[Q, k]`, chunked over the corpus."""
  best_scores = np.full((len(queries), 0), -np.inf, np.float32)
  best_ids = np.zeros((len(queries), 0), np.int64)
  for start in range(0, len(embeddings), chunk):
    scores = queries @ embeddings[start:start + chunk].T
    kk = min(k, scores.shape[1])
    top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    scores = np.concatenate(
        [best_scores, np.take_along_axis(scores, top, 1)], axis=1)
    ids = np.concatenate([best_ids, top + start], axis=1)
    kk = min(k, scores.shape[1])
    keep = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    best_scores = np.take_along_axis(scores, keep, 1)
    best_ids = np.take_along_axis(ids, keep, 1)
    if progress is not None:
      progress(f"exact top-{k}: {min(start + chunk, len(embeddings)):,}/"
               f"{len(embeddings):,} candidates")
  order = np.argsort(-best_scores, axis=1)
  return np.take_along_axis(best_ids, order, 1)
