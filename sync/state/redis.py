"""Distributed state store on Redis: an atomic Lua compare-and-set for pools, an indexed audit."""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import redis

from config.urls import redact_url
from sync.history import codec
from sync.models import REVIEW_OPEN, Decision, HistoryEvent, ReviewItem
from sync.state import as_utc, check_limit, merge_changes
from sync.state.base import (
    CLOSED_REVIEW_DAYS,
    ClosesOnExit,
    OwnerMark,
    PoolChange,
    PoolSnapshot,
    Precreated,
    WatchEntry,
)

# Windows are day/week/month; 100 days outlives the longest one with room for reports, and the
# TTL is refreshed on every increment, so no sweeper is needed for old windows.
COUNT_TTL_SECONDS = 100 * 24 * 3600
# A commit's "already applied" mark only has to outlive redis-py's re-send of the same script
# (seconds); an hour is ample and keeps one small key per commit from piling up.
COMMIT_MARK_TTL_SECONDS = 3600

_CHUNK = 1000  # keys per UNLINK: bounded round trips without one giant command

log = logging.getLogger("account_router.history")

# The history outbox's lists, under the store's prefix (also read by /metrics, tasks/metrics.py).
OUTBOX_KEY = "history:outbox"
EVENTS_KEY = "history:events"
DEAD_KEY = "history:dead"

# One server-side script = one atomic step: no other client runs between the version checks and
# the writes, so two workers can never both commit from the same pool version (no turn handed
# out twice), and a failed check leaves everything untouched. Every key it touches is passed in
# KEYS (the payload refers to them by index), as Redis requires for scripts.
_COMMIT_LUA = """
local p = cjson.decode(ARGV[1])
-- A commit id already applied: this is redis-py re-sending the script after the connection
-- dropped before its answer arrived (a Redis restart); applying it again would duplicate the
-- outbox entries and turns. What it answered the first time is what it answers now.
local done = redis.call('GET', KEYS[3])
if done then return tonumber(done) end
for _, c in ipairs(p.checks) do
  local v = tonumber(redis.call('HGET', KEYS[c[1]], 'version') or '0')
  if v ~= c[2] then
    redis.call('SET', KEYS[3], 0, 'EX', p.done_ttl)
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
  -- Decision ids: max(last + 1, server time in microseconds). The clock keeps ids unique even
  -- after the keys are lost (a flushed or replaced Redis), since the history in SQL already
  -- holds the old ones; `last` keeps them rising when the clock steps back or within one
  -- microsecond. Built by concatenation: seconds and microseconds as one exact integer (Lua
  -- numbers are doubles, exact to 2^53, and µs since the epoch stay below it until year 2255).
  local t = redis.call('TIME')
  local now = tonumber(t[1] .. string.format('%06d', tonumber(t[2])))
  local first = math.max(tonumber(redis.call('GET', KEYS[1]) or '0') + 1, now)
  for i, body in ipairs(p.decisions) do
    redis.call('RPUSH', KEYS[2], string.format('%.0f', first + i - 1) .. ' ' .. body)
  end
  redis.call('SET', KEYS[1], string.format('%.0f', first + n - 1))
end
redis.call('SET', KEYS[3], 1, 'EX', p.done_ttl)
return 1
"""

# Remove exactly the acknowledged ids: each matching entry near the head (where the flusher
# reads) is overwritten with this call's tombstone, then the tombstones go in one LREM. Entries
# appended meanwhile at the tail are untouched; ids not found are simply not there any more.
_ACK_LUA = """
local want, left = {}, 0
for i = 2, #ARGV do
  if not want[ARGV[i]] then want[ARGV[i]] = true; left = left + 1 end
end
local tomb, start, found = ARGV[1], 0, 0
while left > 0 do
  local chunk = redis.call('LRANGE', KEYS[1], start, start + 999)
  if #chunk == 0 then break end
  for j, entry in ipairs(chunk) do
    local id = string.match(entry, '^(%d+) ')
    if id and want[id] then
      redis.call('LSET', KEYS[1], start + j - 1, tomb)
      want[id] = nil; left = left - 1; found = found + 1
      if left == 0 then break end
    end
  end
  start = start + #chunk
end
if found > 0 then redis.call('LREM', KEYS[1], 0, tomb) end
return found
"""

# One entry, found by its id near the head, moves to the dead list in one step (an entry the
# history database refuses to store, so that it does not block the queue behind it).
_BURY_ID_LUA = """
local start = 0
while true do
  local chunk = redis.call('LRANGE', KEYS[1], start, start + 999)
  if #chunk == 0 then return 0 end
  for j, entry in ipairs(chunk) do
    if string.match(entry, '^(%d+) ') == ARGV[1] then
      redis.call('LSET', KEYS[1], start + j - 1, ARGV[2])
      redis.call('LREM', KEYS[1], 1, ARGV[2])
      redis.call('RPUSH', KEYS[2], entry)
      return 1
    end
  end
  start = start + #chunk
end
"""

