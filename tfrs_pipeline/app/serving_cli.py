"""`tfrs-pipeline serve`: the HTTP service (`serving.py`) on uvicorn,
serving the newest complete export versions under `--runs` (`make train`).

    tfrs-pipeline serve --runs=runs --port=8000 [--history=all|train]
        [--on_broken_export=exit|unavailable] [--admin_reload]

Before anything heavy loads (this module imports no TensorFlow; the
service module is imported after the check), `export_check.check` looks
at every file the server needs. A missing or broken one exits at once
with its typed error naming the file (exit code 4 missing, 3 broken),
or with `--on_broken_export=unavailable` the server stays up answering
503 with the reason (`unavailable.py`: no TensorFlow, the port opens in
about a second). A failure while loading the models exits the same
way (after the port was opened). Flags: `flag_specs.serve`.
"""

import importlib
import logging

from absl import flags
import uvicorn

from tfrs_pipeline import errors
from tfrs_pipeline.app import export_check, run_config, unavailable

FLAGS = flags.FLAGS  # defined by flag_specs (serve)
SERVING = "tfrs_pipeline.app.serving"  # imported after the check
log = logging.getLogger("tfrs_pipeline.app.serving")


def _as_error(e: BaseException) -> errors.Error:
  if isinstance(e, errors.Error):
    return e
  return errors.InputError(
      f"loading the exports under {FLAGS.runs} failed: "
      f"{type(e).__name__}: {e}")


def main(argv) -> None:
  del argv
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(name)s %(message)s")
  split = run_config.split(FLAGS.runs, FLAGS.split)  # never from a flag
  log.info("serving the runs under %s (split %s, history %s)", FLAGS.runs,
           split or "not recorded", FLAGS.history)
  exit_on_failure = FLAGS.on_broken_export == "exit"
  found = export_check.check(FLAGS.runs)
  problem = export_check.error(found)
  if problem is not None:
    if exit_on_failure:
      raise problem
    log.warning("answering 503: %s", problem)
    _server(unavailable.create_app(problem, found, FLAGS.admin_reload)).run()
    return
  serving = importlib.import_module(SERVING)
  if not serving.recommender.set_op_threads(FLAGS.intra_op_threads):
    log.warning("--intra_op_threads: TensorFlow had already started")
  failure = {}
  server = None

  def on_failure(e: BaseException) -> None:
    failure["error"] = e
    server.should_exit = True

  app = serving.create_app(
      serving.runs_loader(FLAGS.runs, FLAGS.history, FLAGS.num_candidates),
      FLAGS.max_body_bytes,
      on_failure=on_failure if exit_on_failure else None,
      admin_reload=FLAGS.admin_reload)
  server = _server(app)
  server.run()
  if "error" in failure:
    raise _as_error(failure["error"])


def _server(app) -> uvicorn.Server:
  return uvicorn.Server(uvicorn.Config(
      app, host=FLAGS.host, port=FLAGS.port, log_level=FLAGS.log_level,
      access_log=FLAGS.log_level == "debug"))
