"""The history tasks in this process: flush and prune bodies, and the worker's schema check."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.settings import Settings
from sync.history import History
from tasks.celery_app import (
    FLUSH_TASK,
    PRUNE_TASK,
    ROUTE_PRIORITY,
    SWEEP_PRIORITY,
    beat_schedule,
)
from tasks.history import flush_outbox, prune, prune_history, schema_problem
from tests.loopback import free_port
from tests.sync.state.test_contract import decision
from tests.tasks.test_celery import ROOT


@pytest.fixture
def history_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    with History(url) as history:
        history.upgrade()
    yield url


def service(redis_url: str, database_url: str | None) -> Settings:
    return Settings(redis_url=redis_url, state_url=redis_url, database_url=database_url)


def test_given_the_beat_schedule_then_it_flushes_every_two_seconds_and_prunes_daily():
    schedule = beat_schedule(Settings())

    assert schedule["history flush"]["task"] == FLUSH_TASK == "history.flush"
    assert schedule["history flush"]["schedule"] == 2.0
    assert schedule["history prune"]["task"] == PRUNE_TASK == "history.prune"
    assert schedule["history prune"]["schedule"] == 24 * 3600.0
    # After webhook batches, before sweep pages (kombu's Redis transport: 0 goes first).
    assert ROUTE_PRIORITY < schedule["history flush"]["options"]["priority"] < SWEEP_PRIORITY


def test_given_service_mode_when_the_flush_task_body_runs_then_the_outbox_moves_to_sql(
        redis_url, redis_store, history_url):
    redis_store.commit({}, [], [decision("a"), decision("b")])

    moved = flush_outbox(service(redis_url, history_url))

    assert moved == 2 and redis_store.outbox_size() == 0
    with History(history_url) as history:
        assert {d.record_id for d in history.decisions()} == {"a", "b"}


def test_given_an_unreachable_database_when_the_flush_task_body_runs_then_it_logs_and_waits(
        redis_url, redis_store, caplog):
    redis_store.commit({}, [], [decision("a")])
    down = f"postgresql+psycopg://router:pw-in-url@127.0.0.1:{free_port()}/history"

    with caplog.at_level(logging.WARNING):
        moved = flush_outbox(service(redis_url, down))

    assert moved == 0 and redis_store.outbox_size() == 1
    assert "1 decisions wait in the outbox" in caplog.text
    assert "pw-in-url" not in caplog.text


def test_given_the_state_redis_unreachable_when_the_flush_task_body_runs_then_it_logs_and_waits(
        history_url, caplog):
    gone = f"redis://:pw-in-url@127.0.0.1:{free_port()}/0"

    with caplog.at_level(logging.WARNING):
        moved = flush_outbox(service(gone, history_url))

    assert moved == 0
    assert "the outbox waits" in caplog.text and "pw-in-url" not in caplog.text


def test_given_embedded_state_when_the_flush_task_body_runs_then_there_is_nothing_to_move(
        tmp_path):
    assert flush_outbox(Settings(state_url=f"sqlite:///{tmp_path / 'state.db'}")) == 0


def test_given_service_mode_when_pruning_then_decisions_past_the_retention_go(
        redis_url, history_url):
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    with History(history_url) as history:
        history.record([(1, decision("old", at=now - timedelta(days=8))),
                        (2, decision("new", at=now - timedelta(days=6)))])
        settings = service(redis_url, history_url).model_copy(
            update={"history_retention_days": 7})

        assert prune_history(settings, now=now) == 1
        assert [d.record_id for d in history.decisions()] == ["new"]


def test_given_an_unreachable_database_when_beats_prune_task_runs_then_one_line_and_zero(
        redis_url, monkeypatch, caplog):
    down = f"postgresql+psycopg://router:pw-in-url@127.0.0.1:{free_port()}/history"
    for name, value in {"ACCOUNT_ROUTER_REDIS_URL": redis_url,
                        "ACCOUNT_ROUTER_STATE_URL": redis_url,
                        "ACCOUNT_ROUTER_DATABASE_URL": down}.items():
        monkeypatch.setenv(name, value)

    with caplog.at_level(logging.WARNING):
        removed = prune.apply().get()

    assert removed == 0
    assert "history prune: history database unavailable" in caplog.text
    assert "pw-in-url" not in caplog.text


# --- workers start only on a current schema ---------------------------------------------------


def test_given_a_current_schema_then_the_worker_may_start(redis_url, history_url):
    assert schema_problem(service(redis_url, history_url)) is None


def test_given_a_database_without_the_schema_then_the_problem_names_db_upgrade(
        redis_url, tmp_path):
    problem = schema_problem(service(redis_url, f"sqlite:///{tmp_path / 'empty.db'}"))

    assert problem is not None and "account-router db upgrade" in problem


def test_given_service_mode_without_a_database_url_then_the_problem_names_the_setting(
        redis_url):
    problem = schema_problem(service(redis_url, None))

    assert problem is not None and "ACCOUNT_ROUTER_DATABASE_URL" in problem


def test_given_an_unreachable_database_then_the_worker_starts_and_the_outbox_waits(
        redis_url, caplog):
    down = f"postgresql+psycopg://router:pw-in-url@127.0.0.1:{free_port()}/history"

    with caplog.at_level(logging.WARNING):
        assert schema_problem(service(redis_url, down)) is None

    assert "not checked at start" in caplog.text and "pw-in-url" not in caplog.text


def test_given_embedded_state_then_no_database_is_checked(tmp_path):
    # The SQLite state store upgrades the history in its own file when it opens it.
    assert schema_problem(Settings(state_url=f"sqlite:///{tmp_path / 'state.db'}")) is None
    assert not (tmp_path / "state.db").exists()


def test_given_an_out_of_date_schema_when_a_worker_starts_then_it_exits_2_naming_db_upgrade(
        redis_url, tmp_path):
    env = {**os.environ, "ACCOUNT_ROUTER_REDIS_URL": redis_url,
           "ACCOUNT_ROUTER_STATE_URL": redis_url,
           "ACCOUNT_ROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'never-upgraded.db'}"}

    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool", "solo",
         "--loglevel", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert "account-router worker not started" in done.stderr
    assert "run `account-router db upgrade`" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
