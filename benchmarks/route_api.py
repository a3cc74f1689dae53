"""POST /route latency at 200 requests/s against `account-router serve`, with Redis state and with
embedded (SQLite) state, and the spread of the pools it fed; the last line is the figure."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serving import free_port, stop, wait_for  # noqa: E402
from sync.compiler import load_routing  # noqa: E402
from sync.decide import RoutingContext  # noqa: E402
from sync.history import History  # noqa: E402
from sync.state import open_store  # noqa: E402
from tasks.http.server import KEEP_ALIVE_SECONDS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-api-token"
# Two pools as a form's inbound leads are usually split: large companies to a least-loaded
# enterprise team, the rest round robin; one named rep rule in front.
ROUTING = """version: 1
reps:
""" + "".join(f"  - {{id: rep{i}, name: Rep {i}, email: rep{i}@example.com, "
              f"crm_ids: {{hubspot: '{100 + i}'}}}}\n" for i in range(12)) + """
pools:
  inbound: {members: [rep0, rep1, rep2, rep3, rep4, rep5, rep6, rep7], strategy: round_robin}
  enterprise: {members: [rep8, rep9, rep10], strategy: least_loaded}
rules:
  - name: named
    when: {domain: {eq: named.example}}
    assign: {rep: rep11}
  - name: enterprise
    when: {employees: {gte: 1000}}
    assign: {pool: enterprise}
  - name: inbound
    assign: {pool: inbound}
