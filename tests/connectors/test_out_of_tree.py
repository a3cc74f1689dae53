"""A third CRM with no edit to the core (issue 8, point 15): an out-of-tree connector registered
through the `account_router.connectors` entry-point group, exactly as a pip package would be,
named in a routing file's `crm_ids` and `field_maps`, and swept through the real pipeline and
the real CLI."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from config.routing import ConfigError
from connectors import registry
from connectors.settings import Settings
from sync.pipeline import Pipeline
from sync.ports import CrmUser
from sync.state import open_store
from tasks.cli import app
from tasks.http import create_app
from tests.example_crm import connector as memcrm

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

ROUTING = """\
version: 1
reps:
  - {id: ava, crm_ids: {memcrm: u1}}
  - {id: ben, crm_ids: {memcrm: u2}}
rules:
  - name: us-enterprise
    when: {country: {eq: US}, employees: {gt: 500}}
    assign: {rep: ava}
  - name: fintech
    when: {industry: {eq: Fintech}}
    assign: {rep: ben}
fallback: {rep: ben}
field_maps:
  memcrm:
    org: {industry: sector}       # an override of a field memcrm's defaults do not map
"""


def install_dist_info(root: Path) -> None:
    """What `pip install memcrm-example` leaves on sys.path: a dist-info with entry points."""
    dist = root / "memcrm_example-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: memcrm-example\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [account_router.connectors]
        memcrm = tests.example_crm.settings:SPEC
        """))


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # syspath_prepend also invalidates importlib's caches, so importlib.metadata sees the
    # new dist-info as it would after a pip install; monkeypatch removes it afterwards.
    install_dist_info(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield


@pytest.fixture
def crm() -> Iterator[memcrm.MemCrmData]:
    data = memcrm.DATA
    data.records = {"Org": {
        "o1": {"title": "Acme", "web": "acme.com", "nation": "USA", "headcount": "900"},
        "o2": {"title": "Ledgerly", "web": "ledgerly.io", "nation": "DE", "headcount": "40",
               "sector": "Fintech"},
        "o3": {"title": "Tiny", "web": "tiny.fr", "nation": "FR", "headcount": "3"},
    }}
    data.users = [CrmUser("u1", active=True), CrmUser("u2", active=True)]
    data.writes = []
    yield data
    memcrm.DATA.records, memcrm.DATA.users, memcrm.DATA.writes = {}, [], []


@pytest.fixture
def routing_file(tmp_path: Path) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(ROUTING)
    return path


def owners(data: memcrm.MemCrmData) -> dict[str, object]:
    return {i: row.get("owner_ref") for i, row in data.records["Org"].items()}


def test_given_no_entry_point_when_loading_a_routing_file_naming_memcrm_then_error(
        routing_file: Path) -> None:
    assert "memcrm" not in registry.names()
    with pytest.raises(ConfigError) as caught:
        registry.load_routing(routing_file)
    assert caught.value.path == "reps[0].crm_ids.memcrm"


def test_given_the_entry_point_when_listing_then_memcrm_is_declared_without_a_connector(
        installed: None) -> None:
    assert "memcrm" in registry.names()
    assert registry.known_crms()["memcrm"] == ("Org", "Person")
    assert registry.canonical_object("memcrm", " org ") == "Org"
    assert registry.routed_fields("memcrm")["Person"] == {
        "org_title", "mail", "nation", "owner_ref"}


def test_given_memcrm_installed_when_swept_through_the_pipeline_then_owners_are_written(
        installed: None, crm: memcrm.MemCrmData, routing_file: Path) -> None:
    routing = registry.load_routing(routing_file)
    connector = registry.create_for("memcrm", routing, Settings())
    store = open_store("sqlite:///:memory:")
    try:
        report = Pipeline(connector, routing, store).sweep("org", now=NOW)
    finally:
        store.close()

    assert owners(crm) == {"o1": "u1", "o2": "u2", "o3": "u2"}
    assert report.written == 3 and not report.failed
    assert report.rules == {"us-enterprise": 1, "fintech": 1, "(fallback)": 1}
    # The routing file's override is read as well as memcrm's own defaults.
    assert "sector" in connector.extra_fields["Org"]  # type: ignore[attr-defined]


def test_given_memcrm_installed_when_swept_from_the_cli_then_owners_are_written(
        installed: None, crm: memcrm.MemCrmData, routing_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [
        "sweep", "--crm", "memcrm", "--object", "Org", "--config", str(routing_file),
        "--state", f"sqlite:///{tmp_path / 's.db'}", "--now", NOW.isoformat()])

    assert result.exit_code == 0, result.output
    assert owners(crm) == {"o1": "u1", "o2": "u2", "o3": "u2"}
    assert sorted(crm.writes) == [("Org", "o1", "u1"), ("Org", "o2", "u2"), ("Org", "o3", "u2")]


def test_given_memcrm_installed_when_the_ops_api_is_asked_to_reprocess_then_it_is_enqueued(
        installed: None, tmp_path: Path) -> None:
    calls: list[tuple[str, str, list[str], str]] = []
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        client = TestClient(create_app(
            Settings.model_validate({"api_token": "t0ken"}), store,
            lambda crm, obj, ids, trigger: calls.append((crm, obj, list(ids), trigger))))
        answer = client.post("/reprocess", headers={"Authorization": "Bearer t0ken"},
                             json={"crm": "memcrm", "object": "person", "ids": ["p1"]})
    finally:
        store.close()

    assert answer.status_code == 202, answer.text
    assert calls == [("memcrm", "Person", ["p1"], "reprocess")]
