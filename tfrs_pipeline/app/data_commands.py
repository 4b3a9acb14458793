"""`tfrs-pipeline data prepare|generate|describe` and `tfrs-pipeline eda`."""

import json
import sys
import time

from absl import flags

from data import eda, generate, raw
from tfrs_pipeline import dataset

FLAGS = flags.FLAGS  # defined by flag_specs (data_prepare, ...)


def _log(*args):
  # Progress goes to stderr so `describe --json` stays parseable.
  print(*args, file=sys.stderr)


def prepare_main(argv):
  del argv
  meta = dataset.prepare(FLAGS.data_dir, FLAGS.raw_data, FLAGS.configs,
                         FLAGS.on_bad_line, FLAGS.overwrite, log=_log)
  first = next(iter(meta.values()))
  _log(f"[data] ready: {first['ratings']:,} ratings, {first['users']:,} "
       f"users, {first['movies']:,} movies; skipped lines: "
       f"{first['skipped']['skipped_total']}")


def generate_main(argv):
  del argv
  start = time.time()
  paths = generate.generate(FLAGS.layout, FLAGS.ratings, FLAGS.out_dir,
                            FLAGS.seed)
  seconds = time.time() - start
  _log(f"[data] wrote {FLAGS.ratings:,} ratings in {seconds:.1f} s "
       f"({FLAGS.ratings / max(seconds, 1e-9):,.0f} ratings/s): "
       + ", ".join(paths.values()))


def describe_main(argv):
  del argv
  counts = dataset.describe(FLAGS.data_dir, FLAGS.raw_data, FLAGS.split,
                            FLAGS.on_bad_line, log=_log)
  if FLAGS.json:
    print(json.dumps(counts, indent=2))
    return
  for key, value in counts.items():
    if isinstance(value, dict):
      value = ", ".join(f"{k}={v}" for k, v in value.items())
    elif isinstance(value, int):
      value = f"{value:,}"
    print(f"{key:>20}: {value}")


def eda_main(argv):
  del argv
  raw_dir = raw.resolve_raw_dir(FLAGS.raw_data)
  if raw_dir is None:
    raise raw.MissingDataError("eda reads the raw files. " + raw.HOW_TO_SUPPLY)
  eda.run_eda(raw_dir, FLAGS.out_dir, FLAGS.on_bad_line,
              min_count=FLAGS.min_count)

