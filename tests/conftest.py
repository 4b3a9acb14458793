"""Shared fixtures: generated raw data, and the real data when present.

Real-data tests run when `$TFRS_RAW_DATA` or `../shared/data` (beside the
repository) holds the raw files; otherwise they skip with the reason. The
TFDS build of the real data goes to `$TFRS_DATA_DIR` when set (CI reuses
it across runs; the dataset rebuilds itself when its source changes), else
to a session temporary directory.
"""

import os
import sys

import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)

import fakedata  # noqa: E402  pylint: disable=g-import-not-at-top


def real_raw_dir():
  """The real raw data directory, or None."""
  for candidate in (os.environ.get("TFRS_RAW_DATA"),
                    os.path.join(ROOT, "..", "shared", "data")):
    if candidate and os.path.isfile(
        os.path.join(candidate, "ml-1m", "ratings.dat")):
      return os.path.abspath(candidate)
  return None


@pytest.fixture(scope="session")
def real_raw():
  path = real_raw_dir()
  if path is None:
    pytest.skip("real data not found: set TFRS_RAW_DATA or put it at "
                "../shared/data")
  return path


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory):
  return os.environ.get("TFRS_DATA_DIR") or str(
      tmp_path_factory.mktemp("tfds_real"))


@pytest.fixture(scope="session")
def fake_raw(tmp_path_factory):
  """A small clean raw dataset (facts dict has 'path' and counts)."""
  return fakedata.write_raw_dir(str(tmp_path_factory.mktemp("raw")))


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds_fake"))


@pytest.fixture(scope="session")
def fake_data(fake_raw, fake_data_dir):
  """`pipeline.Data` over the generated raw data (built once)."""
  from tfrs_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.load_data(
      pipeline.DataConfig(raw_data=fake_raw["path"], data_dir=fake_data_dir),
      log=lambda *a: None)


# The longest test file first: with `make test`'s two workers (`-n 2
# --dist loadgroup`) it then runs while the other worker takes the rest;
# collected in name order it started late and finished last, alone.
_FIRST = ("test_retrieval_realdata.py",)


# `make test` distributes by `xdist_group` (`--dist loadgroup`): each file
# is one group, so its module fixtures are built once, except that every
# file using the session fixture `small_runs` (a `train all` of ~1 min)
# joins one group, so one worker trains those runs once instead of each
# worker training its own copy.
SMALL_RUNS_GROUP = "small_runs"


def pytest_collection_modifyitems(items):
  items.sort(key=lambda item: item.path.name not in _FIRST)  # stable
  shared = {item.path.name for item in items
            if SMALL_RUNS_GROUP in getattr(item, "fixturenames", ())}
  for item in items:
    name = item.path.name
    item.add_marker(pytest.mark.xdist_group(
        SMALL_RUNS_GROUP if name in shared else name))
