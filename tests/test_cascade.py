"""The two-stage cascade on the generated data: the carving of the train
split, candidate sources and their merge, leak-free training lists, and
the list ranker through its export."""

import dataclasses

import numpy as np
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from test_recommend import small_runs  # noqa: F401  pylint: disable=unused-import
from tfrs_pipeline import export_layout, pipeline
from tfrs_pipeline.app import cascade, cascade_eval, cascade_graph


def _quiet(*_):
  pass


@pytest.fixture(scope="module", name="carved_config")
def _carved_config(fake_raw, fake_data_dir):
  return pipeline.DataConfig(raw_data=fake_raw["path"],
                             data_dir=fake_data_dir, label_share=0.3,
                             holdout_users=0.2, history_length=50)


@pytest.fixture(scope="module")
def carved(carved_config):
  return pipeline.load_data(carved_config, log=_quiet)


def _pairs(df):
  return set(zip(df.user_id.astype(str), df.movie_id.astype(str)))


def test_carving_is_disjoint_and_complete(fake_data, carved, carved_config):
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
  # Users new to every fit (cold_users, 10% of the users): all their
  # train ratings are labels; the other users' label share is roughly what
  # was asked (hash rule, 30%).
  fitted = {u for u, _ in train}
  new = {u for u, _ in labels} - fitted
  assert new and len(new) < 0.3 * len(fitted)
  warm = {(u, m) for u, m in labels if u in fitted}
  share = len(warm) / len(train | warm)
  assert 0.2 < share < 0.4
  none = pipeline.load_data(dataclasses.replace(
      carved_config, cold_users=0.0), log=_quiet)
  assert not {u for u, _ in _pairs(none.label_ratings)} - {
      u for u, _ in _pairs(none.train_ratings)}
  assert _pairs(none.seen_ratings) == train | labels


def test_validation_mode_never_reads_test_new_users(fake_raw, fake_data_dir,
                                                   carved):
  config = pipeline.DataConfig(raw_data=fake_raw["path"],
                               data_dir=fake_data_dir, label_share=0.3,
                               holdout_users=0.2, validation_share=0.2,
                               history_length=50)
  val = pipeline.load_data(config, log=_quiet)
  test_new = set(carved.holdout.user_id.astype(str))
  val_new = set(val.holdout.user_id.astype(str))
  users = lambda df: set(df.user_id.astype(str))
  read = (users(val.train_ratings) | users(val.label_ratings)
          | users(pipeline.ratings_frame(val.test)) | val_new)
  # The test new users are nowhere; the validation ones are new users
  # (in no fit), drawn from the others, with train-split ratings only.
  assert test_new and not test_new & read
  assert val_new and not val_new & (users(val.train_ratings)
                                    | users(val.label_ratings))
  test_split = _pairs(pipeline.ratings_frame(carved.test))
  assert not _pairs(val.holdout) & test_split


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


def _round_robin(rows, size):
  """The merge rule, spelled out: first of each list, then second, ...,
  repeats dropped, up to `size`."""
  seen, out = set(), []
  for r in range(max(len(x) for x in rows)):
    for row in rows:
      if r < len(row) and row[r] not in seen:
        seen.add(row[r])
        out.append(row[r])
  return out[:size]


@pytest.fixture(scope="module")
def fitted(fake_data):
  return cascade.fit_sources_for_lists(
      fake_data, cascade.CascadeConfig(ease_neighbours=50))


def _graph(fitted, **counts):  # pylint: disable=redefined-outer-name
  config = cascade.CascadeConfig(**{"two_tower": 0, **counts})
  return cascade_graph.CascadeGraph(fitted, None, {}, config)


def test_candidates_merge_exclude_and_carry_ranks(fitted):  # pylint: disable=redefined-outer-name
  graph = _graph(fitted, ease=10, ease_liked=5, popularity=5, list_size=15)
  movies = list(graph.catalogue_ids)
  request = cascade.Request(history=movies[:6], ratings=[5, 4, 1, 2, 5, 3],
                            demographics={"user_gender": "F",
                                          "bucketized_user_age": "25"},
                            exclude=movies[6:8])
  cold = cascade.Request(demographics={"user_gender": "M"})
  inputs = graph.inputs([request, cold])
  out = {k: v.numpy() for k, v in graph.candidates(inputs).items()}
  scores = {k: v.numpy() for k, v in graph.source_scores(inputs).items()}
  index = out["index"][0]
  assert (index >= 0).all() and len(set(index)) == 15
  assert not set(index) & set(range(8))  # history and exclude removed
  # Each source's list: its best movies (ties: lower index), none excluded.
  lists = {}
  for s in ("ease", "ease_liked", "popularity"):
    order = np.argsort(-scores[s][0], kind="stable")
    lists[s] = [int(j) for j in order if np.isfinite(scores[s][0, j])][
        :graph.counts[s]]
    ranks = scores[f"{s}_rank"][0]
    assert sorted(np.flatnonzero(ranks > 0)) == sorted(lists[s])
    for pos, j in enumerate(lists[s], 1):
      assert ranks[j] == pos
  # The merge is the round-robin of the lists in `SOURCES` order.
  rows = [lists[s] for s in cascade.SOURCES if s in lists]
  assert list(index) == _round_robin(rows, 15)
  for s in cascade.SOURCES:
    got = out[f"{s}_rank"][0]
    want = [lists[s].index(j) + 1 if s in lists and j in lists[s] else 0
            for j in index]
    assert list(got) == want
  # The two-tower source is absent here: rank 0 (not retrieved) for all.
  assert not out["two_tower_rank"].any()
  # No history: the item-to-item sources retrieve nothing.
  cold_index = out["index"][1]
  assert not out["ease_rank"][1].any() and not out["ease_liked_rank"][1].any()
  assert (cold_index[:graph.counts["popularity"]] >= 0).all()
  # Scores are standardized over the non-excluded movies.
  keep = np.isfinite(scores["ease"][0])
  z = (scores["ease"][0][keep] - scores["ease"][0][keep].mean()) / \
      scores["ease"][0][keep].std()
  zz = dict(zip(np.flatnonzero(keep), z))
  np.testing.assert_allclose(out["ease_score"][0],
                             [zz[j] for j in index], rtol=1e-4, atol=1e-4)


