"""The commands in the README (and docs/) exist, as a new user would type them.

Every shell block (```sh, ```bash, ```shell; in ```console only the `$ `
lines) is split into commands, and each is checked:

    make [VAR=v] TARGET       the target is a Makefile rule, VAR a variable
    .venv/bin/tfrs-pipeline   the subcommand is in the CLI's usage, each
      SUB --flag[=v]          --flag in `SUB --help` (else in `--helpfull`:
                              every flag the command parses), an enum flag's
                              value among its choices
    .venv/bin/python -m M     M is found; its flags as for the CLI;
                              `-m pytest PATH`: PATH exists
    curl http://127.0.0.1:8000/ROUTE   the method and route are served
                              (`@router.get/post` in serving.py)
    a bare python / tfrs-pipeline / pytest / tensorboard: a problem (the
    system one has neither the project nor its dependencies)

and every repository path in a command, in inline code or in a link exists,
and every `#anchor` link names a heading. The CLI is asked in subprocesses
(one per subcommand, a few at a time), so the check does not depend on how
the CLI defines its flags.
"""

import concurrent.futures
import functools
import glob
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from typing import Dict, FrozenSet, List, Optional, Sequence, Set, Tuple
import urllib.parse

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOC_FILES = [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
BIN = ".venv/bin"
CLI = f"{BIN}/tfrs-pipeline"
SHELL_LANGS = {"sh", "bash", "shell", "console"}
# Programs that need the project's venv: called bare, they are the system's.
VENV_PROGRAMS = {"python", "python3", "python3.11", "tfrs-pipeline", "pytest",
                 "tensorboard", "pip", "saved_model_cli"}
OTHER_PROGRAMS = {"export", "cd", ".", "source", "docker", "git", "ls",
                  "cat", "xdg-open", "open", "unset"}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0"}
SERVICE_PORT = 8000
# Written by the commands, not in the repository.
GENERATED = ("runs", "reports", "bench/runs", "bench/serve_runs", ".venv")
HELP_TIMEOUT_S = 180

Command = Tuple[str, int, List[str]]  # (file, line, argv)


# --- Extracting commands ------------------------------------------------

def shell_blocks(text: str) -> List[Tuple[int, str, str]]:
  """(line of the first body line, language, body) of each fenced block."""
  out, lang, start, body = [], None, 0, []
  for n, line in enumerate(text.splitlines(), 1):
    fence = re.match(r"^\s*```\s*([\w+-]*)", line)
    if fence and lang is None:
      lang, start, body = fence.group(1).lower(), n + 1, []
    elif fence:
      if lang in SHELL_LANGS:
        out.append((start, lang, "\n".join(body)))
      lang = None
    elif lang is not None:
      body.append(line)
  return out


def _logical_lines(lang: str, body: str, start: int
                   ) -> List[Tuple[int, str]]:
  """Lines joined over trailing backslashes; `console`: `$ ` lines only."""
  out, pending, first = [], "", None
  for n, line in enumerate(body.splitlines(), start):
    if not pending:
      if lang == "console":
        if not line.lstrip().startswith("$ "):
          continue
        line = line.lstrip()[2:]
      first = n
    if line.rstrip().endswith("\\"):
      pending += line.rstrip()[:-1] + " "
      continue
    out.append((first, pending + line))
    pending = ""
  if pending:
    out.append((first, pending))
  return out


def _split_words(line: str) -> List[List[str]]:
  """Shell words of one line (comments dropped), split into simple
  commands at `;`, `&&`, `||` and `|`."""
  lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
  lexer.whitespace_split = True
  lexer.commenters = "#"
  commands, current = [], []
  for word in lexer:
    if word and set(word) <= set(";&|"):
      commands.append(current)
      current = []
    else:
      current.append(word)
  commands.append(current)
  out = []
  for words in commands:
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
      words = words[1:]  # VAR=value before the command
    if words:
      out.append(words)
  return out


def commands_in(text: str, name: str = "README.md") -> List[Command]:
  out = []
  for start, lang, body in shell_blocks(text):
    for n, line in _logical_lines(lang, body, start):
      out.extend((name, n, words) for words in _split_words(line))
  return out


# --- What exists ----------------------------------------------------------

@functools.lru_cache(maxsize=None)
def makefile() -> Tuple[FrozenSet[str], FrozenSet[str], Dict[str, List[str]]]:
  """(targets, variables, recipe lines per target) of the Makefile."""
  targets, variables, recipes, current = set(), set(), {}, None
  with open(os.path.join(ROOT, "Makefile")) as f:
    for line in f:
      line = line.rstrip("\n")
      assign = re.match(r"^([A-Za-z_]\w*)\s*(?:[?:+!]?=)", line)
      rule = re.match(r"^([A-Za-z0-9_.%/-]+(?:\s+[A-Za-z0-9_.%/-]+)*)\s*:(?!=)",
                      line)
      if assign:
        variables.add(assign.group(1))
        current = None
      elif rule:
        names = rule.group(1).split()
        targets.update(n for n in names if not n.startswith("."))
        current = names[0]
        recipes.setdefault(current, [])
      elif line.startswith("\t") and current:
        recipes[current].append(line.strip().lstrip("@"))
      elif not line.strip() or line.startswith("#"):
        continue
      else:
        current = None
  variables.update(re.findall(r"\$\(([A-Za-z_]\w*)\)",
                              open(os.path.join(ROOT, "Makefile")).read()))
  return frozenset(targets), frozenset(variables), recipes


def _run(argv: Sequence[str]) -> Tuple[int, str]:
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
  try:
    p = subprocess.run(list(argv), cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=HELP_TIMEOUT_S)
  except subprocess.TimeoutExpired as e:
    return -1, f"timed out after {e.timeout} s"
  return p.returncode, p.stdout + p.stderr


@functools.lru_cache(maxsize=None)
def cli_commands() -> FrozenSet[Tuple[str, ...]]:
  """The subcommands listed by `tfrs-pipeline` without arguments."""
  _, text = _run([CLI])
  words, listing, indent = set(), False, None
  for line in text.splitlines():
    if re.match(r"^\s*commands?:\s*$", line, re.IGNORECASE):
      listing = True
    elif listing and line.startswith(" ") and line.strip():
      here = len(line) - len(line.lstrip())
      indent = here if indent is None else indent
      name = re.split(r"\s{2,}|\t", line.strip())[0]
      if here == indent and re.fullmatch(r"[a-z][\w-]*( [a-z][\w-]*)?",
                                         name):
        words.add(tuple(name.split()))  # (deeper lines: wrapped text)
    elif listing and line.strip():
      listing = False
  return frozenset(words)


# A flag's first help line: absl's `--name: text` (`--[no]name` for a
# boolean, `<a|b>: ` for an enum), or `--name=VALUE  text` / `--[no]name`
# (`--name={a,b}` for an enum); argparse's `--name NAME  text` last.
_FLAG_LINE = re.compile(
    r"^\s*(?:-\S,\s*)?--(\[no\])?([A-Za-z][\w-]*)"
    r"(?::\s?(.*)|=(\S+)|(?=\s{2}|\s*$))")
_ARGPARSE_FLAG = re.compile(r"^\s+(?:-\w,\s+)?--([A-Za-z][\w-]*)")


def parse_flags(text: str) -> Dict[str, Optional[Tuple[str, ...]]]:
  """flag -> its choices or None, from a help text; a boolean `--[no]x`
  gives both `x` and `nox`."""
  out = {}
  for line in text.splitlines():
    m = _FLAG_LINE.match(line)
    if not m:
      continue
    absl_enum = re.match(r"<([^<>]+)>:", m.group(3) or "")
    braces = re.fullmatch(r"\{([^{}]+)\}", m.group(4) or "")
    out[m.group(2)] = (tuple(absl_enum.group(1).split("|")) if absl_enum
                       else tuple(braces.group(1).split(",")) if braces
                       else None)
    if m.group(1):
      out["no" + m.group(2)] = None
  if not out:
    for line in text.splitlines():
      m = _ARGPARSE_FLAG.match(line)
      if m:
        out[m.group(1)] = None
  return out


@functools.lru_cache(maxsize=None)
def help_flags(program: Tuple[str, ...], ask: str
               ) -> Tuple[Dict[str, Optional[Tuple[str, ...]]], str]:
  """The flags `program ask` lists (ask: --help or --helpfull), and the
  end of its output."""
  _, text = _run([*program, ask])
  return parse_flags(text), text[-2000:]


def _asks(program: Tuple[str, ...]) -> Tuple[str, ...]:
  """The CLI's `--help` lists a command's own flags (and is quick);
  absl's `--helpfull` lists every flag the process parses (a module run
  with `-m` may print no flags for `--help`)."""
  return ("--helpfull", "--help") if "-m" in program else ("--help",
                                                            "--helpfull")


def accepted_flags(program: Tuple[str, ...], names: Sequence[str] = ()
                   ) -> Tuple[Dict[str, Optional[Tuple[str, ...]]], str]:
  """The flags `program` accepts, from its help texts (asked in `_asks`
  order until every one of `names` is found)."""
  flags, text = {}, ""
  for ask in _asks(program):
    more, text = help_flags(program, ask)
    flags = {**more, **flags}
    if flags and all(n in flags for n in names):
      break
  return flags, text


def routes() -> Set[Tuple[str, str]]:
  """(METHOD, path pattern) of the service, from serving.py's decorators."""
  path = os.path.join(ROOT, "tfrs_pipeline", "app", "serving.py")
  source = open(path).read()
  return {(m.upper(), p) for m, p in re.findall(
      r"@\w+\.(get|post|put|delete)\(\s*\"([^\"]+)\"", source)}


def _route_matches(pattern: str, path: str) -> bool:
  regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(pattern))
  return re.fullmatch(regex, path) is not None


