"""Versioned exports (`export_layout`): published whole or not at all.

An export interrupted between any two of its steps (an exception raised
there, or the process killed) leaves the previous version the newest
complete one, and it still matches (the retrieval SavedModel's scores
are its user embedding dotted with its own `candidates.npz`); the next
export removes what a killed one left and publishes the next integer.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from retrieval import evaluate, serving_model
from retrieval import model as model_lib
from tfrs_pipeline import errors, export, export_layout, pipeline
from tfrs_pipeline.app import cascade, catalog, export_check

USERS = ["1", "2", "3", "no-such-user"]


def _quiet(*_):
  pass


def _write(version, files):
  for rel, text in files.items():
    path = os.path.join(version.tmp, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(text)


# --------------------------------------------------------------------------
# The layout.


def test_versions_are_published_whole_and_numbered(tmp_path):
  base = str(tmp_path / "export")
  with pytest.raises(errors.MissingError, match="no complete export in"):
    export_layout.latest(base)
  for n in (1, 2):
    with export_layout.new_version(base, "test", log=_quiet) as v:
      _write(v, {"a.txt": f"a{n}", "sub/b.txt": f"b{n}"})
      assert export_layout.versions(base) == list(range(1, n))
    assert v.path == os.path.join(base, str(n)) and v.number == n
  assert export_layout.latest(base) == os.path.join(base, "2")
  manifest = export_layout.read_manifest(os.path.join(base, "2"))
  assert manifest["kind"] == "test"
  assert manifest["files"] == {"a.txt": 2, os.path.join("sub", "b.txt"): 2}
  # A directory without the manifest is not a version; nor is a name
  # that is not an integer.
  os.makedirs(os.path.join(base, "7"))
  os.makedirs(os.path.join(base, "latest"))
  assert export_layout.versions(base) == [1, 2]
  with export_layout.new_version(base, "test", log=_quiet) as v:
    _write(v, {"a.txt": "a3"})
  assert v.number == 8  # after every integer name, complete or not


def test_old_versions_pruned(tmp_path):
  base = str(tmp_path / "export")
  for n in range(5):
    with export_layout.new_version(base, "test", keep=2, log=_quiet) as v:
      _write(v, {"x": str(n)})
  assert export_layout.versions(base) == [4, 5]


def test_failed_export_leaves_nothing(tmp_path):
  base = str(tmp_path / "export")
  with export_layout.new_version(base, "test", log=_quiet) as v:
    _write(v, {"x": "1"})
  with pytest.raises(RuntimeError, match="boom"):
    with export_layout.new_version(base, "test", log=_quiet) as v:
      _write(v, {"x": "2"})
      raise RuntimeError("boom")
  assert sorted(os.listdir(base)) == ["1"]
  assert export_layout.latest(base) == os.path.join(base, "1")


_KILLED = textwrap.dedent("""
    import os, signal, sys
    from tfrs_pipeline import export_layout
    with export_layout.new_version(sys.argv[1], "test") as v:
      with open(os.path.join(v.tmp, "x"), "w") as f:
        f.write("half")
      os.kill(os.getpid(), signal.SIGKILL)
