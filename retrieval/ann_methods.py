"""Approximate-nearest-neighbour methods behind one interface, for the index
bench (`retrieval.index_bench`): brute force and ScaNN (this project's
indexes, `retrieval.index`) and their standard peers FAISS (IVF-Flat, HNSW)
and hnswlib (HNSW), all maximum inner product.

A method is a small picklable spec (it travels to the bench's worker
process): `build(corpus [N, D], k)` returns a search function
`search(queries [B, D], effort) -> (scores [B, k], ids [B, k])`, and
`efforts` lists the query-time settings the bench sweeps on that one build
(ScaNN: leaves searched x candidates re-scored; IVF: `nprobe`; HNSW: `ef`).
`row(effort)` names a point (`name`, `effort`, the method's parameters).

Threads: ScaNN's batched search and TensorFlow's matmul use every core by
themselves; FAISS (OpenMP) and hnswlib are given the same count
(`threads`, default `os.cpu_count()`), at build and at search.
"""

import dataclasses
import os
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

import tfrs_pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
import tensorflow as tf

from retrieval import index

Search = Callable[[Any, Any], Tuple[Any, Any]]


def _threads() -> int:
  return os.cpu_count() or 1


@dataclasses.dataclass
class BruteForce:
  """Exact matmul + top-k (`index.build_brute_force`): the reference."""
  method = "brute_force"
  title = "brute force"
  efforts: Sequence[Any] = (None,)

  def build(self, corpus: np.ndarray, k: int) -> Search:
    layer = index.build_brute_force(None, None, corpus, k)
    fn = index.search_fn(layer, corpus.shape[1], k)
    return lambda queries, effort: fn(queries)

  def row(self, effort) -> Dict[str, Any]:
    return {"name": "brute force", "effort": None}


@dataclasses.dataclass
class Scann:
  """ScaNN: one tree (`configs` share num_leaves) searched per config."""
  configs: Sequence[index.IndexConfig]
  method = "scann"

  @property
  def title(self) -> str:
    return f"ScaNN L{self.configs[0].num_leaves}"

  @property
  def efforts(self) -> List[index.IndexConfig]:
    return list(self.configs)

  def build(self, corpus: np.ndarray, k: int) -> Search:
    reorders = [c.num_reordering_candidates for c in self.configs
                if c.num_reordering_candidates is not None]
    build_config = dataclasses.replace(
        self.configs[0], k=k,
        num_leaves_to_search=max(c.num_leaves_to_search for c in self.configs),
        num_reordering_candidates=max(reorders) if reorders else None)
    layer = index.build_scann(None, None, corpus, build_config)
    searches = dict(_scann_searches(layer, corpus.shape[1], self.configs))
    return lambda queries, config: searches[config](queries)

  def row(self, config: index.IndexConfig) -> Dict[str, Any]:
    return {"name": config.name, "effort": config.num_leaves_to_search,
            **dataclasses.asdict(config)}


def _scann_searches(layer, dim: int, configs: Sequence[index.IndexConfig]):
  """Yields `(config, search)` over `layer`'s ScaNN index, one per config.

  Leaves searched and reordering candidates are query-time arguments of the
  ScaNN searcher, so one tree/codebook serves a whole sweep (building is the
  slow part at 1M). Same call as `ScaNN.call` with those two overrides, on
  one searcher shared by all configs: each `searcher_from_module` call inside
  a traced function would build its own copy of the index (dataset included).
  """
  from scann import scann_ops  # pylint: disable=g-import-not-at-top
  searcher = scann_ops.searcher_from_module(
      layer._serialized_searcher)  # pylint: disable=protected-access
  for config in configs:
    reorder = config.num_reordering_candidates or config.k

    @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32)])
    def search(queries, config=config, reorder=reorder):
      result = searcher.search_batched_parallel(
          queries, final_num_neighbors=config.k,
          pre_reorder_num_neighbors=reorder,
          leaves_to_search=config.num_leaves_to_search)
      return result.distances, result.indices

    yield config, search