@functools.lru_cache(maxsize=None)
def tracked_tops() -> FrozenSet[str]:
  """Top-level names of the repository (files and directories)."""
  return frozenset(n for n in os.listdir(ROOT) if not n.startswith(".")
                   or n == ".ci")


def _repo_path(token: str) -> Optional[str]:
  """`token` as a repository path to check, or None if it is not one."""
  token = token.strip().rstrip(".,:;)")
  if token.startswith("./"):
    token = token[2:]
  if not re.fullmatch(r"[\w.-]+(/[\w.-]+)*/?", token) or "/" not in token:
    return None
  if token.split("/")[0] not in tracked_tops() | {"docs"}:
    return None
  if any(token == g or token.startswith(g + "/") for g in GENERATED):
    return None
  return token


def path_problem(token: str, where: str) -> Optional[str]:
  path = _repo_path(token)
  if path and not os.path.exists(os.path.join(ROOT, path)):
    return f"{where}: path {path!r} does not exist"
  return None


# --- Checking one command -------------------------------------------------

HELP_FLAGS = {"help", "helpfull", "helpshort"}  # answered by every command


def _flag_args(words: Sequence[str]
               ) -> List[Tuple[str, Optional[str], Optional[str]]]:
  """(name, value after '=', next word) of each --flag in `words` but the
  help flags."""
  out = []
  for i, word in enumerate(words):
    if word.startswith("--") and len(word) > 2:
      name, eq, value = word[2:].partition("=")
      if name in HELP_FLAGS:
        continue
      nxt = words[i + 1] if i + 1 < len(words) else None
      out.append((name, value if eq else None, nxt))
  return out


