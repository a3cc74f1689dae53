"""Compiles `when` conditions into Python expressions over normalized records.

See docs/routing-file.md#conditions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import re2  # type: ignore[import-untyped]  # ships no py.typed

from config.routing import ConfigError
from sync.enrich import ISO_STATE, state_operand_keys
from sync.models import NUMERIC_FIELDS, RECORD_FIELDS, Record
from sync.normalize import (
    PostalKey,
    country_code,
    fold,
    fold_industry,
    id_key,
    is_freemail,
    normalize_domain,
    parse_number,
    postal_between,
    postal_keys,
)

COMBINATORS = ("any", "all", "not")
POSITIVE_OPS = ("eq", "in", "gt", "gte", "lt", "lte", "between", "contains", "starts_with",
                "matches", "in_list")
OPERATORS = (*POSITIVE_OPS, "ne", "not_in", "exists")

# Bounds that keep every accepted file compilable and every decision fast (issue 8, point 6).
# Python's parser refuses ~200 nested parentheses ("too many nested parentheses"); each level
# of any/all/not adds one or two, and a field test a few more.
MAX_CONDITION_DEPTH = 24
MAX_OPERATORS = 20_000  # operator tests in all rules together: bounds the generated code
MAX_PATTERN_CHARS = 1_000  # one `matches` regex
# Numbers in conditions: finite and within ±10^18, far past any head count or revenue, so
# every bound prints as a plain float literal and compares exactly as written.
MAX_NUMBER = 1e18
# `matches` runs on RE2: matching time is linear in the value, so `(a+)+$` against a
# 100,000-character field cannot hang a worker as Python's backtracking `re` would. RE2 has no
# backreferences or lookaround; such patterns are refused at load with RE2's reason.
_RE2_OPTIONS = re2.Options()
# docs/routing-file.md#edge-case-rules: a case-insensitive search
_RE2_OPTIONS.case_sensitive = False
_RE2_OPTIONS.log_errors = False  # the reason goes into the ConfigError, not onto stderr
_RE2_OPTIONS.max_mem = 8 << 20  # per compiled program; past it RE2 refuses the pattern


@lru_cache(maxsize=65536)
def _num(value: str | None) -> float | None:
    # Raw `fields.<x>` values are parsed on demand; the cache keeps repeated values cheap.
    return parse_number(value) if value is not None else None


def _idk(value: str | None) -> str | None:
    return id_key(value) if value is not None else None


@dataclass
class CompileContext:
    """What the compiler needs besides the condition: lists, rep ids, and where it reports."""

    source: Any
    lists: Mapping[str, frozenset[str]]
    list_entries: Mapping[str, frozenset[str]]  # folded entries, for in_list on non-domain fields
    rep_owner_keys: Mapping[str, frozenset[str]]  # rep id -> id keys of the rep and its crm ids
    constants: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    raw_fields: set[str] = field(default_factory=set)  # `fields.<x>` names the rules read
    operators: int = 0  # operator tests compiled so far, against MAX_OPERATORS
    # The file enriches with `state_codes`: `state` eq/in compare canonical subdivision codes.
    state_codes: bool = False

    def const(self, value: Any) -> str:
        name = f"_c{len(self.constants)}"
        self.constants[name] = value
        return name

    def error(self, path: str, expected: str, found: Any) -> ConfigError:
        return ConfigError(self.source, path, expected, found)


FIELD_HELP = "a record field (" + ", ".join(RECORD_FIELDS) + ") or fields.<crm_field>"


def compile_when(when: Any, path: str, ctx: CompileContext, depth: int = 0) -> str:
    """Return a Python expression (over `r`, a `Record`) for a `when` mapping."""
    if not isinstance(when, Mapping):
        raise ctx.error(path, "a mapping of fields to operators, or any/all/not", when)
    if depth > MAX_CONDITION_DEPTH:
        raise ConfigError(ctx.source, path, f"any/all/not nested at most {MAX_CONDITION_DEPTH} "
                          "levels deep").with_found_text("deeper nesting")
    if not when:
        return "True"
    parts = []
    for key, value in when.items():
        key_path = f"{path}.{key}"
        if key in ("any", "all"):
            if not isinstance(value, list):
                raise ctx.error(key_path, "a list of conditions", value)
            subs = [compile_when(v, f"{key_path}[{i}]", ctx, depth + 1)
                    for i, v in enumerate(value)]
            if not subs:
                parts.append("False" if key == "any" else "True")
            else:
                parts.append("(" + (" or " if key == "any" else " and ").join(subs) + ")")
        elif key == "not":
            parts.append(f"(not {compile_when(value, key_path, ctx, depth + 1)})")
        else:
            parts.append(compile_field(str(key), value, key_path, ctx))
    return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"


def _field_kind(name: str) -> str:
    if name in NUMERIC_FIELDS:
        return "number"
    if name in ("domain", "country", "industry", "owner"):
        return name
    return "text"


def compile_field(name: str, spec: Any, path: str, ctx: CompileContext) -> str:
    """One field's operators, AND-ed; a bare scalar is shorthand for `eq`."""
    if not (name in RECORD_FIELDS or (name.startswith("fields.") and len(name) > 7)):
        raise ctx.error(path, FIELD_HELP, name)
    if name.startswith("fields."):
        ctx.raw_fields.add(name[7:])
    if not isinstance(spec, Mapping):
        if isinstance(spec, list) or spec is None:
            raise ctx.error(path, "a mapping of operators such as {eq: ...} or {in: [...]}", spec)
        spec = {"eq": spec}
    if not spec:
        raise ctx.error(path, "at least one operator (" + ", ".join(OPERATORS) + ")", spec)
    parts = []
    for op, operand in spec.items():
        op_path = f"{path}.{op}"
        if op not in OPERATORS:
            raise ctx.error(op_path, "an operator (" + ", ".join(OPERATORS) + ")", op)
        ctx.operators += 1
        if ctx.operators > MAX_OPERATORS:
            raise ConfigError(ctx.source, op_path, f"at most {MAX_OPERATORS:,} operator tests "
                              "in all rules").with_found_text("more")
        parts.append(_compile_op(name, str(op), operand, op_path, ctx))
    return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"


