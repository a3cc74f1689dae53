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


def test_given_no_notify_settings_when_loaded_then_slack_defaults_to_slack_com_and_no_smtp(
        monkeypatch):
    for name in ("SLACK_TOKEN", "SLACK_BASE_URL", "SMTP_URL", "MAIL_FROM"):
        monkeypatch.delenv(f"ACCOUNT_ROUTER_{name}", raising=False)
    settings = Settings()
    assert settings.slack_base_url == "https://slack.com/api/"
    assert settings.slack_token is None and settings.smtp_url is None


def test_given_smtp_settings_when_loaded_then_the_url_is_secret_and_the_slack_url_gets_a_slash(
        monkeypatch):
    monkeypatch.setenv("ACCOUNT_ROUTER_SMTP_URL", "smtp://router:hunter2@mail.example.com:587")
    monkeypatch.setenv("ACCOUNT_ROUTER_MAIL_FROM", "router@example.com")
    monkeypatch.setenv("ACCOUNT_ROUTER_SLACK_BASE_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("ACCOUNT_ROUTER_SLACK_TOKEN", "xoxb-secret")
    settings = Settings()
    assert "hunter2" not in repr(settings) and "xoxb-secret" not in repr(settings)
    assert settings.slack_base_url == "http://127.0.0.1:9/api/"


@pytest.mark.parametrize(("url", "mail_from", "expected"), [
    ("ftp://u:hunter2@h", "a@b.c", "smtp:// or smtps://"),
    ("smtp://u:hunter2@:25", "a@b.c", "expected a host"),
    ("smtp://u:hunter2@h:99999", "a@b.c", "unreadable URL"),
    ("smtp://u:hunter2@h:25", None, "ACCOUNT_ROUTER_SMTP_URL is set"),
    ("smtp://u:hunter2@h:25", "no-at-sign", "an email address"),
])
def test_given_a_bad_smtp_setting_when_loaded_then_it_is_refused_without_the_password(
        monkeypatch, url, mail_from, expected):
    monkeypatch.setenv("ACCOUNT_ROUTER_SMTP_URL", url)
    if mail_from is None:
        monkeypatch.delenv("ACCOUNT_ROUTER_MAIL_FROM", raising=False)
    else:
        monkeypatch.setenv("ACCOUNT_ROUTER_MAIL_FROM", mail_from)
    with pytest.raises(ValidationError) as caught:
        Settings()
    # As the CLI shows it (tasks/cli/common.py settings_problem): messages, never the input.
    problem = " ".join(e["msg"] for e in caught.value.errors(include_input=False))
    assert expected in problem and "hunter2" not in problem
