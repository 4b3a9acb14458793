"""Split rules: reproducible from ids alone, no overlap, temporal order."""

import hashlib

import numpy as np
import pandas as pd

from data import raw, splits


def test_random_rule_is_the_documented_formula(fake_raw):
  ratings = raw.load_raw(fake_raw["path"]).ratings
  mask = splits.test_mask(ratings, "random")
  expected = [
      int(hashlib.sha256(f"{u}:{m}".encode()).hexdigest()[:8], 16) % 5 == 0
      for u, m in zip(ratings.user_id, ratings.movie_id)]
  assert mask.tolist() == expected
  assert 0.1 < mask.mean() < 0.3


def test_random_rule_ignores_row_order(fake_raw):
  ratings = raw.load_raw(fake_raw["path"]).ratings
  shuffled = ratings.sample(frac=1.0, random_state=1)
  a = pd.Series(splits.test_mask(ratings, "random"), index=ratings.index)
  b = pd.Series(splits.test_mask(shuffled, "random"), index=shuffled.index)
  assert a.sort_index().equals(b.sort_index())


def test_temporal_rule_takes_each_users_latest_fifth(fake_raw):
  ratings = raw.load_raw(fake_raw["path"]).ratings
  mask = splits.test_mask(ratings, "temporal")
  for _, group in ratings.assign(test=mask).groupby("user_id"):
    n_test = int(np.floor(0.2 * len(group)))
    assert group.test.sum() == n_test
    if n_test:
      assert group[group.test].timestamp.min() >= group[
          ~group.test].timestamp.max()
