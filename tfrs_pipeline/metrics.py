"""Evaluation metrics shared by the models, the baselines and serving.

Numpy only. Everything that touches a [queries, candidates] score matrix
works in row chunks so that 97,775 queries x 3,883 movies fit in memory.

Three families:

- Top-k accuracy (`top_k_hits`, `top_k_accuracy`, `TopKAccuracy`): one
  query per test rating, the true item counts as retrieved at k if fewer
  than k candidates score strictly higher than it. Nothing is excluded.
  This is what `tfrs.metrics.FactorizedTopK` computes with score-based
  evaluation (it uses `tf.math.in_top_k`, which counts ties in the true
  item's favour). Keys: `top_{k}_accuracy`.
- Per-user ranking metrics (`top_k_items`, `ranking_metrics`,
  `RankingMetrics`): a user's train items are excluded (score -inf), the
  relevant set is the user's test items, and the metric is averaged over
  users with at least one relevant item.
    recall@k = |top-k & relevant| / |relevant|
    ndcg@k   = DCG@k / IDCG@k, binary gains, DCG@k = sum_{r<=k, hit}
               1 / log2(r + 1), IDCG@k over min(k, |relevant|) hits.
    precision@k = |top-k & relevant| / k
    map@k    = sum_{r<=k, hit} precision@r / min(k, |relevant|)
  Ties in the top-k list are broken by the lower item index. Keys:
  `recall_at_{k}`, `ndcg_at_{k}`, `precision_at_{k}`, `map_at_{k}`.
  `capped_recall=True` divides recall by min(k, |relevant|) instead (the
  "recall" of some papers and reports, which reaches 1 for a perfect
  list); the keys stay the same. `ListMetrics` computes the same four
  over ranked lists; both use `hit_list_metrics`.
- Point-wise metrics: `rmse`, `mae`, `auc`, `log_loss`, and
  `spearman_per_user` (mean per-user Spearman rank correlation between
  predicted and true ratings).
"""

from typing import Dict, Optional, Sequence

import numpy as np

TOP_KS = (1, 5, 10, 50, 100)
RANKING_KS = (10, 20, 100)
# Score-matrix elements processed at once (~16 MB of float32).
CHUNK_ELEMENTS = 1 << 22


