"""Benchmarks of the top-K indexes (`retrieval.index`): latency, recall
against exact search, and the recall/speed trade-off of ScaNN beside its
peers FAISS (IVF-Flat, HNSW) and hnswlib (HNSW) on large synthetic corpora
(the bench's `index` section).

`compare_on_corpus` times ScaNN against brute force on one corpus (the
retrieval evaluation runs it on the movies); `synthetic_tradeoff` builds
each `retrieval.ann_methods` method once over >= 1M synthetic vectors, one
fresh process per method (`_run_isolated`), and sweeps its query-time
effort; `tradeoff_markdown`, `summary_markdown` and `plot_tradeoff` report
it.

Two corpora (`CORPORA`): `make_synthetic_corpus` ("clustered": 256
Gaussian clusters, queries from the same clusters) is easy: ScaNN reaches
recall@100 0.994 searching 0.2% of its leaves. `make_hard_corpus` ("hard")
has what makes ANN search hard in learned two-tower embeddings: a decaying
spectrum, many small overlapping clusters of Zipf sizes, power-law norms
(popularity) and queries from another distribution than the corpus (users
vs movies: mixtures of clusters, another spectrum, an offset). On 100k x 256
FAISS IVF-Flat with 316 lists reaches recall 0.94 with 2 lists probed on
the clustered corpus and 0.14 on the hard one (0.86 with 64).
"""

import dataclasses
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import tfrs_pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
import tensorflow as tf

from retrieval import ann_methods
from retrieval import index

