"""The two-stage recommender: candidate sources -> merged candidates ->
a ranker trained on the candidates it ranks.

One code path for the ranker's training lists, the evaluation and serving:

1. `CandidateSources.candidates(requests)`: every source scores the whole
   catalogue for each request (a user's history with its ratings, and
   demographics): the two-tower model (the exported retrieval model: its
   ScaNN top-K and the query embedding, dotted with `candidates.npz` to
   score the other sources' candidates), EASE over all rated movies, EASE
   over the movies rated >= 4 (`ease_liked`, which names the liked movie
   that brought a candidate) and popularity in the user's (gender, age)
   segment. Each source's top `CascadeConfig.<source>` movies (rated
   movies and `exclude` removed) are merged round-robin by rank into at
   most `list_size` candidates; every candidate keeps, per source, its
   score standardized over the catalogue and its rank in that source's
   list (0 = not retrieved: the ranker learns an embedding for it).
2. `Ranker` scores a batch of candidate lists in one call of the ranking
   export's `rank_lists` signature; the candidates are ordered by its
   `score`.

Training lists (`training_lists`): the sources are fitted on `Data.train`
only (the fit part); each user's candidates come from the user's fit-part
history and are labelled with the user's held-out `Data.labels` ratings
(`DataConfig.label_share`), which no source has seen. At serving, the
cheap sources (EASE, popularity) are refitted on every train rating and
requests carry the user's whole history; the two-tower model is the one
trained on the fit part.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Collection, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import scann  # noqa: F401  (registers the ScaNN ops before loading)
import tensorflow as tf

from ranking import train as ranking_train
from ranking.model import LIST_MASK, RankingConfig
from ranking.train import Lists
from retrieval import sources as sources_lib
from tfrs_pipeline import export, features, pipeline, runs
from tfrs_pipeline.app import catalog as catalog_lib

SOURCES = tuple(features.CANDIDATE_SOURCES)
LIKED = 4.0
DEMOGRAPHICS = ("user_gender", "bucketized_user_age",
                "user_occupation_label", "user_zip_code")


@dataclasses.dataclass
class CascadeConfig:
  """How many candidates each source contributes and how they merge.

  Defaults chosen on the validation split (README, "Two stages").
  """
  two_tower: int = 200
  ease: int = 200
  ease_liked: int = 100
  popularity: int = 50
  list_size: int = 300  # merged candidates ranked per request
  ease_l2: float = 1000.0
  ease_liked_l2: float = 500.0
  ease_neighbours: int = 300  # stored neighbours per movie (largest |B|)
  # The segment's counts + shrinkage x its size x the overall shares.
  popularity_shrinkage: float = 0.1
  # Training lists of new users: for this share of the users (seeded),
  # also a list from demographics only and one from their `cold_given`
  # earliest ratings (their other fit-part movies excluded), labelled with
  # the same held-out ratings, as a new user's request looks at serving.
  cold_share: float = 0.5
  cold_given: int = 5
  seed: int = 42

  def counts(self) -> Dict[str, int]:
    return {s: int(getattr(self, s)) for s in SOURCES}

  def __post_init__(self):
    for name, n in self.counts().items():
      if n < 0:
        raise ValueError(f"{name} candidates must be >= 0, got {n}")
    if self.list_size < 1:
      raise ValueError(f"list_size must be >= 1, got {self.list_size}")


@dataclasses.dataclass
class Request:
  """What the sources know of one user.

  history: rated movie ids, most recent first; ratings: aligned, None =
  unknown (counted as liked); demographics: inputs of `DEMOGRAPHICS`
  (missing = unknown); exclude: more movie ids never to return (e.g. all
  of a user's ratings at serving).
  """
  user_id: str = ""
  history: Sequence[str] = ()
  ratings: Sequence[Optional[float]] = ()
  demographics: Mapping[str, str] = dataclasses.field(default_factory=dict)
  exclude: Collection[str] = ()
  timestamp: int = 0

  def liked(self) -> List[str]:
    ratings = list(self.ratings) or [None] * len(self.history)
    return [m for m, r in zip(self.history, ratings)
            if r is None or r >= LIKED]


@dataclasses.dataclass
class Candidates:
  """Merged candidates of one request: movie ids [C], the source inputs
  of each ({`<source>_score`, `<source>_rank`: [C]}), the sources that
  retrieved each, and the liked (else rated) movie that brought it from
  an item-to-item source (None otherwise)."""
  movie_ids: np.ndarray
  inputs: Dict[str, np.ndarray]
  sources: List[List[str]]
  because: List[Optional[str]]


# --------------------------------------------------------------------------
# Sources.


class TwoTower:
  """The exported retrieval model as a source: ScaNN top-K for the list,
  the query embedding against `candidates.npz` for every movie's score."""

  def __init__(self, export_dir: str, catalogue: np.ndarray):
    self.model = tf.saved_model.load(os.path.join(export_dir, "retrieval"))
    self.fn = self.model.signatures["serve_features"]
    with np.load(os.path.join(export_dir, "candidates.npz")) as f:
      ids, emb = f["movie_ids"].astype(str), f["embeddings"]
    row = pd.Index(ids).get_indexer(catalogue)
    self.embeddings = np.zeros((len(catalogue), emb.shape[1]), np.float32)
    self.embeddings[row >= 0] = emb[row[row >= 0]]
    self.position = {m: i for i, m in enumerate(catalogue)}
    self.query_inputs = [i.name for i in features.inputs_for(features.QUERY)]

  def __call__(self, requests: Sequence[Request]):
    """(scores [B, N], ScaNN's top-K catalogue indices [B, K] best
    first)."""
    values = _user_values(requests, self.query_inputs)
    out = export.call_signature(self.fn, values, len(requests))
    scores = out["embedding"] @ self.embeddings.T
    ids = out["movie_ids"].astype(str)
    top = np.vectorize(lambda m: self.position.get(m, -1),
                       otypes=[np.int64])(ids) if ids.size else (
                           np.zeros((len(requests), 0), np.int64))
    return scores.astype(np.float32), top


def _user_values(requests: Sequence[Request], names: Sequence[str]
                 ) -> Dict[str, np.ndarray]:
  """Per-user input columns [B] of `names` from requests (unknown:
  the input's default)."""
  out = {}
  for name in names:
    spec = features.INPUT_BY_NAME[name]
    if name == "user_id":
      col = [r.user_id for r in requests]
    elif name == "user_history":
      col = [features.GENRE_SEPARATOR.join(r.history) for r in requests]
    elif name == "timestamp":
      col = [r.timestamp for r in requests]
    else:
      col = [r.demographics.get(name, spec.default) for r in requests]
    out[name] = np.asarray(col, dtype=object if spec.dtype == tf.string
                           else spec.dtype.as_numpy_dtype)
  return out


@dataclasses.dataclass
class FittedSources:
  """The numpy sources (EASE, EASE-liked, segment popularity)."""
  ease: sources_lib.ItemToItem
  ease_liked: sources_lib.ItemToItem
  popularity: sources_lib.Popularity

  FILES = ("ease", "ease_liked", "popularity")

  @classmethod
  def fit(cls, ratings: pd.DataFrame, users: pd.DataFrame,
          movie_ids: np.ndarray, config: CascadeConfig) -> "FittedSources":
    ease = sources_lib.ItemToItem.fit(
        ratings, movie_ids, config.ease_l2, config.ease_neighbours,
        name="ease", positive_only=False)
    liked = sources_lib.ItemToItem.fit(
        ratings, movie_ids, config.ease_liked_l2, config.ease_neighbours,
        min_rating=LIKED, name="ease_liked", positive_only=False)
    popularity = sources_lib.Popularity.fit(
        ratings, users, movie_ids, shrinkage=config.popularity_shrinkage)
    return cls(ease, liked, popularity)

  def save(self, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for name in self.FILES:
      getattr(self, name).save(os.path.join(directory, f"{name}.npz"))

  @classmethod
  def load(cls, directory: str) -> "FittedSources":
    paths = {n: os.path.join(directory, f"{n}.npz") for n in cls.FILES}
    missing = [p for p in paths.values() if not os.path.exists(p)]
    if missing:
      raise FileNotFoundError(
          f"no {missing[0]}: train the sources first (make train)")
    return cls(sources_lib.ItemToItem.load(paths["ease"]),
               sources_lib.ItemToItem.load(paths["ease_liked"]),
               sources_lib.Popularity.load(paths["popularity"]))


class CandidateSources:
  """Scores, merges and describes the candidates of a batch of requests.

  Args:
    fitted: EASE, EASE-liked and popularity over the same catalogue.
    two_tower: the retrieval export (None: the source is left out).
    config: candidates per source and list size.
  """

  def __init__(self, fitted: FittedSources, two_tower: Optional[TwoTower],
               config: CascadeConfig):
    self.fitted, self.two_tower, self.config = fitted, two_tower, config
    self.catalogue = fitted.ease.movie_ids
    self.position = {m: i for i, m in enumerate(self.catalogue)}

  def indices(self, ids: Sequence[str]) -> List[int]:
    return [self.position[m] for m in ids if m in self.position]

  def scores(self, requests: Sequence[Request]):
    """{source: scores [B, N]}, {source: top indices [B, n_s]}, the
    excluded indices per request."""
    counts = self.config.counts()
    exclude = [sorted(set(self.indices(r.history))
                      | set(self.indices(r.exclude))) for r in requests]
    scores, tops = {}, {}
    if self.two_tower is not None and counts["two_tower"]:
      # ScaNN returns K; ask for enough to still have n after exclusion.
      s, top = self.two_tower(requests)
      scores["two_tower"] = s
      n = counts["two_tower"]
      tops["two_tower"] = []
      for b, (row, ex) in enumerate(zip(top, exclude)):
        ex = set(ex)
        kept = [t for t in row if t >= 0 and t not in ex][:n]
        if len(kept) < n:  # K ran out behind the excluded movies: exact
          more, _ = sources_lib.top_n(s[b:b + 1], n, [sorted(ex | set(kept))])
          kept += [t for t in more[0] if t >= 0][:n - len(kept)]
        tops["two_tower"].append(kept)
    f = self.fitted
    scores["ease"] = f.ease.score([r.history for r in requests],
                                  ignore_unknown=True)
    scores["ease_liked"] = f.ease_liked.score(
        [r.liked() for r in requests], ignore_unknown=True)
    scores["popularity"] = f.popularity.score(
        [r.demographics.get("user_gender") for r in requests],
        [r.demographics.get("bucketized_user_age") for r in requests])
    # An item-to-item source retrieves nothing without (liked) history.
    has = {"ease": [bool(r.history) for r in requests],
           "ease_liked": [bool(r.liked()) for r in requests],
           "popularity": [True] * len(requests)}
    for name in ("ease", "ease_liked", "popularity"):
      if counts[name]:
        idx, _ = sources_lib.top_n(scores[name], counts[name], exclude)
        tops[name] = [[t for t in row if t >= 0] if ok else []
                      for row, ok in zip(idx, has[name])]
    return scores, tops, exclude

  def candidates(self, requests: Sequence[Request], explain: bool = True
                 ) -> List[Candidates]:
    """The merged candidates of each request (module docstring); without
    `explain`, `because` is left None (see `because`: the recommender
    explains only the movies it returns)."""
    scores, tops, exclude = self.scores(requests)
    z = {s: sources_lib.standardize(v, exclude) for s, v in scores.items()}
    out = []
    for b, request in enumerate(requests):
      lists = [(s, tops[s][b]) for s in SOURCES if s in tops]
      merged = _round_robin([row for _, row in lists],
                            self.config.list_size)
      idx = np.asarray(merged, np.int64)
      inputs, retrieved = {}, [[] for _ in merged]
      for s in SOURCES:
        inputs[f"{s}_score"] = (z[s][b, idx] if s in z
                                else np.zeros(len(idx), np.float32))
        rank = np.zeros(len(self.catalogue), np.float32)
        row = dict(lists).get(s, [])
        rank[row] = np.arange(1, len(row) + 1)
        inputs[f"{s}_rank"] = rank[idx]
        for j in np.flatnonzero(inputs[f"{s}_rank"] > 0):
          retrieved[j].append(s)
      out.append(Candidates(
          self.catalogue[idx], inputs, retrieved,
          self.because(request, idx, retrieved) if explain
          else [None] * len(idx)))
    return out

  def because(self, request: Request, idx: np.ndarray,
              retrieved: Sequence[Sequence[str]]) -> List[Optional[str]]:
    """The liked (else rated) history movie that brings each candidate
    (catalogue indices `idx`, with the sources that retrieved it)
    retrieved by an item-to-item source, else None."""
    idx = np.asarray(idx, np.int64)
    item = [j for j, s in enumerate(retrieved)
            if "ease_liked" in s or "ease" in s]
    out: List[Optional[str]] = [None] * len(idx)
    if not item or not request.history:
      return out
    liked = [m for m in request.liked() if m in self.position]
    history = [m for m in request.history if m in self.position]
    first = (self.fitted.ease_liked.because(liked, idx[item]) if liked
             else [None] * len(item))
    second = self.fitted.ease.because(history, idx[item])
    for j, a, b in zip(item, first, second):
      out[j] = a or b
    return out


def _round_robin(rows: Sequence[Sequence[int]], size: int) -> List[int]:
  """Merges ranked lists by rank (first of each, then second, ...),
  dropping repeats, up to `size`."""
  seen, out = set(), []
  for r in range(max((len(x) for x in rows), default=0)):
    for row in rows:
      if r < len(row) and row[r] not in seen:
        seen.add(row[r])
        out.append(row[r])
        if len(out) == size:
          return out
  return out


# --------------------------------------------------------------------------
# Ranker.


class Ranker:
  """The ranking export's `rank_lists` over padded candidate lists."""

  def __init__(self, export_dir: str):
    self.model = tf.saved_model.load(export_dir)
    if "rank_lists" not in self.model.signatures:
      raise ValueError(f"ranking model {export_dir} has no rank_lists "
                       "signature: retrain it (make train)")
    self.fn = self.model.signatures["rank_lists"]
    self.user_inputs = [n for n, s in
                        self.fn.structured_input_signature[1].items()
                        if s.shape.rank == 1]
    self.default_timestamp = int(self.model.default_timestamp.numpy())

  def __call__(self, requests: Sequence[Request],
               candidates: Sequence[Candidates]) -> List[Dict[str,
                                                              np.ndarray]]:
    """Outputs per request: {name: [C]} (score, rating, ...)."""
    if not requests:
      return []
    width = max(max(len(c.movie_ids) for c in candidates), 1)
    stamped = [r if r.timestamp else dataclasses.replace(
        r, timestamp=self.default_timestamp) for r in requests]
    values = _user_values(stamped, self.user_inputs)
    values.update(pad_candidates(candidates, width))
    values.pop(LIST_MASK, None)
    out = export.call_signature(self.fn, values, len(requests))
    return [{k: v[b, :len(c.movie_ids)] for k, v in out.items()}
            for b, c in enumerate(candidates)]


def pad_candidates(candidates: Sequence[Candidates], width: int
                   ) -> Dict[str, np.ndarray]:
  """movie_id, source inputs and `list_mask` as [B, width] arrays."""
  b = len(candidates)
  out = {"movie_id": np.full((b, width), "", dtype=object),
         LIST_MASK: np.zeros((b, width), np.float32)}
  for name in candidates[0].inputs if candidates else ():
    out[name] = np.zeros((b, width), np.float32)
  for i, c in enumerate(candidates):
    n = min(len(c.movie_ids), width)
    out["movie_id"][i, :n] = c.movie_ids[:n]
    out[LIST_MASK][i, :n] = 1.0
    for name, v in c.inputs.items():
      out[name][i, :n] = v[:n]
  return out


# --------------------------------------------------------------------------
# Training lists.


def user_requests(ratings: pd.DataFrame, users: Mapping[str, np.ndarray],
                  user_ids: Sequence[str],
                  exclude: Optional[pd.DataFrame] = None) -> List[Request]:
  """Requests of known users: their `ratings` (user_id, movie_id,
  timestamp, user_rating) newest first as history, demographics from the
  users table, the latest rating's time; `exclude` adds more movies."""
  ordered = ratings.sort_values(["user_id", "timestamp", "movie_id"],
                                ascending=[True, False, False])
  by_user = {u: (g.movie_id.to_numpy().astype(str),
                 g.user_rating.to_numpy(np.float64),
                 int(g.timestamp.max()))
             for u, g in ordered.groupby("user_id", sort=False)}
  extra = ({u: set(g.movie_id.astype(str)) for u, g in
            exclude.groupby("user_id")} if exclude is not None else {})
  row = {u: i for i, u in enumerate(np.asarray(users["user_id"]).astype(str))}
  out = []
  for u in user_ids:
    history, r, ts = by_user.get(u, ((), (), 0))
    i = row.get(u)
    demo = ({k: str(users[k][i]) for k in DEMOGRAPHICS if k in users}
            if i is not None else {})
    out.append(Request(u, list(history), list(r), demo,
                       extra.get(u, ()), ts))
  return out


def training_lists(sources: CandidateSources, data: pipeline.Data,
                   batch_users: int = 256, log=print) -> Lists:
  """Candidate lists of every user with held-out labels (module
  docstring): per-user ranking inputs [U], candidates [U, list_size]
  with movie inputs, source inputs, `user_rating` (held-out rating, 0 =
  none) and `list_mask`."""
  labels = data.label_ratings
  if labels is None or not len(labels):
    raise ValueError("no label ratings: DataConfig.label_share must be > 0 "
                     "to train a ranker on candidate lists")
  users = data.table("fit_users")
  user_ids = sorted(set(labels.user_id) & set(data.train_ratings.user_id),
                    key=lambda u: (len(u), u))
  requests = user_requests(data.train_ratings, users, user_ids)
  owners = [r.user_id for r in requests]
  cold = cold_requests(data.train_ratings, requests, sources.config)
  log(f"[lists] {len(requests)} users, + {len(cold)} new-user lists")
  owners += [u for u, _ in cold]
  requests += [r for _, r in cold]
  label = {(u, m): float(r) for u, m, r in zip(
      labels.user_id, labels.movie_id, labels.user_rating)}
  width = sources.config.list_size
  parts, retrieved, total = [], 0, 0
  start = time.time()
  for s in range(0, len(requests), batch_users):
    chunk = requests[s:s + batch_users]
    cands = sources.candidates(chunk)
    padded = pad_candidates(cands, width)
    padded[features.LABEL] = np.zeros((len(chunk), width), np.float32)
    for i, (u, c) in enumerate(zip(owners[s:s + batch_users], cands)):
      y = [label.get((u, m), 0.0) for m in c.movie_ids]
      padded[features.LABEL][i, :len(y)] = y
    parts.append(padded)
    log(f"[lists] {min(s + batch_users, len(requests))}/{len(requests)} "
        f"users ({time.time() - start:.0f}s)")
  candidates = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  retrieved = int((candidates[features.LABEL][:len(user_ids)] > 0).sum())
  total = int(labels.user_id.isin(user_ids).sum())
  log(f"[lists] {retrieved} of {total} held-out ratings are among the "
      f"candidates ({retrieved / max(total, 1):.1%})")
  candidates.update(pipeline.join_movies(data.table("movies"),
                                         candidates["movie_id"]))
  user_inputs = [i.name for i in features.INPUTS
                 if i.entity in (features.USER, features.CONTEXT)]
  user_columns = _user_values(requests, user_inputs)
  return Lists(user_columns, candidates)


def cold_requests(ratings: pd.DataFrame, requests: Sequence[Request],
                  config: CascadeConfig) -> List[tuple]:
  """(owner user id, new-user request) pairs for `config.cold_share` of
  `requests`: demographics only, and the owner's `cold_given` earliest
  ratings (newest first) with the rest of the owner's movies excluded."""
  rng = np.random.default_rng(config.seed)
  by_user = {u: g.sort_values(["timestamp", "movie_id"])
             for u, g in ratings.groupby("user_id")}
  out = []
  for r in requests:
    if rng.random() >= config.cold_share:
      continue
    seen = set(r.history)
    out.append((r.user_id, Request("", (), (), r.demographics, seen,
                                   r.timestamp)))
    first = by_user[r.user_id].iloc[:config.cold_given]
    history = list(first.movie_id.astype(str))[::-1]
    out.append((r.user_id, Request(
        "", history, list(first.user_rating.astype(float))[::-1],
        r.demographics, seen - set(history), int(first.timestamp.max()))))
  return out


def fit_sources_for_lists(data: pipeline.Data, config: CascadeConfig
                          ) -> FittedSources:
  """EASE, EASE-liked and popularity fitted on the fit part only."""
  users = pd.DataFrame({k: v for k, v in data.table("users").items()
                        if k != "user_history"})
  return FittedSources.fit(data.train_ratings, users,
                           np.asarray(data.table("movies")["movie_id"]),
                           config)


def write_config(directory: str, config: CascadeConfig) -> str:
  return runs.write_json(os.path.join(directory, "cascade.json"),
                         dataclasses.asdict(config))


def read_config(directory: str) -> CascadeConfig:
  path = os.path.join(directory, "cascade.json")
  if not os.path.exists(path):
    return CascadeConfig()
  with open(path) as f:
    return CascadeConfig(**json.load(f))


# --------------------------------------------------------------------------
# Training the two-stage parts (after the retrieval run).

SOURCES_EXPORT = os.path.join("export", "sources")


def train_sources(data: pipeline.Data, data_config: pipeline.DataConfig,
                  run_dir: str, config: CascadeConfig, log=print
                  ) -> Dict[str, object]:
  """Fits the served sources on every train rating the data holds (fit
  part + labels) into RUN/export/sources/ with `cascade.json` and the
  catalogue serving reads (`catalog.npz`: movies, users, every rating of
  the dataset, see `catalog.save_catalog`)."""
  run = runs.RunDir(run_dir)
  run.write_config(cascade=config, data=data_config)
  start = time.time()
  users = pd.DataFrame({k: v for k, v in data.table("users").items()
                        if k != "user_history"})
  fitted = FittedSources.fit(data.seen_ratings, users,
                             np.asarray(data.table("movies")["movie_id"]),
                             config)
  directory = os.path.join(run.path, SOURCES_EXPORT)
  tmp = f"{directory}.tmp-{os.getpid()}"
  fitted.save(tmp)
  write_config(tmp, config)
  table, is_test = catalog_lib.build_catalog(data_config, log=log)
  catalog_lib.save_catalog(os.path.join(tmp, catalog_lib.CATALOG_FILE),
                           table, is_test)
  if os.path.exists(directory):
    old = f"{directory}.old-{os.getpid()}"
    os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(tmp, directory)
  metrics = {"seconds": round(time.time() - start, 2),
             "ratings": int(len(data.seen_ratings)), "export": directory}
  run.write_metrics(metrics)
  log(f"[sources] fitted EASE, EASE-liked, popularity on "
      f"{len(data.seen_ratings)} ratings, wrote the catalogue, in "
      f"{metrics['seconds']:.0f}s -> {directory}")
  return metrics


def list_context(data: pipeline.Data) -> "ranking_train.ListContext":
  """Vocabularies, rating mean, counts and tables of a list ranker, all
  from the fit part (tables: the users with all their train movies)."""
  train = data.train_ratings
  uids, ucounts = np.unique(train.user_id.astype(str), return_counts=True)
  mids, mcounts = np.unique(train.movie_id.astype(str), return_counts=True)
  return ranking_train.ListContext(
      vocabularies=data.vocabularies,
      global_mean=float(train.user_rating.mean()),
      user_counts=dict(zip(uids.tolist(), ucounts.tolist())),
      movie_counts=dict(zip(mids.tolist(), mcounts.tolist())),
      movies=data.table("movies"), users=data.table("users"),
      latest_timestamp=int(data.seen_ratings.timestamp.max()))


def train_ranker(data: pipeline.Data, retrieval_export: str, run_dir: str,
                 config: RankingConfig, cascade_config: CascadeConfig,
                 log=print) -> Dict[str, object]:
  """Fits the sources on the fit part, builds the labelled candidate
  lists, trains and exports the ranker into RUN/export/ranking."""
  run = runs.RunDir(run_dir)
  run.write_config(ranking=config, cascade=cascade_config)
  with runs.Timer() as lists_timer:
    fitted = fit_sources_for_lists(data, cascade_config)
    two_tower = TwoTower(retrieval_export, fitted.ease.movie_ids)
    sources = CandidateSources(fitted, two_tower, cascade_config)
    lists = training_lists(sources, data, log=log)
  ratings = None
  if config.rating_lists:
    keep = ({i.name for i in ranking_train.ranking_inputs(config)}
            | {features.LABEL})
    ratings = ranking_train.rating_lists(
        {k: v for k, v in ranking_train.to_numpy(data.train).items()
         if k in keep})
  with runs.Timer() as fit_timer:
    model, validation = ranking_train.fit_lists(
        config, lists, list_context(data), run, log, ratings=ratings)
  log(f"[ranking] validation (best epoch {validation['best_epoch']}): "
      f"NDCG@10 {validation.get('ndcg_at_10', float('nan')):.4f}")
  path = ranking_train.export_lists_model(model, list_context(data), run,
                                          log)
  write_config(os.path.join(run.path, "export"), cascade_config)
  metrics = {"validation": validation, "lists_seconds": lists_timer.seconds,
             "train_seconds": fit_timer.seconds, "export_dir": path,
             "model": config.model,
             "num_lists": lists.size,
             "labels_in_lists": int((lists.candidates[features.LABEL] > 0
                                     ).sum())}
  run.write_metrics(metrics)
  return metrics
