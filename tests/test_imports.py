"""No import cycles: the package's modules import one another in one direction only.

Imports inside functions count (they hide a cycle rather than remove it); imports only for type
checkers (``if TYPE_CHECKING:``) do not, and neither does a module's import of its own parent
packages (Python loads those first anyway).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in (SRC / "digitnet").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The digitnet modules ``path`` imports anywhere in its code, outside ``if TYPE_CHECKING:``."""

    def known(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    tree = ast.parse(path.read_text())
    typing_only = {id(node) for block in ast.walk(tree)
                   if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for statement in block.body for node in ast.walk(statement)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {known(alias.name) for alias in node.names if alias.name.startswith("digitnet")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("digitnet"):
            for alias in node.names:   # `from package import submodule` imports the submodule
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else known(node.module))
    return found


def test_no_module_imports_itself_through_others():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        graph[name] = {other for other in _imports(path, modules)
                       if other != name and not name.startswith(other + ".")}
    cycles = []
    state: dict[str, str] = {}     # "open" while on the path being walked, "done" after

    def walk(name: str, path: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                cycles.append(" -> ".join(path[path.index(other):] + [other]))
            elif other not in state:
                walk(other, path + [other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
