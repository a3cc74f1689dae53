"""CRM calls per 1,000 records swept, per CRM, beside the floor and a naive per-record loop."""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors import registry  # noqa: E402
from connectors.settings import Settings  # noqa: E402
from connectors.simulator import Simulator, serve  # noqa: E402
from sync.compiler import load_routing  # noqa: E402
from sync.pipeline import Pipeline  # noqa: E402
from sync.state.sqlite import SqliteStateStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# A realistic sweep, reported per 1,000 records: the owner list is read once per sweep (cached),
# so a 1,000-record sweep would charge it all to those 1,000 (see --records 1000).
RECORDS = 10_000
# Page and batch sizes of docs/connectors.md#the-built-in-connectors: the fewest calls a sweep can
# possibly make is the list pages plus the write batches.
SIZES = {"hubspot": ("companies", 100, 100), "salesforce": ("Account", 2000, 200)}


def main() -> None:
    global RECORDS
    if "--records" in sys.argv:
        RECORDS = int(sys.argv[sys.argv.index("--records") + 1])
    routing = load_routing(ROOT / "config/examples/routing.yaml")
    sim = Simulator(seed=3)
    sim.seed(companies=RECORDS, contacts=0, accounts=RECORDS, leads=0, days=1)
    results = []
    with serve(sim) as running, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(running.env())
        settings = Settings()
        store = SqliteStateStore(Path(tmp) / "state.db")
        for crm, (obj, page, batch) in SIZES.items():
            connector = registry.create(crm, settings)
            before = sim.stats(crm)["total"]
            report = Pipeline(connector, routing, store).sweep(obj, full=True)
            used = sim.stats(crm)["total"] - before
            connector.close()
            floor = math.ceil(RECORDS / page) + math.ceil(report.written / batch)
            naive = RECORDS + report.written  # read each record, then write each owner
            results.append((crm, used, floor, naive, report.written))
        store.close()
    ratios = []
    per = RECORDS / 1000
    for crm, used, floor, naive, written in results:
        ratios.append(used / floor)
        print(f"{crm}: {used} calls for {RECORDS} records swept ({written} owners written); "
              f"per 1,000 records: {used / per:.1f} calls, floor {floor / per:.1f}, naive "
              f"per-record loop {naive / per:.0f}; {used / floor:.2f}x floor")
    print(f"API calls per 1,000 records: worst {max(ratios):.2f}x the floor (target <= 1.05)")


if __name__ == "__main__":
    main()
