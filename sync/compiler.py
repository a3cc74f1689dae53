"""Compiles a validated routing file once into fast, immutable routing tables."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from config.hours import Schedule
from config.routing import ConfigError, KnownCrms, Pool, Rep, RoutingFile, Rule, Sla
from config.routing import load as load_file
from sync.conditions import (
    CompileContext,
    build_first_match,
    build_later_matches,
    build_predicate,
    compile_when,
)
from sync.enrich import Enrichment, compile_enrichment
from sync.models import Record, TraceStep
from sync.normalize import fold, id_key, is_freemail, normalize_domain


@dataclass(frozen=True, slots=True)
class Clause:
    """One top-level piece of a rule's `when`, kept for `explain`."""

    text: str
    test: Callable[[Record], bool]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int
    name: str
    kind: str  # rep | pool | account_owner | queue
    target: str | None  # rep id, pool id or queue id
    clauses: tuple[Clause, ...]


_MATCH_SETS_KEPT = 4096


@dataclass(frozen=True, slots=True)
class CompiledRouting:
    """Everything `decide` needs that does not change between decisions."""

    file: RoutingFile
    rules: tuple[CompiledRule, ...]
    first_match: Callable[[Record, int], int]
    no_match_steps: tuple[TraceStep, ...]  # shared, so a trace costs a slice, not N objects
    reps: Mapping[str, Rep]
    pools: Mapping[str, Pool]
    zones: Mapping[str, ZoneInfo]  # rep id -> its timezone (the file's default when unset)
    owner_to_rep: Mapping[str, str]  # id key of a rep id or crm id -> rep id
    queue_keys: frozenset[str]  # id keys of every `queue` target
    ignore_keys: frozenset[str]
    warnings: tuple[str, ...]
    raw_fields: frozenset[str] = frozenset()  # CRM fields rules read as `fields.<x>`
    # Review before writing (docs/routing-file.md#review): rules with `review: true`, and the
    # top-level `review_when` condition, which holds any decision that would write.
    review_rules: frozenset[str] = frozenset()
    review_when: Callable[[Record], bool] | None = None
    # Whether any decision may be held (either of the above): a plain field, since `decide`
    # reads it once per decision.
    reviews: bool = False
    # The `enrich:` steps run on each record before the rules (None: none configured).
    enrichment: Enrichment | None = None
    # Rep id -> working week (docs/routing-file.md#working-hours); reps absent work any time.
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    # Indexes of every rule at or after an index whose `when` holds, in order: the rules past
    # the winner for `Decision.matched` (those before it were tried already). None: walk
    # `first_match`.
    later_matches: Callable[[Record, int], tuple[int, ...]] | None = None
    # Every matching rule's index when known before routing (route-file's workers computed
    # them): then `decide` evaluates no condition for `Decision.matched`.
    known_matches: Callable[[Record], tuple[int, ...]] | None = None
    # Rule indexes -> their names, one tuple object per set (`matched_names`; few distinct
    # sets exist). A plain dict read on the hot path: a cache wrapper cost 0.3 µs a decision.
    match_names: dict[tuple[int, ...], tuple[str, ...]] = field(default_factory=dict)

    def matched_names(self, indexes: tuple[int, ...]) -> tuple[str, ...]:
        """The names of the rules at `indexes`, the same tuple object for the same set."""
        found = self.match_names.get(indexes)
        if found is None:
            names = self.match_names
            if len(names) >= _MATCH_SETS_KEPT:
                names.clear()  # only a file of many rules and odd records gets here
            rules = self.rules
            found = names[indexes] = tuple(rules[i].name for i in indexes)
        return found

    @property
    def review_timeout(self) -> timedelta:
        """How long an item waits for a reviewer before `on_review_timeout` acts."""
        return self.file.review_timeout

    @property
    def on_review_timeout(self) -> str:
        """`approve` or `escalate` (the default)."""
        return self.file.on_review_timeout


    def review_reason(self, rule: str | None, record: Record) -> str | None:
        """Why a decision that would write is held for review instead; None: it is not."""
        if rule is not None and rule in self.review_rules:
            return f"rule {rule} has review: true"
        if self.review_when is not None and self.review_when(record):
            return "review_when matched"
        return None

    def sla_for(self, rule: str | None, pool: str | None) -> Sla | None:
        """The first-touch SLA of an assignment: the rule's, else its pool's, else the file's
        (the most specific wins); None when none applies."""
        if rule is not None:
            for r in self.file.rules:
                if r.name == rule and r.sla is not None:
                    return r.sla
        if pool is not None and pool in self.pools and self.pools[pool].sla is not None:
            return self.pools[pool].sla
        return self.file.sla

    def rule_named(self, name: str | None) -> Rule | None:
        """The routing file's rule of that name (None for no rule, or one not in the file)."""
        for r in self.file.rules:
            if r.name == name:
                return r
        return None

    def on_duty_from(self, rep_id: str, instant: datetime) -> datetime:
        """When `rep_id` is next inside their working hours from `instant` on: `instant`
        itself when they have none or are in hours (docs/routing-file.md#working-hours)."""
        schedule = self.schedules.get(rep_id)
        if schedule is None:
            return instant
        return schedule.on_duty_from(instant, self.zones[rep_id])

    @property
    def uses_account_owner(self) -> bool:
        """Whether any rule follows a lead's account owner (then accounts must be tracked)."""
        return any(rule.kind == "account_owner" for rule in self.rules)

    @property
    def policy(self) -> str:
        return self.file.respect_existing_owner

    def rep_for_owner(self, owner: str | None) -> str | None:
        if owner is None:
            return None
        return self.owner_to_rep.get(id_key(owner))

    def summary(self) -> str:
        return (f"{len(self.file.reps)} reps, {len(self.pools)} pools, "
                f"{len(self.file.lists)} lists, {len(self.rules)} rules")


