"""Metrics behind the `sync.metrics.Metrics` port, rendered as Prometheus text
(docs/operations.md#metrics).

`RedisMetrics` keeps every counter in Redis hashes, so the web app's `/metrics` shows what every
worker process counted; `LocalMetrics` keeps them in this process (embedded mode, tests). Both
render through prometheus_client's data model: a collector yielding metric families. `Broker`
reads the Celery broker's queues at scrape time (gauges, not counters: nothing to accumulate).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar, overload

import redis
from kombu.transport.redis import Channel as KombuRedisChannel
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry

from connectors.settings import Settings
from sync.state.redis import DEAD_KEY, OUTBOX_KEY

log = logging.getLogger(__name__)

PREFIX = "account_router"
# Seconds from a record's creation to its decision / owner write: webhooks land in the first
# buckets, sweeps in the minutes, a backlog in the last ones.
BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, math.inf)
# Seconds from an owner write to the rep's first touch (first-touch SLA): SLAs run in minutes to
# a day, so the buckets do too.
FIRST_TOUCH_BUCKETS: tuple[float, ...] = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400,
                                          259200, math.inf)
REDIS_KEY_PREFIX = "account_router:metrics:"
REDIS_TIMEOUT_SECONDS = 2.0
# The CRMs' "too many requests" status, as the connectors label it on the call counter.
RATE_LIMITED_STATUS = "429"
# Where the workers' work waits (tasks/celery_app.py): Celery's default queue, and `notify`
# for the notices (`notify.send`, `notify.drain`).
QUEUES: tuple[str, ...] = ("celery", "notify")
# A scrape or health check must answer well inside Prometheus' 10 s scrape timeout, also when
# the broker host is black-holed; one attempt, no redis-py retries stacked on top.
BROKER_TIMEOUT_SECONDS = 1.0


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def bucket_of(seconds: float, buckets: tuple[float, ...] = BUCKETS) -> str:
    """The `le` label of the smallest bucket holding `seconds`."""
    return next(_le(b) for b in buckets if seconds <= b)


def _cumulative(buckets: tuple[float, ...], counts: Counter[str]) -> list[tuple[str, float]]:
    """Per-bucket counts as Prometheus wants them: cumulative, by `le` label."""
    out, running = [], 0
    for bound in buckets:
        running += counts.get(_le(bound), 0)
        out.append((_le(bound), float(running)))
    return out


@dataclass
class Snapshot:
    """Every series' current value; buckets are per bucket (not cumulative) by `le` label."""

    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)
    crm_calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    quota_stops: Counter[str] = field(default_factory=Counter)
    buckets: dict[str, Counter[str]] = field(default_factory=dict)  # stage -> le -> count
    sums: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    overrides: Counter[str] = field(default_factory=Counter)  # rule ("" outside rules)
    # First-touch SLA: breaches by action, and the speed-to-first-touch histogram.
    sla_breaches: Counter[str] = field(default_factory=Counter)
    touch_buckets: Counter[str] = field(default_factory=Counter)  # le -> count
    touch_sum: float = 0.0

    def families(self) -> Iterator[Metric]:
        yield _counter("decisions", "Routing decisions by outcome and rule.",
                       ["outcome", "rule"], self.decisions)
        yield _counter("crm_calls", "CRM API calls by endpoint and status.",
                       ["crm", "endpoint", "status"], self.crm_calls)
        yield _counter("rate_limited", "CRM API calls answered 429 (rate limited).", ["crm"],
                       self.rate_limited())
        yield _counter("retries", "Retried CRM API calls.", ["crm"],
                       {(k,): v for k, v in self.retries.items()})
        yield _counter("quota_stops", "Sweeps stopped by a daily CRM quota.", ["crm"],
                       {(k,): v for k, v in self.quota_stops.items()})
        speed = HistogramMetricFamily(
            f"{PREFIX}_speed_to_lead_seconds",
            "Seconds from a record's creation to its routing decision / owner write.",
            labels=["stage"])
        for stage in sorted(set(self.buckets) | set(self.sums)):
            counts = self.buckets.get(stage, Counter())
            cumulative, running = [], 0
            for bound in BUCKETS:
                running += counts.get(_le(bound), 0)
                cumulative.append((_le(bound), float(running)))
            speed.add_metric([stage], cumulative, self.sums.get(stage, 0.0))
        yield speed
        yield _counter("overrides", "Owners the router wrote that a person changed, by rule.",
                       ["rule"], {(k,): v for k, v in self.overrides.items()})
        yield _counter("sla_breaches", "First-touch SLA breaches by what followed (reroute, "
                       "notify_manager).", ["action"],
                       {(k,): v for k, v in self.sla_breaches.items()})
        touch = HistogramMetricFamily(
            f"{PREFIX}_first_touch_seconds",
            "Seconds from an owner write to the rep's first touch of the record.")
        touch.add_metric([], _cumulative(FIRST_TOUCH_BUCKETS, self.touch_buckets),
                         self.touch_sum)
        yield touch

    def rate_limited(self) -> Counter[tuple[str, ...]]:
        """429s per CRM, read off the call counter rather than counted again, so the two series
        never disagree; 0 for a CRM that was called but never limited (alerts need a series)."""
        limited: Counter[tuple[str, ...]] = Counter({(crm,): 0 for crm, _, _ in self.crm_calls})
        for (crm, _, status), n in self.crm_calls.items():
            if status == RATE_LIMITED_STATUS:
                limited[(crm,)] += n
        return limited


