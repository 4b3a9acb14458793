"""`tfrs-pipeline` command line: a thin dispatcher over library functions.

    tfrs-pipeline data prepare|describe [--json]
    tfrs-pipeline eda
    tfrs-pipeline train retrieval|sources|ranking|all
    tfrs-pipeline bench
    tfrs-pipeline recommend | similar | serve

Each command lives in a module with a `main(argv)` that defines its absl
flags on import, or in a `define_flags()` that is called only when that
command runs (so library users such as the bench can import several
trainers without flag clashes); `--help` shows just the command's flags. Expected errors (bad input lines, missing data) print one clear
line and exit with status 2 instead of a traceback.
"""

import importlib
import sys

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

COMMANDS = {
    ("data", "prepare"): ("tfrs_pipeline.data_commands", "prepare_main"),
    ("data", "describe"): ("tfrs_pipeline.data_commands", "describe_main"),
    ("eda",): ("tfrs_pipeline.data_commands", "eda_main"),
    ("train", "retrieval"): ("retrieval.train", "main"),
    ("train", "sources"): ("tfrs_pipeline.train_commands", "sources_main"),
    ("train", "ranking"): ("tfrs_pipeline.train_commands", "ranking_main"),
    ("train", "all"): ("tfrs_pipeline.train_commands", "all_main"),
    ("bench",): ("tfrs_pipeline.bench", "main"),
    ("recommend",): ("tfrs_pipeline.recommend", "recommend_main"),
    ("similar",): ("tfrs_pipeline.recommend", "similar_main"),
    ("serve",): ("tfrs_pipeline.serving", "main"),
}


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
  module_name, fn_name = COMMANDS[key]
  from absl import app  # pylint: disable=g-import-not-at-top
  from data import raw  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(module_name)
  main = getattr(module, fn_name)
  if hasattr(module, "define_flags"):
    module.define_flags()
  rest = argv[1 + len(key):]
  if any(a in ("--help", "-h", "-?") for a in rest):
    _print_help(key, module)
    return

  def guarded(args):
    try:
      return main(args)
    except (raw.BadInputError, raw.MissingDataError, UsageError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  # TFDS logs every dataset it opens at INFO: default to warnings (a later
  # --verbosity on the command line wins).
  app.run(guarded,
          argv=[f"tfrs-pipeline {' '.join(key)}", "--verbosity=-1"] + rest)


def _print_help(key, module) -> None:
  """The command's own flags and the shared data flags (absl's `--help`
  would list only the console script's)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  print(f"usage: tfrs-pipeline {' '.join(key)} [--flags]\n")
  doc = (module.__doc__ or "").strip()
  if doc:
    print(doc + "\n")
  for name in (module.__name__, *getattr(module, "HELP_MODULES", ()),
               "tfrs_pipeline.flags"):
    text = flags.FLAGS.module_help(name)
    if text:
      print(text + "\n")


class UsageError(ValueError):
  """A command was called with arguments that cannot work."""


if __name__ == "__main__":
  run()
