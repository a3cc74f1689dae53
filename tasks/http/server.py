"""Every uvicorn setting of `serve` in one place: JSON logs with secrets redacted from every
line (uvicorn's access log included), timeouts, and the run itself."""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tasks.http.common import redact
from tasks.logging import configure_logging

# Loggers whose lines can carry a request's path and query: uvicorn's access log prints both
# verbatim, its error log may quote a request, and this app's own lines name paths.
REDACTED_LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error", "tasks.http")
# Idle keep-alive connections are closed after this; also bounds how long a stopping server
# waits for open connections before it closes them.
KEEP_ALIVE_SECONDS = 5
GRACEFUL_SHUTDOWN_SECONDS = 10
# A request line and headers not complete by then close the connection: uvicorn has no such
# timeout, so a client that sends half a request would hold its connection forever. (A body
# that never arrives is the app's BodyLimit's to refuse, with a 408.)
HEADER_TIMEOUT_SECONDS = 10.0


class RedactSecrets(logging.Filter):
    """Rewrites a record's message and arguments through `redact` (the Salesforce webhook
    secret in a path, `?token=` and other secret-named query values); drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            # Mostly a format string (uvicorn's access line: one per request): seen before.
            record.msg = _redacted_message(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v
                           for k, v in record.args.items()}
        return True


_redacted_message = lru_cache(maxsize=256)(redact)


def install_redaction() -> None:
    """Add the filter to every logger that can carry a URL (once; calling again is a no-op).
    On the loggers themselves, since a logger's filters see only what is logged to it."""
    for name in REDACTED_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets())


def _with_header_timeout(seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol (llhttp, a C parser: about 0.3 ms of CPU less per request
    than h11's pure Python, measured under POST /route at 200 requests/s), closing a connection
    that has not sent a whole request line and headers within `seconds` of connecting or of
    its previous response."""

    class Protocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_headers()

        def on_headers_complete(self) -> None:
            self._stop_timer()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            super().connection_lost(exc)

        def _stop_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _await_headers(self) -> None:
            self._stop_timer()
            if not self.transport.is_closing():
                self._header_timer = self.loop.call_later(seconds, self._headers_late)

        def _headers_late(self) -> None:
            # Still set: no request head completed since the timer started. A request being
            # answered (a pipelined one, or a body still arriving: BodyLimit's to time out)
            # keeps its connection.
            self._header_timer = None
            busy = self.pipeline or (self.cycle is not None and not self.cycle.response_complete)
            if not busy and not self.transport.is_closing():
                self.transport.close()

    return Protocol


def uvicorn_config(app: ASGIApp, *, host: str, port: int,
                   header_timeout: float = HEADER_TIMEOUT_SECONDS,
                   log_level: str = "info") -> uvicorn.Config:
    """The server `serve` runs, with the redaction installed (the local dashboard runs it too,
    at `warning`: no access log on the terminal)."""
    install_redaction()
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level,
        http=_with_header_timeout(header_timeout),
        # None: uvicorn's loggers propagate to the root logger's JSON handler (tasks.logging).
        log_config=None,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        server_header=False,
    )


def run(app: ASGIApp, *, host: str, port: int) -> None:
    """Serve `app` until stopped, logging JSON lines; exit 3 if the server cannot start (e.g.
    the port is taken), as `uvicorn.run` does."""
    configure_logging()
    # No log line shows a record's caller, process or thread: not worked out for each line
    # (the logging HOWTO's "Optimization"; the caller lookup walks the stack every time).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    server = uvicorn.Server(uvicorn_config(app, host=host, port=port))
    server.run()
    if not server.started:
        raise SystemExit(3)
