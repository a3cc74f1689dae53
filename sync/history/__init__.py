"""Decision history in SQL (SQLAlchemy Core over PostgreSQL or SQLite): schema, writes, queries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sync.history.store import FirstTouchRow, History, SchemaOutOfDate, SpeedPoint
    from sync.models import HistoryEvent

__all__ = ["FirstTouchRow", "History", "HistoryEvent", "SchemaOutOfDate", "SpeedPoint"]


def __getattr__(name: str) -> Any:
    # Lazy: the embedded state store uses the codec on its hot path and must not pay for
    # SQLAlchemy's import (memory and start-up) unless something reads the history.
    if name == "HistoryEvent":  # a core value type, re-exported here where it began
        from sync.models import HistoryEvent

        return HistoryEvent
    if name in __all__:
        from sync.history import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
