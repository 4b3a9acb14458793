"""Tests of the HTTP service: a real `tfrs-pipeline serve` subprocess on a
free loopback port, hit with httpx. Also the e2e evaluation and load test.
"""

import atexit
import os
import time

import httpx
import pytest

from test_recommend import _CACHE, small_runs  # noqa: F401  pylint: disable=unused-import
from tfrs_pipeline.app import e2e, recommender, serving


def server_value(small_runs_):  # pylint: disable=redefined-outer-name
  """The cached {'url', 'proc', 'log', 'first_health'} (started once)."""
  if "server" not in _CACHE:
    port = e2e.free_port()
    log = os.path.join(small_runs_["runs"], f"serve-{port}.log")
    proc = e2e.start_server(small_runs_["runs"], port, (), log)
    atexit.register(e2e.stop_server, proc)
    url = f"http://127.0.0.1:{port}"
    first = None  # the first /health answer that came back
    deadline = time.time() + 120
    while first is None and time.time() < deadline and proc.poll() is None:
      try:
        r = httpx.get(f"{url}/health", timeout=5)
        first = (r.status_code, r.json())
      except httpx.HTTPError:
        time.sleep(0.1)
    e2e.wait_ready(url, 180, proc)
    _CACHE["server"] = {"url": url, "proc": proc, "log": log,
                        "first_health": first}
  return _CACHE["server"]


@pytest.fixture(scope="session")
def server(small_runs):  # pylint: disable=redefined-outer-name
  value = server_value(small_runs)
  yield value
  e2e.stop_server(value["proc"])


@pytest.fixture
def client(server):  # pylint: disable=redefined-outer-name
  with httpx.Client(base_url=server["url"], timeout=30) as c:
    yield c


def _err(r, status):
  assert r.status_code == status, r.text
  body = r.json()
  assert set(body) >= {"error"} and isinstance(body["error"], str)
  assert body["error"]
  return body["error"]


def test_health_and_readiness(server, client):  # pylint: disable=redefined-outer-name
  status, body = server["first_health"]
  # The port opens before the models load: the first answer is 503
  # (loading) unless loading won the race.
  assert status in (200, 503)
  if status == 503:
    assert body["status"] in ("starting", "loading tables", "loading models",
                              "warming up")
  r = client.get("/health")
  assert r.status_code == 200
  models = r.json()["models"]
  assert models["exported_k"] >= 1 and "serve_features" in (
      models["retrieval_signatures"])
  assert {"serving_default", "serve_features"} <= set(
      models["ranking_signatures"])
  # Served with one TensorFlow thread per op (the serve default).
  assert models["intra_op_threads"] == 1


def test_openapi_and_docs(client):  # pylint: disable=redefined-outer-name
  spec = client.get("/openapi.json").json()
  for path in ("/recommend", "/similar", "/health",
               "/users/{user_id}/ratings", "/movies"):
    assert path in spec["paths"]
  assert {"get", "post"} <= set(spec["paths"]["/recommend"])
  schemas = spec["components"]["schemas"]
  assert "NewUser" in schemas and "RatingIn" in schemas
  assert "ratings" in schemas["NewUser"]["properties"]


def test_docs_assets_local(client):  # pylint: disable=redefined-outer-name
  """/docs loads Swagger UI from this server (swagger-ui-bundle-v2), not a
  CDN; /redoc (a CDN page) is off."""
  r = client.get("/docs")
  assert r.status_code == 200 and "text/html" in r.headers["content-type"]
  html = r.text
  assert "http://" not in html and "https://" not in html, html
  js = f"{serving.DOCS_ASSETS}/swagger-ui-bundle.js"
  css = f"{serving.DOCS_ASSETS}/swagger-ui.css"
  assert f'src="{js}"' in html and f'href="{css}"' in html
  assert "url: '/openapi.json'" in html
  for path, kind in ((js, "javascript"), (css, "text/css"),
                     (f"{serving.DOCS_ASSETS}/favicon-32x32.png", "image/png")):
    asset = client.get(path)
    assert asset.status_code == 200 and kind in asset.headers[
        "content-type"], (path, asset.headers)
  bundle = client.get(js).text
  assert "SwaggerUIBundle" in bundle and len(bundle) > 500_000
  # FastAPI writes OpenAPI 3.1, which Swagger UI renders from version 5
  # on (test_browser.py renders it).
  assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
  assert client.get("/redoc").status_code == 404


