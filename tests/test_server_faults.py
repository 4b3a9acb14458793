"""The server with broken exports, and reloading a new version.

On a copy of the `small_runs` exports (test_recommend.py), each broken
case (missing ranking export, missing or truncated candidates.npz, a
truncated variables data file, a missing catalogue) makes `serve` exit
non-zero within 10 s with one line naming the file; with
`--on_broken_export=unavailable` it stays up answering 503 with the
reason, and /health names the component. With `--admin_reload`,
POST /admin/reload swaps in a newly published version while requests go
on, and keeps serving the old one when the new one is broken.
"""

import os
import shutil
import subprocess
import sys
import threading
import time

import httpx
import pytest

from test_recommend import small_runs  # noqa: F401  pylint: disable=unused-import
from tfrs_pipeline import export_layout
from tfrs_pipeline.app import e2e

RUNS = ("retrieval", "sources", "ranking")


@pytest.fixture
def runs(small_runs, tmp_path):  # pylint: disable=redefined-outer-name
  """A copy of the small runs' exports (and config.json)."""
  dst = tmp_path / "runs"
  for name in RUNS:
    src = os.path.join(small_runs["runs"], name)
    os.makedirs(dst / name)
    shutil.copytree(os.path.join(src, "export"), dst / name / "export")
    if os.path.exists(os.path.join(src, "config.json")):
      shutil.copy(os.path.join(src, "config.json"), dst / name)
  return str(dst)


def _truncate(path):
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)
  return path


def _variables(version, model):
  return os.path.join(version, model, "variables",
                      "variables.data-00000-of-00001")


def _break(runs, case):  # pylint: disable=redefined-outer-name
  """Breaks the copy; returns (named path, exit code, component)."""
  latest = {n: export_layout.locate(os.path.join(runs, n)) for n in RUNS}
  if case == "missing ranking export":
    base = export_layout.run_export(os.path.join(runs, "ranking"))
    shutil.rmtree(base)
    return base, 4, "ranking"
  if case == "missing candidates.npz":
    path = os.path.join(latest["retrieval"], "candidates.npz")
    os.remove(path)
    return path, 4, "candidates"
  if case == "truncated candidates.npz":
    return (_truncate(os.path.join(latest["retrieval"], "candidates.npz")),
            3, "candidates")
  if case == "truncated ranking variables":
    return _truncate(_variables(latest["ranking"], "ranking")), 3, "ranking"
  if case == "truncated retrieval variables":
    return (_truncate(_variables(latest["retrieval"], "retrieval")), 3,
            "retrieval")
  if case == "missing catalog":
    path = os.path.join(latest["sources"], "sources", "catalog.npz")
    os.remove(path)
    return path, 4, "catalog"
  raise ValueError(case)


CASES = ("missing ranking export", "missing candidates.npz",
         "truncated candidates.npz", "truncated ranking variables",
         "truncated retrieval variables", "missing catalog")