def test_item_to_item_scores_are_the_history_rows_summed(fitted):  # pylint: disable=redefined-outer-name
  graph = _graph(fitted, ease=10, ease_liked=5, popularity=5, list_size=15)
  movies = list(graph.catalogue_ids)
  requests = [cascade.Request(history=movies[3:9], ratings=[5, 4, 1, 2, 5, 3]),
              cascade.Request(history=movies[:2], ratings=[4, 4])]
  scores = {k: v.numpy() for k, v in
            graph.source_scores(graph.inputs(requests)).items()}
  for source, pick in (("ease", lambda r: r.history),
                       ("ease_liked", lambda r: r.liked())):
    table = getattr(fitted, source)
    dense = np.zeros((graph.n, graph.n), np.float64)
    np.add.at(dense, (np.repeat(np.arange(graph.n),
                                table.neighbour_index.shape[1]),
                      table.neighbour_index.ravel()),
              table.neighbour_weight.ravel())
    for b, r in enumerate(requests):
      rows = [graph.position[m] for m in pick(r)]
      want = dense[rows].sum(axis=0)
      got = scores[source][b]
      keep = np.isfinite(got)  # the rated movies are excluded (-inf)
      assert not keep[[graph.position[m] for m in r.history]].any()
      np.testing.assert_allclose(got[keep], want[keep], rtol=1e-5, atol=1e-6)


def test_because_names_the_liked_movie_with_the_largest_weight(fitted):  # pylint: disable=redefined-outer-name
  graph = _graph(fitted, ease=10, ease_liked=5, popularity=5, list_size=15)
  movies = list(graph.catalogue_ids)
  history, ratings = movies[:6], [5, 4, 1, 2, 5, 3]
  request = cascade.Request(history=history, ratings=ratings)
  inputs = graph.inputs([request])
  dense = {}
  for s in ("ease", "ease_liked"):
    src = getattr(fitted, s)
    b = np.zeros((graph.n, graph.n), np.float32)
    for i in range(graph.n):
      b[i, src.neighbour_index[i]] += src.neighbour_weight[i]
    dense[s] = b
  top = np.asarray([[j for j in range(graph.n) if j >= 6][:12]], np.int32)
  retrieved = np.ones_like(top, bool)
  got = graph._because(inputs, tf.constant(top), tf.constant(retrieved))  # pylint: disable=protected-access
  liked = [i for i, r in enumerate(ratings) if r >= 4]
  for j, g in zip(top[0], got.numpy()[0]):
    want = -1
    for s, items in (("ease_liked", liked), ("ease", range(6))):
      w = dense[s][list(items), j]
      if (w > 0).any():
        want = list(items)[int(np.argmax(w))]
        break
    assert g == want, (j, g, want)


def test_lists_sources_never_saw_the_labels(fake_data, fitted):  # pylint: disable=redefined-outer-name
  labels = fake_data.label_ratings
  # The list sources are fitted on the fit part only.
  users = labels.user_id.astype(str).to_numpy()
  movies = labels.movie_id.astype(str).to_numpy()
  train = _pairs(fake_data.train_ratings)
  assert not train & set(zip(users, movies))
  graph = _graph(fitted, ease=20, ease_liked=10, popularity=10, list_size=30)
  lists = cascade.training_lists(graph, fake_data, log=_quiet)
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
  # Each candidate carries its request's history size (0 = none).
  for i in cold:
    mask = lists.candidates["list_mask"][i] > 0
    n = len([m for m in lists.users["user_history"][i].split("|") if m])
    assert (lists.candidates["history_size"][i][mask] == n).all()
  assert (lists.candidates["user_rating"][cold] > 0).any()
  for i in warm:
    u = ids[i]
    history = {m for (v, m) in train if v == u}
    row = lists.candidates["movie_id"][i]
    mask = lists.candidates["list_mask"][i] > 0
    assert not history & set(row[mask])  # fit-part movies never candidates
    assert (row[~mask] == "").all()
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