def measure_latency(
    search: Callable[[tf.Tensor], Any],
    queries: index.Array,
    batch_size: int = 1,
    num_batches: int = 100,
    warmup: int = 5,
) -> Dict[str, float]:
  """Times `search` call by call on batches of `queries`.

  Args:
    search: Function of a `[B, D]` float32 tensor (e.g. from `index.search_fn`).
    queries: `[Q, D]` query embeddings; cycled if Q < batch_size * batches.
    batch_size: Queries per call.
    num_batches: Timed calls.
    warmup: Untimed calls first (tracing, caches).

  Returns:
    `{"p50_ms", "p99_ms", "mean_ms", "qps"}`, per call; qps counts queries.
  """
  queries = np.asarray(queries, np.float32)
  n = queries.shape[0]
  batches = [
      tf.constant(queries[np.arange(i * batch_size, (i + 1) * batch_size) % n])
      for i in range(min(num_batches, -(-n // batch_size)))
  ]
  for i in range(warmup):
    tf.nest.map_structure(np.asarray, search(batches[i % len(batches)]))
  times = np.empty(num_batches)
  for i in range(num_batches):
    start = time.perf_counter()
    tf.nest.map_structure(np.asarray, search(batches[i % len(batches)]))
    times[i] = time.perf_counter() - start
  return {
      "p50_ms": float(np.percentile(times, 50) * 1e3),
      "p99_ms": float(np.percentile(times, 99) * 1e3),
      "mean_ms": float(times.mean() * 1e3),
      "qps": float(batch_size * num_batches / times.sum()),
  }


def _search_all(search, queries: np.ndarray, batch_size: int = 256):
  """Returns `[Q, k]` identifiers for all queries, in batches."""
  ids = [np.asarray(search(tf.constant(queries[i:i + batch_size]))[1])
         for i in range(0, len(queries), batch_size)]
  return np.concatenate(ids, axis=0)


def _latencies(search, queries, batch_sizes, num_batches, warmup):
  return {f"batch_{b}": measure_latency(search, queries, b, n, warmup)
          for b, n in zip(batch_sizes, num_batches)}


def compare_on_corpus(
    embeddings: index.Array,
    ids: Optional[index.Array],
    queries: index.Array,
    config: index.IndexConfig = index.IndexConfig(),
    k: int = 100,
    num_batches: Sequence[int] = (200, 20),
    warmup: int = 5,
) -> Dict[str, Any]:
  """ScaNN vs brute force on one corpus: recall@k and latency at batch 1/256.

  Args:
    embeddings: `[N, D]` candidate embeddings.
    ids: `[N]` candidate identifiers, or None for row indices.
    queries: `[Q, D]` query embeddings.
    config: ScaNN parameters (its `k` is replaced by `k`).
    k: Neighbours retrieved.
    num_batches: Timed calls at batch 1 and at batch 256.
    warmup: Untimed calls before each timing.

  Returns:
    `{"num_candidates", "dim", "num_queries", "k", "config", "recall_at_k",
    "scann": {"build_s", "batch_1": latency, "batch_256": latency},
    "brute_force": {...same...}, "speedup_batch_1", "speedup_batch_256"}`
    with latency dicts as returned by `measure_latency` and speed-ups the
    ratios of brute-force to ScaNN p50 latencies.
  """
  embeddings = np.asarray(embeddings, np.float32)
  queries = np.asarray(queries, np.float32)
  dim = embeddings.shape[1]
  config = dataclasses.replace(
      config, k=k, num_reordering_candidates=(
          None if config.num_reordering_candidates is None
          else max(k, config.num_reordering_candidates)))
  result = {"num_candidates": len(embeddings), "dim": dim,
            "num_queries": len(queries), "k": k,
            "config": dataclasses.asdict(config)}
  found = {}
  for name, build in [
      ("brute_force", lambda: index.build_brute_force(None, ids, embeddings, k)),
      ("scann", lambda: index.build_scann(None, ids, embeddings, config))]:
    start = time.perf_counter()
    search = index.search_fn(build(), dim, k)
    result[name] = {"build_s": time.perf_counter() - start}
    found[name] = _search_all(search, queries)
    result[name].update(
        _latencies(search, queries, (1, 256), num_batches, warmup))
  result["recall_at_k"] = index.recall_against_exact(
      found["brute_force"], found["scann"])
  for b in (1, 256):
    result[f"speedup_batch_{b}"] = (
        result["brute_force"][f"batch_{b}"]["p50_ms"]
        / result["scann"][f"batch_{b}"]["p50_ms"])
  return result


def make_synthetic_corpus(
    num_vectors: int,
    dim: int = 64,
    num_queries: int = 1000,
    num_clusters: int = 256,
    spread: Tuple[float, float] = (0.5, 1.0),
    popularity: float = 0.5,
    seed: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
  """Gaussian-mixture embeddings that look like a trained two-tower model.

  Learned embeddings are clustered (genres, audiences) with uneven cluster
  sizes and popularity-dependent norms; iid noise has no structure at all, so
  every ANN method is hopeless on it and the trade-off says nothing. Here:
  `num_clusters` centres ~ N(0, I/D) (norm ~1), Dirichlet(2) cluster weights,
  per-cluster isotropic spread U(`spread`) (noise norm relative to the
  centre), and log-normal(0, `popularity`) per-item norm scaling (norm CV
  ~0.5; rank-64 SVD factors of MovieLens-1M have ~0.85). Queries are drawn
  from the same mixture without the norm scaling (users sit near the items
  they like).

  Returns:
    `(embeddings [num_vectors, dim], queries [num_queries, dim])`, float32.
  """
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((num_clusters, dim), np.float32) / np.sqrt(dim)
  weights = rng.dirichlet(np.full(num_clusters, 2.0))
  spreads = rng.uniform(*spread, num_clusters).astype(np.float32)

  def sample(n, chunk=200_000):
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, chunk):
      c = rng.choice(num_clusters, min(chunk, n - i), p=weights)
      noise = rng.standard_normal((len(c), dim), np.float32)
      scale = (spreads[c] / np.sqrt(dim))[:, None]
      out[i:i + len(c)] = centres[c] + noise * scale
    return out

  embeddings = sample(num_vectors)
  embeddings *= rng.lognormal(
      0.0, popularity, (num_vectors, 1)).astype(np.float32)
  return embeddings, sample(num_queries)


def make_hard_corpus(
    num_vectors: int,
    dim: int = 64,
    num_queries: int = 1000,
    cluster_size: int = 40,
    decay: float = 1.0,
    overlap: float = 0.8,
    norm_tail: float = 3.0,
    query_mix: int = 3,
    query_noise: float = 0.6,
    query_offset: float = 0.5,
    seed: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
  """Embeddings with the properties that make ANN search hard.

  `make_synthetic_corpus` has 256 well-separated clusters and queries from
  them, so a few leaves hold every query's top-100. Learned two-tower
  embeddings are less kind; this corpus has, in one random rotation:
  - a decaying spectrum: variance of direction i ~ i^-`decay` (learned
    embeddings use a few directions much more than the rest);
  - many small clusters (`num_vectors / cluster_size`, Zipf(1) sizes: a few
    large genres, a long tail) whose spread (`overlap` x the centres' own)
    makes them overlap;
  - power-law norms (popularity): each vector scaled by 1 + Pareto(`norm_tail`),
    so a few items have norms several times the median's;
  - queries from another distribution (users vs movies): a Dirichlet mix of
    `query_mix` popularity-weighted cluster centres (between clusters, not
    in one), noise with the reversed spectrum (strong where the items are
    weak), and one shared offset of norm `query_offset` (the gap between
    the two towers' outputs).

  Returns:
    `(embeddings [num_vectors, dim], queries [num_queries, dim])`, float32;
    the same for the same arguments (seeded).
  """
  rng = np.random.default_rng(seed)
  rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
  scales = np.arange(1, dim + 1, dtype=np.float64) ** (-decay / 2)
  scales /= np.sqrt(np.sum(scales ** 2))  # centres of norm ~1
  basis = (scales[:, None] * rotation.T).astype(np.float32)  # [D, D]
  query_basis = (scales[::-1, None] * rotation.T).astype(np.float32)
  num_clusters = max(2, num_vectors // cluster_size)
  centres = rng.standard_normal((num_clusters, dim), np.float32) @ basis
  weights = rng.permutation(1.0 / np.arange(1, num_clusters + 1))
  weights /= weights.sum()
  out = np.empty((num_vectors, dim), np.float32)
  for i in range(0, num_vectors, 200_000):
    n = min(200_000, num_vectors - i)
    c = rng.choice(num_clusters, n, p=weights)
    out[i:i + n] = centres[c] + overlap * (
        rng.standard_normal((n, dim), np.float32) @ basis)
  out *= (1.0 + rng.pareto(norm_tail, (num_vectors, 1))).astype(np.float32)
  picks = rng.choice(num_clusters, (num_queries, query_mix), p=weights)
  mix = rng.dirichlet(np.ones(query_mix), num_queries).astype(np.float32)
  queries = np.einsum("qm,qmd->qd", mix, centres[picks])
  queries += query_noise * (
      rng.standard_normal((num_queries, dim), np.float32) @ query_basis)
  offset = rng.standard_normal(dim).astype(np.float32)
  queries += query_offset * offset / np.linalg.norm(offset)
  return out, queries.astype(np.float32)


CORPORA = {"clustered": make_synthetic_corpus, "hard": make_hard_corpus}
"""The bench's synthetic corpora: `name -> f(num_vectors, dim, num_queries,
seed=...) -> (embeddings, queries)`."""


def default_sweep(num_vectors: int, k: int = 100,
                  tree_scales: Sequence[int] = (1,)) -> List[index.IndexConfig]:
  """ScaNN configs for `synthetic_tradeoff`: trees x 6 x 2.

  num_leaves in `tree_scales` * sqrt(N); leaves searched 0.2%..10% of them
  (the hard corpus needs the high end); 2.5k or 10k candidates re-scored
  exactly (k=100: 250 or 1000). One tree by default, so the whole index
  section with its peers and both corpora fits in ~8 minutes on 2 cores
  (one 1M x 256 tree builds in about a minute there). At 1M x 640, trees of
  2 and 4 sqrt(N) leaves were no better than sqrt(N) (bench of 2026-11-23).
  """
  base = max(8, int(round(np.sqrt(num_vectors))))
  configs = []
  for scale in tree_scales:
    num_leaves = scale * base
    for frac in (0.002, 0.005, 0.01, 0.02, 0.05, 0.1):
      for reorder in (k * 5 // 2, 10 * k):
        config = index.IndexConfig(
            num_leaves=num_leaves,
            num_leaves_to_search=max(1, int(round(frac * num_leaves))),
            num_reordering_candidates=reorder, k=k)
        if config not in configs:
          configs.append(config)
  return configs


def scann_methods(configs: Sequence[index.IndexConfig]) -> List[Any]:
  """One `ann_methods.Scann` per tree (configs sharing num_leaves,
  dimensions_per_block and training_iterations), in order."""
  groups = {}
  for config in configs:
    key = (config.num_leaves, config.dimensions_per_block,
           config.training_iterations)
    groups.setdefault(key, []).append(config)
  return [ann_methods.Scann(group) for group in groups.values()]


def default_methods(num_vectors: int, k: int = 100) -> List[Any]:
  """ScaNN (`default_sweep`), FAISS IVF-Flat with as many lists as ScaNN has
  leaves, FAISS HNSW and hnswlib HNSW (M=32, efConstruction=40: a 1M x 256
  graph builds in ~2 min on 2 cores; M=16 lost a quarter of the recall on
  100k vectors, efConstruction 100 doubled the build time)."""
  base = max(8, int(round(np.sqrt(num_vectors))))
  return (scann_methods(default_sweep(num_vectors, k))
          + [ann_methods.FaissIVF(nlist=base, efforts=(
              1, 2, 4, 8, 16, 32, 64, 128)),
             ann_methods.FaissHNSW(), ann_methods.Hnswlib()])


def _latency_row(search, queries, num_batches, warmup) -> Dict[str, float]:
  row = {}
  for b, n, w in zip((1, 256), num_batches, warmup):
    lat = measure_latency(search, queries, b, n, w)
    row.update({f"b{b}_p50_ms": lat["p50_ms"], f"b{b}_p99_ms": lat["p99_ms"],
                f"b{b}_mean_ms": lat["mean_ms"], f"b{b}_qps": lat["qps"]})
  return row


def _measure_group(corpus_path: str, queries: np.ndarray, exact: np.ndarray,
                   method, k: int, num_batches: Sequence[int],
                   log) -> List[Dict[str, Any]]:
  """Builds `method` over the saved corpus once and measures every effort.

  Each row: method, the method's `row(effort)` fields, build_s, recall and
  `_latency_row`'s latencies (every method gets the same `tf.constant`
  query batches).
  """
  embeddings = np.load(corpus_path, mmap_mode="r")
  t = time.perf_counter()
  search = method.build(embeddings, k)
  build_s = time.perf_counter() - t
  log(f"built {method.title} in {build_s:.1f}s")
  warmup = (2, 1) if method.method == "brute_force" else (5, 2)
  rows = []
  for effort in method.efforts:
    fn = lambda q, effort=effort: search(q, effort)
    row = {"method": method.method, **method.row(effort), "build_s": build_s}
    row["recall"] = index.recall_against_exact(exact, _search_all(fn, queries))
    row.update(_latency_row(fn, queries, num_batches, warmup))
    log(f"{row['name']}: recall {row['recall']:.4f}, "
        f"b1 p50 {row['b1_p50_ms']:.2f} ms, "
        f"b256 p50 {row['b256_p50_ms']:.1f} ms")
    rows.append(row)
  return rows


def _group_worker(args_path: str, result_path: str) -> None:
  """Entry point of a `_run_isolated` process.

  Reads `_measure_group`'s arguments from `args_path` (pickle), prints its
  progress lines to stdout and pickles ("rows", rows) or ("error", text) to
  `result_path`.
  """
  with open(args_path, "rb") as f:
    args = pickle.load(f)
  try:
    result = ("rows", _measure_group(*args, log=lambda m: print(m, flush=True)))
  except Exception as e:  # pylint: disable=broad-except
    message = getattr(e, "message", str(e))  # tf.errors.OpError: no op node
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^]]*\]", "",
                     message)
    result = ("error", f"{type(e).__name__}: {message}")
  with open(result_path, "wb") as f:
    pickle.dump(result, f)


def _run_isolated(args, work_dir: str,
                  log) -> Tuple[Optional[List[Dict[str, Any]]], str]:
  """Runs `_measure_group(*args)` in a fresh Python: (rows, "") or (None, why).

  ScaNN searchers live in TensorFlow's resource manager under unique names
  and are never freed in-process (neither is the build-time copy), so at
  1M x 640 the second and third trees ran out of memory. A process per tree
  hands all of it back to the OS when it exits. A plain subprocess (not
  `multiprocessing`), so that callers need no `if __name__ == "__main__"`.
  """
  args_path = os.path.join(work_dir, "args.pkl")
  result_path = os.path.join(work_dir, "result.pkl")
  if os.path.exists(result_path):  # the previous tree's
    os.remove(result_path)
  with open(args_path, "wb") as f:
    pickle.dump(args, f)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (root, os.environ.get("PYTHONPATH")) if p))
  code = ("import sys; from retrieval import index_bench; "
          "index_bench._group_worker(sys.argv[1], sys.argv[2])")
  with subprocess.Popen([sys.executable, "-c", code, args_path, result_path],
                        stdout=subprocess.PIPE, text=True, env=env) as proc:
    for line in proc.stdout:
      log(line.rstrip("\n"))
  if os.path.exists(result_path):
    with open(result_path, "rb") as f:
      kind, payload = pickle.load(f)
    return (payload, "") if kind == "rows" else (None, payload)
  why = f"worker process exited with code {proc.returncode}"
  if proc.returncode == -9:
    why += " (killed: likely out of memory)"
  return None, why


