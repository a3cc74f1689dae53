"""Decision <-> history row: label strings, microsecond instants and the compact trace body."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

from sync.models import Decision, HistoryEvent, Outcome, TraceStep

# Outcome codes stored in `history_decisions.outcome`. Append only: a stored code never changes
# meaning (0 is left unused so that a zeroed column can never read as a real outcome).
OUTCOME_CODES: dict[Outcome, int] = {
    Outcome.ASSIGNED: 1,
    Outcome.FALLBACK: 2,
    Outcome.KEPT_EXISTING: 3,
    Outcome.UNASSIGNED: 4,
    Outcome.SKIPPED: 5,
    Outcome.PENDING_REVIEW: 6,
}
OUTCOMES_BY_CODE: dict[int, Outcome] = {code: o for o, code in OUTCOME_CODES.items()}

# Label kinds (`history_labels.kind`): one id space, the kind keeps e.g. a rep and a rule of the
# same name apart and lets a reader list the reps or rules seen.
# `owner` holds owners and previous owners alike: rep ids, queue ids, kept unknown owners' ids.
CRM, OBJECT, OWNER, POOL, RULE, TRIGGER, CRM_ID, EVENT = (
    "crm", "object", "owner", "pool", "rule", "trigger", "crm_id", "event")
# `history_decisions.matched`: the rules a record matched, as `matched_text` (a set per label).
MATCHED = "matched"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

# The stock trace step, stored as its rule name alone: most steps of most decisions are this.
_NO_MATCH = ("no_match", "conditions not met")

# Text columns hold strings as they are, except those PostgreSQL or UTF-8 cannot store (NUL,
# lone surrogates from a badly decoded file) and those that could be mistaken for the escape:
# these are stored as ESC + their JSON (ASCII) form, and read back exactly.
_ESC = "\x1b"


class EncodedDecision(NamedTuple):
    """A decision as the history stores it, before label strings become label ids."""

    record_id: str
    crm: str
    object: str
    outcome: int
    owner: str | None
    previous_owner: str | None
    owner_crm_id: str | None
    pool: str | None
    rule: str | None
    trigger: str
    created_at: int | None
    decided_at: int | None
    written_at: int | None
    body: str
    write_error: str | None
    matched: str | None = None  # `matched_text` of `Decision.matched`


def matched_text(names: tuple[str, ...]) -> str:
    """The label text of a matched-rules set: a JSON array of the names in routing-file order
    (ASCII, so any rule name survives every backend)."""
    return json.dumps(list(names), separators=(",", ":"))


def parse_matched(text: str | None) -> tuple[str, ...] | None:
    """`Decision.matched` from its label text (None stays None: not known)."""
    return None if text is None else tuple(str(name) for name in json.loads(text))


def to_us(value: datetime | None, what: str = "instant") -> int | None:
    """Microseconds since the epoch (UTC). A naive instant is refused (ValueError naming
    `what`), as the state stores refuse it: every instant the router makes is aware."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return (value - EPOCH) // _MICRO


def from_us(value: int | None, offset: int = 0) -> datetime | None:
    """The aware instant of a stored microsecond count, at `offset` seconds from UTC."""
    if value is None:
        return None
    at = EPOCH + timedelta(microseconds=int(value))
    return at.astimezone(_zone(offset)) if offset else at


_ZONES: dict[int, timezone] = {}


def _zone(offset: int) -> timezone:
    zone = _ZONES.get(offset)
    if zone is None:
        zone = _ZONES[offset] = timezone(timedelta(seconds=offset))
    return zone


def offset_of(value: datetime | None) -> int:
    """`value`'s UTC offset in whole seconds (0 for None and UTC)."""
    if value is None or value.tzinfo is UTC:
        return 0
    delta = value.utcoffset()
    return 0 if delta is None else int(delta.total_seconds())


def store_text(value: str) -> str:
    """`value` in a form every backend stores and `load_text` reads back exactly."""
    if value.isascii():
        if "\x00" not in value and not value.startswith(_ESC):
            return value
    else:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _ESC + json.dumps(value)
        if "\x00" not in value:
            return value
    return _ESC + json.dumps(value)


def load_text(value: str) -> str:
    if value.startswith(_ESC):
        loaded = json.loads(value[1:])
        if isinstance(loaded, str):
            return loaded
    return value


