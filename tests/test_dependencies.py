"""Every third-party package the code imports directly is declared in pyproject.toml.

A package that only arrives as someone else's dependency (kombu through celery, urllib3 through
requests) can vanish or jump a major version when that parent changes; declaring it pins what we
rely on. The check is generic: any new import must be declared, whatever it is.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_PACKAGES = ("config", "sync", "connectors", "tasks")
DEV_TREES = ("tests", "benchmarks")


def _normalise(name: str) -> str:
    """PEP 503 name: `PyYAML` and `pyyaml`, `google_re2` and `google-re2` are the same."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    """`celery[redis]>=5.3` -> `celery`."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"unreadable requirement {requirement!r} in pyproject.toml"
    return _normalise(match.group(1))


def declared(*, with_dev: bool, pyproject: Path = ROOT / "pyproject.toml") -> set[str]:
    """The normalised distribution names pyproject.toml declares (optionally with the dev extra)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    if with_dev:
        requirements += project.get("optional-dependencies", {}).get("dev", [])
    return {_requirement_name(requirement) for requirement in requirements}


def _local_names() -> set[str]:
    """Top-level names that are our own code: the repository's packages, folders of code and
    modules (a sibling folder named like a vendor, e.g. connectors/hubspot, is not top-level)."""
    names = set(PRODUCT_PACKAGES) | set(DEV_TREES)
    for entry in ROOT.iterdir():
        if entry.suffix == ".py" or (entry / "__init__.py").is_file():
            names.add(entry.stem)
    return names


def imported_top_levels(path: Path) -> set[str]:
    """Third-party top-level modules `path` imports (absolute imports, at any depth in the file:
    a function-level or TYPE_CHECKING import is still ours to declare)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - _local_names() - {"__future__"}


def undeclared(trees: Iterable[str], allowed: set[str]) -> list[str]:
    """`module (file): why` for each import whose distribution `allowed` does not hold."""
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for tree in trees:
        for path in sorted((ROOT / tree).rglob("*.py")):
            if ".venv" in path.parts:
                continue
            for module in sorted(imported_top_levels(path)):
                owners = {_normalise(dist) for dist in distributions.get(module, [])}
                where = path.relative_to(ROOT)
                if not owners:
                    problems.append(f"{module} ({where}): no installed distribution provides it")
                elif not owners & allowed:
                    problems.append(f"{module} ({where}): provided by {', '.join(sorted(owners))}, "
                                    f"which pyproject.toml does not declare")
    return problems


def test_given_product_code_when_its_imports_are_read_then_each_is_a_declared_dependency():
    problems = undeclared(PRODUCT_PACKAGES, declared(with_dev=False))
    assert not problems, "undeclared imports:\n" + "\n".join(problems)


def test_given_tests_and_benchmarks_when_imports_are_read_then_each_is_declared_or_dev():
    problems = undeclared(DEV_TREES, declared(with_dev=True))
    assert not problems, "undeclared imports:\n" + "\n".join(problems)


def test_given_an_import_pyproject_lacks_when_checked_then_it_is_named_with_its_file(
        tmp_path: Path) -> None:
    # The checker itself must see an undeclared import, or the two tests above prove nothing.
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["PyYAML>=6.0"]\n',
                         encoding="utf-8")
    allowed = declared(with_dev=False, pyproject=pyproject)
    assert allowed == {"pyyaml"}
    assert imported_top_levels(ROOT / "config" / "routing.py") >= {"yaml", "pydantic"}
    problems = undeclared(["config"], allowed)
    assert any(problem.startswith("pydantic (config/") for problem in problems)
    assert not any(problem.startswith("yaml ") for problem in problems)
