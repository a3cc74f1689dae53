"""Territory overlap: which rules match the same records, which win them, and which never win."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from itertools import combinations
from typing import Any

from sync.compiler import CompiledRouting
from sync.models import Decision, Outcome, Record

# What took a record that a rule matched, when no rule won it (the `lost_to` keys besides rules).
KEPT = "(kept existing owner)"
FALLBACK = "(top-level fallback)"
UNASSIGNED = "(unassigned)"
SKIPPED = "(skipped)"
PENDING = "(pending review)"
_WINS = frozenset({Outcome.ASSIGNED, Outcome.FALLBACK})
# Heat-map geometry: a cell per rule pair, the rule names down the left and along the top.
CELL, LABEL, MAX_LABEL = 28, 200, 28


def rule_matches(routing: CompiledRouting, record: Record) -> tuple[int, ...]:
    """Indexes of every rule whose `when` matches the record, in order (what `decide` walks)."""
    first = routing.first_match
    found: list[int] = []
    i = first(record, 0)
    while i >= 0:
        found.append(i)
        i = first(record, i + 1)
    return tuple(found)


def taken_by(decision: Decision) -> str:
    """Who took the record: the winning rule's name, or what happened instead."""
    if decision.outcome in _WINS:
        return decision.rule or FALLBACK
    if decision.rule and _pending(decision):
        return decision.rule
    return {
        Outcome.KEPT_EXISTING: KEPT,
        Outcome.UNASSIGNED: UNASSIGNED,
        Outcome.SKIPPED: SKIPPED,
    }.get(decision.outcome, PENDING)


def _pending(decision: Decision) -> bool:
    # A decision waiting for review won its rule too (the outcome exists once review lands).
    return str(decision.outcome) == "pending_review"


@dataclass(frozen=True, slots=True)
class RuleOverlap:
    """One rule's share: records it won, records it matched, and who took those it lost."""

    rule: str
    wins: int
    matches: int
    lost_to: dict[str, int]

    @property
    def dead(self) -> bool:
        """A rule that never wins: every record it matches goes elsewhere (or it matches none)."""
        return self.wins == 0

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "wins": self.wins, "matches": self.matches,
                "lost_to": dict(self.lost_to), "dead": self.dead}


@dataclass(frozen=True, slots=True)
class Overlaps:
    """The overlap report of one set of records (docs/operations.md#territory-overlap)."""

    records: int  # records decided (skipped rows included)
    rules: tuple[RuleOverlap, ...]  # in routing-file order
    pairs: tuple[tuple[str, str, int], ...]  # (a, b, records both match), a before b; both > 0

    def both(self, a: str, b: str) -> int:
        """Records matched by both rules (0 when none, or a rule not in the file)."""
        for x, y, n in self.pairs:
            if {x, y} == {a, b}:
                return n
        return 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `overlaps --json` (DESIGN §9)."""
        return {"records": self.records, "rules": [r.to_dict() for r in self.rules],
                "pairs": [{"a": a, "b": b, "both": n} for a, b, n in self.pairs]}


@dataclass
class OverlapCounter:
    """Accumulates `Overlaps` record by record: each record's matching rules (by index) and
    the decision routing made for it. Exact by construction: the matches are the compiled
    rules' own, and the winner is the decision's."""

    routing: CompiledRouting
    records: int = 0
    wins: Counter[int] = field(default_factory=Counter)
    matches: Counter[int] = field(default_factory=Counter)
    lost: dict[int, Counter[str]] = field(default_factory=dict)
    pairs: Counter[tuple[int, int]] = field(default_factory=Counter)

    def add(self, matched: Sequence[int] | None, decision: Decision, n: int = 1) -> None:
        """One record: `matched` rule indexes in ascending order (None for a row that never
        reached the rules: a malformed or duplicate row) and its decision; `n` such records
        at once (the dashboard counts the history's groups)."""
        self.records += n
        if not matched:
            return
        rules = self.routing.rules
        # By outcome and name, never by name alone: a rule may be called "(unassigned)".
        won = decision.rule if decision.outcome in _WINS or _pending(decision) else None
        taker = taken_by(decision)
        for i in matched:
            self.matches[i] += n
            if won is not None and rules[i].name == won:
                self.wins[i] += n
            else:
                self.lost.setdefault(i, Counter())[taker] += n
        if len(matched) > 1:
            if n == 1:
                self.pairs.update(combinations(matched, 2))
            else:
                for pair in combinations(matched, 2):
                    self.pairs[pair] += n

    def add_many(self, pairs: Iterable[tuple[Sequence[int] | None, Decision]]) -> None:
        for matched, decision in pairs:
            self.add(matched, decision)

    def result(self) -> Overlaps:
        names = [r.name for r in self.routing.rules]
        rules = tuple(
            RuleOverlap(rule=name, wins=self.wins[i], matches=self.matches[i],
                        lost_to=dict(sorted(self.lost.get(i, Counter()).items(),
                                            key=lambda kv: (-kv[1], kv[0]))))
            for i, name in enumerate(names))
        pairs = tuple((names[a], names[b], n) for (a, b), n in sorted(self.pairs.items()))
        return Overlaps(records=self.records, rules=rules, pairs=pairs)


def heat_map(result: Overlaps) -> str:
    """The overlap matrix as a standalone SVG: a cell per pair of rules, darker for more
    records both match; the diagonal is each rule's own matches. Names are escaped (a rule
    name is the routing file's text)."""
    names = [r.rule for r in result.rules]
    n = len(names)
    counts: dict[tuple[int, int], int] = {}
    for i, rule in enumerate(result.rules):
        counts[(i, i)] = rule.matches
    index = {name: i for i, name in enumerate(names)}
    for a, b, both in result.pairs:
        counts[(index[a], index[b])] = counts[(index[b], index[a])] = both
    top = max(counts.values(), default=0) or 1
    size = LABEL + CELL * max(n, 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
             f'viewBox="0 0 {size} {size}" font-family="sans-serif" font-size="11">',
             "<title>Rule overlap: records both rules match</title>"]
    for i, name in enumerate(names):
        label = escape(name if len(name) <= MAX_LABEL else name[:MAX_LABEL - 1] + "…")
        y = LABEL + CELL * i + CELL / 2 + 4
        parts.append(f'<text x="{LABEL - 6}" y="{y:.1f}" text-anchor="end">{label}</text>')
        x = LABEL + CELL * i + CELL / 2 + 4
        parts.append(f'<text x="{x:.1f}" y="{LABEL - 6}" text-anchor="start" '
                     f'transform="rotate(-60 {x:.1f} {LABEL - 6})">{label}</text>')
    for i, j in ((i, j) for i in range(n) for j in range(n)):
        value = counts.get((i, j), 0)
        shade = value / top
        fill = f"rgb({int(255 - 200 * shade)},{int(255 - 120 * shade)},255)"
        x, y = LABEL + CELL * j, LABEL + CELL * i
        tip = escape(f"{names[i]} ∩ {names[j]}: {value}" if i != j
                     else f"{names[i]}: {value} matches")
        parts.append(f'<rect x="{x}" y="{y}" width="{CELL - 1}" height="{CELL - 1}" '
                     f'fill="{fill}"><title>{tip}</title></rect>')
        if value:
            parts.append(f'<text x="{x + CELL / 2:.1f}" y="{y + CELL / 2 + 4:.1f}" '
                         f'text-anchor="middle">{value}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
