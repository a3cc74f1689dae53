"""HubSpot connector: the `Connector` port over hubspot-api-client, retried by our Transport."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from types import SimpleNamespace
from typing import Any

from hubspot import HubSpot

from connectors.hubspot import errors
from connectors.hubspot import settings as hs
from connectors.ratelimit import Bucket, window_for
from connectors.settings import Settings
from connectors.transport import Failure, Transport, TransportFailure, Verdict
from sync.enrich import PREFIX, company_key
from sync.normalize import normalize_domain
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

CRM = hs.CRM
TOKEN_SETTING = "HUBSPOT_ACCESS_TOKEN"

# (connect, read) seconds per request. The generated client sets none, so without these a
# stalled connection would hang a worker forever; a timeout is retried by the Transport.
DEFAULT_TIMEOUT = (5.0, 60.0)

# The client's urllib3 retries are turned off: they skip POST (search, batch) and would stack under
# our Transport for GETs (docs/connectors.md#errors-and-retries). `False` also makes urllib3 raise
# the underlying error, which the table classifies.
NO_RETRIES = False
DEFAULT_ATTEMPTS = 6  # tries per call in all, by the Transport

_CURSOR_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class HubSpotConnector:
    """HubSpot companies and contacts (docs/connectors.md#the-built-in-connectors).

    Every call goes through one Transport (the only retry layer) whose limiter is the account's
    burst bucket; searches also take a token from the 5-per-second search bucket. Responses
    that report an empty window pause the burst bucket, for every worker sharing it.
    """

    name = CRM
    spec = hs.SPEC
    # Owners one write call takes: a sweep carries writes across pages to fill each batch.
    write_batch_size = hs.BATCH_SIZE

    def __init__(self, access_token: str, *, base_url: str = "https://api.hubapi.com",
                 limiter: Bucket, search_limiter: Bucket,
                 transport_sleep: Callable[[float], None] | None = None,
                 properties: Mapping[str, Sequence[str]] | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 ca_cert: str | None = None, attempts: int = DEFAULT_ATTEMPTS,
                 closing: Sequence[object] = ()) -> None:
        if not access_token:
            raise CredentialsError(CRM, TOKEN_SETTING, "not set")
        self._secret = access_token  # only to scrub it from vendor messages; never shown
        self.base_url = base_url.rstrip("/")
        self._limiter = limiter
        self._search_limiter = search_limiter
        self._closing = list(closing)  # what close() closes besides the clients (our buckets)
        self._timeout = timeout
        self._raw: dict[str, Any] = {"_request_timeout": self._timeout, "_preload_content": False}
        self._properties = {obj: list(dict.fromkeys(props)) for obj, props in
                            {**hs.PROPERTIES, **(properties or {})}.items()}
        client = HubSpot(access_token=access_token, host=self.base_url, retry=NO_RETRIES,
                         ssl_ca_cert=ca_cert)
        self._apis = {
            "companies": _ObjectApis(client.crm.companies),
            "contacts": _ObjectApis(client.crm.contacts),
        }
        self._owners = client.crm.owners.owners_api
        # Outcomes for `suggest`: a record's deals (associations v4) and their stages.
        self._associations = client.crm.associations.v4.batch_api
        self._deals = client.crm.deals.batch_api
        self._clients = [api.api_client for apis in self._apis.values() for api in apis.all()]
        self._clients += [self._owners.api_client, self._associations.api_client,
                          self._deals.api_client]
        self._transport = Transport(crm=CRM, classify=self._classify, limiter=limiter,
                                    credentials_setting=TOKEN_SETTING, attempts=attempts,
                                    sleep=transport_sleep or time.sleep)

    def __repr__(self) -> str:
        return f"HubSpotConnector(base_url={self.base_url!r})"

    # --- the Connector port -----------------------------------------------------------------

    def list_records(self, object: str, *, since: datetime | None, cursor: str | None
                     ) -> Page:
        obj = hs.SPEC.canonical_object(object)
        state = _decode_cursor(cursor, obj)
        if state is None:
            state = ({"mode": "list"} if since is None else
                     {"mode": "search", "op": "GTE", "ts": _epoch_ms(since)})
        if state["mode"] == "list":
            return self._list_page(obj, state.get("after"))
        return self._search_page(obj, state)

    def read_records(self, object: str, ids: Sequence[str]) -> list[CrmRecord]:
        obj = hs.SPEC.canonical_object(object)
        return self._read(obj, ids, self._properties[obj])

    def converted(self, object: str, ids: Sequence[str]) -> set[str]:
        """Ids whose lifecycle stage reached customer (batch reads of that one property), or
        with an associated deal closed won (associations v4 batch read, then the deals')."""
        obj = hs.SPEC.canonical_object(object)
        found = self._read(obj, ids, [hs.LIFECYCLE_PROPERTY])
        won = {r.id for r in found
               if str(r.properties.get(hs.LIFECYCLE_PROPERTY) or "").strip().lower()
               in hs.CONVERTED_STAGES}
        return won | self._won_deals(obj, [r.id for r in found if r.id not in won])

    def _won_deals(self, obj: str, ids: Sequence[str]) -> set[str]:
        """The ids among `ids` with an associated deal that closed won."""
        deals_of: dict[str, set[str]] = {}
        for start in range(0, len(ids), hs.BATCH_SIZE):
            query = {"inputs": [{"id": i} for i in ids[start:start + hs.BATCH_SIZE]]}
            # 207: records with no deals come back in `errors`; they simply have none.
            response = self._call(f"{obj}.deals.associations", partial(
                self._associations.get_page_with_http_info, obj, hs.DEALS, query, **self._raw))
            for row in response.results or []:
                source = str(getattr(getattr(row, "from", None), "id", "") or "")
                for to in getattr(row, "to", None) or []:
                    deals_of.setdefault(str(to.to_object_id), set()).add(source)
        won: set[str] = set()
        deal_ids = sorted(deals_of)
        for start in range(0, len(deal_ids), hs.BATCH_SIZE):
            body: dict[str, Any] = {
                "inputs": [{"id": i} for i in deal_ids[start:start + hs.BATCH_SIZE]],
                    "properties": list(hs.DEAL_PROPERTIES), "propertiesWithHistory": []}
            response = self._call("deals.batch_read", partial(
                self._deals.read_with_http_info, body, archived=_flag(False), **self._raw))
            for deal in response.results or []:
                props = deal.properties or {}
                if str(props.get("hs_is_closed_won") or "").lower() == "true" \
                        or props.get("dealstage") == hs.DEAL_WON_STAGE:
                    won |= deals_of.get(str(deal.id), set())
        return won

    def read_owners(self, object: str, ids: Sequence[str]) -> dict[str, str | None]:
        obj = hs.SPEC.canonical_object(object)
        found = self._read(obj, ids, [hs.OWNER_PROPERTY])
        return {r.id: _owner(r.properties.get(hs.OWNER_PROPERTY)) for r in found}

    def write_owners(self, object: str, owners: Mapping[str, str]) -> list[WriteResult]:
        obj = hs.SPEC.canonical_object(object)
        items = list(owners.items())
        results: list[WriteResult] = []
        for start in range(0, len(items), hs.BATCH_SIZE):
            chunk = items[start:start + hs.BATCH_SIZE]
            try:
                results.extend(self._write_chunk(obj, chunk))
            except QuotaExhausted as exc:
                exc.landed = results + exc.landed  # the chunks before this one landed
                raise
            except _Unavailable as exc:
                # Retries are spent: HubSpot is down or throttling hard. This chunk and the
                # rest are reported retryable (the pipeline keeps them for the next run)
                # rather than burning the same retries on every remaining chunk.
                rest = items[start:]
                results.extend(WriteResult(i, ok=False, error=exc.detail, retryable=True)
                               for i, _ in rest)
                break
        return results

    def users(self) -> list[CrmUser]:
        found: dict[str, CrmUser] = {}
        for archived in (False, True):
            after: str | None = None
            while True:
                page = self._call("owners.list", partial(
                    self._owners.get_page_with_http_info, limit=hs.OWNERS_PAGE_SIZE,
                    after=after, archived=_flag(archived), **self._raw))
                for owner in page.results or []:
                    user = _user(owner, archived)
                    found.setdefault(user.id, user)
                after = _next_after(page)
                if after is None:
                    break
        return list(found.values())

    def accounts_by_domain(self, domains: Sequence[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(d for d in map(normalize_domain, domains) if d))
        owners: dict[str, str] = {}
        for start in range(0, len(wanted), hs.SEARCH_IN_VALUES):
            values = wanted[start:start + hs.SEARCH_IN_VALUES]
            # HubSpot matches IN values for string properties in lower case only; normalized
            # domains are. Oldest company first: when several share a domain, the first one
            # with an owner wins, the same on every run.
            groups = [[{"propertyName": hs.DOMAIN_PROPERTY, "operator": "IN",
                        "values": values}]]
            for page in self._companies(groups, [hs.DOMAIN_PROPERTY, hs.OWNER_PROPERTY]):
                for company in page.results or []:
                    props = company.properties or {}
                    domain = normalize_domain(props.get(hs.DOMAIN_PROPERTY))
                    owner = _owner(props.get(hs.OWNER_PROPERTY))
                    if domain in values and owner is not None:
                        owners.setdefault(domain, owner)
        return owners

    def _companies(self, groups: Sequence[Sequence[dict[str, Any]]], properties: list[str]
                   ) -> Iterator[Any]:
        """The pages of one company search (filter groups OR, filters in a group AND), oldest
        company first (the same answer, in the same order, on every run), paged with `after`
        up to the search's SEARCH_RESULT_CAP."""
        apis = self._apis["companies"]
        after: str | None = None
        while True:
            body: dict[str, Any] = {
                "filterGroups": [{"filters": list(g)} for g in groups],
                "sorts": [{"propertyName": hs.ID_PROPERTY, "direction": "ASCENDING"}],
                "properties": properties,
                "limit": hs.SEARCH_PAGE_SIZE,
            }
            if after is not None:
                body["after"] = after
            page = self._search(apis, "companies", body)
            yield page
            after = _next_after(page)
            if after is None or int(after) >= hs.SEARCH_RESULT_CAP:
                return

    def accounts_by_name(self, names: Sequence[str]) -> list[tuple[str, str]]:
        """(name, domain) of the companies with a name word starting like a word of one of
        `names` (its first three letters, legal forms dropped; the first NAME_WORDS_SEARCHED
        words of a name): what `company_match` may match leads to
        (docs/routing-file.md#company_match). The domain is the company's `domain`, else its
        `website`'s; companies with neither are left out (nothing to match to).

        One search per NAME_PREFIXES_PER_SEARCH prefixes: `CONTAINS_TOKEN acm*` matches a
        name with a word starting `acm`, case-insensitively; each prefix is its own filter
        group, because groups OR and the filters within one group AND. A word start shared by
        more than NAME_SEARCH_MAX_ACCOUNTS companies (`gro` in a portal of `… Group`s) is not
        paged through: the matcher passes over such a start anyway (sync/enrich.py
        MAX_TOKEN_ACCOUNTS), and paging it would spend the 5-a-second search budget on every
        batch. A name whose every word start is that common is searched by its whole words
        instead (all of them: one filter group of CONTAINS_TOKEN filters), so the companies
        named alike are still found."""
        # company_key words are letters and digits only: no `*` or other search syntax.
        keys = [[w for w in company_key(name).split()[:hs.NAME_WORDS_SEARCHED]
                 if len(w) >= PREFIX] for name in names]
        prefixes = sorted({w[:PREFIX] for words in keys for w in words})
        found: dict[tuple[str, str], None] = {}
        common: set[str] = set()
        for start in range(0, len(prefixes), hs.NAME_PREFIXES_PER_SEARCH):
            chunk = prefixes[start:start + hs.NAME_PREFIXES_PER_SEARCH]
            if self._companies_named([[_name_token(f"{p}*")] for p in chunk], found):
                continue
            # Too many for the chunk: each prefix alone tells which of them is that common.
            for prefix in chunk if len(chunk) > 1 else ():
                if not self._companies_named([[_name_token(f"{prefix}*")]], found):
                    common.add(prefix)
            if len(chunk) == 1:
                common.add(chunk[0])
        # `and` is `&` folded (company_key): HubSpot has no such word in `Smith & Sons`.
        whole = sorted({tuple(dict.fromkeys(w for w in words if w != "and"))
                        for words in keys
                        if words and all(w[:PREFIX] in common for w in words)} - {()})
        groups: list[list[dict[str, str]]] = []
        for words in whole:
            group = [_name_token(w) for w in words]
            if len(groups) == hs.SEARCH_FILTER_GROUPS or \
                    sum(map(len, groups)) + len(group) > hs.SEARCH_FILTERS_TOTAL:
                self._companies_named(groups, found)  # too many even so: nothing to match
                groups = []
            groups.append(group)
        if groups:
            self._companies_named(groups, found)
        return list(found)

    def _companies_named(self, groups: Sequence[Sequence[dict[str, str]]],
                         found: dict[tuple[str, str], None]) -> bool:
        """One name search (filter groups OR, filters in a group AND), paged with `after`, its
        (name, domain) pairs added to `found`; False, `found` untouched, when it matches more
        than NAME_SEARCH_MAX_ACCOUNTS companies (told by the first page's `total`)."""
        cap = hs.NAME_SEARCH_MAX_ACCOUNTS
        pairs: dict[tuple[str, str], None] = {}
        seen = 0
        for page in self._companies(
                groups, [hs.NAME_PROPERTY, hs.DOMAIN_PROPERTY, hs.WEBSITE_PROPERTY]):
            results = page.results or []
            total = getattr(page, "total", None)
            seen += len(results)
            if (isinstance(total, int) and total > cap) or seen > cap:
                return False
            for company in results:
                props = company.properties or {}
                name = _owner(props.get(hs.NAME_PROPERTY))  # stripped text or None
                domain = normalize_domain(props.get(hs.DOMAIN_PROPERTY)) or \
                    normalize_domain(props.get(hs.WEBSITE_PROPERTY))
                if name and domain:
                    pairs[(name, domain)] = None
        found.update(pairs)
        return True

    def stats(self) -> CallStats:
        return self._transport.stats()

    def close(self) -> None:
        for client in self._clients:
            client.close()
            client.rest_client.pool_manager.clear()
        for owned in self._closing:
            closer = getattr(owned, "close", None)
            if closer is not None:
                closer()

    def __enter__(self) -> HubSpotConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- listing ----------------------------------------------------------------------------

    def _list_page(self, obj: str, after: str | None) -> Page:
        apis = self._apis[obj]
        page = self._call(f"{obj}.list", lambda: apis.basic.get_page_with_http_info(
            limit=hs.LIST_PAGE_SIZE, after=after, properties=self._properties[obj],
            archived=_flag(False), **self._raw))
        records = [self._record(obj, o) for o in page.results or []]
        nxt = _next_after(page)
        return Page(records, None if nxt is None else _encode_cursor(
            {"mode": "list", "obj": obj, "after": nxt}))

    def _search_page(self, obj: str, state: dict[str, Any]) -> Page:
        """One page of records modified since a watermark, oldest first.

        Every page is a fresh query from the last modified date seen (keyset paging), never a
        deeper `after` offset: a query stops at 10,000 results, and offsets shift under
        records modified meanwhile (one that moves to the end pulls the rest back a place,
        and the record at the page boundary would be skipped). HubSpot sorts on one property
        only, so records at the page's last instant are held back and read again from the
        next query; a page that is entirely one instant is paged by `hs_object_id` instead.
        """
        mod = hs.MODIFIED_PROPERTY[obj]
        apis = self._apis[obj]
        while True:
            if state["mode"] == "tie":
                filters = [{"propertyName": mod, "operator": "EQ", "value": str(state["ts"])}]
                if state.get("id") is not None:
                    filters.append({"propertyName": hs.ID_PROPERTY, "operator": "GT",
                                    "value": str(state["id"])})
                sort = hs.ID_PROPERTY
            else:
                filters = [{"propertyName": mod, "operator": state["op"],
                            "value": str(state["ts"])}]
                sort = mod
            body = {
                "filterGroups": [{"filters": filters}],
                "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
                "properties": self._properties[obj],
                "limit": hs.SEARCH_PAGE_SIZE,
            }
            page = self._search(apis, obj, body)
            records = [self._record(obj, o) for o in page.results or []]
            full = len(records) >= hs.SEARCH_PAGE_SIZE or _next_after(page) is not None
            if state["mode"] == "tie":
                if full:
                    nxt = {"mode": "tie", "ts": state["ts"], "id": records[-1].id}
                else:
                    nxt = {"mode": "search", "op": "GT", "ts": state["ts"]}
                return Page(records, _encode_cursor({**nxt, "obj": obj}))
            # Search answers how many records the query matches (the list endpoint does not);
            # a tie query covers one instant only, so only the watermark query's counts.
            total = page.total if isinstance(getattr(page, "total", None), int) else None
            if not full:
                return Page(records, None, total)
            stamps = [_modified_ms(r) for r in records]
            last = max((s for s in stamps if s is not None), default=None)
            if last is None:
                raise CrmUnavailable(CRM, f"{obj} search: results carry no {mod}")
            if all(s == last for s in stamps):
                # A whole page at one instant: nothing can be held back. Page through that
                # instant by id, then go on after it.
                state = {"mode": "tie", "ts": last, "id": None}
                continue
            done = [r for r, s in zip(records, stamps, strict=True) if s is None or s < last]
            return Page(done, _encode_cursor({"mode": "search", "obj": obj, "op": "GTE",
                                              "ts": last}), total)

    # --- reads and writes -------------------------------------------------------------------

    def _read(self, obj: str, ids: Sequence[str], properties: Sequence[str]
              ) -> list[CrmRecord]:
        unique = list(dict.fromkeys(str(i) for i in ids))
        apis = self._apis[obj]
        found: dict[str, CrmRecord] = {}
        for start in range(0, len(unique), hs.BATCH_SIZE):
            chunk = unique[start:start + hs.BATCH_SIZE]
            # `propertiesWithHistory` is required by HubSpot's schema (BatchReadInput...);
            # empty asks for no history, which we never use.
            body = {"inputs": [{"id": i} for i in chunk], "properties": list(properties),
                    "propertiesWithHistory": []}
            # 207: some ids do not exist (OBJECT_NOT_FOUND); they are simply absent.
            response = self._call(f"{obj}.batch_read", partial(
                apis.batch.read_with_http_info, body, archived=_flag(False), **self._raw))
            for o in response.results or []:
                record = self._record(obj, o)
                found[record.id] = record
        return [found[i] for i in unique if i in found]

    def _write_chunk(self, obj: str, chunk: list[tuple[str, str]]) -> list[WriteResult]:
        apis = self._apis[obj]
        body = {"inputs": [{"id": str(i), "properties": {hs.OWNER_PROPERTY: str(owner)}}
                           for i, owner in chunk]}
        try:
            response = self._call(f"{obj}.batch_update", lambda: apis.batch.
                                  update_with_http_info(body, **self._raw))
        except CrmUnavailable as exc:
            failure = _failure_of(exc)
            if failure is None or failure.verdict == Verdict.RETRY:
                raise _Unavailable(str(exc)) from exc
            if failure.status == "400" and len(chunk) > 1:
                # HubSpot rejects the whole batch when one input is invalid (e.g. an owner id
                # it does not know). Halve until the offending records stand alone, so the
                # rest are written: a partial failure never fails the batch.
                half = len(chunk) // 2
                return self._write_chunk(obj, chunk[:half]) + \
                    self._write_chunk(obj, chunk[half:])
            return [WriteResult(i, ok=False, error=failure.detail) for i, _ in chunk]
        return _write_results(chunk, response)

    # --- plumbing ---------------------------------------------------------------------------

    def _search(self, apis: _ObjectApis, obj: str, body: dict[str, Any]) -> Any:
        def call() -> Any:
            # Searches have their own per-account limit besides the burst one.
            self._search_limiter.acquire()
            return apis.search.do_search_with_http_info(body, **self._raw)

        return self._call(f"{obj}.search", call)

    def _call(self, endpoint: str, fn: Callable[[], Any]) -> Any:
        def attempt() -> Any:
            # Raw responses (`_preload_content=False`): the generated client's model
            # deserialization parses every timestamp with dateutil and cost ~70% of a sweep's
            # CPU; error statuses still raise its ApiException before we get here.
            response = fn()
            # No pause on `X-HubSpot-RateLimit-Remaining: 0` from a success: the rolling-window
            # limiter already paces our own calls, and pausing a whole interval each time the
            # window fills cost a third of a rate-limited sweep. A 429 (other apps spending
            # the portal's budget) still pauses every worker, in `_classify`.
            return _namespace(json.loads(response.data or b"null"))

        return self._transport.call(endpoint, attempt)

    def _observe(self, headers: object) -> None:
        """A 429 reporting no calls left in its window pauses the shared limiter, so other
        workers stop too instead of each collecting its own 429."""
        seconds = errors.exhausted_for(headers)
        if seconds is not None:
            self._limiter.pause(seconds)

    def _classify(self, exc: BaseException) -> Failure | None:
        failure = errors.classify(exc)
        if failure is None:
            return None
        self._observe(getattr(exc, "headers", None))
        if failure.status == "429" and failure.verdict == Verdict.RETRY:
            self._limiter.pause(failure.wait or hs.BURST_INTERVAL_SECONDS)
        if self._secret and self._secret in failure.detail:
            failure = replace(failure, detail=failure.detail.replace(self._secret, "***"))
        self._scrub(exc)
        return failure

    def _scrub(self, exc: BaseException) -> None:
        """The vendor's exception stays chained under ours (tracebacks show it): never let a
        body or reason that echoes the token reach a log through it."""
        for name in ("body", "reason"):
            value = getattr(exc, name, None)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, str) and self._secret in value:
                with contextlib.suppress(AttributeError):
                    setattr(exc, name, value.replace(self._secret, "***"))

    def _record(self, obj: str, o: Any) -> CrmRecord:
        props = dict(o.properties or {})
        created = _as_utc(getattr(o, "created_at", None)) or _parse_time(
            props.get(hs.CREATED_PROPERTY))
        modified = _parse_time(props.get(hs.MODIFIED_PROPERTY[obj])) or _parse_time(
            props.get("hs_lastmodifieddate")) or _as_utc(getattr(o, "updated_at", None))
        return CrmRecord(id=str(o.id), object=obj, properties=props, created_at=created,
                         modified_at=modified)


class _ObjectApis:
    """The generated APIs for one object, built once (each builds its own connection pool)."""

    def __init__(self, discovery: Any) -> None:
        self.basic = discovery.basic_api
        self.batch = discovery.batch_api
        self.search = discovery.search_api

    def all(self) -> Iterator[Any]:
        yield from (self.basic, self.batch, self.search)


class _Unavailable(Exception):
    """Retries exhausted while writing: report the rest retryable instead of raising."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


def from_settings(settings: Settings, *, limiter: Bucket | None = None,
                  transport_sleep: Callable[[float], None] | None = None,
                  extra_fields: Mapping[str, Sequence[str]] | None = None,
                  attempts: int | None = None) -> HubSpotConnector:
    """The connector the environment describes (docs/operations.md#settings). `attempts`:
    tries per call in all (default 6; 1 for a caller that cannot wait, as POST /route).

    Buckets are per HubSpot account: keyed by a digest of the base URL and token (the portal
    id would need a call), shared through Redis when `ACCOUNT_ROUTER_REDIS_URL` is set.
    """
    secret = settings.hubspot_access_token
    token = secret.get_secret_value() if secret is not None else ""
    if not token.strip():
        raise CredentialsError(CRM, TOKEN_SETTING, "not set")
    token = token.strip()
    account = hashlib.sha256(f"{settings.hubspot_base_url}\n{token}".encode()).hexdigest()[:16]
    given = limiter is not None
    if limiter is None:
        # HubSpot's limits are rolling windows (TEN_SECONDLY_ROLLING, SECONDLY): a log of
        # recent calls spends exactly the budget, where a refilling bucket over- or undershoots.
        limiter = window_for(settings, CRM, f"{account}:burst", settings.hubspot_calls_per_10s,
                             hs.BURST_INTERVAL_SECONDS)
    search_limiter = window_for(settings, CRM, f"{account}:search",
                                hs.SEARCH_CALLS_PER_SECOND, 1.0)
    # TLS trust follows the usual variables (docs/operations.md#tls); None means the system store.
    ca_cert = settings.requests_ca_bundle or settings.ssl_cert_file or None
    closing = [search_limiter] if given else [limiter, search_limiter]
    # ACCOUNT_ROUTER_CRM_TIMEOUT_SECONDS replaces the read timeout only: connecting is quick
    # or not at all, whatever the call.
    read = settings.crm_timeout_seconds
    timeout = DEFAULT_TIMEOUT if read is None else (DEFAULT_TIMEOUT[0], read)
    return HubSpotConnector(token, base_url=settings.hubspot_base_url, limiter=limiter,
                            search_limiter=search_limiter, transport_sleep=transport_sleep,
                            timeout=timeout, ca_cert=ca_cert, closing=closing,
                            attempts=DEFAULT_ATTEMPTS if attempts is None else attempts,
                            properties={
                                obj: [*props, *(extra_fields or {}).get(obj, ())]
                                for obj, props in hs.PROPERTIES.items()})


# --- helpers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Error:
    message: str
    ids: tuple[str, ...]


def _write_results(chunk: list[tuple[str, str]], response: Any) -> list[WriteResult]:
    """Per-record results of a batch update; a 207 lists errors with the ids they concern."""
    written = {str(o.id) for o in response.results or []}
    by_id: dict[str, str] = {}
    loose: list[str] = []  # errors that name no ids
    for error in getattr(response, "errors", None) or []:
        err = _error(error)
        for i in err.ids:
            by_id.setdefault(i, err.message)
        if not err.ids:
            loose.append(err.message)
    results = []
    for i, _ in chunk:
        if i in by_id:
            results.append(WriteResult(i, ok=False, error=by_id[i]))
        elif i in written:
            results.append(WriteResult(i, ok=True))
        elif loose:
            results.append(WriteResult(i, ok=False, error="; ".join(loose)))
        else:
            # Neither written nor failed in the answer: unknown, and safe to write again.
            results.append(WriteResult(i, ok=False, retryable=True,
                                       error="missing from HubSpot's batch response"))
    return results


def _error(error: Any) -> _Error:
    category = getattr(error, "category", None) or ""
    message = getattr(error, "message", None) or "error"
    context = getattr(error, "context", None) or {}
    ids: list[str] = []
    for key in ("ids", "id"):
        value = context.get(key) if isinstance(context, Mapping) else None
        if isinstance(value, list | tuple):
            ids.extend(str(v) for v in value)
        elif value is not None:
            ids.append(str(value))
    text = f"{category}: {message}" if category else str(message)
    return _Error(" ".join(text.split())[:300], tuple(ids))


def _failure_of(exc: BaseException) -> Failure | None:
    cause = exc.__cause__
    return cause.failure if isinstance(cause, TransportFailure) else None


def _user(owner: Any, archived: bool) -> CrmUser:
    name = " ".join(p for p in (owner.first_name, owner.last_name) if p) or None
    kind = (owner.type or "PERSON").upper()
    return CrmUser(id=str(owner.id), active=not (archived or bool(owner.archived)),
                   person=kind != "QUEUE", email=owner.email or None, name=name)


def _name_token(value: str) -> dict[str, str]:
    """A name search filter: a word of the company name is `value` (`acm*`: starts `acm`)."""
    return {"propertyName": hs.NAME_PROPERTY, "operator": "CONTAINS_TOKEN", "value": value}


def _flag(value: bool) -> str:
    """A query-string boolean as HubSpot documents it (the client would send `False`)."""
    return "true" if value else "false"


def _owner(value: object) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def _next_after(page: Any) -> str | None:
    paging = getattr(page, "paging", None)
    nxt = getattr(paging, "next", None) if paging is not None else None
    after = getattr(nxt, "after", None) if nxt is not None else None
    return None if after in (None, "") else str(after)


def _encode_cursor(state: Mapping[str, Any]) -> str:
    return json.dumps({"v": _CURSOR_VERSION, **state}, separators=(",", ":"), sort_keys=True)


def _decode_cursor(cursor: str | None, obj: str) -> dict[str, Any] | None:
    if cursor is None:
        return None
    try:
        state = json.loads(cursor)
    except ValueError:
        state = None
    if not isinstance(state, dict) or state.get("v") != _CURSOR_VERSION or \
            state.get("mode") not in ("list", "search", "tie"):
        raise ValueError(f"not a HubSpot {obj} cursor: {cursor[:80]!r}")
    if state.get("obj") != obj:
        raise ValueError(f"cursor belongs to {state.get('obj')!r}, not {obj!r}")
    return state


_DIGITS = re.compile(r"-?\d+")


def _parse_time(value: object) -> datetime | None:
    """HubSpot datetimes: ISO 8601 (`2024-05-01T12:00:00.123Z`) or epoch milliseconds."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return _as_utc(value)
    text = str(value).strip()
    if _DIGITS.fullmatch(text):
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    try:
        return _as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return None


def _as_utc(value: object) -> datetime | None:
    if isinstance(value, str):
        return _parse_time(value)
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSON members whose values are free-form maps (property names are data, not attributes).
_MAPS = frozenset({"properties", "context", "propertiesWithHistory", "propertiesWithTimestamps"})
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _namespace(value: Any, key: str | None = None) -> Any:
    """JSON as attribute objects shaped like the generated models (snake_case names)."""
    if isinstance(value, dict):
        if key in _MAPS:
            return value
        return SimpleNamespace(**{_CAMEL.sub("_", k).lower(): _namespace(v, k)
                                  for k, v in value.items()})
    if isinstance(value, list):
        return [_namespace(v, key) for v in value]
    return value


def _epoch_ms(value: datetime) -> int:
    """Whole epoch milliseconds, exactly (HubSpot filters datetimes in ms)."""
    if value.tzinfo is None:
        raise ValueError("since must be timezone-aware")
    return (value - _EPOCH) // timedelta(milliseconds=1)


def _modified_ms(record: CrmRecord) -> int | None:
    return None if record.modified_at is None else _epoch_ms(record.modified_at)
