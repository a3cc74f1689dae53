"""Fixtures shared by the entry-layer tests: the structured log stream."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog

from tasks.logging import configure_logging


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """JSON log lines as `configure_logging` writes them; the logging setup is undone after."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging(stream=stream)
    try:
        yield stream
    finally:
        root.setLevel(level)
        for handler in [h for h in root.handlers if type(h).__name__ == "_Handler"]:
            root.removeHandler(handler)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