def test_recommend_get(client):  # pylint: disable=redefined-outer-name
  r = client.get("/recommend", params={"user_id": "7", "k": 5})
  assert r.status_code == 200, r.text
  items = r.json()["items"]
  assert 1 <= len(items) <= 5
  assert {"rank", "movie_id", "title", "year", "genres", "director", "star",
          "predicted_rating", "score", "retrieval_score"} <= set(items[0])
  rated = {x["movie_id"] for x in client.get(
      "/users/7/ratings", params={"limit": 500}).json()["ratings"]}
  assert rated and not rated & {x["movie_id"] for x in items}


def test_recommend_k_returned(client):  # pylint: disable=redefined-outer-name
  """The answer echoes k, says how many came back and, when fewer, why."""
  r = client.get("/recommend", params={"user_id": "7", "k": 5})
  body = r.json()
  assert body["k"] == 5 and body["returned"] == len(body["items"]) == 5
  assert body["k_note"] is None
  # The small runs' sources bring at most 20 + 20 + 10 + 10 movies:
  # k=100 is cut, and the answer says so.
  for r in (client.get("/recommend", params={"user_id": "7", "k": 100}),
            client.post("/recommend", json={"user_id": "7", "k": 100}),
            client.post("/recommend", json={"ratings": _RATED, "k": 100}),
            client.post("/recommend", json={
                "age": 30, "gender": "F", "occupation": "writer",
                "zip": "94110", "k": 100})):
    assert r.status_code == 200, r.text
    body = r.json()
    n = len(body["items"])
    assert body["k"] == 100 and body["returned"] == n and 0 < n < 100
    assert body["k_note"] == (
        f"{n} of 100: the candidate sources brought only {n} movies not "
        "yet rated (at most two_tower 20, ease 20, ease_liked 10, "
        "popularity 10)"), body["k_note"]
    assert [x["rank"] for x in body["items"]] == list(range(1, n + 1))
  r = client.post("/recommend", json={"ratings": _RATED, "k": n})
  assert r.json()["returned"] == n and r.json()["k_note"] is None


def test_k_note():
  assert recommender.k_note(10, 10, 100) is None
  assert recommender.k_note(5, 7, 100) is None
  # The ranker's list is full: k above the served list size.
  assert recommender.k_note(100, 40, 40, {"ease": 20}) == (
      "40 of 100: the ranker orders the 40 merged candidates of the "
      "sources per request (serve --num_candidates to rank more)")
  assert recommender.k_note(30, 12, 40, {"ease": 20, "popularity": 5}) == (
      "12 of 30: the candidate sources brought only 12 movies not yet "
      "rated (at most ease 20, popularity 5)")


def test_movie_by_id(client):  # pylint: disable=redefined-outer-name
  r = client.get("/movies/2")
  assert r.status_code == 200, r.text
  body = r.json()
  assert body["movie_id"] == "2" and body["title"] == "Toy Story"
  assert {"year", "genres", "director", "star"} <= set(body)


def test_recommend_post(client):  # pylint: disable=redefined-outer-name
  r = client.post("/recommend", json={"age": 40, "gender": "F",
                                      "occupation": "doctor/health care",
                                      "zip": "02139", "k": 3})
  assert r.status_code == 200, r.text
  body = r.json()
  assert len(body["items"]) == 3 and body["items"][0]["title"]
  assert body["cold_start"]["bucketized_user_age"] == "35"
  # The bucket as the range it stands for (35 = 35-44), not "35+".
  assert body["cold_start_text"] == "F 35-44 doctor/health care"
  r = client.post("/recommend", json={"user_id": "7", "k": 2})
  assert r.status_code == 200 and len(r.json()["items"]) == 2


_RATED = [{"movie_id": "2", "rating": 5}, {"movie_id": 5, "rating": 4},
          {"movie_id": "11"}, {"movie_id": "17", "rating": None}]
_RATED_IDS = {"2", "5", "11", "17"}


