"""The micro-batcher on a fake clock and a fake sink; the beat schedule parser."""

from __future__ import annotations

import threading
import time

import pytest

from connectors.settings import Settings
from tasks.celery_app import SWEEP_PAGE_TASK, SWEEP_PRIORITY, beat_schedule, sweep_schedule
from tasks.queue import Batcher
from tests.loopback import free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, list[str], str]] = []

    def __call__(self, crm: str, obj: str, ids: list[str], trigger: str) -> None:
        self.sent.append((crm, obj, ids, trigger))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def batcher(clock, sink) -> Batcher:
    # Trailing only: these tests are about the window itself; the leading edge has its own.
    return Batcher(sink, window=0.25, max_ids=100, clock=clock, leading=False)


def test_given_a_burst_of_250_ids_when_flushed_then_3_tasks_of_at_most_100_carry_them_all(
        batcher, sink):
    ids = [str(i) for i in range(250)]

    for record_id in ids:
        batcher.add("hubspot", "companies", [record_id], "webhook")
    batcher.flush()

    assert [len(s[2]) for s in sink.sent] == [100, 100, 50]
    assert [i for s in sink.sent for i in s[2]] == ids


def test_given_a_full_batch_when_the_100th_id_arrives_then_it_is_sent_without_waiting(
        batcher, sink):
    batcher.add("hubspot", "companies", [str(i) for i in range(100)], "webhook")

    assert len(sink.sent) == 1 and len(sink.sent[0][2]) == 100


def test_given_ids_300_ms_apart_when_added_then_each_becomes_its_own_task(
        batcher, clock, sink):
    batcher.add("hubspot", "companies", ["1"], "webhook")
    clock.advance(0.3)
    batcher.add("hubspot", "companies", ["2"], "webhook")
    clock.advance(0.3)
    batcher.flush_due()

    assert sink.sent == [("hubspot", "companies", ["1"], "webhook"),
                         ("hubspot", "companies", ["2"], "webhook")]


def test_given_ids_within_the_window_when_due_then_one_task_and_not_before(
        batcher, clock, sink):
    batcher.add("hubspot", "companies", ["1"], "webhook")
    clock.advance(0.2)
    batcher.add("hubspot", "companies", ["2"], "webhook")

    assert batcher.flush_due() == 0
    clock.advance(0.05)
    assert batcher.flush_due() == 1
    assert sink.sent == [("hubspot", "companies", ["1", "2"], "webhook")]


def test_given_duplicate_ids_within_a_batch_when_sent_then_each_id_appears_once(
        batcher, sink):
    batcher.add("hubspot", "companies", ["1", "2", "1"], "webhook")
    batcher.add("hubspot", "companies", ["2", " 3 ", ""], "webhook")
    batcher.flush()

    assert sink.sent == [("hubspot", "companies", ["1", "2", "3"], "webhook")]


def test_given_other_objects_and_triggers_when_flushed_then_batches_stay_apart(batcher, sink):
    batcher.add("hubspot", "companies", ["1"], "webhook")
    batcher.add("hubspot", "contacts", ["1"], "webhook")
    batcher.add("salesforce", "Lead", ["00Q1"], "webhook")
    batcher.add("hubspot", "companies", ["2"], "reprocess")
    batcher.flush()

    assert sorted(sink.sent) == [("hubspot", "companies", ["1"], "webhook"),
                                 ("hubspot", "companies", ["2"], "reprocess"),
                                 ("hubspot", "contacts", ["1"], "webhook"),
                                 ("salesforce", "Lead", ["00Q1"], "webhook")]


def test_given_a_failing_sink_when_flushed_then_other_batches_still_go_and_the_error_is_raised():
    seen: list[str] = []

    def sink(crm, obj, ids, trigger):
        seen.append(obj)
        if obj == "companies":
            raise ConnectionError("broker down")

    failing = Batcher(sink, clock=lambda: 0.0, leading=False)
    failing.add("hubspot", "companies", ["1"], "webhook")
    failing.add("hubspot", "contacts", ["1"], "webhook")

    with pytest.raises(ConnectionError):
        failing.flush()
    assert sorted(seen) == ["companies", "contacts"]


def test_given_an_idle_key_when_a_lone_id_arrives_then_it_goes_at_once(clock, sink):
    batcher = Batcher(sink, window=0.1, clock=clock)

    holding = batcher.add("hubspot", "companies", ["1"], "webhook")

    assert sink.sent == [("hubspot", "companies", ["1"], "webhook")]
    assert holding[0].done()


def test_given_a_burst_on_an_idle_key_when_added_then_the_first_goes_and_the_rest_coalesce(
        clock, sink):
    batcher = Batcher(sink, window=0.1, clock=clock)

    for record_id in "12345":
        batcher.add("hubspot", "companies", [record_id], "webhook")
        clock.advance(0.01)

    assert [s[2] for s in sink.sent] == [["1"]]
    assert batcher.flush_due() == 0  # 40 ms after the first batch: not yet
    clock.advance(0.06)  # one window after the first batch went out
    assert batcher.flush_due() == 1
    assert [s[2] for s in sink.sent] == [["1"], ["2", "3", "4", "5"]]


