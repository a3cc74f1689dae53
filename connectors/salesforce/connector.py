"""Salesforce connector: SOQL reads, composite owner writes, one retry layer.

See docs/connectors.md#the-built-in-connectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import jwt
import requests
from simple_salesforce import Salesforce, format_soql

from connectors.ratelimit import bucket_for
from connectors.salesforce import settings as vendor
from connectors.salesforce.errors import (
    RowsLocked,
    classify,
    first_error,
    parse_limit_info,
)
from connectors.settings import Settings
from connectors.transport import (
    Failure,
    RateLimiter,
    Transport,
    TransportFailure,
    Verdict,
    parse_retry_after,
)
from sync.enrich import PREFIX, company_key
from sync.normalize import domain_keys, normalize_domain
from sync.ports import (
    CallStats,
    CredentialsError,
    CrmRecord,
    CrmUnavailable,
    CrmUser,
    Page,
    QuotaExhausted,
    WriteResult,
)

CRM = vendor.CRM
T = TypeVar("T")

# A record id: 15 case-sensitive characters, or 18 with the case-insensitive checksum. Anything
# else would fail the whole `Id IN (...)` query (MALFORMED_ID), so it is treated as absent.
_RECORD_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
# Field names go into SOQL as literals, so only API names are accepted (`Region__c`).
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# nextRecordsUrl is a path on the instance; anything else could send the token elsewhere.
_CURSOR_PATH = "/services/data/"
_QUERY_OPTIONS = {"Sforce-Query-Options": f"batchSize={vendor.QUERY_PAGE_SIZE}"}
_NO_CREDENTIALS = ("SALESFORCE_INSTANCE_URL + SALESFORCE_ACCESS_TOKEN, or SALESFORCE_USERNAME + "
                   "SALESFORCE_PASSWORD + SALESFORCE_SECURITY_TOKEN, or SALESFORCE_USERNAME + "
                   "SALESFORCE_CONSUMER_KEY + SALESFORCE_PRIVATE_KEY_FILE")


# -- credentials -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Auth:
    """How to sign in: the mode, the settings a rejection points at, simple-salesforce's
    keyword arguments (secrets: kept out of repr)."""

    mode: str  # token | password | jwt
    settings: str
    kwargs: Mapping[str, str] = field(repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        names = ("session_id", "password", "security_token")
        return tuple(v for k, v in self.kwargs.items() if k in names and len(v) >= 4)


def resolve_auth(settings: Settings) -> Auth:
    """The auth mode the settings describe, or one CredentialsError naming what is missing.

    An access token wins (no login call), then JWT bearer, then username/password/token.
    """
    token = _secret(settings.salesforce_access_token)
    instance = _text(settings.salesforce_instance_url)
    username = _text(settings.salesforce_username)
    password = _secret(settings.salesforce_password)
    # An empty security token is legitimate: orgs that trust the caller's IP range need none.
    security = (settings.salesforce_security_token.get_secret_value()
                if settings.salesforce_security_token is not None else None)
    consumer_key = _text(settings.salesforce_consumer_key)
    key_file = _text(settings.salesforce_private_key_file)
    domain = login_domain(settings.salesforce_domain)
    if token:
        if not instance:
            raise CredentialsError(CRM, "SALESFORCE_INSTANCE_URL",
                                   "SALESFORCE_ACCESS_TOKEN is set but SALESFORCE_INSTANCE_URL "
                                   "is not")
        return Auth("token", ", ".join(vendor.TOKEN_SETTINGS),
                    {"session_id": token, "instance_url": _https(instance)})
    if consumer_key or key_file:
        _require("JWT bearer login", {"SALESFORCE_USERNAME": bool(username),
                                      "SALESFORCE_CONSUMER_KEY": bool(consumer_key),
                                      "SALESFORCE_PRIVATE_KEY_FILE": bool(key_file)})
        path = Path(str(key_file))
        if not path.is_file() or not os.access(path, os.R_OK):
            raise CredentialsError(CRM, "SALESFORCE_PRIVATE_KEY_FILE",
                                   f"cannot read the private key file {path}")
        return Auth("jwt", ", ".join(vendor.JWT_SETTINGS),
                    {"username": str(username), "consumer_key": str(consumer_key),
                     "privatekey_file": str(path), "domain": domain})
    if username or password or security is not None:
        _require("password login", {"SALESFORCE_USERNAME": bool(username),
                                    "SALESFORCE_PASSWORD": bool(password),
                                    "SALESFORCE_SECURITY_TOKEN": security is not None})
        return Auth("password", ", ".join(vendor.PASSWORD_SETTINGS),
                    {"username": str(username), "password": str(password),
                     "security_token": str(security), "domain": domain})
    raise CredentialsError(CRM, _NO_CREDENTIALS, "no Salesforce credentials are set")


def org_key(settings: Settings) -> str:
    """Names one org's rate-limit budget without a call: the org id when set, else a digest
    of where and as whom the connector logs in (never the secret itself)."""
    org = _text(settings.salesforce_org_id)
    if org:
        return org[:15]  # the 15- and 18-character forms of an id name the same org
    where = "\n".join([_text(settings.salesforce_instance_url) or "",
                       _text(settings.salesforce_username) or "",
                       login_domain(settings.salesforce_domain)])
    return hashlib.sha256(where.encode()).hexdigest()[:16]


def login_domain(value: str | None) -> str:
    """`login`, `test` or a My Domain prefix (`acme.my`), also when given as a host or URL."""
    text = (value or "").strip().lower()
    text = text.split("://", 1)[-1].strip("/")
    text = text.removesuffix(".salesforce.com")
    return text or "login"


def _require(what: str, present: Mapping[str, bool]) -> None:
    missing = [name for name, ok in present.items() if not ok]
    if missing:
        raise CredentialsError(CRM, ", ".join(missing),
                               f"{what} needs {', '.join(present)}; not set: "
                               f"{', '.join(missing)}")


def _secret(value: Any) -> str | None:
    text = value.get_secret_value().strip() if value is not None else ""
    return text or None


def _text(value: str | None) -> str | None:
    text = (value or "").strip()
    return text or None


def _https(url: str) -> str:
    return url if "://" in url else f"https://{url}"


# -- HTTP --------------------------------------------------------------------------------------

class _Session(requests.Session):
    """simple-salesforce sets no timeout, so a stalled socket would park a worker forever;
    every request (login included) gets these (connect, read) timeouts unless it names its
    own."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().request(method, url, *args, **kwargs)


