"""vtbench's layers import one way (docs/design.md, "Layers"): read from the source, every import wherever it stands.

    cli -> studies, report -> engine -> methods, datasets -> models -> core

A layer may import any layer below it (report may also read studies); `vtbench.errors` and the package's version
are open to all. No module takes part in an import cycle.
"""

import ast
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


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The vtbench modules `name` imports, at its top or inside a function. `from package import module` imports
    the module (its package is the parent every submodule needs, not an arrow); `from module import name` the
    module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
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