def test_new_user_lists_come_from_users_new_to_every_fit(fake_data):
  labels, train = fake_data.label_ratings, fake_data.train_ratings
  new = sorted(set(labels.user_id) - set(train.user_id))
  assert new  # DataConfig.cold_users
  config = cascade.CascadeConfig(new_user_given=(3,))
  pairs = cascade.new_user_requests(labels, fake_data.table("users"), new,
                                    config)
  assert [o for o, _ in pairs] == new + new
  for owner, r in pairs:
    assert r.user_id == "" and r.demographics  # a new user's request
    mine = labels[labels.user_id == owner].sort_values(
        ["timestamp", "movie_id"])
    # Nothing excluded but the history (the graph always excludes it).
    assert not r.exclude
    if r.history:  # the earliest 3 ratings, newest first
      assert list(r.history) == list(mine.movie_id.astype(str))[:3][::-1]


def _served_graph(runs):
  export = export_layout.locate(f"{runs}/sources", "sources")
  return cascade_graph.CascadeGraph(
      cascade.FittedSources.load(export),
      export_layout.locate(f"{runs}/retrieval"),
      {"r": export_layout.locate(f"{runs}/ranking", "ranking")},
      cascade.read_config(export))


def test_served_cascade_end_to_end(small_runs, fake_data):  # pylint: disable=redefined-outer-name
  graph = _served_graph(small_runs["runs"])
  result = cascade_eval.evaluate(graph, fake_data, log=_quiet)
  methods = result["methods"]
  for name in ("source/two_tower", "source/ease", "merged/ease",
               "two_stage/r", "peer/popularity"):
    assert 0.0 <= methods[name]["ndcg_at_10"] <= 1.0, name
  cr = result["candidate_recall"]
  # The merged list holds every source's candidates (up to list_size).
  assert cr["merged"] >= max(cr[s] for s in cascade.SOURCES) - 1e-9
  assert result["num_users"] > 0
  # The two-tower list (ScaNN, excluded movies dropped) starts with the
  # exact best of the query embedding against every movie.
  req = cascade.user_requests(fake_data.seen_ratings, fake_data.table("users"),
                              ["1"])
  scores = {k: v.numpy() for k, v in
            graph.source_scores(graph.inputs(req)).items()}
  best = int(np.argmax(scores["two_tower"][0]))
  assert scores["two_tower_rank"][0, best] == 1


def test_list_ranker_trains_every_epoch_and_exports(fake_data, fitted,  # pylint: disable=redefined-outer-name
                                                    tmp_path):
  from ranking import train as ranking_train  # pylint: disable=g-import-not-at-top
  from ranking.model import RankingConfig  # pylint: disable=g-import-not-at-top
  from tfrs_pipeline import runs  # pylint: disable=g-import-not-at-top
  graph = _graph(fitted, ease=20, ease_liked=10, popularity=10, list_size=30)
  lists = cascade.training_lists(graph, fake_data, log=_quiet)
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
  # The MMoE's cross-layer heatmap, as the rating ranker writes it.
  assert (tmp_path / "r" / "interactions.png").is_file()
  # The export ranks the graph's candidates: k best by its score.
  path = ranking_train.export_lists_model(
      model, cascade.list_context(fake_data),
      runs.RunDir(str(tmp_path / "r")), log=_quiet)
  ranked = cascade_graph.CascadeGraph(fitted, None, {"m": path},
                                      graph.config)
  requests = cascade.user_requests(fake_data.train_ratings,
                                   fake_data.table("fit_users"), ["1", "2"])
  out = ranked.recommend(ranked.inputs(requests), 5)
  score = out["score"].numpy()
  assert score.shape == (2, 5) and np.isfinite(score).all()
  assert (np.diff(score, axis=1) <= 0).all()


def test_served_list_is_the_bench_path(small_runs, fake_data):  # pylint: disable=redefined-outer-name
  """`Recommender.recommend` (CLI, HTTP, page) returns exactly the list
  the bench's evaluation scores: the cascade graph's `recommend`, one
  call for the request."""
  from tfrs_pipeline.app import catalog as catalog_lib, recommender  # pylint: disable=g-import-not-at-top
  catalog = catalog_lib.Catalog.from_data(fake_data, history="train")
  rec = recommender.Recommender.from_runs(small_runs["runs"], catalog)
  graph = _served_graph(small_runs["runs"])
  for user in ("1", "7"):
    request = rec.known_request(user)
    out = graph.recommend(graph.inputs([request]), 10, "r")
    want = [graph.catalogue_ids[i] for i in out["index"].numpy()[0]
            if i >= 0]
    got = [r["movie_id"] for r in rec.recommend(user, k=10)]
    assert got == want
    # The request carries the user's train ratings as history, and none
    # of them comes back.
    assert set(request.history) == set(catalog.history(user))
    assert not set(got) & set(request.history)

