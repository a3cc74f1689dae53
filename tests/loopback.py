"""A free loopback port for test servers, or to stand for a server that is not there."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released): start a server on it,
    or point a client at it to be refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
