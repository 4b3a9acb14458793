"""Every command's flags and its `--help`, without importing TensorFlow.

A configuration dataclass (DataConfig, RetrievalConfig, RankingConfig,
CascadeConfig) gives one flag per field: its default, its type and, as
the help, the field's docstring, read from the source
(`source_reader`); closed sets of values become enum flags. The other
flags are declared here. `define` registers a command's flags (and
replaces a flag of the same name another command defined differently,
for in-process callers such as the tests); `help_text` lists exactly
those flags.
"""

from __future__ import annotations

import dataclasses
import shutil
import textwrap
from typing import Callable, Dict, List, Sequence, Tuple

from absl import flags

from tfrs_pipeline.app import source_reader

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Flag:
  """One command-line flag: `kind` is string, integer, float, bool, list
  or enum (`choices`; a list flag may also name its allowed items)."""
  name: str
  kind: str
  default: object
  doc: str
  choices: Tuple[str, ...] = ()


Group = Tuple[str, List[Flag]]  # (title, flags)

_KINDS = {bool: "bool", int: "integer", float: "float", tuple: "list",
          list: "list", str: "string"}


def _kind(field: source_reader.Field) -> str:
  if field.default is not None:
    return _KINDS[type(field.default)]
  for name, kind in (("int", "integer"), ("float", "float"),
                     ("bool", "bool")):
    if f"[{name}]" in field.annotation:
      return kind
  return "string"


def _values(path) -> Tuple[str, ...]:
  """A tuple, or "module.CONSTANT" read from the source."""
  if isinstance(path, str):
    module, _, name = path.rpartition(".")
    path = source_reader.constant(module, name)
  return tuple(str(v) for v in path)


def config_flags(module: str, cls: str, only: Sequence[str] = (),
                 skip: Sequence[str] = (),
                 choices: Dict[str, object] = None) -> List[Flag]:
  """One flag per field of the dataclass `module.cls` (those in `only`
  if given, minus `skip`); `choices`: field -> its allowed values (a
  tuple or the path of the constant the class checks them against)."""
  out = []
  for field in source_reader.dataclass_fields(module, cls):
    if field.name in skip or (only and field.name not in only):
      continue
    kind, allowed = _kind(field), ()
    if field.name in (choices or {}):
      allowed = _values(choices[field.name])
      kind = "list" if kind == "list" else "enum"
    default = (list(field.default) if kind == "list" else field.default)
    out.append(Flag(field.name, kind, default, field.doc, allowed))
  if only:
    out.sort(key=lambda f: list(only).index(f.name))
  return out


# --------------------------------------------------------------------------
# The flags of each command.

_DATA_CHOICES = {"split": "data.splits.SPLITS",
                 "on_bad_line": "data.raw.ON_BAD_LINE_CHOICES"}
DATA_FLAGS = ("raw_data", "data_dir", "split", "on_bad_line", "seed",
              "label_share", "validation_share", "holdout_users",
              "cold_users")
_RETRIEVAL = ("retrieval.model", "RetrievalConfig")
_RANKING = ("ranking.model", "RankingConfig")
_CASCADE = ("tfrs_pipeline.app.cascade", "CascadeConfig")
_LR = "tfrs_pipeline.optim.LR_SCHEDULES"


def data_flags(*names: str) -> Group:
  return ("data (DataConfig)", config_flags(
      "tfrs_pipeline.pipeline", "DataConfig", only=names or DATA_FLAGS,
      choices=_DATA_CHOICES))


def _retrieval() -> Group:
  return ("retrieval model (RetrievalConfig)", config_flags(
      *_RETRIEVAL, skip=("seed",), choices={
          "examples": "retrieval.model.EXAMPLES",
          "negatives": "retrieval.model.NEGATIVES", "lr_schedule": _LR}))


