"""Rule suggestions with evidence: segments that convert significantly better with another owner.

Pure: the caller joins the decision history with the CRM's records and outcomes into
`Observation`s; this module tests every (segment, candidate) pair with Fisher's exact test,
corrects across all of them with Benjamini–Hochberg and proposes a rule only where the corrected
evidence holds (docs/operations.md#rule-suggestions). Nothing here applies anything.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from sync.compiler import CompiledRouting
from sync.models import Record

# Defaults, documented in docs/operations.md#rule-suggestions.
MIN_SAMPLE = 30  # records per cell (the candidate's and the current owner's) before a test runs
ALPHA = 0.05  # the false-discovery rate Benjamini–Hochberg controls across all tests
# Suggestions whose `moves` are simulated (each reads the object's records once more); later
# ones print `moves` null.
MAX_SIMULATED = 10
# Size bands of `employees` (low inclusive, high exclusive; None: open).
SIZE_BANDS: tuple[tuple[str, float, float | None], ...] = (
    ("1-49", 0, 50), ("50-199", 50, 200), ("200-999", 200, 1000), ("1000+", 1000, None))
DIMENSIONS = ("industry", "size_band", "country", "lead_source", "rule")
# Equal probabilities differ by rounding only: the usual relative tolerance (R's fisher.test
# uses 1 + 1e-7) so that tables as likely as the observed one are counted as "as extreme".
_TIE = 1 + 1e-7


def _log_hypergeom(x: int, row1: int, row2: int, col1: int) -> float:
    """log P(X = x) for the top-left cell of a 2x2 table with the given margins."""
    return (_log_comb(row1, x) + _log_comb(row2, col1 - x) - _log_comb(row1 + row2, col1))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p-value of Fisher's exact test on the table [[a, b], [c, d]]: the summed
    probability (hypergeometric, margins fixed) of every table no more likely than the one
    observed. Summed in log space so thousands of records neither overflow nor underflow."""
    if min(a, b, c, d) < 0:
        raise ValueError("a 2x2 table of counts ≥ 0")
    row1, row2, col1 = a + b, c + d, a + c
    lo, hi = max(0, col1 - row2), min(row1, col1)
    observed = _log_hypergeom(a, row1, row2, col1)
    logs = [_log_hypergeom(x, row1, row2, col1) for x in range(lo, hi + 1)]
    top = max(logs)
    cutoff = observed + math.log(_TIE)
    total = sum(math.exp(v - top) for v in logs)
    extreme = sum(math.exp(v - top) for v in logs if v <= cutoff)
    return min(1.0, extreme / total)


