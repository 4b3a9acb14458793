"""Train/test split rules. Both are deterministic and documented in README.

- `random` (default): the rating of user `u` for movie `m` is test iff
  `int(sha256(f"{u}:{m}").hexdigest()[:8], 16) % 5 == 0`, else train.
  Any tool can reproduce it from the ids alone.
- `temporal`: each user's latest 20% of ratings (by timestamp, ties broken
  by movie id) are test; a user with n ratings has floor(0.2 * n) test
  ratings.
"""

import hashlib

import numpy as np
import pandas as pd

SPLITS = ("random", "temporal")
TEST_FRACTION = 0.2


def is_test_random(user_id: str, movie_id: str) -> bool:
  """The `random` rule for one rating."""
  digest = hashlib.sha256(f"{user_id}:{movie_id}".encode()).hexdigest()
  return int(digest[:8], 16) % 5 == 0


def test_mask(ratings: pd.DataFrame, split: str) -> np.ndarray:
  """Boolean array, True where the rating belongs to the test split."""
  if split == "random":
    return np.fromiter(
        (is_test_random(u, m)
         for u, m in zip(ratings.user_id, ratings.movie_id)),
        dtype=bool, count=len(ratings))
  if split == "temporal":
    order = ratings.assign(_mid=ratings.movie_id.astype(int)).sort_values(
        ["user_id", "timestamp", "_mid"])
    position = order.groupby("user_id").cumcount()
    count = order.groupby("user_id").user_id.transform("size")
    n_test = np.floor(TEST_FRACTION * count).astype(int)
    mask = pd.Series(position.values >= (count - n_test).values,
                     index=order.index)
    return mask.reindex(ratings.index).values
  raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
