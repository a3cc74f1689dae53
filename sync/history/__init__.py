"""Decision history in SQL (SQLAlchemy Core over PostgreSQL or SQLite): schema, writes, queries."""

from sync.history.store import History, HistoryEvent, SchemaOutOfDate, SpeedPoint

__all__ = ["History", "HistoryEvent", "SchemaOutOfDate", "SpeedPoint"]
