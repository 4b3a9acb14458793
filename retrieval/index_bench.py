"""Benchmarks of the top-K indexes (`retrieval.index`): latency, recall
against exact search, and the recall/speed trade-off of ScaNN on a large
synthetic corpus (the bench's `index` section).

`compare_on_corpus` times ScaNN against brute force on one corpus (the
retrieval evaluation runs it on the movies); `synthetic_tradeoff` sweeps
ScaNN configurations over >= 1M synthetic vectors, one tree per fresh
process (`_run_isolated`), and `tradeoff_markdown` / `plot_tradeoff`
report it.
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
  ids = [search(tf.constant(queries[i:i + batch_size]))[1].numpy()
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


def default_sweep(num_vectors: int, k: int = 100) -> List[index.IndexConfig]:
  """ScaNN configs for `synthetic_tradeoff`: 3 tree sizes x 6 x 3.

  num_leaves in {1, 2, 4} * sqrt(N); leaves searched 0.1%..4% of them;
  2.5k, 5k or 20k candidates re-scored exactly (k=100: 250, 500 or 2000).
  At 1M x 256 250 capped recall near 0.90 whatever the leaves searched (the
  asymmetric-hashing scores are too coarse for the top-100 of 1M); at
  1M x 640 recall stopped changing above 0.5% searched, hence the low end.
  """
  base = max(8, int(round(np.sqrt(num_vectors))))
  configs = []
  for num_leaves in (base, 2 * base, 4 * base):
    for frac in (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04):
      for reorder in (k * 5 // 2, 5 * k, 20 * k):
        config = index.IndexConfig(
            num_leaves=num_leaves,
            num_leaves_to_search=max(1, int(round(frac * num_leaves))),
            num_reordering_candidates=reorder, k=k)
        if config not in configs:
          configs.append(config)
  return configs


def _group_searches(layer, dim: int, configs: Sequence[index.IndexConfig]):
  """Yields `(config, search)` for `configs` over `layer`'s ScaNN index.

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


def _latency_row(search, queries, num_batches, warmup) -> Dict[str, float]:
  row = {}
  for b, n, w in zip((1, 256), num_batches, warmup):
    lat = measure_latency(search, queries, b, n, w)
    row.update({f"b{b}_p50_ms": lat["p50_ms"], f"b{b}_p99_ms": lat["p99_ms"],
                f"b{b}_mean_ms": lat["mean_ms"], f"b{b}_qps": lat["qps"]})
  return row


