"""Notifications in this deployment: channels from the settings, the follower, `notify.send`.

Embedded (SQLite state): the follower sends inline, right after the write. Service (Redis
state): the follower parks each notice in a Redis hash and enqueues `notify.send` with their
keys; beat's `notify.drain` sends whatever a killed worker or a retryable failure left there.
Either way a notice is claimed (`StateStore.seen`) before it is sent, so it goes out at most
once per decision, channel and person (docs/operations.md#notifications).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import redis
from celery.signals import worker_process_init
from celery.utils.log import get_task_logger

from config.settings import Settings
from connectors.links import CrmLinks
from connectors.notify.email import EmailSender
from connectors.notify.slack import SlackSender
from connectors.settings import Settings as FullSettings
from sync.compiler import CompiledRouting
from sync.notify import Notice, Notifier, Outcomes, Sender, deliver, senders_by_channel
from sync.ports import AfterWrite
from sync.state import open_store
from sync.state.base import StateStore
from sync.state.redis import RedisStateStore
from tasks.celery_app import NOTIFY_DRAIN_TASK, NOTIFY_PRIORITY, NOTIFY_TASK, app

log = get_task_logger(__name__)

PENDING_KEY = "notify:pending"  # under the state store's prefix: hash notice key -> JSON
# One drain pass sends at most this many notices; the rest wait for the next beat start.
DRAIN_BATCH = 200
# The drain leaves a notice no attempt has been made on yet to its own `notify.send` for this
# long after the write: taking it at the same moment would only race that task (the claim
# decides who sends, but the loser's clean-up could remove a notice the winner puts back).
DRAIN_GRACE_SECONDS = 60.0

# Senders per process, by their settings: the Slack sender caches looked-up user ids.
_senders: dict[tuple[str, ...], list[Sender]] = {}
_senders_lock = threading.Lock()


# The state store per state URL per process, for the tasks (the drain runs every 30 s).
_stores: dict[str, StateStore] = {}


@worker_process_init.connect
def _fresh_after_fork(**_: object) -> None:
    # Sockets must not cross a fork: each pool process opens its own.
    with _senders_lock:
        _senders.clear()
        _stores.clear()


def _store(settings: Settings) -> StateStore:
    url = settings.resolved_state_url()
    with _senders_lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = open_store(url)
        return store


def senders_for(settings: Settings) -> list[Sender]:
    """The channels these settings configure: Slack with a token, email with an SMTP URL."""
    token = settings.slack_token.get_secret_value() if settings.slack_token else ""
    smtp = settings.smtp_url.get_secret_value() if settings.smtp_url else ""
    key = (token, settings.slack_base_url, smtp, settings.mail_from or "")
    with _senders_lock:
        found = _senders.get(key)
        if found is None:
            found = []
            if token:
                found.append(SlackSender(token, settings.slack_base_url))
            if smtp and settings.mail_from:
                found.append(EmailSender(smtp, settings.mail_from))
            _senders[key] = found
        return found


def links_for(settings: Settings) -> CrmLinks:
    # The CRM links' settings belong to the connectors (HUBSPOT_PORTAL_ID,
    # SALESFORCE_INSTANCE_URL); the core settings handed in may not carry them.
    full = settings if isinstance(settings, FullSettings) else FullSettings()
    return CrmLinks(full.hubspot_portal_id, full.salesforce_instance_url)


class RedisNotices:
    """Service mode's waiting notices: a Redis hash beside the state store's keys."""

    def __init__(self, store: RedisStateStore, enqueue: bool = True) -> None:
        self.store = store
        self.key = f"{store.prefix}{PENDING_KEY}"
        self.enqueue = enqueue

    @property
    def _r(self) -> redis.Redis:
        return self.store.client  # the same connection pool as the store's

    def put(self, notices: Sequence[Notice]) -> None:
        """Park `notices` (durable once this returns), then ask a worker to send them. If the
        task cannot be enqueued they still wait in the hash for beat's drain."""
        if not notices:
            return
        self._r.hset(self.key, mapping={n.key: n.to_json() for n in notices})
        if self.enqueue:
            try:
                app.send_task(NOTIFY_TASK, args=[[n.key for n in notices]],
                              priority=NOTIFY_PRIORITY)
            except Exception as exc:  # noqa: BLE001 - the drain sends them; routing goes on
                log.warning("notify: could not enqueue %d notices (%s); beat's drain sends "
                            "them", len(notices), type(exc).__name__)

    def get(self, keys: Sequence[str] | None, limit: int = DRAIN_BATCH) -> list[Notice]:
        """The waiting notices among `keys` (None: any, up to `limit`); unreadable entries are
        dropped with a warning rather than blocking the rest."""
        if keys is None:
            pairs = []
            for pair in self._r.hscan_iter(self.key, count=limit):
                pairs.append(pair)
                if len(pairs) >= limit:
                    break
        else:
            values = self._r.hmget(self.key, list(keys)) if keys else []
            pairs = [(k, v) for k, v in zip(keys, values, strict=True) if v is not None]
        notices = []
        for key, value in pairs:
            try:
                notices.append(Notice.from_json(value))
            except (ValueError, TypeError, KeyError):
                log.warning("notify: dropping an unreadable waiting notice")
                self._r.hdel(self.key, key)
        return notices

    def done(self, keys: Sequence[str]) -> None:
        if keys:
            self._r.hdel(self.key, *keys)

    def size(self) -> int:
        return int(self._r.hlen(self.key))


