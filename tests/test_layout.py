"""The package's layering (DESIGN.md, "Tasks"): no module imports a floor above its own."""
from __future__ import annotations

import ast
from pathlib import Path

import stdyn

# Bottom to top. A module may import its own floor and the floors below.
FLOORS = [
    ("stdyn.data", "stdyn.models"),
    ("stdyn.core",),
    ("stdyn.tasks",),
    ("stdyn.training",),
    ("stdyn.interventions", "stdyn.experiments", "stdyn.plots"),
    ("stdyn.cli", "stdyn.book"),
]
PACKAGE = Path(stdyn.__file__).parent


def _floor(module: str) -> int | None:
    for level, prefixes in enumerate(FLOORS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return level
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only; nothing runs them)."""
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
               for statement in block.body for node in ast.walk(statement)}
    return [node for node in ast.walk(tree) if id(node) not in skipped]


def _imports(module: str, source: str, is_package: bool = False) -> set[str]:
    """Every stdyn module a file imports when it runs, at any depth (function-level imports included)."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found |= {f"{base}.{alias.name}" for alias in node.names} | {base}
    return {name for name in found if name.startswith("stdyn.")}


def upward_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    own = _floor(module)
    if own is None:
        return []
    return [f"{module} imports {imported}" for imported in sorted(_imports(module, source, is_package))
            if (_floor(imported) or 0) > own]


def test_every_module_has_a_floor():
    loose = [_module_name(p) for p in PACKAGE.rglob("*.py")
             if _floor(_module_name(p)) is None and p.parent != PACKAGE]
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__", "cli", "plots"}
    assert not loose and not top, f"modules outside the layering: {loose + sorted(top)}"


def test_no_import_runs_up_the_floors():
    problems = [problem for path in sorted(PACKAGE.rglob("*.py"))
                for problem in upward_imports(_module_name(path), path.read_text(), path.name == "__init__.py")]
    assert problems == []


def test_the_checker_sees_upward_and_relative_imports():
    inside_function = "def f():\n    from stdyn.training import zoo\n"
    assert upward_imports("stdyn.data.x", inside_function) == ["stdyn.data.x imports stdyn.training",
                                                               "stdyn.data.x imports stdyn.training.zoo"]
    assert upward_imports("stdyn.core.x", "from ..experiments import surveys\n") == [
        "stdyn.core.x imports stdyn.experiments", "stdyn.core.x imports stdyn.experiments.surveys"]
    assert upward_imports("stdyn.training.x", "from stdyn.core import claims\nimport stdyn.data.cache\n") == []
    annotations_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stdyn.training import zoo\n"
    assert upward_imports("stdyn.tasks.x", annotations_only) == []