# A poison entry (one that cannot be decoded) leaves the queue for the dead list in one step,
# so it is neither lost nor read again; LREM by value takes that exact entry.
_BURY_LUA = """
local n = redis.call('LREM', KEYS[1], 1, ARGV[1])
if n > 0 then redis.call('RPUSH', KEYS[2], ARGV[1]) end
return n
"""

# `seen` as a compare-and-set on a caller's token: the mark is taken by SET NX, and a re-sent
# request (redis-py retries after a dropped connection) finds its own token there, so it is not
# mistaken for another delivery of the same event, which would route nothing.
_SEEN_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
return 1
"""

# Take the oldest live pre-created decision of one index (KEYS[2], a zset of ids scored by
# decided_at), else of the next (KEYS[3]); KEYS[1] is the hash of entries by id, KEYS[4] their
# wall-clock expiry. ARGV: the routing instant, the wall clock (both epoch seconds). One
# script, so of two callers each entry goes to one. Ids whose entry is gone (taken through its
# other index, or lapsed) are dropped from the index on the way.
_TAKE_PRECREATED_LUA = """
local now = tonumber(ARGV[1])
for i = 2, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local ids = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now)
    for _, id in ipairs(ids) do
      local body = redis.call('HGET', KEYS[1], id)
      if not body then
        redis.call('ZREM', KEYS[i], id)
      else
        local entry = cjson.decode(body)
        local kept_until = tonumber(redis.call('ZSCORE', KEYS[4], id) or '0')
        if tonumber(entry.expires_ts) > now and kept_until > tonumber(ARGV[2]) then
          redis.call('HDEL', KEYS[1], id)
          redis.call('ZREM', KEYS[4], id)
          redis.call('ZREM', KEYS[i], id)
          return body
        end
      end
    end
  end
end
return false
"""

# POST /route's first step: the answer under KEYS[1] if there is one, else the claim KEYS[2]
# marked as `seen` marks it (ARGV: token, ttl ms): {0, answer}, {1} claimed, {0} held elsewhere.
_CLAIM_ANSWER_LUA = """
local answer = redis.call('GET', KEYS[1])
if answer then return {0, answer} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1} end
return {0}
"""

# Keep one pre-created decision (KEYS as in the take) and drop the lapsed ones, in one round
# trip: ARGV = id, body, decided_at (index score), wall-clock now, ttl seconds, then 1/0 for
# whether the email and domain indexes apply.
_PUT_PRECREATED_LUA = """
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[4], 'LIMIT', 0, 100)
for _, id in ipairs(lapsed) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[4], id)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], tonumber(ARGV[4]) + tonumber(ARGV[5]), ARGV[1])
for i = 2, 3 do
  if ARGV[4 + i] == '1' then
    redis.call('ZADD', KEYS[i], ARGV[3], ARGV[1])
    redis.call('EXPIRE', KEYS[i], math.ceil(tonumber(ARGV[5])))
  end
end
return 1
"""

# POST /route's last step, in one round trip: the answer (KEYS[5] = ARGV[8] for ARGV[9] ms) and
# the decision kept for its record, as `_PUT_PRECREATED_LUA` keeps it (same KEYS and ARGV). A
# script called directly costs one EVALSHA; in a MULTI pipeline redis-py adds a SCRIPT EXISTS
# round trip on every execute.
_PUT_ANSWER_LUA = """
redis.call('SET', KEYS[5], ARGV[8], 'PX', ARGV[9])
""" + _PUT_PRECREATED_LUA

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


# Claim due SLA watch entries in one step: of two overlapping passes each entry goes to one. A
# claimed entry's score moves to the end of its lease, so it is due again only if the pass that
# took it neither ended nor replaced it by then (that pass died).
_CLAIM_LUA = """
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
for i, k in ipairs(keys) do
  redis.call('ZADD', KEYS[1], ARGV[2], k)
  local body = redis.call('HGET', KEYS[2], k)
  if body then table.insert(out, body) else redis.call('ZREM', KEYS[1], k) end
end
return out
"""

# End a watch only if it is still the entry for the same decision: a record written again
# meanwhile has a new entry, which must stay.
_END_WATCH_LUA = """
local ended = 0
for i = 1, #ARGV, 2 do
  local body = redis.call('HGET', KEYS[2], ARGV[i])
  if body and cjson.decode(body).decision_key == ARGV[i + 1] then
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('ZREM', KEYS[1], ARGV[i])
    ended = ended + 1
  end
end
return ended
"""

# Own-write marks (docs/operations.md#overrides). SET unless the stored mark was written later:
# ARGV[1] the mark JSON, ARGV[2] its written_at as fixed-width UTC text, ARGV[3] the TTL (ms).
_MARK_SET_LUA = """
local old = redis.call('GET', KEYS[1])
if old then
  local at = cjson.decode(old).sort_at
  if at and at > ARGV[2] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""

