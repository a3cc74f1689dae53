"""Pipeline bookkeeping (checkpoints, record locks, failed writes) against SQLite and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sync.state import open_store

# Long enough that nothing expires by accident on a slow machine; SHORT_TTL is for expiry tests.
TTL = 60.0
SHORT_TTL = 0.2


# --- checkpoints ---------------------------------------------------------------------------


def test_given_an_unset_checkpoint_when_read_then_none(store):
    assert store.get_checkpoint("sweep:hubspot:account") is None


def test_given_a_checkpoint_when_read_back_then_it_round_trips(store):
    value = json.dumps({"watermark": "2026-11-25T14:00:00Z", "cursor": "abc", "ü": "ß"})

    store.set_checkpoint("sweep:hubspot:account", value)

    assert store.get_checkpoint("sweep:hubspot:account") == value
    assert store.get_checkpoint("sweep:hubspot:lead") is None


def test_given_a_checkpoint_when_set_again_then_the_new_value_wins(store):
    store.set_checkpoint("sweep", "one")

    store.set_checkpoint("sweep", "two")

    assert store.get_checkpoint("sweep") == "two"


def test_given_an_empty_value_then_it_is_stored_not_deleted(store):
    store.set_checkpoint("sweep", "")

    assert store.get_checkpoint("sweep") == ""


def test_given_a_checkpoint_when_set_to_none_then_it_is_deleted(store):
    store.set_checkpoint("sweep", "one")
    store.set_checkpoint("other", "kept")

    store.set_checkpoint("sweep", None)
    store.set_checkpoint("never-set", None)  # deleting nothing is not an error

    assert store.get_checkpoint("sweep") is None
    assert store.get_checkpoint("other") == "kept"


def test_given_a_checkpoint_when_the_store_is_reopened_then_it_is_still_there(store, store_url):
    store.set_checkpoint("sweep", '{"cursor": 42}')
    store.close()

    reopened = open_store(store_url)
    try:
        assert reopened.get_checkpoint("sweep") == '{"cursor": 42}'
    finally:
        reopened.close()


# --- record locks --------------------------------------------------------------------------


def test_given_free_keys_when_locked_then_all_are_held(store):
    assert store.lock_records(["r1", "r2", "r2"], "w1", TTL) == {"r1", "r2"}


def test_given_no_keys_when_locking_then_nothing_is_held(store):
    assert store.lock_records([], "w1", TTL) == set()


def test_given_a_held_key_when_another_token_locks_then_it_gets_only_the_free_ones(store):
    store.lock_records(["r1"], "w1", TTL)

    assert store.lock_records(["r1", "r2"], "w2", TTL) == {"r2"}


def test_given_a_held_key_when_its_ttl_expires_then_another_token_takes_it(store):
    store.lock_records(["r1", "r2"], "w1", SHORT_TTL)

    time.sleep(SHORT_TTL + 0.15)

    assert store.lock_records(["r1", "r2"], "w2", TTL) == {"r1", "r2"}
    assert store.lock_records(["r1", "r2"], "w1", TTL) == set()  # the old holder lost them


def test_given_a_held_key_when_its_holder_locks_again_then_it_is_held_and_refreshed(store):
    store.lock_records(["r1"], "w1", SHORT_TTL)

    assert store.lock_records(["r1", "r2"], "w1", TTL) == {"r1", "r2"}
    time.sleep(SHORT_TTL + 0.15)  # past the first TTL: only the refresh keeps it held

    assert store.lock_records(["r1"], "w2", TTL) == set()


def test_given_held_keys_when_the_holder_unlocks_then_others_can_take_them(store):
    store.lock_records(["r1", "r2", "r3"], "w1", TTL)

    store.unlock_records(["r1", "r2", "never-locked"], "w1")

    assert store.lock_records(["r1", "r2", "r3"], "w2", TTL) == {"r1", "r2"}


def test_given_a_held_key_when_a_non_holder_unlocks_then_nothing_changes(store):
    store.lock_records(["r1"], "w1", TTL)

    store.unlock_records(["r1"], "w2")

    assert store.lock_records(["r1"], "w2", TTL) == set()
    assert store.lock_records(["r1"], "w1", TTL) == {"r1"}


def test_given_a_lock_when_another_instance_locks_then_it_sees_the_lock(store, store_url):
    store.lock_records(["r1"], "w1", TTL)

    other = open_store(store_url)
    try:
        assert other.lock_records(["r1", "r2"], "w2", TTL) == {"r2"}
    finally:
        other.close()


@pytest.mark.parametrize("ttl", [0, -1.0, float("inf"), float("nan")])
def test_given_a_ttl_that_is_not_positive_and_finite_when_locking_then_valueerror(store, ttl):
    with pytest.raises(ValueError, match="ttl_seconds"):
        store.lock_records(["r1"], "w1", ttl)


# Run with `python -c`, like test_concurrency.py: a fresh interpreter per worker process.
LOCKER = r"""
import json, os, random, sys, time