def test_recommend_post_ratings(client):  # pylint: disable=redefined-outer-name
  r = client.post("/recommend", json={"ratings": _RATED, "k": 4})
  assert r.status_code == 200, r.text
  body = r.json()
  assert body["user_id"] is None and body["cold_start"] is None
  assert body["ratings_used"] == 4 and body["k"] == 4
  assert len(body["items"]) == 4
  # k=100: every candidate comes back, so a rated movie left in would show.
  r = client.post("/recommend", json={"ratings": _RATED, "k": 100})
  assert r.status_code == 200, r.text
  items = r.json()["items"]
  ids = [x["movie_id"] for x in items]
  assert len(items) > 4 and len(ids) == len(set(ids))
  assert not _RATED_IDS & set(ids)
  for x in items:
    assert "sources" in x and "because" in x, x
    assert isinstance(x["sources"], list) and x["sources"]
    assert x["because"] is None or (
        set(x["because"]) == {"movie_id", "title"}
        and x["because"]["movie_id"] in _RATED_IDS)
    assert {"rank", "title", "predicted_rating", "score"} <= set(x)


def test_recommend_post_ratings_and_demographics(client):  # pylint: disable=redefined-outer-name
  r = client.post("/recommend", json={
      "ratings": _RATED[:2], "age": 40, "gender": "F",
      "occupation": "doctor/health care", "zip": "02139", "k": 5})
  assert r.status_code == 200, r.text
  body = r.json()
  assert body["ratings_used"] == 2 and body["user_id"] is None
  assert body["cold_start"] == {
      "bucketized_user_age": "35", "user_gender": "F",
      "user_occupation_label": "doctor/health care",
      "user_zip_code": "02139"}
  assert len(body["items"]) == 5
  assert not {"2", "5"} & {x["movie_id"] for x in body["items"]}
  # An empty list with demographics is a demographics-only new user.
  r = client.post("/recommend", json={
      "ratings": [], "age": 40, "gender": "F",
      "occupation": "doctor/health care", "zip": "02139", "k": 3})
  assert r.status_code == 200, r.text
  assert r.json()["ratings_used"] == 0 and len(r.json()["items"]) == 3


def test_movies_search(client):  # pylint: disable=redefined-outer-name
  r = client.get("/movies", params={"q": "tOY sTo"})
  assert r.status_code == 200, r.text
  body = r.json()
  assert body["query"] == "tOY sTo"
  assert [x["movie_id"] for x in body["items"]] == ["2"]
  assert body["items"][0]["title"] == "Toy Story"
  assert {"year", "genres", "director", "star", "num_ratings"} <= set(
      body["items"][0])
  assert body["items"][0]["num_ratings"] > 0
  r = client.get("/movies", params={"q": "CAFE"})  # accents ignored
  assert [x["title"] for x in r.json()["items"]] == ["Café Society, The"]
  items = client.get("/movies", params={"q": "movie", "limit": 7}).json()[
      "items"]
  assert len(items) == 7 and all(x["title"].startswith("Movie ")
                                 for x in items)
  n = [x["num_ratings"] for x in items]
  assert n == sorted(n, reverse=True)
  assert len(client.get("/movies", params={"q": "movie"}).json()[
      "items"]) == 10  # default limit
  assert client.get("/movies", params={"q": "zzzz"}).json()["items"] == []


def _all_ratings(raw_dir):
  """user id -> movie ids rated in the raw ratings file (train + test)."""
  out = {}
  with open(os.path.join(raw_dir, "ml-1m", "ratings.dat"),
            encoding="latin-1") as f:
    for line in f:
      u, m = line.split("::")[:2]
      out.setdefault(u, set()).add(m)
  return out


def test_recommend_excludes_all_ratings(client, small_runs, fake_data):  # pylint: disable=redefined-outer-name
  from tfrs_pipeline.app import catalog as catalog_lib  # pylint: disable=g-import-not-at-top
  test = catalog_lib._to_numpy(fake_data.test, ("user_id", "movie_id"))  # pylint: disable=protected-access
  in_test = {}
  for u, m in zip(test["user_id"], test["movie_id"]):
    in_test.setdefault(u, set()).add(m)
  rated = _all_ratings(small_runs["raw"])
  users = sorted(in_test, key=lambda u: (len(u), u))[:3]
  assert users
  for u in users:
    r = client.get("/recommend", params={"user_id": u, "k": 100})
    assert r.status_code == 200, r.text
    ids = {x["movie_id"] for x in r.json()["items"]}
    assert in_test[u] <= rated[u]
    assert ids and not rated[u] & ids, (u, rated[u] & ids)
    # The service counts the test ratings as the user's too.
    assert client.get(f"/users/{u}/ratings").json()["num_ratings"] == len(
        rated[u])


