"""`StateStore.seen`: mark-once dedupe keys with a TTL, on both backends."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sync.state import StateStore, open_store


def test_given_a_new_key_when_seen_then_false_and_the_second_call_true(store: StateStore) -> None:
    assert store.seen("hubspot:1:100", 60) is False
    assert store.seen("hubspot:1:100", 60) is True
    assert store.seen("hubspot:2:100", 60) is False


def test_given_a_mark_when_its_ttl_has_passed_then_the_key_is_new_again(
    store: StateStore,
) -> None:
    assert store.seen("short", 0.05) is False
    time.sleep(0.15)
    assert store.seen("short", 60) is False
    assert store.seen("short", 60) is True


def test_given_two_instances_when_both_mark_a_key_then_exactly_one_sees_it_new(
    store_url: str,
) -> None:
    stores = [open_store(store_url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda s: s.seen("race", 60), stores))
    finally:
        for s in stores:
            s.close()
    assert sorted(results) == [False, True, True, True]


@pytest.mark.parametrize("ttl", [0, -1, float("inf")])
def test_given_a_ttl_that_never_holds_when_seen_then_value_error(
    store: StateStore, ttl: float
) -> None:
    with pytest.raises(ValueError):
        store.seen("k", ttl)


def test_given_a_mark_when_forgotten_then_the_key_is_new_again(store):
    assert store.seen("webhook:e1", 60) is False
    store.forget("webhook:e1")
    assert store.seen("webhook:e1", 60) is False
    assert store.seen("webhook:e1", 60) is True