def benjamini_hochberg(ps: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (q-values), in the order given: q_(i) is the least
    of p_(j)·m/j over j ≥ i, capped at 1."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    qs = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, ps[i] * m / rank)
        qs[i] = min(1.0, running)
    return qs


def size_band(employees: float | None) -> str | None:
    """The size band (SIZE_BANDS) of an employee count; None when unknown or negative."""
    if employees is None or employees < 0:
        return None
    for name, low, high in SIZE_BANDS:
        if employees >= low and (high is None or employees < high):
            return name
    return None


def rule_target(routing: CompiledRouting, record: Record) -> str | None:
    """Who the rules give a record, as a segment's owner: the winning rule's rep or pool, else
    the fallback rep or queue (None: a rule that follows the account, or nothing). Caps,
    availability and existing owners aside: the rules' intent, not today's capacity."""
    i = routing.first_match(record, 0)
    if i < 0:
        fallback = routing.file.fallback
        return None if fallback is None else (fallback.rep or fallback.queue)
    rule = routing.rules[i]
    return rule.target if rule.kind in ("rep", "pool", "queue") else None


@dataclass(frozen=True, slots=True)
class Observation:
    """One routed record: its segment values (a dimension absent when the record has none),
    who routing gave it then (rep id, pool when a pool chose), who routing gives it now
    (`now`: pool name when a pool would choose, else the rep id; None: no owner), and whether
    it converted."""

    record_id: str
    segments: Mapping[str, str]
    owner: str
    pool: str | None
    now: str | None
    converted: bool


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A proposed rule and its evidence (DESIGN §9, `suggest --json`)."""

    segment: Mapping[str, str]
    from_: str  # who routing gives the segment now (pool or rep)
    to: str  # the rep or pool that converts better
    to_kind: str  # rep | pool
    n: int  # records tested: both cells
    n_to: int
    n_now: int
    rate_to: float
    rate_now: float
    p: float
    q: float
    rule_yaml: str = ""
    rule: Mapping[str, Any] = field(default_factory=dict)
    moves: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"segment": dict(self.segment), "from": self.from_, "to": self.to,
                "n": self.n, "n_to": self.n_to, "n_now": self.n_now,
                "rate_to": round(self.rate_to, 4), "rate_now": round(self.rate_now, 4),
                "p": self.p, "q": self.q, "rule_yaml": self.rule_yaml, "moves": self.moves}


@dataclass(frozen=True, slots=True)
class Report:
    """Every suggestion (best evidence first) and how many tests were run to find them."""

    suggestions: tuple[Suggestion, ...]
    tested: int
    observations: int
    min_sample: int
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        return {"suggestions": [s.to_dict() for s in self.suggestions], "tested": self.tested,
                "observations": self.observations, "min_sample": self.min_sample,
                "alpha": self.alpha}


@dataclass(frozen=True, slots=True)
class _Test:
    dimension: str
    value: str
    from_: str
    to: str
    to_kind: str
    to_hits: tuple[int, int]  # converted, total
    now_hits: tuple[int, int]
    p: float


def _from(observations: Sequence[Observation]) -> str | None:
    """Who routing gives a segment now: the most common `now` among its records (ties by
    name, so the answer does not depend on order)."""
    counts = Counter(o.now for o in observations if o.now is not None)
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def analyse(observations: Iterable[Observation], pools: Mapping[str, Sequence[str]], *,
            min_sample: int = MIN_SAMPLE, alpha: float = ALPHA,
            dimensions: Sequence[str] = DIMENSIONS) -> Report:
    """Test, in every segment (one dimension = one value), each rep and pool that handled its
    records against whoever routing gives the segment now; keep those whose BH q ≤ alpha and
    whose rate is higher. A cell below `min_sample` records is never tested."""
    if min_sample < 1:
        raise ValueError("min_sample must be at least 1")
    obs = list(observations)
    by_segment: dict[tuple[str, str], list[Observation]] = defaultdict(list)
    for o in obs:
        for dim in dimensions:
            value = o.segments.get(dim)
            if value is not None and value != "":
                by_segment[(dim, value)].append(o)
    tests: list[_Test] = []
    for (dim, value), group in sorted(by_segment.items()):
        now = _from(group)
        if now is None:
            continue
        # The current owner's cell: records of the segment handled by `now` (a pool: any of
        # its members; a rep: that rep).
        now_members = set(pools.get(now, ())) or {now}
        candidates: set[tuple[str, str]] = {(o.owner, "rep") for o in group}
        candidates |= {(o.pool, "pool") for o in group if o.pool is not None}
        for to, kind in sorted(candidates):
            if to == now:
                continue
            if kind == "pool":
                in_to = [o for o in group if o.pool == to]
                in_now = [o for o in group if o.owner in now_members and o.pool != to]
            else:
                in_to = [o for o in group if o.owner == to]
                in_now = [o for o in group if o.owner in now_members and o.owner != to]
            if len(in_to) < min_sample or len(in_now) < min_sample:
                continue
            a = sum(o.converted for o in in_to)
            c = sum(o.converted for o in in_now)
            p = fisher_exact(a, len(in_to) - a, c, len(in_now) - c)
            tests.append(_Test(dim, value, now, to, kind, (a, len(in_to)), (c, len(in_now)), p))
    qs = benjamini_hochberg([t.p for t in tests])
    found = []
    for t, q in zip(tests, qs, strict=True):
        rate_to = t.to_hits[0] / t.to_hits[1]
        rate_now = t.now_hits[0] / t.now_hits[1]
        if q <= alpha and rate_to > rate_now:
            found.append(Suggestion(segment={t.dimension: t.value}, from_=t.from_, to=t.to,
                                    to_kind=t.to_kind, n=t.to_hits[1] + t.now_hits[1],
                                    n_to=t.to_hits[1], n_now=t.now_hits[1], rate_to=rate_to,
                                    rate_now=rate_now, p=t.p, q=q))
    found.sort(key=lambda s: (s.q, s.p, -(s.rate_to - s.rate_now), s.to))
    return Report(tuple(found), tested=len(tests), observations=len(obs),
                  min_sample=min_sample, alpha=alpha)


def _slug(text: str) -> str:
    kept = "".join(ch if ch.isalnum() else "-" for ch in text.lower())
    return "-".join(part for part in kept.split("-") if part)[:40] or "segment"


def rule_for(suggestion: Suggestion, rule_whens: Mapping[str, Mapping[str, Any] | None],
             kind: str | None = None) -> dict[str, Any]:
    """The routing-file rule that would give the segment to the suggested rep or pool. A
    rule's population reuses that rule's own `when` (None: it matches everything). `kind`
    (account, lead, contact): the records tested were of that kind only, so the rule says so,
    and a lead keeps following its account where a rule says it should."""
    (dim, value), = suggestion.segment.items()
    when: dict[str, Any] = {"object": {"eq": kind}} if kind else {}
    if dim == "rule":
        when.update(rule_whens.get(value) or {})
    elif dim == "size_band":
        band = next(b for b in SIZE_BANDS if b[0] == value)
        when["employees"] = {"gte": band[1]} | ({"lt": band[2]} if band[2] is not None else {})
    else:
        when[dim] = {"eq": value}
    name = f"suggested-{_slug(dim)}-{_slug(value)}-{_slug(suggestion.to)}"
    taken, n = set(rule_whens), 2
    unique = name
    while unique in taken:  # rule names are unique in a routing file
        unique, n = f"{name}-{n}", n + 1
    rule: dict[str, Any] = {"name": unique}
    if when:
        rule["when"] = when
    rule["assign"] = {suggestion.to_kind: suggestion.to}
    return rule


def rule_yaml(rule: Mapping[str, Any]) -> str:
    """A rule as routing-file YAML, one list item ready to paste under `rules:`."""
    return yaml.safe_dump([dict(rule)], sort_keys=False, allow_unicode=True,
                          default_flow_style=None)


def with_rule(document: Mapping[str, Any], rule: Mapping[str, Any],
              before: str | None = None) -> dict[str, Any]:
    """A routing-file document (parsed YAML) with `rule` inserted just before the rule named
    `before` (a rule's population: the same records, nothing earlier rules win), else first
    (so it wins its segment); the document itself is left as it was."""
    rules = list(document.get("rules") or [])
    at = next((i for i, r in enumerate(rules)
               if isinstance(r, Mapping) and r.get("name") == before), 0)
    copy = dict(document)
    copy["rules"] = [*rules[:at], dict(rule), *rules[at:]]
    return copy
