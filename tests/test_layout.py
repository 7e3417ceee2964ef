"""The package's shape: no import cycle between its modules (lazy imports inside functions included),
and the layer rules that keep the math, the run folder and the report apart from Ray and the sweep."""

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
    assert "cnn_cluster.report.build" in graph["cnn_cluster.cli"]  # imported inside a function
    assert "cnn_cluster.report.page" in graph["cnn_cluster.report.sections"]  # a relative import
    assert "cnn_cluster.config" in graph["cnn_cluster.data"]  # from the parent package
    assert "cnn_cluster.run.paths" in graph["cnn_cluster.sweep.trial"]  # two dots up
    back = {**graph, "cnn_cluster.report.page": graph["cnn_cluster.report.page"] | {"cnn_cluster.report.build"}}
    assert set(cycle(back)) >= {"cnn_cluster.report.page", "cnn_cluster.report.build"}


# Layers that must not need Ray: the math (a model, a training step, an occlusion map), the data,
# the run folder and the report run where Ray is not installed and read without a cluster.
NO_RAY = ("cnn_cluster.data", "cnn_cluster.models", "cnn_cluster.study", "cnn_cluster.training.step",
          "cnn_cluster.training.augment", "cnn_cluster.attribution.occlusion", "cnn_cluster.attribution.methods",
          "cnn_cluster.attribution.faithfulness", "cnn_cluster.attribution.sanity", "cnn_cluster.attribution.analyse",
          "cnn_cluster.attribution.verdict", "cnn_cluster.attribution.check", "cnn_cluster.run",
          "cnn_cluster.report", "cnn_cluster.tracking.fields", "cnn_cluster.tracking.send",
          "cnn_cluster.tracking.check", "cnn_cluster.tracking.to_mlflow", "cnn_cluster.tracking.to_tensorboard",
          "cnn_cluster.tracking.to_wandb", "cnn_cluster.logs")  # tracking: only live.py, Tune's callback


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _imports_ray(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        if any(n == "ray" or n.startswith("ray.") for n in names):
            return True
    return False


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_math_the_run_folder_and_the_report_import_no_ray():
    graph = import_graph()
    files = {_module(f): f for f in PACKAGE.rglob("*.py")}
    for module in (m for m in graph if _within(m, NO_RAY)):
        reached = {module} | _reaches(graph, module)
        with_ray = sorted(m for m in reached if _imports_ray(files[m]))
        assert not with_ray, f"{module} imports Ray through {with_ray}"


def test_the_report_needs_nothing_of_the_sweep_and_nothing_imports_the_cli():
    graph = import_graph()
    for module, targets in graph.items():
        if _within(module, ("cnn_cluster.report",)):
            assert not {t for t in targets if _within(t, ("cnn_cluster.sweep",))}, module
        assert "cnn_cluster.cli" not in targets, module


def test_the_layer_check_catches_ray_in_the_math(tmp_path):
    bad = tmp_path / "step.py"
    bad.write_text("def f():\n    import ray.train\n")
    assert _imports_ray(bad) and not _imports_ray(PACKAGE / "training" / "step.py")


def _prints(path: Path) -> list[str]:
    """Where ``path`` writes to the terminal itself: print() calls and sys.stdout/sys.stderr uses."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append(f"{path.name}:{node.lineno} print()")
        elif (isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr")
              and isinstance(node.value, ast.Name) and node.value.id == "sys"):
            found.append(f"{path.name}:{node.lineno} sys.{node.attr}")
    return found


def test_the_library_logs_and_never_prints():
    """Only the CLI (the edge) and the logging setup touch the terminal; everything else logs to
    the ``cnnc`` hierarchy, which the CLI's --quiet/--verbose configure in one place."""
    edge = {PACKAGE / "cli.py", PACKAGE / "logs.py"}
    found = [hit for f in sorted(PACKAGE.rglob("*.py")) if f not in edge for hit in _prints(f)]
    assert found == []


def test_the_print_check_sees_print_and_sys_streams(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\ndef f():\n    print('x')\n    sys.stderr.write('y')\n")
    assert _prints(bad) == ["bad.py:3 print()", "bad.py:4 sys.stderr"]


def test_the_cli_and_the_sweep_import_no_ray_until_they_run():
    """Ray reads its auth token settings as it is imported: the CLI sets them from --token-file first,
    so nothing the CLI or the submission imports at the top may import Ray."""
    import subprocess
    import sys

    code = "import sys, cnn_cluster.cli, cnn_cluster.sweep.submit, cnn_cluster.tracking.send; print('ray' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stdout + r.stderr