def _number(operand: Any, path: str, ctx: CompileContext) -> float:
    if isinstance(operand, bool):
        raise ctx.error(path, "a number", operand)
    value = parse_number(operand)
    if value is None and not (isinstance(operand, float) and not math.isfinite(operand)):
        raise ctx.error(path, "a number", operand)
    # `.inf` or `.nan` would print into the generated code as the names `inf`/`nan`
    # (NameError on every record); huge values are typos, not territories.
    if value is None or not math.isfinite(value) or abs(value) > MAX_NUMBER:
        raise ctx.error(path, "a finite number between -1e18 and 1e18", operand)
    return value


def _postal_ranges(operand: list[Any], path: str, ctx: CompileContext
                   ) -> tuple[tuple[PostalKey, PostalKey], ...]:
    """`postal_code: {between: [lo, hi]}` as ranges of one postal format (a US ZIP, a Canadian
    FSA, a UK outward code); () when neither end is a postal code of these formats (then the
    range is numeric, as on any other field). Ends of different formats, or low above high in
    every format both share, are errors naming the path."""
    if not all(isinstance(v, str) for v in operand):
        return ()  # unquoted numbers keep their numeric meaning, as on any field
    lows, highs = postal_keys(operand[0]), postal_keys(operand[1])
    if not lows and not highs:
        return ()
    shared = [(lo, hi) for lo in lows for hi in highs if lo[0] == hi[0]]
    if not shared:
        raise ctx.error(path, "two postal codes of one format (US ZIP, Canadian FSA or UK "
                        "outward code)", operand)
    ranges = tuple((lo, hi) for lo, hi in shared if lo <= hi)
    if not ranges:
        raise ctx.error(path, "low ≤ high", operand)
    return ranges


def _is_number(operand: Any) -> bool:
    return isinstance(operand, int | float) and not isinstance(operand, bool)


def _scalar(operand: Any, path: str, ctx: CompileContext) -> Any:
    if operand is None or isinstance(operand, Mapping | list):
        raise ctx.error(path, "a single value", operand)
    return operand


def _operands(op: str, operand: Any, path: str, ctx: CompileContext) -> list[Any]:
    if op in ("in", "not_in"):
        if not isinstance(operand, list):
            raise ctx.error(path, "a list of values", operand)
        return [_scalar(v, f"{path}[{i}]", ctx) for i, v in enumerate(operand)]
    return [_scalar(operand, path, ctx)]


