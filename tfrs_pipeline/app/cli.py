"""`tfrs-pipeline` command line: a thin dispatcher over library functions.

    tfrs-pipeline data prepare|describe [--json]
    tfrs-pipeline eda
    tfrs-pipeline train retrieval|sources|ranking|all
    tfrs-pipeline bench
    tfrs-pipeline recommend | similar | serve

Each command is a `main(argv)` in a command module of this package, loaded
only when that command runs (`importlib`, so that `recommend` never loads
the bench or the trainers). Its flags come from `flag_specs` and are
defined before that import, so `--help` lists just the command's flags
without importing TensorFlow.

Expected errors (`tfrs_pipeline.errors`: bad settings, malformed input
lines, missing data or exports, invalid requests) print one line
`error: ...` and exit with the error's status, never a traceback:

    2  bad setting or request (ConfigError, RequestError)
    3  malformed input data (InputError)
    4  missing data, run or export (MissingError)
"""

import collections
import importlib
import os
import shutil
import sys
import textwrap

from absl import app

from tfrs_pipeline import errors
from tfrs_pipeline.app import flag_specs

_TRAIN = "tfrs_pipeline.app.train_commands"
_DATA = "tfrs_pipeline.app.data_commands"
_RECOMMEND = "tfrs_pipeline.app.recommend_cli"

Command = collections.namedtuple("Command", "module main summary flags")

COMMANDS = {
    ("data", "prepare"): Command(
        _DATA, "prepare_main", "Build (or reuse) the TFDS datasets from the "
        "raw MovieLens-1M files.", flag_specs.data_prepare),
    ("data", "generate"): Command(
        _DATA, "generate_main", "Write generated raw files in the ML-10M, "
        "ML-20M or ML-25M layout (skewed like MovieLens; for scale tests).",
        flag_specs.data_generate),
    ("data", "describe"): Command(
        _DATA, "describe_main", "Counts of the built dataset: ratings, users, "
        "movies, train/test sizes, skipped raw lines.",
        flag_specs.data_describe),
    ("eda",): Command(
        _DATA, "eda_main", "Exploratory analysis of the raw files: plots and "
        "a report under --out_dir.", flag_specs.eda),
    ("train", "retrieval"): Command(
        _TRAIN, "retrieval_main", "Train the two-tower retrieval model and "
        "export it with its ScaNN index into RUN_DIR/export.",
        flag_specs.train_retrieval),
    ("train", "sources"): Command(
        _TRAIN, "sources_main", "Fit the served candidate sources (EASE, "
        "EASE over liked movies, demographic popularity) and write the "
        "catalogue serving reads.", flag_specs.train_sources),
    ("train", "ranking"): Command(
        _TRAIN, "ranking_main", "Train the ranker on the candidate lists of "
        "the two-stage sources (needs a retrieval run trained with the same "
        "data flags) and export it.", flag_specs.train_ranking),
    ("train", "all"): Command(
        _TRAIN, "all_main", "Train retrieval, sources and ranking in order "
        "with their default configurations (make train).",
        flag_specs.train_all),
    ("bench",): Command(
        "tfrs_pipeline.app.bench", "main", "Quality and speed on the real "
        "data beside the baselines: report.json, report.md and plots.",
        flag_specs.bench),
    ("recommend",): Command(
        _RECOMMEND, "recommend_main", "Top-k movies for a known user "
        "(--user_id) or a new one (--ratings and/or demographics), from the "
        "exports under --runs.", flag_specs.recommend),
    ("similar",): Command(
        _RECOMMEND, "similar_main", "Movies most similar to --movie_id by "
        "their two-tower embeddings.", flag_specs.similar),
    ("serve",): Command(
        "tfrs_pipeline.app.serving_cli", "main", "The HTTP service and web "
        "page over the exports under --runs (http://HOST:PORT/, API docs "
        "at /docs).", flag_specs.serve),
}

# The old name of `errors.ConfigError` (a command called with arguments
# that cannot work).
UsageError = errors.ConfigError


def _usage() -> str:
  indent = max(len(" ".join(w)) for w in COMMANDS) + 4
  width = min(shutil.get_terminal_size((100, 24)).columns, 100)
  lines = ["usage: tfrs-pipeline COMMAND [--flag=value ...]  "
           "(COMMAND --help: its flags)", "", "commands:"]
  for words, c in COMMANDS.items():
    lines += textwrap.wrap(c.summary, width,
                           initial_indent=f"  {' '.join(words)}".ljust(indent),
                           subsequent_indent=" " * indent)
  return "\n".join(lines)


def run(argv=None) -> None:
  """The `tfrs-pipeline` entry point. Output piped into a reader that
  stops early (`| head`) ends the command quietly, as the Python docs
  advise for SIGPIPE, instead of a BrokenPipeError traceback."""
  try:
    _run(argv)
  except BrokenPipeError:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # Python's exit flush fails else
    sys.exit(1)


def _run(argv=None) -> None:
  argv = list(sys.argv if argv is None else argv)
  words = [a for a in argv[1:3] if not a.startswith("-")]
  for n in (2, 1):
    key = tuple(words[:n])
    if key in COMMANDS:
      break
  else:
    help_asked = any(a in ("--help", "-h", "-?", "help") for a in argv[1:])
    print(_usage(), file=sys.stdout if help_asked else sys.stderr)
    sys.exit(0 if help_asked or not words else 2)
  command = COMMANDS[key]
  groups = command.flags()
  flag_specs.define(groups)
  rest = argv[1 + len(key):]
  if any(a in ("--help", "-h", "-?", "--helpshort") for a in rest):
    print(flag_specs.help_text(key, command.summary, groups))
    return
  main = getattr(importlib.import_module(command.module), command.main)

  def guarded(args):
    try:
      return main(args)
    except errors.Error as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(e.exit_code)

  # TFDS logs every dataset it opens at INFO: default to warnings (a later
  # --verbosity on the command line wins).
  app.run(guarded,
          argv=[f"tfrs-pipeline {' '.join(key)}", "--verbosity=-1"] + rest)


if __name__ == "__main__":
  run()
