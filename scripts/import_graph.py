"""The shape of the package: module count, largest modules, the longest import chain.

    python scripts/import_graph.py [REPO]     # default: this checkout

Module-level imports only (those under `if TYPE_CHECKING:` left out), as
`tests/unit/test_architecture.py` reads them; the rules themselves live in that test.
"""

from __future__ import annotations

import ast
import sys
from functools import lru_cache
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        out.append(node)
        if isinstance(node, (ast.If, ast.Try)):
            out += top_level(node.body) + top_level(getattr(node, "orelse", []))
    return out


def graph(root: Path) -> tuple[dict[str, set[str]], dict[str, int]]:
    trees = {module_name(root, p): (ast.parse(p.read_text()), len(p.read_text().splitlines()))
             for p in root.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, (tree, _) in trees.items():
        deps: set[str] = set()
        for node in top_level(tree.body):
            if isinstance(node, ast.Import):
                deps |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        edges[name] = {d for d in deps if d in trees and d != name}
    return edges, {name: lines for name, (_, lines) in trees.items()}


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[1]) / "batchrun"
    edges, lines = graph(root)

    @lru_cache(None)
    def depth(module: str) -> int:
        return 1 + max((depth(d) for d in edges[module]), default=0)

    chain = [max(edges, key=depth)]
    while edges[chain[-1]]:
        chain.append(max(edges[chain[-1]], key=depth))
    packages = sum(1 for _ in root.rglob("__init__.py"))
    print(f"modules: {len(edges)} files in {packages} package(s)")
    print("largest:", ", ".join(f"{m} {n}" for m, n in sorted(lines.items(), key=lambda kv: -kv[1])[:5]))
    print(f"import depth {len(chain)}: {' -> '.join(chain)}")


if __name__ == "__main__":
    main()