def _ranking() -> Group:
  return ("ranking model (RankingConfig)", config_flags(
      *_RANKING, skip=("seed",), choices={
          "model": "ranking.model.MODELS",
          "examples": "ranking.model.EXAMPLES",
          "gain": "ranking.listwise.GAINS",
          "structure": "ranking.model.STRUCTURES",
          "negative_sampling": "ranking.model.NEGATIVE_SAMPLINGS",
          "score": "ranking.model.SCORES", "lr_schedule": _LR}))


def _cascade() -> Group:
  return ("candidate sources (CascadeConfig)",
          config_flags(*_CASCADE, skip=("seed",)))


def _run_dir(default: str) -> Flag:
  return Flag("run_dir", "string", default,
              "Run directory: config.json, checkpoints, TensorBoard logs, "
              "metrics.json and the export.")


def _runs(doc: str = "Directory of the retrieval/, sources/ and "
          "ranking/ runs (make train); only their exports and "
          "config.json are read.") -> Flag:
  return Flag("runs", "string", "runs", doc)


def _k() -> Flag:
  return Flag("k", "integer", 10, "How many movies, 1.."
              f"{source_reader.constant('tfrs_pipeline.app.recommender', 'MAX_K')}.")


def _table() -> List[Flag]:
  return [Flag("json", "bool", False,
               "Print a JSON list instead of a table."),
          Flag("full", "bool", False,
               "Never shorten a table cell (it is cut to the terminal "
               "width only when stdout is a terminal).")]


def _served() -> List[Flag]:
  """Flags of the commands that serve the exports (recommend, serve)."""
  return [
      Flag("history", "enum", "all",
           "Movies a known user is never recommended: those rated in "
           "`all` the data (train + test) or in the `train` split only "
           "(the offline evaluation's view).",
           _values("tfrs_pipeline.app.catalog.HISTORY_CHOICES")),
      Flag("intra_op_threads", "integer", source_reader.constant(
          "tfrs_pipeline.app.recommender", "SERVING_INTRA_OP_THREADS"),
           "TensorFlow threads per op while serving; 0: TensorFlow's "
           "default (one per core). A request's ops are small, so 1 is "
           "the fastest here (concurrent requests are batched instead)."),
      Flag("num_candidates", "integer", source_reader.constant(
          "tfrs_pipeline.app.recommender", "DEFAULT_CANDIDATES"),
           "Merged candidates ranked per request; 0: the trained "
           "CascadeConfig.serve_list_size."),
      Flag("split", "enum", None,
           "Not needed: the split is read from the runs "
           "(RUNS/sources/config.json); if given it must match it.",
           _values("data.splits.SPLITS"))]


def request_flags(inputs) -> List[Flag]:
  """--age --gender ...: a new user's inputs (`features.request_inputs()`
  or `source_reader.request_inputs()`)."""
  return [Flag(i.request, "integer" if i.request_type is int else "string",
               None, f"New user: {i.request_doc or i.doc}.")
          for i in inputs]


def data_prepare() -> List[Group]:
  configs = _values("data.splits.SPLITS") + ("movies", "users")
  return [("data prepare", [
      Flag("configs", "list", list(_values(
          "tfrs_pipeline.dataset.DEFAULT_CONFIGS")),
           "TFDS configs to build, comma-separated.", configs),
      Flag("overwrite", "bool", False,
           "Rebuild even if the build is current.")]),
          data_flags("raw_data", "data_dir", "on_bad_line")]


def data_generate() -> List[Group]:
  return [("data generate", [
      Flag("layout", "enum", "ml-25m", "Layout of the raw files written.",
           _values("data.generate.LAYOUT_NAMES")),
      Flag("ratings", "integer", 1_000_000,
           "Number of ratings (users and movies scale with it as in "
           "ML-25M)."),
      Flag("out_dir", "string", "generated",
           "Directory to write LAYOUT's folder into (a --raw_data)."),
      Flag("seed", "integer", 0, "Seed: the same seed writes the same "
           "bytes.")])]


