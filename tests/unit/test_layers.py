"""The package's layers: each imports only the ones below it, imports inside functions included.

The order (docs/architecture.md): errors/_io/_cache/_models/_graph_checks -> runtime -> policies -> receipts ->
kernels -> pytorch -> inference -> cli. Read from the source with ``ast``: every ``import``/``from`` statement
anywhere in a module, and every ``importlib.import_module("xpuruntime...")`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import xpuruntime

SRC = Path(xpuruntime.__file__).parent

#: layer of each top-level module or package of xpuruntime; a module may import its own layer and those below
LAYERS: dict[str, int] = {
    "errors": 0, "_io": 0, "_cache": 0, "_models": 0, "_graph_checks": 0, "_version": 0,
    "runtime": 1,
    "policies": 2,
    "receipts": 3,
    "kernels": 4,
    "pytorch": 5,
    "inference": 6,
    "corpus": 6,
    "__init__": 7, "demo": 7, "cli": 7, "__main__": 8,
}


def _unit(module: str) -> str | None:
    """``xpuruntime.inference.engines.torch`` -> ``inference``; None for what is not xpuruntime."""
    parts = module.split(".")
    if parts[0] != "xpuruntime":
        return None
    unit = parts[1] if len(parts) > 1 else "__init__"
    is_module = (SRC / unit).is_dir() or (SRC / f"{unit}.py").is_file()
    return unit if is_module else "__init__"  # ``from xpuruntime import __version__``: the facade


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import of the file, at any depth; relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(("xpuruntime", *path.relative_to(SRC).with_suffix("").parts[:-1]))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            found += [(node.lineno, f"{base}.{a.name}" if base == "xpuruntime" else base) for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == \
                "import_module" and node.args and isinstance(node.args[0], ast.Constant) and \
                isinstance(node.args[0].value, str):
            found.append((node.lineno, node.args[0].value))
    return found


def _edges() -> list[tuple[str, str, str]]:
    """(from unit, to unit, where) for every import between two units of the package."""
    edges = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        source = rel.parts[0].removesuffix(".py")
        if source == "__init__":
            continue  # the facade: it re-exports lazily, by name
        for line, module in _imports(path):
            target = _unit(module)
            if target is not None and target != source:
                edges.append((source, target, f"{rel}:{line} imports {module}"))
    return edges


def test_every_unit_of_the_package_has_a_layer() -> None:
    units = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in SRC.rglob("*.py")} - {"__init__"}
    assert sorted(units - set(LAYERS)) == []


def test_imports_only_go_down_the_layers() -> None:
    upward = [where for source, target, where in _edges() if LAYERS[target] > LAYERS[source]]
    assert upward == []


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for source, target, _ in _edges():
        graph.setdefault(source, set()).add(target)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    assert [u for u in graph if reaches(u, u, {u})] == []


@pytest.mark.parametrize("module", ["xpuruntime.inference.engines.torch"])
def test_the_torch_engine_uses_only_the_public_api_of_xpuruntime_pytorch(module: str) -> None:
    path = SRC / Path(*module.split(".")[1:]).with_suffix(".py")
    private = [m for _, m in _imports(path) if m.startswith("xpuruntime.pytorch._")]
    assert private == []