from sync.state import open_store

url, token, go = sys.argv[1], sys.argv[2], sys.argv[3]
keys = json.loads(sys.argv[4])
store = open_store(url)
store.lock_records(["warm-up:" + token], token, 60.0)  # connected, schema in place
random.seed(token)
random.shuffle(keys)  # each worker walks the keys in its own order, so they collide midway
print("ready", flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(go):  # start together, so the lockers really race
    if time.monotonic() > deadline:
        sys.exit("never got the go signal")
    time.sleep(0.002)
got = []
for start in range(0, len(keys), 3):
    got += sorted(store.lock_records(keys[start : start + 3], token, 60.0))
    time.sleep(0.002)  # pace the walk so all four are still going when they meet
store.close()
print(json.dumps(got))
"""
LOCKERS = 4
KEYS = [f"hubspot:account:{i}" for i in range(100)]


def test_given_four_processes_locking_the_same_keys_then_each_key_goes_to_exactly_one(
    store, store_url, tmp_path: Path
):
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOCKER, store_url, f"w{i}", str(go), json.dumps(KEYS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(LOCKERS)
    ]
    # Go only once every worker has imported and connected (redis-py is slow to import), so
    # all four are walking the keys at the same time.
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.communicate(timeout=90)[1]
    go.touch()
    held: dict[str, list[str]] = {}
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        held[f"w{i}"] = json.loads(out)

    acquired = [key for keys in held.values() for key in keys]
    assert sorted(acquired) == sorted(KEYS)  # every key taken, none by two workers
    # And the store agrees: each worker still holds exactly what it was granted.
    for token, keys in held.items():
        assert store.lock_records(KEYS, token, TTL) == set(keys)


# --- failed writes -------------------------------------------------------------------------


def test_given_no_failures_then_the_list_is_empty(store):
    assert store.failed("hubspot", "account") == []


def test_given_failures_added_over_time_then_they_come_back_oldest_first(store):
    store.add_failed("hubspot", "account", ["r3"])
    time.sleep(0.01)
    store.add_failed("hubspot", "account", ["r1"])
    time.sleep(0.01)
    store.add_failed("hubspot", "account", ["r2"])

    assert store.failed("hubspot", "account") == ["r3", "r1", "r2"]


def test_given_a_known_failure_when_added_again_then_it_keeps_its_first_place(store):
    store.add_failed("hubspot", "account", ["r1", "r2"])
    time.sleep(0.01)

    store.add_failed("hubspot", "account", ["r3", "r1", "r1"])
    store.add_failed("hubspot", "account", [])

    assert store.failed("hubspot", "account") == ["r1", "r2", "r3"]


def test_given_failures_when_some_are_removed_then_the_rest_keep_their_order(store):
    store.add_failed("hubspot", "account", ["r1"])
    time.sleep(0.01)
    store.add_failed("hubspot", "account", ["r2"])
    time.sleep(0.01)
    store.add_failed("hubspot", "account", ["r3"])

    store.remove_failed("hubspot", "account", ["r2", "never-failed"])
    store.remove_failed("hubspot", "account", [])

    assert store.failed("hubspot", "account") == ["r1", "r3"]


def test_given_a_removed_failure_when_it_fails_again_then_it_goes_to_the_back(store):
    store.add_failed("hubspot", "account", ["r1"])
    time.sleep(0.01)
    store.add_failed("hubspot", "account", ["r2"])
    store.remove_failed("hubspot", "account", ["r1"])
    time.sleep(0.01)

    store.add_failed("hubspot", "account", ["r1"])

    assert store.failed("hubspot", "account") == ["r2", "r1"]


def test_given_failures_in_several_crms_and_objects_then_each_list_is_separate(store):
    store.add_failed("hubspot", "account", ["a1"])
    store.add_failed("hubspot", "lead", ["l1"])
    store.add_failed("salesforce", "account", ["s1"])

    store.remove_failed("hubspot", "lead", ["a1", "s1"])  # not in this list: no effect elsewhere

    assert store.failed("hubspot", "account") == ["a1"]
    assert store.failed("hubspot", "lead") == ["l1"]
    assert store.failed("salesforce", "account") == ["s1"]
    assert store.failed("salesforce", "lead") == []


def test_given_failures_when_the_store_is_reopened_then_they_are_still_queued(store, store_url):
    store.add_failed("hubspot", "account", ["r1"])
    time.sleep(0.01)
    store.add_failed("hubspot", "account", ["r2"])
    store.close()

    reopened = open_store(store_url)
    try:
        assert reopened.failed("hubspot", "account") == ["r1", "r2"]
    finally:
        reopened.close()
