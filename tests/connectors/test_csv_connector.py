"""The CSV connector behind the Connector port: a file routed by `sweep --crm csv`."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from connectors import registry
from connectors.settings import Settings
from tasks.cli import app

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples"


def rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return {r["id"]: r for r in csv.DictReader(fh)}


def test_given_the_csv_connector_when_listed_then_it_is_in_the_registry():
    assert "csv" in registry.names()


def test_given_no_input_setting_when_creating_then_a_clear_error():
    try:
        registry.create("csv", Settings(_env_file=None))
    except ValueError as exc:
        assert "ACCOUNT_ROUTER_CSV_INPUT" in str(exc)
    else:
        raise AssertionError("expected a ValueError")


def test_given_an_export_when_sweeping_with_the_csv_connector_then_owners_land_in_a_copy(
        tmp_path, monkeypatch):
    source = tmp_path / "accounts.csv"
    source.write_bytes((EXAMPLE / "accounts.csv").read_bytes())
    target = tmp_path / "routed.csv"
    monkeypatch.setenv("ACCOUNT_ROUTER_CSV_INPUT", str(source))
    monkeypatch.setenv("ACCOUNT_ROUTER_CSV_OUTPUT", str(target))

    result = CliRunner().invoke(app, [
        "sweep", "--crm", "csv", "--object", "account", "--config",
        str(EXAMPLE / "routing.yaml"), "--state", f"sqlite:///{tmp_path / 's.db'}",
        "--now", "2026-11-25T15:00:00Z"])

    assert result.exit_code == 0, result.output
    before, after = rows(source), rows(target)
    assert list(before) == list(after)  # every row, in order
    assert source.read_bytes() == (EXAMPLE / "accounts.csv").read_bytes()  # input untouched
    unowned = [i for i, r in before.items() if not r["owner"]]
    assert unowned and all(after[i]["owner"] for i in unowned)
    # A valid owner (ava's HubSpot id, a rep id's crm id) is kept; a queue is replaced.
    kept = [i for i, r in before.items() if r["owner"] == "005000000000106AAA"]
    assert kept and all(after[i]["owner"] == "005000000000106AAA" for i in kept)
    queued = [i for i, r in before.items() if r["owner"].startswith("00G")]
    assert queued and all(not after[i]["owner"].startswith("00G") for i in queued)
