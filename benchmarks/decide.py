"""Decisions per second: 50 rules, 10,000 named domains, beside the rule-engine peer."""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rule_engine  # noqa: E402
import yaml  # noqa: E402

from config.routing import parse  # noqa: E402
from sync.compiler import compile_routing  # noqa: E402
from sync.decide import RoutingContext, decide  # noqa: E402
from sync.models import Decision  # noqa: E402
from sync.normalize import build_record  # noqa: E402

INDUSTRIES = ["Software", "Retail", "Healthcare", "Hospital & Health Care", "Manufacturing",
              "Financial Services", "Education", "Logistics", "Media", "Energy", "Insurance",
              "Telecommunications", "Biotechnology", "Real Estate", "Hospitality", "Legal"]
COUNTRIES = ["US", "CA", "GB", "DE", "FR", "NL", "ES", "IT", "SE", "AU", "JP", "BR", "IN", "MX"]
STATES = ["CA", "NY", "TX", "WA", "MA", "IL", "FL", "CO", "GA", "OR", "NC", "VA"]
SOURCES = ["web", "event", "partner", "outbound", "referral", "ads"]


def build_file(rng: random.Random, named: list[str]) -> dict[str, object]:
    """50 rules of the shapes RevOps files have: lists, verticals, size bands, territories."""
    reps = [{"id": f"r{i}", "crm_ids": {"file": f"U{i:03d}"}} for i in range(60)]
    rules: list[dict[str, object]] = [
        {"name": "named", "when": {"domain": {"in_list": "named"}}, "assign": {"rep": "r0"}},
    ]
    for i in range(8):
        pick = rng.sample(INDUSTRIES, 2)
        rules.append({"name": f"vertical-{i}",
                      "when": {"industry": {"in": pick}, "employees": {"gte": 200 + 100 * i}},
                      "assign": {"rep": f"r{1 + i}"}})
    for i in range(14):
        rules.append({"name": f"geo-{i}",
                      "when": {"country": {"eq": COUNTRIES[i]},
                               "employees": {"between": [50 * i, 50 * i + 400]}},
                      "assign": {"rep": f"r{10 + i}"}})
    for i in range(12):
        rules.append({"name": f"state-{i}",
                      "when": {"all": [{"state": {"in": STATES[i:i + 3]}},
                                       {"annual_revenue": {"gt": 1_000_000 * (i + 1)}}]},
                      "assign": {"rep": f"r{25 + i}"}})
    for i in range(8):
        rules.append({"name": f"source-{i}",
                      "when": {"any": [{"lead_source": {"eq": SOURCES[i % 6]}},
                                       {"name": {"contains": f"grp{i}"}}],
                               "not": {"country": {"in": ["US", "CA"]}}},
                      "assign": {"rep": f"r{40 + i}"}})
    for i in range(6):
        rules.append({"name": f"name-{i}", "when": {"name": {"starts_with": f"zz{i}"}},
                      "assign": {"queue": f"Q{i}"}})
    rules.append({"name": "everyone-else", "assign": {"rep": "r59"}})
    assert len(rules) == 50
    return {"version": 1, "reps": reps, "lists": {"named": {"domains": named}}, "rules": rules}


def build_records(rng: random.Random, named: list[str], n: int) -> list[dict[str, str]]:
    rows = []
    for k in range(n):
        domain = rng.choice(named) if rng.random() < 0.05 else f"co{k}.example{k % 97}.com"
        rows.append({
            "id": str(k),
            "name": f"{rng.choice(['zz1', 'acme', 'grp3', 'north'])} company {k}",
            "domain": domain,
            "industry": rng.choice(INDUSTRIES),
            "employees": str(rng.choice([5, 40, 120, 350, 800, 1_500, 12_000])),
            "annual_revenue": str(rng.randint(0, 50) * 250_000),
            "country": rng.choice(COUNTRIES + ["United States", "Germany", ""]),
            "state": rng.choice(STATES),
            "lead_source": rng.choice(SOURCES),
        })
    return rows


