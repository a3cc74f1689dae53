"""The pipeline against an in-memory CRM: sweeps, writes, audit, retries, quotas, rechecks."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from sync.pipeline import NO_OWNER, Move, OwnerLoad, Pipeline
from sync.ports import QuotaExhausted, Written
from tests.builders import routing
from tests.fakes import FakeCrm, hubspot_owners
from tests.sync.state.test_contract import audited

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)

ROUTING = """
version: 1
ignore_owners: ["999"]
reps:
  - {id: ava, crm_ids: {hubspot: "101"}}
  - {id: cara, crm_ids: {hubspot: "106"}}
  - {id: dev, crm_ids: {hubspot: "107"}}
  - {id: eli, crm_ids: {hubspot: "108"}}
  - {id: gus, crm_ids: {hubspot: "109"}}
  - {id: nocrm}
pools:
  smb: {members: [cara, dev, eli]}
rules:
  - {name: named, when: {domain: {eq: acme.com}}, assign: {rep: ava}}
  - {name: archived, when: {domain: {eq: gone.com}}, assign: {rep: gus}}
  - {name: rest, assign: {pool: smb}}
"""


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def crm() -> FakeCrm:
    fake = FakeCrm(owners=hubspot_owners())
    for n in range(25):
        fake.add("companies", f"c{n}", name=f"Co {n}", domain=f"co{n}.com")
    return fake


def make(crm: FakeCrm, store, clock: Clock | None = None, **kw) -> Pipeline:
    return Pipeline(crm, routing(ROUTING), store, clock=clock or Clock(), **kw)


def owners(crm: FakeCrm) -> dict[str, object]:
    return {i: p.get("hubspot_owner_id") for i, p in crm.records["companies"].items()}


def test_given_unowned_companies_when_sweeping_then_every_one_is_written_once_and_audited(
        crm, store):
    report = make(crm, store).sweep("companies", now=NOW)

    assert report.outcomes == {"assigned": 25}
    assert report.written == 25 and not report.failed
    assert len(crm.writes) == 25 and len({i for i, _ in crm.writes}) == 25
    assert Counter(owners(crm).values()) == {"106": 9, "107": 8, "108": 8}
    audit = audited(store, record_id="c0")
    assert len(audit) == 1
    assert audit[0].written_at is not None and audit[0].owner_crm_id in ("106", "107", "108")
    assert audit[0].crm == "hubspot" and audit[0].trigger == "sweep"
    assert report.pages == 3  # 10 a page


def test_given_a_finished_sweep_when_sweeping_again_then_only_changed_records_are_read(
        crm, store):
    pipeline = make(crm, store)
    pipeline.sweep("companies", now=NOW)
    crm.add("companies", "new", name="New", domain="acme.com")
    writes_before = len(crm.writes)

    report = pipeline.sweep("companies", now=NOW)

    # The new record is routed; records only touched by our own writes are kept (counted, not
    # audited again), never rewritten.
    assert crm.records["companies"]["new"]["hubspot_owner_id"] == "101"
    assert len(crm.writes) == writes_before + 1
    assert report.outcomes == {"assigned": 1, "kept_existing": 25}
    assert len(audited(store, record_id="c0")) == 1


def test_given_valid_and_invalid_existing_owners_when_sweeping_then_only_invalid_are_routed(
        crm, store):
    crm.set_owner("companies", "c0", "101")  # active person: kept
    crm.set_owner("companies", "c1", "109")  # archived owner: routed
    crm.set_owner("companies", "c2", "900")  # a queue: no owner
    crm.set_owner("companies", "c3", "999")  # in ignore_owners: no owner

    make(crm, store).sweep("companies", now=NOW)

    written = {i for i, _ in crm.writes}
    assert "c0" not in written
    assert {"c1", "c2", "c3"} <= written
    assert audited(store, record_id="c0") == []  # kept by a sweep: counted, not audited
    make(crm, store).route_ids("companies", ["c0"], now=NOW)
    assert audited(store, record_id="c0")[0].outcome == "kept_existing"


def test_given_a_rep_who_is_archived_in_the_crm_when_routing_then_backup_path_is_taken(
        crm, store):
    crm.add("companies", "g1", name="Gone", domain="gone.com")

    make(crm, store).route_ids("companies", ["g1"], now=NOW)

    decision = audited(store, record_id="g1")[0]
    # gus (109) is archived in HubSpot: the rule yields nobody and the pool takes the record.
    assert decision.rule == "rest"
    assert any("109" in step.detail for step in decision.trace)


def test_given_per_record_write_errors_when_sweeping_then_audited_and_retried_next_run(
        crm, store):
    crm.reject = {"c3": "VALIDATION_ERROR: owner not valid"}
    pipeline = make(crm, store)

    first = pipeline.sweep("companies", now=NOW)

    assert first.write_failed == 1 and first.failed
    failed = audited(store, record_id="c3")[0]
    assert failed.write_error == "VALIDATION_ERROR: owner not valid"
    assert failed.written_at is None
    assert store.failed("hubspot", "companies") == ["c3"]
    assert crm.records["companies"]["c3"].get("hubspot_owner_id") is None

    crm.reject = {}
    second = pipeline.sweep("companies", now=NOW)

    assert crm.records["companies"]["c3"]["hubspot_owner_id"] in ("106", "107", "108")
    assert store.failed("hubspot", "companies") == []
    assert second.write_failed == 0


def test_given_writes_unavailable_when_sweeping_then_records_are_kept_for_the_next_run(
        crm, store):
    crm.unavailable_writes = 1
    pipeline = make(crm, store)

    report = pipeline.sweep("companies", now=NOW)

    assert report.write_failed == 10
    assert len(store.failed("hubspot", "companies")) == 10
    pipeline.sweep("companies", now=NOW)
    assert all(owners(crm).values())
    assert len({i for i, _ in crm.writes}) == 25
    assert len(crm.writes) == 25  # each record written exactly once in the end


def test_given_daily_quota_runs_out_mid_sweep_when_resumed_after_reset_then_none_lost(
        crm, store):
    pipeline = make(crm, store)
    crm.quota_after = 5  # users + (list, write) x 2 pages; the third list call is refused

    first = pipeline.sweep("companies", now=NOW)

    assert first.stopped is not None and "quota" in first.stopped
    assert first.written == 20
    crm.quota_after = None  # the daily window resets
    second = pipeline.sweep("companies", now=NOW)

    assert second.stopped is None
    assert all(owners(crm).values())
    assert Counter(i for i, _ in crm.writes) == {f"c{n}": 1 for n in range(25)}


def test_given_quota_runs_out_on_a_write_when_resumed_then_the_batch_is_retried(crm, store):
    pipeline = make(crm, store)
    crm.quota_after = 2  # users, list; the write is refused

    first = pipeline.sweep("companies", now=NOW)

    assert first.stopped is not None
    unwritten = audited(store, record_id="c0")[0]
    assert unwritten.write_error and "quota" in unwritten.write_error
    assert len(store.failed("hubspot", "companies")) == 10
    crm.quota_after = None
    pipeline.sweep("companies", now=NOW)
    assert all(owners(crm).values())
    assert Counter(i for i, _ in crm.writes) == {f"c{n}": 1 for n in range(25)}


def test_given_quota_runs_out_part_way_through_a_write_then_landed_batches_are_audited_written(
        crm, store):
    # Given: a CRM whose write lands the first half of the owners, then meets the daily quota
    # (as a Salesforce write of several composite calls does).
    write = crm.write_owners

    def half_then_quota(obj, owners):
        items = list(owners.items())
        exc = QuotaExhausted("hubspot", "DAILY")
        exc.landed = write(obj, dict(items[:len(items) // 2]))
        raise exc

    crm.write_owners = half_then_quota  # type: ignore[method-assign]
    ids = [f"c{n}" for n in range(10)]

    with pytest.raises(QuotaExhausted):
        make(crm, store).route_ids("companies", ids, now=NOW)

    # Then: the landed half is audited as written; only the other half waits for a retry.
    landed = {i for i, _ in crm.writes}
    assert len(landed) == 5
    latest = {i: audited(store, record_id=i)[0] for i in ids}
    assert {i for i, d in latest.items() if d.written_at is not None} == landed
    assert all("quota" in (d.write_error or "") for i, d in latest.items() if i not in landed)
    assert set(store.failed("hubspot", "companies")) == set(ids) - landed


def test_given_a_stale_snapshot_and_a_human_owner_meanwhile_when_routing_then_owner_kept(
        crm, store):
    clock = Clock()
    pipeline = make(crm, store, clock=clock, recheck_after=30)
    snapshot = crm.read_records("companies", ["c1", "c2"])
    crm.set_owner("companies", "c1", "101")  # a human assigns c1 while the batch waits
    clock.now = NOW + timedelta(seconds=45)

    pipeline._process("companies", snapshot, trigger="webhook", read_at=NOW, now=clock.now,
                      report=pipeline_report(pipeline))

    assert crm.records["companies"]["c1"]["hubspot_owner_id"] == "101"
    assert "c1" not in {i for i, _ in crm.writes}
    assert audited(store, record_id="c1")[0].outcome == "kept_existing"
    assert "c2" in {i for i, _ in crm.writes}


def pipeline_report(pipeline: Pipeline):
    from sync.pipeline import RunReport

    return RunReport(pipeline.crm, "companies")


def test_given_dry_run_when_sweeping_then_nothing_is_written_counted_or_checkpointed(
        crm, store):
    report = make(crm, store, dry_run=True).sweep("companies", now=NOW)

    assert len(report.changes) == 25
    assert crm.writes == []
    assert audited(store) == []
    assert store.get_checkpoint("sweep:hubspot:companies") is None
    assert "write" not in crm.calls


def test_given_records_locked_by_another_worker_when_routing_then_they_are_left_alone(
        crm, store):
    store.lock_records(["hubspot:companies:c0"], "other-worker", 60)

    report = make(crm, store).route_ids("companies", ["c0", "c1"], now=NOW)

    assert report.locked_elsewhere == 1
    assert {i for i, _ in crm.writes} == {"c1"}


def test_given_locks_left_by_a_failed_attempt_when_it_runs_again_with_its_token_then_it_routes(
        crm, store):
    # Given: an attempt that locked c0 under "task-1" and died with the state store (its
    # unlock never arrived), and c1 locked by somebody else.
    store.lock_records(["hubspot:companies:c0"], "task-1", 60)
    store.lock_records(["hubspot:companies:c1"], "other-worker", 60)

    # When: the same task runs again under its own token.
    with Pipeline.locks_owned_by("task-1"):
        report = make(crm, store).route_ids("companies", ["c0", "c1"], now=NOW)

    # Then: its own leftover lock is its own again; the other worker's still excludes it.
    assert {i for i, _ in crm.writes} == {"c0"}
    assert report.locked_elsewhere == 1
    assert store.lock_records(["hubspot:companies:c0"], "probe", 60)  # released afterwards


def test_given_an_id_that_no_longer_exists_when_reprocessing_then_skipped_and_audited(
        crm, store):
    report = make(crm, store).route_ids("companies", ["c0", "nope"], now=NOW)

    assert report.outcomes == {"assigned": 1, "skipped": 1}
    assert audited(store, record_id="nope")[0].reason == "record gone from the CRM"
    assert report.failed


def test_given_a_record_when_explaining_then_nothing_is_written_or_audited(crm, store):
    decision = make(crm, store).explain("companies", "c0", now=NOW)

    assert decision.outcome == "assigned"
    assert crm.writes == [] and audited(store) == []


# --- owner writes packed across a sweep's pages ---------------------------------------------

KEY = "sweep:hubspot:companies"


def write_sizes(crm: FakeCrm) -> list[int]:
    """Record the number of owners in each write call the pipeline makes."""
    sizes: list[int] = []
    write = crm.write_owners

    def counted(obj, owners):
        sizes.append(len(owners))
        return write(obj, owners)

    crm.write_owners = counted  # type: ignore[method-assign]
    return sizes


def test_given_batches_of_20_and_pages_of_10_when_sweeping_then_writes_fill_whole_batches(
        crm, store):
    crm.write_batch_size = 20
    sizes = write_sizes(crm)

    report = make(crm, store).sweep("companies", now=NOW)

    # Then: two full pages make one full batch; the last page's writes go at the end.
    assert sizes == [20, 5]
    assert report.written == 25 and report.outcomes == {"assigned": 25}
    assert all(owners(crm).values())
    assert all(audited(store, record_id=f"c{n}")[0].written_at is not None for n in range(25))
    assert store.failed("hubspot", "companies") == []
    keys = [f"hubspot:companies:c{n}" for n in range(25)]
    assert store.lock_records(keys, "probe", 60) == set(keys)  # every lock released


def test_given_writes_held_after_a_page_then_the_checkpoint_waits_and_the_records_stay_locked(
        crm, store):
    crm.write_batch_size = 20
    seen: list[tuple[str | None, set[str]]] = []

    def look(report):
        probe = store.lock_records(["hubspot:companies:c0"], "probe", 60)
        store.unlock_records(["hubspot:companies:c0"], "probe")
        seen.append((store.get_checkpoint(KEY), probe))

    make(crm, store).sweep("companies", now=NOW, on_page=look)

    # Page 1's ten writes are held: no checkpoint passes them, and c0 is still ours.
    assert seen[0] == (None, set())
    # Page 2 filled the batch: written, so its checkpoint is committed and c0 is free.
    assert seen[1][0] is not None and json.loads(seen[1][0])["cursor"]
    assert seen[1][1] == {"hubspot:companies:c0"}
    assert json.loads(seen[2][0])["cursor"] is None


def test_given_a_sweep_that_dies_between_pages_when_run_again_then_each_decided_write_lands_once(
        crm, store):
    crm.write_batch_size = 20
    listed = crm.list_records
    calls = {"n": 0}

    def dies_on_page_2(obj, *, since, cursor):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker lost")
        return listed(obj, since=since, cursor=cursor)

    crm.list_records = dies_on_page_2  # type: ignore[method-assign]
    sizes = write_sizes(crm)
    pipeline = make(crm, store)

    with pytest.raises(RuntimeError):
        pipeline.sweep("companies", now=NOW)

    # Then: page 1's held writes were written on the way out, and its checkpoint committed.
    assert sizes == [10] and len(crm.writes) == 10
    assert all(audited(store, record_id=i)[0].written_at for i, _ in crm.writes)
    assert json.loads(store.get_checkpoint(KEY))["cursor"]
    pipeline.sweep("companies", now=NOW)
    assert sizes == [10, 15]  # the resumed run packs its two pages into one write
    assert all(owners(crm).values())
    assert Counter(i for i, _ in crm.writes) == {f"c{n}": 1 for n in range(25)}


def test_given_the_write_on_the_way_out_fails_then_its_decisions_wait_on_the_retry_list(
        crm, store):
    crm.write_batch_size = 20
    listed, write = crm.list_records, crm.write_owners
    calls = {"n": 0}

    def dies_on_page_2(obj, *, since, cursor):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker lost")
        return listed(obj, since=since, cursor=cursor)

    def broken(obj, owners):
        raise ConnectionError("socket closed")

    crm.list_records = dies_on_page_2  # type: ignore[method-assign]
    crm.write_owners = broken  # type: ignore[method-assign]

    with pytest.raises(RuntimeError):
        make(crm, store).sweep("companies", now=NOW)

    # Then: the ten decisions are audited unwritten, on the retry list, unlocked, and the
    # checkpoint has not passed them.
    page_1 = [f"c{n}" for n in range(10)]
    assert sorted(store.failed("hubspot", "companies")) == sorted(page_1)
    assert all("retried next run" in (audited(store, record_id=i)[0].write_error or "")
               for i in page_1)
    assert store.get_checkpoint(KEY) is None
    keys = [f"hubspot:companies:{i}" for i in page_1]
    assert store.lock_records(keys, "probe", 60) == set(keys)
    store.unlock_records(keys, "probe")
    crm.list_records, crm.write_owners = listed, write  # type: ignore[method-assign]
    make(crm, store).sweep("companies", now=NOW)
    assert Counter(i for i, _ in crm.writes) == {f"c{n}": 1 for n in range(25)}
    assert store.failed("hubspot", "companies") == []


def test_given_the_daily_quota_runs_out_mid_pack_then_landed_batches_are_reported_written(
        crm, store):
    # Given: pages of 12, batches of 10, and a CRM whose second write call lands its first
    # five owners and then meets the daily quota.
    crm.page_size, crm.write_batch_size = 12, 10
    write = crm.write_owners
    calls: list[int] = []

    def quota_on_second(obj, owners):
        calls.append(len(owners))
        if len(calls) < 2:
            return write(obj, owners)
        exc = QuotaExhausted("hubspot", "DAILY")
        exc.landed = write(obj, dict(list(owners.items())[:5]))
        raise exc

    crm.write_owners = quota_on_second  # type: ignore[method-assign]
    pipeline = make(crm, store)

    first = pipeline.sweep("companies", now=NOW)

    # Then: the landed batches are written and audited so; the rest wait on the retry list.
    assert calls == [10, 10]
    assert first.stopped is not None and "quota" in first.stopped
    assert first.written == 15 == len(crm.writes)
    landed = {i for i, _ in crm.writes}
    assert all(audited(store, record_id=i)[0].written_at for i in landed)
    waiting = set(store.failed("hubspot", "companies"))
    assert len(waiting) == 9 and not waiting & landed
    assert all("quota" in (audited(store, record_id=i)[0].write_error or "") for i in waiting)
    assert first.write_failed == 9
    crm.write_owners = write  # type: ignore[method-assign]
    pipeline.sweep("companies", now=NOW)  # the day resets: resumes
    pipeline.sweep("companies", now=NOW)  # the next sweep takes the retry list
    assert all(owners(crm).values())
    assert Counter(i for i, _ in crm.writes) == {f"c{n}": 1 for n in range(25)}
    assert store.failed("hubspot", "companies") == []


def test_given_held_writes_older_than_the_recheck_window_then_the_next_page_end_writes_them(
        crm, store):
    crm.write_batch_size = 100
    clock = Clock()
    sizes = write_sizes(crm)
    listed = crm.list_records

    def slow(obj, *, since, cursor):
        clock.now += timedelta(seconds=31)  # each page takes longer than recheck_after
        return listed(obj, since=since, cursor=cursor)

    crm.list_records = slow  # type: ignore[method-assign]

    make(crm, store, clock).sweep("companies", now=NOW)

    # Page 1's writes are 31 s old when page 2 ends: written then, not at the sweep's end
    # (a batch of 100 would otherwise take all 25 at once).
    assert sizes == [20, 5]


# --- simulate (what-if) ---------------------------------------------------------------------


def test_given_owned_and_unowned_records_when_simulating_then_moves_and_loads_are_exact(
        crm, store):
    crm.set_owner("companies", "c0", "101")  # ava, a valid owner: kept
    crm.set_owner("companies", "c1", "999")  # ignore_owners: no owner, so routed
    pipeline = make(crm, store)  # page_size 10: three pages

    result = pipeline.simulate("COMPANIES", now=NOW)

    assert (result.crm, result.object, result.records) == ("hubspot", "companies", 25)
    assert len(result.moves) == 24
    # Listing order (c0 and c1 were modified last); one batch, so the pool rotates throughout.
    assert result.moves[0] == Move("c2", NO_OWNER, "cara", "rest")
    assert result.moves[-1] == Move("c1", "999", "eli", "rest")
    assert result.loads == (
        OwnerLoad("cara", 0, 8), OwnerLoad("dev", 0, 8), OwnerLoad("eli", 0, 8),
        OwnerLoad("ava", 1, 1), OwnerLoad(NO_OWNER, 23, 0), OwnerLoad("999", 1, 0))
    assert result.unreadable == ()
    assert crm.calls["list"] == 3


def test_given_a_simulation_then_nothing_is_written_audited_checkpointed_or_turned(crm, store):
    pipeline = make(crm, store)

    first = pipeline.simulate("companies", now=NOW)
    again = pipeline.simulate("companies", now=NOW)

    assert first == again  # no pool turn was taken: the rotation starts at the same member
    assert crm.writes == [] and "write" not in crm.calls
    assert audited(store) == []
    assert store.get_checkpoint("sweep:hubspot:companies") is None
    assert make(crm, store).sweep("companies", now=NOW).reps["cara"] == 9  # cara first, as fresh


def test_given_a_record_that_cannot_be_normalized_when_simulating_then_it_is_listed_not_fatal(
        crm, store):
    crm.add("companies", "  ", name="No id")

    result = make(crm, store).simulate("companies", now=NOW)

    assert result.unreadable == ("  ",)
    assert result.records == 25


# --- sweep progress -------------------------------------------------------------------------


def progress_of(pipeline: Pipeline, **kw) -> list[tuple[int, int, int | None]]:
    seen: list[tuple[int, int, int | None]] = []
    pipeline.sweep("companies", now=NOW,
                   on_page=lambda r: seen.append((r.pages, r.listed, r.total)), **kw)
    return seen


def test_given_a_crm_that_counts_its_query_when_sweeping_then_each_page_reports_of_the_total(
        crm, store):
    crm.totals = True

    assert progress_of(make(crm, store)) == [(1, 10, 25), (2, 20, 25), (3, 25, 25)]


def test_given_a_crm_that_does_not_count_when_sweeping_then_pages_report_no_total(crm, store):
    assert progress_of(make(crm, store)) == [(1, 10, None), (2, 20, None), (3, 25, None)]


def test_given_a_sweep_resumed_mid_listing_when_the_crm_counts_then_no_total_is_claimed(
        crm, store):
    # The resumed query's count would include the pages done before the stop.
    crm.totals = True
    crm.quota_after = 3  # users, the first list page and its write: then the quota is spent
    stopped = make(crm, store).sweep("companies", now=NOW)
    assert stopped.stopped and stopped.pages == 1
    crm.quota_after = None

    assert progress_of(make(crm, store)) == [(1, 10, None), (2, 15, None)]


class Follower:
    """An AfterWrite follower that keeps what it is handed (and may fail, to prove it is
    contained)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[str, str, list[Written]]] = []

    def written(self, crm: str, obj: str, items) -> None:
        self.calls.append((crm, obj, list(items)))
        if self.fail:
            raise RuntimeError("follower down")


