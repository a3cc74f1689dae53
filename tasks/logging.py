"""Structured logs: JSON lines through structlog; secrets are never logged.

See docs/operations.md#logs.

Library code (the pipeline, the connectors) logs with the standard `logging` module and passes
fields as `extra`; this configures the root logger to render every record, from structlog or
`logging`, as one JSON object with an ISO timestamp, the level, the context bound with
`structlog.contextvars` (a task's `task_id`) and every secret-looking field redacted.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from functools import lru_cache
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from config.urls import redact_urls

REDACTED = "[redacted]"
# Keys whose values are never logged: tokens, secrets, passwords, authorization headers, keys.
SECRET_KEY = re.compile(r"token|secret|password|passwd|authorization|api[_-]?key|private[_-]?key",
                        re.IGNORECASE)


@lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    # Keys repeat from line to line (event, level, logger, timestamp, the `extra` names).
    return SECRET_KEY.search(key) is not None


def _redacted(value: Any) -> Any:
    if isinstance(value, str):  # the common case first
        return redact_urls(value)  # a connection URL's password, e.g. in an error's text
    if isinstance(value, MutableMapping):
        return {k: REDACTED if isinstance(k, str) and _secret_key(k) else _redacted(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redacted(v) for v in value)
    return value


def redact_secrets(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Replace the value of every key named like a secret (at any depth) with `[redacted]`."""
    return _redacted(event_dict)


def _processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


class _Handler(logging.StreamHandler):
    """Ours: replaced, not stacked, when logging is configured again."""


def configure_logging(json: bool = True, *, level: int | str = logging.INFO,
                      stream: TextIO | None = None) -> None:
    """Render every log record as one JSON line (or a readable line with `json=False`)."""
    shared = _processors()
    renderer: Processor = (structlog.processors.JSONRenderer() if json
                           else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # Records from `logging` get the same fields, plus what they passed as `extra`.
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_secrets,  # last before rendering: nothing added after it escapes it
            renderer,
        ],
    )
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
