"""The two-stage cascade on the generated data: the carving of the train
split, candidate sources and their merge, leak-free training lists, and
the list ranker through its export."""

import numpy as np
import pandas as pd
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

from test_recommend import small_runs  # noqa: F401  pylint: disable=unused-import
from tfrs_pipeline import pipeline
from tfrs_pipeline.app import cascade, cascade_eval


def _quiet(*_):
  pass


@pytest.fixture(scope="module")
def carved(fake_raw, fake_data_dir):
  config = pipeline.DataConfig(raw_data=fake_raw["path"],
                               data_dir=fake_data_dir, label_share=0.3,
                               holdout_users=0.2, history_length=50)
  return pipeline.load_data(config, log=_quiet)


def _pairs(df):
  return set(zip(df.user_id.astype(str), df.movie_id.astype(str)))


def test_carving_is_disjoint_and_complete(fake_data, carved):
  # fake_data: default carving (label_share 0.2, no held-out users).
  train, labels = _pairs(carved.train_ratings), _pairs(carved.label_ratings)
  assert train and labels and not train & labels
  assert _pairs(carved.seen_ratings) == train | labels
  held = set(carved.holdout.user_id.astype(str))
  assert held and not held & {u for u, _ in train | labels}
  test = pipeline.ratings_frame(carved.test)
  assert not held & set(test.user_id.astype(str))
  # Every rating of the default data is somewhere in the carved one.
  everything = (_pairs(fake_data.seen_ratings)
                | _pairs(pipeline.ratings_frame(fake_data.test)))
  assert everything == (train | labels | _pairs(test)
                        | _pairs(carved.holdout))
  # Label share is roughly what was asked (hash rule, 30%).
  share = len(labels) / len(train | labels)
  assert 0.2 < share < 0.4


def test_histories_hold_no_labels(carved):
  labels = _pairs(carved.label_ratings)
  fit_users = carved.table("fit_users")
  for u, h in zip(fit_users["user_id"], fit_users["user_history"]):
    assert not {(u, m) for m in h.split("|") if m} & labels
  for x in carved.train.take(300):
    u = x["user_id"].numpy().decode()
    h = x["user_history"].numpy().decode().split("|")
    assert not {(u, m) for m in h if m} & labels
  # The served users table holds all train movies, labels included.
  users = carved.table("users")
  served = {(u, m) for u, h in zip(users["user_id"], users["user_history"])
            for m in h.split("|") if m}
  assert labels <= served


def test_validation_replaces_test(fake_raw, fake_data_dir, fake_data):
  config = pipeline.DataConfig(raw_data=fake_raw["path"],
                               data_dir=fake_data_dir, validation_share=0.2)
  data = pipeline.load_data(config, log=_quiet)
  valid = _pairs(pipeline.ratings_frame(data.test))
  real_test = _pairs(pipeline.ratings_frame(fake_data.test))
  assert valid and not valid & real_test  # the test split is never read
  assert valid <= _pairs(fake_data.seen_ratings)
  assert not valid & _pairs(data.seen_ratings)


def test_round_robin():
  assert cascade._round_robin([[1, 2, 3], [2, 5], [7]], 10) == [1, 2, 7, 5, 3]
  assert cascade._round_robin([[1, 2, 3], [4, 5]], 3) == [1, 4, 2]


@pytest.fixture(scope="module")
def fitted(fake_data):
  return cascade.fit_sources_for_lists(
      fake_data, cascade.CascadeConfig(ease_neighbours=50))


