"""The pages in docs/ stay true: every complete routing-file example loads and compiles, and every
link between the README and docs/ lands on a file and a heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config.routing import parse
from sync.compiler import compile_routing

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _examples() -> list[tuple[str, str]]:
    """(`page:line`, text) of each ```yaml block that is a whole routing file (`version: 1`)."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match[1] == "yaml" and match[2].startswith("version: 1"):
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{page.name}:{line}", match[2]))
    return found


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to `-`, repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for match in re.finditer(r"^#{1,6} (.+)$", FENCE.sub("", markdown), re.M):
        slug = re.sub(r"[^\w\- ]", "", match[1].strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_given_the_docs_when_collecting_examples_then_each_page_with_rules_has_some() -> None:
    pages = {where.partition(":")[0] for where, _ in _examples()}
    assert "routing-file.md" in pages


@pytest.mark.parametrize(("where", "text"), _examples(), ids=[w for w, _ in _examples()])
def test_given_a_routing_file_example_when_loading_it_then_it_validates_and_compiles(
        where: str, text: str, tmp_path: Path) -> None:
    routing = compile_routing(parse(text, source=tmp_path / "routing.yaml"))
    assert routing.rules, f"{where}: an example with no rules shows nothing"


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_given_a_page_when_following_its_relative_links_then_file_and_heading_exist(
        page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not ours to check offline
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and \
                fragment not in _anchors(file.read_text(encoding="utf-8")):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_given_the_docs_and_readme_when_searching_then_no_todo_marker_is_left() -> None:
    left = [f"{page.name}:{n}" for page in [ROOT / "README.md", *PAGES]
            for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1)
            if "TODO(" in line]
    assert not left, "facts still to fill in: " + ", ".join(left)


def test_given_every_setting_when_reading_the_operations_page_then_each_variable_is_named() -> None:
    from connectors.settings import Settings

    page = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    missing = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        variable = str(choices[0]) if choices else f"ACCOUNT_ROUTER_{name.upper()}"
        if f"`{variable}`" not in page:
            missing.append(variable)
    assert not missing, "settings docs/operations.md does not name: " + ", ".join(missing)


def test_given_the_limits_section_when_reading_it_then_every_loader_bound_is_listed() -> None:
    import config.routing
    import sync.conditions

    text = (ROOT / "docs" / "routing-file.md").read_text(encoding="utf-8")
    limits = text[text.index("## Limits"):]
    bounds = [name for module in (config.routing, sync.conditions) for name in vars(module)
              if name.startswith("MAX_")]
    assert bounds
    missing = [name for name in bounds if f"`{name}`" not in limits]
    assert not missing, "routing-file.md#limits does not list: " + ", ".join(missing)


def test_given_a_clone_when_reading_the_docs_then_no_section_of_the_absent_design_md_is_cited(
) -> None:
    # DESIGN.md is not in the repository: each page says once that it wins over the page (the
    # "design contract (DESIGN.md ...)" sentence); anything else citing it sends a reader nowhere.
    cited = [f"{page.name}:{n}" for page in [ROOT / "README.md", *PAGES]
             for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1)
             if "DESIGN.md" in line and "design contract (DESIGN.md" not in line]
    assert cited == []
