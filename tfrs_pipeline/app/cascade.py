"""The two-stage recommender: candidate sources -> merged candidates ->
a ranker trained on the candidates it ranks.

One code path for the ranker's training lists, the evaluation and serving,
`cascade_graph.CascadeGraph` (one TensorFlow call per batch of requests):

1. every source scores the whole catalogue for each `Request` (a user's
   history with its ratings, and demographics): the two-tower model (the
   exported retrieval model: its ScaNN top-K and the query embedding,
   dotted with `candidates.npz` to score the other sources' candidates),
   EASE over all rated movies, EASE over the movies rated >= 4
   (`ease_liked`, which names the liked movie that brought a candidate)
   and demographic popularity (liked movies by the user's gender, age
   and occupation, additive: `sources.DemographicPopularity`). Each source's top
   `CascadeConfig.<source>` movies (rated movies and `exclude` removed)
   are merged round-robin by rank into at most `list_size` candidates;
   every candidate keeps, per source, its score standardized over the
   catalogue and its rank in that source's list (0 = not retrieved: the
   ranker learns an embedding for it);
2. the ranking export's `rank_lists` scores the candidate lists; the top
   k by its `score` are returned.

This module holds the requests, the numpy sources (`FittedSources`, fitted
and saved at training time), the training lists and the training of the
two-stage parts.

Training lists (`training_lists`): the sources are fitted on `Data.train`
only (the fit part); each user's candidates come from the user's fit-part
history and are labelled with the user's held-out `Data.labels` ratings
(`DataConfig.label_share`), which no source has seen. Users new to every
fit (`DataConfig.cold_users`) give new-user lists as the bench's held-out
users are scored: from demographics only and from their first
`cold_given` ratings, labelled with all their (other) train ratings. At serving, the
cheap sources (EASE, popularity) are refitted on every train rating and
requests carry the user's whole history; the two-tower model is the one
trained on the fit part.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Collection, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

from ranking import train as ranking_train
from ranking.model import RankingConfig
from ranking.train import Lists
from retrieval import sources as sources_lib
from tfrs_pipeline import export_layout, features, pipeline, runs
from tfrs_pipeline.app import cascade_graph
from tfrs_pipeline.app import catalog as catalog_lib

SOURCES = tuple(features.CANDIDATE_SOURCES)
LIKED = 4.0
# A user's attributes (the users table's inputs but the id and history).
DEMOGRAPHICS = tuple(i.name for i in features.INPUTS
                     if i.entity == features.USER
                     and i.name not in ("user_id", "user_history"))


@dataclasses.dataclass
class CascadeConfig:
  """How many candidates each source contributes and how they merge.

  Defaults chosen on the validation split (README, "Two stages").
  """
  two_tower: int = 200
  """Candidates from the two-tower model (ScaNN) per list."""
  ease: int = 200
  """Candidates from item-to-item EASE over all rated movies per list."""
  ease_liked: int = 100
  """Candidates from EASE over the movies rated 4 or 5 per list."""
  popularity: int = 50
  """Candidates from popularity by gender, age and occupation per list."""
  list_size: int = 300
  """Merged candidates per training list (>= 1)."""
  # On the validation split 100, 150, 200 and 300 gave the same NDCG@10
  # (0.1797) behind a ranker trained on lists of 300; 100 ranks 3x faster.
  serve_list_size: int = 100
  """Merged candidates ranked per request at serving and in the bench
  (>= 1)."""
  ease_l2: float = 1000.0
  """Ridge lambda of EASE."""
  ease_liked_l2: float = 500.0
  """Ridge lambda of EASE over liked movies."""
  ease_neighbours: int = 300
  """Neighbours stored per movie by both EASE sources (largest |weight|)."""
  popularity_attributes: tuple = ("user_gender", "bucketized_user_age",
                                  "user_occupation_label")
  """Attributes the demographic popularity regresses liked movies on,
  comma-separated, from user_gender, bucketized_user_age,
  user_occupation_label, user_zip_code."""
  popularity_l2: float = 100.0
  """Ridge lambda of the demographic popularity."""
  # On validation (1, 3, 5, 10) helped first-5 users (+0.006) but cost
  # known (-0.005) and demographics-only users (-0.013): (5,) kept.
  new_user_given: tuple = (5,)
  """Lists of users new to every fit (DataConfig.cold_users): one from
  demographics only and one per number of earliest ratings given here,
  comma-separated (each >= 1)."""
  # Off: on validation, with the lists above, 0.5 lowered known users by
  # 0.003 and demographics-only new users by 0.023.
  cold_share: float = 0.0
  """Share of the known users (seeded) that also give new-user lists
  (demographics only, and their cold_given earliest ratings)."""
  cold_given: int = 5
  """Earliest ratings given in the cold_share users' new-user lists."""
  seed: int = 42
  """Seed of the cold_share draw."""

  def served(self) -> "CascadeConfig":
    """This configuration with `list_size` = `serve_list_size`."""
    return dataclasses.replace(self, list_size=self.serve_list_size)

  def counts(self) -> Dict[str, int]:
    return {s: int(getattr(self, s)) for s in SOURCES}

  def __post_init__(self):
    self.popularity_attributes = tuple(self.popularity_attributes)
    self.new_user_given = tuple(int(n) for n in self.new_user_given)
    if any(n < 1 for n in self.new_user_given):
      raise ValueError(f"new_user_given must be >= 1, got "
                       f"{self.new_user_given}")
    unknown = set(self.popularity_attributes) - set(DEMOGRAPHICS)
    if unknown or not self.popularity_attributes:
      raise ValueError(f"popularity_attributes must be among {DEMOGRAPHICS}, "
                       f"got {self.popularity_attributes}")
    for name, n in self.counts().items():
      if n < 0:
        raise ValueError(f"{name} candidates must be >= 0, got {n}")
    if min(self.list_size, self.serve_list_size) < 1:
      raise ValueError(f"list_size and serve_list_size must be >= 1, got "
                       f"{self.list_size}, {self.serve_list_size}")


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