def test_candidates_exclude_history_and_carry_ranks(fitted):
  config = cascade.CascadeConfig(ease=10, ease_liked=5, popularity=5,
                                 list_size=15)
  src = cascade.CandidateSources(fitted, None, config)
  movies = list(src.catalogue)
  request = cascade.Request(history=movies[:6], ratings=[5, 4, 1, 2, 5, 3],
                            demographics={"user_gender": "F",
                                          "bucketized_user_age": "25"},
                            exclude=movies[6:8])
  cand, = src.candidates([request])
  assert len(cand.movie_ids) == 15 and len(set(cand.movie_ids)) == 15
  assert not set(cand.movie_ids) & set(movies[:8])
  for j, names in enumerate(cand.sources):
    assert names, "every candidate was retrieved by some source"
    for s in cascade.SOURCES:
      assert (cand.inputs[f"{s}_rank"][j] > 0) == (s in names)
  # The two-tower source is absent here: rank 0 (not retrieved) for all.
  assert not cand.inputs["two_tower_rank"].any()
  # Ranks are positions in each source's own list.
  scores, tops, _ = src.scores([request])
  first = src.catalogue[tops["ease"][0][0]]
  assert cand.inputs["ease_rank"][list(cand.movie_ids).index(first)] == 1
  # `because` names a liked (>= 4) history movie when EASE-liked brought it.
  liked = {m for m, r in zip(request.history, request.ratings) if r >= 4}
  for j, names in enumerate(cand.sources):
    if "ease_liked" in names and cand.because[j] is not None:
      assert cand.because[j] in liked
    if not {"ease", "ease_liked"} & set(names):
      assert cand.because[j] is None


def test_lists_sources_never_saw_the_labels(fake_data, fitted):
  labels = fake_data.label_ratings
  # The list sources are fitted on the fit part only.
  users = labels.user_id.astype(str).to_numpy()
  movies = labels.movie_id.astype(str).to_numpy()
  train = _pairs(fake_data.train_ratings)
  assert not train & set(zip(users, movies))
  src = cascade.CandidateSources(fitted, None, cascade.CascadeConfig(
      ease=20, ease_liked=10, popularity=10, list_size=30))
  lists = cascade.training_lists(src, fake_data, log=_quiet)
  ids = lists.users["user_id"].astype(str)
  label = {(u, m): r for u, m, r in zip(users, movies, labels.user_rating)}
  got = lists.candidates["user_rating"]
  n_labelled = 0
  warm = [i for i, u in enumerate(ids) if u]
  cold = [i for i, u in enumerate(ids) if not u]
  # New-user lists: demographics only, and the earliest 5 ratings.
  sizes = sorted({len([m for m in lists.users["user_history"][i].split("|")
                       if m]) for i in cold})
  assert cold and sizes[0] == 0 and max(sizes) == 5
  assert (lists.candidates["user_rating"][cold] > 0).any()
  for i in warm:
    u = ids[i]
    history = {m for (v, m) in train if v == u}
    row = lists.candidates["movie_id"][i]
    mask = lists.candidates["list_mask"][i] > 0
    assert not history & set(row[mask])  # fit-part movies never candidates
    for j in np.flatnonzero(mask):
      assert got[i, j] == label.get((u, row[j]), 0.0)
      n_labelled += got[i, j] > 0
    # The ranker reads the fit-part history, never a label.
    h = set(lists.users["user_history"][i].split("|")) - {""}
    assert h <= history
  assert n_labelled > 0
  # Movie attributes are joined by id.
  movies_table = fake_data.table("movies")
  row = {m: i for i, m in enumerate(movies_table["movie_id"])}
  m = lists.candidates["movie_id"][0, 0]
  assert lists.candidates["director"][0, 0] == \
      movies_table["director"][row[m]]


