"""The `tfrs-pipeline` CLI: per-command help from the configuration
dataclasses (read from the source, without TensorFlow), no CUDA probe
noise on CPU machines, the train/test split read from the runs."""

import dataclasses
import glob
import json
import os
import re
import subprocess
import sys
import time

from absl import flags
import pytest

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
from data import movielens_enriched, raw, splits
from ranking import listwise
from ranking import model as ranking_model
from retrieval import model as retrieval_model
from tfrs_pipeline import dataset, errors, features, optim, pipeline
from tfrs_pipeline.app import bench, cascade, catalog, cli, flag_specs
from tfrs_pipeline.app import flags as common
from tfrs_pipeline.app import recommender, run_config, serving
from tfrs_pipeline.app import source_reader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSOLE = os.path.join(os.path.dirname(sys.executable), "tfrs-pipeline")
FLAG_LINE = re.compile(r"^  --(?:\[no\])?(\w+)")

_HELP_ALL = """
import json, sys, time
from tfrs_pipeline.app import cli
out = {}
for key in cli.COMMANDS:
  start = time.perf_counter()
  cli.run(["tfrs-pipeline", *key, "--help"])
  out[" ".join(key)] = time.perf_counter() - start
print(json.dumps({"seconds": out, "tensorflow": "tensorflow" in sys.modules,
                  "modules": sorted(m for m in sys.modules if m.startswith(
                      ("retrieval.", "ranking.", "data.",
                       "tfrs_pipeline.")))}),
      file=sys.stderr)
"""


@pytest.fixture(scope="module")
def helps():
  """Each command's --help, all produced in one fresh process."""
  p = subprocess.run([sys.executable, "-c", _HELP_ALL], capture_output=True,
                     text=True, timeout=120, cwd=ROOT,
                     env={**os.environ, "COLUMNS": "100"})
  assert p.returncode == 0, p.stderr[-3000:]
  texts = re.split(r"^(?=usage: tfrs-pipeline )", p.stdout, flags=re.M)[1:]
  return {" ".join(k): t for k, t in zip(cli.COMMANDS, texts)}, json.loads(
      p.stderr.strip().splitlines()[-1])


def listed(text):
  return [m.group(1) for m in map(FLAG_LINE.match, text.splitlines()) if m]


def spec_flags(key):
  return [f for _, group in cli.COMMANDS[key].flags() for f in group]


def test_help_needs_no_tensorflow(helps):
  texts, info = helps
  assert set(texts) == {" ".join(k) for k in cli.COMMANDS}
  assert info["tensorflow"] is False
  # No command module, stage or core module was imported to answer.
  assert info["modules"] == ["tfrs_pipeline.app", "tfrs_pipeline.app.cli",
                             "tfrs_pipeline.app.flag_specs",
                             "tfrs_pipeline.app.source_reader",
                             "tfrs_pipeline.errors"], info
  assert max(info["seconds"].values()) < 0.5, info["seconds"]
  # The console script, as a user runs it: well under 2 s.
  start = time.perf_counter()
  p = subprocess.run([CONSOLE, "train", "ranking", "--help"],
                     capture_output=True, text=True, timeout=60)
  seconds = time.perf_counter() - start
  assert p.returncode == 0 and "--model={mmoe,dcn,widedeep,deepfm}" in p.stdout, p.stderr
  assert p.stderr == "" and seconds < 2.0, (seconds, p.stderr)


