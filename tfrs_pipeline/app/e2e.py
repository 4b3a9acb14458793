"""A load test of the service (offline two-stage quality: `cascade_eval`).

* `load_test`: concurrent `GET /recommend` against a running server.
* `run_load_test_subprocess`: starts `tfrs-pipeline serve` on a free
  loopback port, waits for `/health`, runs `load_test` in a second process
  and returns its numbers.

The load generator imports neither TensorFlow nor the models.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

import httpx

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

# --------------------------------------------------------------------------
# Load test.


async def _load(base_url: str, user_ids: Sequence[str], concurrency: int,
                total_requests: int, timeout_s: float, k: int) -> Dict:
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


def start_server(runs_dir: str, port: int, flags: Sequence[str] = (),
                 log_path: Optional[str] = None) -> subprocess.Popen:
  """`tfrs-pipeline serve` of RUNS's exports on 127.0.0.1:port, with more
  `flags` (stdout+stderr to log_path)."""
  cmd = [sys.executable, "-c", "from tfrs_pipeline.app import cli; cli.run()",
         "serve", f"--runs={runs_dir}", f"--port={port}",
         "--host=127.0.0.1", "--log_level=warning", *flags]
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


def run_load_test_subprocess(runs_dir: str,
                             user_ids: Optional[Sequence[str]] = None,
                             concurrency: int = 8, total_requests: int = 500,
                             timeout_s: float = 60,
                             startup_timeout_s: float = 600,
                             log=print) -> Dict:
  """Starts the server, waits for /health, runs `load_test` in another
  process, stops the server. `user_ids` default: ids 1..200.

  Returns load_test's dict plus `startup_s` and `server` (health info).
  """
  port = free_port()
  base = f"http://127.0.0.1:{port}"
  log_path = os.path.join(tempfile.mkdtemp(prefix="tfrs_serve_"), "serve.log")
  t0 = time.time()
  proc = start_server(runs_dir, port, (), log_path)
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
        [sys.executable, "-m", "tfrs_pipeline.app.e2e", json.dumps(args)],
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


def time_recommend_cli(runs_dir: str, user_id: str) -> float:
  """Wall seconds of `tfrs-pipeline recommend --user_id=...` in a fresh
  process, as a user runs it (raises if it fails)."""
  start = time.time()
  out = subprocess.run(
      [sys.executable, "-c", "from tfrs_pipeline.app import cli; cli.run()",
       "recommend", f"--user_id={user_id}", f"--runs={runs_dir}"],
      capture_output=True, text=True, timeout=300, check=False)
  seconds = time.time() - start
  if out.returncode:
    raise RuntimeError(f"recommend failed: {out.stderr[-2000:]}")
  return round(seconds, 2)


if __name__ == "__main__":
  # Load generator process: python -m tfrs_pipeline.app.e2e '{"base_url": ...}'
  print(json.dumps(load_test(**json.loads(sys.argv[1]))))