def test_served_cascade_end_to_end(small_runs, fake_data):  # pylint: disable=redefined-outer-name
  runs = small_runs["runs"]
  export = f"{runs}/sources/export/sources"
  fitted_ = cascade.FittedSources.load(export)
  config = cascade.read_config(export)
  src = cascade.CandidateSources(
      fitted_, cascade.TwoTower(f"{runs}/retrieval/export",
                                fitted_.ease.movie_ids), config)
  ranker = cascade.Ranker(f"{runs}/ranking/export/ranking")
  result = cascade_eval.evaluate(cascade_eval.Cascade(src, {"r": ranker}),
                                 fake_data, log=_quiet)
  methods = result["methods"]
  for name in ("source/two_tower", "source/ease", "merged/ease",
               "two_stage/r", "peer/popularity"):
    assert 0.0 <= methods[name]["ndcg_at_10"] <= 1.0, name
  cr = result["candidate_recall"]
  # The merged list holds every source's candidates (up to list_size).
  assert cr["merged"] >= max(cr[s] for s in cascade.SOURCES) - 1e-9
  # The ranker's order is a permutation of the merged candidates: its
  # recall@list_size equals the merged candidate recall.
  assert result["num_users"] > 0
  # Two-tower scores from the embedding agree with ScaNN's top-1.
  req = cascade.user_requests(fake_data.seen_ratings, fake_data.table("users"),
                              ["1"])
  scores, tops, exclude = src.scores(req)
  best = int(np.argmax(np.where(
      np.isin(np.arange(len(src.catalogue)), exclude[0]), -np.inf,
      scores["two_tower"][0])))
  assert tops["two_tower"][0][0] == best


def test_list_ranker_trains_every_epoch_and_exports(fake_data, fitted,
                                                    tmp_path):
  from ranking import train as ranking_train  # pylint: disable=g-import-not-at-top
  from ranking.model import RankingConfig  # pylint: disable=g-import-not-at-top
  from tfrs_pipeline import runs  # pylint: disable=g-import-not-at-top
  config = cascade.CascadeConfig(ease=20, ease_liked=10, popularity=10,
                                 list_size=30)
  src = cascade.CandidateSources(fitted, None, config)
  lists = cascade.training_lists(src, fake_data, log=_quiet)
  rc = RankingConfig(epochs=3, patience=10, lists_per_batch=8,
                     max_train_seconds=0, expert_layers=(8,),
                     tower_layers=(8,))
  model, val = ranking_train.fit_lists(rc, lists, cascade.list_context(
      fake_data), runs.RunDir(str(tmp_path / "r")), log=_quiet)
  losses = model.history.history["loss"]
  assert len(losses) == 3 and val["epochs"] == 3
  steps = -(-int(lists.size * 0.9) // 8)
  assert int(model.optimizer.iterations.numpy()) >= 3 * (steps - 1)
  assert losses[-1] < losses[0]
  # The export's rank_lists equals the model on the same lists.
  path = ranking_train.export_lists_model(
      model, cascade.list_context(fake_data),
      runs.RunDir(str(tmp_path / "r")), log=_quiet)
  ranker = cascade.Ranker(path)
  requests = cascade.user_requests(fake_data.train_ratings,
                                   fake_data.table("fit_users"), ["1", "2"])
  cands = src.candidates(requests)
  got = ranker(requests, cands)
  assert [len(g["score"]) for g in got] == [len(c.movie_ids) for c in cands]
  assert all(np.all(np.isfinite(g["score"])) for g in got)


def test_served_list_is_the_bench_path(small_runs, fake_data):  # pylint: disable=redefined-outer-name
  """`Recommender.recommend` (CLI, HTTP, page) returns exactly the order
  the bench's evaluation scores: the sources' merged candidates ranked by
  the same `rank_lists` call."""
  from tfrs_pipeline.app import catalog as catalog_lib, recommender  # pylint: disable=g-import-not-at-top
  catalog = catalog_lib.Catalog.from_data(fake_data, history="train")
  rec = recommender.Recommender.from_runs(small_runs["runs"], catalog)
  for user in ("1", "7"):
    request = rec.known_request(user)
    cand, = rec.sources.candidates([request])
    out, = rec.ranker([request], [cand])
    order = np.argsort(-out["score"], kind="stable")
    want = [str(m) for m in cand.movie_ids[order][:10]]
    got = [r["movie_id"] for r in rec.recommend(user, k=10)]
    assert got == want
    # The request carries the user's train ratings as history, and none
    # of them comes back.
    assert set(request.history) == set(catalog.history(user))
    assert not set(got) & set(request.history)
