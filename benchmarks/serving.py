"""What the service benchmarks share (not a benchmark itself): a free loopback port to start a
server on, waiting until it answers, and stopping the processes started."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout: float = 30.0) -> None:
    """Until `url` answers (any status), else exit naming it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def stop(procs: Sequence[subprocess.Popen[Any]]) -> None:
    """Terminate `procs`, the last started first; kill any still running after 15 s."""
    for proc in reversed(procs):
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
