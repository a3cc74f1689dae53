"""The dashboard's routes: sign-in, the pages, and the POST/redirect/GET actions
(docs/operations.md#the-dashboard)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from importlib import resources
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from config.urls import redact_urls
from connectors import registry
from connectors.links import crm_link
from sync.compiler import CompiledRouting
from sync.models import Decision, Outcome, ReviewItem
from sync.overlaps import heat_map
from sync.state.base import StateStore
from tasks.dashboard import charts, data, territory
from tasks.dashboard.auth import (
    COOKIE,
    MAX_TOKEN_LENGTH,
    SESSION_SECONDS,
    Session,
    Signer,
    Throttle,
    same,
)

if TYPE_CHECKING:
    from sync.review import Reviewed

log = logging.getLogger("tasks.http")

# Everything the pages load comes from this app; no inline script or style, no frames.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # Links to the CRM must not tell it which dashboard page (and filters) they came from.
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
STATIC = {"dashboard.css": "text/css; charset=utf-8",
          "dashboard.js": "text/javascript; charset=utf-8",
          "favicon.svg": "image/svg+xml"}
NAV = (("overview", "Overview"), ("balance", "Balance"), ("reps", "Reps"),
       ("decisions", "Decisions"), ("failed", "Failed writes"), ("overrides", "Overrides"),
       ("review", "Review queue"), ("overlaps", "Overlap"))
MAX_TEXT = 255
RETRY_CHUNK = 1000  # ids per hand-over, the ops API's reprocess bound
# What a redirect after an action may announce (`?done=CODE&subject=...`).
NOTICES = {"paused": "Paused {}.", "resumed": "Resumed {}.", "not_paused": "{} was not paused.",
           "retried": "Retry started for {} records.",
           "approved": "Approved: wrote {}.", "reassigned": "Reassigned: wrote {}.",
           "superseded": "Not written: the owner changed meanwhile, kept {}."}
MAX_CLOSED_SHOWN = 20  # recently decided review items under the queue

Retry = Callable[[str, str, list[str]], None]
# Approve (rep None) or reassign a review item: (item id, rep, reviewer) -> what it did.
ReviewAct = Callable[[str, str | None, str], "Reviewed"]


class PageError(Exception):
    """A request answered with an HTML page saying what is wrong (4xx, or 503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Dashboard:
    """What the pages read and act on, held on `app.state.dashboard`.

    `signer` None with `local` False: the dashboard is off (no API token). `local`: the
    `account-router dashboard` command, loopback only and without sign-in."""

    store: StateStore
    # The decision history, opened on first use (serve: the app context's `history()`, the
    # state file's own when embedded, else ACCOUNT_ROUTER_DATABASE_URL); ValueError when none.
    history: Callable[[], data.HistoryReader]
    routing: Callable[[], CompiledRouting | None]
    retry: Retry
    objects: Mapping[str, Collection[str]]  # CRM -> its objects, for the failed-writes page
    clock: Callable[[], float]
    signer: Signer | None
    local: bool = False
    token: str | None = None  # ACCOUNT_ROUTER_API_TOKEN, what sign-in takes
    hubspot_portal_id: str | None = None
    salesforce_instance_url: str | None = None
    review: ReviewAct | None = None  # None: no routing file to review with
    throttle: Throttle = field(default_factory=Throttle)
    env: Environment = field(default_factory=lambda: _environment())

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("tasks.dashboard", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["num"] = lambda n: f"{n:,}" if isinstance(n, int) else f"{n:,.1f}"
    env.filters["pct"] = lambda p: f"{p:.1f}%"
    env.filters["secs"] = charts.seconds
    env.filters["iso"] = _iso
    env.filters["utc"] = _utc_text
    return env


def _iso(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _utc_text(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def mount(app: FastAPI, dashboard: Dashboard) -> None:
    """Serve the dashboard from `app`: `/`, `/dashboard/...` and `/static/...`."""
    app.state.dashboard = dashboard
    app.include_router(router)

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        try:  # signed in: the error page keeps the navigation
            session, _ = _session(request)
        except PageError:
            session = None
        return _render(request, "error.html", exc.status, session=session, title="Error",
                       message=exc.message)


router = APIRouter(include_in_schema=False)


def _dash(request: Request) -> Dashboard:
    found: Dashboard = request.app.state.dashboard
    return found


# --- rendering and sessions --------------------------------------------------------------


def _render(request: Request, template: str, status: int = 200, *,
            session: Session | None = None, cookie: str | None = None,
            **values: Any) -> HTMLResponse:
    dash = _dash(request)
    page = dash.env.get_template(template).render(
        csrf=session.csrf if session else None, local=dash.local, nav=NAV,
        signed_in=session is not None, **values)
    response = HTMLResponse(page, status_code=status, headers=HEADERS)
    if cookie is not None:
        _set_cookie(request, response, cookie)
    return response


def _set_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(COOKIE, value, max_age=SESSION_SECONDS, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def _check_host(request: Request) -> None:
    """Local mode: only a loopback name in Host (a DNS-rebinding page gets nothing)."""
    host = (urlsplit(f"//{request.headers.get('host', '')}").hostname or "").lower()
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise PageError(400, "this local dashboard answers only at 127.0.0.1 or localhost")


def _session(request: Request) -> tuple[Session | None, str | None]:
    """The request's session, and a new cookie to set (local mode issues one on sight)."""
    dash = _dash(request)
    if dash.local:
        _check_host(request)
    if dash.signer is None:
        if dash.local:
            raise PageError(503, "the local dashboard has no session key")
        raise PageError(403, "The dashboard is off: set ACCOUNT_ROUTER_API_TOKEN for `serve` "
                        "and sign in with it (docs/operations.md#the-dashboard), or run "
                        "`account-router dashboard` on this machine.")
    now = dash.clock()
    found = dash.signer.check(request.cookies.get(COOKIE), now)
    if found is None and dash.local:
        cookie, fresh = dash.signer.issue(now)
        return fresh, cookie
    return found, None


class _SignIn(Exception):  # noqa: N818 - a control-flow signal
    """No session on a page request: send the browser to the sign-in page."""


def _page_session(request: Request) -> tuple[Session, str | None]:
    session, cookie = _session(request)
    if session is None:
        raise _SignIn
    return session, cookie


async def _form(request: Request, session: Session) -> Mapping[str, str]:
    """A POST's form after the CSRF check (token in a hidden field, constant-time compare)."""
    try:
        form = await request.form(max_files=0, max_fields=20)
    except Exception as exc:  # noqa: BLE001 - any malformed body is the client's 400
        raise PageError(400, "malformed form") from exc
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    # No Origin check besides: behind a reverse proxy the browser's origin and the Host this
    # app sees differ, and the token (with the SameSite=Strict cookie) is what proves the form.
    if not same(values.get("csrf", ""), session.csrf):
        raise PageError(403, "the form expired or did not come from this dashboard: reload "
                        "the page and try again")
    return values


def _text(value: str | None, what: str) -> str | None:
    """A filter from the query string: None when blank; 400 when too long or unprintable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise PageError(400, f"{what} must be at most {MAX_TEXT} printable characters")
    return value


def _window(request: Request) -> str:
    window = request.query_params.get("window", data.DEFAULT_WINDOW)
    if window not in data.WINDOWS:
        raise PageError(400, f"window must be one of: {', '.join(data.WINDOWS)}")
    return window


def _zone(routing: CompiledRouting | None) -> tzinfo:
    return ZoneInfo(routing.file.timezone) if routing is not None else UTC


def _history(dash: Dashboard) -> data.HistoryReader:
    """The history, or a 503 page saying why there is none (the message names the setting)."""
    try:
        return dash.history()
    except ValueError as exc:
        raise PageError(503, str(exc)) from exc


def _fail(exc: Exception) -> NoReturn:
    if isinstance(exc, PageError):
        raise exc
    log.error("dashboard read failed: %s", redact_urls(repr(exc)))
    raise PageError(503, "the state store or the history is unavailable; retry later") from exc


async def _read(fn: Callable[[], Any]) -> Any:
    """Run a blocking read off the event loop; a failure is a 503 page, never a 500."""
    def call() -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001
            _fail(exc)

    return await run_in_threadpool(call)


def _notice(request: Request) -> str | None:
    code = request.query_params.get("done")
    if code not in NOTICES:
        return None
    subject = request.query_params.get("subject", "")
    if len(subject) > MAX_TEXT:
        subject = subject[:MAX_TEXT] + "…"
    return NOTICES[code].format(subject)


def _redirect(path: str, **query: str) -> RedirectResponse:
    target = f"{path}?{urlencode(query)}" if query else path
    return RedirectResponse(target, status_code=303, headers=HEADERS)


# --- sign-in -----------------------------------------------------------------------------


@router.get("/")
async def home(request: Request) -> Response:
    try:
        session, cookie = _session(request)
    except PageError as exc:
        if exc.status == 403:
            return _render(request, "off.html", 403, title="Dashboard off")
        raise
    if session is None:
        return _render(request, "signin.html", title="Sign in")
    response = _redirect("/dashboard/overview")
    if cookie is not None:
        _set_cookie(request, response, cookie)
    return response


@router.post("/dashboard/signin")
async def signin(request: Request) -> Response:
    dash = _dash(request)
    if dash.local:
        return _redirect("/dashboard/overview")
    if dash.signer is None:
        return _render(request, "off.html", 403, title="Dashboard off")
    client = request.client.host if request.client else "?"
    now = dash.clock()
    wait = dash.throttle.retry_after(client, now)
    if wait > 0:
        locked = _render(request, "signin.html", 429, title="Sign in",
                         error=f"Too many failed attempts: try again in {int(wait) + 1} s.")
        locked.headers["retry-after"] = str(int(wait) + 1)
        return locked
    try:
        form = await request.form(max_files=0, max_fields=5)
        given = form.get("token")
    except Exception:  # noqa: BLE001 - a malformed body is just a failed attempt
        given = None
    token = dash.token
    if (not isinstance(given, str) or len(given) > MAX_TOKEN_LENGTH or token is None
            or not same(given, token)):
        dash.throttle.failed(client, now)
        log.warning("dashboard sign-in failed from %s", client)
        return _render(request, "signin.html", 401, title="Sign in",
                       error="That is not the API token (ACCOUNT_ROUTER_API_TOKEN).")
    dash.throttle.succeeded(client)
    cookie, _ = dash.signer.issue(now)
    response = _redirect("/dashboard/overview")
    _set_cookie(request, response, cookie)
    return response


@router.post("/dashboard/signout")
async def signout(request: Request) -> Response:
    dash = _dash(request)
    session, _ = _session(request)
    if session is not None and dash.signer is not None:
        await _form(request, session)
        # The cookie goes from the browser, and the session from the server's side too: a
        # copy of it (another tab, a stolen value) opens nothing after sign-out.
        dash.signer.revoke(session.nonce, dash.clock())
    response = _redirect("/")
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return response


# --- pages -------------------------------------------------------------------------------


@router.get("/dashboard")
async def dashboard_root() -> Response:
    return _redirect("/dashboard/overview")


@router.get("/dashboard/overview")
async def overview_page(request: Request) -> Response:
    return await _guarded(request, _overview)


async def _guarded(request: Request, build: Callable[[Request, Dashboard, Session, str | None],
                                                     Any]) -> Response:
    try:
        session, cookie = _page_session(request)
    except _SignIn:
        return _redirect("/")
    response: Response = await build(request, _dash(request), session, cookie)
    return response


async def _overview(request: Request, dash: Dashboard, session: Session,
                    cookie: str | None) -> Response:
    window = _window(request)
    routing = await run_in_threadpool(dash.routing)
    since, until = data.window_bounds(window, dash.now(), _zone(routing))
    history: data.HistoryReader = await _read(lambda: _history(dash))
    view: data.Overview = await _read(
        lambda: data.overview(history, since, until, data.BUCKETS[window]))
    return _render(request, "overview.html", session=session, cookie=cookie, page="overview",
                   title="Overview", window=window, windows=data.WINDOWS, since=since,
                   until=until, view=view, speed=charts.speed_chart(view.speed),
                   bars=charts.rule_bars(view.rules))


@router.get("/dashboard/balance")
async def balance_page(request: Request) -> Response:
    return await _guarded(request, _balance)


async def _balance(request: Request, dash: Dashboard, session: Session,
                   cookie: str | None) -> Response:
    window = _window(request)
    routing = await run_in_threadpool(dash.routing)
    now = dash.now()
    since, until = data.window_bounds(window, now, _zone(routing))
    history: data.HistoryReader = await _read(lambda: _history(dash))
    view: data.Balance = await _read(
        lambda: data.balance(history, dash.store, routing, since, until, now))
    return _render(request, "balance.html", session=session, cookie=cookie, page="balance",
                   title="Balance", window=window, windows=data.WINDOWS, since=since,
                   until=until, view=view, has_routing=routing is not None)


@router.get("/dashboard/reps")
async def reps_page(request: Request) -> Response:
    return await _guarded(request, _reps)


async def _reps(request: Request, dash: Dashboard, session: Session,
                cookie: str | None) -> Response:
    routing = await run_in_threadpool(dash.routing)
    now = dash.now()
    rows: list[data.RepStatus] = [] if routing is None else await _read(
        lambda: data.reps(dash.store, routing, now))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return _render(request, "reps.html", session=session, cookie=cookie, page="reps",
                   title="Reps", rows=rows, counts=counts, labels=data.STATUS_LABELS,
                   has_routing=routing is not None, now=now, notice=_notice(request))


@router.get("/dashboard/decisions")
async def decisions_page(request: Request) -> Response:
    return await _guarded(request, _decisions)


async def _decisions(request: Request, dash: Dashboard, session: Session,
                     cookie: str | None) -> Response:
    q = request.query_params
    record = _text(q.get("record"), "record")
    rep = _text(q.get("rep"), "rep")
    rule = _text(q.get("rule"), "rule")
    outcome = _text(q.get("outcome"), "outcome")
    if outcome is not None and outcome not in data.OUTCOMES:
        raise PageError(400, f"outcome must be one of: {', '.join(data.OUTCOMES)}")
    raw_offset = q.get("offset", "0").strip() or "0"
    # ASCII digits only: "²" is a digit to str.isdigit, and no number to int().
    if not (raw_offset.isascii() and raw_offset.isdigit()) or len(raw_offset) > 9 \
            or int(raw_offset) > data.MAX_OFFSET:
        raise PageError(400, f"offset must be a whole number from 0 to {data.MAX_OFFSET:,}")
    offset = int(raw_offset)
    history: data.HistoryReader = await _read(lambda: _history(dash))
    found: list[tuple[int, Decision]] = await _read(lambda: history.decision_ids(
        record_id=record, rep=rep, rule=rule, outcome=outcome, limit=data.PAGE_SIZE + 1,
        offset=offset))
    more = len(found) > data.PAGE_SIZE
    filters = {k: v for k, v in (("record", record), ("rep", rep), ("rule", rule),
                                 ("outcome", outcome)) if v}
    older = urlencode({**filters, "offset": offset + data.PAGE_SIZE}) if more else None
    newer = (urlencode({**filters, "offset": max(0, offset - data.PAGE_SIZE)})
             if offset else None)
    return _render(request, "decisions.html", session=session, cookie=cookie,
                   page="decisions", title="Decisions", rows=found[:data.PAGE_SIZE],
                   record=record or "", rep=rep or "", rule=rule or "", outcome=outcome or "",
                   outcomes=data.OUTCOMES, offset=offset, older=older, newer=newer,
                   searched=bool(filters))


@router.get("/dashboard/decisions/{decision_id}")
async def decision_page(request: Request, decision_id: str) -> Response:
    async def build(request: Request, dash: Dashboard, session: Session,
                    cookie: str | None) -> Response:
        if not (decision_id.isascii() and decision_id.isdigit()) or len(decision_id) > 19 \
                or not 0 < int(decision_id) < 2 ** 63:
            raise PageError(404, "no such decision")
        history: data.HistoryReader = await _read(lambda: _history(dash))
        found: Decision | None = await _read(lambda: history.decision(int(decision_id)))
        if found is None:
            raise PageError(404, "no such decision")
        link = crm_link(found, dash.hubspot_portal_id, dash.salesforce_instance_url)
        events: list[data.EventRow] = await _read(
            lambda: data.decision_events(history, int(decision_id), found))
        return _render(request, "decision.html", session=session, cookie=cookie,
                       page="decisions", title=f"Decision {decision_id}", d=found,
                       decision_id=decision_id, link=link, events=events)

    return await _guarded(request, build)


@router.get("/dashboard/failed")
async def failed_page(request: Request) -> Response:
    return await _guarded(request, _failed)


async def _failed(request: Request, dash: Dashboard, session: Session,
                  cookie: str | None) -> Response:
    groups: list[data.FailedGroup] = await _read(
        lambda: data.failed_writes(dash.store, _history(dash), dash.objects))
    return _render(request, "failed.html", session=session, cookie=cookie, page="failed",
                   title="Failed writes", groups=groups, notice=_notice(request),
                   shown=data.MAX_FAILED_SHOWN)


@router.get("/dashboard/overrides")
async def overrides_page(request: Request) -> Response:
    return await _guarded(request, _overrides)


async def _overrides(request: Request, dash: Dashboard, session: Session,
                     cookie: str | None) -> Response:
    q = request.query_params
    window = _window(request)
    rule = _text(q.get("rule"), "rule")
    rep = _text(q.get("rep"), "rep")
    offset = _offset(q.get("offset", "0"))
    routing = await run_in_threadpool(dash.routing)
    since, until = data.window_bounds(window, dash.now(), _zone(routing))
    history: data.HistoryReader = await _read(lambda: _history(dash))
    view: data.OverridesView = await _read(
        lambda: data.overrides(history, since, until, rule=rule, rep=rep, offset=offset))
    filters = {k: v for k, v in (("window", window), ("rule", rule), ("rep", rep)) if v}
    older = urlencode({**filters, "offset": offset + data.PAGE_SIZE}) if view.more else None
    newer = (urlencode({**filters, "offset": max(0, offset - data.PAGE_SIZE)})
             if offset else None)
    return _render(request, "overrides.html", session=session, cookie=cookie,
                   page="overrides", title="Overrides", window=window, windows=data.WINDOWS,
                   since=since, until=until, view=view, rule=rule or "", rep=rep or "",
                   offset=offset, older=older, newer=newer, searched=bool(rule or rep))


@router.get("/dashboard/overlaps")
async def overlaps_page(request: Request) -> Response:
    return await _guarded(request, _overlaps)


async def _overlaps(request: Request, dash: Dashboard, session: Session,
                    cookie: str | None) -> Response:
    routing = await run_in_threadpool(dash.routing)
    now = dash.now()
    history: data.HistoryReader = await _read(lambda: _history(dash))
    view: territory.Territory = await _read(lambda: territory.territory(history, routing, now))
    bars = charts.rule_bars([data.Share(r.rule, r.wins, r.share * 100) for r in view.rules])
    config = str(routing.file.source) if routing is not None and routing.file.source \
        else "routing.yaml"
    overlap = view.overlap
    # The CLI's own SVG (sync/overlaps.py; rule names escaped there), inline.
    heat = heat_map(overlap) if overlap is not None and overlap.rules else None
    pairs = sorted(overlap.pairs, key=lambda p: (-p[2], p[0], p[1])) if overlap else []
    return _render(request, "overlaps.html", session=session, cookie=cookie, page="overlaps",
                   title="Territory overlap", view=view, bars=bars,
                   has_routing=routing is not None, config=config,
                   max_traces=territory.MAX_TRACES, heat=heat, pairs=pairs)


def _offset(text: str) -> int:
    """A paging offset from the query string; 400 unless a whole number in range."""
    raw = text.strip() or "0"
    # ASCII digits only: "²" is a digit to str.isdigit, and no number to int().
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or int(raw) > data.MAX_OFFSET:
        raise PageError(400, f"offset must be a whole number from 0 to {data.MAX_OFFSET:,}")
    return int(raw)


@router.get("/dashboard/review")
async def review_page(request: Request) -> Response:
    return await _guarded(request, _review)


async def _review(request: Request, dash: Dashboard, session: Session,
                  cookie: str | None) -> Response:
    items: list[ReviewItem] = await _read(dash.store.reviews)
    closed: list[ReviewItem] = await _read(
        lambda: dash.store.reviews(closed=True, limit=MAX_CLOSED_SHOWN))
    routing = await run_in_threadpool(dash.routing)
    reps = sorted(r for r, rep in routing.reps.items() if rep.active) if routing else []
    links = {i.id: _item_link(dash, i) for i in items}
    return _render(request, "review.html", session=session, cookie=cookie, page="review",
                   title="Review queue", items=items, closed=closed, reps=reps, links=links,
                   now=dash.now(), notice=_notice(request), can_act=dash.review is not None)


def _item_link(dash: Dashboard, item: ReviewItem) -> str | None:
    try:
        kind = registry.spec(item.crm).kind(item.object)
    except (KeyError, ValueError):
        return None
    shown = Decision(record_id=item.record_id, object=kind, crm=item.crm,
                     outcome=Outcome.PENDING_REVIEW)
    return crm_link(shown, dash.hubspot_portal_id, dash.salesforce_instance_url)


# --- actions (POST, then redirect) ------------------------------------------------------


async def _action_session(request: Request) -> tuple[Dashboard, Mapping[str, str]]:
    session, _ = _session(request)
    if session is None:
        raise PageError(403, "sign in first")
    return _dash(request), await _form(request, session)


@router.post("/dashboard/reps/{rep}/pause")
async def pause(request: Request, rep: str) -> Response:
    dash, form = await _action_session(request)
    routing = await run_in_threadpool(dash.routing)
    if routing is None or rep not in routing.reps:
        raise PageError(404, "unknown rep: not in the routing file")
    until = _until(form.get("until", ""), dash.now())
    await _read(lambda: dash.store.pause(rep, until))
    return _redirect("/dashboard/reps", done="paused", subject=rep)


def _until(text: str, now: datetime) -> datetime | None:
    """The pause form's end: blank (until resumed), or an instant; without an offset, UTC (the
    form says so; a browser's datetime-local input sends none)."""
    text = text.strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
        until = (parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed).astimezone(UTC)
    except (ValueError, OverflowError):
        raise PageError(400, "until must be a date and time, e.g. 2026-12-08T09:00") from None
    if until <= now:
        raise PageError(400, "until is in the past: the pause would have no effect")
    return until


@router.post("/dashboard/reps/{rep}/resume")
async def resume(request: Request, rep: str) -> Response:
    dash, _ = await _action_session(request)
    routing = await run_in_threadpool(dash.routing)
    known = routing is not None and rep in routing.reps
    was = await _read(lambda: dash.store.resume(rep)) if len(rep) <= MAX_TEXT else False
    if not known and not was:
        raise PageError(404, "unknown rep: not in the routing file")
    return _redirect("/dashboard/reps", done="resumed" if was else "not_paused", subject=rep)


@router.post("/dashboard/failed/retry")
async def retry(request: Request) -> Response:
    dash, form = await _action_session(request)
    crm, obj = form.get("crm", ""), form.get("object", "")
    if obj not in dash.objects.get(crm, ()):
        raise PageError(400, "unknown CRM object")
    ids: list[str] = await _read(lambda: dash.store.failed(crm, obj))

    def hand_over() -> None:
        try:
            for start in range(0, len(ids), RETRY_CHUNK):
                dash.retry(crm, obj, ids[start:start + RETRY_CHUNK])
        except Exception as exc:  # noqa: BLE001 - a page saying why, never a 500
            log.error("dashboard retry of %s %s failed: %r", crm, obj, exc)
            raise PageError(503, f"the retry could not start: {redact_urls(str(exc))[:300]}"
                            ) from exc

    await run_in_threadpool(hand_over)
    return _redirect("/dashboard/failed", done="retried", subject=f"{len(ids):,}")


@router.post("/dashboard/review/{item_id}/approve")
async def review_approve(request: Request, item_id: str) -> Response:
    dash, _ = await _action_session(request)
    return await _review_act(dash, item_id, None)


@router.post("/dashboard/review/{item_id}/reassign")
async def review_reassign(request: Request, item_id: str) -> Response:
    dash, form = await _action_session(request)
    rep = form.get("rep", "").strip()
    if not rep:
        raise PageError(400, "choose a rep to reassign to")
    return await _review_act(dash, item_id, rep)


# A refused review action as a page: unknown item, already decided, a rep that cannot take
# it, the CRM unreachable (try again).
_REVIEW_STATUS = {"unknown": 404, "decided": 409, "ineligible": 422, "unavailable": 503}


async def _review_act(dash: Dashboard, item_id: str, rep: str | None) -> Response:
    act = dash.review
    if act is None:
        raise PageError(503, "review actions need a routing file (ACCOUNT_ROUTER_CONFIG)")
    if len(item_id) > MAX_TEXT:
        raise PageError(404, "no such review item")
    reviewer = "dashboard (local)" if dash.local else "dashboard"

    def run() -> Any:
        from sync.review import ReviewError

        try:
            return act(item_id, rep, reviewer)
        except ReviewError as exc:
            raise PageError(_REVIEW_STATUS[exc.status], str(exc)) from exc

    done = await _read(run)
    closed = done.item
    return _redirect("/dashboard/review", done=closed.status,
                     subject=f"{closed.record_id} ({closed.final_owner or 'nobody'})")


@router.get("/dashboard/{rest:path}")
async def not_found(request: Request, rest: str) -> Response:
    """Any other dashboard address: a page saying so (registered last, after every page)."""
    async def build(request: Request, dash: Dashboard, session: Session,
                    cookie: str | None) -> Response:
        raise PageError(404, "no such page")

    return await _guarded(request, build)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    media = STATIC.get(name)
    if media is None:
        return Response("not found", status_code=404, media_type="text/plain")
    body = resources.files("tasks.dashboard").joinpath("static", name).read_bytes()
    return Response(body, media_type=media,
                    headers={"cache-control": "public, max-age=3600",
                             "x-content-type-options": "nosniff"})
