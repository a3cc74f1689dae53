"""The entry layer along its seams (issue 8, point 14): the HTTP package defers no import into a
function, and no module of tasks/ reaches into another
module's private names (the HTTP app took the worker's `_stamp` with a deferred import; what
both need lives in tasks/routing_files.py)."""

from __future__ import annotations

import ast
from pathlib import Path

TASKS = Path(__file__).resolve().parents[2] / "tasks"


def _module_of(path: Path) -> str:
    parts = path.relative_to(TASKS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[ast.ImportFrom]:
    """Every `from x import y` of a module, at any depth (deferred ones included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]


def test_given_the_tasks_modules_then_none_imports_another_modules_private_names() -> None:
    private = []
    for path in sorted(TASKS.rglob("*.py")):
        for node in imports(path):
            if node.module != _module_of(path):
                names = [a.name for a in node.names if a.name.startswith("_")
                         and not a.name.startswith("__")]
                if names:
                    private.append(f"{_module_of(path)}:{node.lineno} {ast.unparse(node)}")
    assert private == []


def test_given_the_http_package_then_no_import_is_deferred_into_a_function() -> None:
    # The HTTP app is loaded whole by `serve` (the CLI already defers importing it), so an
    # import inside one of its functions saves nothing and hides a dependency.
    deferred = []
    for path in sorted((TASKS / "http").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                deferred += [f"{path.name}:{node.lineno} {ast.unparse(node)}"
                             for node in ast.walk(function)
                             if isinstance(node, ast.Import | ast.ImportFrom)]
    assert deferred == []