def _measure_group(corpus_path: str, queries: np.ndarray, exact: np.ndarray,
                   configs: Optional[List[index.IndexConfig]], k: int,
                   num_batches: Sequence[int], log) -> List[Dict[str, Any]]:
  """Builds one index over the saved corpus and measures it per config.

  `configs` None: the brute-force layer. Otherwise configs sharing one tree
  (num_leaves, dimensions_per_block, training_iterations): built once with
  the largest leaves searched/reordering, searched with each config's.
  """
  embeddings = np.load(corpus_path, mmap_mode="r")
  dim = embeddings.shape[1]

  def measure(search, row, warmup):
    row["recall"] = index.recall_against_exact(exact, _search_all(search, queries))
    row.update(_latency_row(search, queries, num_batches, warmup))
    log(f"{row['name']}: recall {row['recall']:.4f}, "
        f"b1 p50 {row['b1_p50_ms']:.2f} ms, "
        f"b256 p50 {row['b256_p50_ms']:.1f} ms")
    return row

  t = time.perf_counter()
  if configs is None:
    layer = index.build_brute_force(None, None, embeddings, k)
    row = {"method": "brute_force", "name": "brute force",
           "build_s": time.perf_counter() - t}
    return [measure(index.search_fn(layer, dim, k), row, (2, 1))]
  reorders = [c.num_reordering_candidates for c in configs
              if c.num_reordering_candidates is not None]
  build_config = dataclasses.replace(
      configs[0],
      num_leaves_to_search=max(c.num_leaves_to_search for c in configs),
      num_reordering_candidates=max(reorders) if reorders else None)
  layer = index.build_scann(None, None, embeddings, build_config)
  build_s = time.perf_counter() - t
  log(f"built L{build_config.num_leaves} in {build_s:.1f}s")
  return [measure(search, {"method": "scann", "name": config.name,
                           "build_s": build_s, **dataclasses.asdict(config)},
                  (5, 2))
          for config, search in _group_searches(layer, dim, configs)]


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
    configs: Optional[Sequence[index.IndexConfig]] = None,
    seed: int = 0,
    k: int = 100,
    target_recall: float = 0.95,
    num_batches: Sequence[int] = (200, 8),
    brute_force_batches: Sequence[int] = (30, 4),
    progress: Optional[Callable[[str], None]] = print,
    work_dir: Optional[str] = None,
) -> List[Dict[str, Any]]:
  """ScaNN recall/latency trade-off on a synthetic corpus.

  Builds `make_synthetic_corpus(num_vectors, dim)`, computes the exact
  top-k of `num_queries` queries (chunked numpy matmul), then for every
  config measures recall@k and per-call latency (p50/p99 at batch 1 and 256);
  the brute-force layer is timed as the reference. Configs sharing
  (num_leaves, dimensions_per_block, training_iterations) share one
  `index.build_scann` index, searched with each config's leaves/reordering (see
  `_group_searches`); its `build_s` is that shared build. Brute force and
  every tree are measured in a process of their own (see `_run_isolated`),
  which reads the corpus from a temporary `.npy` file.

  At 1,000,000 x 640 with the default 54-config sweep this took 812 s on 2
  CPU cores and 23 GB (builds 121-252 s, one process per tree;
  exact top-k 12 s); at 1,000,000 x 64 with the earlier 24-config sweep,
  155 s.

  Args:
    num_vectors: Corpus size N.
    dim: Embedding dimension D.
    num_queries: Queries for recall (and latency, cycled).
    configs: ScaNN configs; defaults to `default_sweep(num_vectors, k)`.
    seed: Data seed.
    k: Neighbours retrieved (recall@k).
    target_recall: Recall the chosen config must reach.
    num_batches: Timed ScaNN calls at batch 1 and at batch 256.
    brute_force_batches: Timed brute-force calls at batch 1 and at 256.
    progress: Called with progress lines; None for silence.
    work_dir: Directory for the temporary corpus file (N x D x 4 bytes);
      default: the system's temporary directory.

  Returns:
    Rows (dicts), brute force first: method, name, config fields, build_s,
    recall, b{1,256}_{p50_ms,p99_ms,mean_ms,qps}, speedup_b{1,256} (brute
    force p50 / p50) and chosen (True for the lowest batch-1 p50 among
    configs with recall >= target_recall). Configs whose tree could not be
    measured (e.g. its process ran out of memory) get a row with `error`
    (why) and no measurements.
  """
  say = progress or (lambda _: None)
  start = time.perf_counter()

  def log(msg):
    say(f"[{time.perf_counter() - start:6.1f}s] {msg}")

  configs = [dataclasses.replace(c, k=k) for c in (
      configs or default_sweep(num_vectors, k))]
  groups = {}
  for config in configs:
    key = (config.num_leaves, config.dimensions_per_block,
           config.training_iterations)
    groups.setdefault(key, []).append(config)

  with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
    corpus_path = os.path.join(tmp, "corpus.npy")
    embeddings, queries = make_synthetic_corpus(
        num_vectors, dim, num_queries, seed=seed)
    np.save(corpus_path, embeddings)
    log(f"corpus {embeddings.shape}, {len(queries)} queries")
    exact = index.exact_top_k(embeddings, queries, k, progress=log)
    del embeddings

    brute, error = _run_isolated(
        (corpus_path, queries, exact, None, k, brute_force_batches), tmp, log)
    if error:
      raise RuntimeError(f"Brute-force reference failed: {error}")
    rows = list(brute)
    for group in groups.values():
      measured, error = _run_isolated(
          (corpus_path, queries, exact, group, k, num_batches), tmp, log)
      if error:
        log(f"L{group[0].num_leaves} skipped: {error}")
        measured = [{"method": "scann", "name": c.name, "error": error,
                     **dataclasses.asdict(c)} for c in group]
      rows.extend(measured)

  reference = rows[0]
  for row in rows:
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
      "| config | build s | recall@100 | b1 p50 ms | b1 p99 ms | b1 speed-up"
      " | b256 p50 ms | b256 p99 ms | b256 QPS | b256 speed-up |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  failed = []
  for r in rows:
    if "error" in r:
      failed.append(f"- {r['name']}: not measured ({r['error']})")
      continue
    name = f"**{r['name']}** (chosen)" if r.get("chosen") else r["name"]
    lines.append(
        f"| {name} | {r['build_s']:.1f} | {r['recall']:.4f} "
        f"| {r['b1_p50_ms']:.2f} | {r['b1_p99_ms']:.2f} "
        f"| {r['speedup_b1']:.1f}x | {r['b256_p50_ms']:.1f} "
        f"| {r['b256_p99_ms']:.1f} | {r['b256_qps']:,.0f} "
        f"| {r['speedup_b256']:.1f}x |")
  if failed:
    lines += [""] + failed
  return "\n".join(lines) + "\n"


