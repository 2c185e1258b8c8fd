"""The import graph keeps the layering: each package imports only packages below it, and no module imports itself
through others. Read from the source with `ast` (nothing is imported), every `import` statement counted, at any
depth of a file (functions included)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("audiopalm", "data_pipeline", "tools")

# Bottom to top. A module may import modules of its own layer and of the layers below, never above. Written once,
# here; README.md's layout table and docs/architecture.md follow it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("audiopalm.files", "audiopalm.audio", "audiopalm.tokenizers"),  # storage and files, audio I/O, the tokenizer interface
    ("audiopalm.sharding",),  # mesh, logical-axis rules, parameter-sharding helpers
    ("audiopalm.model", "audiopalm.vocab", "audiopalm.tokens"),  # the decoder, the vocabulary, the token-shard schema
    ("audiopalm.checkpoints",),  # train-state checkpoints, exports, finding and loading a source
    ("audiopalm.data", "audiopalm.formats", "audiopalm.hf", "audiopalm.ssl"),  # inputs, formats, HF bridge, encoders
    ("audiopalm.training",),  # the one loop, the step builder, the language model's run and hooks
    ("audiopalm.codec", "audiopalm.semantic"),  # the speech tokenizers: models, training, checkpoints
    ("audiopalm.inference", "audiopalm.evaluation"),  # generation, metrics, held-out evaluation
    ("audiopalm.cli",),  # flags, gin, logging for entry points
    ("audiopalm.main",),  # the library's entry points and the main job
    ("data_pipeline",),  # the tokenization application
    ("tools",),  # benchmarks and developer utilities
)


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources(tests: bool) -> dict[str, pathlib.Path]:
  """Module name → file, for every Python file of the packages (tests only when `tests`)."""
  out = {}
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob("*.py")):
      if path.name.endswith("_test.py") != tests:
        continue
      out[_module_name(path)] = path
  return out


MODULES = _sources(tests=False)
TESTS = _sources(tests=True)


def _imports(path: pathlib.Path) -> set[str]:
  """The project modules `path` imports (a name that is not a module resolves to the package that holds it)."""
  def resolve(name: str) -> str | None:
    while name and name not in MODULES:
      name = name.rpartition(".")[0]
    return name or None

  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [f"{node.module}.{alias.name}" for alias in node.names]
    else:
      continue
    found.update(m for m in map(resolve, names) if m and m.split(".")[0] in PACKAGES)
  return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def layer_of(module: str) -> int:
  """The index in LAYERS of the longest prefix that names `module`'s package."""
  matches = [(len(prefix), i) for i, layer in enumerate(LAYERS) for prefix in layer
             if module == prefix or module.startswith(prefix + ".")]
  if not matches:
    raise KeyError(module)
  return max(matches)[1]


def test_every_module_has_a_layer():
  unplaced = sorted(m for m in MODULES if m not in PACKAGES and not _placed(m))
  assert not unplaced, f"modules in no layer (add their package to LAYERS): {unplaced}"


def _placed(module: str) -> bool:
  try:
    layer_of(module)
    return True
  except KeyError:
    return False


def test_the_library_never_imports_the_applications():
  """audiopalm (its colocated tests included) imports neither data_pipeline nor tools."""
  bad = [f"{m} -> {t}" for m, path in {**MODULES, **TESTS}.items() if m.startswith("audiopalm")
         for t in _imports(path) if t.split(".")[0] in ("data_pipeline", "tools")]
  assert not bad, "the library imports the applications built on it:\n" + "\n".join(sorted(bad))


def test_no_import_runs_up_a_layer():
  bad = [f"{m} (layer {layer_of(m)}) -> {t} (layer {layer_of(t)})" for m, targets in GRAPH.items()
         if m not in PACKAGES for t in targets if t not in PACKAGES and layer_of(t) > layer_of(m)]
  assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan)."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  out = []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
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

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_no_import_cycles():
  cycles = _cycles(GRAPH)
  assert not cycles, "modules that import each other in a circle:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
  assert _cycles(graph) == expected


def test_the_checks_see_an_upward_import(tmp_path):
  """The walk reads imports at any depth, and resolves `from package import name` to the module or package."""
  source = tmp_path / "x.py"
  source.write_text("def f():\n  from audiopalm.main import train\n  import tools.aot_compile\n")
  assert _imports(source) == {"audiopalm.main.train", "tools.aot_compile"}
  assert layer_of("audiopalm.model.config") < layer_of("audiopalm.training.trainer") < layer_of("tools.aot_compile")
