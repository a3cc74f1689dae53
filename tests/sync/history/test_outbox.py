"""The outbox flush: a real Redis outbox into a real history (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from sync.history import History
from sync.history.outbox import FLUSH_LOCK, FlushError, drain, flush
from sync.state.redis import RedisStateStore, encode_entry
from tests.loopback import free_port
from tests.sync.state.test_contract import T0, decision
from tests.sync.state.test_redis_outbox import _old_audit


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStateStore]:
    opened = RedisStateStore(redis_url)
    yield opened
    opened.close()


def _queued(store: RedisStateStore, n: int, prefix: str = "r") -> None:
    store.commit({}, [], [decision(f"{prefix}{i}", at=T0 + timedelta(seconds=i))
                          for i in range(n)])


def test_given_queued_decisions_when_flushed_then_they_are_in_the_history_and_gone_from_redis(
        store, history):
    _queued(store, 5)
    ids = [i for i, _ in store.outbox(10)]

    moved = flush(store, history)

    assert moved == 5
    assert store.outbox_size() == 0
    stored = history.decision_ids()
    assert sorted(i for i, _ in stored) == ids
    assert {d.record_id for _, d in stored} == {f"r{i}" for i in range(5)}


def test_given_more_than_a_batch_when_flushed_once_then_one_batch_moves_oldest_first(
        store, history):
    _queued(store, 7)
    oldest = [i for i, _ in store.outbox(3)]

    assert flush(store, history, batch=3) == 3

    assert sorted(i for i, _ in history.decision_ids()) == oldest
    assert store.outbox_size() == 4


def test_given_a_backlog_when_drained_then_batches_move_until_the_outbox_is_empty(
        store, history):
    _queued(store, 25)

    assert drain(store, history, batch=4, budget_seconds=60) == 25

    assert store.outbox_size() == 0
    assert len(history.decision_ids()) == 25


def test_given_a_spent_budget_when_draining_then_it_stops_after_the_batch_in_hand(
        store, history):
    _queued(store, 10)
    ticks = itertools.count()  # each read of the clock is one second later

    moved = drain(store, history, batch=2, budget_seconds=1.5, clock=lambda: next(ticks))

    assert moved == 4  # deadline 1.5: after the batches read at t=1 and t=2, t=2 >= 1.5
    assert store.outbox_size() == 6


def test_given_a_batch_stored_before_its_ack_was_lost_when_flushed_again_then_no_duplicate(
        store, history):
    _queued(store, 3)
    history.record(store.outbox(2))  # a flusher killed between its insert and its ack

    assert flush(store, history) == 3

    assert store.outbox_size() == 0
    assert len(history.decision_ids()) == 3


def test_given_another_flusher_holding_the_lock_then_nothing_moves(store, history):
    _queued(store, 2)
    assert store.lock_records([FLUSH_LOCK], "someone-else", 30)

    assert flush(store, history) == 0

    assert store.outbox_size() == 2
    assert history.decision_ids() == []
    # Its lock is its own: the flush that found it taken did not release it.
    assert store.lock_records([FLUSH_LOCK], "me", 30) == set()


def test_given_a_poison_entry_in_the_queue_when_flushed_then_the_rest_lands(
        store, history, redis_url):
    _queued(store, 2)
    client = redis.Redis.from_url(redis_url)
    client.rpush("ar:history:outbox", "7 {not json")
    client.close()
    _queued(store, 1, prefix="late")

    assert flush(store, history) == 3

    assert {d.record_id for _, d in history.decision_ids()} == {"r0", "r1", "late0"}
    assert (store.outbox_size(), store.outbox_dead()) == (0, 1)


def test_given_an_older_versions_audit_in_redis_when_flushed_then_it_moves_first_with_its_ids(
        store, history, redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    old = [decision("old-a", at=T0), decision("old-b", at=T0 + timedelta(minutes=1))]
    _old_audit(client, old)
    _queued(store, 2, prefix="new")

    first = flush(store, history)
    drain(store, history, budget_seconds=60)

    assert first == 2  # the legacy batch alone
    by_id = dict(history.decision_ids())
    assert (by_id[1], by_id[2]) == (old[0], old[1])
    assert {d.record_id for d in by_id.values()} == {"old-a", "old-b", "new0", "new1"}
    assert list(client.scan_iter("ar:audit:*")) == []
    client.close()


def test_given_an_unreachable_database_when_flushed_then_flusherror_and_nothing_is_lost(store):
    _queued(store, 3)
    url = f"postgresql+psycopg://router:s3cret-pw@127.0.0.1:{free_port()}/history"
    down = History(url)
    try:
        with pytest.raises(FlushError) as raised:
            flush(store, down)
    finally:
        down.close()

    message = str(raised.value)
    assert "history database unavailable" in message
    assert "s3cret-pw" not in message and "INSERT" not in message
    assert store.outbox_size() == 3
    # The lock went back: the next flush (the database back) need not wait for it to lapse.
    assert store.lock_records([FLUSH_LOCK], "next", 30) == {FLUSH_LOCK}


def test_given_a_batch_of_zero_when_draining_then_valueerror(store, history):
    with pytest.raises(ValueError, match="batch must be >= 1"):
        drain(store, history, batch=0)


def test_given_an_entry_the_database_refuses_when_flushed_then_it_moves_to_dead_and_the_rest_lands(
        store, history, redis_url):
    # An id beyond BIGINT (a hand-edited entry): the database refuses it, every time.
    _queued(store, 3)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    [(_, sample)] = store.outbox(1)
    client.rpush("ar:history:outbox", f"{2**64} {encode_entry(sample._replace(record_id='x'))}")
    client.close()
    _queued(store, 2, prefix="late")

    moved = drain(store, history, batch=1000, budget_seconds=60)

    assert moved == 6
    assert {d.record_id for _, d in history.decision_ids()} == {"r0", "r1", "r2", "late0",
                                                                  "late1"}
    assert (store.outbox_size(), store.outbox_dead()) == (0, 1)
