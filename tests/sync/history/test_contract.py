"""The History contract, run unchanged against SQLite and a real PostgreSQL (`history` fixture)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sync.history import History, HistoryEvent, SchemaOutOfDate, SpeedPoint
from sync.history.overrides import OverrideRate, list_overrides, override_rates
from sync.models import Decision, Outcome, TraceStep, event_id
from sync.state import LoadRow

T0 = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")
# What a hostile CSV or CRM can put in a string: NUL, a lone surrogate, RTL and emoji, quotes,
# the codec's own escape character, SQL and JSON syntax, and a string past PostgreSQL's B-tree
# entry limit.
HOSTILE = ["a\x00b", "\udcff", "\u202eevil 😀", "x'; DROP TABLE history_decisions; --",
           "\x1b[31m", '{"m": 1}', "\\", "", " ", "é" * 3000]


def decision(
    record_id: str = "r1",
    *,
    owner: str | None = "ava",
    outcome: Outcome = Outcome.ASSIGNED,
    pool: str | None = None,
    at: datetime | None = T0,
    rule: str | None = "everyone-else",
    created: datetime | None = None,
    written: datetime | None = None,
) -> Decision:
    won = f"pool {pool} round_robin -> {owner}" if pool else f"rep {owner}"
    trace = (TraceStep("named", "no_match", "conditions not met"),
             TraceStep(rule, "won", won)) if rule else ()
    return Decision(
        record_id=record_id, object="account", crm="hubspot", outcome=outcome, owner=owner,
        owner_crm_id=None if owner is None else f"crm-{owner}", rule=rule,
        reason=f"rule {rule}: {won}" if rule else "no rule matched", trace=trace, pool=pool,
        trigger="sweep", created_at=created, decided_at=at, written_at=written,
    )


def test_given_a_new_database_when_upgraded_then_it_is_current(history_url: str) -> None:
    with History(history_url) as history:
        assert not history.is_current()
        with pytest.raises(SchemaOutOfDate, match="account-router db upgrade"):
            history.require_current()
        history.upgrade()
        history.upgrade()  # a second upgrade is a no-op
        assert history.is_current()
        history.require_current()
        assert history.current_revision() is not None


def test_given_every_field_set_when_recorded_then_it_reads_back_whole(history: History) -> None:
    full = Decision(
        record_id="0015g00000AbCdEAAZ", object="lead", crm="salesforce",
        outcome=Outcome.FALLBACK, previous_owner="0059000000INTEG", owner="maya",
        owner_crm_id="005000000000009AAA", rule="enterprise",
        reason="rule enterprise: pool enterprise: ava out of office -> backup ben paused -> maya",
        trace=(TraceStep("named", "no_match", "conditions not met"),
               TraceStep("health", "no_assignee", "rep hana: inactive"),
               TraceStep("odd", "no_match", ""),
               TraceStep("enterprise", "won", "pool enterprise: ava out of office -> backup "
                                              "ben paused -> maya")),
        trigger="webhook", pool="enterprise", created_at=T0 - timedelta(minutes=3),
        decided_at=T0, written_at=T0 + timedelta(seconds=2), write_error=None,
    )
    failed = full._replace(record_id="r2", written_at=None,
                           write_error="HTTP 503 from Salesforce; retried next run",
                           reason="a reason that is not the rebuilt one")

    assert history.record([(1, full), (2, failed)]) == 2

    assert history.decision(1) == full
    assert history.decision(1).to_dict() == full.to_dict()  # type: ignore[union-attr]
    assert history.decision(2) == failed
    assert history.decision(3) is None


@pytest.mark.parametrize("text", HOSTILE)
def test_given_hostile_strings_in_every_text_field_when_recorded_then_they_read_back_exactly(
    history: History, text: str,
) -> None:
    d = Decision(
        record_id=text or "id", object=text, crm=text, outcome=Outcome.ASSIGNED,
        previous_owner=text, owner=text, owner_crm_id=text, rule=text, reason=text,
        trace=(TraceStep(text, "no_match", text), TraceStep(text, "won", text)),
        trigger=text, pool=text, decided_at=T0, write_error=text,
    )
    history.record([(7, d)])

    assert history.decision(7) == d
    assert history.decisions(record_id=d.record_id) == [d]
    assert history.decisions(rep=text, rule=text) == [d]


def test_given_instants_in_other_offsets_when_recorded_then_they_read_back_as_given(
    history: History,
) -> None:
    local = T0.astimezone(NEW_YORK)
    given = decision(at=local, created=local - timedelta(seconds=1), written=T0)
    history.record([(1, given)])

    (back,) = history.decisions()
    assert back.to_dict() == given.to_dict()  # "2026-11-25T09:00:00-05:00", as given
    assert back.decided_at == T0
    assert history.decisions(until=T0 + timedelta(microseconds=1)) == [given]


def test_given_one_trace_in_several_reasons_and_offsets_when_recorded_then_each_reads_back_as_given(
    history: History,
) -> None:
    # Trace bodies are memoized by shape; nothing of one decision may leak into another's.
    base = decision("a")
    variants = [
        base,
        base._replace(record_id="b", reason="a reason of its own"),
        base._replace(record_id="c", decided_at=T0.astimezone(NEW_YORK)),
        base._replace(record_id="d", trace=list(base.trace)),  # type: ignore[arg-type]
        base,  # the same shape again, from the memo
    ]
    history.record(list(enumerate(variants, start=1)))
    history.record([(9, variants[2])])  # a second batch, memo warm

    for i, d in enumerate(variants[:4], start=1):
        assert history.decision(i).to_dict() == d.to_dict()  # type: ignore[union-attr]
    assert history.decision(9).to_dict() == variants[2].to_dict()  # type: ignore[union-attr]


def test_given_ids_already_stored_when_recorded_again_then_they_are_skipped(
    history: History,
) -> None:
    assert history.record([(1, decision("a")), (2, decision("b"))]) == 2
    # Redelivered batch (the outbox after a crash), a changed copy, and a duplicate id in one call.
    assert history.record([(1, decision("a")), (2, decision("changed")), (3, decision("c")),
                           (3, decision("c-again"))]) == 1
    assert history.record([]) == 0

    assert [d.record_id for d in history.decisions()] == ["c", "b", "a"]


def test_given_a_large_batch_in_any_order_when_recorded_twice_then_each_lands_once(
    history: History,
) -> None:
    # More rows than one INSERT page (SQLite) and shuffled: PostgreSQL's COPY path sorts them
    # and must count only the rows it really added, here and when the batch comes again.
    ids = list(range(1, 2502))
    random.Random(9).shuffle(ids)
    batch = [(i, decision(f"r{i}", at=T0 + timedelta(seconds=i))) for i in ids]
    assert history.record(batch) == 2501
    assert history.record(batch[:100] + [(9999, decision("late"))]) == 1

    assert history.decision(1234) == decision("r1234", at=T0 + timedelta(seconds=1234))
    assert [d.record_id for d in history.decisions(limit=3)] == ["r2501", "r2500", "r2499"]
    assert history.outcome_counts(T0, T0 + timedelta(days=1))["assigned"] == 2502


def test_given_two_history_instances_when_both_add_the_same_labels_then_both_read_all(
    history_url: str,
) -> None:
    with History(history_url) as one, History(history_url) as two:
        one.upgrade()
        one.record([(1, decision("a", owner="cara", rule="new-rule"))])
        two.record([(2, decision("b", owner="cara", rule="new-rule"))])  # labels already there
        assert [d.record_id for d in one.decisions(rep="cara", rule="new-rule")] == ["b", "a"]
        assert [d.owner for d in two.decisions()] == ["cara", "cara"]


def test_given_decisions_when_filtered_then_each_filter_applies(history: History) -> None:
    history.record([
        (1, decision("r1", owner="ava", rule="named", at=T0)),
        (2, decision("r2", owner="ben", pool="smb", rule="everyone-else",
                     at=T0 + timedelta(hours=1))),
        (3, decision("r1", owner="ava", rule="everyone-else", outcome=Outcome.FALLBACK,
                     at=T0 + timedelta(hours=2))),
        (4, decision("r3", owner=None, rule=None, outcome=Outcome.UNASSIGNED,
                     at=T0 + timedelta(hours=3))),
    ])

    def ids(**filters: object) -> list[int]:
        return [i for i, _ in history.decision_ids(**filters)]  # type: ignore[arg-type]

    assert ids() == [4, 3, 2, 1]
    assert ids(record_id="r1") == [3, 1]
    assert ids(rep="ava") == [3, 1]
    assert ids(rep="nobody") == []
    assert ids(rule="everyone-else") == [3, 2]
    assert ids(rule="never-stored") == []
    assert ids(outcome="fallback") == [3]
    assert ids(outcome=Outcome.UNASSIGNED) == [4]
    assert ids(since=T0 + timedelta(hours=1)) == [4, 3, 2]
    assert ids(until=T0 + timedelta(hours=1)) == [1]  # half-open: until is excluded
    assert ids(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3)) == [3, 2]
    assert ids(record_id="r1", rep="ava", rule="named") == [1]
    assert ids(limit=2) == [4, 3]
    assert ids(limit=2, offset=2) == [2, 1]
    assert ids(offset=10) == []
    assert ids(limit=0) == []
    assert history.decisions(rep="ben")[0].pool == "smb"
    with pytest.raises(ValueError, match="limit"):
        history.decisions(limit=-1)
    with pytest.raises(ValueError, match="offset"):
        history.decisions(offset=-1)
    with pytest.raises(ValueError, match="unknown outcome 'won'"):
        history.decisions(outcome="won")


def test_given_records_decided_several_times_when_latest_then_each_gets_its_newest(
    history: History,
) -> None:
    history.record([
        (1, decision("r1", rule="named", at=T0)),
        (2, decision("r1", rule="rest", at=T0 + timedelta(hours=1))),
        (3, decision("r2", rule="late-id-early-time", at=T0 - timedelta(hours=1))),
        (4, decision("r2", rule="early-id-late-time", at=T0)),
        (5, decision("tie", rule="lower-id")), (6, decision("tie", rule="higher-id")),
        (7, decision("undated-only", rule="undated", at=None)),
        (8, decision("dated-wins", rule="dated", at=T0 - timedelta(days=300))),
        (9, decision("dated-wins", rule="undated", at=None)),
        # The same id in another CRM and another object: not this record.
        (10, decision("r1", rule="salesforce", at=T0 + timedelta(days=1))._replace(
            crm="salesforce")),
        (11, decision("r1", rule="lead", at=T0 + timedelta(days=1))._replace(object="lead")),
    ])

    latest = history.latest("hubspot", "account", ["r1", "r2", "tie", "undated-only",
                                                     "dated-wins", "never", "r1"])

    assert {i: d.rule for i, d in latest.items()} == {
        "r1": "rest", "r2": "early-id-late-time", "tie": "higher-id",
        "undated-only": "undated", "dated-wins": "dated"}
    assert latest["r1"] == decision("r1", rule="rest", at=T0 + timedelta(hours=1))
    assert history.latest("salesforce", "account", ["r1"])["r1"].rule == "salesforce"
    assert history.latest("hubspot", "account", []) == {}
    assert history.latest("pipedrive", "account", ["r1"]) == {}  # a CRM never recorded
    assert history.latest("hubspot", "deal", ["r1"]) == {}


def test_given_more_ids_than_one_query_and_hostile_ids_when_latest_then_every_one_is_found(
    history: History,
) -> None:
    ids = [f"r{i}" for i in range(1203)] + HOSTILE
    history.record([(n + 1, decision(i, rule=f"rule-{n % 7}", at=T0 + timedelta(seconds=n)))
                    for n, i in enumerate(ids)])

    latest = history.latest("hubspot", "account", [*reversed(ids), "absent"])

    assert len(latest) == len(ids)
    assert all(latest[i].record_id == i for i in ids)
    assert latest["r1000"] == decision("r1000", rule="rule-6", at=T0 + timedelta(seconds=1000))
    assert latest[HOSTILE[-1]].rule == f"rule-{(len(ids) - 1) % 7}"


def test_given_a_window_in_another_timezone_when_filtered_then_it_is_the_same_instant(
    history: History,
) -> None:
    history.record([(1, decision("utc-13h", at=T0 - timedelta(hours=1))),
                    (2, decision("utc-15h", at=T0 + timedelta(hours=1)))])

    since_ny = (T0 + timedelta(minutes=30)).astimezone(NEW_YORK)
    assert [d.record_id for d in history.decisions(since=since_ny)] == ["utc-15h"]


def test_given_same_instant_and_undated_decisions_when_listed_then_later_ids_first_undated_last(
    history: History,
) -> None:
    history.record([(1, decision("undated", at=None)), (2, decision("old")),
                    (3, decision("new")), (4, decision("older", at=T0 - timedelta(days=1)))])

    assert [d.record_id for d in history.decisions()] == ["new", "old", "older", "undated"]
    history.record([(5, decision("undated-2", at=None))])
    pages = [[d.record_id for d in history.decisions(limit=2, offset=k)] for k in (0, 2, 4, 6)]
    assert pages == [["new", "old"], ["older", "undated-2"], ["undated"], []]
    assert [d.record_id for d in history.decisions(offset=3)] == ["undated-2", "undated"]
    assert history.decisions(record_id="undated")[0].decided_at is None
    assert [d.record_id for d in history.decisions(since=T0 - timedelta(days=2))] == [
        "new", "old", "older"]


def test_given_assignments_when_loaded_then_grouped_by_rep_pool_and_outcome(
    history: History,
) -> None:
    history.record([
        (1, decision("a", owner="cara", pool="smb")),
        (2, decision("b", owner="cara", pool="smb")),
        (3, decision("c", owner="cara")),
        (4, decision("d", owner="dev", pool="smb")),
        (5, decision("e", owner="maya", outcome=Outcome.FALLBACK)),
        (6, decision("f", owner="maya", pool="smb", outcome=Outcome.FALLBACK)),
        (7, decision("g", owner="ava", outcome=Outcome.KEPT_EXISTING)),  # not load
        (8, decision("h", owner=None, outcome=Outcome.UNASSIGNED)),
        (9, decision("i", owner="dev", pool="smb", at=T0 + timedelta(days=1))),
    ])

    assert history.load(until=T0 + timedelta(days=1)) == [
        LoadRow(rep="cara", pool=None, outcome="assigned", count=1),
        LoadRow(rep="cara", pool="smb", outcome="assigned", count=2),
        LoadRow(rep="dev", pool="smb", outcome="assigned", count=1),
        LoadRow(rep="maya", pool=None, outcome="fallback", count=1),
        LoadRow(rep="maya", pool="smb", outcome="fallback", count=1),
    ]
    assert history.load(since=T0 + timedelta(days=1)) == [
        LoadRow(rep="dev", pool="smb", outcome="assigned", count=1)]
    assert history.load(since=T0 + timedelta(days=2)) == []


def test_given_decisions_when_counted_then_outcomes_and_rule_hits_cover_the_window(
    history: History,
) -> None:
    history.record([
        (1, decision("a", rule="named")),
        (2, decision("b", rule="named")),
        (3, decision("c", rule="everyone-else", outcome=Outcome.FALLBACK)),
        (4, decision("d", rule=None, owner=None, outcome=Outcome.UNASSIGNED)),
        (5, decision("e", rule="named", at=T0 + timedelta(days=1))),
    ])
    window = (T0, T0 + timedelta(days=1))

    assert history.outcome_counts(*window) == {
        "assigned": 2, "fallback": 1, "kept_existing": 0, "unassigned": 1, "skipped": 0,
        "pending_review": 0}
    assert history.rule_hits(*window) == {"named": 2, "": 1, "everyone-else": 1}
    assert history.rule_hits(T0 + timedelta(days=1), T0 + timedelta(days=2)) == {"named": 1}
    assert sum(history.outcome_counts().values()) == 5


def test_given_created_and_written_instants_when_speed_to_lead_then_percentiles_per_bucket(
    history: History,
) -> None:
    rows = [
        # First hour: 1..10 s from creation to the write.
        *((i, decision(f"a{i}", created=T0, written=T0 + timedelta(seconds=i),
                       at=T0 + timedelta(seconds=i))) for i in range(1, 11)),
        # Third hour: never written, so the decision instant counts: 60 s.
        (20, decision("b", created=T0 + timedelta(hours=2),
                      at=T0 + timedelta(hours=2, seconds=60))),
        # Not counted: no creation time, kept (not routed), outside the window.
        (21, decision("c", created=None, at=T0 + timedelta(minutes=1))),
        (22, decision("d", created=T0, outcome=Outcome.KEPT_EXISTING,
                      at=T0 + timedelta(minutes=1))),
        (23, decision("e", created=T0, at=T0 + timedelta(hours=3))),
    ]
    history.record(rows)

    points = history.speed_to_lead(T0, T0 + timedelta(hours=3), buckets=3)

    assert [p.start for p in points] == [T0 + timedelta(hours=h) for h in range(3)]
    assert points[0] == SpeedPoint(start=T0, count=10, p50=pytest.approx(5.5),
                                   p95=pytest.approx(9.55))
    assert points[1] == SpeedPoint(start=T0 + timedelta(hours=1), count=0, p50=None, p95=None)
    assert points[2].count == 1 and points[2].p50 == pytest.approx(60.0)
    with pytest.raises(ValueError, match="buckets"):
        history.speed_to_lead(T0, T0 + timedelta(hours=1), buckets=0)


def test_given_buckets_that_do_not_divide_the_window_when_speed_to_lead_then_each_row_counts_once(
    history: History,
) -> None:
    # 7 buckets over 100 s: each 14.285715 s wide (rounded up to the µs), the last cut short.
    history.record([(i, decision(f"r{i}", created=T0, at=T0 + timedelta(seconds=i)))
                    for i in range(0, 101, 5)])

    points = history.speed_to_lead(T0, T0 + timedelta(seconds=100), buckets=7)

    assert [p.start for p in points] == [T0 + timedelta(microseconds=14_285_715 * b)
                                         for b in range(7)]
    assert [p.count for p in points] == [3, 3, 3, 3, 3, 3, 2]  # 100 s is outside [T0, T0+100)
    assert points[6].p50 == pytest.approx(92.5) and points[0].p95 == pytest.approx(9.5)


def test_given_old_and_new_decisions_and_events_when_pruned_then_only_the_old_go(
    history: History,
) -> None:
    cut = T0
    history.record([(1, decision("old", at=cut - timedelta(microseconds=1))),
                    (2, decision("edge", at=cut)),
                    (3, decision("undated", at=None))])
    history.record_events([
        HistoryEvent(10, 1, "old", "hubspot", "account", "written", cut + timedelta(hours=1)),
        HistoryEvent(11, 2, "edge", "hubspot", "account", "written", cut + timedelta(hours=1)),
        HistoryEvent(12, None, "x", "hubspot", "account", "override", cut - timedelta(days=1)),
    ])

    assert history.prune(cut) == 1

    assert [d.record_id for d in history.decisions()] == ["edge", "undated"]
    assert [e.id for e in history.events()] == [11]
    assert history.prune(cut) == 0


def test_given_events_when_recorded_twice_then_stored_once_and_read_back(
    history: History,
) -> None:
    history.record([(1, decision("a"))])
    override = HistoryEvent(
        id=5, decision_id=1, record_id="a", crm="hubspot", object="account", kind="override",
        at=T0 + timedelta(minutes=5), data={"from": "ava", "to": "ben", "n": 1.5,
                                             "nested": {"k": [1, None, "\x00"]}},
    )
    written = HistoryEvent(6, 1, "a", "hubspot", "account", "written", T0 + timedelta(seconds=1))

    assert history.record_events([override, written]) == 2
    assert history.record_events([override, override]) == 0

    assert history.events() == [override, written]
    assert history.events(decision_id=1, kind="written") == [written]
    assert history.events(kind="never") == []
    assert history.events(record_id="a", since=T0 + timedelta(minutes=1)) == [override]
    with pytest.raises(ValueError, match="event 9"):
        history.record_events([HistoryEvent(9, None, "a", "hubspot", "account", "x", T0,
                                            {"bad": object()})])


def test_given_a_bad_url_when_opened_then_the_error_names_it_without_the_password() -> None:
    for url, expected in [("mysql://u:hunter2@h/db", "unsupported database URL"),
                          ("sqlite://", "bad SQLite"), ("", "empty database URL"),
                          ("sqlite:///:memory:", "bad SQLite")]:
        with pytest.raises(ValueError, match=expected) as info:
            History(url)
        assert "hunter2" not in str(info.value)


def test_given_a_postgresql_url_without_the_driver_when_opened_then_psycopg_is_used() -> None:
    with History("postgresql://u:pw@127.0.0.1:1/db") as history:
        assert history.url.startswith("postgresql+psycopg://")
        assert "pw" not in repr(history)


def test_given_two_upgrades_at_once_when_both_run_then_both_succeed_and_the_schema_is_made_once(
    history_url: str,
) -> None:
    # Two machines running `db upgrade` together (or two embedded processes opening a new
    # file): serialised by an advisory lock (PostgreSQL) or BEGIN IMMEDIATE (SQLite).
    from concurrent.futures import ThreadPoolExecutor

    histories = [History(history_url), History(history_url)]
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda h: h.upgrade(), histories))
        assert all(h.is_current() for h in histories)
        assert histories[0].record([(1, decision("a"))]) == 1
        assert [d.record_id for d in histories[1].decisions()] == ["a"]
    finally:
        for h in histories:
            h.close()


# --- speed to first touch (first-touch SLA events) ------------------------------------------


def sla_event(kind: str, n: int, at: datetime, **data: object) -> HistoryEvent:
    return HistoryEvent(id=10_000 + n, decision_id=None, record_id=f"r{n}", crm="hubspot",
                        object="account", kind=kind, at=at, data=data)


def test_given_touches_breaches_and_reroutes_when_asked_then_first_touch_per_rep_and_rule(
        history: History) -> None:
    events = [sla_event("touched", i, T0 + timedelta(minutes=i), rep="ava", rule="smb",
                        seconds=float(s)) for i, s in enumerate([60, 120, 180, 240, 900])]
    events += [
        sla_event("touched", 10, T0, rep="ava", rule=None, seconds=30.0),
        sla_event("touched", 11, T0, rep="ben", rule="smb", seconds=600.0),
        sla_event("sla_breach", 12, T0, rep="ben", rule="smb", action="reroute"),
        sla_event("rerouted", 13, T0, **{"from": "ben", "to": "cara", "rule": "smb"}),
        sla_event("sla_breach", 14, T0, rep="cara", rule="smb", action="notify_manager"),
        # Outside the window, and an event of another kind: neither counts.
        sla_event("touched", 15, T0 - timedelta(days=2), rep="ava", rule="smb", seconds=1.0),
        sla_event("notified", 16, T0, rep="ava", rule="smb", seconds=5.0),
    ]
    history.record_events(events)

    rows = history.first_touch(since=T0 - timedelta(hours=1), until=T0 + timedelta(hours=1))

    assert [(r.rep, r.rule, r.touched, r.breaches, r.reroutes) for r in rows] == [
        ("ava", None, 1, 0, 0), ("ava", "smb", 5, 0, 0), ("ben", "smb", 1, 1, 1),
        ("cara", "smb", 0, 1, 0)]
    ava = rows[1]
    assert ava.p50 == 180.0 and ava.p95 == pytest.approx(768.0)  # 240 + 0.8 * (900 - 240)
    assert rows[3].p50 is None and rows[3].p95 is None


def test_given_no_sla_events_when_asking_first_touch_then_no_rows(history: History) -> None:
    assert history.first_touch() == []


def test_given_sla_reroutes_when_loading_then_the_assignment_follows_the_final_owner(
        history: History) -> None:
    w = T0 + timedelta(minutes=20)
    history.record([
        (1, decision("r1", owner="ava", pool="smb", written=T0)),
        (2, decision("r2", owner="ben", pool="smb", written=T0)),
        # r1: ava let it lapse, cara got it (written).
        (3, decision("r1", owner="cara", pool="smb", at=w, written=w)._replace(
            trigger="sla", previous_owner="ava")),
        # r2: the re-route to dev never landed: nobody's load moves.
        (4, decision("r2", owner="dev", pool="smb", at=w)._replace(
            trigger="sla", previous_owner="ben", write_error="locked")),
    ])

    everything = history.load()
    # A window holding only the re-route: cara's gain shows, ava had nothing in it to give.
    later = history.load(since=T0 + timedelta(minutes=10))

    assert [(r.rep, r.pool, r.outcome, r.count) for r in everything] == [
        ("ben", "smb", "assigned", 1), ("cara", "smb", "assigned", 1)]
    assert [(r.rep, r.count) for r in later] == [("cara", 1)]


# --- overrides: the list and the rate per rule and per rep (sync/history/overrides.py) -----


def _override(record_id: str, at: datetime, *, rule: str | None = "everyone-else",
              frm: str = "ava", to: str = "ben", by: str | None = "userId:7") -> HistoryEvent:
    return HistoryEvent(
        id=event_id("override", f"hubspot:account:{record_id}:{at.isoformat()}"),
        decision_id=None, record_id=record_id, crm="hubspot", object="account",
        kind="override", at=at,
        data={"from": frm, "to": to, "by": by, "after_seconds": 90.5, "rule": rule,
              "pool": None, "source": "CRM_UI"})


def test_given_overrides_and_assignments_when_rated_then_per_rule_and_per_rep(
        history: History) -> None:
    written = T0 + timedelta(seconds=1)
    history.record([
        (1, decision("r1", owner="ava", rule="named", written=written)),
        (2, decision("r2", owner="ava", rule="named", written=written)),
        (3, decision("r3", owner="ben", rule="everyone-else", written=written)),
        (4, decision("r4", owner="cara", rule=None, outcome=Outcome.FALLBACK,
                     written=written)),
        (5, decision("r5", owner="ben", rule="everyone-else")),  # never written: no load
        (6, decision("r6", owner="ava", outcome=Outcome.KEPT_EXISTING, rule=None)),
        (7, decision("r7", owner="ava", rule="named", at=T0 - timedelta(days=3),
                     written=T0 - timedelta(days=3))),  # before the window
    ])
    history.record_events([
        _override("r1", T0 + timedelta(hours=1), rule="named", frm="ava", to="ben"),
        _override("r4", T0 + timedelta(hours=2), rule=None, frm="cara", to="ava", by=None),
        _override("r7", T0 - timedelta(days=2), rule="named"),  # outside the window
    ])

    since, until = T0 - timedelta(hours=1), T0 + timedelta(days=1)
    by_rule, by_rep = override_rates(history, since, until)

    assert by_rule == [OverrideRate("(fallback)", 1, 1), OverrideRate("named", 2, 1),
                       OverrideRate("everyone-else", 1, 0)]
    assert by_rule[0].rate == 1.0 and by_rule[1].rate == 0.5
    assert by_rep == [OverrideRate("cara", 1, 1), OverrideRate("ava", 2, 1),
                      OverrideRate("ben", 1, 0)]
    listed = list_overrides(history, since, until)
    assert [o.record_id for o in listed] == ["r4", "r1"]  # newest first
    assert listed[1].to_dict() == {
        "record_id": "r1", "crm": "hubspot", "object": "account", "from": "ava", "to": "ben",
        "by": "userId:7", "at": (T0 + timedelta(hours=1)).isoformat(), "after_seconds": 90.5,
        "rule": "named"}
    assert [o.record_id for o in list_overrides(history, rule="named")] == ["r1", "r7"]
    assert [o.record_id for o in list_overrides(history, since, until, rep="ava")] == \
        ["r4", "r1"]  # ava lost r1 and was chosen for r4


def test_given_no_history_when_rated_then_empty_and_no_rate(history: History) -> None:
    assert override_rates(history) == ([], [])
    assert OverrideRate("x", 0, 0).rate is None
