"""The feature specification is the schema: one new movie input with one
feature over it, and one new user input a request may send, each added
in one place (`tfrs_pipeline/features.py`'s lists), reach the TFDS
builder, the parsed inputs, both towers, the ranker and its signatures,
the HTTP request model, the CLI flags, the displayed movie row and the
CLI's table; the
built dataset is rebuilt because the spec changed.

The additions happen in a fresh process (every module reads the spec when
it is imported), on the generated raw data.
"""

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tfrs_pipeline
    from tfrs_pipeline import features as F
    import tensorflow as tf

    # The one place: an Input (and a Feature) per addition.
    F.INPUTS.append(F.Input(
        "title_length", tf.float32, F.MOVIE, 0.0, "characters in the title",
        stored=np.float32,
        raw=lambda movies: movies.movie_title.str.len().astype(np.float32),
        display="title_length", display_as="number"))
    F.INPUTS.append(F.Input(
        "zip_region", tf.string, F.USER, "", "first digit of the zip code",
        stored=np.str_, raw=lambda users: users.user_zip_code.str[:1],
        request="region", request_doc="zip code region, 0-9"))
    F.FEATURES.append(F.Feature("title_length", "title_length", "numeric",
                                1, (F.CANDIDATE, F.RANKING)))
    F.INPUT_BY_NAME.update({i.name: i for i in F.INPUTS})
    F.FEATURE_BY_NAME.update({f.name: f for f in F.FEATURES})

    from data import movielens_enriched
    from ranking import serving_model
    from ranking.model import RankingConfig, build_model, ranking_features
    from retrieval.model import Tower
    from tfrs_pipeline import dataset, pipeline
    from tfrs_pipeline.app import catalog, recommend_cli, serving

    raw_dir, data_dir = sys.argv[1], sys.argv[2]
    out = {}
    out["builder_movies"] = "title_length" in movielens_enriched._features(
        "movies")
    out["builder_users"] = "zip_region" in movielens_enriched._features(
        "users")
    logs = []
    data = pipeline.load_data(pipeline.DataConfig(
        raw_data=raw_dir, data_dir=data_dir), log=logs.append)
    out["rebuilt"] = any("rebuilding" in str(line) for line in logs)
    movies = data.table("movies")
    out["stored"] = bool(np.allclose(
        movies["title_length"],
        [len(t) for t in movies["movie_title"]]))
    out["user_stored"] = sorted(set(data.table("users")["zip_region"]))
    tower = Tower(F.features_for(F.CANDIDATE), data.vocabularies, 8)
    batch = {k: tf.constant(v[:4]) for k, v in movies.items()}
    out["candidate_tower"] = ("title_length" in tower.encoder.slices
                              and tower(batch).shape == (4, 8))
    out["query_tower_user_input"] = "zip_region" in {
        i.name for i in F.INPUTS if i.entity == F.USER}
    config = RankingConfig(model="dcn", examples="ratings")
    out["ranker"] = "title_length" in {f.name for f in
                                       ranking_features(config)}
    model = build_model(config, data.vocabularies, 3.5,
                        feature_list=ranking_features(config))
    server = serving_model.RankingServer(
        model, data.table("users"), movies, 0)
    sig = server.serve_features.get_concrete_function()
    out["signature"] = "title_length" in sig.structured_input_signature[0][0]
    out["request_schema"] = "region" in serving.NewUser.model_json_schema()[
        "properties"]
    out["cli_flag"] = "region" in recommend_cli.FLAGS
    out["request_inputs"] = catalog.request_inputs(
        {"age": 30, "gender": "F", "occupation": "writer", "zip": "94110",
         "region": "9"})["zip_region"]
    cat = catalog.Catalog(movies, data.table("users"), {
        "user_id": np.array([], object), "movie_id": np.array([], object),
        "user_rating": np.array([], np.float32),
        "timestamp": np.array([], np.int64)})
    row = catalog.movie_row(cat, movies["movie_id"][0])
    out["display"] = row.get("title_length") == float(
        len(movies["movie_title"][0]))
    out["cli_table"] = "title_length" in recommend_cli.format_table(
        [row], ()).splitlines()[0]
    print(json.dumps(out))
""")


def test_one_input_and_one_feature_reach_every_layer(tmp_path, fake_raw,
                                                     fake_data_dir,
                                                     fake_data):
  # A build made with the shipped spec (the session's generated data) is
  # copied, so that the new spec must rebuild it.
  del fake_data  # built with the shipped spec
  data_dir = str(tmp_path / "tfds")
  subprocess.run(["cp", "-r", fake_data_dir, data_dir], check=True)
  out = subprocess.run(
      [sys.executable, "-c", _SCRIPT, fake_raw["path"], data_dir],
      capture_output=True, text=True, cwd=ROOT, timeout=600,
      env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert got.pop("user_stored") and got.pop("request_inputs") == "9"
  assert got == {k: True for k in got}, got
  assert set(got) == {"builder_movies", "builder_users", "rebuilt", "stored",
                      "candidate_tower", "query_tower_user_input", "ranker",
                      "signature", "request_schema", "cli_flag", "display",
                      "cli_table"}

