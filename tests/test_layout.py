"""The house: packages follow the data, a lower room never imports a higher one, no
module imports itself round a cycle, and the README's layout table names every module.

Imports are read from the source (every ``import``, at the top or inside a function),
so an import hidden in a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "pipeline"
# From the bottom up. A module may import its own layer and the ones below it.
LAYERS = ("pipeline", "content", "channels", "site", "ledger", "mail", "posting", "schedule", "web", "cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The pipeline modules ``name`` imports (a package's ``__init__`` stands for the package)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("pipeline"):
                found.add(target)
    return found


def layer(name: str) -> int:
    if name == "pipeline.__main__":
        return LAYERS.index("cli")  # `python -m pipeline` is the command line itself
    parts = name.split(".")
    room = parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else "pipeline"
    return LAYERS.index(room)


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) - {"pipeline"} for name, path in found.items()}


def test_every_room_is_a_known_layer() -> None:
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms <= set(LAYERS), f"new package(s) {rooms - set(LAYERS)}: give them a place in LAYERS"


def test_a_lower_room_never_imports_a_higher_one() -> None:
    wrong = [
        f"{name} imports {target}"
        for name, targets in graph().items()
        for target in sorted(targets)
        if layer(target) > layer(name)
    ]
    assert wrong == []


def test_no_module_imports_itself_round_a_cycle() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_readme_layout_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1]
    rows = {
        match.group(1): match.group(2)
        for match in re.finditer(r"^\| `(pipeline/[^`]*)` \| (.*) \|$", layout, re.MULTILINE)
    }
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        folder = path.parent.relative_to(ROOT).as_posix()
        # A sub-package (web/desk, channels/social) is named in its parent package's row.
        row = rows.get(folder + "/") or rows.get(folder.rpartition("/")[0] + "/")
        if row is None or f"`{path.name}`" not in row:
            missing.append(path.relative_to(ROOT).as_posix())
    assert missing == [], "name these in README.md's Layout table, in their package's row"
