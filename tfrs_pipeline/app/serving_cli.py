"""`tfrs-pipeline serve`: the HTTP service (`serving.py`) on uvicorn,
serving the exports under `--runs` (`make train`).

    tfrs-pipeline serve --runs=runs --port=8000 [--history=all|train]
"""

import logging

from absl import flags
import uvicorn

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

from tfrs_pipeline.app import recommend_cli  # noqa: F401  (--runs, --history, --num_candidates)
from tfrs_pipeline.app import serving

FLAGS = flags.FLAGS

for _kind, _name, _default, _doc in (
    ("integer", "port", 8000, "HTTP port."),
    ("string", "host", "127.0.0.1", "Interface to bind (0.0.0.0: all)."),
    ("integer", "max_body_bytes", serving.MAX_BODY_BYTES,
     "Larger request bodies get 413."),
    ("string", "log_level", "info", "uvicorn log level."),
):
  if _name not in FLAGS:
    getattr(flags, f"DEFINE_{_kind}")(_name, _default, _doc)


def main(argv) -> None:
  del argv
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(name)s %(message)s")
  app = serving.create_app(
      serving.runs_loader(FLAGS.runs, FLAGS.history, FLAGS.num_candidates),
      FLAGS.max_body_bytes)
  uvicorn.run(app, host=FLAGS.host, port=FLAGS.port,
              log_level=FLAGS.log_level,
              access_log=FLAGS.log_level == "debug")
