"""Reads configuration dataclasses and constants from the source (`ast`),
without importing their modules (which import TensorFlow), so that
`--help` answers in a fraction of a second.

A dataclass field's documentation is its attribute docstring, the string
right below it (the convention Sphinx's autodoc reads):

    batch_size: int = 256
    \"\"\"Examples per training step.\"\"\"

tests/test_cli.py checks that what this module reads equals what the
imported classes and modules hold.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import inspect
import operator
from typing import Any, Dict, List, Tuple

MISSING = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class Field:
  """One dataclass field as written: name, annotation, default, doc."""
  name: str
  annotation: str
  default: Any
  doc: str


@dataclasses.dataclass(frozen=True)
class RequestInput:
  """The request side of a `features.Input` (what a CLI flag needs)."""
  request: str
  request_type: type
  request_doc: str
  doc: str


@functools.lru_cache(maxsize=None)
def _module(name: str) -> Tuple[ast.Module, str]:
  spec = importlib.util.find_spec(name)  # imports the parent packages only
  if spec is None or not spec.origin:
    raise ImportError(f"no module {name}")
  with open(spec.origin, encoding="utf-8") as f:
    return ast.parse(f.read(), spec.origin), spec.origin


@functools.lru_cache(maxsize=None)
def _aliases(module: str) -> Dict[str, Tuple[str, str]]:
  """Top-level import names -> (module, attribute or "")."""
  out = {}
  for node in _module(module)[0].body:
    if isinstance(node, ast.Import):
      for a in node.names:
        out[a.asname or a.name.split(".")[0]] = (
            a.name if a.asname else a.name.split(".")[0], "")
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      for a in node.names:
        out[a.asname or a.name] = (node.module, a.name)
  return out


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub,
        ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}


def evaluate(node: ast.AST, module: str) -> Any:
  """The value of a literal expression of `module`: constants, tuples,
  lists, dicts, arithmetic, names of module constants (followed through
  imports), `tuple(...)`/`list(...)` of those; else ValueError."""
  def ev(n):
    return evaluate(n, module)
  if isinstance(node, ast.Constant):
    return node.value
  if isinstance(node, (ast.Tuple, ast.List)):
    kind = tuple if isinstance(node, ast.Tuple) else list
    return kind(ev(e) for e in node.elts)
  if isinstance(node, ast.Dict):
    return {ev(k): ev(v) for k, v in zip(node.keys, node.values)}
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
    return -ev(node.operand)
  if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
    return _OPS[type(node.op)](ev(node.left), ev(node.right))
  if isinstance(node, ast.Name):
    if node.id in _aliases(module):
      target, attr = _aliases(module)[node.id]
      return constant(target, attr)
    return constant(module, node.id)
  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
    target, attr = _aliases(module).get(node.value.id, (None, None))
    if target is not None:
      return constant(f"{target}.{attr}" if attr else target, node.attr)
  if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
      and node.func.id in ("tuple", "list") and len(node.args) == 1):
    return {"tuple": tuple, "list": list}[node.func.id](ev(node.args[0]))
  raise ValueError(f"{_module(module)[1]}:{getattr(node, 'lineno', '?')}: "
                   f"cannot read {ast.unparse(node)!r} without importing")


def constant(module: str, name: str) -> Any:
  """The value of the module-level constant `module.name`."""
  for node in _module(module)[0].body:
    targets = (node.targets if isinstance(node, ast.Assign) else
               [node.target] if isinstance(node, ast.AnnAssign) else [])
    if any(isinstance(t, ast.Name) and t.id == name for t in targets):
      return evaluate(node.value, module)
  raise ValueError(f"{_module(module)[1]}: no constant {name}")


def dataclass_fields(module: str, name: str) -> List[Field]:
  """The fields of the dataclass `module.name` in order, each with its
  default (MISSING: none) and attribute docstring ("" if none)."""
  tree, path = _module(module)
  cls = next((n for n in tree.body
              if isinstance(n, ast.ClassDef) and n.name == name), None)
  if cls is None:
    raise ValueError(f"{path}: no class {name}")
  out = []
  for i, node in enumerate(cls.body):
    if not (isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)):
      continue
    annotation = ast.unparse(node.annotation)
    if annotation.startswith(("ClassVar", "typing.ClassVar")):
      continue
    value = node.value
    if (isinstance(value, ast.Call) and ast.unparse(value.func) in
        ("field", "dataclasses.field")):
      value = next((k.value for k in value.keywords if k.arg == "default"),
                   None)
    following = cls.body[i + 1] if i + 1 < len(cls.body) else None
    doc = ""
    if (isinstance(following, ast.Expr)
        and isinstance(following.value, ast.Constant)
        and isinstance(following.value.value, str)):
      doc = inspect.cleandoc(following.value.value)
    out.append(Field(node.target.id, annotation,
                     MISSING if value is None else evaluate(value, module),
                     doc))
  return out


def request_inputs(module: str = "tfrs_pipeline.features"
                   ) -> List[RequestInput]:
  """The `Input(...)` calls of the spec that a request may send (a
  `request=` name), in source order."""
  out = []
  for node in ast.walk(_module(module)[0]):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "Input"):
      continue
    kw = {k.arg: k.value for k in node.keywords}
    if "request" not in kw:
      continue
    kind = kw.get("request_type")
    out.append((node.lineno, RequestInput(
        request=evaluate(kw["request"], module),
        request_type=int if kind is not None and kind.id == "int" else str,
        request_doc=evaluate(kw["request_doc"], module)
        if "request_doc" in kw else "",
        doc=evaluate(node.args[4], module))))
  return [r for _, r in sorted(out, key=lambda t: t[0])]
