"""The history outbox with real parts: redis-server, PostgreSQL stopped and restarted mid-sweep,
`celery -A tasks worker` and `celery -A tasks beat` subprocesses, and the CRM simulator."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import tasks.history  # noqa: F401 - registers the history tasks on the app
from connectors.settings import Settings
from sync.history import History
from sync.models import Decision
from sync.state.redis import RedisStateStore
from tasks.celery_app import app, beat_schedule
from tasks.queue import enqueue_sweep
from tests.builders import unowned
from tests.servers.postgres import PostgresServer
from tests.sync.state.test_contract import decision
from tests.tasks.test_distributed import (
    OBJ,
    Workers,
    WriteCounter,
    beat,
    chain_finished,
    running_crm,
    seeded,
    wait_for,
)

COMPANIES = 1500
# Per simulator call: the sweep of 1,500 companies lasts some seconds, long enough to take
# PostgreSQL away in the middle of it and keep routing without it.
LATENCY_MS = 60


def stored(history: History) -> list[tuple[int, Decision]]:
    """Every decision in the history with its id, newest first."""
    return history.decision_ids()


def test_given_postgresql_stopped_mid_sweep_when_it_returns_then_every_decision_lands_once(
        redis_url, postgres_server: PostgresServer, postgres_url, monkeypatch, tmp_path):
    # Given: a service deployment (Redis state and broker, PostgreSQL history, a worker and
    # beat flushing the outbox every 2 s) and 1,500 companies, most unowned, behind a slow CRM.
    database = postgres_url  # a fresh database on `postgres_server`, stopped below
    with History(database) as setup:
        setup.upgrade()
    sim = seeded(COMPANIES, seed=23)
    sim.configure_faults(latency_ms=LATENCY_MS)
    todo = set(unowned(sim))
    writes = WriteCounter(sim)
    workers = Workers(tmp_path)
    history = History(database)
    with running_crm(sim, redis_url, monkeypatch, database), beat(tmp_path):
        store = RedisStateStore(redis_url)
        try:
            # Prefork, two children: flushes and sweep pages run in forked processes, each
            # with its own database and Redis connections.
            workers.start(concurrency=2)
            enqueue_sweep("hubspot", OBJ)
            wait_for(lambda: len(stored(history)) > 0, workers, "a first flush into PostgreSQL")

            # When: PostgreSQL stops mid-sweep.
            postgres_server.stop()
            at_stop = writes.total
            assert unowned(sim), "the sweep finished before PostgreSQL could be stopped"
            # Then: routing and CRM writes go on, and the decisions wait in the outbox.
            wait_for(lambda: writes.total >= at_stop + 200, workers, "writes without PostgreSQL")
            wait_for(lambda: store.outbox_size() >= 200, workers, "the outbox to grow")
            # ... while the flushes fail, saying so without the database's password.
            wait_for(lambda: "history database unavailable" in workers.logs_text(), workers,
                     "a failed flush in the worker log")
            waiting = store.outbox_size()

            # When: PostgreSQL is back.
            postgres_server.start()
            # Then: the sweep ends, the outbox drains, and every decision is stored once.
            wait_for(lambda: not unowned(sim) and chain_finished(store), workers,
                     "the sweep to finish")
            wait_for(lambda: store.outbox_size() == 0, workers, "the outbox to drain")
            rows = stored(history)
            assert len(rows) >= waiting
            ids = [i for i, _ in rows]
            assert len(ids) == len(set(ids))
            # Each company the sweep wrote has exactly one decision in the history, written;
            # nothing the workers decided is missing (each company is decided once per sweep).
            per_record = Counter(d.record_id for _, d in rows)
            assert max(per_record.values()) == 1, per_record.most_common(3)
            written = {d.record_id for _, d in rows if d.written_at is not None}
            assert written == set(writes.counts) and todo <= written
            assert store.outbox_dead() == 0
        finally:
            if not postgres_server.running:
                postgres_server.start()
            workers.stop_all()
            store.close()
            history.close()


def test_given_old_and_recent_decisions_in_postgresql_when_beats_prune_task_runs_then_the_old_go(
        redis_url, postgres_url, monkeypatch):
    # Given: service settings with a 30-day retention, and decisions 40 and 10 days old.
    for name, value in {"ACCOUNT_ROUTER_REDIS_URL": redis_url,
                        "ACCOUNT_ROUTER_STATE_URL": redis_url,
                        "ACCOUNT_ROUTER_DATABASE_URL": postgres_url,
                        "ACCOUNT_ROUTER_HISTORY_RETENTION_DAYS": "30"}.items():
        monkeypatch.setenv(name, value)
    now = datetime.now(UTC)
    with History(postgres_url) as history:
        history.upgrade()
        history.record([(1, decision("old-1", at=now - timedelta(days=40))),
                        (2, decision("old-2", at=now - timedelta(days=31))),
                        (3, decision("recent", at=now - timedelta(days=10)))])
        # When: the task beat's schedule names runs (in this process).
        task = app.tasks[beat_schedule(Settings())["history prune"]["task"]]
        removed = task.apply().get()

        # Then: only the decisions past the retention are gone.
        assert removed == 2
        assert [d.record_id for d in history.decisions()] == ["recent"]
