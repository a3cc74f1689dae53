"""Webhook received -> owner written, at 100 HubSpot events/s into `serve` + one Celery worker,
with Slack notifications on (a local fake Slack Web API; `--no-notify` to route only)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serving import free_port, stop, wait_for  # noqa: E402
from connectors.simulator.slack import TOKEN  # noqa: E402
from sync.compiler import load_routing  # noqa: E402
from sync.history import History  # noqa: E402
from sync.history.outbox import drain  # noqa: E402
from sync.state.redis import RedisStateStore  # noqa: E402
from tasks.http import hubspot_signature_v3  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-webhook-secret"
ROUTING = ROOT / "config/examples/routing.yaml"
PORTAL = "62515"  # HUBSPOT_PORTAL_ID: notices link the record, so each is matched to its event



def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux /proc), its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")



def unowned_companies(base: str, token: str) -> list[str]:
    """Ids of the seeded companies with no owner: each gets one creation event."""
    found: list[str] = []
    after = ""
    while True:
        url = f"{base}/crm/v3/objects/companies?limit=100&properties=hubspot_owner_id{after}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request) as r:  # noqa: S310 - loopback
            page = json.load(r)
        found += [o["id"] for o in page["results"]
                  if not (o.get("properties") or {}).get("hubspot_owner_id")]
        nxt = (page.get("paging") or {}).get("next")
        if not nxt:
            return found
        after = f"&after={nxt['after']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=100.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=4,
                        help="worker processes of the one Celery worker (prefork pool)")
    parser.add_argument("--window-ms", type=float, default=None,
                        help="ACCOUNT_ROUTER_BATCH_WINDOW_MS (default: the setting's default)")
    parser.add_argument("--no-notify", dest="notify", action="store_false",
                        help="route only: no Slack notifications")
    parser.add_argument("--slack-latency-ms", type=float, default=100.0,
                        help="how long the fake Slack Web API takes to answer each call")
    args = parser.parse_args()
    events = int(args.rate * args.seconds)
    tmp = Path(tempfile.mkdtemp(prefix="speed-to-lead-"))
    procs: list[subprocess.Popen[str]] = []
    users = {rep.email: f"U{rep.id.upper()}" for rep in load_routing(ROUTING).reps.values()
             if rep.email}
    # The fake Slack runs in a process of its own: in this one it would contend for the
    # interpreter lock with the webhook senders and slow the very requests being timed.
    slack = subprocess.Popen(
        [sys.executable, "-m", "connectors.simulator.slack", "--users", json.dumps(users),
         "--latency-ms", str(args.slack_latency_ms)], cwd=ROOT, stdout=subprocess.PIPE,
        text=True)
    procs.append(slack)
    assert slack.stdout is not None
    slack_url = slack.stdout.readline().strip()
    posted: list[dict[str, object]] = []
    try:
        redis_port = free_port()
        procs.append(subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(redis_port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        sim = subprocess.Popen(
            [sys.executable, "-m", "connectors.simulator", "--seed", "9", "--companies",
             str(events * 2), "--accounts", "0", "--leads", "0", "--hubspot-burst", "1000000"],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        procs.append(sim)
        env = dict(os.environ)
        assert sim.stdout is not None
        for line in sim.stdout:
            if line.strip().startswith("export "):
                name, _, value = line.strip()[len("export "):].partition("=")
                env[name] = value.strip("'")
            if line.startswith("Stats at"):
                break
        hubspot = env["ACCOUNT_ROUTER_HUBSPOT_BASE_URL"]
        faults = urllib.request.Request(
            hubspot + "/__simulator__/faults", method="POST",
            data=json.dumps({"latency_ms": args.latency_ms}).encode(),
            headers={"Content-Type": "application/json"})
        urllib.request.urlopen(faults).close()  # noqa: S310 - loopback
        port = free_port()
        # The history the workers' outbox is flushed into (by this script, as beat would).
        database_url = f"sqlite:///{tmp / 'history.db'}"
        with History(database_url) as history:
            history.upgrade()
        env.update({
            "ACCOUNT_ROUTER_REDIS_URL": redis_url, "ACCOUNT_ROUTER_STATE_URL": redis_url,
            "ACCOUNT_ROUTER_DATABASE_URL": database_url, "HUBSPOT_PORTAL_ID": PORTAL,
            "ACCOUNT_ROUTER_CONFIG": str(ROUTING),
            "HUBSPOT_WEBHOOK_SECRET": SECRET,
            "ACCOUNT_ROUTER_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "ACCOUNT_ROUTER_HUBSPOT_CALLS_PER_10S": "100000",
        })
        if args.window_ms is not None:
            env["ACCOUNT_ROUTER_BATCH_WINDOW_MS"] = str(args.window_ms)
        if args.notify:
            env.update({"ACCOUNT_ROUTER_SLACK_TOKEN": TOKEN,
                        "ACCOUNT_ROUTER_SLACK_BASE_URL": slack_url})
        else:
            env.pop("ACCOUNT_ROUTER_SLACK_TOKEN", None)
        env.pop("ACCOUNT_ROUTER_SMTP_URL", None)
        cli = str(Path(sys.executable).with_name("account-router"))
        procs.append(subprocess.Popen([cli, "serve", "--port", str(port)], cwd=ROOT, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool", "prefork",
             "--concurrency", str(args.concurrency), "--loglevel", "WARNING",
             "-Q", "celery", "--hostname", "route@%h"], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        notify_worker: subprocess.Popen[str] | None = None
        if args.notify:
            # Notifications on their own worker (docs/operations.md#notifications): threads,
            # since a notice is a wait on Slack, not work for a CPU.
            procs.append(notify_worker := subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool", "threads",
                 "--concurrency", "16", "--loglevel", "WARNING", "-Q", "notify",
                 "--hostname", "notify@%h"], cwd=ROOT, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))
        wait_for(f"http://127.0.0.1:{port}/healthz")
        time.sleep(3)  # the worker connects to the broker

        ids = unowned_companies(hubspot, env["HUBSPOT_ACCESS_TOKEN"])[:events]
        with urllib.request.urlopen(hubspot + "/__simulator__/stats") as r:  # noqa: S310
            calls_before = json.load(r)["total"]
        sent: dict[str, float] = {}
        answered: list[float] = []  # webhook answer times: HubSpot's deadline is 5 s
        uri = f"http://127.0.0.1:{port}/webhooks/hubspot"

        def post(k: int, record_id: str, due: float) -> None:
            body = json.dumps([{"eventId": k + 1, "subscriptionType": "company.creation",
                                "objectId": int(record_id), "occurredAt": int(due * 1000),
                                "portalId": 1, "appId": 1}]).encode()
            stamp = str(int(time.time() * 1000))
            signature = hubspot_signature_v3(SECRET, "POST", uri, body, stamp)
            request = urllib.request.Request(uri, data=body, method="POST", headers={
                "Content-Type": "application/json", "X-HubSpot-Signature-v3": signature,
                "X-HubSpot-Request-Timestamp": stamp})
            sent[record_id] = began = time.time()
            with urllib.request.urlopen(request) as response:  # noqa: S310 - loopback
                if response.status != 200:
                    raise SystemExit(f"webhook answered {response.status}")
            answered.append(time.time() - began)

        # The app answers a webhook once its batch is in the broker (up to one batch window),
        # so events go out from a pool of senders on a fixed schedule, as HubSpot's would.
        interval = 1.0 / args.rate
        start = time.time()
        with ThreadPoolExecutor(max_workers=64) as senders:
            pending = []
            for k, record_id in enumerate(ids):
                due = start + k * interval
                pause = due - time.time()
                if pause > 0:
                    time.sleep(pause)
                pending.append(senders.submit(post, k, record_id, due))
            for future in pending:
                future.result()
        store = RedisStateStore(redis_url)
        deadline = time.time() + 60
        written: dict[str, float] = {}
        decided: dict[str, float] = {}  # the routing instant: after the queue and the read
        wanted = set(ids)
        with History(database_url) as history:
            while time.time() < deadline and (
                    len(written) < len(ids) or (args.notify and len(posted) < len(ids))):
                drain(store, history, budget_seconds=5)
                for d in history.decisions(since=None):
                    if d.record_id in wanted and d.written_at and d.record_id not in written:
                        written[d.record_id] = d.written_at.timestamp()
                        decided[d.record_id] = d.decided_at.timestamp()  # type: ignore[union-attr]
                if args.notify:
                    with urllib.request.urlopen(slack_url + "__posted__") as r:  # noqa: S310
                        posted = json.load(r)["posted"]
                time.sleep(0.5)
        store.close()
        with urllib.request.urlopen(hubspot + "/__simulator__/stats") as r:  # noqa: S310
            calls = json.load(r)["total"] - calls_before
        notify_cpu = cpu_seconds(notify_worker.pid) if notify_worker is not None else None
        slack_cpu = cpu_seconds(slack.pid)
    finally:
        stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)
    latencies = sorted(written[i] - sent[i] for i in written)
    q = statistics.quantiles(latencies, n=100)
    events = len(ids)
    print(f"{events} events at {args.rate:g}/s, simulator latency {args.latency_ms:g} ms: "
          f"{len(written)} owners written; {calls / events:.2f} CRM calls per event")
    to_decided = statistics.quantiles([decided[i] - sent[i] for i in written], n=100)
    to_written = statistics.quantiles([written[i] - decided[i] for i in written], n=100)
    print(f"stages: received -> decided p50 {to_decided[49] * 1000:.0f} ms / p99 "
          f"{to_decided[98] * 1000:.0f} ms; decided -> written p50 {to_written[49] * 1000:.0f} "
          f"ms / p99 {to_written[98] * 1000:.0f} ms")
    if args.notify:
        heard: dict[str, float] = {}
        for message in posted:
            record_id = str(message["text"]).rsplit("/record/0-2/", 1)[-1].split(" ")[0]
            heard.setdefault(record_id, float(message["received"]))  # type: ignore[arg-type]
        told = sorted(heard[i] - sent[i] for i in heard if i in sent)
        twice = len(posted) - len(heard)
        if len(told) >= 2:
            t = statistics.quantiles(told, n=100)
            print(f"notified on Slack: {len(heard)} of {len(written)} new owners ({twice} told "
                  f"twice); webhook received -> Slack message p50 {t[49] * 1000:.0f} ms, "
                  f"p99 {t[98] * 1000:.0f} ms (fake Slack answers in "
                  f"{args.slack_latency_ms:g} ms)")
            if notify_cpu is not None:
                print(f"notify worker CPU: {notify_cpu:.1f} s in all, "
                      f"{notify_cpu / max(1, len(heard)) * 1000:.1f} ms a notice (start-up "
                      f"included); the fake Slack's own CPU, which a deployment does not pay "
                      f"on its machines: {slack_cpu:.1f} s")
        else:
            print(f"notified on Slack: {len(heard)} of {len(written)} new owners")
    webhook = statistics.quantiles(answered, n=100)
    print(f"webhook answered in p50 {webhook[49] * 1000:.0f} ms, p99 {webhook[98] * 1000:.0f} ms")
    print(f"speed to lead (webhook received -> owner written): p50 {q[49] * 1000:.0f} ms, "
          f"p95 {q[94] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms (target p99 <= 300 ms)")


if __name__ == "__main__":
    main()
