"""Notifications with real Celery workers and Redis: a worker SIGKILLed in the middle of a batch
of notices, its `notify.send` redelivered to another, and nobody told twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

from connectors.simulator.slack import TOKEN, FakeSlack, Posted
from sync.compiler import load_routing
from sync.history import History
from sync.history.outbox import drain
from sync.state import open_store
from sync.state.redis import RedisStateStore
from tasks.notify import RedisNotices
from tasks.queue import enqueue_route, flush
from tests.builders import unowned
from tests.tasks.test_celery import EXAMPLE
from tests.tasks.test_distributed import Workers, running_crm, seeded, wait_for

OBJ = "companies"
KILL_AT = 8  # the worker dies as Slack receives this many messages


class KillOnPost:
    """SIGKILLs the worker from inside Slack's answer to the nth message: the message arrived,
    the worker never learns it did, and its `notify.send` is not acknowledged."""

    def __init__(self, slack: FakeSlack, at: int) -> None:
        self.at = at
        self.victim: subprocess.Popen[bytes] | None = None
        self.killed = threading.Event()
        slack.on_post = self

    def __call__(self, posted: Posted) -> None:
        victim = self.victim
        if victim is not None and not self.killed.is_set() and self.at <= 1:
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            self.killed.set()
        self.at -= 1


def test_given_a_worker_killed_mid_batch_of_notices_when_the_task_is_redelivered_then_each_rep_hears_once(  # noqa: E501
        redis_url, monkeypatch, tmp_path: Path) -> None:
    routing = load_routing(EXAMPLE)
    users = {rep.email: f"U0{rep.id.upper()}" for rep in routing.reps.values() if rep.email}
    sim = seeded(120, seed=23)
    todo = unowned(sim)[:30]
    workers = Workers(tmp_path)
    with FakeSlack(users=users, delay=0.02) as slack, \
            running_crm(sim, redis_url, monkeypatch):
        monkeypatch.setenv("ACCOUNT_ROUTER_SLACK_TOKEN", TOKEN)
        monkeypatch.setenv("ACCOUNT_ROUTER_SLACK_BASE_URL", slack.base_url)
        monkeypatch.delenv("ACCOUNT_ROUTER_SMTP_URL", raising=False)
        monkeypatch.setenv("HUBSPOT_PORTAL_ID", "62515")
        kill = KillOnPost(slack, KILL_AT)
        store = open_store(redis_url)
        assert isinstance(store, RedisStateStore)
        waiting = RedisNotices(store, enqueue=False)
        try:
            first = workers.start()
            kill.victim = first
            # When: one batch of new companies is routed; the worker writes the owners, parks
            # a notice per company and starts sending them, and dies at the KILL_AT-th.
            enqueue_route("hubspot", OBJ, todo, "webhook")
            flush()
            assert kill.killed.wait(timeout=60), workers.logs_text()
            assert first.returncode == -signal.SIGKILL
            assert len(slack.posted) == KILL_AT
            # A second worker gets the unacknowledged `notify.send` once the visibility
            # timeout passes, and sends the rest.
            workers.start()
            wait_for(lambda: waiting.size() == 0 and len(slack.posted) >= len(todo), workers,
                     "the notices to be sent")
        finally:
            workers.stop_all()
        try:
            # Then: every company was written once, and its new owner heard exactly once.
            with History(os.environ["ACCOUNT_ROUTER_DATABASE_URL"]) as history:
                drain(store, history, budget_seconds=30)
                written = [d for d in history.decisions() if d.written_at is not None]
                events = history.events(kind="notified")
        finally:
            store.close()
    assert {d.record_id for d in written} == set(todo)
    per_record = Counter(_record_of(p) for p in slack.posted)
    assert per_record == Counter({record: 1 for record in todo}), per_record
    for d in written:
        assert [_record_of(p) for p in slack.messages_to(f"U0{d.owner.upper()}")].count(
            d.record_id) == 1
    # The message in flight at the kill went out but its worker could not record it; every
    # other one is in the history.
    assert len(todo) - 1 <= len(events) <= len(todo)


def _record_of(posted: Posted) -> str:
    found = re.search(r"/record/0-2/(\w+)", posted.text)  # the CRM link in the text fallback
    assert found, posted.text
    return found[1]
