"""`route-file` at 1,000,000 rows, end to end: wall time, rows/s, CPU time and peak memory.

Runs the real command line (worker processes included) on a generated export with the example
rules and SQLite state. Memory is sampled from /proc every 50 ms: the peak RSS of the main
process, and the peak of the whole process tree (main plus workers) as PSS, which counts the
pages forked workers share with the main process once rather than once per process. CPU time
is the tree's user + system time, the figure to trust on a busy machine, where wall time is
noisy.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("account-router")


def _generator():  # the same rows as benchmarks/route_file.py, so the figures compare
    spec = importlib.util.spec_from_file_location("route_file_bench",
                                                  Path(__file__).with_name("route_file.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_input


def _memory_kb(pid: int, field: str, source: str) -> int:
    try:
        with open(f"/proc/{pid}/{source}", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_kb(pid: int) -> int:
    return _memory_kb(pid, "VmRSS:", "status")


def _pss_kb(pid: int) -> int:
    return _memory_kb(pid, "Pss:", "smaps_rollup")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--input", type=Path, help="reuse a generated file (skips generating)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = args.input or folder / "in.csv"
        if args.input is None:
            _generator()(source, args.rows, random.Random(11))
        command = [str(CLI), "route-file", "--config",
                   str(ROOT / "config/examples/routing.yaml"), "--input", str(source),
                   "--output", str(folder / "out.csv"), "--now", "2026-11-25T15:00:00Z",
                   "--state", f"sqlite:///{folder / 'state.db'}", "--quiet"]
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=folder)
        peak_main = peak_tree = 0
        while process.poll() is None:
            main_kb = _rss_kb(process.pid)
            tree_kb = _pss_kb(process.pid) + sum(_pss_kb(child)
                                                 for child in _children(process.pid))
            peak_main, peak_tree = max(peak_main, main_kb), max(peak_tree, tree_kb)
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        if process.returncode != 0:
            raise SystemExit(f"route-file exited with {process.returncode}")
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = usage.ru_utime + usage.ru_stime
        with (folder / "out.csv").open(encoding="utf-8") as fh:
            written = sum(1 for _ in fh) - 1
        state_mb = sum(p.stat().st_size for p in folder.glob("state.db*")) / 1e6
    rows = args.rows if args.input is None else written
    if written != rows:
        raise SystemExit(f"expected {rows} output rows, found {written}")
    print(f"rows: {rows:,}; wall {elapsed:.1f} s; CPU {cpu:.1f} s (all processes, "
          f"{os.cpu_count()} CPUs); state file {state_mb:,.0f} MB")
    print(f"peak memory: main process RSS {peak_main / 1024:.0f} MB (largest single process "
          f"{usage.ru_maxrss / 1024:.0f} MB); main with workers PSS {peak_tree / 1024:.0f} MB")
    print(f"route-file 1M: {rows / elapsed:,.0f} rows/s wall, {rows / cpu:,.0f} rows per CPU "
          f"second, peak RSS {peak_main / 1024:.0f} MB main, {peak_tree / 1024:.0f} MB with "
          f"workers (PSS)")


if __name__ == "__main__":
    main()
