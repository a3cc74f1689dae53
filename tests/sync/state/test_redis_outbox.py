"""Redis only: decisions wait in the `history:outbox` list, with ids from the Lua commit, until
the flusher acknowledges them; poison entries and an older version's audit trail are handled."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from sync.models import Decision
from sync.state import PoolChange
from sync.state.redis import decode_entry, encode_entry
from tests.sync.state.test_contract import DAY, T0, decision, turn


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    yield raw
    raw.close()


def test_given_committed_decisions_when_read_then_oldest_first_with_ids_and_left_in_place(
        redis_store):
    redis_store.commit({}, [], [decision("a"), decision("b")])
    redis_store.commit({}, [], [decision("c")])

    first = redis_store.outbox(10)
    again = redis_store.outbox(2)

    assert [d.record_id for _, d in first] == ["a", "b", "c"]
    assert again == first[:2]
    assert redis_store.outbox_size() == 3


def test_given_decisions_when_committed_then_ids_rise_and_are_server_time_in_microseconds(
        redis_store):
    before = int(time.time() * 1_000_000)
    redis_store.commit({}, [], [decision(f"r{i}") for i in range(50)])
    redis_store.commit({}, [], [decision("last")])
    after = int(time.time() * 1_000_000)

    ids = [i for i, _ in redis_store.outbox(100)]

    assert ids == sorted(set(ids)) and len(ids) == 51
    # The loopback server's clock is this machine's; a second of slack for the rounding above.
    assert before - 1_000_000 <= ids[0] <= after + 1_000_000
    assert ids[-1] < 2**53  # exact as a Lua number (a double)


def test_given_a_flushed_redis_when_committing_again_then_new_ids_are_above_the_old_ones(
        redis_store, client):
    redis_store.commit({}, [], [decision("before")])
    [(old, _)] = redis_store.outbox(1)

    client.flushdb()  # the ids counter is gone; SQL would still hold `old`
    redis_store.commit({}, [], [decision("after")])

    [(new, _)] = redis_store.outbox(1)
    assert new > old


def test_given_a_last_id_ahead_of_the_clock_then_ids_continue_from_it(redis_store, client):
    ahead = int(time.time() * 1_000_000) + 3_600_000_000  # an hour ahead (clock stepped back)
    client.set("ar:history:last_id", str(ahead))

    redis_store.commit({}, [], [decision("a"), decision("b")])

    assert [i for i, _ in redis_store.outbox(2)] == [ahead + 1, ahead + 2]
    assert client.get("ar:history:last_id") == str(ahead + 2)


def test_given_a_refused_commit_then_nothing_reaches_the_outbox_and_no_id_is_used(
        redis_store, client):
    redis_store.commit({"smb": 0}, [turn("smb", "cara")], [decision("r1", pool="smb")])
    last = client.get("ar:history:last_id")

    stale = redis_store.commit({"smb": 0}, [PoolChange("smb", "dev", None, {("dev", DAY): 1})],
                               [decision("r2", owner="dev", pool="smb")])

    assert stale is False
    assert [d.record_id for _, d in redis_store.outbox(10)] == ["r1"]
    assert client.get("ar:history:last_id") == last


def test_given_a_commit_resent_with_its_id_then_its_decisions_are_queued_once(redis_store):
    args = ({"smb": 0}, [turn("smb", "cara")], [decision("r1", pool="smb")])

    redis_store.commit(*args, commit_id="c-9")
    redis_store.commit(*args, commit_id="c-9")

    assert redis_store.outbox_size() == 1


def test_given_acknowledged_ids_then_exactly_those_leave_and_later_entries_stay(redis_store):
    redis_store.commit({}, [], [decision(f"r{i}") for i in range(5)])
    batch = redis_store.outbox(3)
    redis_store.commit({}, [], [decision("late")])  # appended while the batch was in flight

    removed = redis_store.outbox_ack([batch[0][0], batch[2][0]])

    assert removed == 2
    assert [d.record_id for _, d in redis_store.outbox(10)] == ["r1", "r3", "r4", "late"]


def test_given_ids_acknowledged_twice_or_unknown_then_nothing_else_is_removed(redis_store):
    redis_store.commit({}, [], [decision("a"), decision("b")])
    [(first, _), _] = redis_store.outbox(2)
    redis_store.outbox_ack([first])

    assert redis_store.outbox_ack([first, first, 12345]) == 0
    assert redis_store.outbox_ack([]) == 0
    assert [d.record_id for _, d in redis_store.outbox(10)] == ["b"]


def test_given_a_full_decision_when_queued_then_every_field_round_trips(redis_store):
    original = decision("0015g00000AbCdEAAZ", pool="smb")._replace(
        reason="ü \n \"quoted\" \x00 {json}", trigger="webhook", written_at=T0)
    redis_store.commit({}, [], [original])

    [(_, back)] = redis_store.outbox(1)

    assert back == original


def test_given_a_poison_entry_when_reading_then_it_moves_to_dead_and_the_rest_flows(
        redis_store, client, caplog):
    redis_store.commit({}, [], [decision("a")])
    secret = "not json but a customer's email ann@example.com"
    client.rpush("ar:history:outbox", f"42 {secret}", "garbage without an id")
    redis_store.commit({}, [], [decision("b")])

    with caplog.at_level(logging.ERROR, logger="account_router.history"):
        read = redis_store.outbox(10)

    assert [d.record_id for _, d in read] == ["a", "b"]
    assert redis_store.outbox_size() == 2
    assert redis_store.outbox_dead() == 2
    assert client.lrange("ar:history:dead", 0, -1) == [f"42 {secret}", "garbage without an id"]
    assert len(caplog.records) == 2
    assert "ann@example.com" not in caplog.text and "garbage" not in caplog.text


@pytest.mark.parametrize("entry", [
    "", " ", "12", "12 ", "x {}", "-1 {}", "１２ {}", "12 []", "12 {}", '12 {"record_id": 1}',
    '12 {"record_id":"a","object":"account","crm":"x","outcome":"won"}',
    '12 {"record_id":"a","object":"account","crm":"x","outcome":"assigned","trace":[{"x":1}]}',
    '12 {"record_id":"a","object":"account","crm":"x","outcome":"assigned","decided_at":"soon"}',
])
def test_given_a_malformed_entry_when_decoded_then_valueerror(entry):
    with pytest.raises(ValueError):
        decode_entry(entry)


def test_given_an_encoded_decision_then_it_decodes_with_its_id():
    d = decision("r1")

    assert decode_entry(f"7 {encode_entry(d)}") == (7, d)


# --- the audit trail an older version kept in Redis -------------------------------------------


def _old_audit(client: redis.Redis, decisions: list[Decision]) -> None:
    """Keys as the Lua commit wrote them before the outbox (audit:seq/body/time/record/rep)."""
    for n, d in enumerate(decisions, start=1):
        id_ = f"{n:016d}"
        score = int((d.decided_at - T0).total_seconds() * 1_000_000) if d.decided_at else "-inf"
        client.hset("ar:audit:body", id_, json.dumps(d.to_dict()))
        client.zadd("ar:audit:time", {id_: score})
        client.zadd(f"ar:audit:record:{d.record_id}", {id_: score})
        if d.owner:
            client.zadd(f"ar:audit:rep:{d.owner}", {id_: score})
    client.set("ar:audit:seq", len(decisions))


def test_given_an_old_audit_trail_when_read_then_oldest_first_with_the_old_ids(
        redis_store, client):
    old = [decision(f"r{i}", at=T0 + timedelta(minutes=i)) for i in range(3)]
    _old_audit(client, [old[2], old[0], old[1]])  # ids in arrival order, not time order

    assert redis_store.legacy_audit(2) == [(2, old[0]), (3, old[1])]
    assert redis_store.legacy_audit(10)[-1] == (1, old[2])


def test_given_the_old_trail_acknowledged_then_every_audit_key_is_gone_and_pools_stay(
        redis_store, client):
    _old_audit(client, [decision("a", owner="ava"), decision("b", owner="ben")])
    redis_store.commit({}, [turn("smb", "cara")], [])
    ids = [i for i, _ in redis_store.legacy_audit(10)]

    redis_store.legacy_audit_ack(ids[:1])
    assert client.exists("ar:audit:seq") == 1  # one left: the trail is not done yet
    redis_store.legacy_audit_ack(ids[1:])

    assert redis_store.legacy_audit(10) == []
    assert list(client.scan_iter("ar:audit:*")) == []
    assert redis_store.load_pools({"smb": {"cara": DAY}})["smb"].counts == {"cara": 1}


def test_given_an_undecodable_old_body_then_it_moves_to_dead_and_the_rest_is_read(
        redis_store, client):
    _old_audit(client, [decision("a"), decision("b")])
    client.hset("ar:audit:body", f"{1:016d}", "{broken")

    assert [d.record_id for _, d in redis_store.legacy_audit(10)] == ["b"]
    assert client.lrange("ar:history:dead", 0, -1) == [f"{1:016d} {{broken"]


def test_given_an_id_when_buried_then_exactly_its_entry_moves_to_dead_logged_without_content(
        redis_store, client, caplog):
    redis_store.commit({}, [], [decision("a"), decision("ann@example.com"), decision("c")])
    ids = [i for i, _ in redis_store.outbox(3)]

    with caplog.at_level(logging.ERROR, logger="account_router.history"):
        assert redis_store.outbox_bury(ids[1], "DataError: out of range") is True
    assert redis_store.outbox_bury(ids[1], "again") is False

    assert [d.record_id for _, d in redis_store.outbox(10)] == ["a", "c"]
    [dead] = client.lrange("ar:history:dead", 0, -1)
    assert dead.startswith(f"{ids[1]} ") and "ann@example.com" in dead
    assert "out of range" in caplog.text and "ann@example.com" not in caplog.text
