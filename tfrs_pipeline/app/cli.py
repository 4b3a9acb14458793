"""`tfrs-pipeline` command line: a thin dispatcher over library functions.

    tfrs-pipeline data prepare|describe [--json]
    tfrs-pipeline eda
    tfrs-pipeline train retrieval|sources|ranking|all
    tfrs-pipeline bench
    tfrs-pipeline recommend | similar | serve

Each command is a `main(argv)` in a command module of this package, loaded
only when that command runs (`importlib`, so that `recommend` never loads
the bench or the trainers); its flags are defined on import or by the
command's flag function. `--help` shows just the command's flags.

Expected errors (`tfrs_pipeline.errors`: bad settings, malformed input
lines, missing data or exports, invalid requests) print one line
`error: ...` and exit with the error's status, never a traceback:

    2  bad setting or request (ConfigError, RequestError)
    3  malformed input data (InputError)
    4  missing data, run or export (MissingError)
"""

import importlib
import sys

from absl import app
from absl import flags

from tfrs_pipeline import errors

_TRAIN = "tfrs_pipeline.app.train_commands"
_DATA = "tfrs_pipeline.app.data_commands"
_RECOMMEND = "tfrs_pipeline.app.recommend_cli"

# words -> (module, main function, flag-defining function or None)
COMMANDS = {
    ("data", "prepare"): (_DATA, "prepare_main", None),
    ("data", "describe"): (_DATA, "describe_main", None),
    ("eda",): (_DATA, "eda_main", None),
    ("train", "retrieval"): (_TRAIN, "retrieval_main",
                             "define_retrieval_flags"),
    ("train", "sources"): (_TRAIN, "sources_main", "define_flags"),
    ("train", "ranking"): (_TRAIN, "ranking_main", "define_flags"),
    ("train", "all"): (_TRAIN, "all_main", "define_flags"),
    ("bench",): ("tfrs_pipeline.app.bench", "main", None),
    ("recommend",): (_RECOMMEND, "recommend_main", None),
    ("similar",): (_RECOMMEND, "similar_main", None),
    ("serve",): ("tfrs_pipeline.app.serving_cli", "main", None),
}

# The old name of `errors.ConfigError` (a command called with arguments
# that cannot work).
UsageError = errors.ConfigError


def _usage() -> str:
  lines = ["usage: tfrs-pipeline COMMAND [--flags]  (COMMAND --help for "
           "flags)", "", "commands:"]
  lines += [f"  {' '.join(words)}" for words in COMMANDS]
  return "\n".join(lines)


def run(argv=None) -> None:
  argv = list(sys.argv if argv is None else argv)
  words = [a for a in argv[1:3] if not a.startswith("-")]
  for n in (2, 1):
    key = tuple(words[:n])
    if key in COMMANDS:
      break
  else:
    print(_usage(), file=sys.stderr)
    sys.exit(0 if not words else 2)
  module_name, fn_name, define = COMMANDS[key]
  module = importlib.import_module(module_name)
  main = getattr(module, fn_name)
  if define:
    getattr(module, define)()
  rest = argv[1 + len(key):]
  if any(a in ("--help", "-h", "-?") for a in rest):
    _print_help(key, module)
    return

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


def _print_help(key, module) -> None:
  """The command's own flags and the shared data flags (absl's `--help`
  would list only the console script's)."""
  print(f"usage: tfrs-pipeline {' '.join(key)} [--flags]\n")
  doc = (module.__doc__ or "").strip()
  if doc:
    print(doc + "\n")
  for name in (module.__name__, *getattr(module, "HELP_MODULES", ()),
               "tfrs_pipeline.app.flags"):
    text = flags.FLAGS.module_help(name)
    if text:
      print(text + "\n")


if __name__ == "__main__":
  run()
