"""Connection URLs made safe to show: `redact_url` for every error message and log line."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

MASK = "***"
# Query parameters that carry a credential (redis-py reads `?password=`, SQLAlchemy drivers
# take `password=` too); their values are masked like the userinfo password.
SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "secret", "token", "access_token"})
# A URL inside free text (an exception's message, a log line): up to whitespace or a quote,
# which is where a repr or a sentence ends it.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***`: `redis://:pw@h:6379/0` ->
    `redis://:***@h:6379/0`, `postgresql://u:pw@h/db` -> `postgresql://u:***@h/db`.

    Parsed by hand rather than with `urlsplit`, which raises on some malformed URLs (a bad IPv6
    host) -- and a malformed URL is exactly what error messages quote. Userinfo without a colon
    (`redis://secret@host`, which redis-py reads as a password-less username) is masked whole,
    since it is often a password written in the wrong place."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # The authority ends at the first `/`, `?` or `#`; its userinfo at the last `@` (as
    # urllib and redis-py split it, so a raw `@` in a password is masked too).
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if "@" not in rest[:end] and "@" in rest[end:] and not rest.startswith("/"):
        # A password with a raw `/`, `?` or `#` (base64 makes `/`): the parsers end the
        # authority early, but the `@` after it shows where the password really ends. Masking
        # too much (an `@` in a query) is the safe side.
        end = rest.rindex("@")
        end += min((i for i in (rest.find(c, end) for c in "/?#") if i >= 0),
                   default=len(rest)) - end
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    return f"{scheme}://{authority}{_redact_query(tail)}"


def _redact_query(tail: str) -> str:
    path, q, query = tail.partition("?")
    if not q:
        return tail
    query, hash_, fragment = query.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(k.lower() in SECRET_PARAMS for k, _ in pairs):
        return tail
    masked = [(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in pairs]
    return f"{path}?{urlencode(masked, safe='*')}{hash_}{fragment}"


def redact_urls(text: str) -> str:
    """`text` with `redact_url` applied to every URL in it (messages quoting a driver error)."""
    if "://" not in text:  # the common case, without a regex scan
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
