"""The shared series and queue gauges on `/metrics`, `reprocess --enqueue`, and redacted logs."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
import redis
import structlog
from fastapi.testclient import TestClient
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from connectors.hubspot.errors import classify as classify_hubspot
from connectors.settings import Settings
from connectors.transport import Transport, Unlimited
from sync.state.redis import RedisStateStore
from sync.state.sqlite import SqliteStateStore
from tasks.cli import app as cli
from tasks.http import create_app
from tasks.logging import REDACTED, redact_secrets
from tasks.metrics import Broker, LocalMetrics, RedisMetrics
from tests.loopback import free_port
from tests.sync.state.test_contract import decision


@pytest.fixture
def store(sqlite_store: SqliteStateStore) -> SqliteStateStore:
    return sqlite_store  # tests/conftest.py: the embedded store, state.db in tmp_path


def settings() -> Settings:
    return Settings.model_validate({"api_token": "t0ken-value", "redis_url": None})


def no_enqueue(crm: str, obj: str, ids: list[str], trigger: str) -> None:
    raise AssertionError("nothing is enqueued here")


# -- /metrics -----------------------------------------------------------------------------------

def test_given_recorded_decisions_when_metrics_read_then_the_shared_series_show(store) -> None:
    metrics = LocalMetrics()
    client = TestClient(create_app(settings(), store, no_enqueue, metrics=metrics))

    metrics.decision("assigned", "named")
    metrics.speed("written", 0.2)
    text = client.get("/metrics").text

    assert 'account_router_decisions_total{outcome="assigned",rule="named"} 1.0' in text
    assert 'account_router_speed_to_lead_seconds_bucket{le="0.25",stage="written"} 1.0' in text
    assert "account_router_webhook_events" in text  # the app's own counter is still there


def test_given_a_worker_counted_in_redis_when_the_app_reads_then_it_shows(store,
                                                                         redis_url) -> None:
    worker, web = RedisMetrics(redis_url), RedisMetrics(redis_url)
    try:
        client = TestClient(create_app(settings(), store, no_enqueue, metrics=web))

        worker.decision("kept_existing", None)
        worker.crm_call("salesforce", "Lead.read", "200")
        text = client.get("/metrics").text

        assert 'account_router_decisions_total{outcome="kept_existing",rule=""} 1.0' in text
        assert ('account_router_crm_calls_total{crm="salesforce",endpoint="Lead.read",'
                'status="200"} 1.0') in text
    finally:
        worker.close()
        web.close()


def test_given_redis_is_down_when_metrics_read_then_503_not_500(store) -> None:
    metrics = RedisMetrics("redis://127.0.0.1:1/0")
    client = TestClient(create_app(settings(), store, no_enqueue, metrics=metrics))

    response = client.get("/metrics")

    assert response.status_code == 503
    metrics.close()


def samples(text: str) -> dict[str, float]:
    """Every sample as `name{label="value",...}` (labels sorted) -> value."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}"] = sample.value
    return found


class HubSpot429(Exception):
    """Shaped like the HubSpot client's ApiException for a 10-second-window 429."""

    status = 429
    body = json.dumps({"status": "error", "message": "You have reached your ten_secondly_rolling "
                       "limit.", "policyName": "TEN_SECONDLY_ROLLING"})
    headers = {"Retry-After": "0"}


def test_given_the_crm_answers_429_when_metrics_read_then_rate_limited_counts_it(
        store, redis_url) -> None:
    worker, web = RedisMetrics(redis_url), RedisMetrics(redis_url)
    answers = iter([HubSpot429(), HubSpot429(), None])

    def read() -> str:
        exc = next(answers)
        if exc is not None:
            raise exc
        return "ok"

    transport = Transport(
        crm="hubspot", classify=classify_hubspot, limiter=Unlimited(),
        credentials_setting="HUBSPOT_ACCESS_TOKEN", sleep=lambda _: None,
        on_call=lambda endpoint, status: worker.crm_call("hubspot", endpoint, status))
    try:
        client = TestClient(create_app(settings(), store, no_enqueue, metrics=web))

        assert transport.call("companies.read", read) == "ok"
        found = samples(client.get("/metrics").text)

        assert found['account_router_rate_limited_total{crm="hubspot"}'] == 2.0
        assert found['account_router_crm_calls_total{crm="hubspot",endpoint="companies.read",'
                     'status="429"}'] == 2.0
    finally:
        worker.close()
        web.close()


def test_given_a_crm_never_limited_when_metrics_read_then_its_rate_limited_series_is_zero(
        store) -> None:
    metrics = LocalMetrics()
    client = TestClient(create_app(settings(), store, no_enqueue, metrics=metrics))

    metrics.crm_call("salesforce", "Lead.read", "200")
    found = samples(client.get("/metrics").text)

    assert found['account_router_rate_limited_total{crm="salesforce"}'] == 0.0


# -- queue gauges ---------------------------------------------------------------------------------

