"""Settings come from the pydantic settings objects only (config/settings.py and the
connectors' connectors/settings.py): no module of the application reads the process
environment itself, where a setting would escape validation, defaults and docs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "connectors", "sync", "tasks")
# The demo points the settings at its own simulator by setting the variables for its run and
# restoring what was there: a write and its undo, not a setting read.
ALLOWED = {"tasks/demo.py"}


def environment_reads(path: Path) -> list[str]:
    """`os.environ` / `os.getenv` / `environ` uses in a module, as 'line: source'."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        hit = (isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "environb"}
               and isinstance(node.value, ast.Name) and node.value.id == "os") or \
              (isinstance(node, ast.ImportFrom) and node.module == "os"
               and any(a.name in {"environ", "getenv", "environb"} for a in node.names))
        if hit:
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_given_the_application_modules_then_none_reads_the_environment_itself() -> None:
    reads = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name not in ALLOWED and (found := environment_reads(path)):
                reads[name] = found
    assert reads == {}


def test_given_a_module_reading_the_environment_then_the_check_sees_it(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom os import getenv\nx = os.environ.get('A')\n")
    assert environment_reads(module) == ["2: from os import getenv", "3: os.environ"]