def synthetic_tradeoff(
    num_vectors: int = 1_000_000,
    dim: int = 64,
    num_queries: int = 500,
    methods: Optional[Sequence[Any]] = None,
    corpus: str = "clustered",
    seed: int = 0,
    k: int = 100,
    target_recall: float = 0.95,
    num_batches: Sequence[int] = (200, 8),
    brute_force_batches: Sequence[int] = (30, 4),
    progress: Optional[Callable[[str], None]] = print,
    work_dir: Optional[str] = None,
) -> List[Dict[str, Any]]:
  """Recall/latency trade-off of ANN methods on one synthetic corpus.

  Builds `CORPORA[corpus](num_vectors, dim, num_queries)`, computes the
  exact top-k of the queries (chunked numpy matmul), then for every method
  (brute force first, as the reference) builds its index once and measures
  each of its efforts: recall@k and per-call latency (p50/p99, QPS) at batch
  1 and 256. Every method is measured in a process of its own (see
  `_run_isolated`), which reads the corpus from a temporary `.npy` file.

  At 1,000,000 x 256 with the default methods this took 238 s (clustered)
  and 370 s (hard) on 2 CPU cores at load ~1.8: builds ScaNN 32 s, IVF
  13-25 s, FAISS HNSW 51-80 s, hnswlib 60-119 s. At 1,000,000 x 640 the
  earlier 54-config, 3-tree ScaNN sweep took 812 s and 23 GB.

  Args:
    num_vectors: Corpus size N.
    dim: Embedding dimension D.
    num_queries: Queries for recall (and latency, cycled).
    methods: `ann_methods` specs; default `default_methods(num_vectors, k)`
      (`scann_methods(configs)` for a ScaNN-only sweep).
    corpus: A key of `CORPORA`.
    seed: Data seed.
    k: Neighbours retrieved (recall@k).
    target_recall: Recall the chosen row must reach.
    num_batches: Timed calls at batch 1 and at batch 256.
    brute_force_batches: Timed brute-force calls at batch 1 and at 256.
    progress: Called with progress lines; None for silence.
    work_dir: Directory for the temporary corpus file (N x D x 4 bytes);
      default: the system's temporary directory.

  Returns:
    Rows (dicts), brute force first: method, name, effort, the method's
    parameters, build_s, recall, b{1,256}_{p50_ms,p99_ms,mean_ms,qps},
    speedup_b{1,256} (brute force p50 / p50), corpus, and chosen (True for
    the lowest batch-1 p50 among rows with recall >= target_recall). A
    method that could not be measured (e.g. its process ran out of memory)
    gets a row per effort with `error` (why) and no measurements.
  """
  say = progress or (lambda _: None)
  start = time.perf_counter()

  def log(msg):
    say(f"[{time.perf_counter() - start:6.1f}s] {msg}")

  methods = [ann_methods.BruteForce()] + list(
      methods if methods is not None else default_methods(num_vectors, k))
  with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
    corpus_path = os.path.join(tmp, "corpus.npy")
    embeddings, queries = CORPORA[corpus](
        num_vectors, dim, num_queries, seed=seed)
    np.save(corpus_path, embeddings)
    log(f"{corpus} corpus {embeddings.shape}, {len(queries)} queries")
    exact = index.exact_top_k(embeddings, queries, k, progress=log)
    del embeddings

    rows = []
    for method in methods:
      batches = (brute_force_batches if method.method == "brute_force"
                 else num_batches)
      measured, error = _run_isolated(
          (corpus_path, queries, exact, method, k, batches), tmp, log)
      if error and not rows:
        raise RuntimeError(f"Brute-force reference failed: {error}")
      if error:
        log(f"{method.title} skipped: {error}")
        measured = [{"method": method.method, **method.row(e), "error": error}
                    for e in method.efforts]
      rows.extend(measured)

  reference = rows[0]
  for row in rows:
    row["corpus"] = corpus
    row["chosen"] = False
    if "error" not in row:
      for b in (1, 256):
        row[f"speedup_b{b}"] = (
            reference[f"b{b}_p50_ms"] / row[f"b{b}_p50_ms"])
  ok = [r for r in rows[1:]
        if "error" not in r and r["recall"] >= target_recall]
  if ok:
    best = min(ok, key=lambda r: r["b1_p50_ms"])
    best["chosen"] = True
    log(f"chosen {best['name']}: recall {best['recall']:.4f}, speed-up "
        f"{best['speedup_b1']:.1f}x (batch 1), "
        f"{best['speedup_b256']:.1f}x (batch 256)")
  else:
    log(f"no config reached recall {target_recall}")
  log("done")
  return rows


