"""The house rules, checked on the import graph (README, "Architecture").

Each rule is what keeps a stage changeable on its own: the scheduler runs without Ray (so
it has unit tests), the read side depends on the storage contract and never on the writer,
only the CLI talks to the terminal, and the tools are never needed by a run.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "batchrun"


def _graph_reader() -> ModuleType:
    """scripts/import_graph.py: the one reader of the package's import graph."""
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GRAPH = _graph_reader()
imports = GRAPH.imports


def modules() -> dict[str, ast.Module]:
    return GRAPH.modules(PACKAGE)


def internal_graph(top_level_only: bool = True) -> dict[str, set[str]]:
    return GRAPH.internal_graph(PACKAGE, top_level_only)


def importers_of(prefix: str) -> set[str]:
    return {name for name, tree in modules().items()
            if any(m == prefix or m.startswith(prefix + ".") for m in imports(tree))}


def test_only_execution_imports_ray() -> None:
    assert importers_of("ray") <= {m for m in modules() if m.startswith("batchrun.execution.")}


def test_the_scheduler_does_not_import_ray() -> None:
    tree = modules()["batchrun.execution.scheduler"]
    assert not {m for m in imports(tree) if m == "ray" or m.startswith("ray.")}


def test_the_ray_actor_lives_in_one_module() -> None:
    remote = [name for name, tree in modules().items()
              if any(isinstance(n, ast.Attribute) and n.attr == "remote"
                     and isinstance(n.value, ast.Name) and n.value.id == "ray"
                     for n in ast.walk(tree))]
    assert remote == ["batchrun.execution.ray_pool"]


def test_the_read_side_imports_the_storage_contract_never_the_writer() -> None:
    read_side = ["batchrun.staging", "batchrun.unique", "batchrun.verify", "batchrun.report",
                 "batchrun.metrics", "batchrun.tools.compare"]
    read_side += [m for m in modules() if m.startswith("batchrun.readers")]
    writer = {"batchrun.pipeline", "batchrun.execution.ray_pool"}
    graph = internal_graph(top_level_only=False)
    for module in read_side:
        assert not graph[module] & writer, module


def test_the_lineage_names_are_spelled_only_in_the_storage_contract() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name == "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in ("_file", "_line", "_batch_id"):
                raise AssertionError(f"{path}: {node.value!r} outside layout.py")


def test_only_the_cli_prints_or_imports_click_and_rich() -> None:
    for name, tree in modules().items():
        if name.startswith("batchrun.cli"):
            continue
        terminal = {m for m in imports(tree) if m.split(".")[0] in ("click", "rich")}
        assert not terminal, f"{name} imports {terminal}"
        prints = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                  and isinstance(n.func, ast.Name) and n.func.id in ("print", "exit")]
        assert not prints, f"{name} calls print/exit"


def test_the_runtime_never_imports_the_tools_except_faults_when_a_run_asks_for_them() -> None:
    eager = internal_graph(top_level_only=True)
    anywhere = internal_graph(top_level_only=False)
    for name in eager:
        if name.startswith(("batchrun.tools", "batchrun.cli")):
            continue
        assert not {d for d in eager[name] if d.startswith("batchrun.tools")}, name
        lazy = {d for d in anywhere[name] if d.startswith("batchrun.tools")}
        assert not lazy or (name, lazy) == ("batchrun.hooks", {"batchrun.tools.faults"}), name


def test_the_package_has_no_import_cycle() -> None:
    graph = internal_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] if dep in path else path
                raise AssertionError(" -> ".join([*cycle, dep]))
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_importing_batchrun_and_its_cli_does_not_import_ray() -> None:
    code = ("import sys, batchrun, batchrun.cli, batchrun.config, batchrun.catalog; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
