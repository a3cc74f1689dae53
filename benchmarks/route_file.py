"""End-to-end `route-file` throughput: 100,000 generated rows, example rules, SQLite state."""

from __future__ import annotations

import argparse
import csv
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("account-router")
INDUSTRIES = ["Software", "Retail", "Healthcare", "Hospital & Health Care", "Manufacturing",
              "Financial Services", "Education", "Logistics", "Media"]
NAMED = ["acme.com", "globex.com", "initech.com", "hooli.com", "eu.acme.com"]


def write_input(path: Path, n: int, rng: random.Random) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "name", "domain", "industry", "employees", "country", "owner"])
        for k in range(n):
            domain = rng.choice(NAMED) if k % 50 == 0 else f"company{k}.example.com"
            writer.writerow([f"A{k:07d}", f"Company {k}", domain, rng.choice(INDUSTRIES),
                             rng.choice(["12", "80", "450", "1,200", "3.5k", ""]),
                             rng.choice(["US", "United States", "Germany", "CA"]),
                             rng.choice(["", "", "", "101", "005000000000INTEG"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--enrich", action="store_true",
                        help="the example rules with `enrich: [tld_country, state_codes]`")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "in.csv"
        write_input(source, args.rows, random.Random(11))
        config = ROOT / "config/examples/routing.yaml"
        if args.enrich:
            # A copy beside its list file, with enrichment steps that read every row.
            shutil.copy(config.with_name("named_accounts.txt"), folder)
            text = config.read_text(encoding="utf-8")
            config = folder / "routing.yaml"
            config.write_text(text + "\nenrich: [tld_country, state_codes]\n",
                              encoding="utf-8")
        command = [str(CLI), "route-file", "--config", str(config), "--input", str(source),
                   "--output", str(folder / "out.csv"), "--now", "2026-11-25T15:00:00Z",
                   "--state", f"sqlite:///{folder / 'state.db'}", "--quiet"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=folder)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # User + system time of the CLI and its worker processes (all reaped by now): steadier
        # than wall time on a shared machine.
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        with (folder / "out.csv").open(encoding="utf-8") as fh:
            written = sum(1 for _ in fh) - 1
    if written != args.rows:
        raise SystemExit(f"expected {args.rows} output rows, found {written}")
    print(f"rows: {args.rows:,}, wall time: {elapsed:.2f} s (process start, audit included), "
          f"CPU time: {cpu:.2f} s (all processes)")
    print(f"route-file: {args.rows / elapsed:,.0f} rows/s end to end with SQLite state")


if __name__ == "__main__":
    main()
