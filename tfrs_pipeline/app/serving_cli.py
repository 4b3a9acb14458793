"""`tfrs-pipeline serve`: the HTTP service (`serving.py`) on uvicorn,
serving the exports under `--runs` (`make train`).

    tfrs-pipeline serve --runs=runs --port=8000 [--history=all|train]

Flags: `flag_specs.serve`. The train/test split (what `--history train`
drops) is the runs' own (`run_config.split`).
"""

import logging

from absl import flags
import uvicorn

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

from tfrs_pipeline.app import run_config
from tfrs_pipeline.app import serving

FLAGS = flags.FLAGS  # defined by flag_specs (serve)


def main(argv) -> None:
  del argv
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(name)s %(message)s")
  split = run_config.split(FLAGS.runs, FLAGS.split)  # never from a flag
  logging.getLogger("tfrs_pipeline.app.serving").info(
      "serving the runs under %s (split %s, history %s)", FLAGS.runs,
      split or "not recorded", FLAGS.history)
  app = serving.create_app(
      serving.runs_loader(FLAGS.runs, FLAGS.history, FLAGS.num_candidates),
      FLAGS.max_body_bytes)
  uvicorn.run(app, host=FLAGS.host, port=FLAGS.port,
              log_level=FLAGS.log_level,
              access_log=FLAGS.log_level == "debug")
