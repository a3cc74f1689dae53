"""`redact_url`: connection URLs in errors and logs keep passwords out (operations.md#logs)."""

from __future__ import annotations

import pytest

from config.urls import redact_url, redact_urls


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache.internal:6380/2", "redis://:***@cache.internal:6380/2"),
        ("rediss://default:s3cret@cache:6380/0", "rediss://default:***@cache:6380/0"),
        ("postgresql+psycopg://router:s3cret@db.internal/router",
         "postgresql+psycopg://router:***@db.internal/router"),
        ("smtp://mailer:s3cret@smtp.example.com:587", "smtp://mailer:***@smtp.example.com:587"),
        # A raw `@` in the password: the userinfo ends at the last `@`, as redis-py splits it.
        ("redis://:p@ss@w0rd@cache:6379/0", "redis://:***@cache:6379/0"),
        # A lone userinfo is often a password in the wrong place: masked whole.
        ("redis://s3cret@cache:6379/0", "redis://***@cache:6379/0"),
        ("redis://cache:6379/0?password=s3cret&db=1", "redis://cache:6379/0?password=***&db=1"),
        # A raw `/`, `?` or `#` in the password (base64 makes `/`) ends the authority early
        # for a parser; the `@` after it still shows where the password ends.
        ("redis://:s3c/ret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://router:s3c?r#t/x@cache:6379/0", "redis://router:***@cache:6379/0"),
        # A malformed host (urlsplit raises on it) is still redacted.
        ("redis://:s3cret@[::1:6379/0", "redis://:***@[::1:6379/0"),
    ],
)
def test_given_a_url_with_a_password_when_redacted_then_only_the_password_is_masked(
    url: str, shown: str
) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url) and "w0rd" not in redact_url(url)


@pytest.mark.parametrize(
    "url",
    ["redis://cache.internal:6380/2", "sqlite:///account-router-state.db",
     "sqlite:////var/lib/router/state.db", "not a url", "", "redis://cache:6379/0?db=1"],
)
def test_given_a_url_without_a_password_when_redacted_then_it_is_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_given_text_quoting_urls_when_redacted_then_every_password_is_masked() -> None:
    text = ("Error connecting to 'redis://:s3cret@cache:6379/0' (broker "
            "redis://router:s3cret@broker:6379/1); state sqlite:///x.db")

    assert redact_urls(text) == (
        "Error connecting to 'redis://:***@cache:6379/0' (broker "
        "redis://router:***@broker:6379/1); state sqlite:///x.db")
    assert redact_urls("no url here") == "no url here"
