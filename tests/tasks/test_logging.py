"""Log lines keep connection-URL passwords out, whoever logs them (worker, Celery, pipeline)."""

from __future__ import annotations

import io
import json
import logging


def test_given_an_error_quoting_a_redis_url_when_logged_then_the_password_is_masked(
        logs: io.StringIO) -> None:
    error = ValueError("cannot reach redis://:s3cret@cache.internal:6379/0")
    log = logging.getLogger("account_router.worker")

    log.warning("task %s: Redis unreachable: %r", "route", error)
    try:
        raise error
    except ValueError:
        log.exception("task failed", extra={"broker": "redis://router:s3cret@broker:6379/1"})

    text = logs.getvalue()
    assert "s3cret" not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert "redis://:***@cache.internal:6379/0" in str(first["event"])
    assert "redis://:***@cache.internal:6379/0" in str(second["exception"])
    assert second["broker"] == "redis://router:***@broker:6379/1"