# Compare-and-set the override on a mark: only while it is still the same write (decision and
# owner) and not overridden yet; the TTL is kept. ARGV: decision, owner, the new mark JSON.
_MARK_OVERRIDE_LUA = """
local old = redis.call('GET', KEYS[1])
if not old then return 0 end
local m = cjson.decode(old)
if m.decision ~= ARGV[1] or m.owner ~= ARGV[2] or m.overridden_at ~= cjson.null then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
return 1
"""

# Review items: open items by id, the record index, and each claim's lease, in one step each.
# KEYS: 1 review:open, 2 review:closed, 3 review:records. ARGV: id, record key, body.
_ADD_REVIEW_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1
then return 0 end
if redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# KEYS: 1 review:open, 2 review:claim:{id}. ARGV: id, lease ms. The item's body, or false.
_CLAIM_REVIEW_LUA = """
local body = redis.call('HGET', KEYS[1], ARGV[1])
if not body then return false end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return false end
return body
"""

# KEYS: 1 review:open, 2 review:closed, 3 review:records, 4 review:claim:{id},
# 5 review:escalated, 6 review:closed_at. ARGV: id, record key, closed body, closed at (epoch
# seconds), the horizon before which closed items are dropped.
_CLOSE_REVIEW_LUA = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[1])
if redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[3], ARGV[2]) end
redis.call('DEL', KEYS[4])
redis.call('SREM', KEYS[5], ARGV[1])
local old = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', '(' .. ARGV[5], 'LIMIT', 0, 1000)
for _, id in ipairs(old) do
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[6], id)
end
return 1
"""

# KEYS: 1 review:open, 2 review:escalated. ARGV: id.
_ESCALATE_REVIEW_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
return redis.call('SADD', KEYS[2], ARGV[1])
"""


def _iso(value: datetime) -> str:
    return as_utc(value, "until").isoformat()


