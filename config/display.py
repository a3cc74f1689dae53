"""Values from hostile input shown in messages: cut to a prefix that names the full length."""

from __future__ import annotations

SHOWN_CHARS = 80


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text`, or its first `limit` characters and how long it was: a field may hold a megabyte,
    which must not flood a terminal, a log line or a CSV reason column."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"
