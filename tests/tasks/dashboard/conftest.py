"""Dashboard fixtures: an embedded state file with its real history, filled with known
decisions, and the `serve` app over it at a fixed instant."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from connectors.settings import Settings
from sync.decide import window_key
from sync.history import History
from sync.models import Decision, Outcome, TraceStep
from sync.state import StateStore, open_store
from sync.state.base import PoolChange
from tasks.http import create_app

TOKEN = "dashboard-token-0123"
NOW = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
PORTAL = "62515"
INSTANCE = "https://acme.my.salesforce.com"
HOSTILE = "<script>alert(1)</script>"

ROUTING = """version: 1
reps:
  - {id: ana, name: Ana Lima, email: ana@example.com, crm_ids: {hubspot: '101'}}
  - {id: bo, name: Bo Chen, crm_ids: {hubspot: '102'}}
  - id: cy
    backup: bo
    crm_ids: {hubspot: '103'}
    out_of_office: [{start: 2026-12-01, end: 2026-12-31}]
  - {id: dee, active: false, crm_ids: {hubspot: '104'}}
pools:
  smb: {members: [ana, bo], cap: {max: 3, per: day}}
rules:
  - name: named
    when: {domain: {eq: named.com}}
    assign: {rep: cy}
  - {name: smb, assign: {pool: smb}}
"""


class RecordingEnqueue:
    """Stands in for the worker queue: remembers what the app handed over."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[str], str]] = []

    def __call__(self, crm: str, obj: str, ids: list[str], trigger: str) -> None:
        self.calls.append((crm, obj, list(ids), trigger))


def decision(record_id: str, outcome: Outcome, owner: str | None, rule: str | None, *,
             at: datetime = NOW - timedelta(hours=1), crm: str = "hubspot",
             obj: str = "account", pool: str | None = None, speed: float = 3.0,
             write_error: str | None = None) -> Decision:
    trace = ((TraceStep("named", "no_match", "domain is not named.com"),
              TraceStep(rule, "won", f"{owner}"))
             if rule else (TraceStep("named", "no_match", "domain is not named.com"),))
    written = None if write_error or owner is None else at + timedelta(seconds=1)
    return Decision(record_id=record_id, object=obj, crm=crm, outcome=outcome, owner=owner,
                    owner_crm_id={"ana": "101", "bo": "102"}.get(owner or ""), rule=rule,
                    reason=f"rule {rule}: {owner}" if rule else "no rule matched",
                    trace=trace, trigger="sweep", pool=pool,
                    created_at=at - timedelta(seconds=speed - 1), decided_at=at,
                    written_at=written, write_error=write_error)


def seed_decisions() -> list[tuple[int, Decision]]:
    """Today: ana 5 and bo 3 pool turns (rule smb), 2 fallbacks to bo (rule named, cy away),
    one kept, one unassigned, one failed write; 10 days ago: 4 more turns for ana."""
    rows: list[Decision] = []
    for i in range(5):
        rows.append(decision(f"50{i}", Outcome.ASSIGNED, "ana", "smb", pool="smb",
                             at=NOW - timedelta(minutes=10 + i)))
    for i in range(3):
        rows.append(decision(f"60{i}", Outcome.ASSIGNED, "bo", "smb", pool="smb",
                             at=NOW - timedelta(minutes=20 + i), speed=9.0))
    rows.append(decision("700", Outcome.FALLBACK, "bo", "named"))
    rows.append(decision(HOSTILE, Outcome.FALLBACK, "bo", "named"))
    rows.append(decision("800", Outcome.KEPT_EXISTING, "ana", None))
    rows.append(decision("900", Outcome.UNASSIGNED, None, None))
    rows.append(decision("00Q5g00000AbCdEAAZ", Outcome.ASSIGNED, "ana", "smb", pool="smb",
                         crm="salesforce", obj="lead", write_error="UNABLE_TO_LOCK_ROW"))
    for i in range(4):
        rows.append(decision(f"40{i}", Outcome.ASSIGNED, "ana", "smb", pool="smb",
                             at=NOW - timedelta(days=10, minutes=i)))
    return [(i + 1, d) for i, d in enumerate(rows)]


@dataclass
class Env:
    client: TestClient
    store: StateStore
    history: History
    enqueue: RecordingEnqueue
    ids: dict[str, int]  # record id -> decision id
    now: list[float]  # the app's clock, settable


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_store(state)
    history = History(state)  # embedded: the history lives in the state file
    history.upgrade()
    rows = seed_decisions()
    history.record(rows)
    # ana has taken today's 3 turns of her cap; bo 1.
    window = window_key("day", NOW, UTC)
    store.commit({}, [PoolChange("smb", "bo", None, {("ana", window): 3, ("bo", window): 1})],
                 [])
    store.add_failed("salesforce", "Lead", ["00Q5g00000AbCdEAAZ"])
    enqueue = RecordingEnqueue()
    clock = [NOW.timestamp()]
    settings = Settings.model_validate({
        "api_token": TOKEN, "config": str(routing), "hubspot_portal_id": PORTAL,
        "salesforce_instance_url": INSTANCE})
    app = create_app(settings, store, enqueue, clock=lambda: clock[0], history=history)
    try:
        yield Env(TestClient(app), store, history, enqueue,
                  {d.record_id: i for i, d in rows}, clock)
    finally:
        history.close()
        store.close()


def sign_in(client: TestClient, token: str = TOKEN) -> None:
    response = client.post("/dashboard/signin", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found[1]