def test_given_enqueued_batches_and_no_worker_when_metrics_read_then_queue_depth_counts_them(
        store, redis_url, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.queue import enqueue_route, flush

    monkeypatch.setenv("ACCOUNT_ROUTER_REDIS_URL", redis_url)
    client = TestClient(create_app(Settings.model_validate({"redis_url": redis_url}), store,
                                   no_enqueue, metrics=LocalMetrics()))

    enqueue_route("hubspot", "companies", ["501", "502"], "webhook")
    enqueue_route("salesforce", "Lead", ["00Q5g00000AbCdEAAA"], "webhook")
    flush()
    wait_for_depth(redis_url, 2)
    response = client.get("/metrics")

    assert response.status_code == 200
    found = samples(response.text)
    assert found['account_router_queue_depth{queue="celery"}'] == 2.0  # one task per batch
    assert found["account_router_unacked_messages{}"] == 0.0


def test_given_a_waiting_notify_task_when_metrics_read_then_the_notify_queue_is_counted(
        store, redis_url, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.celery_app import NOTIFY_TASK, make_app

    monkeypatch.setenv("ACCOUNT_ROUTER_REDIS_URL", redis_url)
    client = TestClient(create_app(Settings.model_validate({"redis_url": redis_url}), store,
                                   no_enqueue, metrics=LocalMetrics()))
    make_app(current=False).send_task(NOTIFY_TASK, args=[["k"]])
    found = samples(client.get("/metrics").text)

    assert found['account_router_queue_depth{queue="notify"}'] == 1.0
    assert found['account_router_queue_depth{queue="celery"}'] == 0.0


def test_given_a_message_taken_and_not_acked_when_metrics_read_then_it_counts_as_unacked(
        store, redis_url, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.queue import enqueue_route, flush

    monkeypatch.setenv("ACCOUNT_ROUTER_REDIS_URL", redis_url)
    broker = Broker(redis_url)
    client = TestClient(create_app(Settings.model_validate({"redis_url": redis_url}), store,
                                   no_enqueue, metrics=LocalMetrics(), broker=broker))
    enqueue_route("hubspot", "companies", ["501"], "webhook")
    enqueue_route("hubspot", "contacts", ["601"], "webhook")
    flush()
    wait_for_depth(redis_url, 2)

    # What a worker does with acks_late: take the message and hold it until the task ends.
    with Connection(redis_url) as connection:
        taken = connection.default_channel.basic_get("celery", no_ack=False)
        found = samples(client.get("/metrics").text)
    broker.close()

    assert taken is not None
    assert found['account_router_queue_depth{queue="celery"}'] == 1.0
    assert found["account_router_unacked_messages{}"] == 1.0


def wait_for_depth(redis_url: str, expected: int, timeout: float = 5.0) -> None:
    """Wait until the broker holds `expected` messages: on a loaded machine the batcher's timer
    thread can take a batch just before `flush()` and still be sending it when flush returns."""
    broker = Broker(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while broker.depth().queues["celery"] < expected and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        broker.close()


def test_given_embedded_mode_when_metrics_read_then_no_queue_gauges(store) -> None:
    text = TestClient(create_app(settings(), store, no_enqueue, metrics=LocalMetrics())).get(
        "/metrics").text

    assert "account_router_queue_depth" not in text
    assert "account_router_unacked_messages" not in text


def test_given_decisions_waiting_in_the_outbox_when_metrics_read_then_the_gauges_count_them(
        redis_url) -> None:
    redis_store = RedisStateStore(redis_url)
    redis_store.commit({}, [], [decision("a"), decision("b"), decision("c")])
    raw = redis.Redis.from_url(redis_url)
    raw.rpush("ar:history:outbox", "not an entry")
    redis_store.outbox(10)  # the flusher's read sets the undecodable entry aside
    raw.close()
    service = Settings.model_validate({"redis_url": redis_url, "state_url": redis_url})
    client = TestClient(create_app(service, redis_store, no_enqueue, metrics=LocalMetrics()))

    text = client.get("/metrics").text

    assert "account_router_history_outbox 3.0" in text
    assert "account_router_history_outbox_dead 1.0" in text
    redis_store.close()


def test_given_embedded_mode_when_metrics_read_then_no_outbox_gauge(store) -> None:
    text = TestClient(create_app(settings(), store, no_enqueue, metrics=LocalMetrics())).get(
        "/metrics").text

    assert "account_router_history_outbox" not in text


def test_given_the_broker_is_down_when_metrics_read_then_503_not_500(store) -> None:
    broker = Broker(f"redis://127.0.0.1:{free_port()}/0")
    client = TestClient(create_app(settings(), store, no_enqueue, metrics=LocalMetrics(),
                                   broker=broker))

    response = client.get("/metrics")

    assert response.status_code == 503
    broker.close()


# -- reprocess --enqueue -------------------------------------------------------------------------

class Recorded:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[str], str]] = []
        self.flushed = 0

    def enqueue(self, crm: str, obj: str, ids: list[str], trigger: str) -> None:
        self.calls.append((crm, obj, list(ids), trigger))

    def flush(self) -> None:
        self.flushed += 1


@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    import tasks.queue

    recorded = Recorded()
    monkeypatch.setattr(tasks.queue, "enqueue_route", recorded.enqueue)
    monkeypatch.setattr(tasks.queue, "flush", recorded.flush)
    return recorded


def test_given_enqueue_when_reprocessing_then_the_ids_go_to_the_queue_and_are_flushed(
        queue: Recorded) -> None:
    result = CliRunner().invoke(cli, ["reprocess", "--crm", "hubspot", "--object", "Companies",
                                      "--enqueue", "501", "502", "501"])

    assert result.exit_code == 0, result.output
    assert queue.calls == [("hubspot", "companies", ["501", "502"], "reprocess")]
    assert queue.flushed == 1
    assert "enqueued 2 hubspot companies" in result.stdout


def test_given_enqueue_with_dry_run_when_reprocessing_then_usage_error(queue: Recorded) -> None:
    result = CliRunner().invoke(cli, ["reprocess", "--crm", "hubspot", "--object", "companies",
                                      "--enqueue", "--dry-run", "501"])

    assert result.exit_code == 2
    assert "--dry-run" in result.stderr and queue.calls == []


def test_given_a_broker_failure_when_enqueueing_then_exit_1_with_a_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.queue

    def down(*_: object) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.queue, "enqueue_route", down)
    result = CliRunner().invoke(cli, ["reprocess", "--crm", "salesforce", "--object", "Lead",
                                      "--enqueue", "00Q000000000001AAA"])

    assert result.exit_code == 1 and "broker down" in result.stderr


# -- structured logs -----------------------------------------------------------------------------



def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_given_a_token_in_an_event_dict_when_processed_then_it_is_redacted() -> None:
    event = {"event": "calling", "access_token": "sk-live-123", "headers": {
        "Authorization": "Bearer abc"}, "crm": "hubspot", "password": "hunter2"}

    out = redact_secrets(None, "info", event)

    assert out["access_token"] == REDACTED and out["password"] == REDACTED
    assert out["headers"] == {"Authorization": REDACTED}
    assert out["crm"] == "hubspot"


def test_given_json_logs_when_a_token_is_logged_then_the_line_never_holds_it(logs) -> None:
    structlog.get_logger("test").info("connecting", token="sk-live-123", crm="hubspot")
    logging.getLogger("test.stdlib").warning("login", extra={"client_secret": "s3cr3t"})

    text = logs.getvalue()
    assert "sk-live-123" not in text and "s3cr3t" not in text
    first, second = lines(logs)
    assert first["token"] == REDACTED and first["crm"] == "hubspot"
    assert first["level"] == "info" and "T" in str(first["timestamp"])
    assert second["client_secret"] == REDACTED and second["level"] == "warning"


def test_given_a_task_context_when_the_pipeline_logs_a_batch_then_the_line_has_task_id(
        logs, store) -> None:
    from datetime import UTC, datetime

    from sync.pipeline import Pipeline
    from tests.builders import routing
    from tests.fakes import FakeCrm, hubspot_owners

    crm = FakeCrm(owners=hubspot_owners())
    crm.add("companies", "c1", name="Acme", domain="acme.com")
    pipeline = Pipeline(crm, routing("""
version: 1
reps: [{id: ava, crm_ids: {hubspot: "101"}}]
rules: [{name: all, assign: {rep: ava}}]
"""), store, clock=lambda: datetime(2026, 11, 25, 10, tzinfo=UTC))

    with structlog.contextvars.bound_contextvars(task_id="task-123"):
        pipeline.route_ids("companies", ["c1"])

    batch = [line for line in lines(logs) if line["event"] == "batch routed"]
    assert len(batch) == 1
    assert batch[0]["task_id"] == "task-123" and batch[0]["crm"] == "hubspot"
    assert batch[0]["object"] == "companies" and batch[0]["outcomes"] == {"assigned": 1}
    assert batch[0]["written"] == 1


def test_given_sweep_enqueue_when_run_then_the_workers_sweep_is_started(monkeypatch):
    from typer.testing import CliRunner

    from tasks import queue
    from tasks.cli import app

    started = []
    monkeypatch.setattr(queue, "enqueue_sweep", lambda crm, obj: started.append((crm, obj)))
    result = CliRunner().invoke(app, ["sweep", "--crm", "hubspot", "--object", "Companies",
                                      "--enqueue", "--config", _EXAMPLE])

    assert result.exit_code == 0, result.output
    assert started == [("hubspot", "companies")]


def test_given_sweep_enqueue_with_dry_run_when_run_then_usage_error(monkeypatch):
    from typer.testing import CliRunner

    from tasks.cli import app

    result = CliRunner().invoke(app, ["sweep", "--crm", "hubspot", "--object", "companies",
                                      "--enqueue", "--dry-run", "--config", _EXAMPLE])
    assert result.exit_code == 2


_EXAMPLE = str(__import__("pathlib").Path(__file__).resolve().parents[2]
               / "config" / "examples" / "routing.yaml")
