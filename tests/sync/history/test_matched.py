"""Each decision's matched rules in the history: SQLite and PostgreSQL, the embedded store, the
Redis outbox, and migration 0003 over a database with older rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from sync.history import History
from sync.history.outbox import flush
from sync.history.schema import HEAD_REVISION
from sync.models import Decision, Outcome
from sync.state.redis import RedisStateStore, decode_entry, encode_entry
from sync.state.sqlite import SqliteStateStore
from tests.sync.history.test_contract import HOSTILE, T0, decision


def matched(record_id: str, names: tuple[str, ...] | None, *, rule: str | None = "us",
            outcome: Outcome = Outcome.ASSIGNED, minutes: int = 0) -> Decision:
    return decision(record_id, rule=rule, outcome=outcome,
                    at=T0 + timedelta(minutes=minutes))._replace(matched=names)


def groups(history: History) -> dict[tuple[tuple[str, ...] | None, str | None, str], int]:
    return {(g.matched, g.rule, str(g.outcome)): g.count for g in history.matched_groups(
        T0 - timedelta(days=1), T0 + timedelta(days=1))}


def test_given_matched_sets_when_recorded_then_each_reads_back_and_groups_count_them(
        history: History) -> None:
    names = tuple(name for name in HOSTILE if name) + ("us",)
    rows = [matched("a", ("named", "us")), matched("b", ("named", "us"), minutes=1),
            matched("c", ("us",)), matched("d", (), rule=None, outcome=Outcome.UNASSIGNED),
            matched("e", None), matched("f", names, rule=names[0]),
            matched("g", ("us", "small"), rule=None, outcome=Outcome.KEPT_EXISTING)]

    assert history.record(list(enumerate(rows, start=1))) == 7

    back = {d.record_id: d.matched for d in history.decisions()}
    assert back == {d.record_id: d.matched for d in rows}
    # Two decisions of one set share one label: few rows however many decisions.
    assert groups(history) == {
        (("named", "us"), "us", "assigned"): 2, (("us",), "us", "assigned"): 1,
        ((), None, "unassigned"): 1, (None, "us", "assigned"): 1,
        (names, names[0], "assigned"): 1, (("us", "small"), None, "kept_existing"): 1}
    # A second History on the same database reads them (labels from the database, not a cache).
    with History(history.url) as other:
        assert {d.record_id: d.matched for d in other.decisions()} == back


def test_given_a_window_when_grouping_then_only_its_decisions_count(history: History) -> None:
    history.record([(1, matched("a", ("us",))), (2, matched("b", ("us",), minutes=60 * 30))])

    found = history.matched_groups(T0, T0 + timedelta(hours=1))

    assert [(g.matched, g.count) for g in found] == [(("us",), 1)]


def test_given_the_embedded_store_when_committing_then_the_file_history_keeps_matched(
        tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")
    same = ("named", "us")
    try:
        # Equal sets as one object (what `decide` gives) and as equal copies: one label.
        assert store.commit({}, [], [matched("a", same), matched("b", same),
                                     matched("c", tuple(list(same))), matched("d", None),
                                     matched("e", ())])
        assert store.commit({}, [], [matched("f", same, minutes=1)])
    finally:
        store.close()
    with History(f"sqlite:///{tmp_path / 'state.db'}") as history:
        back = {d.record_id: d.matched for d in history.decisions()}
        assert back == {"a": same, "b": same, "c": same, "d": None, "e": (), "f": same}
        assert groups(history)[(same, "us", "assigned")] == 4


@pytest.fixture
def redis_store(redis_url: str) -> Iterator[RedisStateStore]:
    opened = RedisStateStore(redis_url)
    yield opened
    opened.close()


def test_given_service_mode_when_the_outbox_is_flushed_then_matched_reaches_the_history(
        redis_store: RedisStateStore, history: History) -> None:
    rows = [matched("a", ("named", "us")), matched("b", None), matched("c", ()),
            matched("d", ("\u202eevil 😀", "us"))]
    assert decode_entry("7 " + encode_entry(rows[0]))[1].matched == ("named", "us")
    redis_store.commit({}, [], rows)

    assert flush(redis_store, history) == 4

    assert {d.record_id: d.matched for d in history.decisions()} == {
        d.record_id: d.matched for d in rows}


def test_given_a_database_at_0002_with_rows_when_upgraded_then_old_rows_are_unknown(
        history_url: str) -> None:
    with History(history_url) as history:
        history.upgrade("0002")
        assert history.current_revision() == "0002"
        # Rows as the previous version wrote them: straight SQL, without the new column.
        with history._write() as conn:
            conn.exec_driver_sql(
                "INSERT INTO history_labels (kind, text, digest) VALUES ('crm', 'hubspot', "
                "'d1'), ('object', 'account', 'd2'), ('trigger', 'sweep', 'd3'), "
                "('rule', 'us', 'd4')")
            conn.exec_driver_sql("INSERT INTO history_traces (digest, body) VALUES ('t1', '{}')")
            label = "(SELECT id FROM history_labels WHERE digest = '{}')".format
            for i in (1, 2):
                conn.exec_driver_sql(
                    "INSERT INTO history_decisions (id, decided_at, crm, object, rule, "
                    "\"trigger\", trace_id, outcome, record_id) VALUES "
                    f"({i}, {int(T0.timestamp() * 1e6)}, {label('d1')}, {label('d2')}, "
                    f"{label('d4')}, {label('d3')}, (SELECT id FROM history_traces), 1, "
                    f"'old{i}')")

        history.upgrade()

        assert history.current_revision() == HEAD_REVISION
        history.record([(3, matched("new", ("us",)))])
        back = {d.record_id: d.matched for d in history.decisions()}
        assert back == {"old1": None, "old2": None, "new": ("us",)}
        assert groups(history) == {(None, "us", "assigned"): 2, (("us",), "us", "assigned"): 1}
