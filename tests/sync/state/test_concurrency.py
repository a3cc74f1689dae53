"""Real processes racing for round-robin turns through one store: no turn is handed out twice."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sync.state import open_store
from tests.sync.state.test_contract import recorded

MEMBERS = ["ava", "ben", "cara", "dev", "eli"]
WINDOW = "day:2026-11-25"
WORKERS = 4
TURNS_EACH = 50

# Run with `python -c` rather than multiprocessing: with --import-mode=importlib this test module
# is not importable by name in a spawned child, and a fresh interpreter is the honest model of a
# separate worker process anyway.
WORKER = r"""
import json, os, sys, time
from datetime import UTC, datetime

from sync.models import Decision, Outcome
from sync.state import PoolChange, open_store

url, worker, turns, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
members = json.loads(sys.argv[5])
window = sys.argv[6]
store = open_store(url)
deadline = time.monotonic() + 60
while not os.path.exists(go):  # start together, so the commits really race
    if time.monotonic() > deadline:
        sys.exit("never got the go signal")
    time.sleep(0.002)
taken, conflicts = [], 0
while len(taken) < turns:
    if time.monotonic() > deadline:
        sys.exit(f"only {len(taken)} turns before the deadline")
    snap = store.load_pools({"smb": {m: window for m in members}})["smb"]
    if snap.last_served in members:
        member = members[(members.index(snap.last_served) + 1) % len(members)]
    else:
        member = members[0]
    decision = Decision(
        record_id=f"{worker}-{len(taken)}", object="account", crm="file", outcome=Outcome.ASSIGNED,
        owner=member, pool="smb", rule="rr", trigger="test", decided_at=datetime.now(UTC),
    )
    change = PoolChange("smb", member, None, {(member, window): 1})
    if store.commit({"smb": snap.version}, [change], [decision]):
        taken.append([snap.version + 1, member])
    else:
        conflicts += 1
store.close()
print(json.dumps({"turns": taken, "conflicts": conflicts}))
"""


def _race(url: str, tmp_path: Path) -> tuple[list[tuple[int, str]], int]:
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, f"w{i}", str(TURNS_EACH), str(go),
             json.dumps(MEMBERS), WINDOW],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(WORKERS)
    ]
    time.sleep(0.3)  # let the interpreters import; the go file is polled, so this is not exact
    go.touch()
    turns: list[tuple[int, str]] = []
    conflicts = 0
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        report = json.loads(out)
        turns += [(int(v), m) for v, m in report["turns"]]
        conflicts += report["conflicts"]
    return turns, conflicts


def test_given_four_processes_taking_turns_then_no_turn_is_handed_out_twice(
    store_url, tmp_path
):
    # Create the store (and, for SQLite, the schema) up front, as a deployment would.
    open_store(store_url).close()

    turns, _conflicts = _race(store_url, tmp_path)

    total = WORKERS * TURNS_EACH
    versions = [v for v, _ in turns]
    assert len(turns) == total
    assert sorted(versions) == list(range(1, total + 1))  # every turn exactly once
    # Strict rotation: turn v went to the member after the one that took turn v-1.
    for version, member in turns:
        assert member == MEMBERS[(version - 1) % len(MEMBERS)]
    per_member = Counter(m for _, m in turns)
    assert max(per_member.values()) - min(per_member.values()) <= 1

    store = open_store(store_url)
    try:
        snap = store.load_pools({"smb": {m: WINDOW for m in MEMBERS}})["smb"]
        assert snap.version == total
        assert snap.counts == dict(per_member)
        audit = recorded(store)
        assert len(audit) == total
        assert len({d.record_id for d in audit}) == total  # no lost or doubled audit rows
    finally:
        store.close()


def test_given_processes_opening_a_new_sqlite_file_together_then_schema_setup_is_safe(tmp_path):
    # No store is opened first: the workers race to create the file, WAL mode and the schema.
    url = f"sqlite:///{tmp_path / 'fresh.db'}"

    turns, _ = _race(url, tmp_path)

    assert sorted(v for v, _ in turns) == list(range(1, WORKERS * TURNS_EACH + 1))
