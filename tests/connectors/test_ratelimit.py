"""Token buckets: LocalBucket on a fake clock; RedisBucket shared by processes on a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from connectors.ratelimit import KEY_PREFIX, RedisBucket, bucket_for
from connectors.settings import Settings
from connectors.transport import LocalBucket

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """Time that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def local(rate: float, per: float = 1.0) -> tuple[LocalBucket, FakeClock]:
    clock = FakeClock()
    return LocalBucket(rate, per, clock=clock, sleep=clock.sleep), clock


# --- LocalBucket --------------------------------------------------------------------------------


def test_given_a_full_local_bucket_when_draining_then_the_burst_is_free_and_the_rest_paced(
) -> None:
    bucket, clock = local(10)

    for _ in range(12):
        bucket.acquire()

    assert clock.sleeps == [pytest.approx(0.1), pytest.approx(0.1)]
    assert clock.now == pytest.approx(1000.2)


def test_given_a_rate_per_ten_seconds_then_the_fill_rate_is_per_second() -> None:
    bucket, clock = local(90, per=10)
    for _ in range(90):
        bucket.acquire()
    bucket.acquire()
    assert clock.sleeps == [pytest.approx(10 / 90)]


def test_given_an_idle_bucket_when_paused_then_callers_wait_the_whole_pause() -> None:
    bucket, clock = local(10)
    clock.now += 60  # idle: the refill up to now must not be credited against the pause

    bucket.pause(5)
    bucket.acquire()

    assert sum(clock.sleeps) == pytest.approx(5.1)


def test_given_two_pauses_for_one_window_then_they_do_not_stack() -> None:
    bucket, clock = local(10)

    bucket.pause(5)
    bucket.pause(5)
    bucket.acquire()

    assert sum(clock.sleeps) == pytest.approx(5.1)


def test_given_a_cost_above_capacity_then_acquire_refuses_instead_of_waiting_forever() -> None:
    bucket, _ = local(10)
    with pytest.raises(ValueError, match="capacity"):
        bucket.acquire(11)


# --- RedisBucket -----------------------------------------------------------------------------


def test_given_a_redis_bucket_when_draining_then_the_burst_is_free_and_the_rest_paced(
    redis_url: str,
) -> None:
    bucket = RedisBucket(redis_url, "t:pace", rate=20, per=1.0)
    start = bucket.clock()

    for _ in range(20):
        bucket.acquire()
    burst_done = bucket.last_grant
    for _ in range(4):
        bucket.acquire()

    assert burst_done is not None and burst_done - start < 0.1
    assert bucket.last_grant is not None
    assert bucket.last_grant - start == pytest.approx(0.2, abs=0.06)
    bucket.close()


def test_given_a_pause_in_one_process_then_another_bucket_on_the_key_waits_it_out(
    redis_url: str,
) -> None:
    first = RedisBucket(redis_url, "t:pause", rate=10, per=1.0)
    second = RedisBucket(redis_url, "t:pause", rate=10, per=1.0)
    start = first.clock()

    first.pause(0.3)
    first.pause(0.3)  # the same spent window reported twice: waited once
    second.acquire()

    assert second.last_grant is not None
    assert second.last_grant - start == pytest.approx(0.4, abs=0.06)  # pause, then 1 token
    first.close()
    second.close()


def test_given_a_bucket_then_its_key_expires_once_it_would_be_full_again(redis_url: str) -> None:
    bucket = RedisBucket(redis_url, "t:ttl", rate=10, per=1.0)
    bucket.acquire()
    client = redis.Redis.from_url(redis_url)
    ttl_ms = client.pttl("t:ttl")
    client.close()
    assert 60_000 < ttl_ms <= 61_000
    bucket.close()


def test_given_a_url_with_a_password_then_the_bucket_repr_hides_it() -> None:
    bucket = RedisBucket("redis://:s3cret@127.0.0.1:1/0", "t:repr", rate=10)
    assert "s3cret" not in repr(bucket)
    bucket.close()


_WORKER = textwrap.dedent("""
    import json, sys
    from connectors.ratelimit import RedisBucket
    bucket = RedisBucket(sys.argv[1], sys.argv[2], rate=10, per=1.0)
    grants = []
    for _ in range(int(sys.argv[3])):
        bucket.acquire()
        grants.append(bucket.last_grant)
    print(json.dumps(grants))
""")


def test_given_two_processes_sharing_a_10_per_second_bucket_then_together_they_keep_to_it(
    redis_url: str,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, redis_url, "t:shared", "12"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=20)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]

    grants = sorted(t for out in outputs for t in json.loads(out))

    # Grant times are the Redis server's own clock, which both processes shared. A bucket of
    # 10 per second starting full allows at most 10 + 10 * t calls in any span of t seconds.
    assert len(grants) == 24
    for i in range(len(grants)):
        for j in range(i, len(grants)):
            assert j - i + 1 <= 10 + 10 * (grants[j] - grants[i]) + 1e-3, (i, j)
    assert grants[-1] - grants[0] >= 1.4 - 1e-3  # 14 calls past the burst: 1.4 s


# --- choosing a bucket -----------------------------------------------------------------------


def test_given_a_redis_url_then_bucket_for_shares_the_budget_through_redis(
    redis_url: str,
) -> None:
    bucket = bucket_for(Settings(redis_url=redis_url), "hubspot", "acct:burst", 90, 10)
    try:
        assert isinstance(bucket, RedisBucket)
        assert bucket.key == f"{KEY_PREFIX}hubspot:acct:burst"
        assert bucket.fill == pytest.approx(9.0) and bucket.capacity == 90
    finally:
        bucket.close()


def test_given_no_redis_url_then_bucket_for_is_in_process() -> None:
    bucket = bucket_for(Settings(redis_url=None), "hubspot", "acct:burst", 90, 10)
    assert isinstance(bucket, LocalBucket)
    assert bucket.fill == pytest.approx(9.0) and bucket.capacity == 90


def test_given_a_redis_bucket_then_grants_use_the_servers_clock(redis_url: str) -> None:
    bucket = RedisBucket(redis_url, "t:clock", rate=10)
    before = bucket.clock()
    bucket.acquire()
    assert bucket.last_grant is not None
    assert before <= bucket.last_grant <= bucket.clock()
    assert abs(bucket.last_grant - time.time()) < 5  # the same machine here
    bucket.close()