def test_help_into_a_closed_pipe_ends_quietly():
  # As `... --help | head -1` when head has gone: the reader closes the
  # pipe before the command writes. No BrokenPipeError traceback.
  p = subprocess.Popen([CONSOLE, "train", "retrieval", "--help"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  p.stdout.close()
  err = p.stderr.read().decode()
  assert p.wait(60) == 1
  assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_each_command_lists_only_its_flags(helps):
  texts, _ = helps
  for key in cli.COMMANDS:
    names = listed(texts[" ".join(key)])
    assert names == [f.name for f in spec_flags(key)], key
    assert len(names) == len(set(names)), key
  def shown(words):
    return set(listed(texts[words]))
  data = set(flag_specs.DATA_FLAGS)
  assert shown("data prepare") == {"configs", "overwrite", "raw_data",
                                   "data_dir", "on_bad_line"}
  assert shown("data describe") == {"json", "raw_data", "data_dir",
                                    "split", "on_bad_line"}
  assert shown("eda") == {"out_dir", "min_count", "raw_data", "on_bad_line"}
  assert shown("train all") == {"runs"} | data  # no model flags it ignores
  retrieval = {f.name for f in dataclasses.fields(
      retrieval_model.RetrievalConfig)} - {"seed"}
  assert shown("train retrieval") == {"run_dir"} | retrieval | data
  ranking = {f.name for f in dataclasses.fields(
      ranking_model.RankingConfig)} | {f.name for f in dataclasses.fields(
          cascade.CascadeConfig)}
  assert shown("train ranking") == ({"run_dir", "retrieval_run"}
                                    | ranking - {"seed"} | data)
  assert not shown("similar") & {"user_id", "ratings", "age", "history"}
  assert not shown("recommend") & {"movie_id", "metric", "port"}
  assert {"split", "history", "port", "host"} <= shown("serve")
  assert not shown("serve") & {"k", "user_id", "epochs", "raw_data"}
  assert not shown("bench") & {"epochs", "model", "run_dir"}


def test_every_flag_is_described(helps):
  texts, _ = helps
  for key in cli.COMMANDS:
    text = texts[" ".join(key)]
    for flag in spec_flags(key):
      assert flag.doc and flag.doc.endswith((".", ")")), (key, flag)
      assert len(flag.doc) < 300, (key, flag.name)  # one paragraph
      for note in ("README", "TODO", "validation split", "bench run",
                   "previous"):
        assert note not in flag.doc, (key, flag.name, note)
      assert "(default: " in flag_specs.describe(flag), flag
      if flag.kind == "enum":
        assert "{" + ",".join(flag.choices) + "}" in text, (key, flag)
      if flag.kind == "list" and flag.choices:
        assert "Items: " + ", ".join(flag.choices) in " ".join(
            text.split()), (key, flag)
    # Help of every flag, its default included: from the flag's own lines.
    body = " ".join(text.split())
    for flag in spec_flags(key):
      assert " ".join(flag_specs.describe(flag).split()) in body, flag
  assert "(default: runs/retrieval)" in texts["train retrieval"]
  assert "(default: runs/ranking)" in texts["train ranking"]


_CONFIGS = ((retrieval_model, "RetrievalConfig"), (ranking_model,
                                                    "RankingConfig"),
            (pipeline, "DataConfig"), (cascade, "CascadeConfig"))


@pytest.mark.parametrize("module,name", _CONFIGS)
def test_source_reading_matches_the_classes(module, name):
  cls = getattr(module, name)
  read = source_reader.dataclass_fields(module.__name__, name)
  live = dataclasses.fields(cls)
  assert [f.name for f in read] == [f.name for f in live]
  defaults = cls()
  for field in read:
    value = getattr(defaults, field.name)
    assert field.default == value or (
        isinstance(value, tuple) and tuple(field.default) == value), field
    assert field.doc, f"{name}.{field.name} has no docstring"


def test_enum_choices_are_the_checked_values():
  """Each enum flag of a config field offers exactly the constant its
  class validates against; the class refuses other values."""
  constants = {"retrieval.model.EXAMPLES": retrieval_model.EXAMPLES,
               "retrieval.model.NEGATIVES": retrieval_model.NEGATIVES,
               "tfrs_pipeline.optim.LR_SCHEDULES": optim.LR_SCHEDULES,
               "ranking.model.MODELS": ranking_model.MODELS,
               "ranking.model.EXAMPLES": ranking_model.EXAMPLES,
               "ranking.listwise.GAINS": listwise.GAINS,
               "ranking.model.STRUCTURES": ranking_model.STRUCTURES,
               "ranking.model.NEGATIVE_SAMPLINGS":
                   ranking_model.NEGATIVE_SAMPLINGS,
               "ranking.model.SCORES": ranking_model.SCORES,
               "data.splits.SPLITS": splits.SPLITS,
               "data.raw.ON_BAD_LINE_CHOICES": raw.ON_BAD_LINE_CHOICES}
  for path, value in constants.items():
    assert flag_specs._values(path) == tuple(value), path  # pylint: disable=protected-access
  checked = 0
  for cls, key in ((retrieval_model.RetrievalConfig, ("train", "retrieval")),
                   (ranking_model.RankingConfig, ("train", "ranking"))):
    names = {f.name for f in dataclasses.fields(cls)}
    for flag in spec_flags(key):
      if flag.kind == "enum" and flag.name in names:
        with pytest.raises((errors.ConfigError, ValueError)):
          cls(**{flag.name: "no-such-value"})
        checked += 1
  assert checked == 10
  assert set(flag_specs.DATA_FLAGS) <= {
      f.name for f in dataclasses.fields(pipeline.DataConfig)}


def test_constants_and_request_inputs_read_from_the_source():
  def value(module, name):
    return source_reader.constant(module, name)
  assert value("tfrs_pipeline.app.recommender", "MAX_K") == recommender.MAX_K
  assert value("tfrs_pipeline.app.recommender",
               "DEFAULT_CANDIDATES") == recommender.DEFAULT_CANDIDATES
  assert value("tfrs_pipeline.app.serving",
               "MAX_BODY_BYTES") == serving.MAX_BODY_BYTES
  assert value("tfrs_pipeline.app.catalog",
               "HISTORY_CHOICES") == catalog.HISTORY_CHOICES
  assert value("tfrs_pipeline.dataset",
               "DEFAULT_CONFIGS") == dataset.DEFAULT_CONFIGS
  assert value("tfrs_pipeline.app.bench", "SECTIONS") == bench.SECTIONS
  assert value("tfrs_pipeline.app.cascade", "SOURCES") == cascade.SOURCES
  assert [(i.request, i.request_type, i.request_doc, i.doc)
          for i in source_reader.request_inputs()] == [
              (i.request, i.request_type, i.request_doc, i.doc)
              for i in features.request_inputs()]
  prepare = {f.name: f for f in spec_flags(("data", "prepare"))}
  assert set(prepare["configs"].choices) == {
      c.name for c in movielens_enriched.MovielensEnriched.BUILDER_CONFIGS}
  doc = {f.name: f.doc for f in source_reader.dataclass_fields(
      "tfrs_pipeline.app.cascade", "CascadeConfig")}["popularity_attributes"]
  assert all(name in doc for name in cascade.DEMOGRAPHICS)
  with pytest.raises(ValueError, match="without importing"):
    source_reader.constant("tfrs_pipeline.features", "INPUT_BY_NAME")


def test_flags_parse_into_the_configs():
  flag_specs.define(cli.COMMANDS[("train", "ranking")].flags())
  try:
    flags.FLAGS(["prog", "--model=dcn", "--deep_layers=64,32",
                 "--extra_features=", "--seed=7", "--ease=20",
                 "--popularity_attributes=user_gender", "--split=temporal"])
    config = common.config_from_flags(ranking_model.RankingConfig)
    assert (config.model, config.deep_layers, config.extra_features,
            config.seed) == ("dcn", (64, 32), (), 7)
    sources = common.config_from_flags(cascade.CascadeConfig)
    assert (sources.ease, sources.popularity_attributes) == (
        20, ("user_gender",))
    data = common.data_config()
    assert (data.split, data.seed, data.history_length) == (
        "temporal", 7, pipeline.DataConfig().history_length)
    flags.FLAGS.unparse_flags()
    with pytest.raises(flags.IllegalFlagValueError):
      flags.FLAGS(["prog", "--model=xgboost"])
    # Another command redefines a flag of the same name with its default.
    flag_specs.define(cli.COMMANDS[("train", "retrieval")].flags())
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["prog"])
    assert flags.FLAGS.run_dir == "runs/retrieval"
    assert flags.FLAGS["examples"].default == "user"
  finally:
    flags.FLAGS.unparse_flags()


_IMPORT_ALL = """
import json, sys, importlib
from absl import flags
from tfrs_pipeline.app import cli, flag_specs
for key, command in cli.COMMANDS.items():
  flag_specs.define(command.flags())
before = set(flags.FLAGS)
for command in cli.COMMANDS.values():
  importlib.import_module(command.module)
print(json.dumps({n: flags.FLAGS.find_module_defining_flag(n)
                  for n in sorted(set(flags.FLAGS) - before)}))
"""


def test_command_modules_define_no_flags_of_their_own():
  """What `--help` lists is every flag a command has: importing the
  command modules (as a run does) adds none."""
  p = subprocess.run([sys.executable, "-c", _IMPORT_ALL],
                     capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert p.returncode == 0, p.stderr[-3000:]
  added = json.loads(p.stdout.strip().splitlines()[-1])
  assert added, "TensorFlow's own flags are expected here"  # the probe works
  ours = {n: m for n, m in added.items() if m.split(".")[0] in (
      "tfrs_pipeline", "retrieval", "ranking", "data", "__main__")}
  assert not ours, ours


def test_usage_and_unknown_command():
  p = subprocess.run([CONSOLE, "--help"], capture_output=True, text=True,
                     timeout=60)
  assert p.returncode == 0
  for key, command in cli.COMMANDS.items():
    assert f"  {' '.join(key)}" in p.stdout
    assert command.summary.split()[0] in p.stdout
  p = subprocess.run([CONSOLE, "trian"], capture_output=True, text=True,
                     timeout=60)
  assert p.returncode == 2 and "commands:" in p.stderr


# --------------------------------------------------------------------------
# No CUDA probe noise on a machine without a GPU.


@pytest.mark.skipif(bool(glob.glob("/dev/nvidia[0-9]*")),
                    reason="a GPU machine keeps TensorFlow's errors")
def test_no_cuinit_line_on_cpu_machines(fake_raw, fake_data_dir, fake_data):
  del fake_data  # built
  cmd = [CONSOLE, "data", "describe", f"--raw_data={fake_raw['path']}",
         f"--data_dir={fake_data_dir}", "--json"]
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  loud = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                        env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert loud.returncode == 0, loud.stderr[-2000:]
  if "cuInit" not in loud.stderr:
    pytest.skip("this machine's TensorFlow prints no CUDA probe line")
  quiet = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env=env)
  assert quiet.returncode == 0, quiet.stderr[-2000:]
  assert "cuInit" not in quiet.stderr and "CUDA" not in quiet.stderr
  assert json.loads(quiet.stdout)["ratings"] == json.loads(
      loud.stdout)["ratings"]


# --------------------------------------------------------------------------
# The split is the runs' own.


def _runs(tmp_path, sources="temporal", retrieval="temporal"):
  for part, split in (("sources", sources), ("retrieval", retrieval)):
    if split is not None:
      os.makedirs(tmp_path / part)
      (tmp_path / part / "config.json").write_text(json.dumps(
          {"data": {"split": split, "seed": 42}}))
  return str(tmp_path)


def test_split_is_read_from_the_runs(tmp_path):
  runs = _runs(tmp_path / "a")
  assert run_config.split(runs) == "temporal"
  assert run_config.split(runs, "temporal") == "temporal"
  with pytest.raises(errors.ConfigError,
                     match=r"--split random contradicts the runs: .*"
                     r"sources/config.json was trained with split "
                     r"'temporal'"):
    run_config.split(runs, "random")
  mixed = _runs(tmp_path / "b", "random", "temporal")
  with pytest.raises(errors.ConfigError, match="different splits"):
    run_config.split(mixed)
  assert run_config.split(_runs(tmp_path / "c", None, "random")) == (
      "random")
  assert run_config.split(str(tmp_path / "none")) is None
  os.makedirs(tmp_path / "d" / "sources")
  (tmp_path / "d" / "sources" / "config.json").write_text("{not json")
  with pytest.raises(errors.InputError, match="not a run config"):
    run_config.split(str(tmp_path / "d"))


@pytest.mark.parametrize("command", [("recommend", "--user_id=1"),
                                     ("serve",)])
def test_a_contradicting_split_flag_is_refused(tmp_path, capsys, command):
  runs = _runs(tmp_path)
  flags.FLAGS.unparse_flags()
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    cli.run(["tfrs-pipeline", *command, f"--runs={runs}", "--split=random"])
  flags.FLAGS.unparse_flags()
  err = capsys.readouterr().err
  assert e.value.code == 2, err
  assert err.strip().splitlines()[-1].startswith(
      "error: --split random contradicts the runs"), err
