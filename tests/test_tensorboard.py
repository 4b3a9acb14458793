"""TensorBoard as a user sees it: `tensorboard --logdir RUNS` over small
retrieval, ranking and sources runs lists the projector, scalars, images
and hparams plugins as active, each with data.

RUNS is laid out as `make train` lays it out (RUNS/retrieval,
RUNS/ranking, RUNS/sources), trained on the generated raw data; the
ranking run is the rating-trained DCN (it logs the interaction heatmap
image), fitted and evaluated by `train_prepared` without its SavedModel
export (TensorBoard reads none; this saves ~7 s). TensorBoard runs as a subprocess on a free loopback port, as
`make tensorboard` starts it, and is stopped in all cases.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

sys.path.insert(0, os.path.dirname(__file__))
import fakedata  # noqa: E402  pylint: disable=g-import-not-at-top

from ranking import train as ranking_train  # noqa: E402
from ranking.model import RankingConfig  # noqa: E402
from retrieval import train as retrieval_train  # noqa: E402
from tfrs_pipeline import pipeline  # noqa: E402
from tfrs_pipeline import runs as tfrs_runs  # noqa: E402

RETRIEVAL = dict(examples="user", batch_size=16, passes_per_epoch=1,
                 eval_sample=50, history_length=8, hidden_units=(16,),
                 embedding_dim=8, top_k=50, epochs=1, learning_rate=0.01)
RANKING = dict(model="dcn", examples="ratings", score="engage_x_rating",
               deep_layers=(8,), bias_tower_layers=(4,), batch_size=256,
               epochs=1, validation_fraction=0.1)
PLUGINS = ("projector", "scalars", "images", "hparams")


def _quiet(*_):
  pass


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tensorboard")
  fakedata.write_raw_dir(str(root / "raw"))
  data_config = pipeline.DataConfig(raw_data=str(root / "raw"),
                                    data_dir=str(root / "tfds"))
  runs = root / "runs"
  retrieval = retrieval_train.RetrievalConfig(**RETRIEVAL)
  retrieval_train.train_and_evaluate(retrieval, data_config,
                                     str(runs / "retrieval"), log=_quiet)
  ranking = RankingConfig(**RANKING)
  data = pipeline.load_data(
      ranking_train.ranking_data_config(ranking, data_config), log=_quiet)
  prepared = ranking_train.prepare(data, ranking, log=_quiet)
  ranking_train.train_prepared(ranking, prepared,
                               tfrs_runs.RunDir(str(runs / "ranking")),
                               log=_quiet, export=False)  # TensorBoard only
  (runs / "sources").mkdir()  # a sources run holds no TensorBoard logs
  (runs / "sources" / "metrics.json").write_text("{}\n")
  return dict(path=str(runs), retrieval=retrieval, ranking=ranking)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _tensorboard_command():
  exe = os.path.join(os.path.dirname(sys.executable), "tensorboard")
  return [exe] if os.path.exists(exe) else [sys.executable, "-m",
                                            "tensorboard.main"]


@pytest.fixture(scope="module")
def board(runs_dir):
  """(base URL, process) of `tensorboard --logdir RUNS` on loopback."""
  port = _free_port()
  proc = subprocess.Popen(
      _tensorboard_command() + ["--logdir", runs_dir["path"], "--host",
                                "127.0.0.1", "--port", str(port)],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}"
  try:
    yield url, proc
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
    proc.stdout.close()


def _get(url: str, path: str, **params):
  query = ("?" + urllib.parse.urlencode(params)) if params else ""
  with urllib.request.urlopen(url + path + query, timeout=10) as r:
    body = r.read()
  return json.loads(body) if r.headers.get_content_type() == (
      "application/json") else body.decode("utf-8")


def _wait_for_plugins(url, proc, timeout=90.0):
  """plugins_listing once every plugin of PLUGINS is enabled (the
  projector decides in a background thread, so it is polled)."""
  deadline, listing, error = time.time() + timeout, {}, None
  while time.time() < deadline:
    if proc.poll() is not None:
      out = proc.stdout.read().decode(errors="replace")
      pytest.fail(f"tensorboard exited with {proc.returncode}:\n{out}")
    try:
      listing = _get(url, "/data/plugins_listing")
      if all(listing.get(p, {}).get("enabled") for p in PLUGINS):
        return listing
    except OSError as e:  # not listening yet
      error = e
    time.sleep(0.5)
  pytest.fail(f"plugins not all active after {timeout:.0f} s: "
              f"{ {p: listing.get(p, {}).get('enabled') for p in PLUGINS} }"
              f" (last error: {error})")


def test_plugins_active_with_data(board, runs_dir):
  url, proc = board
  listing = _wait_for_plugins(url, proc)
  assert all(listing[p]["enabled"] for p in PLUGINS)

  # Projector: the retrieval run's movie embeddings with their metadata.
  runs = _get(url, "/data/plugin/projector/runs")
  assert "retrieval/logs/projector" in runs, runs
  info = _get(url, "/data/plugin/projector/info",
              run="retrieval/logs/projector")
  (embedding,) = info["embeddings"]
  num_movies, dim = embedding["tensorShape"]
  r = runs_dir["retrieval"]
  assert dim == r.members * r.embedding_dim and num_movies > 10
  metadata = _get(url, "/data/plugin/projector/metadata",
                  run="retrieval/logs/projector",
                  name=embedding["tensorName"])
  lines = metadata.splitlines()
  assert lines[0].split("\t") == ["title", "genres", "director", "star"]
  assert len(lines) == num_movies + 1

  # Scalars: the training curves of both stages.
  tags = _get(url, "/data/plugin/scalars/tags")
  assert "epoch_loss" in tags["retrieval/logs/train"], tags
  assert any(t.startswith("final/") for t in tags["retrieval/logs/eval"])
  assert "epoch_loss" in tags["ranking/logs/train"], tags
  assert any(t.startswith("test/") for t in tags["ranking/logs/hparams"])

  # Images: the ranker's feature-interaction heatmap.
  images = _get(url, "/data/plugin/images/tags")
  assert "feature_interactions" in images["ranking/logs/images"], images


def test_hparams_trials_have_readable_names(board, runs_dir):
  url, proc = board
  _wait_for_plugins(url, proc)
  request = json.dumps({"experimentName": "", "allowedStatuses": [
      "STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
      "STATUS_RUNNING"], "colParams": [], "startIndex": 0,
      "sliceSize": 100})
  groups = _get(url, "/data/plugin/hparams/session_groups",
                request=request)["sessionGroups"]
  names = {g["name"]: [s["name"] for s in g["sessions"]] for g in groups}
  r = runs_dir["retrieval"]
  retrieval = (f"retrieval user lr={r.learning_rate} "
               f"dim={r.embedding_dim} batch={r.batch_size} "
               f"epochs={r.epochs}")
  k = runs_dir["ranking"]
  ranking = (f"ranking dcn ratings lr={k.learning_rate} "
             f"batch={k.batch_size} epochs={k.epochs}")
  assert names == {retrieval: ["retrieval/logs/eval"],
                   ranking: ["ranking/logs/hparams"]}, names
  (group,) = [g for g in groups if g["name"] == retrieval]
  assert group["hparams"]["embedding_dim"] == r.embedding_dim
  experiment = _get(url, "/data/plugin/hparams/experiment",
                    request=json.dumps({"experimentName": ""}))
  shown = {h["name"] for h in experiment["hparamInfos"]}
  assert {"embedding_dim", "learning_rate", "model"} <= shown


def test_trial_name_and_values():
  config = RankingConfig(model="dcn", learning_rate=0.01,
                         deep_layers=(16, 8))
  name = tfrs_runs.trial_name("/x/runs/ranking_b", config,
                              ranking_train.TRIAL_KEYS)
  assert name == (f"ranking_b dcn lists lr=0.01 batch={config.batch_size} "
                  f"epochs={config.epochs}")
  values = tfrs_runs.hparam_values(config)
  assert values["deep_layers"] == "16,8" and values["model"] == "dcn"
  assert all(isinstance(v, (bool, int, float, str)) for v in values.values())
