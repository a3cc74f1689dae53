"""Typed settings from the environment; secrets are marked and never printed.

See docs/operations.md#settings.
"""

from __future__ import annotations

import math
import os
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_STATE_URL = "sqlite:///account-router-state.db"
# Tasks are one page or one batch (docs/operations.md#tasks-and-delivery), so a minute is ample for
# the broker to wait before handing a killed worker's message to another.
DEFAULT_VISIBILITY_TIMEOUT_SECONDS = 60.0
SWEEP_SCHEDULE_ENV = "ACCOUNT_ROUTER_SWEEP_SCHEDULE"
VISIBILITY_TIMEOUT_ENV = "ACCOUNT_ROUTER_VISIBILITY_TIMEOUT"
DEFAULT_SLACK_BASE_URL = "https://slack.com/api/"
SMTP_SCHEMES = ("smtp", "smtps")


def _positive_seconds(raw: object, where: str) -> float:
    """`raw` as a positive, finite number of seconds; ValueError naming `where` otherwise."""
    try:
        seconds = float(str(raw).strip())
    except ValueError:
        raise ValueError(f"{where}: {raw!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{where}: {raw!r} is not a positive, finite number of seconds")
    return seconds


def parse_sweep_schedule(text: str) -> dict[tuple[str, str], float]:
    """`hubspot:companies=300,salesforce:Lead=60` -> {(crm, object as written): seconds}.

    ValueError naming the variable and the bad entry, so a typo fails when the settings load, not by
    a sweep silently never running. Object names are the connectors' to canonicalise
    (tasks/celery_app.py): config depends on nothing of ours
    (docs/connectors.md#where-connectors-sit)."""
    schedule: dict[tuple[str, str], float] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        target, sep, seconds = entry.partition("=")
        crm, colon, obj = target.strip().partition(":")
        if not sep or not colon or not crm.strip() or not obj.strip():
            raise ValueError(f"{SWEEP_SCHEDULE_ENV} entry {entry!r}: expected "
                             f"crm:object=seconds, e.g. mycrm:accounts=300")
        where = f"{SWEEP_SCHEDULE_ENV} entry {entry!r}"
        schedule[(crm.strip().lower(), obj.strip())] = _positive_seconds(seconds.strip(), where)
    return schedule


