"""Serving the local dashboard (`account-router dashboard`, `demo --dashboard`): loopback only,
on a socket bound before the URL is printed, so `--port 0` prints the port actually taken."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp

from tasks.http.server import uvicorn_config


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost`: the only places a dashboard without sign-in listens."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host`:`port` (0: any free port); OSError when taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def run_local(app: ASGIApp, sock: socket.socket,
              announce: Callable[[str], None] = lambda url: None) -> None:
    """Serve `app` on `sock` until Ctrl-C (or SIGTERM), after `announce(url)`."""
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn_config(app, host=host, port=port, log_level="warning"))
    announce(url_of(sock))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn shut down cleanly and re-raised the Ctrl-C: it is how this one stops
    finally:
        sock.close()
