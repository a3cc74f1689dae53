"""Territory overlap: which rules match the same records, which win them, and which never win."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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

    def add(self, matched: Sequence[int] | None, decision: Decision) -> None:
        """One record: `matched` rule indexes (None for a row that never reached the rules: a
        malformed or duplicate row) and its decision."""
        self.records += 1
        if not matched:
            return
        rules = self.routing.rules
        # By outcome and name, never by name alone: a rule may be called "(unassigned)".
        won = decision.rule if decision.outcome in _WINS or _pending(decision) else None
        taker = taken_by(decision)
        for i in matched:
            self.matches[i] += 1
            if won is not None and rules[i].name == won:
                self.wins[i] += 1
            else:
                self.lost.setdefault(i, Counter())[taker] += 1
        if len(matched) > 1:
            self.pairs.update(combinations(matched, 2))

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