def _check_flags(program: Tuple[str, ...], words: Sequence[str],
                 where: str, label: str) -> List[str]:
  flags, help_text = accepted_flags(
      program, [name for name, _, _ in _flag_args(words)])
  if not flags:
    return [f"{where}: `{label} --helpfull`/`--help` lists no flags: "
            f"{help_text!r}"]
  problems = []
  for name, value, nxt in _flag_args(words):
    if name not in flags:
      problems.append(f"{where}: `{label}` has no flag --{name}")
      continue
    choices = flags[name]
    given = value if value is not None else (
        nxt if nxt and not nxt.startswith("-") else None)
    if choices and given is not None and given not in choices:
      problems.append(f"{where}: --{name}={given} is not one of "
                      f"{'|'.join(choices)}")
  return problems


def check_make(words: Sequence[str], where: str) -> List[str]:
  targets, variables, _ = makefile()
  problems = []
  for word in words[1:]:
    if word.startswith("-"):
      continue
    if "=" in word:
      var = word.split("=", 1)[0]
      if var not in variables:
        problems.append(f"{where}: the Makefile has no variable {var}")
    elif word not in targets:
      problems.append(f"{where}: the Makefile has no target {word!r}")
  return problems


def _subcommand(words: Sequence[str]) -> Tuple[str, ...]:
  """The words after the program up to the first flag."""
  sub = []
  for word in words[1:]:
    if word.startswith("-"):
      break
    sub.append(word)
  return tuple(sub)