def smtp_url_problem(url: str) -> str | None:
    """Why `url` is not a usable SMTP URL (without quoting it: it holds a password), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "expected smtp://user:password@host:port or smtps://..., found an unreadable URL"
    if parts.scheme.lower() not in SMTP_SCHEMES:
        return (f"expected the scheme smtp:// or smtps://, found "
                f"{parts.scheme + '://' if parts.scheme else 'none'}")
    if not parts.hostname:
        return "expected a host, as in smtp://user:password@smtp.example.com:587"
    if port == 0:
        return "expected a port from 1 to 65535"
    return None


class Settings(BaseSettings):
    """Read fresh where needed (`Settings()`), never held in a module global. These are the
    core's; the connectors' own (credentials, base URLs) are added by `connectors.settings`."""

    model_config = SettingsConfigDict(env_prefix="ACCOUNT_ROUTER_", extra="ignore")

    config: str | None = None  # ACCOUNT_ROUTER_CONFIG: the routing file
    redis_url: str | None = None  # broker and state; unset means embedded SQLite state
    state_url: str | None = None  # overrides where state lives
    api_token: SecretStr | None = None
    public_url: str | None = None
    recheck_after_seconds: float = Field(default=30.0, ge=0)
    # ACCOUNT_ROUTER_BATCH_WINDOW_MS: how long webhook and reprocess ids wait to be coalesced
    # into one `route` task (at most 100 ids). Shorter means faster owners but more CRM calls
    # per event; the bound is 250 ms.
    batch_window_ms: float = Field(default=100.0, gt=0, le=250)
    # ACCOUNT_ROUTER_SWEEP_SCHEDULE: beat's sweeps, `crm:object=seconds,...`
    # (e.g. `hubspot:companies=300,salesforce:Lead=60`); empty means no scheduled sweeps.
    # Parsed here, at load; NoDecode because it is our own syntax, not JSON.
    sweep_schedule: Annotated[dict[tuple[str, str], Annotated[float, Field(gt=0)]], NoDecode] \
        = Field(default_factory=dict)
    # ACCOUNT_ROUTER_VISIBILITY_TIMEOUT: seconds before the Redis broker hands an unacknowledged
    # message (a killed worker's) to another worker. Tests that kill workers shorten it.
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT_SECONDS
    # ACCOUNT_ROUTER_CRM_TIMEOUT_SECONDS: the read timeout of every CRM call, after which the
    # transport retries it. Unset keeps each vendor's default (HubSpot 60 s, Salesforce 120 s,
    # sized for slow SOQL); lower it where a stalled call should give way to a retry sooner.
    crm_timeout_seconds: float | None = Field(default=None, gt=0)
    # ACCOUNT_ROUTER_LIST_ROOTS: folders, besides the routing file's own, where a list's
    # `file:` may point; separated like PATH (`/srv/lists:/data/territories`). By default a list
    # file must resolve inside the routing file's folder, so a routing file cannot make a worker
    # read (and quote) /proc/self/environ or ~/.ssh.
    list_roots: Annotated[tuple[str, ...], NoDecode] = ()
    # ACCOUNT_ROUTER_DATABASE_URL: the decision history's database (docs/operations.md#decision-
    # history): `postgresql+psycopg://user:password@host:5432/db` in service mode; unset in
    # embedded mode, where the history lives in the SQLite state file itself.
    database_url: str | None = None
    # ACCOUNT_ROUTER_HISTORY_RETENTION_DAYS: decisions older than this are pruned (beat, daily;
    # `account-router db prune`).
    history_retention_days: int = Field(default=90, ge=1)
    # Notifications (docs/operations.md#notifications): a channel is on when it is configured
    # here and listed in the routing file's `notify.channels`.
    # ACCOUNT_ROUTER_SLACK_TOKEN: the Slack app's bot token (xoxb-...).
    slack_token: SecretStr | None = None
    # ACCOUNT_ROUTER_SLACK_BASE_URL: the Slack Web API (tests and proxies stand in for it).
    slack_base_url: str = DEFAULT_SLACK_BASE_URL
    # ACCOUNT_ROUTER_SMTP_URL: `smtp://user:password@host:587` (STARTTLS when the server offers
    # it) or `smtps://...:465`; secret, since it carries the password.
    smtp_url: SecretStr | None = None
    # ACCOUNT_ROUTER_MAIL_FROM: the From address of notification emails.
    mail_from: str | None = Field(default=None, validate_default=True)
    # ACCOUNT_ROUTER_SLA_CHECK_SECONDS: how often beat runs the first-touch SLA pass
    # (docs/operations.md#first-touch-sla); a breach is acted on at most this long after its
    # deadline.
    sla_check_seconds: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("sweep_schedule", mode="before")
    @classmethod
    def _read_sweep_schedule(cls, value: object) -> object:
        return parse_sweep_schedule(value) if isinstance(value, str) else value

    @field_validator("visibility_timeout", mode="before")
    @classmethod
    def _read_visibility_timeout(cls, value: object) -> float:
        if isinstance(value, str) and not value.strip():  # set but blank: the default, as unset
            return DEFAULT_VISIBILITY_TIMEOUT_SECONDS
        return _positive_seconds(value, VISIBILITY_TIMEOUT_ENV)

    @field_validator("list_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part for part in value.split(os.pathsep) if part.strip())
        return value

    @field_validator("slack_token")
    @classmethod
    def _blank_token_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("slack_base_url")
    @classmethod
    def _check_slack_base_url(cls, value: str) -> str:
        text = value.strip()
        if not text:
            return DEFAULT_SLACK_BASE_URL
        if not text.lower().startswith(("https://", "http://")):
            raise ValueError("ACCOUNT_ROUTER_SLACK_BASE_URL: expected an http(s):// URL such as "
                             f"{DEFAULT_SLACK_BASE_URL}")
        # slack-sdk joins the method name onto it: `.../api` and `.../api/` must both work.
        return text if text.endswith("/") else text + "/"

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        problem = smtp_url_problem(value.get_secret_value().strip())
        if problem:
            # The URL itself is never quoted: it carries the password.
            raise ValueError(problem)
        return SecretStr(value.get_secret_value().strip())

    @field_validator("mail_from")
    @classmethod
    def _mail_from_with_smtp(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Checked at load, not at the first email: a worker must not route for hours and only
        # then find it cannot say who the mail is from.
        text = (value or "").strip() or None
        if text is None and info.data.get("smtp_url") is not None:
            raise ValueError("ACCOUNT_ROUTER_SMTP_URL is set but this is not: the From address "
                             "of notification emails, e.g. router@example.com")
        if text is not None and ("@" not in text or any(c in text for c in "\r\n")):
            raise ValueError("expected an email address such as router@example.com")
        return text

    def resolved_state_url(self, override: str | None = None) -> str:
        """--state wins, then ACCOUNT_ROUTER_STATE_URL, then the Redis URL, then SQLite."""
        return override or self.state_url or self.redis_url or DEFAULT_STATE_URL

    def resolved_database_url(self, state_url: str | None = None) -> str:
        """The history's database: ACCOUNT_ROUTER_DATABASE_URL, else (embedded mode, SQLite
        state) the state file itself. Service mode (Redis state) has no file to fall back on:
        ValueError naming the setting."""
        if self.database_url and self.database_url.strip():
            return self.database_url.strip()
        state = (state_url or self.resolved_state_url()).strip()
        if state.startswith("sqlite:"):
            return state
        raise ValueError(
            "ACCOUNT_ROUTER_DATABASE_URL is not set: with Redis state (service mode) the "
            "decision history needs a database, e.g. "
            "ACCOUNT_ROUTER_DATABASE_URL=postgresql+psycopg://USER:PASSWORD@HOST:5432/DB"
        )
