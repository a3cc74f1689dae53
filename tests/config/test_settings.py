"""Settings validate at load: a bad value names its environment variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.settings import DEFAULT_VISIBILITY_TIMEOUT_SECONDS, Settings


def test_given_no_environment_when_loaded_then_a_minute_visibility_and_no_sweeps(monkeypatch):
    monkeypatch.delenv("ACCOUNT_ROUTER_VISIBILITY_TIMEOUT", raising=False)
    monkeypatch.delenv("ACCOUNT_ROUTER_SWEEP_SCHEDULE", raising=False)
    settings = Settings()
    assert settings.visibility_timeout == DEFAULT_VISIBILITY_TIMEOUT_SECONDS == 60.0
    assert settings.sweep_schedule == {}
    monkeypatch.setenv("ACCOUNT_ROUTER_VISIBILITY_TIMEOUT", " ")  # blank reads as unset
    assert Settings().visibility_timeout == 60.0


def test_given_schedule_and_visibility_in_the_environment_when_loaded_then_parsed(monkeypatch):
    monkeypatch.setenv("ACCOUNT_ROUTER_SWEEP_SCHEDULE",
                       "HubSpot:companies=300, salesforce:Lead=1.5,")
    monkeypatch.setenv("ACCOUNT_ROUTER_VISIBILITY_TIMEOUT", " 2.5 ")
    settings = Settings()
    assert settings.sweep_schedule == {("hubspot", "companies"): 300.0,
                                       ("salesforce", "Lead"): 1.5}
    assert settings.visibility_timeout == 2.5


@pytest.mark.parametrize("bad", ["hubspot=300", "hubspot:companies", ":companies=3",
                                 "hubspot:companies=soon", "hubspot:companies=0",
                                 "hubspot:companies=-5", "hubspot:companies=inf",
                                 "hubspot:companies=nan"])
def test_given_a_bad_schedule_entry_when_loaded_then_the_variable_and_entry_are_named(
        monkeypatch, bad):
    monkeypatch.setenv("ACCOUNT_ROUTER_SWEEP_SCHEDULE", f"salesforce:Lead=60,{bad}")
    with pytest.raises(ValidationError, match=f"ACCOUNT_ROUTER_SWEEP_SCHEDULE entry '{bad}'"):
        Settings()


@pytest.mark.parametrize("bad", ["soon", "0", "-1", "inf", "nan"])
def test_given_a_bad_visibility_timeout_when_loaded_then_the_variable_is_named(monkeypatch, bad):
    monkeypatch.setenv("ACCOUNT_ROUTER_VISIBILITY_TIMEOUT", bad)
    with pytest.raises(ValidationError, match="ACCOUNT_ROUTER_VISIBILITY_TIMEOUT"):
        Settings()
