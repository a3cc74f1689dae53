"""Distributed state store on Redis: an atomic Lua compare-and-set for pools, an indexed audit."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis

from config.urls import redact_url
from sync.models import Decision
from sync.state import OUTCOMES_WITH_LOAD, as_utc, check_limit, load_sort_key, merge_changes
from sync.state.base import ClosesOnExit, LoadRow, PoolChange, PoolSnapshot

# Windows are day/week/month; 100 days outlives the longest one with room for reports, and the
# TTL is refreshed on every increment, so no sweeper is needed for old windows.
COUNT_TTL_SECONDS = 100 * 24 * 3600
# A commit's "already applied" mark only has to outlive redis-py's re-send of the same script
# (seconds); an hour is ample and keeps one small key per commit from piling up.
COMMIT_MARK_TTL_SECONDS = 3600

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CHUNK = 1000  # ids per HMGET: bounded round trips without one giant reply

# One server-side script = one atomic step: no other client runs between the version checks and
# the writes, so two workers can never both commit from the same pool version (no turn handed
# out twice), and a failed check leaves everything untouched. Every key it touches is passed in
# KEYS (the payload refers to them by index), as Redis requires for scripts.
_COMMIT_LUA = """
local p = cjson.decode(ARGV[1])
-- A commit id already applied: this is redis-py re-sending the script after the connection
-- dropped before its answer arrived (a Redis restart); applying it again would duplicate the
-- audit rows and turns. What it answered the first time is what it answers now.
local done = redis.call('GET', KEYS[4])
if done then return tonumber(done) end
for _, c in ipairs(p.checks) do
  local v = tonumber(redis.call('HGET', KEYS[c[1]], 'version') or '0')
  if v ~= c[2] then
    redis.call('SET', KEYS[4], 0, 'EX', p.done_ttl)
    return 0
  end
end
for _, ch in ipairs(p.changes) do
  local k = KEYS[ch[1]]
  redis.call('HINCRBY', k, 'version', 1)
  if ch[2] == cjson.null then
    redis.call('HDEL', k, 'last_served')
  else
    redis.call('HSET', k, 'last_served', ch[2])
  end
  if ch[3] ~= cjson.null then
    redis.call('HSET', k, 'credits', ch[3])
  end
  for _, inc in ipairs(ch[4]) do
    redis.call('HINCRBY', KEYS[inc[1]], inc[2], inc[3])
    redis.call('EXPIRE', KEYS[inc[1]], p.ttl)
  end
end
local n = #p.decisions
if n > 0 then
  local last = redis.call('INCRBY', KEYS[1], n)
  for i, d in ipairs(p.decisions) do
    local id = string.format('%016d', last - n + i)
    redis.call('HSET', KEYS[2], id, d[1])
    redis.call('ZADD', KEYS[3], d[2], id)
    redis.call('ZADD', KEYS[d[3]], d[2], id)
    if d[4] > 0 then redis.call('ZADD', KEYS[d[4]], d[2], id) end
  end
end
redis.call('SET', KEYS[4], 1, 'EX', p.done_ttl)
return 1
"""

# `seen` as a compare-and-set on a caller's token: the mark is taken by SET NX, and a re-sent
# request (redis-py retries after a dropped connection) finds its own token there, so it is not
# mistaken for another delivery of the same event, which would route nothing.
_SEEN_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
return 1
"""

