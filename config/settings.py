"""Typed settings from the environment (DESIGN.md §6); secrets are marked and never printed."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    def resolved_state_url(self, override: str | None = None) -> str:
        """--state wins, then ACCOUNT_ROUTER_STATE_URL, then the Redis URL, then SQLite."""
        return override or self.state_url or self.redis_url or DEFAULT_STATE_URL