def check_cli(words: Sequence[str], where: str) -> List[str]:
  sub = _subcommand(words)
  if tuple(sub) not in cli_commands():
    known = ", ".join(" ".join(c) for c in sorted(cli_commands()))
    return [f"{where}: `tfrs-pipeline {' '.join(sub)}` is not a command "
            f"(commands: {known})"]
  return _check_flags((CLI, *sub), words, where,
                      f"tfrs-pipeline {' '.join(sub)}")


def check_python(words: Sequence[str], where: str) -> List[str]:
  if "-m" not in words[1:]:
    return []  # a script: its path is checked with the other words
  i = words.index("-m")
  if i + 1 >= len(words):
    return [f"{where}: `-m` without a module"]
  module, rest = words[i + 1], list(words[i + 2:])
  try:
    found = importlib.util.find_spec(module)
  except (ImportError, ValueError):
    found = None
  if found is None:
    return [f"{where}: no module named {module!r}"]
  if module == "pytest" or not any(w.startswith("--") for w in rest):
    return []
  return _check_flags((f"{BIN}/python", "-m", module), rest, where,
                      f"python -m {module}")


def check_curl(words: Sequence[str], where: str) -> List[str]:
  urls = [w for w in words[1:] if "://" in w]
  method = "GET"
  for i, word in enumerate(words):
    if word in ("-X", "--request") and i + 1 < len(words):
      method = words[i + 1].upper()
    elif word in ("-d", "--data", "--data-raw", "--json") and method == "GET":
      method = "POST"
  problems = []
  for url in urls:
    u = urllib.parse.urlsplit(url)
    if u.hostname not in LOCAL_HOSTS or (u.port or 80) != SERVICE_PORT:
      continue  # not this project's service (e.g. TF Serving on 8501)
    if not any(m == method and _route_matches(p, u.path)
               for m, p in routes()):
      problems.append(f"{where}: the service has no route {method} {u.path}")
  return problems


def check_command(command: Command) -> List[str]:
  name, line, words = command
  where = f"{name}:{line}: {' '.join(words)[:80]}"
  program = words[0]
  base = os.path.basename(program)
  if program.startswith(f"{BIN}/") or program.startswith(f"./{BIN}/"):
    checkers = {"tfrs-pipeline": check_cli, "python": check_python,
                "python3": check_python}
    if not os.path.exists(os.path.join(ROOT, ".venv", "bin", base)) and \
        base not in checkers:
      return [f"{where}: {program} is not installed by `make install`"]
    problems = checkers.get(base, lambda w, _: [])(words, where)
  elif base in VENV_PROGRAMS:
    return [f"{where}: `{program}` is not the project's; call {BIN}/{base} "
            "(or activate .venv first)"]
  elif program == "make":
    problems = check_make(words, where)
  elif program == "curl":
    problems = check_curl(words, where)
  elif program in OTHER_PROGRAMS:
    problems = []
  else:
    return [f"{where}: unknown program {program!r}"]
  problems += [p for p in (path_problem(
      w.split("=", 1)[-1].split("::")[0], where) for w in words[1:]) if p]
  return problems


