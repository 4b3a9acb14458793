"""NeuMF (ranking/neumf.py) on the generated fake data: each loss trains,
the BPR loss by hand, candidate lists, export reload."""

import numpy as np
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from ranking import neumf, serving_model, train
from ranking.model import RATED, RankingConfig
from tfrs_pipeline import errors, features

import test_ranking  # pylint: disable=g-bad-import-order


@pytest.fixture(scope="module")
def prepared(fake_data):
  return train.prepare(fake_data, RankingConfig(**test_ranking.SMALL),
                       log=lambda *a: None)


def _model(prepared, loss):
  model = neumf.NeuMF(prepared.vocabularies, loss, gmf_dim=4, mlp_dim=4,
                      mlp_layers=(8,), global_mean=prepared.global_mean)
  model.compile(tf.keras.optimizers.Adam(1e-2), run_eagerly=True)
  return model


def _batch(prepared, loss, n=128):
  cols = dict(prepared.train)
  if loss == "logloss":
    cols = train.with_negatives(cols, prepared, RankingConfig(
        **test_ranking.SMALL), seed=0)
    cols = train.take(cols, np.random.default_rng(0).permutation(
        len(cols[RATED]))[:n])
  if loss == "bpr":
    rows, movies = train.sample_negatives(
        cols["user_id"], cols["movie_id"], prepared.movies["movie_id"], 1, 0)
    cols = train.take(cols, rows)
    cols[neumf.NEGATIVE_MOVIE] = prepared.movies["movie_id"][movies]
  names = ("user_id", "movie_id", features.LABEL, RATED,
           neumf.NEGATIVE_MOVIE)
  return {k: tf.constant(v[:n]) for k, v in cols.items() if k in names}


@pytest.mark.parametrize("loss", neumf.LOSSES)
def test_each_loss_trains(prepared, loss):
  model = _model(prepared, loss)
  batch = _batch(prepared, loss)
  losses = [float(model.train_step(batch)["loss"]) for _ in range(30)]
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.8 * losses[0]
  out = model(batch)
  assert set(out) == {"rating_raw", "rating", "score"}
  assert out["score"].shape == (128,)
  r = out["rating"].numpy()
  assert (r >= 1.0).all() and (r <= 5.0).all()


def test_bpr_loss_by_hand():
  pos = tf.constant([2.0, 0.0, -1.0])
  neg = tf.constant([1.0, 0.5, 1.0])
  d = np.array([1.0, -0.5, -2.0])
  expected = np.mean(np.log1p(np.exp(-d)))  # -log sigmoid(d)
  assert float(neumf.bpr_loss(pos, neg)) == pytest.approx(expected, 1e-6)


def test_unknown_loss_is_a_config_error(prepared):
  with pytest.raises(errors.ConfigError):
    neumf.NeuMF(prepared.vocabularies, "hinge")


@pytest.mark.parametrize("loss", ["mse", "bpr"])
def test_candidate_lists_train(prepared, loss):
  model = _model(prepared, loss)
  users = prepared.train["user_id"][:4]
  movies = np.asarray(prepared.movies["movie_id"][:12]).reshape(4, 3)
  labels = np.array([[4, 0, 0], [0, 5, 0], [0, 0, 3], [1, 0, 0]],
                    np.float32)
  batch = {"user_id": tf.constant(users), "movie_id": tf.constant(movies),
           features.LABEL: tf.constant(labels),
           "list_mask": tf.ones([4, 3])}
  loss_value = float(model.train_step(batch)["loss"])
  assert np.isfinite(loss_value)
  assert model(batch)["score"].shape == (12,)


def test_export_reloads_with_same_outputs(prepared, tmp_path):
  model = _model(prepared, "logloss")
  batch = _batch(prepared, "logloss", 16)
  model.train_step(batch)
  path = serving_model.export_model(
      model, prepared.users, prepared.movies, prepared.latest_timestamp,
      str(tmp_path / "export"), log=lambda *a: None)
  users = [u.decode() if isinstance(u, bytes) else str(u)
           for u in prepared.users["user_id"][:5]]
  movies = [m.decode() if isinstance(m, bytes) else str(m)
            for m in prepared.movies["movie_id"][:5]]
  got = test_ranking._reload(  # pylint: disable=protected-access
      path, users, movies)["ids"]
  want = model({"user_id": tf.constant(users),
                "movie_id": tf.constant(movies)})
  assert set(got) == {"rating", "score"}
  np.testing.assert_allclose(got["score"], want["score"].numpy(), atol=1e-5)


def test_top_n_metrics_of_model_and_popularity(prepared):
  model = _model(prepared, "bpr")
  got = neumf.top_n_metrics(
      neumf.model_scores(model, prepared.movies["movie_id"]), prepared)
  pop = neumf.top_n_metrics(neumf.popularity_scores(prepared), prepared)
  for result in (got, pop):
    for k in (10, 20):
      for name in ("precision", "recall", "map", "ndcg"):
        assert 0.0 <= result[f"{name}_at_{k}"] <= 1.0
    assert result["top_n_users"] > 0
  assert pop["recall_at_20"] >= pop["recall_at_10"]
