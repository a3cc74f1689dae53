"""The connector registry: CRMs are declared as data (CrmSpec), and the core names none of them."""

from __future__ import annotations

import ast
import io
import re
import textwrap
import tokenize
from pathlib import Path

import pytest

from connectors import registry
from connectors.csv import settings as csv_settings
from connectors.hubspot import settings as hubspot_settings
from connectors.salesforce import settings as salesforce_settings
from sync.ports import CrmSpec

ROOT = Path(__file__).resolve().parents[2]
VENDOR = re.compile(r"hubspot|salesforce", re.IGNORECASE)


def code_tokens(source: str) -> list[tokenize.TokenInfo]:
    """The tokens of a module that are code: comments and docstrings left out."""
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                docstrings.add((first.lineno, first.col_offset))
    return [tok for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type != tokenize.COMMENT
            and not (tok.type == tokenize.STRING and tok.start in docstrings)]


def vendor_names(source: str) -> list[str]:
    return [f"line {t.start[0]}: {t.string}" for t in code_tokens(source)
            if VENDOR.search(t.string)]


def test_given_the_scanner_then_it_skips_comments_and_docstrings_but_not_code() -> None:
    source = textwrap.dedent('''\
        """About HubSpot."""
        # Salesforce
        def f():
            """HubSpot again."""
            return "salesforce"
        ''')
    assert vendor_names(source) == ["line 5: \"salesforce\""]


@pytest.mark.parametrize("package", ["sync", "config"])
def test_given_the_core_then_no_crm_is_named_in_its_code(package: str) -> None:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT)
        names = vendor_names(path.read_text(encoding="utf-8"))
        if names:
            found[str(relative)] = names
    assert found == {}


def test_given_the_built_ins_then_each_is_declared_by_its_own_settings() -> None:
    specs = registry.specs()
    assert specs["hubspot"] is hubspot_settings.SPEC
    assert specs["salesforce"] is salesforce_settings.SPEC
    assert specs["csv"] is csv_settings.SPEC
    assert specs["file"] is csv_settings.FILE_SPEC
    assert registry.names() == ["hubspot", "salesforce", "csv"]  # `file` has no connector


def test_given_the_routing_files_crms_then_they_are_every_declared_name_with_its_objects(
) -> None:
    crms = registry.known_crms()
    assert crms["hubspot"] == ("companies", "contacts")
    assert crms["salesforce"] == ("Account", "Lead", "Contact")
    assert set(crms) == {"hubspot", "salesforce", "csv", "file"}


def test_given_an_unknown_crm_when_asked_then_value_error_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown CRM 'pipedrive' \(known: hubspot, "
                                         r"salesforce, csv\)"):
        registry.spec("pipedrive")
    with pytest.raises(ValueError, match="'file' has no connector"):
        registry.factory("file")


def test_given_field_map_overrides_when_asked_for_routed_fields_then_they_are_included(
) -> None:
    fields = registry.routed_fields(
        "hubspot", {"hubspot": {"COMPANIES": {"industry": "sector_x"}}},
        raw_fields=frozenset({"tier"}))
    assert {"sector_x", "tier", "hubspot_owner_id", "domain"} <= fields["companies"]
    assert "industry" not in fields["companies"]
    assert "sector_x" not in fields["contacts"]


def test_given_a_spec_with_a_bad_kind_or_field_when_declared_then_value_error() -> None:
    with pytest.raises(ValueError, match="kind 'deal'"):
        CrmSpec(name="x", objects={"Deal": "deal"}, field_maps={})
    with pytest.raises(ValueError, match="unknown object 'Lead'"):
        CrmSpec(name="x", objects={"Org": "account"}, field_maps={"Lead": {"name": "n"}})
    with pytest.raises(ValueError, match="Org.revenue: not a normalized record field"):
        CrmSpec(name="x", objects={"Org": "account"}, field_maps={"Org": {"revenue": "r"}})


def test_given_an_entry_point_that_is_not_a_spec_when_listed_then_value_error_names_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[account_router.connectors]\nbroken = tests.example_crm.connector:from_settings\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"CRM 'broken' \(entry point "
                                         r"tests.example_crm.connector:from_settings\) must "
                                         r"name a CrmSpec, found function"):
        registry.specs()
