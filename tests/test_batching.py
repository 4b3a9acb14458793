"""The request batcher (flat combining): pure Python, no TensorFlow."""

import threading
import time

import pytest

from tfrs_pipeline.app.batching import Batcher


def test_lone_caller_runs_in_its_own_thread():
  threads = []

  def run(requests, k):
    threads.append(threading.current_thread())
    return [[f"{r}-{i}" for i in range(k)] for r in requests]

  batcher = Batcher(run)
  assert batcher("a", 3) == ["a-0", "a-1", "a-2"]
  assert threads == [threading.current_thread()]


def test_concurrent_callers_share_calls_and_get_their_own_rows():
  calls = []
  started = threading.Event()
  release = threading.Event()

  def run(requests, k):
    calls.append((list(requests), k))
    if len(calls) == 1:  # hold the first call until the others queued
      started.set()
      release.wait(5)
    return [[(r, i) for i in range(k)] for r in requests]

  batcher = Batcher(run, max_batch=4)
  results = {}

  def call(name, k):
    results[name] = batcher(name, k)

  first = threading.Thread(target=call, args=("r0", 2))
  first.start()
  assert started.wait(5)
  others = [threading.Thread(target=call, args=(f"r{i}", 1 + i % 3))
            for i in range(1, 7)]
  for t in others:
    t.start()
  deadline = time.time() + 5
  while len(batcher._waiting) < 6 and time.time() < deadline:  # pylint: disable=protected-access
    time.sleep(0.001)
  release.set()
  for t in [first, *others]:
    t.join(5)
  # Each caller got its own request's rows, cut to its own k.
  for i in range(7):
    k = 2 if i == 0 else 1 + i % 3
    assert results[f"r{i}"] == [(f"r{i}", j) for j in range(k)]
  # The six queued while the first ran went in batches of at most 4,
  # oldest first, each run with the largest k of its batch.
  assert calls[0] == (["r0"], 2)
  batched = [r for requests, _ in calls[1:] for r in requests]
  assert sorted(batched) == [f"r{i}" for i in range(1, 7)]
  assert [len(r) for r, _ in calls[1:]] == [4, 2]
  for requests, k in calls[1:]:
    assert k == max(1 + int(r[1:]) % 3 for r in requests)


def test_an_error_reaches_every_caller_of_its_batch_only():
  def run(requests, k):
    del k
    if "bad" in requests:
      raise ValueError("boom")
    return [[r] for r in requests]

  batcher = Batcher(run)
  with pytest.raises(ValueError, match="boom"):
    batcher("bad", 1)
  assert batcher("good", 1) == ["good"]
