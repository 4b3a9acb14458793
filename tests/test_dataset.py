"""TFDS build offline on generated data, tf.data inputs, vocabularies."""

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import fakedata
from data import movielens_enriched, raw
from tfrs_pipeline import dataset, features, pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_features_are_tfds_movielens_plus_enrichment():
  ours = movielens_enriched._features("random")  # pylint: disable=protected-access
  base = movielens_enriched.tfds_movielens_features()
  for name, feature in base.items():
    assert repr(ours[name]) == repr(feature), name
  extra = set(ours.keys()) - set(base.keys())
  assert extra == {"raw_user_age", "director", "star", "release_year"}


def test_describe_counts_match_generated_data(fake_raw, fake_data_dir):
  counts = dataset.describe(fake_data_dir, fake_raw["path"],
                            log=lambda *a: None)
  assert counts["ratings"] == fake_raw["num_ratings"]
  assert counts["train"] + counts["test"] == fake_raw["num_ratings"]
  assert counts["users"] == fake_raw["num_users"]
  assert counts["users_with_ratings"] == fake_raw["num_users_with_ratings"]
  assert counts["movies"] == fake_raw["num_movies"]
  assert counts["skipped_lines"] == 0
  data = raw.load_raw(fake_raw["path"])
  rated = data.movies[data.movies.movie_id.isin(set(data.ratings.movie_id))]
  assert counts["director_coverage"]["known"] == int(
      (rated.director != raw.UNKNOWN).sum())


def test_fingerprint_follows_content_not_mtime(tmp_path):
  facts = fakedata.write_raw_dir(str(tmp_path / "raw"))
  before = raw.fingerprint(facts["path"])
  ratings = os.path.join(facts["path"], "ml-1m", "ratings.dat")
  os.utime(ratings, (1, 1))  # a fresh copy of the same files
  assert raw.fingerprint(facts["path"]) == before
  with open(ratings, "rb") as f:
    content = bytearray(f.read())
  i = content.index(b"::", 5)  # one rating digit changes, same size
  content[i - 1:i] = b"9" if content[i - 1:i] != b"9" else b"8"
  with open(ratings, "wb") as f:
    f.write(bytes(content))
  assert raw.fingerprint(facts["path"]) != before


def test_concurrent_build_waits_for_the_lock(tmp_path):
  facts = fakedata.write_raw_dir(str(tmp_path / "raw"), num_users=20)
  data_dir = str(tmp_path / "tfds")
  b = dataset.builder("movies", data_dir, facts["path"])
  messages, done = [], []
  with dataset.build_lock(b):  # another process's build, as it were
    worker = threading.Thread(target=lambda: done.append(dataset.prepare(
        data_dir, facts["path"], ["movies"], log=messages.append)))
    worker.start()
    deadline = time.time() + 30
    while not any("waiting" in m for m in messages) and time.time() < deadline:
      time.sleep(0.05)
    assert worker.is_alive() and not done
    assert any("another process is building it" in m for m in messages)
  worker.join(120)
  assert done and done[0]["movies"]["source_id"] == raw.fingerprint(
      facts["path"])


def test_build_reports_skipped_lines_and_rebuilds_on_change(tmp_path):
  facts = fakedata.write_raw_dir(str(tmp_path / "raw"), bad_lines=True)
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(raw.BadInputError, match="ratings.dat:"):
    dataset.prepare(data_dir, facts["path"], ["random"], log=lambda *a: None)
  counts = dataset.describe(data_dir, facts["path"], on_bad_line="skip",
                            log=lambda *a: None)
  assert counts["skipped_lines"] == facts["num_bad_rating_lines"]
  assert counts["ratings"] == facts["num_ratings"]
  # New raw data with fewer users: the stale build is detected and rebuilt.
  facts2 = fakedata.write_raw_dir(str(tmp_path / "raw"), num_users=30,
                                  bad_lines=True)
  os.utime(os.path.join(facts2["path"], "ml-1m", "ratings.dat"), (1, 1))
  counts2 = dataset.describe(data_dir, facts2["path"], on_bad_line="skip",
                             log=lambda *a: None)
  assert counts2["ratings"] == facts2["num_ratings"] != counts["ratings"]