def _chunk_rows(num_columns: int) -> int:
  return max(1, CHUNK_ELEMENTS // max(1, num_columns))


# --------------------------------------------------------------------------
# Top-k accuracy (FactorizedTopK semantics).


def top_k_hits(scores: np.ndarray,
               targets: np.ndarray,
               ks: Sequence[int] = TOP_KS,
               rows: Optional[np.ndarray] = None) -> np.ndarray:
  """Counts queries whose true item is in the top k, for each k.

  Args:
    scores: [R, N] scores of all N candidates for R score rows.
    targets: [B] index (0..N-1) of each query's true item.
    ks: cut-offs.
    rows: optional [B] row of `scores` that query b uses (several queries
      can share one row, e.g. all test ratings of one user). Defaults to
      `arange(B)`, i.e. R == B.

  Returns:
    [len(ks)] int64 hit counts: query b is a hit at k iff
    `#{j: scores[rows[b], j] > scores[rows[b], targets[b]]} < k`.
  """
  scores = np.asarray(scores)
  targets = np.asarray(targets, dtype=np.int64)
  if rows is None:
    if len(scores) != len(targets):
      raise ValueError(f"scores has {len(scores)} rows but there are "
                       f"{len(targets)} targets; pass `rows`")
  else:
    rows = np.asarray(rows, dtype=np.int64)
    if rows.shape != targets.shape:
      raise ValueError("rows and targets must have the same shape")
  ks_arr = np.asarray(ks, dtype=np.int64)
  hits = np.zeros(len(ks_arr), dtype=np.int64)
  step = _chunk_rows(scores.shape[1])
  for start in range(0, len(targets), step):
    stop = start + step
    chunk = scores[start:stop] if rows is None else scores[rows[start:stop]]
    true_scores = chunk[np.arange(len(chunk)), targets[start:stop]]
    greater = (chunk > true_scores[:, None]).sum(axis=1)
    hits += (greater[:, None] < ks_arr[None, :]).sum(axis=0)
  return hits


def top_k_accuracy(scores: np.ndarray,
                   targets: np.ndarray,
                   ks: Sequence[int] = TOP_KS,
                   rows: Optional[np.ndarray] = None) -> Dict[str, float]:
  """`{"top_{k}_accuracy": fraction}` for one batch; see `top_k_hits`."""
  metric = TopKAccuracy(ks)
  metric.update(scores, targets, rows)
  return metric.result()


class TopKAccuracy:
  """Accumulates top-k accuracy over batches of queries.

  ```python
  metric = TopKAccuracy()
  for query_emb, target_ids in batches:
    metric.update(query_emb @ item_emb.T, target_ids)
  metric.result()  # {"top_1_accuracy": ..., ..., "top_100_accuracy": ...}
  ```
  """

  def __init__(self, ks: Sequence[int] = TOP_KS):
    self.ks = tuple(int(k) for k in ks)
    self.reset()

  def reset(self) -> None:
    self._hits = np.zeros(len(self.ks), dtype=np.int64)
    self._count = 0

  def update(self, scores: np.ndarray, targets: np.ndarray,
             rows: Optional[np.ndarray] = None) -> None:
    """Adds a batch; arguments as in `top_k_hits`."""
    self._hits += top_k_hits(scores, targets, self.ks, rows)
    self._count += len(targets)

  @property
  def count(self) -> int:
    return self._count

  def result(self) -> Dict[str, float]:
    denominator = max(self._count, 1)
    return {f"top_{k}_accuracy": float(h) / denominator
            for k, h in zip(self.ks, self._hits)}


# --------------------------------------------------------------------------
# Per-user ranking metrics with exclusion.


def interaction_mask(user_index: np.ndarray, item_index: np.ndarray,
                     shape) -> np.ndarray:
  """[U, N] bool matrix, True at each (user_index[i], item_index[i])."""
  mask = np.zeros(shape, dtype=bool)
  mask[np.asarray(user_index, np.int64),
       np.asarray(item_index, np.int64)] = True
  return mask


def top_k_items(scores: np.ndarray, k: int,
                exclude: Optional[np.ndarray] = None) -> np.ndarray:
  """Indices of the k highest-scoring items per row, best first.

  Args:
    scores: [U, N] scores (no NaN).
    k: list length; clipped to N.
    exclude: optional [U, N] bool, True for items that must not be
      returned (their score is set to -inf, so they appear only when a row
      has fewer than k other items).

  Returns:
    [U, min(k, N)] int64 item indices, sorted by descending score; equal
    scores are ordered (and cut at the k boundary) by lower index first.
  """
  scores = np.asarray(scores)
  num_rows, num_items = scores.shape
  k = min(int(k), num_items)
  out = np.empty((num_rows, k), dtype=np.int64)
  if k == 0:
    return out
  step = _chunk_rows(num_items)
  for start in range(0, num_rows, step):
    chunk = scores[start:start + step]
    if exclude is not None:
      chunk = np.where(exclude[start:start + step], -np.inf, chunk)
    # The k-th largest score per row; everything above it is in, ties at
    # it are filled in index order.
    kth = -np.partition(-chunk, k - 1, axis=1)[:, k - 1:k]
    above = chunk > kth
    at = chunk == kth
    need = k - above.sum(axis=1, keepdims=True)
    chosen = above | (at & (np.cumsum(at, axis=1) <= need))
    index = np.nonzero(chosen)[1].reshape(len(chunk), k)  # ascending index
    chosen_scores = np.take_along_axis(chunk, index, axis=1)
    order = np.argsort(-chosen_scores, axis=1, kind="stable")
    out[start:start + len(chunk)] = np.take_along_axis(index, order, axis=1)
  return out


def hit_list_metrics(hits: np.ndarray, num_relevant: np.ndarray,
                     ks: Sequence[int], capped_recall: bool = False
                     ) -> Dict[str, np.ndarray]:
  """Per-user metrics of ranked lists from their hit matrix.

  The one definition behind `RankingMetrics` and `ListMetrics`. At cut-off
  k, with h_r = hits[u, r] (binary gains), |R| = num_relevant[u] and
  n = min(k, |R|):

      recall@k    = sum_{r<=k} h_r / |R|   (/ n with `capped_recall`)
      precision@k = sum_{r<=k} h_r / k
      ndcg@k      = sum_{r<=k} h_r / log2(r + 1)
                    / sum_{r<=n} 1 / log2(r + 1)
      map@k       = sum_{r<=k} h_r * precision@r / n

  Args:
    hits: [U, L] 0/1, 1 where the r-th item of user u's list (best first,
      excluded items already removed) is relevant; lists shorter than k
      count as misses beyond their end.
    num_relevant: [U] relevant items per user, >= 1.
    ks: cut-offs.
    capped_recall: recall over n instead of |R|.

  Returns:
    `{f"{name}_at_{k}": [U] float64}` for name in recall, ndcg,
    precision, map.
  """
  hits = np.asarray(hits, np.float64)
  num_relevant = np.asarray(num_relevant, np.float64)
  length = hits.shape[1]
  positions = np.arange(1, length + 1)
  discount = 1.0 / np.log2(positions + 1)
  ideal = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(2, max(ks) + 2)))]
  cum_hits = np.cumsum(hits, axis=1)
  precision_at = cum_hits / positions
  out = {}
  for k in ks:
    h = hits[:, :k]
    found = h.sum(axis=1)
    n = np.minimum(num_relevant, k)
    out[f"recall_at_{k}"] = found / (n if capped_recall else num_relevant)
    out[f"ndcg_at_{k}"] = (h @ discount[:h.shape[1]]) / ideal[
        n.astype(np.int64)]
    out[f"precision_at_{k}"] = found / k
    out[f"map_at_{k}"] = (h * precision_at[:, :k]).sum(axis=1) / n
  return out


