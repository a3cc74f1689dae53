"""Real processes routing through the real engine share one pool fairly on SQLite and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sync.state import open_store
from tests.sync.state.test_contract import recorded

ROUTING = """
version: 1
reps: [{id: a}, {id: b}, {id: c}, {id: d}, {id: e}, {id: w1}, {id: w2}]
pools:
  rr: {members: [a, b, c, d, e]}
  wt: {members: [w1, w2], strategy: weighted, weights: {w1: 3, w2: 1}}
rules:
  - {name: weighted, when: {industry: {eq: Retail}}, assign: {pool: wt}}
  - {name: rotation, assign: {pool: rr}}
"""

WORKER = r"""
import json, os, sys, time
from datetime import UTC, datetime
from config.routing import parse
from sync.compiler import compile_routing
from sync.engine import route_batch
from sync.normalize import build_record
from sync.state import open_store

url, worker, batches, go, routing_text = sys.argv[1:6]
routing = compile_routing(parse(routing_text, source="r.yaml"))
store = open_store(url)
now = datetime(2026, 11, 25, 15, tzinfo=UTC)
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("never got the go signal")
    time.sleep(0.002)
owners = []
for b in range(int(batches)):
    records = [build_record({"id": f"{worker}-{b}-{k}",
                             "industry": "Retail" if k % 2 else "Software"}) for k in range(8)]
    for d in route_batch(records, routing, store, now, trigger="test"):
        owners.append([d.record_id, d.owner, d.rule])
store.close()
print(json.dumps(owners))
"""

WORKERS = 4
BATCHES = 10  # 8 records each: 4 to the round-robin pool, 4 to the weighted pool


def _run(url: str, tmp_path: Path) -> list[list[str]]:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, f"w{i}", str(BATCHES),
                               str(go), ROUTING],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(WORKERS)]
    time.sleep(0.5)
    go.touch()
    owners: list[list[str]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        owners += json.loads(out)
    return owners


def test_given_four_workers_routing_batches_when_they_race_then_turns_stay_exact(
    store_url, tmp_path
):
    open_store(store_url).close()

    owners = _run(store_url, tmp_path)

    total = WORKERS * BATCHES * 8
    assert len(owners) == total
    assert len({record for record, _, _ in owners}) == total
    rotation = Counter(owner for _, owner, rule in owners if rule == "rotation")
    weighted = Counter(owner for _, owner, rule in owners if rule == "weighted")
    # 160 round-robin turns over 5 members: exactly 32 each if no turn was given twice or lost.
    assert rotation == {m: 32 for m in "abcde"}
    # 160 smooth-weighted turns at 3:1: exactly 120 and 40.
    assert weighted == {"w1": 120, "w2": 40}
    store = open_store(store_url)
    try:
        audit = recorded(store)
        assert len(audit) == total
        assert Counter(d.owner for d in audit) == rotation + weighted
    finally:
        store.close()
