"""vtbench's layers import one way (docs/design.md, "Layers"): read from the source, every import wherever it stands.

    cli -> studies, report -> engine -> methods, datasets -> models -> core

A layer may import any layer below it (report may also read studies); `vtbench.errors` and the package's version
are open to all. No module takes part in an import cycle.

Imports stand at the top of their module. Only optional packages (those not in pyproject.toml's [project]
dependencies: the extras) are imported inside the functions that need them; the command line loads a subcommand's
module with `importlib.import_module` (bench/cli/main.py's COMMANDS), the one such call in vtbench.
"""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"bench": "vtbench", "methods": "vtbench.methods", "datasets": "vtbench.datasets"}
BELOW = {
    "cli": {"studies", "report", "engine", "methods", "datasets", "models", "core"},
    "report": {"studies", "engine", "methods", "datasets", "models", "core"},
    "studies": {"engine", "methods", "datasets", "models", "core"},
    "engine": {"methods", "datasets", "models", "core"},
    "methods": {"models", "core"},
    "datasets": {"core"},
    "models": {"core"},
    "core": set(),
}
OPEN = {"errors", ""}  # vtbench.errors and vtbench itself (its version)


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _source(node: ast.ImportFrom, package: str) -> str:
    """The absolute name of the module a `from ... import` reads, relative ones resolved against `package`."""
    if not node.level:
        return node.module
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The vtbench modules `name` imports, at its top or inside a function. `from package import module` imports
    the module (its package is the parent every submodule needs, not an arrow); `from module import name` the
    module."""
    package = _package(name, path)
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _source(node, package)
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known
            out.update(submodules)
            if len(submodules) < len(node.names):
                out.add(target)
    return {m for m in out if m in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {}
    for name, path in known.items():
        edges[name] = imports(name, path, set(known)) - {name}
    return edges


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_import_points_down_a_layer():
    upward = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets
                    if layer(a) != layer(b) and layer(b) not in OPEN and layer(b) not in BELOW.get(layer(a), set()))
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_module_takes_part_in_an_import_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [module, target]) if target in path else
                              f"{module} -> {target}")
            elif target not in state:
                visit(target, [*path, module])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_layer_reader_sees_the_imports_it_judges():
    # a reader that found nothing would pass the tests above: it must see known arrows, both ways of writing them
    edges = graph()
    assert "vtbench.core.budget" in edges["vtbench.engine.runner"]
    assert "vtbench.methods.registry" in edges["vtbench.methods.token_dropout"]  # relative, `from .registry import`
    assert "vtbench.models.tokens" in edges["vtbench.methods.reductions"]
    assert "vtbench.datasets.decoders" in edges["vtbench.datasets.video"]  # `from . import decoders, sampling`
    assert set(BELOW) == {layer(m) for m in edges} - OPEN


# ---- imports at the top of their module ---------------------------------------------------------------------------

# submodules of required packages that need an optional one (torch's SummaryWriter needs the tensorboard extra)
OPTIONAL_SUBMODULES = ("torch.utils.tensorboard",)
# required, but imported where it is used: a run on synthetic data must start without it, as on the lent GPU machines,
# which have torch, timm, pandas, scipy and nvidia-ml-py only (benchmarks/gpu_check.py, tests/test_gpu_check.py)
WHERE_USED = ("av",)
SUBCOMMANDS = "vtbench.cli.main"  # the one module that imports modules by name


def _distribution(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group()).lower()


def required_packages() -> set[str]:
    """The top-level import names of pyproject.toml's [project] dependencies (pyyaml: yaml, nvidia-ml-py: pynvml),
    as their installed distributions declare them."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    required = {_distribution(d) for d in declared}
    provided = {name for name, dists in importlib.metadata.packages_distributions().items()
                if any(_distribution(d) in required for d in dists)}
    return provided | {d.replace("-", "_") for d in required}


def inner_imports() -> set[tuple[str, str, int]]:
    """(module, imported module, line) of every import statement inside a function or method, nested ones once."""
    found = set()
    for name, path in modules().items():
        package = _package(name, path)
        for function in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    found.update((name, alias.name, node.lineno) for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    found.add((name, _source(node, package), node.lineno))
    return found


def test_only_optional_packages_are_imported_inside_functions():
    eager = {"vtbench"} | required_packages() | set(sys.stdlib_module_names)
    inner = inner_imports()
    optional = {target for _, target, _ in inner
                if any(target == o or target.startswith(f"{o}.") for o in (*OPTIONAL_SUBMODULES, *WHERE_USED))}
    wrong = sorted(f"{module}:{line} imports {target}" for module, target, line in inner
                   if target.split(".")[0] in eager and target not in optional)
    assert not wrong, ("imports inside functions of vtbench modules, stdlib or required packages; move them to the "
                       "top of the module:\n" + "\n".join(wrong))


def test_the_cli_alone_imports_modules_by_name():
    calls = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            called = isinstance(node, ast.Call) and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            if called in ("import_module", "__import__") and name != SUBCOMMANDS:
                calls.append(f"{name}:{node.lineno}")
    assert not calls, "modules imported by name outside the CLI's COMMANDS:\n" + "\n".join(calls)


def test_the_inner_import_reader_sees_what_it_judges():
    # a reader that found nothing, or a required set that named nothing, would pass the test above
    inner = {(module, target) for module, target, _ in inner_imports()}
    assert ("vtbench.engine.trackers", "wandb") in inner  # `import wandb` in a method
    assert ("vtbench.datasets.torchcodec_decode", "torchcodec.decoders") in inner  # `from ... import` in a function
    assert {"torch", "yaml", "pynvml", "av", "optuna", "pandas"} <= required_packages()
    assert not {"wandb", "mlflow", "submitit", "torchcodec", "tensorboard"} & required_packages()