"""




def body(k: int, retry_of: int | None) -> bytes:
    """Request `k`: a distinct contact (its own email and company domain), one in eight from a
    large company; a retry repeats an earlier request exactly (same key)."""
    n = k if retry_of is None else retry_of
    return json.dumps({
        "crm": "hubspot", "object": "contacts", "idempotency_key": f"form-{n}",
        "record": {"email": f"p{n}@company{n}.example", "firstname": f"P{n}",
                   "company": f"Company {n}", "numemployees": "5000" if n % 8 == 0 else "40",
                   "country": "Germany"},
    }).encode()


def run(mode: str, rate: float, seconds: float, senders: int, tmp: Path) -> dict[str, object]:
    """Start `serve` (and Redis) in `mode`, send the load, stop everything; the figures."""
    procs: list[subprocess.Popen[bytes]] = []
    routing = tmp / "routing.yaml"
    routing.write_text(ROUTING)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCOUNT_ROUTER_",
                                                                      "HUBSPOT_", "SALESFORCE_"))}
    database_url = f"sqlite:///{tmp / f'history-{mode}.db'}"
    env.update({"ACCOUNT_ROUTER_CONFIG": str(routing), "ACCOUNT_ROUTER_API_TOKEN": TOKEN})
    try:
        if mode == "redis":
            redis_port = free_port()
            procs.append(subprocess.Popen(
                [shutil.which("redis-server") or "/usr/bin/redis-server", "--port",
                 str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            with History(database_url) as history:
                history.upgrade()
            env.update({"ACCOUNT_ROUTER_REDIS_URL": redis_url,
                        "ACCOUNT_ROUTER_STATE_URL": redis_url,
                        "ACCOUNT_ROUTER_DATABASE_URL": database_url})
        else:
            env["ACCOUNT_ROUTER_STATE_URL"] = f"sqlite:///{tmp / 'state.db'}"
        port = free_port()
        cli = str(Path(sys.executable).with_name("account-router"))
        procs.append(subprocess.Popen([cli, "serve", "--port", str(port)], cwd=ROOT, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(f"http://127.0.0.1:{port}/healthz")
        result = _load(port, rate, seconds, senders)
        # The spread as the state store counts it (what the next decisions see).
        compiled = load_routing(routing)
        with open_store(env["ACCOUNT_ROUTER_STATE_URL"]) as store:
            pools = store.load_pools(RoutingContext.pool_windows(
                compiled, datetime.now(UTC)))
        result["counted"] = Counter({m: n for snap in pools.values()
                                     for m, n in snap.counts.items()})
        return result
    finally:
        stop(procs)


def _load(port: int, rate: float, seconds: float, senders: int) -> dict[str, object]:
    """Open loop: request k is sent at start + k / rate, whatever the earlier ones took (a form
    backend does not wait for other visitors); each sender keeps one connection alive."""
    local = threading.local()
    latencies: list[float] = []
    owners: Counter[str] = Counter()
    answers: dict[int, str] = {}
    retried: list[tuple[int, str]] = []  # (the request repeated, the owner answered)
    errors = 0
    lock = threading.Lock()

    def post(k: int, retry_of: int | None) -> None:
        nonlocal errors
        conn = getattr(local, "conn", None)
        # A connection idle past the server's keep-alive has been closed by it: a new one, as
        # an HTTP client's pool does (a fast server leaves some of the senders idle that long,
        # and the request would fail on the dead socket without reaching the server).
        if conn is None or time.perf_counter() - local.used > KEEP_ALIVE_SECONDS - 0.5:
            if conn is not None:
                conn.close()
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        began = time.perf_counter()
        try:
            conn.request("POST", "/route", body=body(k, retry_of), headers={
                "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            local.conn = None
            with lock:
                errors += 1
            return
        took = time.perf_counter() - began
        local.used = time.perf_counter()
        with lock:
            latencies.append(took)
            if response.status != 200:
                errors += 1
                return
            answer = json.loads(data)
            owner = (answer["owner"] or {}).get("id", "(none)")
            if retry_of is None:
                answers[k] = owner
                owners[owner] += 1
            else:
                retried.append((retry_of, owner))

    total = int(rate * seconds)
    interval = 1.0 / rate
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=senders) as pool:
        pending = []
        for k in range(total):
            due = start + k * interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            # One request in twenty is a client's retry of the one sent 15 requests earlier
            # (75 ms at 200/s: often still being answered), itself never a retry.
            retry_of = k - 15 if k % 20 == 10 and k >= 20 else None
            pending.append(pool.submit(post, k, retry_of))
        for future in pending:
            future.result()
    elapsed = time.perf_counter() - start
    mismatched = sum(1 for k, owner in retried if answers.get(k) != owner)
    q = statistics.quantiles(latencies, n=100)
    return {"sent": total, "achieved": total / elapsed, "p50": q[49] * 1000,
            "p99": q[98] * 1000, "max": max(latencies) * 1000, "errors": errors,
            "mismatched": mismatched, "owners": owners}


def spread(owners: Counter[str], members: list[str]) -> str:
    counts = [owners.get(m, 0) for m in members]
    return (f"{'/'.join(str(c) for c in counts)} (max-min {max(counts) - min(counts)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--senders", type=int, default=32, help="client threads")
    parser.add_argument("--mode", choices=["both", "redis", "embedded"], default="both")
    args = parser.parse_args()
    modes = ["redis", "embedded"] if args.mode == "both" else [args.mode]
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} / {load[1]:.2f} / "
          f"{load[2]:.2f} before the run")
    results: dict[str, dict[str, object]] = {}
    for mode in modes:
        tmp = Path(tempfile.mkdtemp(prefix=f"route-api-{mode}-"))
        try:
            results[mode] = r = run(mode, args.rate, args.seconds, args.senders, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        owners = r["owners"]
        assert isinstance(owners, Counter)
        print(f"{mode}: {r['sent']} requests at {r['achieved']:.0f}/s: p50 {r['p50']:.1f} ms, "
              f"p99 {r['p99']:.1f} ms, max {r['max']:.0f} ms; {r['errors']} errors; "
              f"{r['mismatched']} retries answered differently")
        counted = r["counted"]
        assert isinstance(counted, Counter)
        for label, seen in (("answered", owners), ("state store counts", counted)):
            print(f"  {label}: pool inbound (round robin) rep0..rep7 "
                  f"{spread(seen, [f'rep{i}' for i in range(8)])}; enterprise (least loaded) "
                  f"rep8..rep10 {spread(seen, ['rep8', 'rep9', 'rep10'])}")
    print(f"machine load average after: {os.getloadavg()[0]:.2f}")
    print(f"POST /route at {args.rate:g} requests/s: " + ", ".join(
        f"{mode} p99 {r['p99']:.1f} ms" for mode, r in results.items()) + " (target p99 <= 25 ms)")


if __name__ == "__main__":
    main()