""")


def test_killed_export_removed_at_next_export(tmp_path):
  """A real SIGKILL mid-export leaves its temporary directory (and the
  unversioned layout's NAME.tmp-PID leftovers of older code); the next
  export removes them and publishes; a live process's is kept."""
  base = str(tmp_path / "export")
  p = subprocess.run([sys.executable, "-c", _KILLED, base], check=False,
                     capture_output=True, timeout=60)
  assert p.returncode == -signal.SIGKILL
  left = os.listdir(base)
  assert len(left) == 1 and left[0].startswith(".tmp-"), left
  assert export_layout.versions(base) == []
  dead = left[0].split("-")[1]  # .tmp-PID-XXXX
  os.makedirs(os.path.join(base, f"retrieval.tmp-{dead}"))
  live = os.path.join(base, f".tmp-{os.getppid()}-inuse")
  os.makedirs(live)
  logs = []
  with export_layout.new_version(base, "test", log=logs.append) as v:
    _write(v, {"x": "whole"})
  assert sorted(os.listdir(base)) == sorted(["1", os.path.basename(live)])
  assert any("removed 2 stale" in line for line in logs), logs


def test_checks_name_the_file(tmp_path):
  base = str(tmp_path / "export")
  with export_layout.new_version(base, "test", log=_quiet) as v:
    np.savez(os.path.join(v.tmp, "c.npz"), movie_ids=np.array(["1"]),
             embeddings=np.ones((1, 2), np.float32))
    _write(v, {"m/saved_model.pb": "pb", "m/variables/variables.index": "i",
               "m/variables/variables.data-00000-of-00001": "data"})
  version = export_layout.latest(base)
  npz = os.path.join(version, "c.npz")
  assert export_layout.check_files(version) == []
  assert export_layout.check_npz(npz, ("movie_ids", "embeddings")) == []
  assert export_layout.check_npz(npz, ("kind",))[0].args[0] == (
      f"{npz}: no kind")
  assert export_layout.check_saved_model(os.path.join(version, "m")) == []
  # Truncated: the manifest's size and the zip directory both see it.
  size = os.path.getsize(npz)
  with open(npz, "r+b") as f:
    f.truncate(size // 2)
  (problem,) = export_layout.check_files(version)
  assert isinstance(problem, errors.InputError)
  assert str(problem) == (f"{npz}: {size // 2} bytes, the export wrote "
                          f"{size} (truncated)")
  (problem,) = export_layout.check_npz(npz)
  assert str(problem).startswith(f"{npz}: not a readable .npz (BadZipFile")
  data = os.path.join(version, "m", "variables",
                      "variables.data-00000-of-00001")
  os.remove(data)
  problems = export_layout.check_saved_model(os.path.join(version, "m"))
  assert [str(p) for p in problems] == [f"{data}: missing"]
  assert isinstance(problems[0], errors.MissingError)


def test_check_source_files_match_the_fitted_sources():
  assert export_check.SOURCE_FILES == cascade.FittedSources.FILES


# --------------------------------------------------------------------------
# The retrieval export, interrupted at each step.


@pytest.fixture(scope="module")
def two_tower(fake_data):
  tf.keras.utils.set_random_seed(0)
  config = model_lib.RetrievalConfig(embedding_dim=8, members=2,
                                     hidden_units=(16,), top_k=10)
  model = model_lib.RetrievalModel(
      config, fake_data.vocabularies,
      model_lib.candidate_frequencies(fake_data.train_ratings.movie_id),
      corpus=fake_data.table("movies"))
  movies, embeddings = evaluate.candidate_table(fake_data,
                                                model.candidate_model)
  _, default_ts = evaluate.latest_train_timestamps(fake_data)
  return dict(model=model, movie_ids=np.asarray(movies["movie_id"]),
              embeddings=np.asarray(embeddings, np.float32),
              default_ts=default_ts, users=fake_data.table("users"))


def _export(two_tower, base, embeddings):
  return serving_model.export_model(
      two_tower["model"].query_model, two_tower["users"],
      two_tower["movie_ids"], embeddings, two_tower["default_ts"], base,
      top_k=10, log=_quiet)


def _assert_matching(version, embeddings):
  """The version's SavedModel scores = its embedding . its candidates,
  and its candidates are `embeddings`."""
  with np.load(os.path.join(version, "candidates.npz")) as f:
    ids, emb = f["movie_ids"].astype(str), f["embeddings"]
  np.testing.assert_array_equal(emb, embeddings)
  row = {m: i for i, m in enumerate(ids)}
  for name in ("retrieval", os.path.join("tfserving", "retrieval", "1")):
    model = tf.saved_model.load(os.path.join(version, name))
    out = model.signatures["serving_default"](user_id=tf.constant(USERS))
    got = out["movie_ids"].numpy().astype(str)
    expected = np.einsum("bd,bkd->bk", out["embedding"].numpy(),
                         emb[[[row[m] for m in r] for r in got]])
    np.testing.assert_allclose(out["scores"].numpy(), expected, rtol=1e-4,
                               atol=1e-4)


# Each step of `serving_model.export_model` and of publishing, by the
# function that performs it, and which call of it fails.
_STEPS = [
    ("ScaNN SavedModel", export, "save_model", 1),
    ("TF Serving SavedModel", export, "save_model", 2),
    ("candidates.npz", np, "savez", 1),
    ("manifest", export_layout, "_manifest", 1),
    ("rename", export_layout.os, "rename", 1),
]


def test_retrieval_export_interrupted_at_each_step(two_tower, tmp_path,
                                                   monkeypatch):
  base = str(tmp_path / "export")
  first = _export(two_tower, base, two_tower["embeddings"])
  assert first["version"] == 1
  _assert_matching(export_layout.latest(base), two_tower["embeddings"])
  other = (two_tower["embeddings"][::-1] * 2).copy()  # a different export
  for name, module, attr, failing_call in _STEPS:
    original = getattr(module, attr)
    calls = []

    def failing(*args, _original=original, _n=failing_call, _calls=calls,
                _name=name, **kwargs):
      _calls.append(1)
      if len(_calls) == _n:
        raise RuntimeError(f"killed at the {_name}")
      return _original(*args, **kwargs)

    monkeypatch.setattr(module, attr, failing)
    with pytest.raises(RuntimeError, match=f"killed at the {name}"):
      _export(two_tower, base, other)
    monkeypatch.setattr(module, attr, original)
    assert sorted(os.listdir(base)) == ["1"], name
    assert export_layout.latest(base) == os.path.join(base, "1")
  _assert_matching(os.path.join(base, "1"), two_tower["embeddings"])
  second = _export(two_tower, base, other)
  assert second["version"] == 2
  assert second["candidates"] == os.path.join(base, "2", "candidates.npz")
  _assert_matching(export_layout.latest(base), other)
  _assert_matching(os.path.join(base, "1"), two_tower["embeddings"])


# --------------------------------------------------------------------------
# The sources export (fitted sources + catalogue), interrupted.


def test_sources_export_interrupted_keeps_the_previous_version(
    fake_data, fake_raw, fake_data_dir, tmp_path, monkeypatch):
  config = cascade.CascadeConfig(two_tower=20, ease=20, ease_liked=10,
                                 popularity=10, list_size=40)
  data_config = pipeline.DataConfig(raw_data=fake_raw["path"],
                                    data_dir=fake_data_dir)
  run = str(tmp_path / "sources")
  cascade.train_sources(fake_data, data_config, run, config, log=_quiet)
  base = export_layout.run_export(run)
  before = export_layout.read_manifest(export_layout.latest(base))
  steps = [(cascade.FittedSources, "save"), (cascade, "write_config"),
           (catalog, "save_catalog"), (export_layout.os, "rename")]
  for module, attr in steps:
    def failing(*args, **kwargs):
      raise RuntimeError("killed")
    monkeypatch.setattr(module, attr, failing)
    with pytest.raises(RuntimeError, match="killed"):
      cascade.train_sources(fake_data, data_config, run,
                            dataclasses.replace(
                                config, list_size=config.list_size + 1),
                            log=_quiet)
    monkeypatch.undo()
    assert sorted(os.listdir(base)) == ["1"], attr
  version = export_layout.latest(base)
  assert export_layout.read_manifest(version) == before
  assert export_layout.check_files(version) == []
  with zipfile.ZipFile(os.path.join(version, "sources",
                                    "catalog.npz")) as z:
    assert z.testzip() is None
  assert cascade.read_config(os.path.join(version, "sources")) == config
  metrics = cascade.train_sources(fake_data, data_config, run, config,
                                  log=_quiet)
  assert metrics["version"] == 2
  assert metrics["export"] == os.path.join(base, "2", "sources")