@dataclasses.dataclass
class FaissIVF:
  """FAISS IVF-Flat: k-means lists, exact inner products in the probed ones.

  Same number of lists as ScaNN's leaves, so `nprobe` reads as ScaNN's
  leaves searched (without ScaNN's quantized scoring and re-scoring).
  """
  nlist: int
  efforts: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)
  threads: int = dataclasses.field(default_factory=_threads)
  method = "faiss_ivf"

  @property
  def title(self) -> str:
    return f"FAISS IVF{self.nlist}"

  def build(self, corpus: np.ndarray, k: int) -> Search:
    import faiss  # pylint: disable=g-import-not-at-top
    faiss.omp_set_num_threads(self.threads)
    corpus = np.ascontiguousarray(corpus, np.float32)
    quantizer = faiss.IndexFlatIP(corpus.shape[1])
    ivf = faiss.IndexIVFFlat(quantizer, corpus.shape[1], self.nlist,
                             faiss.METRIC_INNER_PRODUCT)
    ivf.train(corpus)
    ivf.add(corpus)

    def search(queries, nprobe, quantizer=quantizer):  # ivf does not own it
      ivf.nprobe = nprobe
      return ivf.search(np.asarray(queries, np.float32), k)
    return search

  def row(self, nprobe: int) -> Dict[str, Any]:
    return {"name": f"IVF{self.nlist}/nprobe{nprobe}", "effort": nprobe,
            "nlist": self.nlist, "threads": self.threads}


@dataclasses.dataclass
class FaissHNSW:
  """FAISS HNSW-Flat (inner product), `efSearch` swept."""
  m: int = 32
  ef_construction: int = 40
  efforts: Sequence[int] = (100, 200, 400, 800)
  threads: int = dataclasses.field(default_factory=_threads)
  method = "faiss_hnsw"

  @property
  def title(self) -> str:
    return f"FAISS HNSW{self.m} (efConstruction {self.ef_construction})"

  def build(self, corpus: np.ndarray, k: int) -> Search:
    import faiss  # pylint: disable=g-import-not-at-top
    faiss.omp_set_num_threads(self.threads)
    graph = faiss.IndexHNSWFlat(corpus.shape[1], self.m,
                                faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = self.ef_construction
    graph.add(np.ascontiguousarray(corpus, np.float32))

    def search(queries, ef):
      graph.hnsw.efSearch = ef
      return graph.search(np.asarray(queries, np.float32), k)
    return search

  def row(self, ef: int) -> Dict[str, Any]:
    return {"name": f"FAISS HNSW{self.m}/ef{ef}", "effort": ef, "m": self.m,
            "ef_construction": self.ef_construction, "threads": self.threads}


@dataclasses.dataclass
class Hnswlib:
  """hnswlib HNSW (`space="ip"`), `ef` swept (hnswlib uses max(ef, k))."""
  m: int = 32
  ef_construction: int = 40
  efforts: Sequence[int] = (100, 200, 400, 800)
  threads: int = dataclasses.field(default_factory=_threads)
  method = "hnswlib"

  @property
  def title(self) -> str:
    return f"hnswlib HNSW{self.m} (ef_construction {self.ef_construction})"

  def build(self, corpus: np.ndarray, k: int) -> Search:
    import hnswlib  # pylint: disable=g-import-not-at-top
    graph = hnswlib.Index(space="ip", dim=corpus.shape[1])
    graph.init_index(len(corpus), M=self.m,
                     ef_construction=self.ef_construction, random_seed=0)
    graph.add_items(np.asarray(corpus, np.float32), num_threads=self.threads)

    def search(queries, ef):
      graph.set_ef(ef)
      ids, distances = graph.knn_query(np.asarray(queries, np.float32), k,
                                       num_threads=self.threads)
      return 1.0 - distances, ids  # hnswlib's "ip" distance is 1 - <q, x>
    return search

  def row(self, ef: int) -> Dict[str, Any]:
    return {"name": f"hnswlib HNSW{self.m}/ef{ef}", "effort": ef,
            "m": self.m, "ef_construction": self.ef_construction,
            "threads": self.threads}


LABELS = {"brute_force": "brute force", "scann": "ScaNN",
          "faiss_ivf": "FAISS IVF-Flat", "faiss_hnsw": "FAISS HNSW",
          "hnswlib": "hnswlib HNSW"}