def data_describe() -> List[Group]:
  return [("data describe", [Flag("json", "bool", False,
                                  "Print JSON only.")]),
          data_flags("raw_data", "data_dir", "split", "on_bad_line")]


def eda() -> List[Group]:
  return [("eda", [
      Flag("out_dir", "string", "reports/eda",
           "Output directory of the plots and report.md."),
      Flag("min_count", "integer", 50,
           "Minimum ratings of a movie (or person) in the best-rated "
           "rankings.")]),
          data_flags("raw_data", "on_bad_line")]


def train_retrieval() -> List[Group]:
  return [("train retrieval", [_run_dir("runs/retrieval")]), _retrieval(),
          data_flags()]


def train_ranking() -> List[Group]:
  return [("train ranking", [
      _run_dir("runs/ranking"),
      Flag("retrieval_run", "string", "runs/retrieval",
           "Retrieval run whose export is the two-tower source (not read "
           "with --examples ratings).")]),
          _ranking(), _cascade(), data_flags()]


def train_sources() -> List[Group]:
  return [("train sources", [
      Flag("sources_run", "string", "runs/sources",
           "Run directory of the fitted sources and the catalogue.")]),
          _cascade(), data_flags()]


def train_all() -> List[Group]:
  return [("train all", [_runs(
      "Where the retrieval/, sources/ and ranking/ runs go (default "
      "configurations; use the other train commands to change them).")]),
          data_flags()]


def bench() -> List[Group]:
  sections = _values("tfrs_pipeline.app.bench.SECTIONS")
  return [("bench", [
      Flag("out_dir", "string", "bench",
           "Where report.json, report.md, the plots and the runs go."),
      Flag("sections", "list", list(sections),
           "Sections to run, comma-separated.", sections),
      Flag("synthetic_vectors", "integer", 1_000_000,
           "index: size of the synthetic corpus."),
      Flag("ease_l2", "list", ["100", "250", "500", "1000", "3000", "10000"],
           "retrieval: EASE lambdas to sweep, comma-separated."),
      Flag("tutorial_epochs", "list", ["5"],
           "retrieval: epochs of the TFRS-tutorial two-tower, "
           "comma-separated (32 shows it overfit, ~10 min more on 2 "
           "cores)."),
      Flag("dcn_tutorial_seeds", "integer", 3,
           "ranking: seeds of the TFRS-tutorial DCN."),
      Flag("load_requests", "integer", 400, "e2e: /recommend requests."),
      Flag("load_concurrency", "integer", 8, "e2e: concurrent clients."),
      Flag("load_invalid_share", "float", 0.4,
           "e2e: share of invalid requests in the mixed load at 16 "
           "concurrent clients."),
      Flag("e2e_holdout_users", "float", 0.1,
           "e2e: share of the users with ratings left out of every fit "
           "(evaluated as new users).")]),
          data_flags()]


def recommend(inputs=None) -> List[Group]:
  inputs = source_reader.request_inputs() if inputs is None else inputs
  return [("recommend", [
      _runs(), Flag("user_id", "string", None, "A known MovieLens user id."),
      _k(), *_table()]),
          ("new user (instead of --user_id)", [
              *request_flags(inputs),
              Flag("ratings", "string", None,
                   "Rated movie ids, comma-separated, each with an "
                   "optional :rating 1-5, e.g. 2571:5,1:4,260 (with or "
                   "without the demographics above).")]),
          ("serving", _served())]


def similar() -> List[Group]:
  return [("similar", [
      _runs(), Flag("movie_id", "string", None, "The movie id."), _k(),
      Flag("metric", "enum", "cosine",
           "Similarity of the candidate embeddings.", ("cosine", "dot")),
      *_table()])]


