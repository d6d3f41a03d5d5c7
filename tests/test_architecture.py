"""The dependency rule of docs/ARCHITECTURE.md, read from the imports of every module.

Every import counts, also those inside functions (a lazy import is still an arrow). Planting
`from ichflax.training import steps` in a serving module fails `test_rooms_import_only_below`.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ichflax"
# Modules at the package's top that every room may read: what a task, a model spec, a run's
# progress record are, JSON copies, the process pool, XLA's compile policy.
CORE = {"tasks", "spec", "progress", "jsonable", "parallel", "xla", "flags"}
# The thin `python -m ichflax.X` entry points: each only calls its command's main.
ENTRIES = {"train", "predict", "evaluate", "calibrate", "reproduce", "app"}
# Room -> the rooms it may import besides itself and CORE. Lower rooms never import higher ones.
ALLOWED = {
    "core": set(),
    "data": set(),
    "config": {"data"},
    "models": set(),
    "weights": {"models"},
    "evaluation": set(),
    "checkpoint": {"config", "models"},
    "trust": {"config", "data", "models", "evaluation", "checkpoint"},
    "serving": {"config", "data", "models", "evaluation", "checkpoint", "trust"},
    "training": {"config", "data", "models", "weights", "evaluation", "checkpoint", "trust"},
    "entry": {"training", "serving", "trust", "checkpoint", "demo"},  # app: the page
    "demo": {"config", "data", "models", "evaluation", "checkpoint", "trust", "serving"},
}


def module_name(path: Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def sources() -> dict[str, Path]:
  files = [*PACKAGE.rglob("*.py"), *(ROOT / "demo").glob("*.py")]
  return {module_name(p): p for p in files}


def imports(path: Path, known: set[str]) -> set[str]:
  """The project modules a file imports, anywhere in it. `from P import x` is module P.x when
  that is a module (importing a submodule is not importing its package's __init__)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name in known)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        if sub in known:
          found.add(sub)
        elif node.module in known:
          found.add(node.module)
  return found


def graph() -> dict[str, set[str]]:
  mods = sources()
  return {name: imports(path, set(mods)) - {name} for name, path in mods.items()}


def room(module: str) -> str:
  parts = module.split(".")
  if parts[0] == "demo":
    return "demo"
  if len(parts) == 1:
    return "core"  # ichflax/__init__.py
  top = parts[1]
  if top in CORE:
    return "core"
  if top in ENTRIES and len(parts) == 2:
    return "entry"
  return top


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan), each sorted."""
  index, low, on_stack, stack, out = {}, {}, set(), [], []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in edges.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return out


def test_no_import_circles():
  assert cycles(graph()) == []


def test_cycles_finds_a_circle():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_rooms_import_only_below():
  wrong = []
  for module, targets in sorted(graph().items()):
    mine = room(module)
    assert mine in ALLOWED, f"{module}: room {mine!r} has no entry in ALLOWED"
    for target in sorted(targets):
      theirs = room(target)
      if theirs not in {mine, "core"} | ALLOWED[mine]:
        wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
  assert wrong == []


@pytest.mark.parametrize("module", ["ichflax.serving.predictor", "ichflax.trust.scope"])
def test_serving_and_trust_never_import_training(module):
  edges = graph()
  seen, todo = set(), [module]
  while todo:  # everything the module pulls in, transitively
    for target in edges[todo.pop()] - seen:
      seen.add(target)
      todo.append(target)
  assert not {m for m in seen if room(m) == "training"}


def test_planted_arrow_is_caught(tmp_path):
  """The rule reads real files: a serving module importing training breaks it."""
  planted = tmp_path / "ichflax" / "serving" / "bad.py"
  planted.parent.mkdir(parents=True)
  planted.write_text("def f():\n  from ichflax.training import steps\n")
  found = imports(planted, {"ichflax.training.steps"})
  assert found == {"ichflax.training.steps"}
  assert room("ichflax.serving.bad") == "serving" and "training" not in ALLOWED["serving"]


def test_top_level_stays_small():
  """At most ten top-level modules besides the thin entries, and those stay thin."""
  top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
  assert len(top - ENTRIES) <= 10, sorted(top)
  for name in ENTRIES:
    assert len((PACKAGE / f"{name}.py").read_text().splitlines()) <= 20
