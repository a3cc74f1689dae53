"""Typed settings from the environment (DESIGN.md §6); secrets are marked and never printed."""

from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_STATE_URL = "sqlite:///account-router-state.db"


class Settings(BaseSettings):
    """Read fresh where needed (`Settings()`), never held in a module global."""

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
    # ACCOUNT_ROUTER_LIST_ROOTS: folders, besides the routing file's own, where a list's
    # `file:` may point; separated like PATH (`/srv/lists:/data/territories`). By default a list
    # file must resolve inside the routing file's folder, so a routing file cannot make a worker
    # read (and quote) /proc/self/environ or ~/.ssh.
    list_roots: Annotated[tuple[str, ...], NoDecode] = ()

    # Vendor settings keep the vendors' conventional names (DESIGN.md §6), so no prefix.
    hubspot_access_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("HUBSPOT_ACCESS_TOKEN"))
    hubspot_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("HUBSPOT_WEBHOOK_SECRET"))
    hubspot_base_url: str = "https://api.hubapi.com"  # ACCOUNT_ROUTER_HUBSPOT_BASE_URL
    # Calls per 10 s this app may spend on one HubSpot account (burst limit 100-250 per 10 s).
    hubspot_calls_per_10s: float = Field(default=90.0, gt=0)
    salesforce_instance_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_INSTANCE_URL"))
    salesforce_access_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_ACCESS_TOKEN"))
    salesforce_username: str | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_USERNAME"))
    salesforce_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_PASSWORD"))
    salesforce_security_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_SECURITY_TOKEN"))
    salesforce_domain: str = Field(
        default="login", validation_alias=AliasChoices("SALESFORCE_DOMAIN"))
    salesforce_consumer_key: str | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_CONSUMER_KEY"))
    salesforce_private_key_file: str | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_PRIVATE_KEY_FILE"))
    salesforce_api_version: str = Field(
        default="62.0", validation_alias=AliasChoices("SALESFORCE_API_VERSION"))
    salesforce_calls_per_second: float = Field(default=20.0, gt=0)
    csv_input: str | None = None  # ACCOUNT_ROUTER_CSV_INPUT: the file the csv connector routes
    csv_output: str | None = None  # ACCOUNT_ROUTER_CSV_OUTPUT: where its owners are written
    # Outbound Messages (DESIGN.md §6): the org that may call us, and an optional shared secret.
    salesforce_org_id: str | None = Field(
        default=None, validation_alias=AliasChoices("SALESFORCE_ORG_ID"))
    salesforce_webhook_secret: SecretStr | None = None  # ACCOUNT_ROUTER_SALESFORCE_WEBHOOK_SECRET

    @field_validator("list_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part for part in value.split(os.pathsep) if part.strip())
        return value

    def resolved_state_url(self, override: str | None = None) -> str:
        """--state wins, then ACCOUNT_ROUTER_STATE_URL, then the Redis URL, then SQLite."""
        return override or self.state_url or self.redis_url or DEFAULT_STATE_URL
