"""The service while its exports are broken (`serve
--on_broken_export=unavailable`): no models, no TensorFlow.

When `export_check` finds a missing or broken file, nothing can be
loaded, so the server opens its port at once (about a second after
start, not the seconds a TensorFlow import takes) with this app: every
route answers 503 with the problem, which names the file, and `/health`
also lists every component with its state and version (the full
service's format). Fix the export and restart the server;
`/admin/reload` is 404 unless `--admin_reload` is on, then 503 with
that advice.
"""

from __future__ import annotations

from typing import Dict

import fastapi
from fastapi import responses

from tfrs_pipeline import errors
from tfrs_pipeline.app import export_check


def create_app(problem: errors.Error,
               found: Dict[str, export_check.Component],
               admin_reload: bool = False) -> fastapi.FastAPI:
  """An app answering 503 `{"error", "status": "failed", "detail",
  "components"}` on every route (`problem`: `export_check.error`)."""
  app = fastapi.FastAPI(title="tfrs-pipeline (exports unavailable)",
                        docs_url=None, redoc_url=None, openapi_url=None)
  body = {"error": str(problem), "status": "failed", "detail": str(problem),
          "components": {n: c.summary() for n, c in found.items()}}

  @app.post("/admin/reload")
  def reload():
    if not admin_reload:
      return responses.JSONResponse({"error": "not found"}, status_code=404)
    return responses.JSONResponse(
        {**body, "error": f"{problem}; fix the export and restart the "
                          "server (a server started without models cannot "
                          "reload)"}, status_code=503)

  @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE",
                                          "PATCH", "HEAD", "OPTIONS"])
  def unavailable(path: str):
    del path
    return responses.JSONResponse(body, status_code=503)

  return app