class RankingMetrics:
  """Accumulates per-user recall, NDCG, precision and MAP at each k over
  [U, N] score matrices (see the module docstring; the definitions are
  `hit_list_metrics`'s).

  ```python
  metric = RankingMetrics()
  metric.update(scores, relevant=test_mask, exclude=train_mask)
  metric.result()  # {"recall_at_10": ..., "ndcg_at_10": ...,
                   #  "precision_at_10": ..., "map_at_10": ..., ...}
  ```
  """

  NAMES = ("recall", "ndcg", "precision", "map")

  def __init__(self, ks: Sequence[int] = RANKING_KS,
               capped_recall: bool = False):
    self.ks = tuple(int(k) for k in ks)
    self.capped_recall = capped_recall
    self.reset()

  def reset(self) -> None:
    self._sums = {f"{name}_at_{k}": 0.0 for k in self.ks
                  for name in self.NAMES}
    self._users = 0

  def update(self, scores: np.ndarray, relevant: np.ndarray,
             exclude: Optional[np.ndarray] = None) -> None:
    """Adds a batch of users.

    Args:
      scores: [U, N] scores.
      relevant: [U, N] bool, the relevant (held-out) items of each user.
        Users without a relevant item are skipped.
      exclude: optional [U, N] bool, items never recommended (train items).
    """
    relevant = np.asarray(relevant, dtype=bool)
    keep = relevant.any(axis=1)
    if not keep.any():
      return
    scores, relevant = np.asarray(scores)[keep], relevant[keep]
    if exclude is not None:
      exclude = np.asarray(exclude, dtype=bool)[keep]
    top = top_k_items(scores, max(self.ks), exclude)
    hits = np.take_along_axis(relevant, top, axis=1)
    per_user = hit_list_metrics(hits, relevant.sum(axis=1), self.ks,
                                self.capped_recall)
    for key, values in per_user.items():
      self._sums[key] += float(values.sum())
    self._users += int(keep.sum())

  @property
  def count(self) -> int:
    """Users evaluated so far."""
    return self._users

  def result(self) -> Dict[str, float]:
    denominator = max(self._users, 1)
    return {key: value / denominator for key, value in self._sums.items()}


def ranking_metrics(scores: np.ndarray, relevant: np.ndarray,
                    exclude: Optional[np.ndarray] = None,
                    ks: Sequence[int] = RANKING_KS,
                    capped_recall: bool = False) -> Dict[str, float]:
  """Per-user average recall@k and NDCG@k; see `RankingMetrics`."""
  metric = RankingMetrics(ks, capped_recall)
  step = _chunk_rows(np.shape(scores)[1])
  for start in range(0, len(scores), step):
    part = slice(start, start + step)
    metric.update(scores[part], relevant[part],
                  None if exclude is None else exclude[part])
  return metric.result()


class ListMetrics:
  """Per-user metrics of ranked lists, averaged over users.

  For a ranked list r (best first, already without excluded items) and
  the user's relevant set R: `ndcg_at_k`, `recall_at_k`,
  `precision_at_k` (hits / k) and `map_at_k` (sum_{i <= k, r_i in R}
  precision@i / min(k, |R|)), as `hit_list_metrics` defines them. Users
  with an empty R are skipped.
  """

  NAMES = ("ndcg", "recall", "precision", "map")

  def __init__(self, ks: Sequence[int] = RANKING_KS):
    self.ks = tuple(int(k) for k in ks)
    self._sums = {f"{name}_at_{k}": 0.0 for k in self.ks
                  for name in self.NAMES}
    self._users = 0

  def update(self, ranked: Sequence, relevant) -> None:
    relevant = set(relevant)
    if not relevant:
      return
    hits = np.zeros((1, max(self.ks)))
    top = list(ranked[:max(self.ks)])
    hits[0, :len(top)] = [x in relevant for x in top]
    per_user = hit_list_metrics(hits, [len(relevant)], self.ks)
    for key in self._sums:
      self._sums[key] += float(per_user[key][0])
    self._users += 1

  @property
  def count(self) -> int:
    return self._users

  def result(self) -> Dict[str, float]:
    denominator = max(self._users, 1)
    return {key: value / denominator for key, value in self._sums.items()}


