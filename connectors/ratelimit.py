"""Rate limits shared by every worker: a Redis token bucket (Lua, Redis clock) per CRM portal."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import redis

from config.urls import redact_url
from connectors.transport import LocalBucket

if TYPE_CHECKING:  # only the type: worker processes need not load pydantic for a bucket
    from config.settings import Settings

KEY_PREFIX = "ar:ratelimit:"

# One script = one atomic step, so concurrent workers never both spend the last token. Time
# comes from the Redis server's TIME, not the callers' clocks, so every process agrees on how
# much has refilled (Redis 5+ replicates script effects, which allows TIME before writes).
# ARGV: rate (tokens per second), capacity, cost, pause seconds (> 0: a pause, not a take).
# Returns {seconds to wait before trying again (0: granted), server time in microseconds}.
_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local pause = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens = capacity
  stamp = now
end
if now > stamp then
  tokens = math.min(capacity, tokens + (now - stamp) / 1000000 * rate)
  stamp = now
end
local wait = 0
if pause > 0 then
  tokens = math.min(tokens, -pause * rate)
elseif tokens >= cost - 1e-9 then  -- float refill may land a hair short
  tokens = tokens - cost
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'stamp', string.format('%.0f', stamp))
-- Kept until it would be full again (then it is the same as absent), plus a margin.
local refill_ms = math.ceil((capacity - tokens) / rate * 1000) + 60000
redis.call('PEXPIRE', KEYS[1], refill_ms)
return {string.format('%.6f', wait), string.format('%.0f', now)}
"""


class Bucket(Protocol):
    """What connectors need from a rate limit: take tokens, and hold everyone on a 429."""

    def acquire(self, cost: int = 1) -> None: ...

    def pause(self, seconds: float) -> None: ...


class RedisBucket:
    """A token bucket in Redis shared by every process: `rate` calls per `per` seconds.

    Same behaviour as `LocalBucket`: starts full (`burst`, default `rate`), `acquire` blocks
    until the tokens are there, `pause` holds every caller (in every process) for `seconds`
    and does not stack: two workers pausing for the same window wait it out once.
    """

    def __init__(self, url_or_client: str | redis.Redis, key: str, rate: float,
                 per: float = 1.0, burst: float | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0 or per <= 0:
            raise ValueError("rate and per must be positive")
        self.key = key
        self.fill = rate / per
        self.capacity = float(burst if burst is not None else rate)
        self._sleep = sleep
        self._owned = isinstance(url_or_client, str)
        if isinstance(url_or_client, str):
            # Only a redacted URL is kept for display: it may carry a password.
            self._display = redact_url(url_or_client)
            self._r: redis.Redis = redis.Redis.from_url(url_or_client)
        else:
            self._display = "client"
            self._r = url_or_client
        self._script = self._r.register_script(_BUCKET_LUA)
        self.last_grant: float | None = None  # Redis time (s) of this instance's last grant

    def __repr__(self) -> str:
        return (f"RedisBucket({self._display!r}, key={self.key!r}, "
                f"rate={self.fill:g}/s, burst={self.capacity:g})")

    def _run(self, cost: float, pause: float) -> tuple[float, float]:
        if cost > self.capacity:
            raise ValueError(f"cost {cost} exceeds the bucket's capacity {self.capacity:g}")
        wait, now = self._script(keys=[self.key], args=[repr(self.fill), repr(self.capacity),
                                                         repr(float(cost)), repr(float(pause))])
        return float(wait), int(now) / 1_000_000

    def acquire(self, cost: int = 1) -> None:
        """Block until `cost` tokens are taken from the shared bucket."""
        while True:
            wait, now = self._run(cost, 0.0)
            if wait <= 0:
                self.last_grant = now
                return
            # Sleep what the bucket says, then ask again: a pause set meanwhile by another
            # worker (it saw a 429) must hold this caller too.
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """The vendor says the window is spent: hold every caller for `seconds`."""
        if seconds > 0:
            self._run(0, seconds)

    def clock(self) -> float:
        """The Redis server's time in seconds: the clock the bucket itself runs on."""
        sec, usec = self._r.time()
        return sec + usec / 1_000_000

    def reset(self) -> None:
        self._r.delete(self.key)

    def close(self) -> None:
        if self._owned:
            self._r.close()


def bucket_for(settings: Settings, crm: str, key: str, rate: float,
               per: float = 1.0) -> RedisBucket | LocalBucket:
    """The bucket for one CRM account and limit: shared through Redis when
    `ACCOUNT_ROUTER_REDIS_URL` is set (every worker spends one budget), else in-process."""
    if settings.redis_url:
        return RedisBucket(settings.redis_url, f"{KEY_PREFIX}{crm}:{key}", rate, per)
    return LocalBucket(rate, per)


class LocalWindow:
    """At most `limit` calls in any rolling `window` seconds, in this process.

    HubSpot's burst limit is a rolling window (policy TEN_SECONDLY_ROLLING), not a refilling
    bucket: a bucket that starts full and refills at limit/window can spend nearly twice the
    limit in the first window and meet 429s, while one sized to be safe idles below the limit.
    A log of recent calls spends exactly the limit. `guard` keeps a hair of slack for the
    latency between our clock and the vendor's.
    """

    def __init__(self, limit: int, window: float, *, guard: float = 0.05,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be at least 1 and window positive")
        self.limit = int(limit)
        self.window = window
        self.guard = guard
        self._clock = clock
        self._sleep = sleep
        self._calls: deque[float] = deque()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self, cost: int = 1) -> None:
        if cost > self.limit:
            raise ValueError(f"cost {cost} exceeds the window's limit {self.limit}")
        while True:
            with self._lock:
                now = self._clock()
                while self._calls and self._calls[0] <= now - self.window:
                    self._calls.popleft()
                if self._paused_until > now:
                    wait = self._paused_until - now
                elif len(self._calls) + cost <= self.limit:
                    self._calls.extend([now] * cost)
                    return
                else:
                    # The call that frees the slot we need leaves the window at this time.
                    oldest = self._calls[len(self._calls) + cost - self.limit - 1]
                    wait = oldest + self.window + self.guard - now
            self._sleep(max(wait, 0.001))

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)