@dataclasses.dataclass
class FittedSources:
  """The numpy sources (EASE, EASE-liked, demographic popularity)."""
  ease: sources_lib.ItemToItem
  ease_liked: sources_lib.ItemToItem
  popularity: sources_lib.DemographicPopularity

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
    popularity = sources_lib.DemographicPopularity.fit(
        ratings, users, movie_ids, config.popularity_attributes,
        l2=config.popularity_l2, min_rating=LIKED)
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
               sources_lib.DemographicPopularity.load(paths["popularity"]))


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


def training_lists(graph: cascade_graph.CascadeGraph, data: pipeline.Data,
                   batch_users: int = 256, log=print) -> Lists:
  """Candidate lists of every user with held-out labels (module
  docstring), from `graph.candidates`: per-user ranking inputs [U],
  candidates [U, list_size] with movie inputs, source inputs,
  `user_rating` (held-out rating, 0 = none) and `list_mask`."""
  labels = data.label_ratings
  if labels is None or not len(labels):
    raise ValueError("no label ratings: DataConfig.label_share must be > 0 "
                     "to train a ranker on candidate lists")
  users = data.table("fit_users")
  order = lambda ids: sorted(ids, key=lambda u: (len(u), u))
  fitted = set(data.train_ratings.user_id)
  user_ids = order(set(labels.user_id) & fitted)
  requests = user_requests(data.train_ratings, users, user_ids)
  owners = [r.user_id for r in requests]
  cold = cold_requests(data.train_ratings, requests, graph.config)
  new_users = order(set(labels.user_id) - fitted)
  cold += new_user_requests(labels, users, new_users, graph.config)
  log(f"[lists] {len(requests)} users, + {len(cold)} new-user lists "
      f"({len(new_users)} users new to every fit)")
  owners += [u for u, _ in cold]
  requests += [r for _, r in cold]
  label = pd.Series(labels.user_rating.to_numpy(np.float32), index=(
      labels.user_id.astype(str) + "|" + labels.movie_id.astype(str)))
  width = min(graph.config.list_size, graph.n)
  parts = []
  start = time.time()
  for s in range(0, len(requests), batch_users):
    chunk = requests[s:s + batch_users]
    out = {k: v.numpy() for k, v in
           graph.candidates(graph.inputs(chunk)).items()}
    index = out.pop("index")
    padded = {"movie_id": np.where(index >= 0, graph.catalogue_ids[
        np.maximum(index, 0)], "").astype(object)}
    padded.update(out)
    keys = (np.asarray(owners[s:s + batch_users], object)[:, None] + "|"
            + padded["movie_id"])
    padded[features.LABEL] = label.reindex(keys.ravel()).fillna(
        0.0).to_numpy(np.float32).reshape(index.shape)
    parts.append(_pad_width(padded, width))
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
  user_columns = cascade_graph.user_values(requests, user_inputs)
  return Lists(user_columns, candidates)


