"""The layers point one way (README, "Layout"), checked on the source.

    core   tfrs_pipeline.* (but .app), data.*   imports no stage, no app
    stage  retrieval.*, ranking.*               imports the core only
    app    tfrs_pipeline.app.*                  imports anything

No module imports a project module inside a function (the way to hide a
cycle), and the module-level import graph has no cycle. Pure Python
(`ast`), no TensorFlow.
"""

import ast
import os
from typing import Dict, List, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("tfrs_pipeline", "retrieval", "ranking", "data")
RANK = {"core": 0, "stage": 1, "app": 2}


def layer(module: str) -> str:
  if module == "tfrs_pipeline.app" or module.startswith("tfrs_pipeline.app."):
    return "app"
  if module.split(".")[0] in ("retrieval", "ranking"):
    return "stage"
  return "core"


def module_name(path: str, root: str = ROOT) -> str:
  rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def project_imports(source: str, name: str, modules: Set[str]
                    ) -> List[Tuple[str, int, bool]]:
  """(imported project module, line, inside a function) of `source`."""
  out = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      inner = in_function or isinstance(
          child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
      targets = []
      if isinstance(child, ast.Import):
        targets = [a.name for a in child.names]
      elif isinstance(child, ast.ImportFrom) and child.level == 0:
        base = child.module or ""
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules
                   else base for a in child.names]
      for target in targets:
        if target.split(".")[0] in PACKAGES and target in modules:
          out.append((target, child.lineno, inner))
      visit(child, inner)

  visit(ast.parse(source, name), False)
  return out


def scan(root: str = ROOT) -> Dict[str, List[Tuple[str, int, bool]]]:
  paths = {}
  for package in PACKAGES:
    for d, _, files in os.walk(os.path.join(root, package)):
      for f in files:
        if f.endswith(".py"):
          paths[module_name(os.path.join(d, f), root)] = os.path.join(d, f)
  modules = set(paths)
  graph = {}
  for name, path in paths.items():
    with open(path, encoding="utf-8") as f:
      graph[name] = project_imports(f.read(), path, modules)
  return graph


def violations(graph) -> List[str]:
  """Imports that point up a layer, and function-local project imports."""
  out = []
  for name, imports in sorted(graph.items()):
    for target, line, in_function in imports:
      if RANK[layer(target)] > RANK[layer(name)]:
        out.append(f"{name}:{line}: the {layer(name)} imports {target} "
                   f"(the {layer(target)})")
      if in_function:
        out.append(f"{name}:{line}: imports {target} inside a function")
  return out


def cycles(graph) -> List[List[str]]:
  """Cycles of the module-level import graph (packages' `__init__` aside:
  a module importing its own package is not a cycle)."""
  edges = {n: sorted({t for t, _, f in imps if not f and t != n
                      and not n.startswith(t + ".")})
           for n, imps in graph.items()}
  found, state, stack = [], {}, []

  def walk(n):
    state[n] = 1
    stack.append(n)
    for t in edges.get(n, ()):
      if state.get(t) == 1:
        found.append(stack[stack.index(t):] + [t])
      elif t not in state:
        walk(t)
    stack.pop()
    state[n] = 2

  for n in sorted(edges):
    if n not in state:
      walk(n)
  return found


def test_layers_point_one_way():
  graph = scan()
  assert {"tfrs_pipeline.features", "retrieval.model", "ranking.model",
          "tfrs_pipeline.app.cli", "data.raw"} <= set(graph)
  assert violations(graph) == []


def test_no_import_cycle():
  assert cycles(scan()) == []


def test_the_checks_catch_what_they_forbid(tmp_path):
  """A core module importing a stage, a stage importing the app, a local
  import and a cycle are each reported."""
  files = {
      "tfrs_pipeline/__init__.py": "",
      "tfrs_pipeline/features.py": "from retrieval import model\n",
      "tfrs_pipeline/app/__init__.py": "",
      "tfrs_pipeline/app/cli.py": "import ranking.train\n",
      "retrieval/__init__.py": "",
      "retrieval/model.py": "def f():\n  from tfrs_pipeline.app import cli\n",
      "ranking/__init__.py": "",
      "ranking/train.py": "from ranking import evaluate\n",
      "ranking/evaluate.py": "from ranking import train\n",
      "data/__init__.py": "",
  }
  for rel, text in files.items():
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  graph = scan(str(tmp_path))
  found = violations(graph)
  assert any("tfrs_pipeline.features:1: the core imports retrieval.model"
             in v for v in found), found
  assert any("retrieval.model:2: the stage imports tfrs_pipeline.app.cli"
             in v for v in found), found
  assert any("inside a function" in v for v in found), found
  assert any(set(c) == {"ranking.train", "ranking.evaluate"}
             for c in cycles(graph))


@pytest.mark.parametrize("name,expected", [
    ("tfrs_pipeline.pipeline", "core"), ("data.raw", "core"),
    ("retrieval.sources", "stage"), ("ranking.listwise", "stage"),
    ("tfrs_pipeline.app", "app"), ("tfrs_pipeline.app.serving", "app")])
def test_layer_of(name, expected):
  assert layer(name) == expected
