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


def modules(root: Path) -> dict[str, ast.Module]:
    """Every module of the package at `root`, parsed, by dotted name."""
    return {module_name(root, p): ast.parse(p.read_text(), str(p)) for p in sorted(root.rglob("*.py"))}


def imports(tree: ast.Module, top_level_only: bool = False) -> set[str]:
    """Modules imported anywhere in `tree` (or only at module level, outside
    `if TYPE_CHECKING:`), as dotted names."""
    nodes = top_level(tree.body) if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        out.append(node)
        if isinstance(node, (ast.If, ast.Try)):
            out += top_level(node.body) + top_level(getattr(node, "orelse", []))
    return out


def internal_graph(root: Path, top_level_only: bool = True) -> dict[str, set[str]]:
    """Each module's imports of other modules of the same package."""
    trees = modules(root)
    return {name: {m for m in imports(tree, top_level_only) if m in trees and m != name}
            for name, tree in trees.items()}


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[1]) / "batchrun"
    edges = internal_graph(root)
    lines = {module_name(root, p): len(p.read_text().splitlines()) for p in root.rglob("*.py")}

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
