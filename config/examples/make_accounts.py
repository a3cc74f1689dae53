"""Regenerates accounts.csv, the bundled example export (seeded, so the file is reproducible)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

INDUSTRIES = ["Software", "Retail", "Healthcare", "Hospital & Health Care", "Manufacturing",
              "Financial Services", "Education", "Logistics", "Medical Devices", "Media"]
COUNTRIES = ["US", "United States", "USA", "Canada", "United Kingdom", "Germany", "France", "DE"]
NAMED = ["acme.com", "globex.com", "initech.com", "hooli.com", "eu.acme.com", "tyrell.co.uk"]
OWNERS = ["", "", "", "", "", "005000000000INTEG", "101", "005000000000106AAA", "gus",
          "00G000000000QUEUE", "005000000000999AAA"]
WORDS = ["north", "blue", "peak", "river", "quantum", "maple", "iron", "bright", "delta", "nova",
         "cedar", "pixel", "harbor", "summit", "lumen", "orbit"]


def main() -> None:
    rng = random.Random(20261125)
    rows = []
    for n in range(1, 301):
        if n % 29 == 0:
            domain = rng.choice(NAMED)
        else:
            domain = f"{rng.choice(WORDS)}{rng.choice(WORDS)}{n}.com"
        employees = rng.choice(["12", "45", "120", "250", "480", "600", "1,200", "3.5k", "", "n/a"])
        rows.append({
            "id": f"A{n:04d}",
            "name": domain.split(".")[0].replace("-", " ").title(),
            "domain": rng.choice([domain, f"https://www.{domain}/about", domain.upper()]),
            "industry": rng.choice(INDUSTRIES),
            "employees": employees,
            "country": rng.choice(COUNTRIES),
            "owner": rng.choice(OWNERS),
        })
    out = Path(__file__).with_name("accounts.csv")
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