def _session(read_timeout: float | None = None, cert_file: str | None = None) -> _Session:
    # ACCOUNT_ROUTER_CRM_TIMEOUT_SECONDS replaces the read timeout only (None: the vendor's).
    read = vendor.READ_TIMEOUT if read_timeout is None else read_timeout
    session = _Session((vendor.CONNECT_TIMEOUT, read))
    # requests reads REQUESTS_CA_BUNDLE (and CURL_CA_BUNDLE) per request because trust_env is
    # on, and simple-salesforce never sets `verify`; requests ignores SSL_CERT_FILE (it ships
    # certifi), so honour that one (the SSL_CERT_FILE setting) here, below the requests
    # variables.
    if cert_file and Path(cert_file).is_file():
        session.verify = cert_file
    # On the session, not only per call: simple-salesforce drops per-call headers when it
    # re-sends a request after renewing an expired session (api.py `_call_salesforce`).
    session.headers.update(vendor.AUTO_ASSIGN_HEADER)
    return session


# -- the listing cursor ------------------------------------------------------------------------

@dataclass(frozen=True)
class Position:
    """Where a listing stands: the server-side cursor (nextRecordsUrl) and the last record
    returned (SystemModstamp, Id), to restart from when the server cursor has expired."""

    next: str
    last: tuple[str, str] | None = None

    def encode(self) -> str:
        return json.dumps({"next": self.next, "last": list(self.last) if self.last else None},
                          separators=(",", ":"))

    @classmethod
    def decode(cls, cursor: str) -> Position:
        if cursor.startswith("/"):  # a bare nextRecordsUrl
            position = cls(cursor)
        else:
            try:
                data = json.loads(cursor)
                last = data.get("last")
                position = cls(str(data["next"]), (str(last[0]), str(last[1])) if last else None)
            except (ValueError, TypeError, KeyError, IndexError, AttributeError):
                raise ValueError(f"not a Salesforce listing cursor: {cursor[:80]!r}") from None
        if not position.next.startswith(_CURSOR_PATH):
            raise ValueError(f"not a Salesforce listing cursor: {cursor[:80]!r}")
        return position