def serve() -> List[Group]:
  return [("serve", [
      _runs(),
      Flag("host", "string", "127.0.0.1",
           "Interface to bind; 0.0.0.0: all (reachable from other "
           "machines)."),
      Flag("port", "integer", 8000, "HTTP port."),
      Flag("max_body_bytes", "integer", source_reader.constant(
          "tfrs_pipeline.app.serving", "MAX_BODY_BYTES"),
           "Larger request bodies get 413."),
      Flag("log_level", "enum", "info", "uvicorn log level.",
           ("critical", "error", "warning", "info", "debug", "trace")),
      Flag("on_broken_export", "enum", "exit",
           "When an export file the server needs is missing or broken "
           "(checked before loading, each problem naming its file): "
           "`exit` non-zero at once, or stay up `unavailable`, answering "
           "503 with the reason (and /health naming the component).",
           ("exit", "unavailable")),
      Flag("admin_reload", "bool", False,
           "Enable POST /admin/reload: load the newest complete export "
           "versions and swap them in without a restart (requests in "
           "flight finish on the old ones).")]),
          ("serving", _served())]


# --------------------------------------------------------------------------
# Definition and help.

_DEFINED: Dict[str, Flag] = {}


def define(groups: Sequence[Group]) -> None:
  """Registers the groups' flags with absl (idempotent; a flag of the
  same name defined differently before is replaced)."""
  for _, group in groups:
    for flag in group:
      if _DEFINED.get(flag.name) == flag and flag.name in FLAGS:
        continue
      if flag.name in FLAGS:
        delattr(FLAGS, flag.name)
      if flag.kind == "enum":
        flags.DEFINE_enum(flag.name, flag.default, list(flag.choices),
                          flag.doc)
      else:
        getattr(flags, f"DEFINE_{flag.kind}")(flag.name, flag.default,
                                              flag.doc)
      _DEFINED[flag.name] = flag


def _show(value) -> str:
  if value is None:
    return "none"
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (list, tuple)):
    return ",".join(str(v) for v in value) or "empty"
  return str(value) if value != "" else "empty"


def _left(flag: Flag) -> str:
  if flag.kind == "bool":
    return f"--[no]{flag.name}"
  metavar = {"string": "TEXT", "integer": "INT", "float": "NUMBER",
             "list": "A,B,..."}.get(flag.kind)
  if flag.kind == "string" and flag.name.endswith(
      ("dir", "run", "runs", "raw_data")):
    metavar = "DIR"
  if flag.kind == "enum":
    metavar = "{" + ",".join(flag.choices) + "}"
  return f"--{flag.name}={metavar}"


def describe(flag: Flag) -> str:
  """The flag's one-paragraph help: doc, allowed items, default."""
  text = " ".join(flag.doc.split())
  if flag.kind == "list" and flag.choices:
    text += f" Items: {', '.join(flag.choices)}."
  return f"{text} (default: {_show(flag.default)})"


def help_text(words: Sequence[str], summary: str,
              groups: Sequence[Group], width: int = 0) -> str:
  """`tfrs-pipeline WORDS --help`: usage, summary, the flags by group."""
  width = width or min(shutil.get_terminal_size((100, 24)).columns, 100)
  lines = [f"usage: tfrs-pipeline {' '.join(words)} [--flag=value ...]", ""]
  lines += textwrap.wrap(summary, width) + [""]
  for title, group in groups:
    lines.append(f"{title}:")
    for flag in group:
      left = f"  {_left(flag)}"
      body = textwrap.wrap(describe(flag), max(width - 26, 30),
                           break_long_words=False, break_on_hyphens=False)
      if len(left) > 23:
        lines.append(left)
        lines += [" " * 26 + b for b in body]
      else:
        lines.append(left.ljust(26) + body[0])
        lines += [" " * 26 + b for b in body[1:]]
    lines.append("")
  lines.append("global: --verbosity=N  absl log level (default: -1, "
               "warnings and errors)")
  return "\n".join(lines)


Spec = Callable[[], List[Group]]