# Compare-and-act on one record lock, so only its holder can touch it: between a client's GET
# and its DEL/PEXPIRE the lock could expire and be taken by another token, whose lock would then
# be released (or kept alive) by the wrong worker.
_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_REFRESH_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def _score(value: datetime | None, what: str) -> str:
    """Integer microseconds since the epoch: exact in a zset's double up to year 2255. Undated
    decisions get -inf, so newest-first puts them last and any time range leaves them out."""
    if value is None:
        return "-inf"
    return str((as_utc(value, what) - _EPOCH) // timedelta(microseconds=1))


def _iso(value: datetime) -> str:
    return as_utc(value, "until").isoformat()


class RedisStateStore(ClosesOnExit):
    """`StateStore` on Redis; any number of worker processes may share one server.

    Key layout (all under `prefix`):
      pool:{pool}              hash  version, last_served, credits (JSON)
      count:{pool}:{window}    hash  member -> assignments in that window (TTL ~100 days)
      pauses                   hash  rep -> until (UTC ISO) or "" (until resumed)
      audit:seq                str   last decision id
      audit:body               hash  id -> decision JSON (`Decision.to_dict`)
      audit:time               zset  id scored by decided_at (µs since epoch; -inf if undated)
      audit:record:{record_id} zset  same, per record
      audit:rep:{owner}        zset  same, per owner
      checkpoints              hash  name -> value (opaque text, e.g. JSON)
      lock:{key}               str   token of the worker holding that record (PX = lock TTL)
      failed:{crm}:{object}    zset  record id scored by first failure (time.time() seconds)
      seen:{key}               str   "1" while a dedupe mark lives (PX = its TTL)
    Ids are zero-padded, so equal scores order by id: newest first is exact, ties included.
    Record locks expire on the server's clock and are taken per key: each key is granted to
    one token at a time, but one call may get some of its keys and not others.
    """

    def __init__(self, url: str, prefix: str = "ar:") -> None:
        # Only a redacted form is kept for display: the URL may carry a password
        # (docs/operations.md#logs: secrets are never logged, and reprs end up in logs).
        self.display_url = redact_url(url)
        self.prefix = prefix
        # redis-py's pool re-creates connections after fork(), so a store opened before Celery
        # forks its workers stays usable in each child.
        self._r: redis.Redis = redis.Redis.from_url(url, decode_responses=True)
        self._commit_script = self._r.register_script(_COMMIT_LUA)
        self._unlock_script = self._r.register_script(_UNLOCK_LUA)
        self._refresh_script = self._r.register_script(_REFRESH_LUA)
        self._seen_script = self._r.register_script(_SEEN_LUA)

    # --- keys -------------------------------------------------------------------------------

    def _pool_key(self, pool: str) -> str:
        return f"{self.prefix}pool:{pool}"

    def _count_key(self, pool: str, window: str) -> str:
        return f"{self.prefix}count:{pool}:{window}"

    @property
    def _pauses_key(self) -> str:
        return f"{self.prefix}pauses"

    def _audit_key(self, part: str) -> str:
        return f"{self.prefix}audit:{part}"

    @property
    def _checkpoints_key(self) -> str:
        return f"{self.prefix}checkpoints"

    def _lock_key(self, key: str) -> str:
        return f"{self.prefix}lock:{key}"

    def _failed_key(self, crm: str, object: str) -> str:
        return f"{self.prefix}failed:{crm}:{object}"

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self._r.close()

    def __repr__(self) -> str:
        return f"RedisStateStore({self.display_url!r}, prefix={self.prefix!r})"

    # --- pools ------------------------------------------------------------------------------

    def load_pools(self, windows: Mapping[str, Mapping[str, str]]) -> dict[str, PoolSnapshot]:
        # MULTI/EXEC around the reads: one consistent view of versions and counts.
        pipe = self._r.pipeline(transaction=True)
        order: list[tuple[str, list[str] | None]] = []  # (pool, None) = the pool hash itself
        for pool, members in windows.items():
            pipe.hmget(self._pool_key(pool), ["version", "last_served", "credits"])
            order.append((pool, None))
            by_window: dict[str, list[str]] = {}
            for member, window in members.items():
                by_window.setdefault(window, []).append(member)
            for window, in_window in by_window.items():
                pipe.hmget(self._count_key(pool, window), in_window)
                order.append((pool, in_window))
        replies = pipe.execute() if order else []
        result: dict[str, PoolSnapshot] = {}
        for (pool, names), reply in zip(order, replies, strict=True):
            if names is None:
                version, last_served, credits = reply
                result[pool] = PoolSnapshot(
                    pool=pool,
                    version=int(version or 0),
                    last_served=last_served,
                    credits={str(k): float(v) for k, v in json.loads(credits or "{}").items()},
                    counts={m: 0 for m in windows[pool]},
                )
            else:
                for member, count in zip(names, reply, strict=True):
                    result[pool].counts[member] = int(count or 0)
        return result

    def commit(
        self,
        expected: Mapping[str, int],
        changes: Sequence[PoolChange],
        decisions: Sequence[Decision],
        *,
        commit_id: str | None = None,
    ) -> bool:
        # `commit_id` (one per call unless a test gives it) makes the script idempotent.
        keys: list[str] = []
        slots: dict[str, int] = {}

        def key(name: str) -> int:
            # 1-based index into KEYS, each key passed once.
            if name not in slots:
                keys.append(name)
                slots[name] = len(keys)
            return slots[name]

        key(self._audit_key("seq"))
        key(self._audit_key("body"))
        key(self._audit_key("time"))
        key(f"{self.prefix}commit:{commit_id or uuid.uuid4().hex}")
        payload: dict[str, Any] = {
            "ttl": COUNT_TTL_SECONDS,
            "done_ttl": COMMIT_MARK_TTL_SECONDS,
            "checks": [[key(self._pool_key(p)), int(v)] for p, v in expected.items()],
            "changes": [
                [
                    key(self._pool_key(m.pool)),
                    m.last_served,
                    None if m.credits is None else json.dumps(m.credits),
                    [
                        [key(self._count_key(m.pool, window)), member, n]
                        for (member, window), n in m.increments.items()
                    ],
                ]
                for m in merge_changes(changes)
            ],
            "decisions": [
                [
                    json.dumps(d.to_dict(), separators=(",", ":"), ensure_ascii=False),
                    _score(d.decided_at, "decided_at"),
                    key(self._audit_key(f"record:{d.record_id}")),
                    0 if d.owner is None else key(self._audit_key(f"rep:{d.owner}")),
                ]
                for d in decisions
            ],
        }
        return bool(self._commit_script(keys=keys, args=[json.dumps(payload)]))

    # --- pauses -----------------------------------------------------------------------------

    def pauses(self, now: datetime) -> dict[str, datetime | None]:
        # Expired entries are ignored, not deleted: `now` may be a replay instant (`--now`).
        now_utc = as_utc(now, "now")
        paused: dict[str, datetime | None] = {}
        stored = cast(dict[str, str], self._r.hgetall(self._pauses_key))  # see _strings
        for rep, until in sorted(stored.items()):
            if not until:
                paused[rep] = None
            elif (at := datetime.fromisoformat(until)) > now_utc:
                paused[rep] = at
        return paused

    def pause(self, rep: str, until: datetime | None = None) -> None:
        self._r.hset(self._pauses_key, rep, "" if until is None else _iso(until))

    def resume(self, rep: str) -> bool:
        # Judged by the wall clock, like the SQLite store: an expired pause is not a pause.
        pipe = self._r.pipeline(transaction=True)
        pipe.hget(self._pauses_key, rep)
        pipe.hdel(self._pauses_key, rep)
        until, _ = pipe.execute()
        if until is None:
            return False
        return until == "" or datetime.fromisoformat(until) > datetime.now(UTC)

    # --- audit ------------------------------------------------------------------------------

    def decisions(
        self,
        record_id: str | None = None,
        rep: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[Decision]:
        check_limit(limit)
        if limit == 0:
            return []
        # Read from the most selective index; only record+rep together needs a filter after.
        if record_id is not None:
            index = self._audit_key(f"record:{record_id}")
        elif rep is not None:
            index = self._audit_key(f"rep:{rep}")
        else:
            index = self._audit_key("time")
        residual = record_id is not None and rep is not None
        low, high = self._bounds(since, until)
        if limit is None or residual:
            ids = _strings(self._r.zrevrangebyscore(index, high, low))
        else:
            ids = _strings(self._r.zrevrangebyscore(index, high, low, start=0, num=limit))
        found: list[Decision] = []
        for body in self._bodies(ids):
            d = Decision.from_dict(json.loads(body))
            if residual and d.owner != rep:
                continue
            found.append(d)
            if limit is not None and len(found) >= limit:
                break
        return found

    def load(self, since: datetime | None = None, until: datetime | None = None) -> list[LoadRow]:
        # A scan of the time range: exact and simple; per-window counters can come later if
        # `stats` over a long trail gets slow.
        low, high = self._bounds(since, until)
        tally: Counter[tuple[str, str | None, str]] = Counter()
        timed = _strings(self._r.zrangebyscore(self._audit_key("time"), low, high))
        for body in self._bodies(timed):
            d = json.loads(body)
            if d.get("owner") is not None and d.get("outcome") in OUTCOMES_WITH_LOAD:
                tally[(d["owner"], d.get("pool"), d["outcome"])] += 1
        rows = [LoadRow(rep=r, pool=p, outcome=o, count=n) for (r, p, o), n in tally.items()]
        return sorted(rows, key=load_sort_key)

    # --- pipeline bookkeeping ---------------------------------------------------------------

    def get_checkpoint(self, name: str) -> str | None:
        return cast(str | None, self._r.hget(self._checkpoints_key, name))  # see _strings

    def set_checkpoint(self, name: str, value: str | None) -> None:
        # Acknowledged writes are as durable as the server's persistence settings (AOF/RDB);
        # losing the last one only means re-sweeping from the previous checkpoint.
        if value is None:
            self._r.hdel(self._checkpoints_key, name)
        else:
            self._r.hset(self._checkpoints_key, name, value)

    def lock_records(self, keys: Sequence[str], token: str, ttl_seconds: float) -> set[str]:
        _check_ttl(ttl_seconds)
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        # Rounded up: a lock never lapses sooner than the caller asked.
        ttl_ms = max(1, math.ceil(ttl_seconds * 1000))
        # SET NX PX is atomic per key, so a free (or expired: Redis has dropped it) key goes to
        # exactly one token. Not MULTI: each key stands alone and one round trip suffices.
        pipe = self._r.pipeline(transaction=False)
        for key in wanted:
            pipe.set(self._lock_key(key), token, nx=True, px=ttl_ms)
        taken = pipe.execute()
        held = {key for key, ok in zip(wanted, taken, strict=True) if ok}
        busy = [key for key, ok in zip(wanted, taken, strict=True) if not ok]
        if busy:
            # Some may already be ours (a re-lock): refresh those, compare-and-set on the server.
            pipe = self._r.pipeline(transaction=False)
            for key in busy:
                self._refresh_script(keys=[self._lock_key(key)], args=[token, ttl_ms], client=pipe)
            held.update(key for key, ok in zip(busy, pipe.execute(), strict=True) if ok)
        return held

    def unlock_records(self, keys: Sequence[str], token: str) -> None:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return
        pipe = self._r.pipeline(transaction=False)
        for key in wanted:
            self._unlock_script(keys=[self._lock_key(key)], args=[token], client=pipe)
        pipe.execute()

    def add_failed(self, crm: str, object: str, ids: Sequence[str]) -> None:
        # NX keeps a known id's first failure time, so it keeps its place at the head of the
        # queue; ids added in one call share a score and order by id (SQLite does the same).
        if ids:
            now = time.time()
            self._r.zadd(self._failed_key(crm, object), dict.fromkeys(ids, now), nx=True)

    def failed(self, crm: str, object: str) -> list[str]:
        return _strings(self._r.zrange(self._failed_key(crm, object), 0, -1))

    def remove_failed(self, crm: str, object: str, ids: Sequence[str]) -> None:
        if ids:
            self._r.zrem(self._failed_key(crm, object), *ids)

    def seen(self, key: str, ttl_seconds: float) -> bool:
        _check_ttl(ttl_seconds)
        # SET NX PX is atomic: exactly one caller marks a live key; rounded up like the locks.
        ttl_ms = max(1, math.ceil(ttl_seconds * 1000))
        return self._seen_as(key, ttl_ms, uuid.uuid4().hex)

    def _seen_as(self, key: str, ttl_ms: int, token: str) -> bool:
        return bool(self._seen_script(keys=[f"{self.prefix}seen:{key}"], args=[token, ttl_ms]))

    def forget(self, key: str) -> None:
        self._r.delete(f"{self.prefix}seen:{key}")

    def _bounds(self, since: datetime | None, until: datetime | None) -> tuple[str, str]:
        """Score range for decided_at in [since, until); `(-inf` keeps undated (-inf) entries
        out of any range that has a bound, matching SQL where NULL never compares true."""
        if since is not None:
            low = _score(since, "since")
        elif until is not None:
            low = "(-inf"
        else:
            low = "-inf"
        high = "+inf" if until is None else "(" + _score(until, "until")
        return low, high

    def _bodies(self, ids: Sequence[str]) -> Iterable[str]:
        body_key = self._audit_key("body")
        for start in range(0, len(ids), _CHUNK):
            chunk = list(ids[start : start + _CHUNK])
            bodies = cast(list[str | None], self._r.hmget(body_key, chunk))  # see _strings
            for body in bodies:
                if body is not None:  # written in the same script as the index; never missing
                    yield body


def _strings(reply: object) -> list[str]:
    """A list reply as the strings it is: the client decodes (`decode_responses=True`), but
    redis-py types every reply for both modes (bytes or str, with or without scores)."""
    return cast(list[str], reply)


def _check_ttl(ttl_seconds: float) -> None:
    """A lock must expire, and after a positive time: 0 or negative would never be held."""
    if not 0 < ttl_seconds < math.inf:
        raise ValueError(f"ttl_seconds must be a positive finite number, got {ttl_seconds!r}")