# --------------------------------------------------------------------------
# Point-wise metrics.


def rmse(labels: np.ndarray, predictions: np.ndarray) -> float:
  """Root mean squared error."""
  diff = np.asarray(predictions, np.float64) - np.asarray(labels, np.float64)
  return float(np.sqrt(np.mean(diff * diff)))


def mae(labels: np.ndarray, predictions: np.ndarray) -> float:
  """Mean absolute error."""
  diff = np.asarray(predictions, np.float64) - np.asarray(labels, np.float64)
  return float(np.mean(np.abs(diff)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
  """1-based ranks of `values`, tied values get their mean rank."""
  order = np.argsort(values, kind="stable")
  sorted_values = values[order]
  is_new = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
  group = np.cumsum(is_new) - 1
  starts = np.flatnonzero(is_new)
  ends = np.r_[starts[1:], len(values)]
  mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1..ends
  ranks = np.empty(len(values))
  ranks[order] = mean_rank[group]
  return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """ROC AUC via the Mann-Whitney U statistic; ties count one half.

  Args:
    labels: [B] binary labels (bool or 0/1).
    scores: [B] scores, higher = more likely positive.

  Returns:
    P(score of a random positive > score of a random negative); NaN if
    either class is empty.
  """
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, dtype=np.float64)
  num_pos = int(labels.sum())
  num_neg = len(labels) - num_pos
  if num_pos == 0 or num_neg == 0:
    return float("nan")
  ranks = _average_ranks(scores)
  u = ranks[labels].sum() - num_pos * (num_pos + 1) / 2.0
  return float(u / (num_pos * num_neg))


def spearman_per_user(user_ids: np.ndarray, labels: np.ndarray,
                      predictions: np.ndarray) -> Dict[str, float]:
  """Per-user Spearman rank correlation of predicted and true ratings.

  For each user: the Pearson correlation of the average ranks (ties get
  their mean rank) of the user's true ratings and of the predictions.
  Users with fewer than 2 ratings or with all true ratings equal are
  skipped (undefined); a user whose predictions are all equal counts 0
  (no order predicted).

  Args:
    user_ids: [B] user of each rating (any hashable dtype).
    labels: [B] true ratings.
    predictions: [B] predicted ratings.

  Returns:
    `{"spearman": mean over the evaluated users (NaN if none),
    "spearman_users": their number}`.
  """
  _, group = np.unique(np.asarray(user_ids), return_inverse=True)
  group = group.reshape(-1)
  size = np.bincount(group)
  true_rank = _grouped_average_ranks(group, np.asarray(labels, np.float64))
  pred_rank = _grouped_average_ranks(group,
                                     np.asarray(predictions, np.float64))
  mean_rank = (size[group] + 1) / 2.0  # ranks 1..n average (n + 1) / 2
  x, y = true_rank - mean_rank, pred_rank - mean_rank
  xx = np.bincount(group, x * x, minlength=len(size))
  yy = np.bincount(group, y * y, minlength=len(size))
  xy = np.bincount(group, x * y, minlength=len(size))
  kept = (size >= 2) & (xx > 0)
  rho = np.where(yy[kept] > 0,
                 xy[kept] / np.sqrt(xx[kept] * np.maximum(yy[kept], 1e-300)),
                 0.0)
  return {"spearman": float(rho.mean()) if len(rho) else float("nan"),
          "spearman_users": int(kept.sum())}


def _grouped_average_ranks(group: np.ndarray, values: np.ndarray
                           ) -> np.ndarray:
  """1-based average ranks of `values` within each group id [B]."""
  n = len(values)
  order = np.lexsort((values, group))
  g, v = group[order], values[order]
  new_group = np.r_[True, g[1:] != g[:-1]] if n else np.zeros(0, bool)
  new_tie = new_group | np.r_[True, v[1:] != v[:-1]] if n else new_group
  position = np.arange(n)
  group_start = np.maximum.accumulate(np.where(new_group, position, 0))
  tie = np.cumsum(new_tie) - 1
  starts = np.flatnonzero(new_tie)
  ends = np.r_[starts[1:], n]
  mean_position = (starts + ends - 1) / 2.0  # 0-based mean of the tie
  ranks = np.empty(n)
  ranks[order] = mean_position[tie] - group_start + 1
  return ranks


def log_loss(labels: np.ndarray, probabilities: np.ndarray,
             eps: float = 1e-7) -> float:
  """Mean binary cross-entropy, probabilities clipped to [eps, 1 - eps]."""
  y = np.asarray(labels, dtype=np.float64)
  p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1.0 - eps)
  return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))
