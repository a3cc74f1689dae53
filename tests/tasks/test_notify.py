"""Notifications wired into the pipeline: embedded (inline, SQLite) against the CRM simulator,
the fake Slack Web API and a real SMTP server; service mode's Redis-parked notices."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors import registry
from connectors.settings import Settings
from connectors.simulator import RunningSimulator, Simulator
from connectors.simulator.slack import TOKEN, FakeSlack
from connectors.transport import Unlimited
from sync.compiler import CompiledRouting, load_routing
from sync.decide import RoutingContext, decide
from sync.history import History
from sync.models import Decision
from sync.notify import MAX_ATTEMPTS, Notifier
from sync.pipeline import Pipeline
from sync.ports import Written
from sync.state.redis import RedisStateStore
from sync.state.sqlite import SqliteStateStore
from tasks.followers import followers_for
from tasks.notify import RedisNotices, links_for, send_waiting, senders_for
from tests.builders import rec
from tests.servers.smtp import SmtpServer

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "routing.yaml"
PORTAL = "62515"
NOW = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)


def slack_id(rep: str) -> str:
    return f"U0{rep.upper()}"


@pytest.fixture
def routing() -> CompiledRouting:
    return load_routing(EXAMPLE)


@pytest.fixture
def slack(routing: CompiledRouting) -> Iterator[FakeSlack]:
    users = {rep.email: slack_id(rep.id) for rep in routing.reps.values() if rep.email}
    with FakeSlack(users=users) as fake:
        yield fake


@pytest.fixture
def sim() -> Simulator:
    simulator = Simulator(seed=5)
    simulator.seed(companies=60, contacts=0, accounts=0, leads=0, days=2)
    return simulator


@pytest.fixture
def notify_env(sim: Simulator, notify_channels: RunningSimulator) -> Simulator:
    """The HubSpot simulator with unowned companies; Slack, SMTP and the portal id set."""
    return sim


def _sweep(routing: CompiledRouting, store: SqliteStateStore) -> None:
    settings = Settings()
    connector = registry.create("hubspot", settings, limiter=Unlimited(),
                                transport_sleep=lambda _: None)
    try:
        pipeline = Pipeline(connector, routing, store,
                            followers=followers_for(settings, store, routing, "hubspot"))
        report = pipeline.sweep("companies", full=True)
        assert not report.failed
    finally:
        connector.close()


def _link(record_id: str) -> str:
    return f"https://app.hubspot.com/contacts/{PORTAL}/record/0-2/{record_id}"


def test_given_an_embedded_sweep_when_owners_are_written_then_each_new_owner_hears_once_per_channel(  # noqa: E501
        notify_env: Simulator, routing: CompiledRouting, slack: FakeSlack,
        smtp_server: SmtpServer, tmp_path: Path) -> None:
    sim = notify_env
    before = {i: sim.owner_of("hubspot", "companies", i) for i in sim.ids("hubspot", "companies")}
    state = tmp_path / "state.db"
    store = SqliteStateStore(state)
    try:
        _sweep(routing, store)
        with History(f"sqlite:///{state}") as history:
            decisions = history.decisions()
            events = history.events()
    finally:
        store.close()
    written = [d for d in decisions if d.written_at is not None]
    kept = {i for i, owner in before.items()
            if owner is not None and sim.owner_of("hubspot", "companies", i) == owner}
    assert written and kept, "the seed has records to assign and owners to keep"

    # Slack: one DM per written assignment, to the new owner, linking that record.
    assert len(slack.posted) == len(written)
    for d in written:
        assert d.owner is not None
        mine = [p for p in slack.messages_to(slack_id(d.owner)) if _link(d.record_id) in p.text]
        assert len(mine) == 1, d
    # Email: the same, to the owner's address, with the link in text and HTML.
    mails = smtp_server.mailbox.messages
    assert len(mails) == len(written)
    to = Counter(m["To"].addresses[0].addr_spec for m in mails)
    assert to == Counter(routing.reps[d.owner].email for d in written if d.owner)
    assert all(smtp_server.mailbox.tls)
    # Owners kept hear nothing: no message links a record that already had an owner.
    linked = {p.blocks[0]["text"]["text"].split("|")[0].rsplit("/", 1)[-1] for p in slack.posted}
    assert linked == {d.record_id for d in written} and not linked & kept
    # Each notice is in the history as a `notified` event naming its decision.
    notified = [e for e in events if e.kind == "notified"]
    assert Counter(e.data["channel"] for e in notified) == \
        {"slack": len(written), "email": len(written)}


def test_given_a_rep_who_left_slack_when_their_leads_land_then_user_not_found_is_recorded_once(
        notify_env: Simulator, routing: CompiledRouting, slack: FakeSlack,
        smtp_server: SmtpServer, tmp_path: Path) -> None:
    gone = slack_id("cara")
    slack.remove_user(gone)
    state = tmp_path / "state.db"
    store = SqliteStateStore(state)
    try:
        _sweep(routing, store)
        with History(f"sqlite:///{state}") as history:
            cara = [d for d in history.decisions(rep="cara") if d.written_at is not None]
            failed = history.events(kind="notify_failed")
    finally:
        store.close()
    assert cara, "round robin gives cara some of the smb companies"
    assert {e.record_id for e in failed} == {d.record_id for d in cara}
    assert all("user_not_found" in e.data["error"] and e.data["channel"] == "slack"
               for e in failed)
    # Final errors are not retried: one call per notice; her email still went out.
    posts_to_cara = [c for c in slack.calls if c.error == "user_not_found"]
    assert len(posts_to_cara) == len(cara)
    assert sum(m["To"].addresses[0].addr_spec == "cara@example.com"
               for m in smtp_server.mailbox.messages) == len(cara)


# --- service mode: notices parked in Redis -----------------------------------------------------


def _written(routing: CompiledRouting, n: int) -> list[Written]:
    ctx = RoutingContext(routing, NOW)
    out = []
    for i in range(n):
        record = rec(id=f"90{i}", name=f"Company {i}", employees=10, crm="hubspot")
        decision: Decision = decide(record, ctx)
        if decision.turn is not None:
            ctx.apply(decision.turn)
        out.append(Written(decision._replace(written_at=NOW + timedelta(seconds=1)), record))
    return out


@pytest.fixture
def service(redis_url: str, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[RedisStateStore, Settings]]:
    monkeypatch.setenv("ACCOUNT_ROUTER_SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("ACCOUNT_ROUTER_SLACK_BASE_URL", slack.base_url)
    monkeypatch.setenv("ACCOUNT_ROUTER_STATE_URL", redis_url)
    monkeypatch.delenv("ACCOUNT_ROUTER_SMTP_URL", raising=False)
    store = RedisStateStore(redis_url)
    try:
        yield store, Settings()
    finally:
        store.close()


def test_given_service_mode_when_a_write_lands_then_notices_wait_in_redis_and_a_redelivery_sends_none_twice(  # noqa: E501
        routing: CompiledRouting, slack: FakeSlack,
        service: tuple[RedisStateStore, Settings]) -> None:
    store, settings = service
    queue = RedisNotices(store, enqueue=False)
    notifier = Notifier(routing, senders_for(settings), store, links=links_for(settings),
                        queue=queue)
    notifier.written("hubspot", "companies", _written(routing, 3))
    assert slack.posted == [] and queue.size() == 3  # parked, not sent by the routing worker
    keys = [n.key for n in queue.get(None)]

    first = send_waiting(keys, settings, store)
    # The same task delivered again (a worker killed after sending), and a beat drain.
    queue.put(first.sent)
    again = send_waiting(keys, settings, store)
    drained = send_waiting(None, settings, store)
    assert len(first.sent) == 3 and again.sent == [] and len(again.skipped) == 3
    assert drained.sent == [] and queue.size() == 0
    assert len(slack.posted) == 3
    events = [e for _, e in store.event_outbox(10)]
    assert sorted(e.kind for e in events) == ["notified"] * 3  # into the history on flush


def test_given_slack_down_in_service_mode_when_sending_then_notices_wait_and_go_out_once_later(
        routing: CompiledRouting, slack: FakeSlack,
        service: tuple[RedisStateStore, Settings], monkeypatch: pytest.MonkeyPatch) -> None:
    store, settings = service
    monkeypatch.setattr("connectors.notify.slack.time.sleep", lambda _: None)
    queue = RedisNotices(store, enqueue=False)
    notifier = Notifier(routing, senders_for(settings), store, queue=queue)
    notifier.written("hubspot", "companies", _written(routing, 1))
    for sender in senders_for(settings):
        sender.transport.sleep = lambda _: None  # type: ignore[attr-defined]
    slack.fail(calls=1000, status=503)
    out = send_waiting(None, settings, store)
    assert out.again and queue.size() == 1 and slack.posted == []
    [waiting] = queue.get(None)
    assert waiting.attempts == 1
    slack.fail(calls=0)
    later = send_waiting(None, settings, store)  # beat's drain
    assert len(later.sent) == 1 and queue.size() == 0 and len(slack.posted) == 1
    # Down for good: after MAX_ATTEMPTS the notice is recorded as failed, never retried again.
    notifier.written("hubspot", "companies", _written(routing, 2)[1:])
    slack.fail(calls=1000, status=503)
    for _ in range(MAX_ATTEMPTS):
        send_waiting(None, settings, store)
    assert queue.size() == 0
    kinds = Counter(e.kind for _, e in store.event_outbox(10))
    assert kinds == {"notified": 1, "notify_failed": 1}


def test_given_the_mail_server_refusing_when_owners_are_written_then_smtp_5xx_is_recorded_once_each(
        notify_env: Simulator, routing: CompiledRouting, slack: FakeSlack,
        smtp_server: SmtpServer, tmp_path: Path) -> None:
    smtp_server.mailbox.replies = ["550 5.7.1 relaying denied"] * 1000
    state = tmp_path / "state.db"
    store = SqliteStateStore(state)
    try:
        _sweep(routing, store)
        with History(f"sqlite:///{state}") as history:
            written = [d for d in history.decisions() if d.written_at is not None]
            failed = history.events(kind="notify_failed")
            notified = history.events(kind="notified")
    finally:
        store.close()
    # Every email failed for good (one SMTP attempt each: 5xx is never retried); Slack went on.
    assert len(failed) == len(written) == 1000 - len(smtp_server.mailbox.replies)
    assert all(e.data["channel"] == "email" and "550" in e.data["error"] for e in failed)
    assert {e.data["channel"] for e in notified} == {"slack"} and len(notified) == len(written)


def test_given_a_notice_parked_just_now_when_the_drain_runs_then_it_is_left_to_its_own_task(
        routing: CompiledRouting, slack: FakeSlack,
        service: tuple[RedisStateStore, Settings]) -> None:
    store, settings = service
    queue = RedisNotices(store, enqueue=False)
    notifier = Notifier(routing, senders_for(settings), store, queue=queue)
    [fresh] = _written(routing, 1)
    now = datetime.now(UTC)
    notifier.written("hubspot", "companies",
                     [Written(fresh.decision._replace(written_at=now), fresh.record)])
    assert send_waiting(None, settings, store).sent == [] and queue.size() == 1
    [waiting] = queue.get(None)
    assert len(send_waiting([waiting.key], settings, store).sent) == 1  # its task sends it
    assert queue.size() == 0 and len(slack.posted) == 1