def test_given_a_steady_stream_when_leading_then_at_most_one_batch_per_window_per_key(
        clock, sink):
    batcher = Batcher(sink, window=0.1, clock=clock)

    for k in range(100):  # 100 ids at 10 ms intervals: one second
        batcher.add("hubspot", "companies", [str(k)], "webhook")
        batcher.flush_due()
        clock.advance(0.01)
    batcher.flush()

    assert sum(len(s[2]) for s in sink.sent) == 100
    assert 10 <= len(sink.sent) <= 11


def test_given_a_quiet_window_when_the_next_id_arrives_then_it_goes_at_once_again(
        clock, sink):
    batcher = Batcher(sink, window=0.1, clock=clock)
    batcher.add("hubspot", "companies", ["1"], "webhook")
    clock.advance(0.5)

    batcher.add("hubspot", "companies", ["2"], "webhook")

    assert [s[2] for s in sink.sent] == [["1"], ["2"]]


def test_given_ids_added_when_their_batch_reaches_the_sink_then_their_futures_are_done(
        batcher, clock, sink):
    first = batcher.add("hubspot", "companies", ["1", "2"], "webhook")
    second = batcher.add("hubspot", "companies", ["3"], "webhook")

    assert first == second and not first[0].done()  # one open batch holds all three
    clock.advance(0.25)
    batcher.flush_due()
    assert first[0].done() and first[0].result() is None
    assert sink.sent == [("hubspot", "companies", ["1", "2", "3"], "webhook")]


def test_given_ids_spanning_two_batches_when_added_then_both_futures_are_returned(
        batcher, sink):
    batcher.add("hubspot", "companies", [str(i) for i in range(60)], "webhook")
    holding = batcher.add("hubspot", "companies", [str(i) for i in range(60, 120)], "webhook")

    assert len(holding) == 2
    assert holding[0].done() and not holding[1].done()  # the first filled up and went out
    batcher.flush()
    assert all(f.done() for f in holding)


def test_given_a_failing_sink_when_the_batch_goes_then_its_future_carries_the_error():
    def sink(*_: object) -> None:
        raise ConnectionError("broker down")

    failing = Batcher(sink, clock=lambda: 0.0, leading=False)
    holding = failing.add("hubspot", "companies", ["1"], "webhook")

    with pytest.raises(ConnectionError):
        failing.flush()
    with pytest.raises(ConnectionError, match="broker down"):
        holding[0].result(timeout=0)


def test_given_an_unreachable_broker_when_enqueueing_then_the_caller_sees_the_failure(
        monkeypatch):
    # Given: a broker URL nobody listens on (a closed loopback port) and a short window.
    from tasks import queue

    port = free_port()
    monkeypatch.setenv("ACCOUNT_ROUTER_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setenv("ACCOUNT_ROUTER_BATCH_WINDOW_MS", "20")
    monkeypatch.setattr(queue, "_backends", {})
    # When / then: enqueue_route raises instead of returning as if the ids were safe, so a
    # webhook is answered 503 (and redelivered by the CRM) rather than 200 and lost.
    with pytest.raises(Exception) as raised:
        queue.enqueue_route("hubspot", "companies", ["1"], "webhook")
    assert not isinstance(raised.value, AssertionError)
    for backend in queue._backends.values():
        backend.batcher._stop.set()
        backend.batcher._kick.set()


def test_given_the_timer_thread_when_the_window_passes_then_the_batch_is_sent_unprompted():
    sent = threading.Event()
    batcher = Batcher(lambda *_: sent.set(), window=0.05, leading=False)
    batcher.start()
    try:
        started = time.monotonic()
        batcher.add("hubspot", "companies", ["1"], "webhook")

        assert sent.wait(timeout=5)
        assert time.monotonic() - started >= 0.04
    finally:
        batcher.close()


def test_given_a_schedule_setting_when_parsed_then_objects_are_canonical_and_seconds_float():
    settings = Settings(sweep_schedule="hubspot:Companies=300, salesforce:lead=60,")
    assert sweep_schedule(settings) == {
        ("hubspot", "companies"): 300.0, ("salesforce", "Lead"): 60.0}
    schedule = beat_schedule(Settings(sweep_schedule="hubspot:companies=300"))
    assert schedule["sweep hubspot:companies"]["task"] == SWEEP_PAGE_TASK
    assert schedule["sweep hubspot:companies"]["args"] == ("hubspot", "companies")
    # Sweep starts queue behind webhook batches (tasks/celery_app.py, SWEEP_PRIORITY).
    assert schedule["sweep hubspot:companies"]["options"]["priority"] == SWEEP_PRIORITY


def test_given_a_schedule_naming_an_unknown_object_when_beat_starts_then_the_variable_is_named():
    # The syntax is checked when the settings load (tests/config/test_settings.py); whether
    # the CRM has the object is the connectors' fact, checked when the app is made.
    with pytest.raises(ValueError, match="ACCOUNT_ROUTER_SWEEP_SCHEDULE entry hubspot:deals"):
        beat_schedule(Settings(sweep_schedule="hubspot:deals=60"))
