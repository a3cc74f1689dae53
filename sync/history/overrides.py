"""Overrides in the decision history: the list, and the override rate per rule and per rep.

See docs/operations.md#overrides. An override is an `override` event (sync/overrides.py); the
rate is overrides over owner writes the router made (outcome assigned or fallback, written) in
the same window, per the rule that won and per the rep it gave the record to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from sync.history.schema import decisions as D
from sync.history.store import _LOAD_CODES, History, _window
from sync.models import HistoryEvent

OVERRIDE = "override"
NO_RULE = "(fallback)"  # assignments no rule won: the top-level fallback


@dataclass(frozen=True, slots=True)
class Override:
    """One person's change of an owner the router wrote."""

    record_id: str
    crm: str
    object: str  # the record kind: account, lead, contact
    from_: str  # the rep (else the CRM owner id) the router had written
    to: str  # the rep (else the CRM owner id) a person chose
    by: str | None  # who, when the CRM said (HubSpot sourceId, Salesforce LastModifiedById)
    at: datetime
    after_seconds: float  # since our write
    rule: str | None
    pool: str | None = None
    source: str | None = None  # HubSpot changeSource, else the trigger that saw it (sweep...)

    @classmethod
    def of(cls, event: HistoryEvent) -> Override:
        data: Mapping[str, Any] = event.data
        return cls(record_id=event.record_id, crm=event.crm, object=event.object,
                   from_=str(data.get("from") or ""), to=str(data.get("to") or ""),
                   by=data.get("by"), at=event.at,
                   after_seconds=float(data.get("after_seconds") or 0.0),
                   rule=data.get("rule"), pool=data.get("pool"), source=data.get("source"))

    def to_dict(self) -> dict[str, Any]:
        """The shape of `account-router overrides --json` (DESIGN §8)."""
        return {"record_id": self.record_id, "crm": self.crm, "object": self.object,
                "from": self.from_, "to": self.to, "by": self.by, "at": self.at.isoformat(),
                "after_seconds": self.after_seconds, "rule": self.rule}


@dataclass(frozen=True, slots=True)
class OverrideRate:
    """Overrides over assignments for one rule or one rep in a window."""

    name: str
    assignments: int
    overrides: int

    @property
    def rate(self) -> float | None:
        """None when the window holds no assignment to divide by."""
        return self.overrides / self.assignments if self.assignments else None


def list_overrides(history: History, since: datetime | None = None,
                   until: datetime | None = None, *, rule: str | None = None,
                   rep: str | None = None) -> list[Override]:
    """Overrides with `at` in [since, until), newest first; `rule` and `rep` (the rep the
    router had written, or the one a person chose) narrow it."""
    found = [Override.of(e) for e in history.events(kind=OVERRIDE, since=since, until=until)]
    if rule is not None:
        found = [o for o in found if (o.rule or NO_RULE) == rule]
    if rep is not None:
        found = [o for o in found if rep in (o.from_, o.to)]
    return found


def override_rates(history: History, since: datetime | None = None,
                   until: datetime | None = None
                   ) -> tuple[list[OverrideRate], list[OverrideRate]]:
    """(per rule, per rep): assignments the router wrote (decided in [since, until)) and the
    overrides of the window (by `at`), most overridden first. A rule or rep with overrides
    but no assignment in the window (a write from before it) is listed with 0 assignments."""
    written = (D.c.outcome.in_(_LOAD_CODES), D.c.written_at.is_not(None),
               *_window(D.c.decided_at, since, until))
    by_rule = select(D.c.rule, func.count()).where(*written).group_by(D.c.rule)
    by_rep = select(D.c.owner, func.count()).where(D.c.owner.is_not(None), *written) \
        .group_by(D.c.owner)
    with history._read() as conn:
        rule_rows = conn.execute(by_rule).all()
        rep_rows = conn.execute(by_rep).all()
        texts = history._texts(conn, {r[0] for r in (*rule_rows, *rep_rows)})
    rule_counts = Counter({NO_RULE if r is None else texts[r]: int(n) for r, n in rule_rows})
    rep_counts = Counter({texts[r]: int(n) for r, n in rep_rows})
    overrides = list_overrides(history, since, until)
    rule_overrides = Counter(o.rule or NO_RULE for o in overrides)
    rep_overrides = Counter(o.from_ for o in overrides)
    return _rates(rule_counts, rule_overrides), _rates(rep_counts, rep_overrides)


def _rates(assignments: Counter[str], overrides: Counter[str]) -> list[OverrideRate]:
    rates = [OverrideRate(name, assignments.get(name, 0), overrides.get(name, 0))
             for name in set(assignments) | set(overrides)]
    return sorted(rates, key=lambda r: (-r.overrides, -(r.rate or 0.0), r.name))
