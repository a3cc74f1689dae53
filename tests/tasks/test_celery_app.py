"""The Celery app takes its broker options and beat schedule from the loaded settings."""

from __future__ import annotations

from config.settings import Settings
from tasks.celery_app import broker_transport_options, make_app


def test_given_a_short_visibility_timeout_when_the_app_is_made_then_the_broker_uses_it(
        monkeypatch):
    monkeypatch.setenv("ACCOUNT_ROUTER_VISIBILITY_TIMEOUT", "5")
    monkeypatch.setenv("ACCOUNT_ROUTER_SWEEP_SCHEDULE", "hubspot:Companies=300")
    app = make_app(current=False)
    options = app.conf.broker_transport_options
    # Shorter than the default: abandoned messages are also looked for every second.
    assert options == {"visibility_timeout": 5.0, "unacked_restore_interval": 1,
                       "unacked_restore_throttle": 1}
    assert list(app.conf.beat_schedule) == ["sweep hubspot:companies", "history flush",
                                            "history prune", "sla check", "review expire"]
    assert app.conf.beat_schedule["review expire"]["task"] == "review.expire"
    assert app.conf.beat_schedule["review expire"]["schedule"] == 60.0
    assert broker_transport_options(Settings(visibility_timeout=60)) == {"visibility_timeout": 60.0}