def test_similar_and_ratings(client):  # pylint: disable=redefined-outer-name
  r = client.get("/similar", params={"movie_id": "1", "k": 4})
  assert r.status_code == 200
  items = r.json()["items"]
  assert len(items) == 4 and all(x["movie_id"] != "1" for x in items)
  r = client.get("/users/7/ratings", params={"limit": 3})
  body = r.json()
  assert r.status_code == 200 and len(body["ratings"]) == 3
  assert body["user"]["user_id"] == "7" and body["num_ratings"] >= 3
  assert {"title", "rating", "timestamp", "director"} <= set(
      body["ratings"][0])


@pytest.mark.parametrize("method,path,kwargs,status,message", [
    ("get", "/recommend", {"params": {"user_id": "424242"}}, 404,
     "unknown user id"),
    ("get", "/recommend", {"params": {"user_id": "7", "k": 0}}, 422, "k"),
    ("get", "/recommend", {"params": {"user_id": "7", "k": 101}}, 422, "k"),
    ("get", "/recommend", {"params": {"user_id": "7", "k": "ten"}}, 422,
     "k"),
    ("get", "/recommend", {}, 422, "user_id"),
    ("get", "/similar", {"params": {"movie_id": "nope"}}, 404,
     "unknown movie id"),
    ("get", "/similar", {"params": {"movie_id": "1", "k": 1000}}, 422, "k"),
    ("get", "/users/424242/ratings", {}, 404, "unknown user id"),
    ("get", "/movies/99999", {}, 404, "unknown movie id '99999'"),
    ("get", "/users/7/ratings", {"params": {"limit": 0}}, 422, "limit"),
    ("post", "/recommend", {"content": b"{not json",
                            "headers": {"content-type": "application/json"}},
     400, "malformed JSON"),
    ("post", "/recommend", {"json": [1, 2]}, 422, "body"),
    ("post", "/recommend", {"json": {"age": 30}}, 422, "missing"),
    ("post", "/recommend", {"json": {"age": True, "gender": "F",
                                     "occupation": "writer", "zip": "94110"}},
     422, "age"),
    ("post", "/recommend", {"json": {"user_id": "1", "k": 2.5}}, 422, "k"),
    ("post", "/recommend", {"json": {"age": 30, "gender": "X",
                                     "occupation": "writer", "zip": "94110"}},
     422, "gender"),
    ("post", "/recommend", {"json": {"age": 30, "gender": "F",
                                     "occupation": "astronaut",
                                     "zip": "94110"}}, 422, "occupation"),
    ("post", "/recommend", {"json": {"age": 30, "gender": "F",
                                     "occupation": "writer", "zip": "abc"}},
     422, "zip"),
    ("post", "/recommend", {"json": {"age": 500, "gender": "F",
                                     "occupation": "writer",
                                     "zip": "94110"}}, 422, "age"),
    ("post", "/recommend", {"json": {"user_id": "7", "k": 0}}, 422, "k"),
    ("post", "/recommend", {"json": {"user_id": "7", "extra": 1}}, 422,
     "extra"),
    ("post", "/recommend", {"json": {"user_id": "424242"}}, 404,
     "unknown user id"),
    ("post", "/recommend", {"json": {"user_id": "7", "age": 30,
                                     "gender": "F", "occupation": "writer",
                                     "zip": "94110"}}, 422, "not both"),
    # A new user's ratings.
    ("post", "/recommend", {"json": {"ratings": [
        {"movie_id": "2", "rating": 5}, {"movie_id": "99999"}]}}, 404,
     "ratings[1]: unknown movie id '99999'"),
    ("post", "/recommend", {"json": {"ratings": [
        {"movie_id": "2", "rating": 5}, {"movie_id": 2, "rating": 4}]}}, 422,
     "ratings[1]: duplicate movie id '2'"),
    ("post", "/recommend", {"json": {"ratings": [
        {"movie_id": "2", "rating": 0}]}}, 422,
     "ratings[0] (movie 2): rating must be between 1 and 5, got 0"),
    ("post", "/recommend", {"json": {"ratings": [
        {"movie_id": "2", "rating": 6}]}}, 422,
     "ratings[0] (movie 2): rating must be between 1 and 5, got 6"),
    ("post", "/recommend", {"json": {"ratings": [
        {"movie_id": "2", "rating": True}]}}, 422,
     "ratings.0.rating: Input should be a valid number"),
    ("post", "/recommend", {"json": {"ratings": [
        {"movie_id": "2", "rating": "5"}]}}, 422, "ratings.0.rating"),
    ("post", "/recommend", {"json": {"ratings": [
        {"movie_id": True, "rating": 5}]}}, 422,
     "ratings.0.movie_id: Value error, movie_id must be a string or an "
     "integer"),
    ("post", "/recommend", {"json": {"ratings": [
        {"movie_id": "2", "stars": 5}]}}, 422, "ratings.0.stars: Extra"),
    ("post", "/recommend", {"json": {"ratings": [
        {"movie_id": str(i)} for i in range(501)]}}, 422,
     "at most 500 ratings, got 501"),
    ("post", "/recommend", {"json": {"ratings": []}}, 422,
     "a new user needs ratings or demographics"),
    ("post", "/recommend", {"json": {"ratings": {"movie_id": "2"}}}, 422,
     "ratings: Input should be a valid list"),
    ("post", "/recommend", {"json": {"user_id": "7", "ratings": [
        {"movie_id": "2", "rating": 5}]}}, 422,
     "send user_id or ratings, not both"),
    ("post", "/recommend", {"json": {"age": 30, "ratings": [
        {"movie_id": "2", "rating": 5}]}}, 422,
     "missing: gender, occupation, zip"),
    ("post", "/recommend", {"json": {"age": 30, "gender": "F",
                                     "occupation": "writer", "zip": "123",
                                     "ratings": [{"movie_id": "2"}]}}, 422,
     "zip"),
    ("get", "/movies", {"params": {"q": ""}}, 422,
     "search query must not be empty"),
    ("get", "/movies", {"params": {"q": "   "}}, 422, "must not be empty"),
    ("get", "/movies", {}, 422, "q: Field required"),
    ("get", "/movies", {"params": {"q": "x" * 101}}, 422, "q: String should"),
    ("get", "/movies", {"params": {"q": "toy", "limit": 0}}, 422, "limit"),
    ("get", "/movies", {"params": {"q": "toy", "limit": 51}}, 422, "limit"),
    ("post", "/recommend", {"content": b"{" + b" " * 70_000 + b"}",
                            "headers": {"content-type": "application/json"}},
     413, "request body over 65536 bytes"),
    ("get", "/nowhere", {}, 404, "Not Found"),
])
def test_bad_requests(client, method, path, kwargs, status, message):  # pylint: disable=redefined-outer-name
  r = getattr(client, method)(path, **kwargs)
  assert message in _err(r, status)