def prefetch(commands: Sequence[Command], workers: int = 3) -> None:
  """Asks every help the commands need, a few subprocesses at a time."""
  wanted: Dict[Tuple[str, ...], Set[str]] = {}
  for _, _, words in commands:
    if words[0] == CLI and _subcommand(words) in cli_commands():
      program = (CLI, *_subcommand(words))
    elif os.path.basename(words[0]).startswith("python") and \
        "-m" in words[:-1] and words[words.index("-m") + 1] != "pytest":
      program = (f"{BIN}/python", "-m", words[words.index("-m") + 1])
    else:
      continue
    wanted.setdefault(program, set()).update(
        name for name, _, _ in _flag_args(words))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    list(pool.map(lambda p: help_flags(p, _asks(p)[0]), wanted))
    list(pool.map(lambda p: accepted_flags(p, sorted(wanted[p])), wanted))


def check_text(text: str, name: str = "README.md") -> List[str]:
  commands = commands_in(text, name)
  prefetch(commands)
  problems = []
  for command in commands:
    problems += check_command(command)
  return problems


# --- Prose: inline paths, links, anchors ------------------------------

def _slug(heading: str) -> str:
  """GitHub's anchor of a heading."""
  text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
  text = re.sub(r"[^\w\- ]", "", text.lower())
  return text.replace(" ", "-")


def _anchors(text: str) -> Set[str]:
  out = set()
  in_code = False
  for line in text.splitlines():
    if line.lstrip().startswith("```"):
      in_code = not in_code
    elif not in_code and re.match(r"^#{1,6} ", line):
      out.add(_slug(line.lstrip("#")))
  return out


def _prose(text: str) -> str:
  """The text outside fenced blocks."""
  return re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.M | re.S)


def prose_problems(path: str) -> List[str]:
  text = open(path).read()
  name = os.path.relpath(path, ROOT)
  here = os.path.dirname(path)
  prose, problems = _prose(text), []
  for span in re.findall(r"`([^`\n]+)`", prose):
    problem = path_problem(span, name)
    if problem:
      problems.append(problem)
  for target in re.findall(r"\]\(([^)\s]+)\)", prose):
    if re.match(r"^[a-z]+:", target):
      continue  # http(s), mailto
    file, _, anchor = target.partition("#")
    full = os.path.normpath(os.path.join(here, file)) if file else path
    if not os.path.exists(full):
      problems.append(f"{name}: link target {target!r} does not exist")
    elif anchor and full.endswith(".md") and anchor not in _anchors(
        open(full).read()):
      problems.append(f"{name}: link {target!r} names no heading")
  return problems


# --- Tests --------------------------------------------------------------

@pytest.fixture(scope="module")
def readme_commands() -> List[Command]:
  commands = []
  for path in DOC_FILES:
    commands += commands_in(open(path).read(), os.path.relpath(path, ROOT))
  prefetch(commands)
  return commands


def test_readme_has_the_commands_a_user_needs(readme_commands):
  readme = [w for name, _, w in readme_commands if name == "README.md"]
  lines = {" ".join(w) for w in readme}
  for needed in ("make install", "make serve", "make test",
                 "make tensorboard"):
    assert needed in lines, f"the README's shell blocks lack `{needed}`"
  assert any(w[:2] == ["make", "train"] for w in readme)
  programs = {os.path.basename(w[0]) for w in readme}
  assert {"make", "tfrs-pipeline", "python", "curl"} <= programs, programs


def test_cli_commands_are_read_from_its_usage():
  commands = cli_commands()
  assert {("recommend",), ("serve",), ("train", "all")} <= commands, commands
  assert all(1 <= len(c) <= 2 for c in commands), commands