def _compile_op(name: str, op: str, operand: Any, path: str, ctx: CompileContext) -> str:
    kind = _field_kind(name)
    raw = f"r.raw.get({name!r})"
    folded = f"r.folded.get({name!r})"
    # A value that does not normalize is missing for every operator
    # (docs/routing-file.md#missing-values): an unparsable number (`n/a`), a domain that is no host,
    # an industry of only `&`/`and`. Text operators on these fields therefore first require the
    # normalized value.
    normalized = {"number": f"r.{name}", "domain": "r.domain", "industry": "r.industry"}.get(kind)
    if op == "exists":
        if not isinstance(operand, bool):
            raise ctx.error(path, "true or false", operand)
        present = f"({normalized} is not None)" if normalized else f"({name!r} in r.raw)"
        return present if operand else f"(not {present})"
    guard = f"{normalized} is not None and " if kind == "number" else ""

    if op in ("gt", "gte", "lt", "lte", "between"):
        value = f"r.{name}" if kind == "number" else f"_num({raw})"
        if op == "between":
            if not isinstance(operand, list) or len(operand) != 2:
                raise ctx.error(path, "a list [low, high]", operand)
            if name == "postal_code":
                ranges = _postal_ranges(operand, path, ctx)
                if ranges:
                    return f"_postal_between({raw}, {ctx.const(ranges)})"
            lo = _number(operand[0], f"{path}[0]", ctx)
            hi = _number(operand[1], f"{path}[1]", ctx)
            if lo > hi:
                raise ctx.error(path, "low ≤ high", operand)
            return f"((v := {value}) is not None and {lo!r} <= v <= {hi!r})"
        symbol = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
        bound = _number(operand, path, ctx)
        return f"((v := {value}) is not None and v {symbol} {bound!r})"

    if op in ("contains", "starts_with"):
        text = _scalar(operand, path, ctx)
        needle = fold_industry(text) if kind == "industry" else fold(text)
        if not needle:
            raise ctx.error(path, "a non-empty text", operand)
        test = f"{ctx.const(needle)} in v" if op == "contains" \
            else f"v.startswith({ctx.const(needle)})"
        return f"({guard}(v := {folded}) is not None and {test})"

    if op == "matches":
        text = str(_scalar(operand, path, ctx))
        if len(text) > MAX_PATTERN_CHARS:
            raise ctx.error(path, f"a regular expression of at most {MAX_PATTERN_CHARS:,} "
                            "characters", text)
        pattern = _regex(text, path, ctx)
        # Domains and industries are searched in their normalized form (`acme.com`,
        # `hospital health care`), like every other operator on them; other fields in the
        # record's text (trimmed, whitespace collapsed) with the pattern's own case-insensitivity.
        subject = normalized if kind in ("domain", "industry") else raw
        return (f"({guard}(v := {subject}) is not None"
                f" and {ctx.const(pattern)}.found(v))")

    if op == "in_list":
        if not isinstance(operand, str) or operand not in ctx.lists:
            raise ctx.error(path, "the name of a list defined under `lists`", operand)
        if kind == "domain":
            # Free-mail domains never match a list (docs/routing-file.md#domains): gmail.com is
            # nobody's account.
            entries = ctx.const(ctx.lists[operand])
            return f"(not r.freemail and not {entries}.isdisjoint(r.domain_keys))"
        entries = ctx.const(ctx.list_entries[operand])
        return f"({guard}{folded} in {entries})"

    # eq / ne / in / not_in: build the set of canonical operand values, then test membership.
    values = _operands(op, operand, path, ctx)
    negate = op in ("ne", "not_in")
    canon: set[Any] = set()

    def at(i: int) -> str:  # where operand i sits: `x.in[2]` for lists, `x.eq` for scalars
        return f"{path}[{i}]" if op in ("in", "not_in") else path

    if kind == "number" or (kind == "text" and values and all(_is_number(v) for v in values)):
        for i, v in enumerate(values):
            canon.add(_number(v, at(i), ctx))
        value = f"r.{name}" if kind == "number" else f"_num({raw})"
        test = f"{value} in {ctx.const(frozenset(canon))}"
    elif kind == "domain":
        for i, v in enumerate(values):
            d = normalize_domain(v)
            if d is None:
                raise ctx.error(at(i), "a domain such as acme.com", v)
            canon.add(d)
        # Like lists, a literal domain matches its subdomains: eu.acme.com is acme.com's.
        test = f"(not {ctx.const(frozenset(canon))}.isdisjoint(r.domain_keys))"
        if any(is_freemail(d) for d in canon):
            ctx.warnings.append(f"{path}: free-mail domain in a domain condition")
    elif kind == "country":
        for i, v in enumerate(values):
            code = country_code(v)
            if code is None:
                raise ctx.error(at(i), "a country (ISO code or name)", v)
            canon.add(code)
        test = f"r.country in {ctx.const(frozenset(canon))}"
    elif kind == "owner":
        for v in values:
            text = str(v).strip()
            canon |= ctx.rep_owner_keys.get(text, frozenset({id_key(text)}))
        test = f"_idk(r.owner) in {ctx.const(frozenset(canon))}"
    else:
        fold_fn = fold_industry if kind == "industry" else fold
        for i, v in enumerate(values):
            f = fold_fn(v)
            if f is None:
                raise ctx.error(at(i), "a non-empty value", v)
            canon.add(f)
        source = "r.industry" if kind == "industry" else folded
        if name == "state" and ctx.state_codes:
            # A state the enricher resolved compares by its code (`us-ca`), which each value
            # here may mean (`CA`, `California`); an unresolved one by its text, as always.
            for v in values:
                canon |= state_operand_keys(v)
            source = f"(r.folded.get({ISO_STATE!r}) or {folded})"
        test = f"{source} in {ctx.const(frozenset(canon))}"
    return f"(not {test})" if negate else f"({test})"


