"""End-to-end evaluation of the two stages and a load test of the service.

* `evaluate_two_stage`: for users with at least one test movie rated >= 4,
  NDCG@k and recall@k of (a) the retrieval order alone and (b) retrieval
  then ranking. Both drop the user's train movies from the retrieved
  candidates first; relevant = the user's test movies rated >= 4; binary
  gains, recall = hits / |relevant| (as `metrics.ranking_metrics`). The
  candidates are at most the K the retrieval model was exported with.
* `load_test`: concurrent `GET /recommend` against a running server.
* `run_load_test_subprocess`: starts `tfrs-pipeline serve` on a free
  loopback port, waits for `/health`, runs `load_test` in a second process
  and returns its numbers.

The load generator imports neither TensorFlow nor the models.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

RELEVANT_RATING = 4.0


def _dcg(hits: Sequence[bool]) -> float:
  return sum(1.0 / math.log2(r + 2) for r, h in enumerate(hits) if h)


def _ndcg_recall(ranked: Sequence[str], relevant: set, k: int):
  hits = [m in relevant for m in ranked[:k]]
  ideal = _dcg([True] * min(k, len(relevant)))
  return _dcg(hits) / ideal, sum(hits) / len(relevant)


def evaluate_two_stage(retrieval_dir: str, ranking_dir: str, data,
                       num_candidates: int = 200, k: int = 10,
                       max_users: Optional[int] = None,
                       batch_users: int = 256, log=print) -> Dict:
  """Two-stage offline metrics on `data` (a `pipeline.Data`).

  Returns flat keys: `retrieval_ndcg_at_{k}`, `retrieval_recall_at_{k}`,
  `two_stage_ndcg_at_{k}`, `two_stage_recall_at_{k}`,
  `candidate_recall` (relevant movies among the candidates: the ceiling
  of both), `num_users`, `num_candidates` (used), `exported_k`,
  `seconds`. `max_users` evaluates the first N eligible users by id.
  """
  from tfrs_pipeline import recommend  # pylint: disable=g-import-not-at-top
  start = time.time()
  catalog = recommend.Catalog.from_data(data, history="train")
  rec = recommend.Recommender(retrieval_dir, ranking_dir, catalog,
                              num_candidates=num_candidates)
  test = recommend._to_numpy(data.test, ("user_id", "movie_id",  # pylint: disable=protected-access
                                         "user_rating"))
  relevant: Dict[str, set] = {}
  for u, m, r in zip(test["user_id"], test["movie_id"], test["user_rating"]):
    if r >= RELEVANT_RATING:
      relevant.setdefault(u, set()).add(m)
  users = sorted(relevant, key=lambda u: (len(u), u))
  if max_users:
    users = users[:max_users]
  sums = np.zeros(5)
  for s in range(0, len(users), batch_users):
    chunk = users[s:s + batch_users]
    ids, scores = rec.retrieve(chunk)
    pair_users, pair_movies, spans = [], [], []
    for i, u in enumerate(chunk):
      cand, _ = rec.candidates(ids[i], scores[i], catalog.history(u))
      spans.append((len(pair_movies), cand))
      pair_users += [u] * len(cand)
      pair_movies += cand
    ranked = rec.rank(pair_users, pair_movies)
    score = ranked["score"] if "score" in ranked else ranked["rating"]
    for u, (offset, cand) in zip(chunk, spans):
      rel = relevant[u]
      s_ = score[offset:offset + len(cand)]
      order = sorted(range(len(cand)), key=lambda j: (-s_[j], j))
      reranked = [cand[j] for j in order]
      sums += (*_ndcg_recall(cand, rel, k), *_ndcg_recall(reranked, rel, k),
               len(rel & set(cand)) / len(rel))
    log(f"[e2e] {min(s + batch_users, len(users))}/{len(users)} users")
  n = max(len(users), 1)
  m = sums / n
  return {
      f"retrieval_ndcg_at_{k}": float(m[0]),
      f"retrieval_recall_at_{k}": float(m[1]),
      f"two_stage_ndcg_at_{k}": float(m[2]),
      f"two_stage_recall_at_{k}": float(m[3]),
      "candidate_recall": float(m[4]),
      "num_users": len(users),
      "num_candidates": min(num_candidates, rec.exported_k),
      "exported_k": rec.exported_k,
      "seconds": round(time.time() - start, 2),
  }


# --------------------------------------------------------------------------
# Load test.


async def _load(base_url: str, user_ids: Sequence[str], concurrency: int,
                total_requests: int, timeout_s: float, k: int) -> Dict:
  import httpx  # pylint: disable=g-import-not-at-top
  latencies: List[float] = []
  errors = 0
  next_i = 0
  deadline = time.perf_counter() + timeout_s
  limits = httpx.Limits(max_connections=concurrency)
  async with httpx.AsyncClient(base_url=base_url, limits=limits,
                               timeout=max(1.0, timeout_s)) as client:

    async def worker():
      nonlocal next_i, errors
      while next_i < total_requests and time.perf_counter() < deadline:
        i = next_i
        next_i += 1
        t = time.perf_counter()
        try:
          r = await asyncio.wait_for(client.get(
              "/recommend",
              params={"user_id": user_ids[i % len(user_ids)], "k": k}),
              max(0.1, deadline - t))
          ok = r.status_code == 200
        except Exception:  # pylint: disable=broad-except
          ok = False
        if ok:
          latencies.append((time.perf_counter() - t) * 1000)
        else:
          errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
  lat = np.array(latencies) if latencies else np.array([np.nan])
  return {"p50_ms": float(np.percentile(lat, 50)),
          "p99_ms": float(np.percentile(lat, 99)),
          "rps": len(latencies) / wall if wall else 0.0,
          "errors": errors, "requests": len(latencies) + errors,
          "concurrency": concurrency, "seconds": round(wall, 2)}


def load_test(base_url: str, user_ids: Sequence[str], concurrency: int = 8,
              total_requests: int = 500, timeout_s: float = 60,
              k: int = 10) -> Dict:
  """`total_requests` GET /recommend (cycling through `user_ids`) from
  `concurrency` workers, stopping at `timeout_s`. Returns p50_ms, p99_ms
  (successful requests), rps, errors (non-200, timeouts, refused)."""
  if not user_ids:
    raise ValueError("load_test needs at least one user id")
  return asyncio.run(_load(base_url.rstrip("/"), list(map(str, user_ids)),
                           concurrency, total_requests, timeout_s, k))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def wait_ready(base_url: str, timeout_s: float = 300, proc=None) -> dict:
  """Polls /health until 200; raises if `proc` exits or time runs out."""
  import httpx  # pylint: disable=g-import-not-at-top
  deadline = time.time() + timeout_s
  last = None
  while time.time() < deadline:
    if proc is not None and proc.poll() is not None:
      raise RuntimeError(f"server exited with {proc.returncode}")
    try:
      r = httpx.get(f"{base_url}/health", timeout=5)
      last = r.json()
      if r.status_code == 200:
        return last
      if last.get("status") == "failed":
        raise RuntimeError(f"server failed to load: {last.get('detail')}")
    except httpx.HTTPError:
      pass
    time.sleep(0.5)
  raise TimeoutError(f"server not ready after {timeout_s} s ({last})")


def start_server(runs_dir: str, port: int, data_flags: Sequence[str] = (),
                 log_path: Optional[str] = None) -> subprocess.Popen:
  """`tfrs-pipeline serve` on 127.0.0.1:port (stdout+stderr to log_path)."""
  cmd = [sys.executable, "-c", "from tfrs_pipeline import cli; cli.run()",
         "serve", f"--runs={runs_dir}", f"--port={port}",
         "--host=127.0.0.1", "--log_level=warning", *data_flags]
  out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # pylint: disable=consider-using-with
  return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def stop_server(proc: subprocess.Popen) -> None:
  if proc.poll() is None:
    proc.terminate()
    try:
      proc.wait(20)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


def run_load_test_subprocess(runs_dir: str, raw_data: Optional[str] = None,
                             data_dir: Optional[str] = None,
                             split: str = "random",
                             on_bad_line: str = "error",
                             user_ids: Optional[Sequence[str]] = None,
                             concurrency: int = 8, total_requests: int = 500,
                             timeout_s: float = 60,
                             startup_timeout_s: float = 600,
                             log=print) -> Dict:
  """Starts the server, waits for /health, runs `load_test` in another
  process, stops the server. `user_ids` default: ids 1..200.

  Returns load_test's dict plus `startup_s` and `server` (health info).
  """
  flags = [f"--split={split}", f"--on_bad_line={on_bad_line}"]
  flags += [f"--raw_data={raw_data}"] if raw_data else []
  flags += [f"--data_dir={data_dir}"] if data_dir else []
  port = free_port()
  base = f"http://127.0.0.1:{port}"
  log_path = os.path.join(tempfile.mkdtemp(prefix="tfrs_serve_"), "serve.log")
  t0 = time.time()
  proc = start_server(runs_dir, port, flags, log_path)
  try:
    health = wait_ready(base, startup_timeout_s, proc)
    startup = time.time() - t0
    log(f"[load] server ready in {startup:.1f} s; {total_requests} requests,"
        f" concurrency {concurrency}")
    args = {"base_url": base,
            "user_ids": list(user_ids or [str(i) for i in range(1, 201)]),
            "concurrency": concurrency, "total_requests": total_requests,
            "timeout_s": timeout_s}
    gen = subprocess.run(
        [sys.executable, "-m", "tfrs_pipeline.e2e", json.dumps(args)],
        capture_output=True, text=True, timeout=timeout_s + 60, check=False)
    if gen.returncode != 0:
      raise RuntimeError(f"load generator failed: {gen.stderr[-2000:]}")
    result = json.loads(gen.stdout.strip().splitlines()[-1])
  except Exception as e:
    with open(log_path, errors="replace") as f:
      tail = f.read()[-2000:]
    raise RuntimeError(f"{e}\nserver log tail:\n{tail}") from e
  finally:
    stop_server(proc)
  return {**result, "startup_s": round(startup, 2),
          "server": health.get("models", {})}


if __name__ == "__main__":
  # Load generator process: python -m tfrs_pipeline.e2e '{"base_url": ...}'
  print(json.dumps(load_test(**json.loads(sys.argv[1]))))
