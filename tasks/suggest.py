"""Rule suggestions from a CRM: the decision history joined with records and outcomes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import yaml

from config.routing import parse
from sync.compiler import CompiledRouting, compile_routing
from sync.history import History
from sync.models import Decision, Outcome, Record
from sync.pipeline import Pipeline
from sync.ports import Connector, Conversions
from sync.state import open_store
from sync.suggest import (
    ALPHA,
    MAX_SIMULATED,
    MIN_SAMPLE,
    Observation,
    Report,
    analyse,
    rule_for,
    rule_target,
    rule_yaml,
    size_band,
    with_rule,
)

_ROUTED = frozenset({Outcome.ASSIGNED, Outcome.FALLBACK})


class NoOutcomes(ValueError):
    """The connector cannot say which records converted (no `Conversions`)."""


@dataclass(frozen=True, slots=True)
class Inputs:
    """What a suggestion run needs besides the CRM: the routing file as written (its YAML
    document and path, to insert a rule and load it exactly as the loader would)."""

    routing: CompiledRouting
    document: Mapping[str, Any]
    source: Any  # the routing file's path (list files resolve against it)
    list_roots: Sequence[Any] = ()


def segments_of(record: Record, rule: str | None) -> dict[str, str]:
    """A record's segment values (docs/operations.md#rule-suggestions): industry and lead
    source as written, ISO country, size band of employees, and the rule that routed it
    (None: leave it out, e.g. a rule the file no longer has)."""
    values = {"industry": record.raw.get("industry"), "country": record.country,
              "size_band": size_band(record.employees),
              "lead_source": record.raw.get("lead_source"), "rule": rule}
    return {k: v for k, v in values.items() if v}


def _target(decision: Decision) -> str | None:
    """Who a decision gives the record to, as a segment's owner: the pool when a pool chose,
    else the rep (None: nobody)."""
    if decision.outcome not in _ROUTED or decision.owner is None:
        return None
    return decision.pool or decision.owner


def _fresh(routing: CompiledRouting) -> CompiledRouting:
    # Who the rules give a record now, its present owner aside: every record the history
    # holds has an owner already, which `respect_existing_owner` would keep.
    return compile_routing(routing.file.model_copy(update={"respect_existing_owner": "never"}))


def _decide_all(connector: Connector, routing: CompiledRouting, obj: str, now: datetime
                ) -> tuple[list[Record], list[Decision]]:
    """`decide_all` as `simulate` runs it, over fresh pool state (no cap used, no cursor):
    the same for the current rules and the rules with a suggestion, so their difference is
    the rule's alone."""
    store = open_store("sqlite:///:memory:")
    try:
        pipeline = Pipeline(connector, _fresh(routing), store, dry_run=True, clock=lambda: now)
        records, _unreadable, decisions = pipeline.decide_all(obj, now=now)
    finally:
        store.close()
    return records, decisions


def suggest(connector: Connector, history: History, inputs: Inputs, obj: str, *,
            since: datetime | None, now: datetime, min_sample: int = MIN_SAMPLE,
            alpha: float = ALPHA) -> Report:
    """Suggestions for one CRM object: read every record (segments) and who the rules give
    each now, the history's newest routed decision per record since `since` (who had it),
    and the CRM's outcomes for those; test; then build, load and simulate each rule."""
    if not isinstance(connector, Conversions):
        raise NoOutcomes(f"{connector.name} cannot read outcomes (conversions)")
    obj = connector.spec.canonical_object(obj)
    kind = connector.spec.kind(obj)
    records, decisions = _decide_all(connector, inputs.routing, obj, now)
    by_id = {r.id: (r, d) for r, d in zip(records, decisions, strict=True)}
    # A rule the file no longer has is no population to suggest for: its rule would have no
    # `when` to copy and would match everything.
    names = {rule.name for rule in inputs.routing.rules}
    routed: dict[str, Decision] = {}
    for _, d in history.decision_ids(since=since):  # newest first
        if (d.crm == connector.name and d.object == kind and d.outcome in _ROUTED
                and d.owner is not None and d.record_id in by_id):
            routed.setdefault(d.record_id, d)
    converted = connector.converted(obj, list(routed)) if routed else set()
    observations = [
        Observation(record_id=rid,
                    segments=segments_of(by_id[rid][0], d.rule if d.rule in names else None),
                    owner=d.owner, pool=d.pool, now=rule_target(inputs.routing, by_id[rid][0]),
                    converted=rid in converted)
        for rid, d in routed.items() if d.owner is not None]
    pools = {name: tuple(pool.members) for name, pool in inputs.routing.pools.items()}
    report = analyse(observations, pools, min_sample=min_sample, alpha=alpha)
    whens = {str(r.get("name")): r.get("when") for r in inputs.document.get("rules") or []
             if isinstance(r, Mapping)}
    before = {r.id: _target(d) for r, d in zip(records, decisions, strict=True)}
    done = []
    for number, s in enumerate(report.suggestions):
        rule = rule_for(s, whens, kind)
        (dim, value), = s.segment.items()
        document = with_rule(inputs.document, rule, before=value if dim == "rule" else None)
        # The proof the rule is valid: the routing loader takes the file with it inserted.
        changed = compile_routing(parse(yaml.safe_dump(document, sort_keys=False),
                                        source=inputs.source, list_roots=inputs.list_roots))
        moves: int | None = None
        if number < MAX_SIMULATED:
            # By id: a live CRM may gain or lose records between the two reads.
            moves = sum(before.get(r.id, _target(d)) != _target(d)
                        for r, d in zip(*_decide_all(connector, changed, obj, now), strict=True))
        done.append(replace(s, rule=rule, rule_yaml=rule_yaml(rule), moves=moves))
    return replace(report, suggestions=tuple(done))