def test_given_followers_when_writes_land_then_each_gets_the_written_decisions_with_records(
        crm, store):
    crm.reject = {"c3": "VALIDATION_ERROR: owner not valid"}
    crm.records["companies"]["c4"]["hubspot_owner_id"] = "106"  # kept: no write, no follower
    follower = Follower()

    make(crm, store, followers=[follower]).sweep("companies", now=NOW)

    handed = [item for _, _, items in follower.calls for item in items]
    assert {c[:2] for c in follower.calls} == {("hubspot", "companies")}
    assert sorted(i.decision.record_id for i in handed) == sorted(
        f"c{n}" for n in range(25) if n not in (3, 4))
    for item in handed:
        assert item.decision.written_at is not None and item.decision.write_error is None
        assert item.record.id == item.decision.record_id
        assert item.record.domain == f"{item.record.id.replace('c', 'co')}.com"
    # Handed over only once their audit rows are committed.
    assert audited(store, record_id=handed[0].decision.record_id)[0].written_at is not None


def test_given_a_failing_follower_when_sweeping_then_routing_goes_on_and_the_next_follower_runs(
        crm, store):
    failing, after = Follower(fail=True), Follower()

    report = make(crm, store, followers=[failing, after]).sweep("companies", now=NOW)

    assert report.written == 25 and not report.failed
    assert len(failing.calls) == len(after.calls) >= 1
    assert sum(len(items) for _, _, items in after.calls) == 25


def test_given_a_dry_run_then_followers_are_never_called(crm, store):
    follower = Follower()
    make(crm, store, followers=[follower], dry_run=True).sweep("companies", now=NOW)
    assert follower.calls == []