def test_every_command_exists(readme_commands):
  problems = []
  for command in readme_commands:
    problems += check_command(command)
  assert not problems, "\n".join(problems)


def test_paths_links_and_anchors_exist():
  problems = []
  for path in DOC_FILES:
    problems += prose_problems(path)
  assert not problems, "\n".join(problems)


def test_test_command_is_what_make_test_and_ci_run():
  """The README's description of `make test` is the Makefile's recipe,
  and CI runs `make test`."""
  _, _, recipes = makefile()
  text = open(README).read()
  recipe = [line.replace("$(BIN)", BIN).replace("$(VENV)", ".venv")
            for line in recipes["test"]]
  assert recipe
  for line in recipe:
    assert f"`{line}`" in text, f"README does not say `make test` runs {line}"
  ci = open(os.path.join(ROOT, ".ci", "run")).read()
  assert re.search(r"^make test$", ci, re.M)


# A synthetic README: each made-up command must give a problem, each real
# one none (so the checks above can fail).
MADE_UP = [
    "make no-such-target",
    "make train NO_SUCH_VARIABLE=1",
    ".venv/bin/tfrs-pipeline frobnicate --k 3",
    ".venv/bin/tfrs-pipeline recommend --user_id 42 --no_such_flag 1",
    ".venv/bin/tfrs-pipeline recommend --history everything",
    "tfrs-pipeline recommend --user_id 42",
    "python -m tfrs_pipeline.app.saved_model_cli show --dir x --all",
    ".venv/bin/python -m tfrs_pipeline.no_such_module",
    ".venv/bin/python -m tfrs_pipeline.saved_model_cli show --all",
    ".venv/bin/python -m pytest tests/test_no_such_file.py -q",
    "curl 'http://127.0.0.1:8000/no_such_route?x=1'",
    "curl -X POST 'http://127.0.0.1:8000/similar?movie_id=1'",
    "frobnicate --now",
    "cat docs/no_such_page.md",
]
REAL = [
    "make train RAW_DATA=../shared/data",
    ".venv/bin/tfrs-pipeline recommend --user_id 42 --k 10 --history train",
    ".venv/bin/tfrs-pipeline recommend --nojson --user_id=42",
    ".venv/bin/python -m pytest tests/test_readme.py -q",
    "curl 'http://127.0.0.1:8000/users/42/ratings'",
    "curl -d '{\"k\": 3}' http://localhost:8501/v1/models/retrieval:predict",
]


@pytest.mark.parametrize("line", MADE_UP)
def test_a_made_up_command_is_caught(line):
  text = f"Intro.\n\n```sh\nexport X=1\n{line}   # comment\n```\n"
  problems = check_text(text, "synthetic.md")
  assert problems, f"no problem found in {line!r}"
  assert all("synthetic.md:5:" in p for p in problems), problems


@pytest.mark.parametrize("line", REAL)
def test_a_real_command_passes(line):
  text = f"```bash\n{line}\n```\n"
  assert check_text(text) == []


def test_console_blocks_continuations_and_chains():
  text = ("```console\n$ make install && \\\n  make no-such\n"
          "output: make no-such-either\n```\n")
  commands = commands_in(text)
  assert [w for _, _, w in commands] == [["make", "install"],
                                         ["make", "no-such"]]
  assert len(check_text(text)) == 1


def test_made_up_prose_paths_and_anchors_are_caught(tmp_path):
  page = tmp_path / "page.md"
  page.write_text("# Title\n\nSee `tests/no_such_test.py`, "
                  "[a](#no-such-heading), [b](#title), [c](missing.md) and "
                  "`tests/test_readme.py`.\n")
  problems = prose_problems(str(page))
  assert len(problems) == 3, problems
  assert any("no_such_test.py" in p for p in problems)
  assert any("no-such-heading" in p for p in problems)
  assert any("missing.md" in p for p in problems)
