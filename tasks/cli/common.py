"""What every CLI module shares (the leaf: imports no sibling): consoles, errors, options, state."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console, ConsoleOptions, RenderableType
from rich.markup import escape
from rich.segment import Segment

from config.routing import ConfigError
from config.urls import redact_url, redact_urls
from connectors import registry
from connectors.registry import canonical_object, load_routing
from connectors.settings import Settings
from sync.compiler import CompiledRouting
from sync.pipeline import Pipeline
from sync.ports import Connector, CredentialsError, CrmError
from sync.state import open_store
from sync.state.base import StateStore

if TYPE_CHECKING:  # SQLAlchemy is imported by the commands that read the history, only
    from sync.history import History

# Literal consoles: what we print is data (rule, rep and pool names, record values, paths from
# routing files and CSVs), so `[/x]` must not raise MarkupError, `[bold]` must not vanish and
# `:x:` must not become an emoji. Tables and titles render through the same defaults. The few
# styled words opt in with `markup=True` and escape whatever data they carry.
# Control characters of the data are shown as U+FFFD, never sent: ESC starts a terminal escape
# sequence (a routing file's rule name or a CSV cell could clear the screen, set the title or
# rewrite earlier lines), and C1's CSI (U+009B) is one by itself on some terminals. A lone
# surrogate (JSON's "\ud800") cannot be encoded at all: a UnicodeEncodeError. Newline and
# tab stay; rich's own styling travels in styles and control segments, which are left alone.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class LiteralConsole(Console):
    """A console whose printed text can carry no terminal control character."""

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None
               ) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control is None and _CONTROL_CHARS.search(segment.text):
                yield Segment(_CONTROL_CHARS.sub("\ufffd", segment.text), segment.style)
            else:
                yield segment


out = LiteralConsole(markup=False, emoji=False, highlight=False)
err = LiteralConsole(stderr=True, markup=False, emoji=False, highlight=False)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Routing file (YAML); "
                      "default: $ACCOUNT_ROUTER_CONFIG.", show_default=False)]
StateOpt = Annotated[str | None, typer.Option("--state", help="State URL: sqlite:///file.db, "
                     "sqlite:////abs.db or redis://host:port/db.", show_default=False)]
NowOpt = Annotated[str | None, typer.Option("--now", help="Routing instant, ISO 8601 (no offset "
                   "means UTC); default: now.", show_default=False)]
CrmOpt = Annotated[str, typer.Option("--crm", help="A registered connector: hubspot, salesforce, "
                   "csv, or one an installed package adds.")]
ObjectOpt = Annotated[str, typer.Option("--object", help="CRM object: companies, contacts "
                      "(HubSpot); Account, Lead, Contact (Salesforce).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Write nothing; print what would "
                      "change.")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` on stderr and exit (2: bad input, 1: the work failed)."""
    # The message is data (it may quote a regex such as `[abc](`): never parse it as markup.
    # It may also quote a driver's error naming a connection URL: passwords are masked.
    err.print(f"[red]error:[/red] {escape(redact_urls(message))}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def settings_problem(exc: ValidationError) -> str:
    """What is wrong with the environment's settings, one clause per variable, named as the user
    set it. Values are left out: a bad setting may be a token or a password."""
    clauses = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        name = str(error["loc"][0]) if error["loc"] else "settings"
        # Vendor settings use their vendor's names (aliases, upper case); ours carry the prefix.
        variable = name if name.isupper() else f"ACCOUNT_ROUTER_{name.upper()}"
        clauses.append(f"{variable}: {error['msg']}")
    return "invalid settings: " + "; ".join(clauses)


# Instants the CLI takes (`--now`, `--until`, `--since`): a year inside datetime's range on
# either side, so any timezone, window or look-back computed from them stays representable.
EARLIEST_INSTANT = datetime(2, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def parse_instant(text: str | None, option: str = "--now") -> datetime:
    """An aware instant from an ISO 8601 option (no offset means UTC); None means now."""
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"{option}: expected an ISO 8601 instant such as 2026-11-25T09:00:00Z, found {text!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # Routing moves the instant into reps' timezones and a day, week or month window, and `stats`
    # goes a week back: at datetime's own edges either is an OverflowError traceback.
    try:
        in_range = EARLIEST_INSTANT <= value.astimezone(UTC) <= LATEST_INSTANT
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 once in UTC
        in_range = False
    if not in_range:
        fail(f"{option}: expected an instant from {EARLIEST_INSTANT.date().isoformat()} to "
             f"{LATEST_INSTANT.date().isoformat()} (UTC), found {text!r}")
    return value


def load_routing_file(path: Path | None) -> CompiledRouting:
    """The compiled routing file (`--config`, else $ACCOUNT_ROUTER_CONFIG); exit 2 if broken."""
    if path is None:
        configured = Settings().config
        if not configured:
            fail("no routing file: pass --config or set ACCOUNT_ROUTER_CONFIG")
        path = Path(configured)
    try:
        return load_routing(path, list_roots=Settings().list_roots)
    except ConfigError as exc:
        fail(str(exc))


def open_state(url: str | None, *, if_missing: Literal["create", "fail", "empty"] = "create"
               ) -> StateStore:
    """The state store `--state` (else the settings) names, probed; exit 2 if unusable.

    `if_missing` says what a SQLite file that is not there means. `create`: a first run (commands
    that route). `fail`: a mistyped path, for commands that only read what routing recorded
    (`stats`, `audit`): say so rather than create an empty database and report nothing.
    `empty`: fresh state for a what-if (`explain`, `simulate`), read in memory so that asking
    creates no file."""
    resolved = Settings().resolved_state_url(url)
    path = sqlite_path(resolved)
    if path is not None and if_missing != "create" and not path.exists():
        if if_missing == "fail":
            fail(f"no state at {str(path)!r} (state URL {resolved!r}): nothing has been "
                 "recorded there; pass the --state routing used")
        resolved = "sqlite:///:memory:"
    try:
        store = open_store(resolved)
    except Exception as exc:  # noqa: BLE001 - any failure to open state is a usage error here
        fail(_cannot_open(resolved, exc))
    try:
        # Redis connects lazily: probe now, so an unreachable server is a clear usage error
        # before anything is routed rather than a traceback halfway through.
        store.pauses(datetime.now(UTC))
    except Exception as exc:  # noqa: BLE001
        store.close()
        fail(_cannot_open(resolved, exc))
    return store


def open_history(state: str | None) -> History:
    """The decision history routing recorded into, at the current schema; exit 2 if unusable
    (why, as `try_history` says it). Embedded (SQLite state): the state file's own tables;
    service mode: ACCOUNT_ROUTER_DATABASE_URL."""
    # The state named is checked first, as every command taking --state does: a missing file
    # is a mistyped path and an unreachable Redis a wrong URL (say so); an older state file is
    # upgraded by the open.
    open_state(state, if_missing="fail").close()
    history, why = try_history(state)
    if history is None:
        fail(why)
    return history


def try_history(state: str | None) -> tuple[History | None, str]:
    """The decision history routing recorded into, for a command that can do without it
    (`simulate`): (history, "") or (None, why not), never an exit. Embedded: the state file's
    own tables (none before the file exists); service mode: ACCOUNT_ROUTER_DATABASE_URL. The
    state itself is the caller's to open (and, embedded, upgrade) first."""
    from sqlalchemy.exc import SQLAlchemyError

    from sync.history import History, SchemaOutOfDate
    from sync.history.store import describe_error

    settings = Settings()
    resolved = settings.resolved_state_url(state)
    path = sqlite_path(resolved)
    if path is not None and not path.exists():
        return None, f"no state file at {str(path)!r} yet"
    try:
        history = History(resolved if path is not None
                          else settings.resolved_database_url(resolved))
    except ValueError as exc:
        return None, redact_urls(str(exc))
    try:
        history.require_current()
    except SchemaOutOfDate as exc:
        history.close()
        return None, str(exc)
    except SQLAlchemyError as exc:
        history.close()
        return None, f"cannot open the history database {history.shown_url!r}: " \
                     f"{describe_error(exc)}"
    return history, ""


def serve_history(state: str | None) -> History | None:
    """The history `serve` reads (dashboard, `GET /decisions`), checked before it listens: an
    out-of-date schema is exit 2 naming `account-router db upgrade`. Embedded: the state file's
    own. Service mode: ACCOUNT_ROUTER_DATABASE_URL, or None when unset (the dashboard says how
    to set it); a database that cannot be reached at start is a warning, not a refusal, so
    webhooks are taken while it is down (history reads answer 503 until it is back)."""
    from sqlalchemy.exc import SQLAlchemyError

    from sync.history import History, SchemaOutOfDate
    from sync.history.store import describe_error

    settings = Settings()
    resolved = settings.resolved_state_url(state)
    if sqlite_path(resolved) is not None:
        return open_history(state)
    if not (settings.database_url and settings.database_url.strip()):
        return None
    try:
        history = History(settings.database_url)
    except ValueError as exc:
        fail(f"ACCOUNT_ROUTER_DATABASE_URL: {exc}")
    try:
        history.require_current()
    except SchemaOutOfDate as exc:
        history.close()
        fail(str(exc))
    except SQLAlchemyError as exc:
        err.print(f"warning: cannot reach the history database {history.shown_url!r} "
                  f"({describe_error(exc)}); serving without it until it is back",
                  soft_wrap=True)
    return history


def _cannot_open(url: str, exc: Exception) -> str:
    # The URL may carry a password (redis://:pw@host): masked here and wherever the driver's
    # own message quotes it.
    shown = redact_url(url)
    return f"cannot open state {shown!r}: {str(exc).replace(url, shown)}"


def sqlite_path(url: str) -> Path | None:
    """The file a `sqlite:///...` state URL names (as `open_store` reads it); None otherwise."""
    url = url.strip()
    prefix = "sqlite:///"
    return Path(url[len(prefix):]) if url.startswith(prefix) and len(url) > len(prefix) else None


def print_json(value: object) -> None:
    """JSON on stdout, plain text and never styled: scripts parse this."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextmanager
def open_pipeline(routing: CompiledRouting, crm: str, obj: str, state: str | None,
                  dry_run: bool, if_missing: Literal["create", "empty"] = "create"
                  ) -> Iterator[tuple[Pipeline, str]]:
    """The pipeline for `crm` and its canonical object name over the `--state` store; CRM and
    credential errors become exit 2 (exit 1 for a CRM failure mid-run); closed on exit."""
    # Deferred: Prometheus and kombu's Redis transport load only for commands that run a
    # pipeline, not for every start of the CLI.
    from tasks.followers import followers_for
    from tasks.metrics import metrics_for

    settings = Settings()
    try:
        obj = canonical_object(crm, obj)
    except ValueError as exc:
        fail(str(exc))
    try:
        connector: Connector = registry.create_for(crm, routing, settings)
    except ValueError as exc:
        fail(str(exc))
    except CredentialsError as exc:
        fail(str(exc))
    store = open_state(state, if_missing=if_missing)
    try:
        yield Pipeline(connector, routing, store, dry_run=dry_run,
                       recheck_after=settings.recheck_after_seconds,
                       metrics=metrics_for(settings),
                       followers=followers_for(settings, store, routing, crm),
                       mark_ttl=timedelta(days=settings.history_retention_days)), obj
    except CredentialsError as exc:
        fail(str(exc))
    except CrmError as exc:
        fail(str(exc), code=1)
    finally:
        store.close()
        connector.close()
