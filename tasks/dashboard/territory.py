"""The dashboard's territory-overlap page: what the decision history proves about the rules.

The history keeps decisions, not records, so it cannot say which later rules a record would
also have matched (routing stops at the first rule that yields someone). It proves exactly: the
decisions each rule won, the decisions a rule matched but could not assign (its target had
nobody eligible: a `no_assignee` step in the trace) and who took those instead, and the rules
that never won. The full matrix comes from `account-router overlaps`, which re-reads the
records (docs/operations.md#territory-overlap).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sync.compiler import CompiledRouting
from sync.overlaps import taken_by
from tasks.dashboard.data import HistoryReader

WINDOW = timedelta(days=30)
# Traces read for the "matched, nobody eligible" counts: the newest decisions of the window.
# Wins and totals are exact whatever the volume (counted in SQL); this bounds a page load.
MAX_TRACES = 5_000


@dataclass(frozen=True, slots=True)
class RuleShare:
    rule: str
    wins: int  # decisions this rule won in the window (exact)
    share: float  # of all decisions in the window, 0..1
    unassignable: int  # matched, but nobody eligible (in the traces read)
    lost_to: dict[str, int] = field(default_factory=dict)  # who took those instead
    in_file: bool = True  # false: in the history, no longer in the routing file

    @property
    def dead(self) -> bool:
        """A rule of the file that won nothing in the window."""
        return self.in_file and self.wins == 0


@dataclass(frozen=True, slots=True)
class Territory:
    since: datetime
    until: datetime
    decisions: int  # every decision in the window
    no_rule: int  # decisions no rule won (kept, top-level fallback, unassigned, skipped)
    traces_read: int
    rules: list[RuleShare]  # the routing file's rules in order, then rules only in history

    @property
    def complete(self) -> bool:
        """Whether every decision of the window was read for the `unassignable` counts."""
        return self.traces_read >= self.decisions

    @property
    def dead(self) -> list[str]:
        return [r.rule for r in self.rules if r.dead]


def territory(history: HistoryReader, routing: CompiledRouting | None,
              now: datetime) -> Territory:
    """The last 30 days of history, per rule of `routing` (when there is one)."""
    since, until = now - WINDOW, now
    hits = history.rule_hits(since, until)
    total = sum(history.outcome_counts(since, until).values())
    unassignable: Counter[str] = Counter()
    lost: dict[str, Counter[str]] = {}
    read = history.decision_ids(since=since, until=until, limit=MAX_TRACES)
    for _, decision in read:
        for step in decision.trace:
            if step.result == "no_assignee":
                unassignable[step.rule] += 1
                lost.setdefault(step.rule, Counter())[taken_by(decision)] += 1
    names = [r.name for r in routing.rules] if routing is not None else []
    seen = set(names)
    extra = sorted({*hits, *unassignable} - seen - {""},
                   key=lambda name: (-hits.get(name, 0), name))

    def share(name: str, in_file: bool) -> RuleShare:
        wins = hits.get(name, 0)
        taken = lost.get(name, Counter())
        return RuleShare(name, wins, wins / total if total else 0.0, unassignable[name],
                         dict(sorted(taken.items(), key=lambda kv: (-kv[1], kv[0]))),
                         in_file)

    rules = [share(n, True) for n in names] + [share(n, False) for n in extra]
    return Territory(since, until, total, hits.get("", 0), len(read), rules)
