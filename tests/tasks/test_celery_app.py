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


def test_given_notify_tasks_when_routed_then_they_go_to_their_own_queue_which_workers_also_consume(
        monkeypatch):
    monkeypatch.setenv("ACCOUNT_ROUTER_SLACK_TOKEN", "xoxb-x")
    app = make_app(current=False)
    router = app.amqp.router
    assert router.route({}, "notify.send")["queue"].name == "notify"
    assert router.route({}, "notify.drain")["queue"].name == "notify"
    assert router.route({}, "account_router.route")["queue"].name == "celery"
    # A worker started without -Q consumes every declared queue: notices are never stranded.
    assert {q.name for q in app.conf.task_queues} == {"celery", "notify"}
    assert app.conf.beat_schedule["notify drain"]["task"] == "notify.drain"


def test_given_no_channel_configured_when_building_beat_then_there_is_no_notify_drain(monkeypatch):
    monkeypatch.delenv("ACCOUNT_ROUTER_SLACK_TOKEN", raising=False)
    monkeypatch.delenv("ACCOUNT_ROUTER_SMTP_URL", raising=False)
    assert "notify drain" not in make_app(current=False).conf.beat_schedule
