"""Redis only: a command redis-py re-sends after a dropped connection (its answer lost in a
Redis restart) must not apply twice. The re-send is reproduced by running the same call again
with the same idempotency token."""

from __future__ import annotations

from sync.state import PoolChange
from tests.sync.state.test_contract import DAY, decision, recorded, turn


def test_given_a_commit_resent_with_its_id_when_applied_then_turns_and_audit_apply_once(
        redis_store):
    args = ({"smb": 0}, [turn("smb", "cara")], [decision("r1", pool="smb")])

    assert redis_store.commit(*args, commit_id="c-1") is True
    assert redis_store.commit(*args, commit_id="c-1") is True  # the re-send: same answer

    snap = redis_store.load_pools({"smb": {"cara": DAY}})["smb"]
    assert (snap.version, snap.counts) == (1, {"cara": 1})
    assert [d.record_id for d in recorded(redis_store)] == ["r1"]


def test_given_a_refused_commit_resent_with_its_id_then_it_is_refused_again_unapplied(
        redis_store):
    redis_store.commit({"smb": 0}, [turn("smb", "cara")], [decision("r1", pool="smb")])
    stale = ({"smb": 0}, [PoolChange("smb", "dev", None, {("dev", DAY): 1})],
             [decision("r2", owner="dev", pool="smb")])

    assert redis_store.commit(*stale, commit_id="c-2") is False
    assert redis_store.commit(*stale, commit_id="c-2") is False
    assert [d.record_id for d in recorded(redis_store)] == ["r1"]


def test_given_distinct_commits_without_ids_then_each_applies(redis_store):
    assert redis_store.commit({}, [], [decision("r1")]) is True
    assert redis_store.commit({}, [], [decision("r2")]) is True
    assert sorted(d.record_id for d in recorded(redis_store)) == ["r1", "r2"]


def test_given_a_dedupe_mark_resent_with_its_token_then_it_is_still_new_to_its_sender(
        redis_store):
    assert redis_store._seen_as("webhook:1:100", 60_000, "token-a") is False
    assert redis_store._seen_as("webhook:1:100", 60_000, "token-a") is False  # the re-send
    assert redis_store._seen_as("webhook:1:100", 60_000, "token-b") is True  # a redelivery
    assert redis_store.seen("webhook:1:100", 60) is True
