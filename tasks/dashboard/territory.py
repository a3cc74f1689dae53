"""The dashboard's territory-overlap page: what the decision history proves about the rules.

Each decision the rules make records every rule whose `when` the record matched
(`Decision.matched`, the later rules' too), so the last 30 days give exactly what
`account-router overlaps` gives over the same records: per rule the records it won, matched,
and lost (to whom), the rules that never win, and the pair matrix (sync/overlaps.py, the same
counter and the same heat map). Decisions that carry no set (recorded before it was kept, or
not made by the rules: SLA re-routes, review answers, POST /route decisions written later) are
counted apart and left out. Also: the decisions each rule won, and those a rule matched with
nobody eligible (a `no_assignee` step in the trace) and who took them instead
(docs/operations.md#territory-overlap).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sync.compiler import CompiledRouting
from sync.models import Decision
from sync.overlaps import OverlapCounter, Overlaps, taken_by
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
    # `overlaps` over the window's decisions that carry their matched rules (None without a
    # routing file: matches are counted per rule of the file).
    overlap: Overlaps | None = None
    unknown: int = 0  # decisions of the window without their matched rules, left out of it

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
    overlap, unknown = matched_overlaps(history, routing, since, until)
    return Territory(since, until, total, hits.get("", 0), len(read), rules, overlap, unknown)


def matched_overlaps(history: HistoryReader, routing: CompiledRouting | None,
                     since: datetime, until: datetime) -> tuple[Overlaps | None, int]:
    """`overlaps` of the decisions in [since, until) that carry their matched rules, and how
    many do not. Counted in SQL by (matched set, winning rule, outcome), then each group goes
    through the CLI's own counter with its count: the same definitions, exactly. Rules of the
    set no longer in the file are left out of it (the matrix is the file's)."""
    groups = history.matched_groups(since, until)
    unknown = sum(g.count for g in groups if g.matched is None)
    if routing is None:
        return None, unknown
    index = {rule.name: i for i, rule in enumerate(routing.rules)}
    counter = OverlapCounter(routing)
    for g in groups:
        if g.matched is None:
            continue
        matched = sorted(index[name] for name in g.matched if name in index)
        counter.add(matched, Decision("", "", "", g.outcome, rule=g.rule), g.count)
    return counter.result(), unknown