# -- the connector -----------------------------------------------------------------------------

class SalesforceConnector:
    """The Salesforce side of `sync.ports.Connector` on simple-salesforce.

    Every HTTP call runs through one Transport (rate limit, table-driven retry); the
    Sforce-Limit-Info usage of every response is kept, and a spent daily quota stops the
    next call before it is made.
    """

    name = CRM
    spec = vendor.SPEC
    # Owners one write call takes: a sweep carries writes across pages to fill each batch.
    write_batch_size = vendor.COMPOSITE_BATCH

    def __init__(self, settings: Settings, *, limiter: RateLimiter | None = None,
                 transport_sleep: Callable[[float], None] | None = None,
                 extra_fields: Mapping[str, Sequence[str]] | None = None,
                 attempts: int | None = None) -> None:
        auth = resolve_auth(settings)
        self._mode = auth.mode
        self._secrets = auth.secrets
        self._fields = _object_fields(extra_fields)
        self._usage: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._session = _session(settings.crm_timeout_seconds, settings.ssl_cert_file)
        self._session.hooks["response"].append(self._on_response)
        self._owned_limiter = limiter is None
        if limiter is None:
            # One budget per org for every worker (DESIGN §2): shared through Redis when
            # ACCOUNT_ROUTER_REDIS_URL is set, else in-process.
            limiter = bucket_for(settings, CRM, f"{org_key(settings)}:calls",
                                 settings.salesforce_calls_per_second)
        self.transport = Transport(CRM, self._classify, limiter,
                                   credentials_setting=auth.settings,
                                   sleep=transport_sleep or time.sleep)
        if attempts is not None:  # 1 for a caller that cannot wait (POST /route)
            self.transport.attempts = attempts
        version = settings.salesforce_api_version.strip().lstrip("vV")
        # Strings all (a token or a login); simple-salesforce types each keyword on its own.
        login: dict[str, Any] = dict(auth.kwargs)
        connect = partial(Salesforce, session=self._session, version=version, **login)
        try:
            # A token needs no login call; a rejected one surfaces on the first call (401).
            self._sf = connect() if auth.mode == "token" else self._call("login", connect)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            self._session.close()
            if auth.mode != "jwt":
                raise
            # The key file exists but is not a usable key: say so without echoing its bytes.
            raise CredentialsError(CRM, "SALESFORCE_PRIVATE_KEY_FILE",
                                   f"the private key could not sign the JWT "
                                   f"({type(exc).__name__}); expected an RSA key in PEM") \
                from None
        except BaseException:
            self._session.close()
            raise
        if len(self._sf.session_id or "") >= 4:
            self._secrets += (self._sf.session_id,)

    def __repr__(self) -> str:
        return f"SalesforceConnector(instance={self.instance!r}, auth={self._mode!r})"

    @property
    def instance(self) -> str:
        """The instance host the session talks to (`acme.my.salesforce.com`)."""
        return str(self._sf.sf_instance)

    # -- the port ----------------------------------------------------------------------------

    def list_records(self, object: str, *, since: datetime | None, cursor: str | None
                     ) -> Page:
        """Records with SystemModstamp >= since, ordered by (SystemModstamp, Id), one query
        page (up to 2,000) per call; the cursor wraps the page's nextRecordsUrl."""
        obj = vendor.SPEC.canonical_object(object)
        after: tuple[str, str] | None = None
        if cursor:
            position = Position.decode(cursor)
            payload, after = self._resume(obj, position)
            last = position.last
        else:
            soql = format_soql("SELECT {:literal} FROM {:literal}", self._select(obj), obj)
            if since is not None:
                # format_soql renders an aware datetime in UTC without fractions: the bound
                # rounds down, so a record stamped within `since`'s second is not missed.
                soql += format_soql(" WHERE SystemModstamp >= {}", _aware(since))
            soql += " ORDER BY SystemModstamp, Id"
            payload = self._call("query", partial(self._sf.query, soql, headers=_QUERY_OPTIONS))
            last = None
        raw = _rows(payload)
        if raw:
            last = (str(raw[-1].get("SystemModstamp") or ""), str(raw[-1].get("Id") or ""))
        if after is not None:
            raw = [r for r in raw if not _at_or_before(r, after)]
        records = [self._record(obj, r) for r in raw]
        total = payload.get("totalSize")  # the whole query's count, on every page
        total = total if isinstance(total, int) else None
        if payload.get("done", True) or not payload.get("nextRecordsUrl"):
            return Page(records, None, total)
        return Page(records, Position(str(payload["nextRecordsUrl"]), last).encode(), total)

    def read_records(self, object: str, ids: Sequence[str]) -> list[CrmRecord]:
        """Records by id, `ID_CHUNK` ids a query; ids that do not exist are absent."""
        obj = vendor.SPEC.canonical_object(object)
        return [replace(self._record(obj, raw), id=asked)
                for asked, raw in self._by_ids(obj, ids, self._select(obj))]

    def converted(self, object: str, ids: Sequence[str]) -> set[str]:
        """Accounts with a won Opportunity, converted Leads (`ID_CHUNK` ids a query); other
        objects have no outcome here (an empty answer)."""
        obj = vendor.SPEC.canonical_object(object)
        if obj == "Lead":
            return {asked for asked, raw in self._by_ids(obj, ids, "Id, IsConverted")
                    if raw.get("IsConverted") is True}
        if obj != "Account":
            return set()
        wanted = list(dict.fromkeys(i.strip() for i in ids if i and i.strip()))
        valid = [i for i in wanted if _RECORD_ID.fullmatch(i)]
        won: set[str] = set()
        for start in range(0, len(valid), vendor.ID_CHUNK):
            chunk = valid[start:start + vendor.ID_CHUNK]
            asked = {i[:15]: i for i in chunk}
            soql = format_soql("SELECT AccountId FROM Opportunity WHERE IsWon = true "
                               "AND AccountId IN {}", chunk)
            for page in self._pages(soql):
                for raw in page:
                    key = asked.get(str(raw.get("AccountId") or "")[:15])
                    if key is not None:
                        won.add(key)
        return won

    def read_owners(self, object: str, ids: Sequence[str]) -> dict[str, str | None]:
        """OwnerId per record id, in one query per `ID_CHUNK` ids."""
        obj = vendor.SPEC.canonical_object(object)
        return {asked: _str_or_none(raw.get(vendor.OWNER_FIELD))
                for asked, raw in self._by_ids(obj, ids, f"Id, {vendor.OWNER_FIELD}")}

    def write_owners(self, object: str, owners: Mapping[str, str]) -> list[WriteResult]:
        """`PATCH composite/sobjects`, `COMPOSITE_BATCH` records a call, allOrNone false,
        always with `Sforce-Auto-Assign: FALSE`; one result per id in the given order.

        Locked rows are re-sent alone; a call that fails outright (retries spent) fails its
        records and those of the batches after it, which are not attempted.
        """
        obj = vendor.SPEC.canonical_object(object)
        items = list(owners.items())
        results: list[WriteResult] = []
        stopped: WriteResult | None = None
        for start in range(0, len(items), vendor.COMPOSITE_BATCH):
            chunk = dict(items[start:start + vendor.COMPOSITE_BATCH])
            if stopped is not None:
                results += [replace(stopped, id=record_id) for record_id in chunk]
                continue
            try:
                written, stopped = self._write_chunk(obj, chunk)
            except QuotaExhausted as exc:
                # The quota ran out between two calls: earlier chunks (and rows of this one
                # that landed before a locked-row re-send) are written and must say so.
                exc.landed = results + exc.landed
                raise
            results += written
        return results

    def users(self) -> list[CrmUser]:
        """Every user (person; active per IsActive) and every queue (never a person)."""
        found = [CrmUser(id=str(raw["Id"]), active=bool(raw.get("IsActive")), person=True,
                         email=_str_or_none(raw.get("Email")), name=_str_or_none(raw.get("Name")))
                 for page in self._pages(format_soql("SELECT Id, Name, Email, IsActive FROM User"))
                 for raw in page]
        queues = format_soql("SELECT Id, Name FROM Group WHERE Type = {}", "Queue")
        found += [CrmUser(id=str(raw["Id"]), active=True, person=False,
                          name=_str_or_none(raw.get("Name")))
                  for page in self._pages(queues) for raw in page]
        return found

    def accounts_by_domain(self, domains: Sequence[str]) -> dict[str, str]:
        """OwnerId of the account whose Website normalizes to each domain or a parent of it
        (`eu.acme.com` also finds `acme.com`); with several such accounts, the oldest wins."""
        wanted: set[str] = set()
        registered: dict[str, None] = {}  # one LIKE per registered domain covers its subdomains
        for value in domains:
            keys = domain_keys(normalize_domain(value))
            if keys:
                wanted.update(keys)
                registered[keys[-1]] = None
        found: dict[str, str] = {}
        patterns = list(registered)
        clauses = (website_like(patterns[start:start + vendor.DOMAIN_CHUNK])
                   for start in range(0, len(patterns), vendor.DOMAIN_CHUNK))
        for raw in self._accounts("Website, OwnerId", clauses):
            domain = normalize_domain(raw.get("Website"))
            owner = _str_or_none(raw.get(vendor.OWNER_FIELD))
            if domain in wanted and owner and domain not in found:
                found[domain] = owner
        return found

    def accounts_by_name(self, names: Sequence[str]) -> list[tuple[str, str]]:
        """(Name, domain of Website) of the accounts with a word starting like a word of one
        of `names` (its first three letters, legal forms dropped): what `company_match` may
        match leads to (docs/routing-file.md#company_match). LIKE is case-insensitive."""
        prefixes = sorted({word[:PREFIX] for name in names for word in company_key(name).split()
                           if len(word) >= PREFIX})
        found: dict[tuple[str, str], None] = {}
        clauses = (name_like(prefixes[start:start + vendor.NAME_CHUNK])
                   for start in range(0, len(prefixes), vendor.NAME_CHUNK))
        for raw in self._accounts("Name, Website", clauses):
            name = _str_or_none(raw.get("Name"))
            domain = normalize_domain(raw.get("Website"))
            if name and domain:
                found[(name, domain)] = None
        return list(found)

    def _accounts(self, fields: str, clauses: Iterable[str]) -> Iterator[dict[str, Any]]:
        """The Id and `fields` of the accounts each WHERE clause selects, clause after clause,
        oldest first within each (the same answer, in the same order, on every run), paged."""
        for clause in clauses:
            soql = format_soql("SELECT Id, {:literal} FROM Account WHERE {:literal} "
                               "ORDER BY CreatedDate, Id", fields, clause)
            for page in self._pages(soql):
                yield from page

    def stats(self) -> CallStats:
        return self.transport.stats()

    def api_usage(self) -> tuple[int, int] | None:
        """(used, max) API requests from the latest `Sforce-Limit-Info`; None until one came."""
        with self._lock:
            return self._usage

    def close(self) -> None:
        self._session.close()
        closer = getattr(self.transport.limiter, "close", None)
        if self._owned_limiter and callable(closer):
            closer()  # a Redis bucket's connection pool

    # -- calls ------------------------------------------------------------------------------

    def _call(self, endpoint: str, fn: Callable[[], T]) -> T:
        def guarded() -> T:
            usage = self.api_usage()
            if usage is not None and usage[0] >= usage[1]:
                # The org said the daily limit is spent: stop before the call, not after it.
                # Forget the reading, though: the limit is a rolling 24 h, and a long-lived
                # worker's next run must ask the org again rather than stop forever.
                with self._lock:
                    self._usage = None
                raise QuotaExhausted(CRM, f"api-usage {usage[0]}/{usage[1]} (Sforce-Limit-Info)")
            self._local.failed = None
            return fn()

        return self.transport.call(endpoint, guarded)

    def _classify(self, exc: BaseException) -> Failure | None:
        seen = getattr(self._local, "failed", None)
        retry_after = seen[1] if seen is not None and getattr(exc, "status", None) == seen[0] \
            else None
        failure = classify(exc, retry_after)
        return None if failure is None else replace(failure, detail=self._scrub(failure.detail))

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any
                     ) -> requests.Response:
        usage = parse_limit_info(response.headers.get("Sforce-Limit-Info"))
        if usage is not None:
            with self._lock:
                self._usage = usage
        if response.status_code >= 400:
            # The exceptions simple-salesforce raises keep no headers: remember Retry-After
            # for the classifier, per thread.
            self._local.failed = (response.status_code,
                                  parse_retry_after(response.headers.get("Retry-After")))
        return response

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _pages(self, soql: str) -> Iterator[list[dict[str, Any]]]:
        payload = self._call("query", partial(self._sf.query, soql, headers=_QUERY_OPTIONS))
        while True:
            yield _rows(payload)
            if payload.get("done", True) or not payload.get("nextRecordsUrl"):
                return
            more = partial(self._sf.query_more, str(payload["nextRecordsUrl"]),
                           identifier_is_url=True)
            payload = self._call("queryMore", more)

    def _resume(self, obj: str, position: Position
                ) -> tuple[dict[str, Any], tuple[str, str] | None]:
        """The next page of a listing; when the server cursor has expired (15 minutes idle,
        or evicted by the open-cursor cap, e.g. a sweep resumed after a quota stop), a fresh
        query from the last record's second, skipping what was already returned."""
        try:
            more = partial(self._sf.query_more, position.next, identifier_is_url=True)
            return self._call("queryMore", more), None
        except CrmUnavailable as exc:
            root = _root_cause(exc)
            code = first_error(getattr(root, "content", None))[0]
            if position.last is None or code != "INVALID_QUERY_LOCATOR":
                raise
        stamp = parse_datetime(position.last[0])
        if stamp is None:
            raise CrmUnavailable(CRM, "listing cursor expired and its position is unreadable")
        soql = format_soql("SELECT {:literal} FROM {:literal} WHERE SystemModstamp >= {} "
                           "ORDER BY SystemModstamp, Id", self._select(obj), obj, stamp)
        payload = self._call("query", partial(self._sf.query, soql, headers=_QUERY_OPTIONS))
        return payload, position.last

    def _by_ids(self, obj: str, ids: Sequence[str], fields: str
                ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(the id as asked, the row) for each id that exists; a 15-character id finds the
        record the CRM answers with its 18-character id."""
        wanted = list(dict.fromkeys(i.strip() for i in ids if i and i.strip()))
        valid = [i for i in wanted if _RECORD_ID.fullmatch(i)]
        for start in range(0, len(valid), vendor.ID_CHUNK):
            chunk = valid[start:start + vendor.ID_CHUNK]
            asked = {i[:15]: i for i in chunk}
            soql = format_soql("SELECT {:literal} FROM {:literal} WHERE Id IN {}",
                               fields, obj, chunk)
            for page in self._pages(soql):
                for raw in page:
                    key = asked.get(str(raw.get("Id") or "")[:15])
                    if key is not None:
                        yield key, raw

    def _write_chunk(self, obj: str, chunk: Mapping[str, str]
                     ) -> tuple[list[WriteResult], WriteResult | None]:
        """One composite call (plus re-sends of locked rows): the chunk's results, and the
        failure that stops later chunks, if the call itself failed."""
        pending = dict(chunk)
        done: dict[str, WriteResult] = {}

        def send() -> None:
            ids = list(pending)
            body = {"allOrNone": False,
                    "records": [{"attributes": {"type": obj}, "id": record_id,
                                 vendor.OWNER_FIELD: pending[record_id]} for record_id in ids]}
            answer = self._sf.restful("composite/sobjects", method="PATCH", json=body,
                                      headers=dict(vendor.AUTO_ASSIGN_HEADER))
            if not isinstance(answer, list):
                raise CrmUnavailable(CRM, f"composite/sobjects: expected a list of results, "
                                     f"got {type(answer).__name__}")
            locked: list[str] = []
            message = ""
            # Results come in request order; a failed one carries no id.
            for index, record_id in enumerate(ids):
                result = answer[index] if index < len(answer) else None
                if not isinstance(result, Mapping):
                    done[record_id] = WriteResult(record_id, False, "no result returned",
                                                  retryable=True)
                elif result.get("success"):
                    done[record_id] = WriteResult(record_id, True)
                else:
                    code, text = first_error(result.get("errors"))
                    if code in vendor.RETRYABLE_RECORD_ERRORS:
                        locked.append(record_id)
                        message = text
                        continue
                    done[record_id] = WriteResult(record_id, False, f"{code}: {text}",
                                                  retryable=False)
                del pending[record_id]
            if locked:
                raise RowsLocked(locked, message)  # the transport backs off, send() re-sends

        stopped: WriteResult | None = None
        try:
            self._call("composite/sobjects", send)
        except QuotaExhausted as exc:
            exc.landed = [r for r in done.values() if r.ok]
            raise
        except CrmUnavailable as exc:
            root = _root_cause(exc)
            failure = _failure(exc)
            if isinstance(root, RowsLocked):
                for record_id in pending:
                    done[record_id] = WriteResult(record_id, False,
                                                  f"UNABLE_TO_LOCK_ROW: {root.message}",
                                                  retryable=True)
            else:
                retryable = failure is not None and failure.verdict == Verdict.RETRY
                stopped = WriteResult("", False, str(exc), retryable=retryable)
                for record_id in pending:
                    done[record_id] = replace(stopped, id=record_id)
        return [done[record_id] for record_id in chunk], stopped

    # -- records ----------------------------------------------------------------------------

    def _select(self, obj: str) -> str:
        return ", ".join(self._fields[obj])

    @staticmethod
    def _record(obj: str, raw: Mapping[str, Any]) -> CrmRecord:
        properties = {k: v for k, v in raw.items() if k != "attributes"}
        return CrmRecord(id=str(raw["Id"]), object=obj, properties=properties,
                         created_at=parse_datetime(raw.get("CreatedDate")),
                         modified_at=parse_datetime(raw.get("SystemModstamp")))


def from_settings(settings: Settings, *, limiter: RateLimiter | None = None,
                  transport_sleep: Callable[[float], None] | None = None,
                  extra_fields: Mapping[str, Sequence[str]] | None = None,
                  attempts: int | None = None) -> SalesforceConnector:
    """The registry's factory (connectors/registry.py). `attempts`: tries per call in all
    (the Transport's default unless given; 1 for a caller that cannot wait, as POST /route)."""
    return SalesforceConnector(settings, limiter=limiter, transport_sleep=transport_sleep,
                               extra_fields=extra_fields, attempts=attempts)


def website_like(domains: Sequence[str]) -> str:
    """`Website LIKE '%acme.com%' OR ...`, each domain escaped by format_soql (quotes, and
    `%`/`_` which LIKE would read as wildcards). LIKE is a substring match (`%acme.com%`
    also finds `notacme.com`): callers compare the normalized Website exactly."""
    return " OR ".join(format_soql("Website LIKE '%{:like}%'", domain) for domain in domains)


def name_like(prefixes: Sequence[str]) -> str:
    """`Name LIKE 'acm%' OR Name LIKE '% acm%' OR ...`: a name with a word starting with each
    prefix (the first word, or one after a space), escaped by format_soql."""
    return " OR ".join(format_soql("Name LIKE '{:like}%' OR Name LIKE '% {:like}%'", p, p)
                       for p in prefixes)


def parse_datetime(value: object) -> datetime | None:
    """`2026-11-25T10:00:00.000+0000` (Salesforce's dateTime) as an aware UTC datetime."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _aware(moment: datetime) -> datetime:
    # format_soql converts with astimezone(), which reads a naive value as local time;
    # naive instants are UTC in this project (docs/operations.md#command-line).
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _at_or_before(raw: Mapping[str, Any], last: tuple[str, str]) -> bool:
    """Whether a row sorts at or before the last one returned, in (SystemModstamp, Id)
    order; ids compare on their 15 case-sensitive characters."""
    stamp, last_stamp = parse_datetime(raw.get("SystemModstamp")), parse_datetime(last[0])
    if stamp is None or last_stamp is None:
        return False
    if stamp != last_stamp:
        return stamp < last_stamp
    return str(raw.get("Id") or "")[:15] <= last[1][:15]


def _rows(payload: object) -> list[dict[str, Any]]:
    if not isinstance(payload, Mapping) or not isinstance(payload.get("records"), list):
        raise CrmUnavailable(CRM, "query: the answer has no records list")
    return [dict(row) for row in payload["records"]]


def _object_fields(extra: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    fields = {obj: tuple(names) for obj, names in vendor.OBJECT_FIELDS.items()}
    for name, more in (extra or {}).items():
        obj = vendor.SPEC.canonical_object(name)
        bad = [f for f in more if not _FIELD_NAME.fullmatch(f)]
        if bad:
            raise ValueError(f"not Salesforce field API names for {obj}: {', '.join(bad)}")
        fields[obj] = tuple(dict.fromkeys((*fields[obj], *more)))
    return fields


def _str_or_none(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _failure(exc: BaseException) -> Failure | None:
    """The classified failure behind a transport error, if it came from the table."""
    cause = exc.__cause__
    return cause.failure if isinstance(cause, TransportFailure) else None