def tradeoff_markdown(rows: Sequence[Dict[str, Any]]) -> str:
  """Markdown table of `synthetic_tradeoff` rows (chosen row in bold).

  Rows with an `error` are listed under the table instead.
  """
  lines = [
      "| method | config | build s | recall@100 | b1 p50 ms | b1 p99 ms "
      "| b1 QPS | b1 speed-up | b256 p50 ms | b256 p99 ms | b256 QPS "
      "| b256 speed-up |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  failed = []
  for r in rows:
    if "error" in r:
      failed.append(f"- {r['name']}: not measured ({r['error']})")
      continue
    name = f"**{r['name']}** (chosen)" if r.get("chosen") else r["name"]
    lines.append(
        f"| {ann_methods.LABELS[r['method']]} | {name} | {r['build_s']:.1f} "
        f"| {r['recall']:.4f} | {r['b1_p50_ms']:.2f} | {r['b1_p99_ms']:.2f} "
        f"| {r['b1_qps']:,.0f} | {r['speedup_b1']:.1f}x "
        f"| {r['b256_p50_ms']:.1f} | {r['b256_p99_ms']:.1f} "
        f"| {r['b256_qps']:,.0f} | {r['speedup_b256']:.1f}x |")
  if failed:
    lines += [""] + failed
  return "\n".join(lines) + "\n"


def summary_markdown(results: Dict[str, Sequence[Dict[str, Any]]],
                     recalls: Sequence[float] = (0.8, 0.95)) -> str:
  """Per method and corpus: build s, recall at its lowest and highest
  effort, and for each of `recalls` the best QPS (batch 1 / 256) among its
  rows reaching it ("-" when none does)."""
  names = list(results)
  head = ["build s", "recall, least / most effort"] + [
      f"b1 / b256 QPS, recall >= {r:g}" for r in recalls]
  lines = ["| method | " + " | ".join(f"{c}: {h}" for c in names for h in head)
           + " |", "|---|" + "---:|" * (len(head) * len(names))]
  methods = list(dict.fromkeys(r["method"] for rs in results.values()
                               for r in rs))
  for method in methods:
    cells = []
    for c in names:
      rs = [r for r in results[c] if r["method"] == method and "error" not in r]
      if not rs:
        cells += ["-"] * len(head)
        continue
      by_effort = sorted(rs, key=lambda r: (r["effort"] or 0,
                                            r.get("num_reordering_candidates")
                                            or 0))
      builds = sorted({round(r["build_s"], 1) for r in rs})
      cells += [" + ".join(f"{b:.1f}" for b in builds),
                f"{by_effort[0]['recall']:.3f} / {by_effort[-1]['recall']:.3f}"]
      for recall in recalls:
        good = [r for r in rs if r["recall"] >= recall]
        cells.append(f"{max(r['b1_qps'] for r in good):,.0f} / "
                     f"{max(r['b256_qps'] for r in good):,.0f}"
                     if good else "-")
    lines.append(f"| {ann_methods.LABELS[method]} | " + " | ".join(cells)
                 + " |")
  return "\n".join(lines) + "\n"


def _frontier(points: List[Tuple[float, float]]) -> List[Tuple[float, float]]:
  """The (recall, qps) points no other point beats on both, by recall."""
  best = []
  for recall, qps in sorted(points, key=lambda p: (-p[0], -p[1])):
    if not best or qps > best[-1][1]:
      best.append((recall, qps))
  return best[::-1]


def plot_tradeoff(results: Dict[str, Sequence[Dict[str, Any]]],
                  path_png: str, target_recall: float = 0.95) -> str:
  """Plots recall@100 vs queries/s (log), batch 1 and 256 as two panels.

  `results`: corpus name -> `synthetic_tradeoff` rows. One colour per
  method, one line style per corpus; each curve is the method's Pareto
  frontier (its efforts and, for ScaNN, re-scoring counts), every measured
  point shown small; brute force a square at recall 1, the target recall
  dotted. Rows with an `error` are left out. Returns `path_png`.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  methods = list(ann_methods.LABELS)
  colours = dict(zip(methods, plt.cm.tab10(np.arange(len(methods)))))
  styles = dict(zip(results, ["-", "--", ":", "-."]))
  fig, axes = plt.subplots(1, 2, figsize=(14, 6.5), sharex=True)
  for ax, b in zip(axes, (1, 256)):
    for corpus, rows in results.items():
      for method in methods:
        pts = [(r["recall"], r[f"b{b}_qps"]) for r in rows
               if r["method"] == method and "error" not in r]
        if not pts:
          continue
        label = f"{ann_methods.LABELS[method]}, {corpus}"
        if method == "brute_force":
          ax.scatter(*zip(*pts), marker="s" if styles[corpus] == "-" else "D",
                     color="black", label=label, zorder=3)
          continue
        ax.scatter(*zip(*pts), s=8, color=colours[method], alpha=0.5)
        ax.plot(*zip(*_frontier(pts)), ls=styles[corpus], marker="o", ms=4,
                color=colours[method], label=label)
    ax.axvline(target_recall, color="red", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("recall@100 vs exact")
    ax.set_ylabel("queries / s")
    ax.set_title(f"batch {b}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
  fig.suptitle("ANN recall / speed trade-off ("
               + ", ".join(f"{styles[c]} {c}" for c in results) + " corpus)")
  fig.tight_layout()
  fig.savefig(path_png, dpi=110)
  plt.close(fig)
  return path_png