def _pad_width(columns: Dict[str, np.ndarray], width: int
               ) -> Dict[str, np.ndarray]:
  """[B, L] columns cut or padded (movie_id "", others 0) to [B, width]."""
  out = {}
  for k, v in columns.items():
    if v.shape[1] >= width:
      out[k] = v[:, :width]
    else:
      fill = "" if v.dtype == object else 0
      pad = np.full((v.shape[0], width - v.shape[1]), fill, dtype=v.dtype)
      out[k] = np.concatenate([v, pad], axis=1)
  return out


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


def new_user_requests(labels: pd.DataFrame, users: Mapping[str, np.ndarray],
                      user_ids: Sequence[str], config: CascadeConfig
                      ) -> List[tuple]:
  """(owner, request) pairs of users new to every fit
  (`DataConfig.cold_users`), labelled with all their train ratings as
  the bench's held-out users are: demographics only, and for each n of
  `new_user_given` their n earliest ratings (newest first; those movies
  excluded)."""
  out = [(r.user_id, dataclasses.replace(r, user_id=""))
         for r in user_requests(labels.iloc[:0], users, user_ids)]
  ordered = (labels[labels.user_id.isin(set(user_ids))]
             .sort_values(["user_id", "timestamp", "movie_id"]))
  for n in config.new_user_given:
    first = ordered.groupby("user_id").head(int(n))
    out += [(r.user_id, dataclasses.replace(r, user_id=""))
            for r in user_requests(first, users, user_ids)]
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

SOURCES_DIR = "sources"  # in a version of RUN/export (`export_layout`)


def train_sources(data: pipeline.Data, data_config: pipeline.DataConfig,
                  run_dir: str, config: CascadeConfig, log=print
                  ) -> Dict[str, object]:
  """Fits the served sources on every train rating the data holds (fit
  part + labels) into a new version V of RUN/export (one rename,
  `export_layout`): V/sources/ with `cascade.json` and the catalogue
  serving reads (`catalog.npz`: movies, users, every rating of the
  dataset, see `catalog.save_catalog`)."""
  run = runs.RunDir(run_dir)
  run.write_config(cascade=config, data=data_config)
  start = time.time()
  users = pd.DataFrame({k: v for k, v in data.table("users").items()
                        if k != "user_history"})
  fitted = FittedSources.fit(data.seen_ratings, users,
                             np.asarray(data.table("movies")["movie_id"]),
                             config)
  table, is_test = catalog_lib.build_catalog(data_config, log=log)
  with export_layout.new_version(run.export, "sources", log=log) as v:
    tmp = os.path.join(v.tmp, SOURCES_DIR)
    fitted.save(tmp)
    write_config(tmp, config)
    catalog_lib.save_catalog(os.path.join(tmp, catalog_lib.CATALOG_FILE),
                             table, is_test)
  directory = v.final(tmp)
  metrics = {"seconds": round(time.time() - start, 2),
             "ratings": int(len(data.seen_ratings)), "export": directory,
             "version": v.number}
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
  lists, trains and exports the ranker: a new version V of RUN/export
  holding ranking/ and cascade.json. `retrieval_export`: a version of
  the retrieval run's export (`export_layout.locate(RUN)`)."""
  run = runs.RunDir(run_dir)
  run.write_config(ranking=config, cascade=cascade_config)
  with runs.Timer() as lists_timer:
    fitted = fit_sources_for_lists(data, cascade_config)
    graph = cascade_graph.CascadeGraph(fitted, retrieval_export, {},
                                       cascade_config)
    lists = training_lists(graph, data, log=log)
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
  path = ranking_train.export_lists_model(
      model, list_context(data), run, log,
      also=lambda directory: write_config(directory, cascade_config))
  metrics = {"validation": validation, "lists_seconds": lists_timer.seconds,
             "train_seconds": fit_timer.seconds, "export_dir": path,
             "model": config.model,
             "num_lists": lists.size,
             "labels_in_lists": int((lists.candidates[features.LABEL] > 0
                                     ).sum())}
  run.write_metrics(metrics)
  return metrics
