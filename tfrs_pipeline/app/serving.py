"""HTTP service: FastAPI routes over `recommender.Recommender`
(`serving_cli`: `tfrs-pipeline serve`, uvicorn).

    GET  /recommend?user_id=42&k=10   known user
    POST /recommend                   a new user: {"ratings": [{"movie_id",
                                       "rating"}, ...]} and/or all four of
                                       "age", "gender", "occupation", "zip";
                                       "k"; or {"user_id", "k"}
    GET  /movies?q=matrix&limit=10    title search (to pick movies to rate)
    GET  /similar?movie_id=1&k=10     nearest movies (candidate embeddings)
    GET  /users/{id}/ratings?limit=   the user's most recent ratings
    GET  /health                      503 while loading or failed, then
                                       200 + every export component
                                       (version, state) + info
    POST /admin/reload                newest complete exports, swapped in
                                       (only with serve --admin_reload)
    GET  /meta                        allowed values and example user ids
    GET  /                            web page (static/, no internet needed)
    GET  /movies/{id}                 one movie (the page's linked ratings)
    GET  /docs, /openapi.json         OpenAPI (Swagger UI served from the
                                       swagger-ui-bundle-v2 package: offline)

Models and tables load in a background thread started by the lifespan
hook, so the port opens at once and `/health` says when it is ready.
The recommendation routes echo the `k` asked and say how many items came
back (`returned`); when fewer, `k_note` says why (`recommender.k_note`:
the ranker orders a fixed number of merged candidates per request).
Errors are JSON `{"error": "..."}`: 400 (malformed JSON), 404 (unknown
id: user, or movie in `/similar` or in a new user's `ratings`), 413 (body
over `max_body_bytes`), 422 (invalid values), 503 (not ready, or an
export file missing or broken: the message names it).

Known users are never recommended a movie they rated anywhere in the data
(`--history=all`, the default; `--history=train` drops only the train
split's, as the offline evaluation does).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Callable, Dict, List, Optional

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

import fastapi
from fastapi import exceptions as fastapi_exceptions
from fastapi import responses, staticfiles
from fastapi.openapi import docs as openapi_docs
import pydantic
from starlette import exceptions as starlette_exceptions
import swagger_ui_bundle

from tfrs_pipeline import errors, features
from tfrs_pipeline.app import catalog, export_check, recommender

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "static")
MAX_BODY_BYTES = 64 * 1024
MAX_K = 100
MAX_RATINGS = 500
DOCS_ASSETS = "/docs-assets"  # Swagger UI's files (swagger-ui-bundle-v2)
log = logging.getLogger("tfrs_pipeline.app.serving")


class RatingIn(pydantic.BaseModel):
  """One movie a new user rated (or just likes: `rating` null)."""
  model_config = pydantic.ConfigDict(extra="forbid")
  movie_id: str = pydantic.Field(..., min_length=1, max_length=32,
                                 description="MovieLens movie id (see /movies)")
  rating: Optional[pydantic.StrictFloat] = pydantic.Field(
      None, description="1 to 5; null: rated without a value")

  @pydantic.field_validator("movie_id", mode="before")
  @classmethod
  def _movie_id(cls, v):
    if isinstance(v, int) and not isinstance(v, bool):
      return str(v)
    if not isinstance(v, str):
      raise ValueError("movie_id must be a string or an integer")
    return v


def _request_model() -> type:
  """The POST /recommend body: a known `user_id`, or a new user's ratings
  and/or the fields of `features.request_inputs()` (age, gender,
  occupation, zip: generated from the spec, each optional here and
  validated together by `catalog.request_inputs`), and `k`."""
  fields = {
      "ratings": (Optional[List[RatingIn]], pydantic.Field(
          None, description=f"new user: movies they rated (at most "
          f"{MAX_RATINGS}; first = most recent); never recommended back")),
      "user_id": (Optional[str], pydantic.Field(
          None, max_length=32, description="known MovieLens user id")),
  }
  for spec in features.request_inputs():
    # Strict: a bool or a fraction is not an integer (`{"age": true}`).
    kind = (Optional[pydantic.StrictInt] if spec.request_type is int
            else Optional[pydantic.constr(max_length=64)])
    fields[spec.request] = (kind, pydantic.Field(
        None, description=spec.request_doc or spec.doc))
  fields["k"] = (pydantic.StrictInt, pydantic.Field(10, ge=1, le=MAX_K))
  return pydantic.create_model(
      "NewUser", __config__=pydantic.ConfigDict(extra="forbid"),
      __doc__=_request_model.__doc__, **fields)


NewUser = _request_model()


class _BodyTooLarge(starlette_exceptions.HTTPException):
  def __init__(self, limit: int):
    super().__init__(413, f"request body over {limit} bytes")


class BodyLimit:
  """ASGI middleware: 413 for bodies over `max_bytes` (declared or
  streamed)."""

  def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
    self.app, self.max_bytes = app, max_bytes

  async def __call__(self, scope, receive, send):
    if scope["type"] != "http":
      return await self.app(scope, receive, send)
    for k, v in scope.get("headers", ()):
      if k == b"content-length" and v.isdigit() and int(v) > self.max_bytes:
        response = _error(413, f"request body over {self.max_bytes} bytes")
        return await response(scope, receive, send)
    seen = 0

    async def limited():
      nonlocal seen
      message = await receive()
      if message["type"] == "http.request":
        seen += len(message.get("body", b""))
        if seen > self.max_bytes:
          raise _BodyTooLarge(self.max_bytes)
      return message

    return await self.app(scope, limited, send)


def _json(content) -> responses.JSONResponse:
  """A JSON response of plain Python values (skips FastAPI's encoder,
  which walks every row: the recommendation routes return their rows
  as built)."""
  return responses.JSONResponse(content)


def _error(code: int, message: str, **extra) -> responses.JSONResponse:
  return responses.JSONResponse({"error": message, **extra},
                                status_code=code)


class State:
  """What the loader thread fills in; `/health` reads it. `components`:
  `export_check.Component.summary()` by name, of the versions loaded (or
  that failed the check)."""

  def __init__(self):
    self.recommender = None
    self.error: Optional[str] = None
    self.started = time.time()
    self.ready_seconds: Optional[float] = None
    self.stage = "starting"
    self.components: Dict[str, dict] = {}
    self.reload_lock = threading.Lock()


def _describe(e: BaseException) -> str:
  """A typed error is its message (it names the file); others get their
  type."""
  return str(e) if isinstance(e, errors.Error) else f"{type(e).__name__}: {e}"


def create_app(load: Callable[[State], object],
               max_body_bytes: int = MAX_BODY_BYTES,
               on_failure: Optional[Callable[[BaseException], None]] = None,
               admin_reload: bool = False) -> fastapi.FastAPI:
  """The app. `load(state)` runs in a background thread at startup and
  returns a `recommender.Recommender` (it may set `state.stage` and
  `state.components`); when it raises, `on_failure(error)` (the CLI
  stops the server) or, without it, the routes answer 503 with the
  reason. `admin_reload`: add POST /admin/reload (`load` again, swap)."""
  state = State()

  def loader():
    try:
      state.recommender = load(state)
      state.ready_seconds = round(time.time() - state.started, 2)
      state.stage = "ready"
      log.warning("ready after %.1f s", state.ready_seconds)
    except Exception as e:  # pylint: disable=broad-except
      state.error = _describe(e)
      state.stage = "failed"
      log.error("loading failed: %s", state.error,
                exc_info=not isinstance(e, errors.Error))
      if on_failure is not None:
        on_failure(e)

  @contextlib.asynccontextmanager
  async def lifespan(_):
    threading.Thread(target=loader, name="model-loader", daemon=True).start()
    yield

  app = fastapi.FastAPI(
      title="tfrs-pipeline recommender",
      description="Two-stage movie recommendations (TFRS retrieval + "
      "ranking) on MovieLens-1M with director and star.",
      version=tfrs_pipeline.__version__, lifespan=lifespan,
      docs_url=None, redoc_url=None)  # /docs below: no CDN
  app.state.recs = state
  app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
  app.add_exception_handler(starlette_exceptions.HTTPException, _http_error)
  app.add_exception_handler(fastapi_exceptions.RequestValidationError,
                            _validation_error)
  app.add_exception_handler(catalog.InvalidRequestError, _invalid_request)
  app.add_exception_handler(recommender.Unavailable, _unavailable)
  app.add_exception_handler(Exception, _internal_error)
  app.include_router(router)
  if admin_reload:
    app.add_api_route("/admin/reload", _reload_route(load), methods=["POST"],
                      summary="Load the newest complete exports, swap them "
                      "in (serve --admin_reload)")
  app.mount("/static", staticfiles.StaticFiles(directory=STATIC_DIR),
            name="static")
  app.mount(DOCS_ASSETS, staticfiles.StaticFiles(
      directory=str(swagger_ui_bundle.swagger_ui_path)), name="docs-assets")
  return app


# --------------------------------------------------------------------------
# Error handlers.


async def _http_error(_, exc):
  return _error(exc.status_code, str(exc.detail))


async def _validation_error(_, exc):
  problems = exc.errors()
  if any(e.get("type") == "json_invalid" for e in problems):
    return _error(400, "malformed JSON body")
  parts = []
  for e in problems:
    where = ".".join(str(x) for x in e.get("loc", ())[1:]) or "body"
    parts.append(f"{where}: {e.get('msg')}")
  return _error(422, "; ".join(parts))


async def _invalid_request(_, exc):
  status = 404 if isinstance(exc, (catalog.UnknownUserError,
                                   catalog.UnknownMovieError)) else 422
  return _error(status, str(exc))


async def _unavailable(_, exc):
  return _error(503, str(exc))


async def _internal_error(_, exc):
  log.exception("internal error: %s", exc)
  return _error(500, "internal error")


# --------------------------------------------------------------------------
# Routes.

router = fastapi.APIRouter()


def _state(request: fastapi.Request) -> State:
  return request.app.state.recs


def ready(request: fastapi.Request):
  """The recommender, or 503 while it loads (a route dependency)."""
  state = _state(request)
  if state.recommender is None:
    raise starlette_exceptions.HTTPException(
        503, f"not ready ({state.stage})"
        + (f": {state.error}" if state.error else ""))
  return state.recommender


Ready = fastapi.Depends(ready)


@router.get("/health", summary="Readiness and every export component: "
            "503 until loaded")
def health(request: fastapi.Request):
  state = _state(request)
  if state.recommender is None:
    return _error(503, "loading" if not state.error else "failed",
                  status=state.stage, detail=state.error,
                  uptime_s=round(time.time() - state.started, 1),
                  components=state.components)
  degraded = [n for n, c in state.components.items() if c["state"] != "ok"]
  return {"status": "degraded" if degraded else "ok",
          "ready_seconds": state.ready_seconds,
          "components": state.components,
          "models": state.recommender.info()}


def _reload_route(load: Callable[[State], object]):
  def reload(request: fastapi.Request):
    """Loads the newest complete export versions (the same checks as at
    startup) and swaps them in; requests in flight finish on the old
    ones, which keep serving when the new ones fail."""
    state = _state(request)
    if not state.reload_lock.acquire(blocking=False):
      return _error(409, "a reload is already running")
    try:
      start = time.time()
      before = dict(state.components)
      trial = State()
      trial.recommender = state.recommender
      try:
        rec = load(trial)
      except Exception as e:  # pylint: disable=broad-except
        log.error("reload failed: %s", _describe(e))
        serving = "; the previous versions keep serving" if (
            state.recommender is not None) else ""
        return _error(503, f"reload failed: {_describe(e)}{serving}",
                      components=trial.components)
      changed = rec is not state.recommender
      state.components = trial.components
      state.recommender, state.error, state.stage = rec, None, "ready"
      if state.ready_seconds is None:
        state.ready_seconds = round(time.time() - state.started, 2)
      return {"status": "reloaded" if changed else "unchanged",
              "seconds": round(time.time() - start, 2),
              "versions": {n: c["version"] for n, c in
                           state.components.items()},
              "previous": {n: c["version"] for n, c in before.items()}}
    finally:
      state.reload_lock.release()
  return reload


@router.get("/meta", summary="Allowed demographic values, example users")
def meta(rec=Ready):
  users = sorted(rec.catalog.user_row, key=lambda u: (len(u), u))
  examples = [u for u in users[:500]
              if rec.catalog.num_ratings(u) >= 5][:6]
  return {"genders": list(catalog.GENDERS),
          "age_buckets": [1, 18, 25, 35, 45, 50, 56],
          "occupations": sorted(catalog.occupations()),
          "example_user_ids": examples, "max_k": MAX_K,
          "max_ratings": MAX_RATINGS}


def _answer(rec, k: int, items: list, **fields) -> responses.JSONResponse:
  """A recommendation answer: the fields, `k` as asked, `returned` (the
  number of items) and `k_note` (why fewer than k; null otherwise)."""
  return _json({**fields, "k": k, "returned": len(items),
                "k_note": rec.k_note(k, len(items)), "items": items})


@router.get("/recommend", summary="Top-k movies for a known user")
def recommend_get(user_id: str = fastapi.Query(..., max_length=32),
                  k: int = fastapi.Query(10, ge=1, le=MAX_K), rec=Ready):
  return _answer(rec, k, rec.recommend(user_id, k), user_id=user_id)


@router.post("/recommend", summary="Top-k movies for a known or new user")
def recommend_post(body: NewUser, rec=Ready):
  demo = {i.request: getattr(body, i.request)
          for i in features.request_inputs()}
  no_demo = all(v is None for v in demo.values())
  if body.ratings is not None:
    if body.user_id:
      raise catalog.InvalidRequestError(
          "send user_id or ratings, not both (ratings are for a new user)")
    inputs = None if no_demo else catalog.request_inputs(demo)
    ratings = catalog.validate_ratings(
        [r.model_dump() for r in body.ratings], rec.catalog, MAX_RATINGS)
    return _answer(rec, body.k, rec.recommend_for_ratings(
        ratings, inputs, body.k), user_id=None, ratings_used=len(ratings),
        cold_start=inputs,
        cold_start_text=recommender.describe_demographics(inputs) or None)
  if body.user_id and no_demo:
    return _answer(rec, body.k, rec.recommend(body.user_id, body.k),
                   user_id=body.user_id)
  if body.user_id and body.user_id in rec.catalog.user_row:
    raise catalog.InvalidRequestError(
        f"user {body.user_id!r} is known: send user_id or demographics, "
        "not both")
  inputs = catalog.request_inputs(demo)
  return _answer(rec, body.k, rec.recommend_for_inputs(inputs, body.k),
                 user_id=None, cold_start=inputs,
                 cold_start_text=recommender.describe_demographics(inputs))


@router.get("/movies", summary="Movies whose title contains q")
def movies(q: str = fastapi.Query(..., max_length=100,
                                  description="part of a title; case, "
                                  "accents and punctuation ignored"),
           limit: int = fastapi.Query(10, ge=1, le=50), rec=Ready):
  return {"query": q, "items": rec.catalog.search(q, limit)}


@router.get("/movies/{movie_id}", summary="One movie")
def movie(movie_id: str = fastapi.Path(..., max_length=32), rec=Ready):
  if movie_id not in rec.catalog.movie_row:
    raise catalog.UnknownMovieError(f"unknown movie id {movie_id!r}")
  return catalog.movie_row(rec.catalog, movie_id)


@router.get("/similar", summary="Movies nearest to a movie")
def similar(movie_id: str = fastapi.Query(..., max_length=32),
            k: int = fastapi.Query(10, ge=1, le=MAX_K), rec=Ready):
  return {"movie_id": movie_id, "k": k, "items": rec.similar(movie_id, k)}


@router.get("/users/{user_id}/ratings", summary="A user's recent ratings")
def ratings(user_id: str = fastapi.Path(..., max_length=32),
            limit: int = fastapi.Query(20, ge=1, le=MAX_RATINGS), rec=Ready):
  user = rec.catalog.user(user_id)
  if user is None:
    raise catalog.UnknownUserError(f"unknown user id {user_id!r}")
  return {"user": user, "num_ratings": rec.catalog.num_ratings(user_id),
          "ratings": rec.catalog.recent_ratings(user_id, limit)}


@router.get("/docs", include_in_schema=False)
def docs(request: fastapi.Request):
  """Swagger UI from the package's files (FastAPI's default loads them
  from a CDN: a blank page offline)."""
  return openapi_docs.get_swagger_ui_html(
      openapi_url=request.app.openapi_url, title=request.app.title + " - API",
      swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
      swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
      swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")


@router.get("/", include_in_schema=False)
def index():
  return responses.FileResponse(os.path.join(STATIC_DIR, "index.html"))


def runs_loader(runs_dir: str, history: str = "all",
                num_candidates: int = 0) -> Callable[[State], object]:
  """A `create_app` loader: the newest complete export versions under
  RUNS, checked first (`export_check`: a missing or broken file raises
  its typed error naming it, before anything heavy loads). Called again
  by a reload: the recommender in `state` is returned as it is when the
  newest versions are the ones it serves."""
  def load(state: State):
    state.stage = "checking exports"
    found = export_check.check(runs_dir)
    state.components = {n: c.summary() for n, c in found.items()}
    problem = export_check.error(found)
    if problem is not None:
      raise problem
    current = state.recommender
    if current is not None and current.versions == {
        n: c.version for n, c in found.items()}:
      return current
    state.stage = "loading models"
    rec = recommender.Recommender.from_runs(
        runs_dir, history=history, num_candidates=num_candidates,
        found=found)
    rec.catalog.search("a", 1)  # builds the title index before /movies
    state.stage = "warming up"
    log.info("warm-up requests took %.1f s", rec.warm_up())
    return rec
  return load