def test_streamed_body_too_large(client):  # pylint: disable=redefined-outer-name
  def chunks():
    for _ in range(40):
      yield b" " * 4096
  r = client.post("/recommend", content=chunks(),
                  headers={"content-type": "application/json"})
  assert "65536" in _err(r, 413)
  assert client.get("/health").status_code == 200  # still up


def test_page_served(client):  # pylint: disable=redefined-outer-name
  r = client.get("/")
  assert r.status_code == 200 and "text/html" in r.headers["content-type"]
  assert "/static/app.js" in r.text and "http" not in r.text.replace(
      'name="viewport"', "")
  assert client.get("/static/app.js").status_code == 200
  meta = client.get("/meta").json()
  assert meta["example_user_ids"] and "writer" in meta["occupations"]


def test_load_test(server):  # pylint: disable=redefined-outer-name
  result = e2e.load_test(server["url"], ["1", "2", "7", "424242"],
                         concurrency=4, total_requests=40, timeout_s=60)
  assert result["errors"] == 10  # the unknown id: 404s
  assert result["requests"] == 40 and result["rps"] > 0
  assert 0 < result["p50_ms"] <= result["p99_ms"]


def test_mixed_load_invalid_requests_get_4xx(server):  # pylint: disable=redefined-outer-name
  result = e2e.load_test(server["url"], ["1", "2", "7"], concurrency=4,
                         total_requests=40, timeout_s=60, invalid_share=0.4)
  bad = result["invalid"]
  # 16 invalid requests (each kind of INVALID_REQUESTS at least once),
  # all answered 4xx; the 24 valid ones 2xx.
  assert bad["requests"] == 16 and bad["status"] == {"4xx": 16}
  assert bad["not_4xx"] == 0 and result["errors"] == 0
  assert result["status"] == {"2xx": 24, "4xx": 16}
  assert 0 < result["p50_ms"] <= result["p99_ms"]