def notifier_for(settings: Settings, store: StateStore, routing: CompiledRouting
                 ) -> Notifier | None:
    """The notifier, when a channel is configured: queued over Redis state, inline over SQLite
    state. It follows writes (`AfterWrite`) and tells of SLA breaches (`BreachNotifier`)."""
    senders = senders_for(settings)
    if not senders:
        return None
    # Without a broker (Redis state given by --state alone) the notices still wait in Redis
    # for a worker's drain; publishing would only wait on a broker that is not there.
    queue = RedisNotices(store, enqueue=bool(settings.redis_url)) \
        if isinstance(store, RedisStateStore) else None
    return Notifier(routing, senders, store, links=links_for(settings), queue=queue)


def notify_followers(settings: Settings, store: StateStore, routing: CompiledRouting
                     ) -> list[AfterWrite]:
    """The notify follower of a pipeline, when a channel is configured."""
    notifier = notifier_for(settings, store, routing)
    return [notifier] if notifier is not None else []


def send_waiting(keys: Sequence[str] | None, settings: Settings | None = None,
                 store: RedisStateStore | None = None) -> Outcomes:
    """Send waiting notices (`keys`, or any for the drain): sent, failed for good and already
    claimed ones leave the hash; a retryable failure goes back with one more attempt counted,
    for the next drain."""
    settings = settings or Settings()
    if store is None:
        opened = _store(settings)
        if not isinstance(opened, RedisStateStore):
            return Outcomes()  # embedded mode sends inline: nothing ever waits
        store = opened
    queue = RedisNotices(store, enqueue=False)
    now = datetime.now(UTC)
    notices = queue.get(keys)
    if keys is None:
        notices = [n for n in notices if n.attempts > 0 or _older(n, now, DRAIN_GRACE_SECONDS)]
    if not notices:
        return Outcomes()
    senders = senders_by_channel(senders_for(settings))
    out = deliver(notices, senders, store, lambda: datetime.now(UTC))
    finished = [n.key for n in out.sent] + [n.key for n, _ in out.failed] + \
        [n.key for n in out.skipped]
    queue.done(finished)
    if out.again:
        queue.put(out.again)
    for notice, error in out.failed:
        log.warning("notify: %s to %s failed: %s", notice.channel, notice.rep, error)
    return out


def _older(notice: Notice, now: datetime, seconds: float) -> bool:
    try:
        written = datetime.fromisoformat(notice.written_at or "")
    except ValueError:
        return True
    return (now - written).total_seconds() >= seconds


@app.task(name=NOTIFY_TASK, ignore_result=True, acks_late=True)
def send(keys: list[str]) -> int:
    """Send the notices parked under `keys`. Idempotent: each is claimed before it is sent, so
    a redelivery after a killed worker skips what already went out."""
    return len(send_waiting(keys).sent)


@app.task(name=NOTIFY_DRAIN_TASK, ignore_result=True, acks_late=True)
def drain() -> int:
    """Beat: send what waits (a killed worker's leftovers, retryable failures)."""
    return len(send_waiting(None).sent)
