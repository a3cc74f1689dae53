"""State stores behind one protocol: `open_store(url)` picks SQLite (embedded) or Redis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from config.urls import redact_url
from sync.state.base import LoadRow, PoolChange, PoolSnapshot, StateStore, WatchEntry

if TYPE_CHECKING:
    from sync.state.redis import RedisStateStore
    from sync.state.sqlite import SqliteStateStore

__all__ = [
    "DEFAULT_STATE_URL",
    "LoadRow",
    "PoolChange",
    "PoolSnapshot",
    "RedisStateStore",
    "SqliteStateStore",
    "StateStore",
    "WatchEntry",
    "open_store",
]

DEFAULT_STATE_URL = "sqlite:///account-router-state.db"

ACCEPTED_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "redis://host:port/db or rediss://host:port/db"
)

# Outcomes that put a record on a rep's plate; `kept_existing` never counts as load
# (docs/routing-file.md#edge-cases-pools-and-windows).
OUTCOMES_WITH_LOAD = ("assigned", "fallback")


def open_store(url: str) -> StateStore:
    """Open the state store a URL names (docs/operations.md#state-stores: the accepted forms).
    Errors quote the URL with its password masked (`redact_url`): they end up on screens and in
    logs."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"empty state URL; expected one of: {ACCEPTED_FORMS}")
    url = url.strip()
    shown = redact_url(url)
    if url.startswith("sqlite:"):
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise ValueError(
                f"bad SQLite state URL {shown!r}: a path follows three slashes "
                f"(expected one of: {ACCEPTED_FORMS})"
            )
        from sync.state.sqlite import SqliteStateStore

        # `sqlite:///x.db` -> `x.db` (relative to cwd); `sqlite:////x.db` -> `/x.db` (absolute).
        return SqliteStateStore(Path(url[len("sqlite:///"):]))
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss"):
        db = parts.path.lstrip("/")
        if not parts.hostname or (db and not db.isdigit()):
            raise ValueError(
                f"bad Redis state URL {shown!r}: expected redis://host:port/db "
                f"(expected one of: {ACCEPTED_FORMS})"
            )
        try:
            parts.port  # noqa: B018 - raises ValueError on a non-numeric port
        except ValueError as exc:
            raise ValueError(
                f"bad Redis state URL {shown!r}: {exc} (expected one of: {ACCEPTED_FORMS})"
            ) from None
        from sync.state.redis import RedisStateStore

        return RedisStateStore(url)
    raise ValueError(f"unsupported state URL {shown!r}; expected one of: {ACCEPTED_FORMS}")


def __getattr__(name: str) -> Any:
    # Lazy so that importing the package (e.g. for the protocol) never pulls in redis-py or
    # opens anything, and so the store modules can import helpers from here without a cycle.
    if name == "SqliteStateStore":
        from sync.state.sqlite import SqliteStateStore

        return SqliteStateStore
    if name == "RedisStateStore":
        from sync.state.redis import RedisStateStore

        return RedisStateStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- helpers shared by both stores, so their semantics cannot drift apart ---------------------


def as_utc(value: datetime, what: str) -> datetime:
    """`value` in UTC; naive datetimes are rejected (every instant in the router is aware)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def check_limit(limit: int | None) -> None:
    """A negative limit is a caller bug, not "no limit" (as SQLite's LIMIT -1 would read it)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")


@dataclass(slots=True)
class MergedChange:
    """All of one commit's changes to one pool: the version moves by one per commit, not per
    change, so a caller that aggregates per decision and one that aggregates per pool agree."""

    pool: str
    last_served: str | None = None
    credits: dict[str, float] | None = None
    increments: dict[tuple[str, str], int] = field(default_factory=dict)


def merge_changes(changes: Sequence[PoolChange]) -> list[MergedChange]:
    """Fold changes per pool in order: the last `last_served` and last non-None `credits` win,
    increments add up. Pools keep their first-seen order."""
    merged: dict[str, MergedChange] = {}
    for change in changes:
        m = merged.get(change.pool)
        if m is None:
            m = merged[change.pool] = MergedChange(change.pool)
        m.last_served = change.last_served
        if change.credits is not None:
            m.credits = {str(k): float(v) for k, v in change.credits.items()}
        for key, n in change.increments.items():
            if n:
                m.increments[key] = m.increments.get(key, 0) + int(n)
    return list(merged.values())


def load_sort_key(row: LoadRow) -> tuple[str, bool, str, str]:
    """Order of `load()` rows in both stores: rep, then pool (outside pools first), outcome."""
    return (row.rep, row.pool is not None, row.pool or "", row.outcome)
