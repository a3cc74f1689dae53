"""Dashboard sessions: a signed cookie keyed from the API token, a per-session CSRF token, and
a bound on failed sign-ins per client (docs/operations.md#the-dashboard)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

COOKIE = "account_router_session"
# A stolen cookie stays useful for at most this long; rotating ACCOUNT_ROUTER_API_TOKEN ends
# every session at once (the signing key is derived from it).
SESSION_SECONDS = 12 * 3600
# A clock ahead of ours by more than this makes a cookie "from the future": refused.
CLOCK_SKEW_SECONDS = 60
MAX_FAILURES = 5  # wrong tokens per client within FAILURE_WINDOW_SECONDS before a lockout
FAILURE_WINDOW_SECONDS = 600.0
LOCKOUT_SECONDS = 600.0
# Clients remembered for the lockout: a flood of spoofed sources must not grow memory forever
# (the oldest entries go first).
MAX_CLIENTS = 10_000
MAX_TOKEN_LENGTH = 4096  # a longer "password" is wrong without being compared


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def derive_key(token: str) -> bytes:
    """The session-signing key: HMAC of a fixed label under the API token, so the cookie never
    carries (or lets anyone test guesses of) the token itself."""
    return hmac.new(token.encode("utf-8", "surrogateescape"),
                    b"account-router dashboard session v1", hashlib.sha256).digest()


def same(given: str, expected: str) -> bool:
    """Constant-time equality over bytes (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


@dataclass(frozen=True, slots=True)
class Session:
    """A valid session: its nonce, from which its CSRF token is derived."""

    nonce: str
    csrf: str


class Signer:
    """Issues and checks session cookies `issued.nonce.signature` under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        # Signed-out sessions (nonce -> when signed out) until they would have expired anyway.
        self._revoked: OrderedDict[str, float] = OrderedDict()

    def revoke(self, nonce: str, now: float) -> None:
        self._revoked[nonce] = now
        while self._revoked and (len(self._revoked) > MAX_CLIENTS
                                 or now - next(iter(self._revoked.values())) > SESSION_SECONDS):
            self._revoked.popitem(last=False)

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode("ascii"), hashlib.sha256).digest())

    def csrf_for(self, nonce: str) -> str:
        return self._sign(f"csrf.{nonce}")

    def issue(self, now: float) -> tuple[str, Session]:
        nonce = secrets.token_urlsafe(18)
        body = f"{int(now)}.{nonce}"
        return f"{body}.{self._sign(body)}", Session(nonce, self.csrf_for(nonce))

    def check(self, cookie: str | None, now: float) -> Session | None:
        """The session `cookie` carries when it is ours, unaltered and not expired."""
        if not cookie or len(cookie) > 200:
            return None
        issued, _, rest = cookie.partition(".")
        nonce, _, signature = rest.partition(".")
        if not (issued.isascii() and issued.isdigit()) or not nonce.isascii() or not signature:
            return None
        try:
            expected = self._sign(f"{issued}.{nonce}")
        except UnicodeEncodeError:
            return None
        if not same(signature, expected):
            return None
        age = now - int(issued)
        if age > SESSION_SECONDS or age < -CLOCK_SKEW_SECONDS or nonce in self._revoked:
            return None
        return Session(nonce, self.csrf_for(nonce))


@dataclass
class _Client:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class Throttle:
    """Failed sign-ins per client: after MAX_FAILURES within the window, every attempt from
    that client (a right token included, or guessing would just go on) answers 429 until the
    lockout ends. In memory: `serve` is one process, and a restart forgetting it is harmless."""

    def __init__(self) -> None:
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def retry_after(self, client: str, now: float) -> float:
        """Seconds left of `client`'s lockout (0: may try)."""
        found = self._clients.get(client)
        return max(0.0, found.locked_until - now) if found is not None else 0.0

    def failed(self, client: str, now: float) -> None:
        found = self._clients.pop(client, None) or _Client()
        self._clients[client] = found  # most recent last: eviction takes the stalest
        found.failures = [t for t in found.failures if now - t < FAILURE_WINDOW_SECONDS]
        found.failures.append(now)
        if len(found.failures) >= MAX_FAILURES:
            found.locked_until = now + LOCKOUT_SECONDS
            found.failures.clear()
        while len(self._clients) > MAX_CLIENTS:
            self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)
