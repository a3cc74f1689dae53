"""The routing file: pydantic schema, loader, and errors that name file and path.

See docs/routing-file.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from config.display import SHOWN_CHARS, shorten
from config.fieldmaps import MAPPABLE
from config.hours import HoursError, Schedule, leave_bounds, parse_moment, parse_schedule

# The CRMs a routing file may name: CRM name -> its object names (from the connector registry).
KnownCrms = Mapping[str, Collection[str]]

# Bounds on what a routing file may ask of the loader and the router. Each is far beyond any
# real territory plan and far below what would stall a worker: a file past them is refused with
# its path (exit 2), never half-loaded, never a hang or a traceback after a hot reload.
# The routing file itself: real ones are tens of KB (lists belong in list files), and PyYAML's
# pure-Python parser reads about 100-200 KB/s, so a megabyte is already seconds of load.
MAX_ROUTING_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 64  # nesting of mappings/lists, aliases expanded (conditions need about 45)
MAX_YAML_NODES = 200_000  # values in the document once aliases are expanded ("billion laughs")
MAX_LIST_BYTES = 16 * 1024 * 1024  # one `file:` list: about half a million domains
MAX_LIST_LINE = 1_000  # characters in one list-file line (a domain has at most 253)
MAX_CAP = 1_000_000_000  # assignments per member and window; state stores keep 64-bit counters
MAX_WEIGHT = 1_000_000  # smooth weighted round robin sums weights as floats
MAX_TIMEZONE_CHARS = 64  # the longest IANA key is about 32 characters
# YAML integers with more digits are kept as text: a 25-digit value is an identifier, never a
# count, and Python refuses to turn a 5,000-digit string into an int at all.
MAX_INT_DIGITS = 18
# Durations (`sla.first_touch`, `review_timeout`): a first touch or a review is minutes to days;
# a month is far beyond any SLA and keeps every deadline inside the state stores' key TTLs.
MAX_DURATION = timedelta(days=30)
MAX_REROUTES = 10
# Enrichment steps (`enrich:`, docs/routing-file.md#enrichment): found by name in this
# entry-point group; the built-ins are always known, whatever the installed metadata says.
ENRICHER_GROUP = "account_router.enrichers"
BUILTIN_ENRICHERS = ("state_codes", "phone_country", "tld_country", "company_match")
MAX_ENRICH_STEPS = 32
# One `enrich:` step as validated: its name and its options.
EnrichStep = tuple[str, dict[str, Any]]


class ConfigError(Exception):
    """A routing file that cannot be used: names the file, the path in it, what was expected."""

    def __init__(self, file: str | Path | None, path: str, expected: str, found: Any = None,
                 *, has_found: bool = True) -> None:
        self.file = str(file) if file is not None else "<routing file>"
        self.path = path or "(top level)"
        self.expected = expected
        self.found = found
        self.has_found = has_found
        self.found_text: str | None = None
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.file}: {self.path}: expected {self.expected}"
        if self.found_text is not None:
            text += f", found {self.found_text}"
        elif self.has_found:
            text += f", found {_show(self.found)}"
        return text

    def with_found_text(self, text: str) -> ConfigError:
        """Describe what was found in words rather than as a value."""
        self.found_text = text
        self.args = (str(self),)
        return self


_SHOW_CHARS = SHOWN_CHARS


def _show(value: Any) -> str:
    if isinstance(value, str):
        if len(value) > _SHOW_CHARS:
            # A 5,000-character regex or name must not flood the terminal or a log line.
            return f"{value[:_SHOW_CHARS]!r}… ({len(value):,} characters)"
        return repr(value)
    if isinstance(value, dict | list):
        if not value:
            return "an empty mapping" if isinstance(value, dict) else "an empty list"
        # Short collections are shown as the user would write them in YAML: `[1]`, `{rep: a}`.
        # (str() first: it is cheap and bounds what is handed to the YAML dumper.)
        text = ""
        if len(str(value)) <= 4 * _SHOW_CHARS:
            with contextlib.suppress(yaml.YAMLError):
                text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False,
                                      allow_unicode=True, width=10_000).strip()
        if text and len(text) <= _SHOW_CHARS and "\n" not in text:
            return text
        if isinstance(value, dict):
            return shorten("a mapping with keys " + ", ".join(str(k) for k in value))
        return f"a list of {len(value)} items"
    if value is None:
        return "nothing"
    return shorten(repr(value))


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as `manger:` must not pass silently
    # (docs/routing-file.md#loading-and-errors).
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


_DURATION = re.compile(r"(?:(\d{1,6})d)?(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,6})s)?")


def parse_duration(value: Any) -> timedelta:
    """`15m`, `4h`, `1d`, `1h30m`, `90s` (or a whole number of seconds) as a timedelta; more
    than zero and at most MAX_DURATION. ValueError says what is expected."""
    expected = ("a duration such as 15m, 4h, 1d or 1h30m (days d, hours h, minutes m, "
                "seconds s), more than zero and at most 30d")
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, bool):
        raise ValueError(expected)
    elif isinstance(value, int):
        duration = timedelta(seconds=value) if 0 < value <= MAX_DURATION.total_seconds() \
            else timedelta(0)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip().lower())) \
            and any(match.groups()):
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        duration = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    else:
        raise ValueError(expected)
    if not timedelta(0) < duration <= MAX_DURATION:
        raise ValueError(expected)
    return duration


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Sla(_Strict):
    """A first-touch SLA (docs/routing-file.md#first-touch-sla): the new owner must touch the
    record within `first_touch` of the assignment."""

    first_touch: Duration
    on_breach: Literal["reroute", "notify_manager"] = "notify_manager"
    max_reroutes: int = Field(default=1, ge=0, le=MAX_REROUTES)


Channel = Literal["slack", "email"]
CHANNELS: tuple[Channel, ...] = ("slack", "email")


class Notify(_Strict):
    """Who hears about an assignment, and how (docs/routing-file.md#notifications)."""

    channels: list[Channel] = Field(default_factory=lambda: list(CHANNELS))
    manager_on_fallback: bool = False


# A date (a whole day) or a naive local date and time (config/hours.py).
Moment = Annotated[date | datetime, PlainValidator(parse_moment)]


class OutOfOffice(_Strict):
    """Leave in the rep's own timezone: dates are whole days, both inclusive; a date and time
    (a partial day) starts at that minute and ends at its `end` minute (the rep is back then)."""

    start: Moment
    end: Moment

    @model_validator(mode="after")
    def _ordered(self) -> OutOfOffice:
        timed = isinstance(self.start, datetime) or isinstance(self.end, datetime)
        if not timed and self.end < self.start:
            raise ValueError(f"an end on or after the start {self.start}, found end {self.end}")
        if timed:
            since, until = leave_bounds(self.start, self.end)
            if until <= since:
                raise ValueError(f"an end after the start {self.start}, found end {self.end}")
        return self


class WorkingHours(_Strict):
    """When a rep takes records, in their own timezone (docs/routing-file.md#working-hours).
    Both keys are checked, with their paths, by `schedule()` when the file loads."""

    days: Any
    hours: Any

    def schedule(self) -> Schedule:
        """The parsed week; HoursError (with the path below `working_hours`) when malformed."""
        return parse_schedule(self.days, self.hours)


class Rep(_Strict):
    id: str = Field(min_length=1)
    name: str | None = None
    email: str | None = None
    crm_ids: dict[str, str] = Field(default_factory=dict)
    backup: str | None = None
    manager: str | None = None
    timezone: str | None = None
    out_of_office: list[OutOfOffice] = Field(default_factory=list)
    working_hours: WorkingHours | None = None  # None: any time of day
    active: bool = True
    slack: str | None = None  # Slack member id (U...); else looked up by `email`


class Cap(_Strict):
    max: int = Field(ge=0, le=MAX_CAP)
    per: Literal["day", "week", "month"] = "day"


class Overflow(_Strict):
    rep: str | None = None
    queue: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Overflow:
        if (self.rep is None) == (self.queue is None):
            raise ValueError("exactly one of `rep` or `queue`")
        return self


class Pool(_Strict):
    members: list[str] = Field(min_length=1)
    strategy: Literal["round_robin", "weighted", "least_loaded"] = "round_robin"
    weights: dict[str, int] = Field(default_factory=dict)  # bounds checked with their paths
    cap: Cap | None = None
    overflow: Overflow | None = None
    sla: Sla | None = None
    # When every member is outside working hours: skip them like any unavailable member
    # (next_available), or keep the turn in the pool for them (queue; docs/routing-file.md#pools).
    outside_hours: Literal["next_available", "queue"] = "next_available"


class ListDef(_Strict):
    domains: list[str] | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ListDef:
        if (self.domains is None) == (self.file is None):
            raise ValueError("exactly one of `domains` or `file`")
        return self


class Target(_Strict):
    rep: str | None = None
    pool: str | None = None
    account_owner: Literal[True] | None = None
    queue: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Target:
        kinds = ("rep", "pool", "account_owner", "queue")
        given = [k for k in kinds if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("exactly one of `rep`, `pool`, `account_owner: true` or `queue`")
        return self

    @property
    def kind(self) -> str:
        for key in ("rep", "pool", "account_owner", "queue"):
            if getattr(self, key) is not None:
                return key
        raise AssertionError("validated target has a kind")


class FallbackTarget(_Strict):
    rep: str | None = None
    queue: str | None = None

    @model_validator(mode="after")
    def _one(self) -> FallbackTarget:
        if (self.rep is None) == (self.queue is None):
            raise ValueError("exactly one of `rep` or `queue`")
        return self


class Rule(_Strict):
    name: str = Field(min_length=1)
    # Conditions are validated (with their own paths) by the rule compiler in sync/conditions.py.
    when: dict[str, Any] | None = None
    assign: Target
    notify: bool = True  # false: nobody is told of this rule's assignments
    review: bool = False  # true: decisions wait for a reviewer (pending_review)
    sla: Sla | None = None


FieldMaps = dict[str, dict[str, dict[str, str]]]


class RoutingFile(_Strict):
    version: Literal[1]
    timezone: str = "UTC"
    respect_existing_owner: Literal["valid_only", "always", "never"] = "valid_only"
    ignore_owners: list[str] = Field(default_factory=list)
    reps: list[Rep] = Field(default_factory=list)
    pools: dict[str, Pool] = Field(default_factory=dict)
    lists: dict[str, ListDef] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    fallback: FallbackTarget | None = None
    field_maps: FieldMaps = Field(default_factory=dict)
    notify: Notify | None = None  # None: every configured channel, managers not told
    sla: Sla | None = None
    # The field whose change means "touched", per CRM and object: {hubspot: {contacts: x}}.
    touch_fields: dict[str, dict[str, str]] = Field(default_factory=dict)
    # Conditions compiled like a rule's `when` (sync/compiler.py), errors under `review_when`.
    review_when: dict[str, Any] | None = None
    review_timeout: Duration = timedelta(hours=4)
    on_review_timeout: Literal["approve", "escalate"] = "escalate"
    # How long a POST /route decision waits for its CRM record (docs/routing-file.md#precreate-ttl).
    precreate_ttl: Duration = timedelta(hours=24)
    # Steps run on each record before the rules; each a name or {name: {options}}, checked
    # (with their paths) by `_check_enrich`.
    enrich: list[Any] = Field(default_factory=list)

    _source: Path | None = PrivateAttr(default=None)
    _enrich_steps: tuple[EnrichStep, ...] = PrivateAttr(default=())
    _list_domains: dict[str, tuple[str, ...]] = PrivateAttr(default_factory=dict)
    _list_where: dict[str, tuple[str, ...]] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def enrich_steps(self) -> tuple[EnrichStep, ...]:
        """`enrich:` as (name, options) pairs, in order."""
        return self._enrich_steps

    def list_domains(self, name: str) -> tuple[str, ...]:
        """A list's entries, read from its file when it has one (loaded with the routing file)."""
        return self._list_domains[name]

    def list_entry_paths(self, name: str) -> tuple[str, ...]:
        """Where each of `list_domains(name)` came from, for errors and warnings:
        `lists.x.domains[0]`, or `lists.x.file (named.txt, line 4)`."""
        return self._list_where[name]

    def rep(self, rep_id: str) -> Rep:
        for rep in self.reps:
            if rep.id == rep_id:
                return rep
        raise KeyError(rep_id)


class _DuplicateKey(yaml.MarkedYAMLError):
    """A mapping that names the same key twice: YAML would silently keep only the last one."""

    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(problem=f"duplicate key {key!r}", problem_mark=again)
        self.key = key
        self.first = first


class _Refused(yaml.MarkedYAMLError):
    """YAML the routing file has no use for: nested too deeply, too large once its aliases are
    expanded, a number past any bound, or a type (bytes, a set) that no key takes."""

    def __init__(self, expected: str, found: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem=found, problem_mark=mark)
        self.expected = expected
        self.found = found


class _Loader(yaml.SafeLoader):
    """SafeLoader tuned for routing files.

    - Dates stay text, so pydantic reports a bad date with its path.
    - Only `true`/`false` are booleans (YAML 1.2): `NO` is Norway and `on`/`yes` are words.
    - Integers with a leading zero stay text (`02134` is a postal code, not octal 1116), and
      `1:30` is not a base-60 number; so do integers of more than 18 digits (identifiers).
    - A key given twice in one mapping is an error instead of silently losing the first value.
    - Nesting is capped while composing (the composer recurses, so a deep file would otherwise
      end in RecursionError), and the document is measured with its aliases expanded before
      anything is constructed. Anchors and aliases stay allowed, since `<<: *defaults` is a
      fair way to share rep settings, but ten nested aliases of ten ("billion laughs") expand
      to 10^10 values that pydantic and the rule compiler would walk one by one.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _Refused(f"nesting at most {MAX_YAML_DEPTH} levels deep",
                               "deeper nesting", self._next_mark())
            if self._nodes > MAX_YAML_NODES:  # as written; `_measure` counts aliases expanded
                raise _Refused(f"at most {MAX_YAML_NODES:,} values with aliases expanded",
                               "more", self._next_mark())
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _next_mark(self) -> yaml.Mark | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
        return getattr(event, "start_mark", None)

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _measure(node)
        return self.construct_document(node)

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *anchor` merges are meant to be overridden
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key; the base class reports it
                    continue
                if first is not None:
                    raise _DuplicateKey(key, first, key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


# Explicit tags that build values no routing-file key takes: refused where they stand rather
# than handed, as bytes or a datetime, to a condition that would compare them with text.
_FOREIGN_TAGS = ("binary", "timestamp", "set", "omap", "pairs")


def _refuse_tag(loader: _Loader, node: yaml.Node) -> Any:
    raise _Refused("plain YAML values (text, numbers, true/false, lists, mappings)",
                   f"an explicit {node.tag.rsplit(':', 1)[-1]} tag", node.start_mark)


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> Any:
    # Only an explicit `!!int` gets here with many digits (the implicit resolver keeps long
    # digit strings as text); Python will not build an int from more than 4,300 digits.
    if len(str(node.value)) > MAX_INT_DIGITS + 4:  # room for a sign, `0x` and separators
        raise _Refused(f"a whole number of at most {MAX_INT_DIGITS} digits",
                       f"{len(str(node.value)):,} characters", node.start_mark)
    return yaml.SafeLoader.construct_yaml_int(loader, node)


for _tag in _FOREIGN_TAGS:
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _measure(root: yaml.Node) -> None:
    """Refuse a node graph that is cyclic, too deep or too large with aliases expanded.

    An alias is the very node it names, so sizes are memoised per node: the walk is linear in
    the written file, however large the expansion."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height), aliases expanded
    open_nodes: set[int] = set()

    def walk(node: yaml.Node, level: int) -> tuple[int, int]:
        known = sizes.get(id(node))
        if known is not None:
            if level + known[1] - 1 > MAX_YAML_DEPTH:
                raise _Refused(f"nesting at most {MAX_YAML_DEPTH} levels deep",
                               "deeper nesting through an alias", node.start_mark)
            return known
        if id(node) in open_nodes:
            raise _Refused("aliases that do not contain themselves",
                           "an alias inside its own anchor", node.start_mark)
        if level > MAX_YAML_DEPTH:
            raise _Refused(f"nesting at most {MAX_YAML_DEPTH} levels deep",
                           "deeper nesting", node.start_mark)
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
            if isinstance(node, yaml.ScalarNode) and node.style == '"' \
                    and not _encodable(node.value):
                # Only a double-quoted escape (`"\\ud800"`) can make a lone surrogate in a
                # UTF-8 file; no CRM, database or terminal downstream can store or print one.
                raise _Refused("valid Unicode text", "a lone surrogate escape such as \\ud800",
                               node.start_mark)
        open_nodes.add(id(node))
        count, height = 1, 1
        for child in children:
            child_count, child_height = walk(child, level + 1)
            count += child_count
            height = max(height, child_height + 1)
            if count > MAX_YAML_NODES:
                raise _Refused(f"at most {MAX_YAML_NODES:,} values with aliases expanded",
                               "more", node.start_mark)
        open_nodes.discard(id(node))
        sizes[id(node)] = (count, height)
        return count, height

    walk(root, 1)


_REPLACED_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("timestamp", "bool", "int", "float")}
_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(rf"^[-+]?(?:0|[1-9](?:_*[0-9]){{0,{MAX_INT_DIGITS - 1}}}_*)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                  |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


class _Unreadable(Exception):
    """Why a file cannot be read as text: the reason only, never a byte of its content."""


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def _read_text_file(path: Path, limit: int, *, max_line: int | None = None) -> str:
    """A regular file's text, read without hanging or reading without end; `_Unreadable`
    says why not (a device, FIFO or directory, too large, NUL bytes, not UTF-8, a long line)."""
    try:
        # stat first: opening a FIFO blocks until a writer comes, and /dev/zero never ends.
        kind = _not_regular(os.stat(path).st_mode)
        if kind is not None:
            raise _Unreadable(kind)
        # O_NONBLOCK in case the path was swapped for a FIFO since the stat.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as handle:
            kind = _not_regular(os.fstat(handle.fileno()).st_mode)
            if kind is not None:
                raise _Unreadable(kind)
            # Files under /proc report size 0, so the bound is on what is read, not on st_size.
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise _Unreadable("no such file") from None
    except _Unreadable:
        raise
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise _Unreadable(f"unreadable ({type(exc).__name__}: "
                          f"{getattr(exc, 'strerror', None) or 'invalid path'})") from None
    if len(data) > limit:
        raise _Unreadable(f"larger than the {limit:,}-byte limit")
    if b"\0" in data:
        raise _Unreadable("binary data (NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"not UTF-8 text (byte {exc.start})") from None
    if max_line is not None:
        for number, line in enumerate(text.splitlines(), start=1):
            if len(line) > max_line:
                raise _Unreadable(f"line {number} longer than {max_line:,} characters")
    return text


def load(path: str | Path, *, list_roots: Sequence[str | Path] = (),
         crms: KnownCrms | None = None) -> RoutingFile:
    """Read, parse and validate a routing file; raise ConfigError naming file and path.

    `list_roots`: folders besides the routing file's own where `lists.*.file` may point.
    `crms` (the connector registry's declarations) are the CRM names `crm_ids` and
    `field_maps` may use, with the objects of each; None leaves those names unchecked."""
    path = Path(path)
    try:
        text = _read_text_file(path, MAX_ROUTING_BYTES)
    except _Unreadable as exc:
        expected = "a readable routing file" if str(exc) == "no such file" \
            else "a readable UTF-8 routing file"
        raise ConfigError(path, "", expected).with_found_text(str(exc)) from None
    return parse(text, source=path, list_roots=list_roots, crms=crms)


def parse(text: str, source: str | Path | None = None, *,
          list_roots: Sequence[str | Path] = (), crms: KnownCrms | None = None
          ) -> RoutingFile:
    """Validate routing-file YAML text; `source` names the file in errors and anchors `file:`;
    `list_roots` and `crms` as for `load`."""
    if len(text) > MAX_ROUTING_BYTES:
        raise ConfigError(source, "", f"a routing file of at most {MAX_ROUTING_BYTES:,} bytes"
                          ).with_found_text(f"{len(text):,} characters")
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        mark = exc.problem_mark
        assert mark is not None
        raise ConfigError(source, f"line {mark.line + 1}, column {mark.column + 1}",
                          "each key at most once in a mapping").with_found_text(
            f"{_show(exc.key)} again (first given on line {exc.first.line + 1})") from None
    except _Refused as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, where, exc.expected).with_found_text(exc.found) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, where, "valid YAML", problem) from None
    if not isinstance(data, dict):
        raise ConfigError(source, "", "a mapping with `version: 1`", data)
    try:
        routing = RoutingFile.model_validate(data)
    except ValidationError as exc:
        raise _from_pydantic(source, exc) from None
    routing._source = Path(source) if source is not None else None
    _check_references(routing, source)
    routing._enrich_steps = _check_enrich(routing.enrich, source)
    if crms is not None:
        _check_crm_names(routing, source, crms)
    routing._list_domains, routing._list_where = _read_lists(routing, source, list_roots)
    return routing


def _path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# pydantic error types -> what the user should have written.
_EXPECTED = {
    "missing": "this required key",
    "extra_forbidden": "no such key (unknown keys are errors)",
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "date_type": "a date YYYY-MM-DD",
    "date_parsing": "a date YYYY-MM-DD",
    "date_from_datetime_parsing": "a date YYYY-MM-DD",
    "date_from_datetime_inexact": "a date YYYY-MM-DD",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "too_short": "a non-empty value",
    "greater_than_equal": "a number ≥ 0",
    "less_than_equal": "a smaller number",
    "int_parsing_size": "a whole number of at most 18 digits",
    "finite_number": "a finite number",
}


def _from_pydantic(source: str | Path | None, exc: ValidationError) -> ConfigError:
    err = exc.errors(include_url=False)[0]
    loc = list(err["loc"])
    kind = err["type"]
    found = err.get("input")
    if kind == "missing":
        return ConfigError(source, _path(loc), "this required key", has_found=False)
    if kind == "extra_forbidden":
        return ConfigError(source, _path(loc), "only known keys here (unknown keys are errors)"
                           ).with_found_text(f"unknown key {loc[-1]!r}")
    if kind == "literal_error":
        # Literal errors carry the allowed values in their message.
        expected = str(err["msg"]).replace("Input should be ", "one of ")
    elif kind == "value_error":
        # Our validators phrase their message as "<expected>[, found <what>]".
        expected = str(err["msg"]).removeprefix("Value error, ")
        if ", found " in expected:
            expected, _, found_text = expected.partition(", found ")
            return ConfigError(source, _path(loc), expected).with_found_text(found_text)
    elif kind in ("less_than_equal", "greater_than_equal"):
        # "Input should be less than or equal to 1000000000" -> "a number ≤ 1000000000"
        symbol = "≤" if kind == "less_than_equal" else "≥"
        bound = (err.get("ctx") or {}).get("le" if kind == "less_than_equal" else "ge")
        expected = f"a number {symbol} {bound}" if bound is not None else _EXPECTED[kind]
    else:
        expected = _EXPECTED.get(kind, str(err["msg"]))
    return ConfigError(source, _path(loc), expected, found)


def _check_references(routing: RoutingFile, source: str | Path | None) -> None:
    def fail(path: str, expected: str, found: Any) -> None:
        raise ConfigError(source, path, expected, found)

    _check_timezone(routing.timezone, "timezone", source)
    reps: dict[str, int] = {}
    for i, rep in enumerate(routing.reps):
        if rep.id in reps:
            fail(f"reps[{i}].id", "a rep id not used before (duplicate)", rep.id)
        reps[rep.id] = i
    known = "a rep id defined under `reps`"
    for i, rep in enumerate(routing.reps):
        for link in ("backup", "manager"):
            target = getattr(rep, link)
            if target is not None and target not in reps:
                fail(f"reps[{i}].{link}", known, target)
        if rep.backup == rep.id:
            fail(f"reps[{i}].backup", "another rep (a rep cannot back itself up)", rep.backup)
        if rep.timezone is not None:
            _check_timezone(rep.timezone, f"reps[{i}].timezone", source)
        if rep.working_hours is not None:
            try:
                rep.working_hours.schedule()
            except HoursError as exc:
                fail(f"reps[{i}].working_hours.{exc.where}", exc.expected, exc.found)
    _check_manager_cycles(routing, source)
    for name, pool in routing.pools.items():
        seen: set[str] = set()
        for j, member in enumerate(pool.members):
            if member not in reps:
                fail(f"pools.{name}.members[{j}]", known, member)
            if member in seen:
                fail(f"pools.{name}.members[{j}]", "each member listed once (duplicate)", member)
            seen.add(member)
        for member in pool.weights:
            if member not in seen:
                fail(f"pools.{name}.weights.{member}", "a member of this pool", member)
        if pool.weights and pool.strategy != "weighted":
            fail(f"pools.{name}.weights", "weights only with `strategy: weighted`", pool.strategy)
        if pool.strategy == "weighted" and all(pool.weights.get(m, 1) == 0 for m in pool.members):
            fail(f"pools.{name}.weights", "at least one member with a weight above 0", pool.weights)
        for member, weight in pool.weights.items():
            if weight < 0:
                fail(f"pools.{name}.weights.{member}", "a weight ≥ 0", weight)
            if weight > MAX_WEIGHT:
                fail(f"pools.{name}.weights.{member}", f"a weight ≤ {MAX_WEIGHT:,}", weight)
        if pool.overflow is not None and pool.overflow.rep is not None \
                and pool.overflow.rep not in reps:
            fail(f"pools.{name}.overflow.rep", known, pool.overflow.rep)
    names: set[str] = set()
    for i, rule in enumerate(routing.rules):
        if rule.name in names:
            fail(f"rules[{i}].name", "a rule name not used before (duplicate)", rule.name)
        names.add(rule.name)
        target = rule.assign
        if target.rep is not None and target.rep not in reps:
            fail(f"rules[{i}].assign.rep", known, target.rep)
        if target.pool is not None and target.pool not in routing.pools:
            fail(f"rules[{i}].assign.pool", "a pool defined under `pools`", target.pool)
    if routing.fallback is not None and routing.fallback.rep is not None \
            and routing.fallback.rep not in reps:
        fail("fallback.rep", known, routing.fallback.rep)
    for crm, objects in routing.field_maps.items():
        for obj, mapping in objects.items():
            for fld in mapping:
                if fld not in MAPPABLE:
                    fail(f"field_maps.{crm}.{obj}.{fld}", "a normalized record field", fld)


def registered_enrichers() -> tuple[str, ...]:
    """The enrichment step names installed: the built-ins and the entry-point group's."""
    from importlib.metadata import entry_points

    names = dict.fromkeys(BUILTIN_ENRICHERS)
    names.update(dict.fromkeys(sorted(ep.name for ep in entry_points(group=ENRICHER_GROUP))))
    return tuple(names)


def _check_enrich(steps: list[Any], source: str | Path | None) -> tuple[EnrichStep, ...]:
    if not steps:
        return ()
    if len(steps) > MAX_ENRICH_STEPS:
        raise ConfigError(source, "enrich", f"at most {MAX_ENRICH_STEPS} steps",
                          ).with_found_text(f"{len(steps)}")
    known = registered_enrichers()
    expected = f"an enricher, one of {', '.join(known)}"
    out: list[EnrichStep] = []
    seen: set[str] = set()
    for i, step in enumerate(steps):
        path = f"enrich[{i}]"
        if isinstance(step, dict):
            if len(step) != 1:
                raise ConfigError(source, path, "a step name, or one name with its options "
                                  "such as {company_match: {threshold: 90}}", step)
            name, options = next(iter(step.items()))
            if options is None:
                options = {}
            if not isinstance(options, dict):
                raise ConfigError(source, f"{path}.{name}", "a mapping of options", options)
        elif isinstance(step, str):
            name, options = step, {}
        else:
            raise ConfigError(source, path, expected, step)
        if not isinstance(name, str) or name not in known:
            raise ConfigError(source, path, expected, name)
        if name in seen:
            raise ConfigError(source, path, "each enricher at most once (duplicate)", name)
        seen.add(name)
        out.append((name, {str(k): v for k, v in options.items()}))
    return tuple(out)


def _check_crm_names(routing: RoutingFile, source: str | Path | None, crms: KnownCrms) -> None:
    # The CRMs are whatever connectors are installed (issue 8, point 15): the registry says
    # which, so a typo such as `hubspt:` is caught without this module naming any vendor.
    choices = f"one of {', '.join(sorted(crms))}"
    for i, rep in enumerate(routing.reps):
        for crm in rep.crm_ids:
            if crm not in crms:
                raise ConfigError(source, f"reps[{i}].crm_ids.{crm}", choices, crm)
    for crm, objects in routing.field_maps.items():
        if crm not in crms:
            raise ConfigError(source, f"field_maps.{crm}", choices, crm)
        names = {name.lower() for name in crms[crm]}
        for obj in objects:
            if obj.lower() not in names:
                raise ConfigError(source, f"field_maps.{crm}.{obj}",
                                  f"a {crm} object, one of {', '.join(crms[crm])}", obj)
    for crm, touched in routing.touch_fields.items():
        if crm not in crms:
            raise ConfigError(source, f"touch_fields.{crm}", choices, crm)
        names = {name.lower() for name in crms[crm]}
        for obj, touch_field in touched.items():
            if obj.lower() not in names:
                raise ConfigError(source, f"touch_fields.{crm}.{obj}",
                                  f"a {crm} object, one of {', '.join(crms[crm])}", obj)
            if not touch_field.strip():
                raise ConfigError(source, f"touch_fields.{crm}.{obj}", "a CRM field name",
                                  touch_field)


# An IANA key: ASCII words joined by `/`. No `.` components, no absolute paths, no NUL: ZoneInfo
# turns the key into a file path under TZPATH, where `America` is a directory and a very long
# key is "File name too long" (OSError, not ZoneInfoNotFoundError).
_TZ_KEY = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")


def _check_timezone(name: str, path: str, source: str | Path | None) -> None:
    expected = "an IANA timezone such as Europe/Berlin"
    if len(name) > MAX_TIMEZONE_CHARS or _TZ_KEY.fullmatch(name) is None:
        raise ConfigError(source, path, expected, name)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(source, path, expected, name) from None


def _check_manager_cycles(routing: RoutingFile, source: str | Path | None) -> None:
    # Only `manager` links may not loop: escalation must end somewhere. Mutual backups are normal.
    manager = {rep.id: rep.manager for rep in routing.reps}
    index = {rep.id: i for i, rep in enumerate(routing.reps)}
    for start in manager:
        seen = [start]
        current = manager[start]
        while current is not None:
            if current == start:
                chain = " -> ".join([*seen, start])
                raise ConfigError(source, f"reps[{index[start]}].manager",
                                  "manager links that end (no cycle)", chain)
            if current in seen:
                break  # a cycle not through `start`; reported when we start from a member of it
            seen.append(current)
            current = manager.get(current)


def _read_lists(routing: RoutingFile, source: str | Path | None,
                list_roots: Sequence[str | Path] = ()
                ) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """Each list's entries, and where each entry was written (for messages)."""
    base = Path(source).parent if source is not None else Path.cwd()
    out: dict[str, tuple[str, ...]] = {}
    where: dict[str, tuple[str, ...]] = {}
    for name, spec in routing.lists.items():
        if spec.domains is not None:
            out[name] = tuple(spec.domains)
            where[name] = tuple(f"lists.{name}.domains[{j}]" for j in range(len(spec.domains)))
            continue
        assert spec.file is not None
        lines = _read_list_file(spec.file, f"lists.{name}.file", base, list_roots, source)
        entries = list(_list_entries(lines))
        out[name] = tuple(entry for _, entry in entries)
        where[name] = tuple(f"lists.{name}.file ({spec.file}, line {n})"
                            for n, _ in entries)
    return out, where


def _read_list_file(file: str, path: str, base: Path, list_roots: Sequence[str | Path],
                    source: str | Path | None) -> list[str]:
    """A list file's lines. It must resolve (symlinks followed) inside the routing file's folder
    or one of `list_roots`, and be a bounded UTF-8 text file. Errors say why, never what the
    file holds: `file: /proc/self/environ` must not print a secret into a worker's log."""
    if not file.strip() or "\0" in file or len(file) > 1024:
        raise ConfigError(source, path, "a list file name (at most 1,024 characters)", file)
    roots = [base, *(Path(root) for root in list_roots)]
    where = " or ".join(str(root) for root in roots)
    try:
        target = (base / file).resolve(strict=True)
        allowed = [root.resolve() for root in roots]
    except FileNotFoundError:
        raise ConfigError(source, path, f"a readable list file (looked for {base / file})",
                          file) from None
    except (OSError, RuntimeError, ValueError):  # RuntimeError: a symlink loop
        raise ConfigError(source, path, "a readable list file"
                          ).with_found_text(f"{_show(file)}: cannot be resolved") from None
    if not any(target.is_relative_to(root) for root in allowed):
        raise ConfigError(
            source, path, f"a list file inside {where} "
            "(allow other folders with ACCOUNT_ROUTER_LIST_ROOTS)"
        ).with_found_text(f"{_show(file)}, outside them")
    try:
        text = _read_text_file(target, MAX_LIST_BYTES, max_line=MAX_LIST_LINE)
    except _Unreadable as exc:
        raise ConfigError(source, path, "a list file of UTF-8 text, one domain a line"
                          ).with_found_text(f"{_show(file)}: {exc}") from None
    return text.splitlines()


def _list_entries(lines: Iterable[str]) -> Iterable[tuple[int, str]]:
    # One domain a line; blank lines and full-line `#` comments are allowed
    # (docs/routing-file.md#list-files).
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            yield number, entry