def load_routing(path: str | Path, *, list_roots: Sequence[str | Path] = (),
                 crms: KnownCrms | None = None) -> CompiledRouting:
    """Load, validate and compile a routing file; every problem raises ConfigError.

    `list_roots`: folders besides the routing file's own where list files may live
    (`Settings().list_roots`, from ACCOUNT_ROUTER_LIST_ROOTS). `crms`: the CRM names and
    objects it may use (`connectors.registry.known_crms()`)."""
    return compile_routing(load_file(path, list_roots=list_roots, crms=crms))


def compile_routing(routing: RoutingFile) -> CompiledRouting:
    source = routing.source
    reps = {rep.id: rep for rep in routing.reps}
    default_zone = ZoneInfo(routing.timezone)
    zones = {rep.id: ZoneInfo(rep.timezone) if rep.timezone else default_zone
             for rep in routing.reps}

    owner_to_rep: dict[str, str] = {}
    rep_owner_keys: dict[str, frozenset[str]] = {}
    for i, rep in enumerate(routing.reps):
        keys = {id_key(rep.id), *(id_key(v) for v in rep.crm_ids.values() if v.strip())}
        rep_owner_keys[rep.id] = frozenset(keys)
        for key in keys:
            other = owner_to_rep.get(key)
            if other is not None and other != rep.id:
                raise ConfigError(source, f"reps[{i}].crm_ids",
                                  f"CRM ids not already used by rep {other!r}", key)
            owner_to_rep[key] = rep.id

    lists: dict[str, frozenset[str]] = {}
    list_entries: dict[str, frozenset[str]] = {}
    warnings: list[str] = []
    for name, spec in routing.lists.items():
        domains: set[str] = set()
        folded: set[str] = set()
        for entry, where in zip(routing.list_domains(name), routing.list_entry_paths(name),
                                strict=True):
            domain = normalize_domain(entry)
            if domain is None:
                if spec.file is not None:
                    # The line number finds it; its text is not shown, since a list that is
                    # not a list (`file: /etc/passwd`) must not leak into a message or a log.
                    raise ConfigError(source, where, "a domain such as acme.com"
                                      ).with_found_text("a line that is not a domain")
                raise ConfigError(source, where, "a domain such as acme.com", entry)
            if is_freemail(domain):
                # The built-in free-mail domain, not the line as written.
                warnings.append(f"{where}: {domain!r} is a free-mail domain and never matches")
            domains.add(domain)
            folded.add(fold(entry) or "")
        lists[name] = frozenset(domains)
        list_entries[name] = frozenset(folded)

    enrichment = compile_enrichment(routing.enrich_steps, source)
    # With `state_codes`, conditions on `state` compare canonical subdivision codes.
    state_codes = enrichment is not None and "state_codes" in enrichment.names
    ctx = CompileContext(source=source, lists=lists, list_entries=list_entries,
                         rep_owner_keys=rep_owner_keys, state_codes=state_codes)
    exprs: list[str] = []
    rules: list[CompiledRule] = []
    for i, rule in enumerate(routing.rules):
        when = rule.when
        path = f"rules[{i}].when"
        expr = compile_when(when, path, ctx) if when is not None else "True"
        exprs.append(expr)
        clauses = []
        # The whole `when` compiled above, so each clause compiles cleanly; its warnings were
        # already collected, so a throwaway list keeps them from being reported twice.
        clause_ctx = CompileContext(source=source, lists=lists, list_entries=list_entries,
                                    rep_owner_keys=rep_owner_keys, constants=ctx.constants,
                                    state_codes=state_codes)
        for key, value in (when or {}).items():
            clause_expr = compile_when({key: value}, path, clause_ctx)
            clauses.append(Clause(text=_clause_text(key, value),
                                  test=build_predicate(clause_expr, clause_ctx)))
        target = rule.assign
        value = target.rep or target.pool or target.queue
        rules.append(CompiledRule(index=i, name=rule.name, kind=target.kind, target=value,
                                  clauses=tuple(clauses)))
    review_when = None
    if routing.review_when is not None:
        review_when = build_predicate(compile_when(routing.review_when, "review_when", ctx), ctx)
    warnings.extend(ctx.warnings)

    queue_keys = {id_key(r.assign.queue) for r in routing.rules if r.assign.queue}
    queue_keys |= {id_key(p.overflow.queue) for p in routing.pools.values()
                   if p.overflow and p.overflow.queue}
    if routing.fallback is not None and routing.fallback.queue:
        queue_keys.add(id_key(routing.fallback.queue))

    try:
        first_match = build_first_match(exprs, ctx)
        later_matches = build_later_matches(exprs, ctx)
    except (SyntaxError, RecursionError, MemoryError):
        # Unreachable within the bounds in sync/conditions.py; kept so that a file past some
        # limit of Python's own compiler is still exit 2 with a place, never a traceback.
        raise ConfigError(source, "rules", "conditions simple enough to compile"
                          ).with_found_text("conditions too large or too deeply nested") from None

    return CompiledRouting(
        file=routing,
        rules=tuple(rules),
        first_match=first_match,
        no_match_steps=tuple(TraceStep(r.name, "no_match", "conditions not met") for r in rules),
        reps=reps,
        pools=dict(routing.pools),
        zones=zones,
        owner_to_rep=owner_to_rep,
        queue_keys=frozenset(queue_keys),
        ignore_keys=frozenset(id_key(o) for o in routing.ignore_owners if o.strip()),
        warnings=tuple(warnings),
        raw_fields=frozenset(ctx.raw_fields),
        review_rules=frozenset(r.name for r in routing.rules if r.review),
        reviews=any(r.review for r in routing.rules) or review_when is not None,
        review_when=review_when,
        enrichment=enrichment,
        schedules={rep.id: rep.working_hours.schedule() for rep in routing.reps
                   if rep.working_hours is not None},
        later_matches=later_matches,
    )


def _clause_text(key: str, value: object) -> str:
    if isinstance(value, Mapping):
        ops = ", ".join(f"{op} {v!r}" for op, v in value.items())
        return f"{key} {ops}" if key not in ("any", "all", "not") else f"{key} {{{ops}}}"
    return f"{key} {value!r}"