# A rolling-window log in a sorted set, scored by Redis time (µs); one script per call, so
# concurrent workers never both take the last slot. ARGV: limit, window µs, cost, pause µs,
# guard µs, a unique member prefix. Returns seconds to wait (0: granted).
_WINDOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local pause = tonumber(ARGV[4])
local guard = tonumber(ARGV[5])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > 0 then
  if now + pause > paused then
    redis.call('SET', KEYS[2], string.format('%.0f', now + pause), 'PX',
               math.ceil(pause / 1000) + 1000)
  end
  return '0'
end
if paused > now then return string.format('%.6f', (paused - now) / 1000000) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n + cost <= limit then
  for i = 1, cost do
    redis.call('ZADD', KEYS[1], now, ARGV[6] .. ':' .. now .. ':' .. i)
  end
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return '0'
end
local entry = redis.call('ZRANGE', KEYS[1], n + cost - limit - 1, n + cost - limit - 1,
                         'WITHSCORES')
local wait = tonumber(entry[2]) + window + guard - now
if wait < 1000 then wait = 1000 end
return string.format('%.6f', wait / 1000000)
"""


class RedisWindow:
    """`LocalWindow` shared by every process through Redis, on the Redis server's clock."""

    def __init__(self, url_or_client: str | redis.Redis, key: str, limit: int, window: float,
                 *, guard: float = 0.05, sleep: Callable[[float], None] = time.sleep) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be at least 1 and window positive")
        self.key = key
        self.limit = int(limit)
        self.window = window
        self.guard = guard
        self._sleep = sleep
        self._owned = isinstance(url_or_client, str)
        self._r: redis.Redis = (redis.Redis.from_url(url_or_client)
                                if isinstance(url_or_client, str) else url_or_client)
        self._script = self._r.register_script(_WINDOW_LUA)
        self._member = uuid.uuid4().hex[:12]

    def __repr__(self) -> str:
        return f"RedisWindow(key={self.key!r}, limit={self.limit}, window={self.window:g}s)"

    def _run(self, cost: int, pause: float) -> float:
        wait = self._script(keys=[self.key, self.key + ":paused"], args=[
            self.limit, int(self.window * 1e6), cost, int(pause * 1e6), int(self.guard * 1e6),
            self._member])
        return float(wait)

    def acquire(self, cost: int = 1) -> None:
        if cost > self.limit:
            raise ValueError(f"cost {cost} exceeds the window's limit {self.limit}")
        while True:
            wait = self._run(cost, 0.0)
            if wait <= 0:
                return
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        if seconds > 0:
            self._run(0, seconds)

    def close(self) -> None:
        if self._owned:
            self._r.close()


def window_for(settings: Settings, crm: str, key: str, limit: float,
               window: float) -> RedisWindow | LocalWindow:
    """A rolling-window limit for one CRM account: in Redis when `ACCOUNT_ROUTER_REDIS_URL` is
    set (every worker shares it), else in-process."""
    if settings.redis_url:
        return RedisWindow(settings.redis_url, f"{KEY_PREFIX}{crm}:{key}", int(limit), window)
    return LocalWindow(int(limit), window)