def plot_tradeoff(rows: Sequence[Dict[str, Any]], path_png: str,
                  target_recall: float = 0.95) -> str:
  """Plots recall@100 vs speed-up over brute force (log), batch 1 and 256.

  One colour per num_leaves, one marker per reordering count, a line
  through each (num_leaves, reordering) pair's configs in order of leaves
  searched (points labelled s<leaves searched>), brute force at (1.0, 1x),
  the target recall dotted, the chosen config starred. Rows with an
  `error` are left out. Returns `path_png`.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  scann = [r for r in rows
           if r["method"] == "scann" and "error" not in r]
  leaves = sorted({r["num_leaves"] for r in scann})
  reorders = sorted({r["num_reordering_candidates"] or 0 for r in scann})
  colours = dict(zip(leaves, plt.cm.viridis(np.linspace(0, 0.85, len(leaves)))))
  markers = dict(zip(reorders, "o^Dv<>p"))
  fig, axes = plt.subplots(1, 2, figsize=(14, 6.5), sharex=True)
  for ax, b in zip(axes, (1, 256)):
    for num_leaves in leaves:
      for reorder in reorders:
        pts = sorted((r for r in scann if r["num_leaves"] == num_leaves and
                      (r["num_reordering_candidates"] or 0) == reorder),
                     key=lambda r: r["num_leaves_to_search"])
        if not pts:
          continue
        ax.plot([r["recall"] for r in pts], [r[f"speedup_b{b}"] for r in pts],
                color=colours[num_leaves], marker=markers[reorder], ms=5,
                lw=0.8, alpha=0.85, zorder=3,
                label=f"{num_leaves} leaves, {reorder} re-scored")
        for r in pts:
          ax.annotate(f"s{r['num_leaves_to_search']}",
                      (r["recall"], r[f"speedup_b{b}"]), fontsize=6,
                      xytext=(2, 2), textcoords="offset points",
                      color=colours[num_leaves])
    ax.axhline(1.0, color="grey", ls="--", lw=1)
    ax.axvline(target_recall, color="red", ls=":", lw=1)
    for r in rows:
      if r["method"] == "brute_force":
        ax.scatter([r["recall"]], [1.0], marker="s", color="black",
                   label=f"brute force (p50 {r[f'b{b}_p50_ms']:.1f} ms)",
                   zorder=3)
      if r.get("chosen"):
        ax.scatter([r["recall"]], [r[f"speedup_b{b}"]], marker="*", s=300,
                   facecolor="none", edgecolor="red", linewidth=1.5,
                   label=f"chosen {r['name']}", zorder=4)
    ax.set_yscale("log")
    ax.set_xlabel("recall@100 vs exact")
    ax.set_ylabel("speed-up over brute force (p50 latency)")
    ax.set_title(f"batch {b}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
  fig.suptitle("ScaNN recall / speed trade-off")
  fig.tight_layout()
  fig.savefig(path_png, dpi=110)
  plt.close(fig)
  return path_png
