"""The package's floors: a module imports only its own floor or lower ones, never in a
cycle, and always at the top of the file.

Floors, lowest first: errors <- config_args <- sim <- data <- models <- objectives <- train
<- evaluators <- tasks <- main (evaluators and tasks share a floor; tasks use evaluators, never the reverse).
Read from the source with `ast`, so nothing is imported or run.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "lensfm")
FLOORS = ("errors", "utils", "config_args", "compilation_cache", "sim", "data", "models", "objectives",
          "train", "evaluators", "tasks", "main")

# Function-level imports of lensfm modules, each with the reason it is worth it.
ALLOWED_LOCAL_IMPORTS = {
}


def module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[:-len(".py")].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def package_modules() -> dict[str, str]:
  found = {}
  for directory, _, files in os.walk(PACKAGE):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(directory, f)
        found[module_name(path)] = path
  return found


MODULES = package_modules()


def floor(module: str) -> int:
  parts = module.split(".")
  return FLOORS.index(parts[1]) if len(parts) > 1 else -1  # `lensfm` itself: the ground.


def resolve(name: str) -> str:
  """The lensfm module an imported name lives in (`lensfm.data.make_input` -> `lensfm.data`)."""
  while name not in MODULES and "." in name:
    name = name.rsplit(".", 1)[0]
  return name


def imports_of(module: str) -> list[tuple[str, int, bool]]:
  """(imported lensfm module, line, at module level) for every import in `module`."""
  tree = ast.parse(open(MODULES[module]).read(), MODULES[module])
  top_level = {id(node) for node in tree.body}
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    for name in names:
      if name.split(".")[0] == "lensfm":
        found.append((resolve(name), node.lineno, id(node) in top_level))
  return found


def test_every_module_is_on_a_known_floor():
  unknown = sorted(m for m in MODULES if m != "lensfm" and m.split(".")[1] not in FLOORS)
  assert not unknown, f"Modules outside the floors {FLOORS}: {unknown}"


def test_no_module_imports_from_a_higher_floor():
  upward = [f"{m} (floor {FLOORS[floor(m)]}) imports {target} (floor {FLOORS[floor(target)]}) "
            f"at line {line}"
            for m in MODULES for target, line, _ in imports_of(m)
            if floor(target) > floor(m)]
  assert not upward, "Upward imports:\n" + "\n".join(upward)


def test_no_function_level_imports_of_lensfm_modules():
  local = [f"{m}:{line} imports {target} inside a function"
           for m in MODULES for target, line, top in imports_of(m)
           if not top and (m, target) not in ALLOWED_LOCAL_IMPORTS]
  assert not local, "\n".join(local)


# Function-level imports of other packages, each deferred for a reason said beside it.
DEFERRED_IMPORTS = {
    ("lensfm.train.writer", "tensorboardX"),   # imports torch when installed (~1.3 s)
    ("lensfm.data.image_files", "astropy.io.fits"),   # ~1 s, only when a FITS file is read
    ("lensfm.data.image_files", "astropy.wcs.utils"),
}


def test_at_most_three_function_level_imports():
  found = set()
  for module, path in MODULES.items():
    tree = ast.parse(open(path).read(), path)
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
        names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        found.update((module, name) for name in names)
  assert found <= DEFERRED_IMPORTS and len(found) <= 3, sorted(found - DEFERRED_IMPORTS)


def test_no_import_cycles():
  graph = {m: {t for t, _, _ in imports_of(m) if t != m and t in MODULES} for m in MODULES}
  # A package's __init__ is imported by its own modules' imports; only real loops count.
  state, cycles = {}, []

  def visit(node, stack):
    state[node] = "open"
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        cycles.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m, [m])
  assert not cycles, "Import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", ["lensfm.objectives.metrics", "lensfm.train.trainer"])
def test_the_walk_sees_imports(module):
  assert imports_of(module) or module == "lensfm.objectives.metrics"
  assert floor(module) >= 0
