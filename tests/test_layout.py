"""The package's shape: no import cycle between its modules (lazy imports inside functions included)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cnn_cluster"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it."""
    me = _module(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]
            found |= {n for n in names if n in modules} or ({base} & modules)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
    return found - {me}


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and the package's modules it imports."""
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module(f) for f in files}
    # A submodule importing from its own package's __init__ is how packages work, not a cycle.
    return {_module(f): {t for t in _imports(f, modules) if not _module(f).startswith(t + ".")} for f in files}


def cycle(graph: dict[str, set[str]]) -> list[str]:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return exc.args[1]
    return []


def test_no_import_cycle_in_the_package():
    found = cycle(import_graph())
    assert not found, "import cycle: " + " -> ".join(found)


def test_the_walk_sees_lazy_and_relative_imports_and_finds_a_cycle():
    graph = import_graph()
    assert "cnn_cluster.report" in graph["cnn_cluster.cli"]  # imported inside a function
    assert "cnn_cluster.page" in graph["cnn_cluster.sections"]  # a relative import
    assert "cnn_cluster.config" in graph["cnn_cluster.data"]  # from the parent package
    back = {**graph, "cnn_cluster.page": graph["cnn_cluster.page"] | {"cnn_cluster.report"}}
    assert set(cycle(back)) >= {"cnn_cluster.page", "cnn_cluster.report"}