LabelValues = TypeVar("LabelValues", bound=tuple[str, ...])


def _counter(name: str, doc: str, labels: list[str],
             values: Mapping[LabelValues, int]) -> Metric:
    family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)
    for key in sorted(values):
        family.add_metric(list(key), float(values[key]))
    return family


class _Collector(Collector):
    def __init__(self, source: _Base) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from self._source.snapshot().families()


class _Base:
    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    def collector(self) -> Collector:
        """A prometheus_client collector over these series (register it in a registry)."""
        return _Collector(self)

    def collect(self) -> str:
        """The Prometheus text exposition of every series."""
        registry = CollectorRegistry()
        registry.register(self.collector())
        return generate_latest(registry).decode()


class LocalMetrics(_Base):
    """Counters in this process (embedded mode; tests)."""

    # How long a batch of decisions may wait to be counted: nothing to save here.
    COUNT_EVERY_SECONDS = 0.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data = Snapshot()

    def decision(self, outcome: str, rule: str | None) -> None:
        with self._lock:
            self._data.decisions[(outcome, rule or "")] += 1

    def decisions(self, made: Iterable[tuple[str, str | None]]) -> None:
        """`decision` for each (outcome, rule) of a batch."""
        with self._lock:
            self._data.decisions.update((outcome, rule or "") for outcome, rule in made)

    def crm_call(self, crm: str, endpoint: str, status: str) -> None:
        with self._lock:
            self._data.crm_calls[(crm, endpoint, status)] += 1

    def retry(self, crm: str) -> None:
        with self._lock:
            self._data.retries[crm] += 1

    def quota_stop(self, crm: str) -> None:
        with self._lock:
            self._data.quota_stops[crm] += 1

    def speed(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._data.buckets.setdefault(stage, Counter())[bucket_of(seconds)] += 1
            self._data.sums[stage] = self._data.sums.get(stage, 0.0) + seconds

    def override(self, rule: str | None) -> None:
        with self._lock:
            self._data.overrides[rule or ""] += 1

    def sla_breach(self, action: str) -> None:
        with self._lock:
            self._data.sla_breaches[action] += 1

    def first_touch(self, seconds: float) -> None:
        with self._lock:
            self._data.touch_buckets[bucket_of(seconds, FIRST_TOUCH_BUCKETS)] += 1
            self._data.touch_sum += seconds

    def snapshot(self) -> Snapshot:
        with self._lock:
            data = self._data
            return Snapshot(Counter(data.decisions), Counter(data.crm_calls),
                            Counter(data.retries), Counter(data.quota_stops),
                            {k: Counter(v) for k, v in data.buckets.items()}, dict(data.sums),
                            overrides=Counter(data.overrides),
                            sla_breaches=Counter(data.sla_breaches),
                            touch_buckets=Counter(data.touch_buckets),
                            touch_sum=data.touch_sum)


class RedisMetrics(_Base):
    """Counters in Redis hashes (HINCRBY), shared by every worker process and the web app.

    Hash fields are JSON arrays of label values. The histogram is one counter per (stage,
    bucket), plus a sum and a count per stage. Recording never raises: a Redis outage loses
    counts, never a routing run.
    """

    # How long a batch of decisions may wait to be counted (tasks/decider.py): one round trip
    # a second instead of one a batch, far inside any scrape interval.
    COUNT_EVERY_SECONDS = 1.0

    def __init__(self, url: str, *, prefix: str = REDIS_KEY_PREFIX) -> None:
        self._r: redis.Redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
        self._prefix = prefix

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _incr(self, name: str, labels: Sequence[str]) -> None:
        try:
            self._r.hincrby(self._key(name), json.dumps(list(labels)), 1)
        except redis.RedisError as exc:
            log.warning("metrics: could not count %s: %r", name, exc)

    def decision(self, outcome: str, rule: str | None) -> None:
        self._incr("decisions", (outcome, rule or ""))

    def decisions(self, made: Iterable[tuple[str, str | None]]) -> None:
        """`decision` for each (outcome, rule) of a batch, in one round trip."""
        counted = Counter(json.dumps([outcome, rule or ""]) for outcome, rule in made)
        if not counted:
            return
        try:
            with self._r.pipeline(transaction=False) as pipe:
                for labels, n in counted.items():
                    pipe.hincrby(self._key("decisions"), labels, n)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics: could not count decisions: %r", exc)

    def crm_call(self, crm: str, endpoint: str, status: str) -> None:
        self._incr("crm_calls", (crm, endpoint, status))

    def retry(self, crm: str) -> None:
        self._incr("retries", (crm,))

    def quota_stop(self, crm: str) -> None:
        self._incr("quota_stops", (crm,))

    def override(self, rule: str | None) -> None:
        self._incr("overrides", (rule or "",))

    def speed(self, stage: str, seconds: float) -> None:
        try:
            with self._r.pipeline(transaction=True) as pipe:
                pipe.hincrby(self._key("speed:buckets"), json.dumps([stage, bucket_of(seconds)]), 1)
                pipe.hincrbyfloat(self._key("speed:sum"), stage, seconds)
                pipe.hincrby(self._key("speed:count"), stage, 1)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics: could not record speed: %r", exc)

    def sla_breach(self, action: str) -> None:
        self._incr("sla_breaches", (action,))

    def first_touch(self, seconds: float) -> None:
        try:
            with self._r.pipeline(transaction=True) as pipe:
                pipe.hincrby(self._key("first_touch"),
                             bucket_of(seconds, FIRST_TOUCH_BUCKETS), 1)
                pipe.hincrbyfloat(self._key("first_touch"), "sum", seconds)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics: could not record first touch: %r", exc)

    def snapshot(self) -> Snapshot:
        """Every counter, read in one round trip (raises if Redis is unreachable)."""
        with self._r.pipeline(transaction=False) as pipe:
            for name in ("decisions", "crm_calls", "retries", "quota_stops", "speed:buckets",
                         "speed:sum", "overrides", "sla_breaches", "first_touch"):
                pipe.hgetall(self._key(name))
            (decisions, calls, retries, stops, buckets, sums, overrides, breaches,
             touch) = pipe.execute()
        data = Snapshot(
            decisions=Counter({_labels(k, 2): int(v) for k, v in decisions.items()}),
            crm_calls=Counter({_labels(k, 3): int(v) for k, v in calls.items()}),
            retries=Counter({_labels(k, 1)[0]: int(v) for k, v in retries.items()}),
            quota_stops=Counter({_labels(k, 1)[0]: int(v) for k, v in stops.items()}),
            sums={stage: float(v) for stage, v in sums.items()},
            overrides=Counter({_labels(k, 1)[0]: int(v) for k, v in overrides.items()}),
            sla_breaches=Counter({_labels(k, 1)[0]: int(v) for k, v in breaches.items()}),
            touch_buckets=Counter({k: int(v) for k, v in touch.items() if k != "sum"}),
            touch_sum=float(touch.get("sum", 0.0)),
        )
        for key, value in buckets.items():
            stage, le = _labels(key, 2)
            data.buckets.setdefault(stage, Counter())[le] += int(value)
        return data

    def close(self) -> None:
        self._r.close()


@overload
def _labels(field_: str, n: Literal[1]) -> tuple[str]: ...
@overload
def _labels(field_: str, n: Literal[2]) -> tuple[str, str]: ...
@overload
def _labels(field_: str, n: Literal[3]) -> tuple[str, str, str]: ...
def _labels(field_: str, n: int) -> tuple[str, ...]:
    values = json.loads(field_)
    if not isinstance(values, list) or len(values) != n:
        raise ValueError(f"unexpected metrics field {field_!r}")
    return tuple(str(v) for v in values)


AnyMetrics = LocalMetrics | RedisMetrics


def queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu's Redis transport keeps a queue in: the bare name for priority 0,
    `name + sep + step` for the other priority steps (kombu `Channel._q_for_pri`)."""
    channel = KombuRedisChannel
    return [f"{queue}{channel.sep}{step}" if step else queue for step in channel.priority_steps]


@dataclass(frozen=True)
class BrokerDepth:
    """Messages waiting per queue, and messages taken by workers but not yet acknowledged."""

    queues: dict[str, int]
    unacked: int

    def families(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(f"{PREFIX}_queue_depth",
                                  "Messages waiting in the broker queue (all priorities).",
                                  labels=["queue"])
        for queue in sorted(self.queues):
            depth.add_metric([queue], float(self.queues[queue]))
        yield depth
        yield GaugeMetricFamily(f"{PREFIX}_unacked_messages",
                                "Messages taken by workers and not yet acknowledged.",
                                value=float(self.unacked))


class _BrokerCollector(Collector):
    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def collect(self) -> Iterator[Metric]:
        yield from self._broker.depth().families()


class Broker:
    """The Celery broker's Redis (kombu's Redis transport), read at scrape time.

    Assumes kombu's defaults, which tasks/celery_app.py keeps: no `global_keyprefix`, the
    `unacked` hash, priority steps 0/3/6/9. Reads raise when the broker is unreachable.
    """

    def __init__(self, url: str, *, queues: Sequence[str] = QUEUES,
                 timeout: float = BROKER_TIMEOUT_SECONDS) -> None:
        self._r: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0))
        self._queues = tuple(queues)

    def ping(self) -> None:
        """Raises unless the broker answers PING."""
        if not self._r.ping():
            raise redis.ConnectionError("broker did not answer PING")

    def depth(self) -> BrokerDepth:
        """Every queue's length and the unacked count, in one round trip."""
        keys = {queue: queue_keys(queue) for queue in self._queues}
        with self._r.pipeline(transaction=False) as pipe:
            for queue_key_list in keys.values():
                for key in queue_key_list:
                    pipe.llen(key)
            pipe.hlen(KombuRedisChannel.unacked_key)
            *lengths, unacked = pipe.execute()
        depths, at = {}, 0
        for queue, queue_key_list in keys.items():
            depths[queue] = sum(int(n) for n in lengths[at:at + len(queue_key_list)])
            at += len(queue_key_list)
        return BrokerDepth(depths, int(unacked))

    def collector(self) -> Collector:
        """A prometheus_client collector over the queue gauges."""
        return _BrokerCollector(self)

    def close(self) -> None:
        self._r.close()