class RedisStateStore(ClosesOnExit):
    """`StateStore` on Redis; any number of worker processes may share one server.

    Key layout (all under `prefix`):
      pool:{pool}              hash  version, last_served, credits (JSON)
      count:{pool}:{window}    hash  member -> assignments in that window (TTL ~100 days)
      pauses                   hash  rep -> until (UTC ISO) or "" (until resumed)
      history:outbox           list  decisions not yet in the SQL history, oldest first:
                                     "{id} {decision JSON}" (`Decision.to_dict`)
      history:last_id          str   the last decision id handed out
      history:events           list  events not yet in the SQL history, oldest first (JSON,
                                     `encode_event`); idempotent by their own ids
      history:dead             list  outbox entries that could not be decoded or stored, as
                                     they were
      checkpoints              hash  name -> value (opaque text, e.g. JSON)
      lock:{key}               str   token of the worker holding that record (PX = lock TTL)
      failed:{crm}:{object}    zset  record id scored by first failure (time.time() seconds)
      seen:{key}               str   "1" while a dedupe mark lives (PX = its TTL)
      notify:pending           hash  notice key -> notice JSON waiting for `notify.send`
                                     (kept by tasks/notify.py through `client`)
      sla:due                  zset  watched record key (crm:object:id) scored by its SLA
                                     deadline, or by the end of a pass's claim (epoch seconds)
      sla:entries              hash  watched record key -> entry JSON (`WatchEntry.to_dict`)
      mark:{crm}:{object}:{id} str   the record's own-write mark (`OwnerMark` JSON plus
                                     `sort_at`; PX = the history retention)
      review:open              hash  id -> open review item (`ReviewItem.to_dict` JSON)
      review:closed            hash  id -> closed review item (kept CLOSED_REVIEW_DAYS)
      review:closed_at         zset  closed item id scored by when it closed (epoch seconds)
      review:records           hash  {crm}:{object}:{record id} -> id of its open item
      review:claim:{id}        str   a reviewer's lease on an open item (PX = its TTL)
      review:escalated         set   ids of open items already escalated
    Redis keeps coordination only: decisions wait in the outbox until `history.flush` moves
    them to SQL (sync/history/outbox.py). Before that, the audit trail lived here under
    `audit:*` (a hash of bodies and zsets indexing them); `legacy_audit` reads what an older
    version left so that it moves to SQL too
    (docs/operations.md#the-history-outbox-and-a-postgresql-outage).
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
        self._ack_script = self._r.register_script(_ACK_LUA)
        self._bury_script = self._r.register_script(_BURY_LUA)
        self._bury_id_script = self._r.register_script(_BURY_ID_LUA)
        self._claim_script = self._r.register_script(_CLAIM_LUA)
        self._end_watch_script = self._r.register_script(_END_WATCH_LUA)
        self._mark_set_script = self._r.register_script(_MARK_SET_LUA)
        self._mark_override_script = self._r.register_script(_MARK_OVERRIDE_LUA)
        self._add_review_script = self._r.register_script(_ADD_REVIEW_LUA)
        self._claim_review_script = self._r.register_script(_CLAIM_REVIEW_LUA)
        self._close_review_script = self._r.register_script(_CLOSE_REVIEW_LUA)
        self._escalate_review_script = self._r.register_script(_ESCALATE_REVIEW_LUA)
        self._take_precreated_script = self._r.register_script(_TAKE_PRECREATED_LUA)
        self._put_precreated_script = self._r.register_script(_PUT_PRECREATED_LUA)
        self._claim_answer_script = self._r.register_script(_CLAIM_ANSWER_LUA)
        self._put_answer_script = self._r.register_script(_PUT_ANSWER_LUA)

    # --- keys -------------------------------------------------------------------------------

    @property
    def client(self) -> redis.Redis:
        """The connection pool, for entry-layer features that keep their own coordination
        keys under `prefix` (tasks/notify.py: notices waiting for a worker)."""
        return self._r

    def _pool_key(self, pool: str) -> str:
        return f"{self.prefix}pool:{pool}"

    def _count_key(self, pool: str, window: str) -> str:
        return f"{self.prefix}count:{pool}:{window}"

    @property
    def _pauses_key(self) -> str:
        return f"{self.prefix}pauses"

    def _history_key(self, part: str) -> str:
        return f"{self.prefix}history:{part}"

    def _audit_key(self, part: str) -> str:
        # The audit trail of versions before the SQL history (read only by `legacy_audit`).
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
        order = self._queue_pools(pipe, windows)
        return self._read_pools(windows, order, pipe.execute() if order else [])

    def load_pools_and_pauses(self, windows: Mapping[str, Mapping[str, str]], now: datetime
                              ) -> tuple[dict[str, PoolSnapshot], dict[str, datetime | None]]:
        now_utc = as_utc(now, "now")
        # The pauses read in the same MULTI/EXEC: one round trip for a batch's snapshot.
        pipe = self._r.pipeline(transaction=True)
        order = self._queue_pools(pipe, windows)
        pipe.hgetall(self._pauses_key)
        *replies, stored = pipe.execute()
        return self._read_pools(windows, order, replies), _live_pauses(stored, now_utc)

    def _queue_pools(self, pipe: redis.client.Pipeline, windows: Mapping[str, Mapping[str, str]]
                     ) -> list[tuple[str, list[str] | None]]:
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
        return order

    @staticmethod
    def _read_pools(windows: Mapping[str, Mapping[str, str]],
                    order: list[tuple[str, list[str] | None]], replies: list[Any]
                    ) -> dict[str, PoolSnapshot]:
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

        key(self._history_key("last_id"))
        key(f"{self.prefix}{OUTBOX_KEY}")
        key(f"{self.prefix}commit:{commit_id or uuid.uuid4().hex}")
        for d in decisions:
            if d.decided_at is not None:
                as_utc(d.decided_at, "decided_at")  # refused before anything is applied
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
            "decisions": [encode_entry(d) for d in decisions],
        }
        return bool(self._commit_script(keys=keys, args=[json.dumps(payload)]))

    # --- pauses -----------------------------------------------------------------------------

    def pauses(self, now: datetime) -> dict[str, datetime | None]:
        # Expired entries are ignored, not deleted: `now` may be a replay instant (`--now`).
        now_utc = as_utc(now, "now")
        return _live_pauses(cast(dict[str, str], self._r.hgetall(self._pauses_key)), now_utc)

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

    # --- history outbox ---------------------------------------------------------------------

    def outbox(self, n: int) -> list[tuple[int, Decision]]:
        """Up to `n` decisions waiting for the SQL history, oldest first, left in place (the
        flusher acknowledges them once they are stored). An entry that cannot be decoded moves
        to `history:dead` instead of blocking the queue."""
        check_limit(n)
        key = f"{self.prefix}{OUTBOX_KEY}"
        while True:
            entries = _strings(self._r.lrange(key, 0, n - 1)) if n else []
            decoded: list[tuple[int, Decision]] = []
            buried = 0
            for entry in entries:
                try:
                    decoded.append(decode_entry(entry))
                except ValueError:
                    buried += self._bury(key, entry)
            if not buried:
                return decoded

    def outbox_ack(self, ids: Sequence[int]) -> int:
        """Remove exactly these ids from the outbox (stored in SQL); returns how many were
        there. Entries appended meanwhile, and ids not acknowledged, stay."""
        if not ids:
            return 0
        tomb = f"\0acked {uuid.uuid4().hex}"  # no entry starts with NUL: never a real one
        return int(self._ack_script(keys=[f"{self.prefix}{OUTBOX_KEY}"],
                                    args=[tomb, *(str(int(i)) for i in ids)]))

    def outbox_bury(self, id: int, why: str) -> bool:
        """Move the entry of decision `id` to `history:dead` (the history database refused it:
        `why`, which must not quote the entry); False when it is not in the outbox."""
        tomb = f"\0buried {uuid.uuid4().hex}"
        moved = bool(self._bury_id_script(
            keys=[f"{self.prefix}{OUTBOX_KEY}", f"{self.prefix}{DEAD_KEY}"],
            args=[str(int(id)), tomb]))
        if moved:
            log.error("history outbox: decision %d refused by the history database (%s); moved "
                      "to %s%s", id, why, self.prefix, DEAD_KEY)
        return moved

    def outbox_size(self) -> int:
        """Decisions waiting for the SQL history."""
        return int(self._r.llen(f"{self.prefix}{OUTBOX_KEY}"))

    def outbox_dead(self) -> int:
        """Entries set aside because they could not be decoded (kept for inspection)."""
        return int(self._r.llen(f"{self.prefix}{DEAD_KEY}"))

    def _bury(self, key: str, entry: str) -> int:
        moved = int(self._bury_script(keys=[key, f"{self.prefix}{DEAD_KEY}"], args=[entry]))
        if moved:
            # The size only: an entry's content may hold customer data.
            log.error("history outbox: an entry of %d characters could not be decoded; moved "
                      "to %shistory:dead", len(entry), self.prefix)
        return moved

    def record_events(self, events: Sequence[HistoryEvent]) -> None:
        """Append events to `history:events` for `history.flush` to move to SQL (durable once
        this returns, as far as Redis persistence goes)."""
        entries = [encode_event(e) for e in events]  # refused before anything is appended
        if entries:
            self._r.rpush(f"{self.prefix}{EVENTS_KEY}", *entries)

    def event_outbox(self, n: int) -> list[tuple[str, HistoryEvent]]:
        """Up to `n` events waiting for the SQL history, oldest first, with their entries (to
        acknowledge), left in place; an undecodable entry moves to `history:dead`."""
        check_limit(n)
        key = f"{self.prefix}{EVENTS_KEY}"
        while True:
            entries = _strings(self._r.lrange(key, 0, n - 1)) if n else []
            decoded: list[tuple[str, HistoryEvent]] = []
            buried = 0
            for entry in entries:
                try:
                    decoded.append((entry, decode_event(entry)))
                except ValueError:
                    buried += self._bury(key, entry)
            if not buried:
                return decoded

    def event_outbox_ack(self, entries: Sequence[str]) -> None:
        """Remove these entries (stored in SQL), one occurrence each; entries appended
        meanwhile stay. By value, not by position: a second flusher whose lock lapsed may
        have removed some already, and trimming by count would then drop unstored ones."""
        if entries:
            pipe = self._r.pipeline(transaction=False)
            for entry in entries:
                pipe.lrem(f"{self.prefix}{EVENTS_KEY}", 1, entry)
            pipe.execute()

    def event_outbox_bury(self, entry: str, why: str) -> None:
        """Move an event the history database refused to `history:dead`."""
        if self._bury(f"{self.prefix}{EVENTS_KEY}", entry):
            log.error("history events: an event was refused by the history database (%s); "
                      "moved to %s%s", why, self.prefix, DEAD_KEY)

    def event_outbox_size(self) -> int:
        """Events waiting for the SQL history."""
        return int(self._r.llen(f"{self.prefix}{EVENTS_KEY}"))

    def legacy_audit(self, n: int) -> list[tuple[int, Decision]]:
        """Up to `n` decisions of the audit trail an older version kept in Redis (`audit:*`),
        oldest first, with their ids, to be moved to the SQL history; [] once none is left.
        A body that cannot be decoded moves to `history:dead` like a poison outbox entry."""
        check_limit(n)
        while True:
            ids = _strings(self._r.zrange(self._audit_key("time"), 0, n - 1)) if n else []
            bodies = cast(list[str | None], self._r.hmget(self._audit_key("body"), ids)) \
                if ids else []
            found: list[tuple[int, Decision]] = []
            dropped: list[str] = []
            for id_, body in zip(ids, bodies, strict=True):
                try:
                    if body is None:
                        raise ValueError("index without a body")
                    found.append((int(id_), Decision.from_dict(json.loads(body))))
                except (ValueError, TypeError, KeyError, AttributeError):
                    if body is not None:
                        self._r.rpush(f"{self.prefix}{DEAD_KEY}", f"{id_} {body}")
                        log.error("legacy audit: decision %s of %d characters could not be "
                                  "decoded; moved to %shistory:dead", id_, len(body), self.prefix)
                    dropped.append(id_)
            if not dropped:
                return found
            self._forget_legacy(dropped)

    def legacy_audit_ack(self, ids: Sequence[int]) -> None:
        """Drop these legacy decisions (now in SQL); the last one out removes the indexes."""
        if ids:
            self._forget_legacy([f"{int(i):016d}" for i in ids])

    def _forget_legacy(self, ids: Sequence[str]) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.zrem(self._audit_key("time"), *ids)
        pipe.hdel(self._audit_key("body"), *ids)
        pipe.exists(self._audit_key("time"), self._audit_key("body"))
        *_, left = pipe.execute()
        if not left:
            # The per-record and per-rep indexes only pointed into the body hash: the trail
            # has moved, so they go (in batches, without blocking the server like KEYS).
            stale = [self._audit_key("seq")]
            for pattern in ("record:*", "rep:*"):
                stale += _strings(list(self._r.scan_iter(self._audit_key(pattern), count=1000)))
            for start in range(0, len(stale), _CHUNK):
                self._r.unlink(*stale[start:start + _CHUNK])

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
        ttl_ms = _ttl_ms(ttl_seconds)
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
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
        # SET NX PX is atomic: exactly one caller marks a live key.
        return self._seen_as(key, _ttl_ms(ttl_seconds), uuid.uuid4().hex)

    def _seen_as(self, key: str, ttl_ms: int, token: str) -> bool:
        return bool(self._seen_script(keys=[f"{self.prefix}seen:{key}"], args=[token, ttl_ms]))

    def forget(self, key: str) -> None:
        self._r.delete(f"{self.prefix}seen:{key}")

    # --- first-touch SLA watch ----------------------------------------------------------------

    @property
    def _watch_keys(self) -> list[str]:
        return [f"{self.prefix}sla:due", f"{self.prefix}sla:entries"]

    def watch(self, entries: Sequence[WatchEntry]) -> None:
        if not entries:
            return
        due, bodies = self._watch_keys
        # MULTI: an entry and its deadline land together.
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(bodies, mapping={e.key: json.dumps(e.to_dict(), separators=(",", ":"))
                                   for e in entries})
        pipe.zadd(due, {e.key: as_utc(e.deadline, "deadline").timestamp() for e in entries})
        pipe.execute()

    def watch_entry(self, key: str) -> WatchEntry | None:
        body = cast(str | None, self._r.hget(self._watch_keys[1], key))
        return None if body is None else WatchEntry.from_dict(json.loads(body))

    def claim_due(self, now: datetime, limit: int, lease_seconds: float) -> list[WatchEntry]:
        _check_ttl(lease_seconds)
        check_limit(limit)
        if not limit:
            return []
        at = as_utc(now, "now").timestamp()
        bodies = self._claim_script(keys=self._watch_keys,
                                    args=[repr(at), repr(at + lease_seconds), limit])
        return [WatchEntry.from_dict(json.loads(b)) for b in _strings(bodies)]

    def end_watch(self, entries: Sequence[WatchEntry]) -> int:
        if not entries:
            return 0
        args = [part for e in entries for part in (e.key, e.decision_key)]
        return int(self._end_watch_script(keys=self._watch_keys, args=args))

    def watching(self) -> int:
        return int(self._r.hlen(self._watch_keys[1]))
    # --- own-write marks --------------------------------------------------------------------

    def _mark_key(self, crm: str, object: str, record_id: str) -> str:
        return f"{self.prefix}mark:{crm}:{object}:{record_id}"

    def set_owner_marks(self, marks: Sequence[OwnerMark], ttl_seconds: float) -> None:
        ttl_ms = _ttl_ms(ttl_seconds)
        if not marks:
            return
        pipe = self._r.pipeline(transaction=False)
        for mark in marks:
            at = _fixed(mark.written_at)
            body = json.loads(mark.to_json())
            body["sort_at"] = at
            self._mark_set_script(
                keys=[self._mark_key(mark.crm, mark.object, mark.record_id)],
                args=[json.dumps(body, separators=(",", ":")), at, ttl_ms], client=pipe)
        pipe.execute()

    def owner_marks(self, crm: str, object: str, ids: Sequence[str]) -> dict[str, OwnerMark]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        found: dict[str, OwnerMark] = {}
        for start in range(0, len(wanted), _CHUNK):  # bounded replies for a whole book
            chunk = wanted[start:start + _CHUNK]
            values = self._r.mget([self._mark_key(crm, object, i) for i in chunk])
            found.update((i, OwnerMark.from_json(v))
                         for i, v in zip(chunk, values, strict=True) if isinstance(v, str))
        return found

    def mark_overridden(self, mark: OwnerMark, to: str, at: datetime,
                        by: str | None = None) -> bool:
        done = replace(mark, overridden_to=to, overridden_at=as_utc(at, "at"),
                       overridden_by=by)
        body = json.loads(done.to_json())
        body["sort_at"] = _fixed(mark.written_at)
        return bool(self._mark_override_script(
            keys=[self._mark_key(mark.crm, mark.object, mark.record_id)],
            args=[mark.decision, mark.owner, json.dumps(body, separators=(",", ":"))]))


    # --- review items -----------------------------------------------------------------------

    def _review_key(self, part: str) -> str:
        return f"{self.prefix}review:{part}"

    def add_reviews(self, items: Sequence[ReviewItem]) -> None:
        if not items:
            return
        keys = [self._review_key("open"), self._review_key("closed"),
                self._review_key("records")]
        pipe = self._r.pipeline(transaction=False)
        for item in items:
            self._add_review_script(keys=keys, args=[item.id, item.record_key, _body(item)],
                                    client=pipe)
        pipe.execute()

    def reviews(self, *, closed: bool = False, limit: int | None = None) -> list[ReviewItem]:
        if closed:
            ids = _strings(self._r.zrevrange(self._review_key("closed_at"), 0,
                                             -1 if limit is None else limit - 1))
            found = self._r.hmget(self._review_key("closed"), ids) if ids else []
            return [_review(b, set()) for b in cast(list[str | None], found) if b is not None]
        bodies = _strings(self._r.hvals(self._review_key("open")))
        escalated = set() if closed else set(
            _strings(self._r.smembers(self._review_key("escalated"))))
        items = sorted((_review(b, escalated) for b in bodies),
                       key=lambda i: (i.created_at, i.id), reverse=closed)
        return items if limit is None else items[:limit]

    def review(self, id: str) -> ReviewItem | None:
        pipe = self._r.pipeline(transaction=True)
        pipe.hget(self._review_key("open"), id)
        pipe.hget(self._review_key("closed"), id)
        pipe.sismember(self._review_key("escalated"), id)
        open_body, closed_body, escalated = pipe.execute()
        body = open_body or closed_body
        if body is None:
            return None
        return _review(body, {id} if escalated else set())

    def under_review(self, crm: str, object: str, ids: Sequence[str]) -> set[str]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return set()
        found = self._r.hmget(self._review_key("records"),
                              [f"{crm}:{object}:{i}" for i in wanted])
        return {i for i, hit in zip(wanted, found, strict=True) if hit is not None}

    def claim_review(self, id: str, ttl_seconds: float) -> ReviewItem | None:
        body = self._claim_review_script(
            keys=[self._review_key("open"), self._review_key(f"claim:{id}")],
            args=[id, _ttl_ms(ttl_seconds)])
        if not body:
            return None
        escalated = self._r.sismember(self._review_key("escalated"), id)
        return _review(str(body), {id} if escalated else set())

    def release_review(self, id: str) -> None:
        self._r.delete(self._review_key(f"claim:{id}"))

    def close_review(self, item: ReviewItem) -> None:
        if item.status == REVIEW_OPEN or item.closed_at is None:
            raise ValueError("close_review takes a closed item (approved, reassigned, ...) "
                             "with its closed_at")
        at = as_utc(item.closed_at, "closed_at").timestamp()
        self._close_review_script(
            keys=[self._review_key("open"), self._review_key("closed"),
                  self._review_key("records"), self._review_key(f"claim:{item.id}"),
                  self._review_key("escalated"), self._review_key("closed_at")],
            args=[item.id, item.record_key, _body(item), repr(at),
                  repr(at - CLOSED_REVIEW_DAYS * 86400.0)])

    def escalate_review(self, id: str) -> bool:
        return bool(self._escalate_review_script(
            keys=[self._review_key("open"), self._review_key("escalated")], args=[id]))

    # --- decisions made before the CRM record -------------------------------------------------

    def put_answer(self, key: str, answer: str, ttl_seconds: float,
                   entry: Precreated | None = None) -> None:
        ttl_ms = _ttl_ms(ttl_seconds)
        answer_key = f"{self.prefix}api:answer:{key}"
        if entry is None:
            self._r.set(answer_key, answer, px=ttl_ms)
            return
        # One script: the entry and the answer land together, in one round trip.
        self._put_precreated(entry, ttl_seconds, answer=(answer_key, answer, ttl_ms))

    def answer(self, key: str) -> str | None:
        return cast(str | None, self._r.get(f"{self.prefix}api:answer:{key}"))

    def claim_answer(self, key: str, claim: str, claim_seconds: float
                     ) -> tuple[bool, str | None]:
        reply = self._claim_answer_script(
            keys=[f"{self.prefix}api:answer:{key}", f"{self.prefix}seen:{claim}"],
            args=[uuid.uuid4().hex, _ttl_ms(claim_seconds)])
        if len(reply) > 1:
            return False, str(reply[1])
        return bool(reply[0]), None

    def _precreated_keys(self, crm: str, object: str, email: str | None,
                         domain: str | None) -> list[str]:
        base = f"{self.prefix}precreate:"
        return [f"{base}entries", f"{base}email:{crm}:{object}:{email or ''}",
                f"{base}domain:{crm}:{object}:{domain or ''}", f"{base}expiry"]

    def put_precreated(self, entry: Precreated, ttl_seconds: float) -> None:
        _check_ttl(ttl_seconds)
        self._put_precreated(entry, ttl_seconds)

    def _put_precreated(self, entry: Precreated, ttl_seconds: float,
                        answer: tuple[str, str, int] | None = None) -> None:
        keys = self._precreated_keys(entry.crm, entry.object, entry.email, entry.domain)
        decided = as_utc(entry.decided_at, "decided_at").timestamp()
        args: list[str | int] = [
            entry.id, entry.to_json(), repr(decided), repr(time.time()), repr(ttl_seconds),
            "1" if entry.email else "0", "1" if entry.domain else "0"]
        # One script: the entry and its indexes land together, lapsed entries go on the way
        # (at most 100 a call; an index drops their ids when a take meets them), and each
        # index lives as long as its newest entry. With `answer` (key, value, ttl ms), POST
        # /route's answer lands in the same step.
        if answer is None:
            self._put_precreated_script(keys=keys, args=args)
        else:
            self._put_answer_script(keys=[*keys, answer[0]], args=[*args, answer[1], answer[2]])

    def take_precreated(self, crm: str, object: str, email: str | None, domain: str | None,
                        now: datetime) -> Precreated | None:
        return self.take_precreated_many(crm, object, [(email, domain)], now)[0]

    def take_precreated_many(self, crm: str, object: str,
                             keys: Sequence[tuple[str | None, str | None]], now: datetime
                             ) -> list[Precreated | None]:
        found: list[Precreated | None] = [None] * len(keys)
        asked = [i for i, (email, domain) in enumerate(keys) if email or domain]
        if not asked:
            return found
        args = [repr(as_utc(now, "now").timestamp()), repr(time.time())]
        # One round trip for the batch; each script still takes its entry atomically, in order.
        pipe = self._r.pipeline(transaction=False)
        for i in asked:
            email, domain = keys[i]
            index = self._precreated_keys(crm, object, email, domain)
            if not email:
                index[1] = index[2]  # the domain index twice: the second look finds nothing new
            if not domain:
                index[2] = index[1]
            self._take_precreated_script(keys=index, args=args, client=pipe)
        for i, body in zip(asked, pipe.execute(), strict=True):
            if body:
                found[i] = Precreated.from_json(body)
        return found

def _fixed(value: datetime) -> str:
    """Fixed-width UTC text: compares as the instant, in Lua as in Python."""
    return as_utc(value, "written_at").replace(tzinfo=None).isoformat(
        timespec="microseconds") + "Z"


def encode_entry(decision: Decision) -> str:
    """A decision's outbox body (the Lua commit prefixes its id): compact JSON of `to_dict`,
    plus the rules it matched (`matched`, read back by `Decision.from_dict`) when known."""
    data = decision.to_dict()
    if decision.matched is not None:
        data["matched"] = list(decision.matched)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def encode_event(event: HistoryEvent) -> str:
    """An event's `history:events` entry: compact JSON; ValueError for data that is not JSON
    or a naive instant (refused before it reaches Redis)."""
    data = json.loads(codec.event_data(event))
    return json.dumps({"id": int(event.id), "decision_id": event.decision_id,
                       "record_id": event.record_id, "crm": event.crm, "object": event.object,
                       "kind": event.kind, "at": as_utc(event.at, "at").isoformat(),
                       "data": data}, separators=(",", ":"), ensure_ascii=False)


def decode_event(entry: str) -> HistoryEvent:
    """A `history:events` entry back to its event; ValueError for anything malformed."""
    try:
        body = json.loads(entry)
        decision_id = body["decision_id"]
        event = HistoryEvent(
            id=int(body["id"]), decision_id=None if decision_id is None else int(decision_id),
            record_id=str(body["record_id"]), crm=str(body["crm"]), object=str(body["object"]),
            kind=str(body["kind"]), at=datetime.fromisoformat(body["at"]),
            data=dict(body["data"]))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"undecodable event entry: {type(exc).__name__}") from None
    if event.at.tzinfo is None:
        raise ValueError("undecodable event entry: naive instant")
    return event


def decode_entry(entry: str) -> tuple[int, Decision]:
    """An outbox entry back to (decision id, decision); ValueError for anything malformed."""
    head, sep, body = entry.partition(" ")
    if not sep or not head.isdigit() or not head.isascii():
        raise ValueError("outbox entry without a decision id")
    try:
        return int(head), Decision.from_dict(json.loads(body))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"undecodable outbox entry: {type(exc).__name__}") from None


def _body(item: ReviewItem) -> str:
    return json.dumps(item.to_dict(), separators=(",", ":"), ensure_ascii=False)


def _review(body: str, escalated: set[str]) -> ReviewItem:
    item = ReviewItem.from_dict(json.loads(body))
    # The flag lives in its own set (set atomically); the body keeps the rest.
    if item.id in escalated and not item.escalated:
        item = replace(item, escalated=True)
    return item


def _strings(reply: object) -> list[str]:
    """A list reply as the strings it is: the client decodes (`decode_responses=True`), but
    redis-py types every reply for both modes (bytes or str, with or without scores)."""
    return cast(list[str], reply)


def _live_pauses(stored: dict[str, str], now_utc: datetime) -> dict[str, datetime | None]:
    """The pauses hash (see _strings) as `pauses` answers it: those not lapsed at `now_utc`."""
    paused: dict[str, datetime | None] = {}
    for rep, until in sorted(stored.items()):
        if not until:
            paused[rep] = None
        elif (at := datetime.fromisoformat(until)) > now_utc:
            paused[rep] = at
    return paused


def _check_ttl(ttl_seconds: float) -> None:
    """A lock must expire, and after a positive time: 0 or negative would never be held."""
    if not 0 < ttl_seconds < math.inf:
        raise ValueError(f"ttl_seconds must be a positive finite number, got {ttl_seconds!r}")


def _ttl_ms(ttl_seconds: float) -> int:
    """`ttl_seconds` checked (`_check_ttl`) and as the milliseconds of a PX: rounded up, so a
    key never lapses sooner than the caller asked, and at least 1."""
    _check_ttl(ttl_seconds)
    return max(1, math.ceil(ttl_seconds * 1000))
