"""A load test of the service (offline two-stage quality: `cascade_eval`).

* `load_test`: concurrent `GET /recommend` against a running server,
  optionally mixed with invalid requests (`INVALID_REQUESTS`).
* `run_load_tests_subprocess`: starts `tfrs-pipeline serve` on a free
  loopback port, waits for `/health`, runs each `load_test` in a second
  process and returns their numbers.

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
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

import httpx

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

# --------------------------------------------------------------------------
# Load test.


# Invalid requests of a mixed load: each must get a 4xx (never a 5xx).
INVALID_REQUESTS = (
    ("GET", "/recommend", {"user_id": "999999999"}, None),  # unknown user
    ("GET", "/recommend", {"user_id": "1", "k": "0"}, None),  # k out of range
    ("GET", "/recommend", {"user_id": "1", "k": "abc"}, None),  # k not int
    ("GET", "/recommend", {}, None),  # user_id missing
    ("POST", "/recommend", None,
     b'{"ratings": [{"movie_id": "1", "rating": 7}]}'),  # stars outside 1-5
    ("POST", "/recommend", None, b'{"ratings": [{"movie_id": '),  # bad JSON
    ("POST", "/recommend", None,
     b'{"ratings": [{"movie_id": "99999999"}]}'),  # unknown movie
    ("GET", "/similar", {"movie_id": "no-such-movie"}, None),
)


def _plan(total: int, invalid_share: float) -> List[bool]:
  """Which of `total` requests are invalid: `invalid_share` of them,
  spread evenly (request i is invalid when floor((i + 1) * share) grows)."""
  return [int((i + 1) * invalid_share) > int(i * invalid_share)
          for i in range(total)]


def _stats(latencies: Sequence[float]) -> Dict[str, float]:
  lat = np.array(latencies) if len(latencies) else np.array([np.nan])
  return {"p50_ms": float(np.percentile(lat, 50)),
          "p99_ms": float(np.percentile(lat, 99))}


async def _load(base_url: str, user_ids: Sequence[str], concurrency: int,
                total_requests: int, timeout_s: float, k: int,
                invalid_share: float) -> Dict:
  plan = _plan(total_requests, invalid_share)
  latencies: Dict[bool, List[float]] = {False: [], True: []}
  status = {False: {}, True: {}}  # status class -> count
  next_i = 0
  deadline = time.perf_counter() + timeout_s
  limits = httpx.Limits(max_connections=concurrency)
  async with httpx.AsyncClient(base_url=base_url, limits=limits,
                               timeout=max(1.0, timeout_s)) as client:

    def send(i: int, invalid: bool):
      if not invalid:
        return client.get("/recommend", params={
            "user_id": user_ids[i % len(user_ids)], "k": k})
      method, path, params, body = INVALID_REQUESTS[
          i % len(INVALID_REQUESTS)]
      return client.request(method, path, params=params, content=body,
                            headers={"content-type": "application/json"}
                            if body is not None else None)

    async def worker():
      nonlocal next_i
      while next_i < total_requests and time.perf_counter() < deadline:
        i = next_i
        next_i += 1
        invalid = plan[i]
        t = time.perf_counter()
        try:
          r = await asyncio.wait_for(send(i, invalid),
                                     max(0.1, deadline - t))
          kind = f"{r.status_code // 100}xx"
        except Exception:  # pylint: disable=broad-except
          kind = "failed"
        counts = status[invalid]
        counts[kind] = counts.get(kind, 0) + 1
        if kind != "failed":
          latencies[invalid].append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
  valid, bad = status[False], status[True]
  ok = valid.get("2xx", 0)
  out = {**_stats(latencies[False]),
         "rps": ok / wall if wall else 0.0,
         "errors": sum(valid.values()) - ok,
         "requests": sum(valid.values()) + sum(bad.values()),
         "status": {c: valid.get(c, 0) + bad.get(c, 0)
                    for c in sorted(set(valid) | set(bad))},
         "concurrency": concurrency, "seconds": round(wall, 2)}
  if invalid_share:
    out["invalid"] = {**_stats(latencies[True]), "share": invalid_share,
                      "requests": sum(bad.values()), "status": bad,
                      "not_4xx": sum(bad.values()) - bad.get("4xx", 0)}
  return out


def load_test(base_url: str, user_ids: Sequence[str], concurrency: int = 8,
              total_requests: int = 500, timeout_s: float = 60,
              k: int = 10, invalid_share: float = 0.0) -> Dict:
  """`total_requests` requests from `concurrency` workers over keep-alive
  connections, stopping at `timeout_s`: GET /recommend cycling through
  `user_ids`, and with `invalid_share` > 0 that share of them (spread
  evenly) one of `INVALID_REQUESTS` instead.

  Returns p50_ms / p99_ms of the valid requests answered, rps (valid
  requests answered 2xx per second), errors (valid requests not answered
  2xx: 4xx, 5xx, timeouts, refused), requests, status (counts by class:
  2xx, 4xx, 5xx, failed) and, with invalid requests, `invalid` (their
  p50/p99, status counts and `not_4xx`: invalid requests answered with
  anything but a 4xx)."""
  if not user_ids:
    raise ValueError("load_test needs at least one user id")
  if not 0 <= invalid_share < 1:
    raise ValueError(f"invalid_share must be in [0, 1), got {invalid_share}")
  return asyncio.run(_load(base_url.rstrip("/"), list(map(str, user_ids)),
                           concurrency, total_requests, timeout_s, k,
                           invalid_share))


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


def run_load_tests_subprocess(runs_dir: str, loads: Sequence[Mapping],
                              user_ids: Optional[Sequence[str]] = None,
                              timeout_s: float = 60,
                              startup_timeout_s: float = 600,
                              log=print) -> List[Dict]:
  """Starts the server once, waits for /health, runs each of `loads`
  (`load_test` keyword arguments: concurrency, total_requests,
  invalid_share) in a second process, stops the server. `user_ids`
  default: ids 1..200.

  Returns one load_test dict per load, each with `startup_s` and `server`
  (health info)."""
  port = free_port()
  base = f"http://127.0.0.1:{port}"
  log_path = os.path.join(tempfile.mkdtemp(prefix="tfrs_serve_"), "serve.log")
  t0 = time.time()
  proc = start_server(runs_dir, port, (), log_path)
  results = []
  try:
    health = wait_ready(base, startup_timeout_s, proc)
    startup = time.time() - t0
    log(f"[load] server ready in {startup:.1f} s")
    for load in loads:
      args = {"base_url": base, "timeout_s": timeout_s,
              "user_ids": list(user_ids or [str(i) for i in range(1, 201)]),
              **load}
      log(f"[load] {args.get('total_requests', 500)} requests, concurrency "
          f"{args.get('concurrency', 8)}, invalid share "
          f"{args.get('invalid_share', 0)}")
      gen = subprocess.run(
          [sys.executable, "-m", "tfrs_pipeline.app.e2e", json.dumps(args)],
          capture_output=True, text=True, timeout=timeout_s + 60,
          check=False)
      if gen.returncode != 0:
        raise RuntimeError(f"load generator failed: {gen.stderr[-2000:]}")
      result = json.loads(gen.stdout.strip().splitlines()[-1])
      results.append({**result, "startup_s": round(startup, 2),
                      "server": health.get("models", {})})
  except Exception as e:
    with open(log_path, errors="replace") as f:
      tail = f.read()[-2000:]
    raise RuntimeError(f"{e}\nserver log tail:\n{tail}") from e
  finally:
    stop_server(proc)
  return results


def run_load_test_subprocess(runs_dir: str,
                             user_ids: Optional[Sequence[str]] = None,
                             concurrency: int = 8, total_requests: int = 500,
                             timeout_s: float = 60,
                             startup_timeout_s: float = 600,
                             log=print) -> Dict:
  """One load (`run_load_tests_subprocess`) against a fresh server."""
  return run_load_tests_subprocess(
      runs_dir, [{"concurrency": concurrency,
                  "total_requests": total_requests}],
      user_ids, timeout_s, startup_timeout_s, log)[0]


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