# The peer evaluates the same conditions on the same normalized values with rule-engine.
def peer_rules(spec: dict[str, object]) -> list[rule_engine.Rule]:
    def cond(when: dict[str, object]) -> str:
        parts = []
        for key, value in when.items():
            if key in ("any", "all"):
                joined = (" or " if key == "any" else " and ").join(cond(v) for v in value)
                parts.append(f"({joined})")
            elif key == "not":
                parts.append(f"not ({cond(value)})")
            else:
                for op, operand in value.items():
                    parts.append(op_text(key, op, operand))
        return " and ".join(parts) if parts else "true"

    def op_text(field: str, op: str, operand: object) -> str:
        if op == "in_list":
            return f"({field} != null and {field} in named)"
        if op == "in":
            items = ", ".join(repr(norm(field, v)) for v in operand)
            return f"({field} != null and {field} in [{items}])"
        if op == "eq":
            return f"{field} == {norm(field, operand)!r}"
        if op == "gte":
            return f"({field} != null and {field} >= {operand})"
        if op == "gt":
            return f"({field} != null and {field} > {operand})"
        if op == "between":
            return f"({field} != null and {field} >= {operand[0]} and {field} <= {operand[1]})"
        if op == "contains":
            return f"({field} != null and {field} =~~ {operand!r})"
        if op == "starts_with":
            return f"({field} != null and {field} =~ {(operand + '.*')!r})"
        raise ValueError(op)

    def norm(field: str, value: object) -> object:
        if field == "industry":
            from sync.normalize import fold_industry
            return fold_industry(value)
        if field == "country":
            from sync.normalize import country_code
            return country_code(value)
        from sync.normalize import fold
        return fold(value)

    return [rule_engine.Rule(cond(r.get("when") or {})) for r in spec["rules"]]  # type: ignore


def peer_view(record: object, named: set[str]) -> dict[str, object]:
    folded = record.folded  # type: ignore[attr-defined]
    return {"domain": record.domain, "industry": record.industry,  # type: ignore[attr-defined]
            "employees": record.employees, "annual_revenue": record.annual_revenue,  # type: ignore
            "country": record.country, "state": folded.get("state"),  # type: ignore
            "lead_source": folded.get("lead_source"), "name": folded.get("name"),
            "named": named}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--peer-records", type=int, default=3_000,
                        help="the peer is slow; its rate is measured on a prefix")
    args = parser.parse_args()
    rng = random.Random(7)
    named = [f"named{i}.example.org" for i in range(10_000)]
    spec = build_file(rng, named)
    routing = compile_routing(parse(yaml.safe_dump(spec), source="bench.yaml"))
    rows = build_records(rng, named, args.records)

    t0 = time.perf_counter()
    records = [build_record(row) for row in rows]
    normalize_s = time.perf_counter() - t0

    now = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
    def timed(track_matched: bool) -> tuple[list[Decision], float]:
        # First match only (as the peer decides, and as a dry run does), or also every other
        # rule the record matches (`Decision.matched`, what audited decisions record for the
        # dashboard's overlap page; route-file gets it from its workers instead).
        ctx = RoutingContext(routing=routing, now=now, track_matched=track_matched)
        for record in records[:1000]:  # warm caches (rep chains) outside the timed loop
            decide(record, ctx)
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        decided = [decide(record, ctx) for record in records]
        took = time.perf_counter() - t0
        gc.enable()
        return decided, took

    decisions, decide_s = timed(track_matched=False)
    ours = len(records) / decide_s
    _, matched_s = timed(track_matched=True)

    peers = peer_rules(spec)
    named_set = set(named)
    views = [peer_view(r, named_set) for r in records[: args.peer_records]]
    t0 = time.perf_counter()
    peer_names = []
    for view in views:
        winner = next((i for i, rule in enumerate(peers) if rule.matches(view)), -1)
        peer_names.append(winner)
    peer_s = time.perf_counter() - t0
    peer = len(views) / peer_s

    # The two engines must agree, or the comparison means nothing. (Parent-domain matching is
    # ours alone; the generated named domains have no subdomains, so results coincide.)
    names = [r.name for r in routing.rules]
    mismatches = sum(1 for d, w in zip(decisions, peer_names, strict=False)
                     if (d.rule or "") != (names[w] if w >= 0 else ""))
    print(f"normalize: {len(records) / normalize_s:,.0f} records/s (build_record, not timed "
          f"below)")
    print(f"rules: {len(routing.rules)}, named domains: {len(named):,}, records: {len(records):,}")
    print(f"account-router decide: {ours:,.0f} decisions/s ({decide_s:.2f} s); recording every "
          f"matching rule too: {len(records) / matched_s:,.0f}/s ({matched_s:.2f} s)")
    print(f"rule-engine peer: {peer:,.0f} decisions/s on {len(views):,} records; "
          f"{mismatches} disagreements")
    print(f"decide {ours:,.0f}/s, peer {peer:,.0f}/s, ratio {ours / peer:.1f}x")


if __name__ == "__main__":
    main()