def digest(*parts: str) -> str:
    """A 128-bit hex digest of `parts`: the unique key of a label or a trace body."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def _rebuilt_reason(rule: str | None, trace: tuple[TraceStep, ...]) -> str | None:
    """The reason of a rule win is the rule and its trace detail: rebuilt on read, not stored."""
    if trace and rule is not None and trace[-1].result == "won":
        return f"rule {rule}: {trace[-1].detail}"
    return None


Offsets = tuple[int, int, int]
UTC_OFFSETS: Offsets = (0, 0, 0)


def trace_body(rule: str | None, reason: str, trace: tuple[TraceStep, ...],
               offsets: Offsets = UTC_OFFSETS) -> str:
    """The reason and trace as compact JSON: `{"m": reason, "t": steps, "z": offsets}`, where
    a stock no-match step is its rule name alone, others `[rule, result(, detail)]`, the reason
    is left out when it is the one `_rebuilt_reason` gives (or empty where none is rebuilt), and
    `z` holds the UTC offsets (seconds) the created/decided/written instants were given in,
    left out when all are UTC: instants are stored as UTC microseconds, and `audit` shows them
    as they were given (`--now 2026-11-25T09:00-05:00` decides at -05:00). A run shares its
    offsets, so bodies still repeat. ASCII-only JSON, so NUL and lone surrogates survive any
    backend."""
    body: dict[str, Any] = {}
    rebuilt = _rebuilt_reason(rule, trace)
    if reason != (rebuilt if rebuilt is not None else ""):
        body["m"] = reason
    if trace:
        body["t"] = [
            s.rule if (s.result, s.detail) == _NO_MATCH
            else [s.rule, s.result, s.detail] if s.detail else [s.rule, s.result]
            for s in trace
        ]
    if offsets != UTC_OFFSETS:
        body["z"] = list(offsets)
    return json.dumps(body, separators=(",", ":"))


def parse_body(body: str, rule: str | None) -> tuple[str, tuple[TraceStep, ...], Offsets]:
    """The (reason, trace, offsets) of a stored body; `rule` is the decision's, for the rebuilt
    reason."""
    data = json.loads(body)
    trace = tuple(
        TraceStep(s, *_NO_MATCH) if isinstance(s, str) else TraceStep(*s)
        for s in data.get("t", ())
    )
    z = data.get("z")
    offsets: Offsets = UTC_OFFSETS if z is None else (int(z[0]), int(z[1]), int(z[2]))
    if "m" in data:
        return str(data["m"]), trace, offsets
    rebuilt = _rebuilt_reason(rule, trace)
    return (rebuilt if rebuilt is not None else ""), trace, offsets


# A decision's own columns (`RowEncoder.columns`): record id, outcome code, created, decided and
# written at (UTC microseconds), write error; then the instants' UTC offsets (for the body).
Columns = tuple[tuple[str, int, int | None, int | None, int | None, str | None], Offsets]


class RowEncoder:
    """A decision's own columns as every history writer stores them: `encode`, the history
    store's batch insert (store.py) and the embedded store's (sync/state/sqlite.py); they
    differ only in how they find label and trace ids.

    The hot path of a million-row run, so a batch's shared decided instant is converted once
    while it repeats. By identity, not ==: equal instants in other timezones keep their own
    offsets. Anything bad (a naive instant) raises ValueError before a row exists."""

    __slots__ = ("_decided", "_decided_us", "_decided_off")

    def __init__(self) -> None:
        self._decided: datetime | None = None
        self._decided_us: int | None = None
        self._decided_off = 0

    def columns(self, d: Decision) -> Columns:
        decided = d.decided_at
        if decided is not self._decided:
            self._decided_us = to_us(decided, "decided_at")
            self._decided_off = offset_of(decided)
            self._decided = decided
        created_at, written_at = d.created_at, d.written_at
        created = written = None
        created_off = written_off = 0
        if created_at is not None:
            created, created_off = to_us(created_at, "created_at"), offset_of(created_at)
        if written_at is not None:
            written, written_off = to_us(written_at, "written_at"), offset_of(written_at)
        record_id, error = d.record_id, d.write_error
        if not (record_id.isascii() and record_id.isprintable()):  # else nothing to escape
            record_id = store_text(record_id)
        return ((record_id, OUTCOME_CODES[d.outcome], created, self._decided_us, written,
                 None if error is None else store_text(error)),
                (created_off, self._decided_off, written_off))


def encode(d: Decision, body: str | None = None) -> EncodedDecision:
    """The stored form of `d`; `body` when the caller already has the trace body (a cache)."""
    (record_id, outcome, created, decided, written, error), offs = RowEncoder().columns(d)
    return EncodedDecision(
        record_id=record_id,
        crm=d.crm,
        object=d.object,
        outcome=outcome,
        owner=d.owner,
        previous_owner=d.previous_owner,
        owner_crm_id=d.owner_crm_id,
        pool=d.pool,
        rule=d.rule,
        trigger=d.trigger,
        created_at=created,
        decided_at=decided,
        written_at=written,
        body=trace_body(d.rule, d.reason, d.trace, offs) if body is None else body,
        write_error=error,
        matched=None if d.matched is None else matched_text(d.matched),
    )


def decode(row: EncodedDecision) -> Decision:
    """The decision a stored row holds (labels already resolved to their strings)."""
    reason, trace, (created, decided, written) = parse_body(row.body, row.rule)
    return Decision(
        record_id=load_text(row.record_id),
        object=row.object,
        crm=row.crm,
        outcome=OUTCOMES_BY_CODE[int(row.outcome)],
        previous_owner=row.previous_owner,
        owner=row.owner,
        owner_crm_id=row.owner_crm_id,
        rule=row.rule,
        reason=reason,
        trace=trace,
        trigger=row.trigger,
        pool=row.pool,
        created_at=from_us(row.created_at, created),
        decided_at=from_us(row.decided_at, decided),
        written_at=from_us(row.written_at, written),
        write_error=None if row.write_error is None else load_text(row.write_error),
        matched=parse_matched(row.matched),
    )


# The label kind of each labelled field of EncodedDecision, in a fixed order (store.py, the
# embedded store and the legacy migration resolve labels through it).
LABEL_FIELDS: tuple[tuple[str, str], ...] = (
    ("crm", CRM), ("object", OBJECT), ("owner", OWNER), ("previous_owner", OWNER),
    ("owner_crm_id", CRM_ID), ("pool", POOL), ("rule", RULE), ("trigger", TRIGGER),
)


def event_data(event: HistoryEvent) -> str:
    """An event's data as the compact JSON its row stores; ValueError naming the event when the
    data is not JSON (both stores refuse it before their transaction starts)."""
    try:
        return json.dumps(dict(event.data), sort_keys=True, separators=(",", ":"),
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event {event.id} ({event.kind!r}): data is not JSON: {exc}") from None
