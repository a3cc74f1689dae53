"""`account-router overrides`: the rate tables and the JSON of DESIGN §8."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sync.models import Decision, HistoryEvent, Outcome, event_id
from sync.state import open_store
from tests.tasks.test_cli import invoke

T0 = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)


pytestmark = pytest.mark.usefixtures("isolated")  # tests/tasks/conftest.py


def assigned(record_id: str, owner: str, rule: str | None) -> Decision:
    return Decision(record_id=record_id, object="account", crm="hubspot",
                    outcome=Outcome.ASSIGNED if rule else Outcome.FALLBACK, owner=owner,
                    owner_crm_id=f"1{len(owner)}", rule=rule, trigger="sweep", decided_at=T0,
                    written_at=T0 + timedelta(seconds=1))


def override(record_id: str, frm: str, to: str, rule: str | None, minutes: int,
             by: str | None = "userId:7") -> HistoryEvent:
    at = T0 + timedelta(minutes=minutes)
    return HistoryEvent(id=event_id("override", record_id), decision_id=None,
                        record_id=record_id, crm="hubspot", object="account", kind="override",
                        at=at, data={"from": frm, "to": to, "by": by,
                                     "after_seconds": minutes * 60 - 1.0, "rule": rule})


@pytest.fixture
def state(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 's.db'}"
    with open_store(url) as store:
        store.commit({}, [], [assigned("r1", "ava", "named"), assigned("r2", "ava", "named"),
                              assigned("r3", "ben", "smb"), assigned("r4", "cara", None)])
        store.record_events([override("r1", "ava", "ben", "named", 90),
                             override("r4", "cara", "ava", None, 30, by=None)])
    return url


WINDOW = ("--since", "2026-11-25T00:00:00Z", "--until", "2026-11-26T00:00:00Z")


def test_given_overrides_when_asked_for_json_then_the_design_shape_newest_first(
        state: str) -> None:
    result = invoke("overrides", "--state", state, "--json", *WINDOW)

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"overrides": [
        {"record_id": "r1", "crm": "hubspot", "object": "account", "from": "ava", "to": "ben",
         "by": "userId:7", "at": "2026-11-25T15:30:00+00:00", "after_seconds": 5399.0,
         "rule": "named"},
        {"record_id": "r4", "crm": "hubspot", "object": "account", "from": "cara", "to": "ava",
         "by": None, "at": "2026-11-25T14:30:00+00:00", "after_seconds": 1799.0,
         "rule": None},
    ]}


def test_given_overrides_when_asked_for_the_table_then_rates_per_rule_and_rep(
        state: str) -> None:
    result = invoke("overrides", "--state", state, *WINDOW)

    assert result.exit_code == 0, result.stderr
    lines = [" ".join(line.replace("│", " ").split()) for line in result.stdout.splitlines()]
    assert "overrides from 2026-11-25 00:00 to 2026-11-26 00:00 UTC: 2" in lines
    assert "named 1 2 50.0%" in lines and "(fallback) 1 1 100.0%" in lines
    assert "smb 0 1 0.0%" in lines
    assert "ava 1 2 50.0%" in lines and "cara 1 1 100.0%" in lines and "ben 0 1 0.0%" in lines
    assert any(line.startswith("2026-11-25 15:30 r1 ava ben userId:7 1.5h named")
               for line in lines)


def test_given_a_window_without_overrides_then_empty_json_and_exit_0(state: str) -> None:
    result = invoke("overrides", "--state", state, "--json",
                    "--since", "2026-11-20T00:00:00Z", "--until", "2026-11-21T00:00:00Z")

    assert result.exit_code == 0 and json.loads(result.stdout) == {"overrides": []}


@pytest.mark.parametrize(("args", "message"), [
    (("--since", "yesterday"), "--since: expected an ISO 8601 instant"),
    (("--since", "2026-11-26T00:00:00Z", "--until", "2026-11-25T00:00:00Z"),
     "must be before --until"),
])
def test_given_a_bad_window_then_exit_2_naming_the_option(
        state: str, args: tuple[str, ...], message: str) -> None:
    result = invoke("overrides", "--state", state, *args)

    assert result.exit_code == 2 and message in result.stderr


def test_given_no_state_file_then_exit_2(tmp_path: Path) -> None:
    result = invoke("overrides", "--state", f"sqlite:///{tmp_path / 'missing.db'}")

    assert result.exit_code == 2 and "no state at" in result.stderr