def test_to_inputs_converts_tfds_examples(fake_data, fake_raw):
  batch = next(iter(fake_data.train.batch(1000)))
  # Every input but the candidate sources' (computed per request by the
  # two-stage recommender, never stored in the dataset).
  rating_inputs = [i for i in features.INPUTS
                   if i.entity != features.SOURCE]
  assert set(batch) == {i.name for i in rating_inputs} | {features.LABEL}
  assert len(rating_inputs) < len(features.INPUTS)
  for spec in rating_inputs:
    assert batch[spec.name].dtype == spec.dtype, spec.name
  genres = {g for v in batch["movie_genres"].numpy()
            for g in v.decode().split("|")}
  assert genres <= set(raw.GENRES)
  assert set(batch["user_gender"].numpy()) <= {b"M", b"F"}


def test_vocabularies_come_from_train_only(fake_data):
  train_ids = {v.decode() for b in fake_data.train.batch(4096)
               for v in b["user_zip_code"].numpy()}
  test_only = {v.decode() for b in fake_data.test.batch(4096)
               for v in b["movie_id"].numpy()} - {
                   v.decode() for b in fake_data.train.batch(4096)
                   for v in b["movie_id"].numpy()}
  vocab = fake_data.vocabularies.vocab
  assert set(vocab["user_zip_code"]) <= train_ids
  assert not test_only & set(vocab["movie_id"])
  # Saved and loaded unchanged.
  again = features.Vocabularies.from_json(fake_data.vocabularies.to_json())
  assert again == fake_data.vocabularies


def test_batches_are_seeded(fake_data):
  def first_ids(seed):
    ds = fake_data.batches(fake_data.train, 32, shuffle_seed=seed)
    return next(iter(ds))["user_id"].numpy().tolist()
  assert first_ids(1) == first_ids(1)
  assert first_ids(1) != first_ids(2)


def test_feature_encoder_shapes_and_oov(fake_data):
  encoder = features.FeatureEncoder(
      [f for f in features.features_for(features.RANKING)
       if f.entity != features.SOURCE], fake_data.vocabularies)
  batch = next(iter(fake_data.train.batch(8)))
  out = encoder(batch)
  assert out.shape == (8, encoder.output_dim)
  unknown = {k: v[:1] for k, v in batch.items()}
  unknown["user_id"] = tf.constant(["never-seen"])
  unknown["movie_title"] = tf.constant(["Zzyzx Qwerty (2031)"])
  assert np.isfinite(encoder(unknown).numpy()).all()


def test_cli_describe_json_and_clean_errors(tmp_path, fake_raw, fake_data_dir):
  cli = [sys.executable, "-m", "tfrs_pipeline.app.cli"]
  out = subprocess.run(
      cli + ["data", "describe", "--json", f"--raw_data={fake_raw['path']}",
             f"--data_dir={fake_data_dir}"],
      capture_output=True, text=True, cwd=ROOT, check=True)
  counts = json.loads(out.stdout)
  assert counts["ratings"] == fake_raw["num_ratings"]
  bad = fakedata.write_raw_dir(str(tmp_path / "bad"), bad_lines=True)
  out = subprocess.run(
      cli + ["data", "prepare", f"--raw_data={bad['path']}",
             f"--data_dir={tmp_path / 'tfds'}"],
      capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 3  # errors.InputError
  assert "error: ratings.dat:" in out.stderr
  assert "Traceback" not in out.stderr


def test_no_source_reuses_existing_build_and_failed_rebuild_keeps_it(
    tmp_path, monkeypatch):
  good = fakedata.write_raw_dir(str(tmp_path / "good"))
  bad = fakedata.write_raw_dir(str(tmp_path / "bad"), num_users=20,
                               bad_lines=True)
  data_dir = str(tmp_path / "tfds")
  quiet = lambda *a: None  # noqa: E731
  built = dataset.prepare(data_dir, good["path"], ["random"], log=quiet)
  # Without --raw_data or $TFRS_RAW_DATA the build is used, not deleted
  # for a download attempt.
  monkeypatch.delenv(raw.RAW_DATA_ENV, raising=False)
  reused = dataset.prepare(data_dir, None, ["random"], log=quiet)
  assert reused["random"]["source_id"] == built["random"]["source_id"]
  # A rebuild from a source with a bad line fails and keeps the old build.
  with pytest.raises(raw.BadInputError):
    dataset.prepare(data_dir, bad["path"], ["random"], log=quiet)
  b = dataset.builder("random", data_dir, good["path"])
  assert b.is_prepared()
  assert b.info.metadata["source_id"] == built["random"]["source_id"]
  assert b.info.splits["train"].num_examples + b.info.splits[
      "test"].num_examples == good["num_ratings"]