class HistoryOutbox(Collector):
    """The history outbox in the state Redis (service mode), read at scrape time: decisions
    waiting for the SQL history, and entries set aside as undecodable. One that keeps growing
    means `history.flush` cannot reach the database (docs/operations.md#the-history-outbox-and-
    a-postgresql-outage). Reads raise when Redis is unreachable, like `Broker`'s."""

    def __init__(self, url: str, *, prefix: str = "ar:",
                 timeout: float = BROKER_TIMEOUT_SECONDS) -> None:
        self._r: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0))
        self._keys = (f"{prefix}{OUTBOX_KEY}", f"{prefix}{DEAD_KEY}")

    def collect(self) -> Iterator[Metric]:
        with self._r.pipeline(transaction=False) as pipe:
            for key in self._keys:
                pipe.llen(key)
            waiting, dead = pipe.execute()
        yield GaugeMetricFamily(f"{PREFIX}_history_outbox",
                                "Decisions waiting in the Redis outbox for the SQL history.",
                                value=float(waiting))
        yield GaugeMetricFamily(f"{PREFIX}_history_outbox_dead",
                                "Outbox entries set aside because they could not be decoded.",
                                value=float(dead))

    def close(self) -> None:
        self._r.close()


# One instance per process and Redis URL: the web app and the pipelines of this process share
# it (in embedded mode that is the only way /metrics sees the in-process runs).
_instances: dict[str, AnyMetrics] = {}
_instances_lock = threading.Lock()


def metrics_for(settings: Settings) -> AnyMetrics:
    """Redis-backed when `ACCOUNT_ROUTER_REDIS_URL` is set, else this process's counters."""
    key = settings.redis_url or ""
    with _instances_lock:
        found = _instances.get(key)
        if found is None:
            found = _instances[key] = (RedisMetrics(settings.redis_url) if settings.redis_url
                                       else LocalMetrics())
        return found
