"""History fixtures: one fresh database per test, on SQLite (a temporary file) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.history import History


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL per backend, schema not created yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    # A fresh database on the session's throwaway server (tests/servers/postgres.py).
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def history(history_url: str) -> Iterator[History]:
    """An upgraded, empty history, once per backend."""
    with History(history_url) as opened:
        opened.upgrade()
        yield opened
