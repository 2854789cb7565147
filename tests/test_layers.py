"""The house's structure, checked from the source: no import cycle, layers that point one way, small modules.

The import graph is read with ``ast`` from every module under ``src/kss_lora``: top-level imports, imports
inside functions (a lazy import is still a dependency), and ``import_module("...")`` strings. A module that
calls ``import_module`` with a computed name (a lazy ``__getattr__`` loader) is taken to import every module
that one of its string constants names, so lazy loaders count too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "kss_lora"
MAX_MODULE_LINES = 600

# Layers, bottom up. A module may import modules of its own layer or of a layer below, never above. A module's
# layer is that of the longest entry naming it or a package above it; an entry starting with "=" names exactly
# one module (a package's __init__) and not its children.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("errors", ("errors",)),
    # Torch-free tables and checks: the subcommand registry, and what the config layer needs to validate a
    # method block (the method table, presets and defaults) or a precision block (formats, emulation options).
    (
        "tables",
        (
            "commands",
            "tables",  # the one number formatter and table writer
            "optional_imports",
            "launcher_options",
            "config_files",
            "run_ids",
            "recorded_paths",
            "output_paths",
            "run_summary",  # the human lines `kss run` ends with  # an output directory checked before anything is written  # data paths of a saved config, made absolute and found again
            "methods.specs",
            "methods.resolve",
            "methods.kss.config",
            "precision.config",
            "precision.catalog",
        ),
    ),
    ("config", ("config",)),
    # Everything the runner is built from: numerics, methods, models, data, tasks, noise, the run directory,
    # the recorder and the pure dynamics measures it uses, the distributed plumbing.
    (
        "building blocks",
        (
            "precision",
            "methods",
            "models",
            "data",
            "tasks",
            "noise",
            "rundir",
            "checkpoints",  # training state to safetensors + JSON (resume)
            "loop_state",  # the epoch loop's position, early stopping, divergence guard, progress line
            "run_records",  # a run's record at start, at a failed preparation, at a failure
            "run_result",
            "variants",
            "adapter",  # the portable adapter folder the runner saves
            "fsdp",
            "launch",
            "dynamics.records",
            "dynamics.metrics",
            "dynamics.entropy",
            "dynamics.stats",
            "dynamics.capacity",
            "=dynamics",  # the package __init__: re-exports the pure measures above
        ),
    ),
    ("runner", ("runner",)),
    # Features that train runs or read them back (predict: use what a run trained).
    ("features", ("lab", "precision_lab", "detect", "dynamics", "eval", "predict", "predict_cli")),
    ("command line", ("cli", "__main__")),
]
# The package's own __init__ (kss_lora) is the public façade: it re-exports the method and load_run_model
# (prediction) lazily, so it sits with the features.
PACKAGE_LAYER = "features"

# Import cycles tolerated (none: keep it that way); each entry would be the exact set of modules in a cycle.
ALLOWED_CYCLES: list[frozenset[str]] = []


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _resolve(base: str, level: int, target: str | None, package: str) -> str:
    """The absolute module name of ``from <level dots><target> import ...`` inside ``package``."""
    if level == 0:
        return target or ""
    parts = package.split(".")
    anchor = ".".join(parts[: len(parts) - level + 1])
    return f"{anchor}.{target}" if target else anchor


def _is_import_module(call: ast.Call) -> bool:
    func = call.func
    return (isinstance(func, ast.Name) and func.id == "import_module") or (
        isinstance(func, ast.Attribute) and func.attr == "import_module"
    )


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(name, path)
    out: set[str] = set()
    computed_loader = False
    strings: list[str] = []

    def add(candidate: str) -> bool:
        if candidate in known:
            out.add(candidate)
            return True
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, node.level, node.module, package)
            for alias in node.names:
                # `from pkg import sub` imports the submodule; `from mod import function` imports mod.
                if not add(f"{base}.{alias.name}"):
                    add(base)
        elif isinstance(node, ast.Call) and _is_import_module(node) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                target = first.value
                add(_resolve(name, len(target) - len(target.lstrip(".")), target.lstrip(".") or None, package))
            else:
                computed_loader = True
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.append(node.value)
    if computed_loader:  # a lazy loader: each string naming a module (absolute, relative or a child) counts
        for s in strings:
            if s.startswith("."):
                add(_resolve(name, len(s) - len(s.lstrip(".")), s.lstrip("."), package))
            else:
                add(s) or add(f"{package}.{s}")
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> Iterator[set[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module are the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    yield component


def layer_of(module: str) -> int:
    if module == PACKAGE:
        return [name for name, _ in LAYERS].index(PACKAGE_LAYER)
    rel = module.removeprefix(f"{PACKAGE}.")
    best: tuple[int, int] | None = None  # (length of the entry, layer)
    for rank, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            exact = entry.startswith("=")
            p = entry.lstrip("=")
            if (rel == p or (not exact and rel.startswith(f"{p}."))) and (best is None or len(entry) > best[0]):
                best = (len(entry), rank)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")
    return best[1]


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for child in graph[todo.pop()]:
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_graph_reader_sees_lazy_and_relative_imports(tmp_path):
    """The reader itself: a lazy loader's strings, a relative import inside a function and an
    ``import_module`` string are edges, and the cycle they make is found."""
    pkg = tmp_path / "demo"
    pkg.mkdir()
    files = {
        "demo": (
            pkg / "__init__.py",
            "from importlib import import_module\n_LAZY = {'A': '.a'}\n"
            "def __getattr__(n):\n    return import_module(_LAZY[n], __name__)\n",
        ),
        "demo.a": (pkg / "a.py", "def f():\n    from .b import g\n    return g\n"),
        "demo.b": (pkg / "b.py", "import importlib\nimportlib.import_module('demo.a')\n"),
        "demo.c": (pkg / "c.py", "from demo import a\nfrom . import b as _b\n"),
    }
    for path, text in files.values():
        path.write_text(text)
    graph = {name: imports_of(name, path, set(files)) for name, (path, _) in files.items()}
    assert graph == {"demo": {"demo.a"}, "demo.a": {"demo.b"}, "demo.b": {"demo.a"}, "demo.c": {"demo.a", "demo.b"}}
    assert [c for c in strongly_connected(graph) if len(c) > 1] == [{"demo.a", "demo.b"}]
    assert "kss_lora.lab.registry" in reachable(import_graph(), "kss_lora.lab.cli")


def test_no_import_cycle(graph):
    cycles = [c for c in strongly_connected(graph) if len(c) > 1 and frozenset(c) not in ALLOWED_CYCLES]
    assert not cycles, "import cycles (lazy imports included): " + "; ".join(" ↔ ".join(sorted(c)) for c in cycles)


def test_layers_point_one_way(graph):
    wrong = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
        for m, targets in sorted(graph.items())
        for t in sorted(targets)
        if layer_of(t) > layer_of(m)
    ]
    assert not wrong, "imports that point up:\n" + "\n".join(wrong)


def test_nothing_below_the_runner_reaches_above_it(graph):
    """Transitively: no building block (config, numerics, methods, models, data, tasks, noise...) ends up
    importing the runner, a feature (lab, precision_lab, detect, dynamics analyses, eval) or the CLI."""
    runner = layer_of(f"{PACKAGE}.runner")
    below = [m for m in graph if layer_of(m) < runner]
    assert f"{PACKAGE}.config" in below and f"{PACKAGE}.precision.emulate" in below
    wrong = {m: sorted(t for t in reachable(graph, m) if layer_of(t) >= runner) for m in below}
    wrong = {m: t for m, t in wrong.items() if t}
    assert not wrong, f"below the runner but reaching above it: {wrong}"


def test_no_feature_imports_the_cli(graph):
    cli = f"{PACKAGE}.cli"
    importers = sorted(m for m, targets in graph.items() if cli in targets and m != f"{PACKAGE}.__main__")
    assert not importers, f"import kss_lora.cli (register through kss_lora.commands instead): {importers}"


def test_config_layer_imports_no_torch():
    """Validating a config (methods and precision blocks included) loads neither torch nor the runner."""
    code = (
        "import sys\n"
        "from kss_lora.config import from_dict\n"
        "from_dict({'method': {'name': 'lora', 'rank': 4}, 'precision': {'mode': 'emu-fp8',"
        " 'emulation': {'scaling': 'block'}}})\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'kss_lora.runner') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_no_module_over_600_lines():
    long = {name: n for name, path in source_modules().items() if (n := len(path.read_text().splitlines())) > 600}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
