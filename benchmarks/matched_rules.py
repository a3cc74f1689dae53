"""What recording every matched rule (`Decision.matched`) costs: a benchmark, old and new code
alternating in one run.

Runs one benchmark from a baseline source tree (e.g. `git archive main | tar -x -C /tmp/base`)
and from this tree, alternately, `--rounds` times each, and prints each side's median and the
ratio new/old. Alternating keeps a shared machine's drift out of the ratio. Benchmarks:

- `engine`: route-file's main process, where the change lives: `route_batch` over `--rows`
  prepared rows (the example rules' matches precomputed, as route-file's workers do) in
  chunks of 5,000 into an embedded SQLite state and history; CPU seconds, best of 3 a run.
- `route_file`: benchmarks/route_file.py end to end (process start, workers, CSV): wall and
  CPU seconds; on a shared machine its noise is larger than the effect.
- `decide`: benchmarks/decide.py, the pure `decide` over 50 rules with no precomputed
  matches (webhooks, sweeps: every rule's `when` is evaluated); decisions per second.

    .venv/bin/python benchmarks/matched_rules.py --baseline /tmp/base --rows 100000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# Run with the tree under test first on the path: the same code for old and new trees.
ENGINE = """
import sys, tempfile, time
from datetime import UTC, datetime
from pathlib import Path
from dataclasses import replace
from sync.compiler import load_routing
from sync.engine import route_batch
from sync.normalize import build_record
from sync.overlaps import rule_matches
from sync.state.sqlite import SqliteStateStore
import tasks.route_file as rf

rows, config = int(sys.argv[1]), sys.argv[2]
routing = load_routing(config)
extra = {"known_matches": rf._known_matches} if hasattr(rf, "_known_matches") else {}
precomputed = replace(routing, first_match=rf._first_match, **extra)
industries = ["Software", "Retail", "Healthcare", "Manufacturing", "Education", "Media"]
shared = {}
prepared = []
for k in range(rows):
    r = build_record({"id": f"A{k:07d}", "domain": "acme.com" if k % 50 == 0 else
                      f"company{k}.example.com", "industry": industries[k % 6],
                      "employees": ["12", "80", "450", "1200", ""][k % 5],
                      "country": ["US", "Germany", "CA"][k % 3],
                      "owner": ["", "", "", "101"][k % 4]}, object="account", crm="file")
    m = rule_matches(routing, r)
    m = shared.setdefault(m, m)
    prepared.append(rf._as_prepared((r.id, r.object, r.crm, r.owner, None, (), False,
                                     r.created_at, m)))
now = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
best = None
for _ in range(3):
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStateStore(Path(tmp) / "state.db")
        traces = {}
        start = time.process_time()
        with store.bulk_audit():
            for at in range(0, rows, 5000):
                route_batch(prepared[at:at + 5000], precomputed, store, now, trigger="file",
                            traces=traces)
        spent = time.process_time() - start
        store.close()
    best = spent if best is None else min(best, spent)
print(f"engine CPU: {best:.4f} s")
"""


def run(tree: Path, bench: str, rows: int) -> tuple[float, float]:
    """One run of `bench` with `tree`'s code first on the path: (wall seconds, CPU seconds)
    for route_file; (decisions per second, 0) for decide."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if bench == "engine":
        out = subprocess.run([sys.executable, "-c", ENGINE, str(rows),
                              str(ROOT / "config/examples/routing.yaml")], env=env,
                             check=True, capture_output=True, text=True, cwd=tree).stdout
        found = re.search(r"engine CPU: ([\d.]+) s", out)
        assert found is not None, out
        return float(found.group(1)), 0.0
    if bench == "route_file":
        out = subprocess.run([sys.executable, str(tree / "benchmarks/route_file.py"),
                              "--rows", str(rows)], env=env, check=True, capture_output=True,
                             text=True).stdout
        wall = re.search(r"wall time: ([\d.]+) s", out)
        cpu = re.search(r"CPU time: ([\d.]+) s", out)
        assert wall is not None and cpu is not None, out
        return float(wall.group(1)), float(cpu.group(1))
    out = subprocess.run([sys.executable, str(tree / "benchmarks/decide.py")], env=env,
                         check=True, capture_output=True, text=True).stdout
    found = re.search(r"account-router decide: ([\d,]+) decisions/s", out)
    assert found is not None, out
    return float(found.group(1).replace(",", "")), 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True,
                        help="a source tree of the code before (e.g. main)")
    parser.add_argument("--bench", choices=["engine", "route_file", "decide"], default="engine")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    old: list[tuple[float, float]] = []
    new: list[tuple[float, float]] = []
    for k in range(args.rounds):
        # Which side goes first alternates too, so neither always runs on a warmer machine.
        order = [(old, args.baseline), (new, ROOT)] if k % 2 == 0 else \
            [(new, ROOT), (old, args.baseline)]
        for results, tree in order:
            results.append(run(tree, args.bench, args.rows))
            print(f"round {k + 1} {'new' if results is new else 'old'}: {results[-1]}",
                  flush=True)
    first = {"engine": "CPU s", "route_file": "wall s", "decide": "decisions/s"}[args.bench]
    for i, what in enumerate((first, "CPU s")):
        a = statistics.median(r[i] for r in old)
        b = statistics.median(r[i] for r in new)
        if a:
            print(f"{what}: old median {a:.3f}, new median {b:.3f}, new/old {b / a:.3f}")


if __name__ == "__main__":
    main()