def _serve(runs, port, *flags, log=None):  # pylint: disable=redefined-outer-name
  cmd = [sys.executable, "-c", "from tfrs_pipeline.app import cli; cli.run()",
         "serve", f"--runs={runs}", f"--port={port}", "--host=127.0.0.1",
         "--log_level=warning", *flags]
  return subprocess.Popen(cmd, stdout=log or subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("case", CASES)
def test_broken_export_exits_naming_the_file(runs, case):  # pylint: disable=redefined-outer-name
  path, code, _ = _break(runs, case)
  start = time.time()
  proc = _serve(runs, e2e.free_port())
  out, _ = proc.communicate(timeout=60)
  seconds = time.time() - start
  assert proc.returncode == code, out
  assert seconds < 10, (seconds, out)
  last = out.strip().splitlines()[-1]
  assert last.startswith("error: broken or missing export: ") and (
      f"{path}: " in last), out


@pytest.mark.parametrize("case", ("truncated ranking variables",
                                  "missing candidates.npz"))
def test_broken_export_unavailable_answers_503(runs, case, tmp_path):  # pylint: disable=redefined-outer-name
  path, _, component = _break(runs, case)
  port = e2e.free_port()
  url = f"http://127.0.0.1:{port}"
  with open(tmp_path / "serve.log", "w") as log:
    start = time.time()
    proc = _serve(runs, port, "--on_broken_export=unavailable", log=log)
  try:
    health = None
    while time.time() - start < 60 and proc.poll() is None:
      try:
        r = httpx.get(f"{url}/health", timeout=5)
        if r.json().get("status") == "failed":
          health = r
          break
      except httpx.HTTPError:
        pass
      time.sleep(0.1)
    seconds = time.time() - start
    assert health is not None, (tmp_path / "serve.log").read_text()
    assert health.status_code == 503
    body = health.json()
    assert f"{path}: " in body["detail"]
    parts = body["components"]
    assert set(parts) == {"sources", "catalog", "retrieval", "candidates",
                          "ranking"}
    assert parts[component]["state"] in ("missing", "broken")
    assert f"{path}: " in parts[component]["problem"]
    assert all(c["state"] == "ok" for n, c in parts.items()
               if n != component), parts
    assert all(isinstance(c["version"], int) for c in parts.values())
    for route in ("/recommend?user_id=1", "/similar?movie_id=1"):
      r = httpx.get(url + route, timeout=5)
      assert r.status_code == 503 and f"{path}: " in r.json()["error"]
    # Off by default: no reload route.
    assert httpx.post(f"{url}/admin/reload", timeout=5).status_code == 404
    # Nothing to load: the port opens right after the check, without
    # importing TensorFlow.
    assert seconds < 10, seconds
    with open(f"/proc/{proc.pid}/maps", encoding="utf-8") as maps:
      assert "libtensorflow" not in maps.read()
  finally:
    e2e.stop_server(proc)


def _republish(runs, name):  # pylint: disable=redefined-outer-name
  """A new version of a run's export: a copy of its newest one."""
  latest = export_layout.locate(os.path.join(runs, name))
  with export_layout.new_version(export_layout.run_export(
      os.path.join(runs, name)), name, log=lambda *_: None) as v:
    shutil.copytree(latest, v.tmp, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(export_layout.MANIFEST))
  return v.path


def test_reload_swaps_in_a_new_version(runs, tmp_path):  # pylint: disable=redefined-outer-name
  port = e2e.free_port()
  url = f"http://127.0.0.1:{port}"
  log = open(tmp_path / "serve.log", "w")  # pylint: disable=consider-using-with
  proc = _serve(runs, port, "--admin_reload", log=log)
  try:
    e2e.wait_ready(url, 300, proc)
    with httpx.Client(base_url=url, timeout=60) as c:
      health = c.get("/health").json()
      assert health["status"] == "ok"
      assert {n: p["version"] for n, p in health["components"].items()} == {
          n: 1 for n in health["components"]}
      r = c.post("/admin/reload")
      assert r.status_code == 200 and r.json()["status"] == "unchanged"
      before = c.get("/recommend", params={"user_id": "1"}).json()["items"]
      new = _republish(runs, "ranking")
      assert new.endswith(os.path.join("ranking", "export", "2"))
      # Requests keep being answered while the reload loads and swaps.
      codes, stop = [], threading.Event()

      def load():
        with httpx.Client(base_url=url, timeout=60) as lc:
          while not stop.is_set():
            codes.append(lc.get("/recommend",
                                params={"user_id": "1"}).status_code)

      worker = threading.Thread(target=load)
      worker.start()
      try:
        r = c.post("/admin/reload")
      finally:
        stop.set()
        worker.join()
      assert r.status_code == 200, r.text
      body = r.json()
      assert body["status"] == "reloaded"
      assert body["versions"]["ranking"] == 2
      assert body["previous"]["ranking"] == 1
      assert codes and set(codes) == {200}, codes
      health = c.get("/health").json()
      assert health["components"]["ranking"]["version"] == 2
      assert health["components"]["ranking"]["path"] == os.path.join(
          new, "ranking")
      assert health["models"]["ranking_dir"] == os.path.join(new, "ranking")
      # The same model again: the same answer.
      after = c.get("/recommend", params={"user_id": "1"}).json()["items"]
      assert [i["movie_id"] for i in after] == [i["movie_id"]
                                                for i in before]
      # A broken new version: 503 naming the file, the old one serves on.
      bad = _truncate(_variables(_republish(runs, "ranking"), "ranking"))
      r = c.post("/admin/reload")
      assert r.status_code == 503 and f"{bad}: " in r.json()["error"]
      assert "previous versions keep serving" in r.json()["error"]
      assert c.get("/recommend", params={"user_id": "1"}).status_code == 200
      assert c.get("/health").json()["components"]["ranking"][
          "version"] == 2
  finally:
    e2e.stop_server(proc)
    log.close()