class _Pattern:
    """An RE2 program searched over the UTF-8 bytes of a value, with recent answers kept.

    The bytes form skips the google-re2 wrapper's str-offset bookkeeping (a third of the cost
    per call) and takes any Python text, a lone surrogate included (JSON allows "\\ud800"),
    which has no strict UTF-8 form. Fields that patterns test (lead source, industry) repeat
    a handful of values over millions of records, so the answers are cached."""

    __slots__ = ("_cached", "_program")

    def __init__(self, program: Any) -> None:
        self._program = program
        self._cached: Callable[[str], bool] = lru_cache(maxsize=4096)(self._search)

    def found(self, text: str) -> bool:
        # Only short values are cached: 4,096 cached 100 KB names would be 400 MB.
        return self._cached(text) if len(text) <= 256 else self._search(text)

    def _search(self, text: str) -> bool:
        return self._program.search(text.encode("utf-8", "surrogatepass")) is not None


def _regex(text: str, path: str, ctx: CompileContext) -> _Pattern:
    try:
        return _Pattern(re2.compile(text.encode("utf-8"), _RE2_OPTIONS))
    except UnicodeEncodeError:
        raise ctx.error(path, "a regular expression of valid Unicode text", text) from None
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ctx.error(path, "a valid regular expression (RE2 syntax: no backreferences or "
                        f"lookaround; {reason})", text) from None


NAMESPACE: dict[str, Any] = {"_num": _num, "_idk": _idk, "_postal_between": postal_between}


def build_first_match(exprs: list[str], ctx: CompileContext) -> Callable[[Record, int], int]:
    """Generate `first(r, start)`: index of the first rule at or after `start` whose `when`
    holds, else -1. One generated function keeps per-rule call overhead out of the hot path."""
    lines = ["def first(r, start):"]
    for i, expr in enumerate(exprs):
        lines.append(f"    if start <= {i} and {expr}: return {i}")
    lines.append("    return -1")
    namespace = {**NAMESPACE, **ctx.constants}
    exec(compile("\n".join(lines), "<routing rules>", "exec"), namespace)  # noqa: S102
    first: Callable[[Record, int], int] = namespace["first"]  # as generated just above
    return first


def build_later_matches(exprs: list[str], ctx: CompileContext
                        ) -> Callable[[Record, int], tuple[int, ...]]:
    """Generate `later(r, start)`: the indexes of every rule at or after `start` whose `when`
    holds, in order (`Decision.matched` past the winner), in one call as `first` does."""
    lines = ["def later(r, start):", "    m = []"]
    for i, expr in enumerate(exprs):
        lines.append(f"    if start <= {i} and {expr}: m.append({i})")
    lines.append("    return tuple(m)")
    namespace = {**NAMESPACE, **ctx.constants}
    exec(compile("\n".join(lines), "<routing rules>", "exec"), namespace)  # noqa: S102
    later: Callable[[Record, int], tuple[int, ...]] = namespace["later"]  # generated above
    return later


def build_predicate(expr: str, ctx: CompileContext) -> Callable[[Record], bool]:
    """A single condition as a function, for `explain`'s clause-by-clause account."""
    namespace = {**NAMESPACE, **ctx.constants}
    predicate: Callable[[Record], bool] = eval(  # noqa: S307
        compile(f"lambda r: bool({expr})", "<condition>", "eval"), namespace)
    return predicate
