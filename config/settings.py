"""Typed settings from the environment (DESIGN.md §6); secrets are marked and never printed."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STATE_URL = "sqlite:///account-router-state.db"


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
    sweep_schedule: str = ""
    # ACCOUNT_ROUTER_CRM_TIMEOUT_SECONDS: the read timeout of every CRM call, after which the
    # transport retries it. Unset keeps each vendor's default (HubSpot 60 s, Salesforce 120 s,
    # sized for slow SOQL); lower it where a stalled call should give way to a retry sooner.
    crm_timeout_seconds: float | None = Field(default=None, gt=0)

    def resolved_state_url(self, override: str | None = None) -> str:
        """--state wins, then ACCOUNT_ROUTER_STATE_URL, then the Redis URL, then SQLite."""
        return override or self.state_url or self.redis_url or DEFAULT_STATE_URL
