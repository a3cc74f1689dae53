"""Enrichment before the rules: pure steps that fill in or canonicalize a record's fields.

See docs/routing-file.md#enrichment. A step is a function of the record and local data (the
accounts known to the run), never of the network or the clock: the same record and data give
the same result on every path (pipeline, route-file and its workers, explain, simulate,
overlaps). Steps are found through the `account_router.enrichers` entry-point group; each entry
point names a factory that takes the step's options from the routing file and returns the step.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

import pycountry
import tldextract

from config.display import shorten
from config.routing import BUILTIN_ENRICHERS, ENRICHER_GROUP, ConfigError, EnrichStep
from sync.models import Record, TraceStep
from sync.normalize import domain_keys, normalize_domain

__all__ = [
    "ISO_STATE",
    "SKIPPED",
    "VANITY_TLDS",
    "AccountIndex",
    "EnrichData",
    "Enricher",
    "Enrichment",
    "OptionError",
    "company_key",
    "company_match",
    "compile_enrichment",
    "phone_country",
    "state_codes",
    "state_operand_keys",
    "tld_country",
]

# The trace step's result for a step that changed the record, for a plug-in that failed, and
# for a step whose accounts could not be read (POST /route when the CRM does not answer).
ENRICHED = "enriched"
FAILED = "failed"
SKIPPED = "skipped"


class OptionError(ValueError):
    """A step's options are wrong: `key` is the option (empty: the options as a whole)."""

    def __init__(self, key: str, expected: str, found: Any) -> None:
        super().__init__(f"{key}: expected {expected}")
        self.key = key
        self.expected = expected
        self.found = found


@dataclass(frozen=True)
class AccountIndex:
    """The accounts known to a run, by folded company name, for `company_match`.

    `domains` holds every known account domain (also those found by domain only): a lead whose
    domain is one of them already has its account and is never re-matched by name."""

    names: Mapping[str, tuple[str, str] | None]  # company key -> (name as written, domain);
    # None: two accounts with different domains share the key (ambiguous, never matched)
    domains: frozenset[str]
    keys: tuple[str, ...]  # sorted: rapidfuzz's first best is then the same on every run
    by_token: Mapping[str, tuple[int, ...]]  # a word's first letters -> indexes into `keys`

    @classmethod
    def build(cls, accounts: Iterable[tuple[str, str]],
              known_domains: Iterable[str] = ()) -> AccountIndex:
        """From (company name, domain) pairs; names or domains that do not normalize are
        left out. `known_domains`: further account domains (found by domain lookups)."""
        names: dict[str, tuple[str, str] | None] = {}
        domains = {d for d in (normalize_domain(x) for x in known_domains) if d}
        for name, raw_domain in accounts:
            domain = normalize_domain(raw_domain)
            if domain is None:
                continue
            domains.add(domain)
            key = company_key(name)
            if not key:
                continue
            if key in names:
                known = names[key]
                if known is not None and known[1] != domain:
                    names[key] = None
                continue
            names[key] = (" ".join(str(name).split()), domain)
        keys = tuple(sorted(names))
        by_token: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            for token in {w[:PREFIX] for w in key.split()}:
                by_token.setdefault(token, []).append(i)
        return cls(names, frozenset(domains), keys,
                   {t: tuple(v) for t, v in by_token.items()})

    def match(self, key: str, threshold: float) -> tuple[str, str, float] | None:
        """The account whose company key is most like `key` (token-sort ratio, 0-100) at or
        above `threshold`: (name as written, domain, score); None when none or ambiguous."""
        exact = self.names.get(key, _MISSING)
        if exact is not _MISSING:
            return None if exact is None else (exact[0], exact[1], 100.0)
        # Candidates share a word's first letters with `key` (a name with none in common is
        # no match at any sensible threshold; a typo later in a word still is); letters common
        # to very many accounts narrow nothing and are passed over.
        candidates: set[int] = set()
        for token in {w[:PREFIX] for w in key.split()}:
            found = self.by_token.get(token, ())
            if len(found) <= MAX_TOKEN_ACCOUNTS:
                candidates.update(found)
        if not candidates:
            return None
        # Imported here: a process that never matches names (most) never loads rapidfuzz.
        from rapidfuzz import fuzz, process

        choices = [self.keys[i] for i in sorted(candidates)]
        best = process.extractOne(key, choices, scorer=fuzz.token_sort_ratio,
                                  score_cutoff=threshold)
        if best is None:
            return None
        hit = self.names[best[0]]
        return None if hit is None else (hit[0], hit[1], float(best[1]))


_MISSING: Any = object()
MAX_TOKEN_ACCOUNTS = 2_000  # accounts sharing a word start past which it selects nothing
PREFIX = 3  # letters of a word that select candidate accounts
MAX_NAME_CHARS = 256  # of a company name compared (a 5,000-character name is cut here)


@dataclass(frozen=True)
class EnrichData:
    """Local data the steps may read: the accounts known to the run (None: none known)."""

    accounts: AccountIndex | None = None


class Enricher(Protocol):
    """One step: a new record and what it did (for the trace), or None when nothing changed.
    It may set `needs_accounts = True` to be given the accounts known to the run."""

    def __call__(self, record: Record, data: EnrichData) -> tuple[Record, str] | None: ...


EnricherFactory = Callable[[Mapping[str, Any]], Enricher]


@dataclass(frozen=True)
class Enrichment:
    """A routing file's `enrich:` steps, compiled: run in order, each seeing the last's record."""

    steps: tuple[tuple[str, Enricher], ...]
    names: tuple[str, ...] = field(default=())

    @property
    def needs_accounts(self) -> bool:
        return any(getattr(step, "needs_accounts", False) for _, step in self.steps)

    def run(self, record: Record, data: EnrichData) -> tuple[Record, tuple[TraceStep, ...]]:
        """The record after every step, and a trace step for each step that changed it."""
        notes: list[TraceStep] = []
        for name, step in self.steps:
            try:
                out = step(record, data)
            except Exception as exc:  # noqa: BLE001 - a plug-in's bug must not stop routing
                # The record goes on unchanged and the trace says so; the built-ins never get
                # here (their tests feed them hostile input).
                notes.append(TraceStep(f"enrich {name}", FAILED,
                                       shorten(f"{type(exc).__name__}: {exc}")))
                continue
            if out is not None:
                record, detail = out
                notes.append(TraceStep(f"enrich {name}", ENRICHED, detail))
        return record, tuple(notes)

    def run_all(self, records: Sequence[Record], data: EnrichData
                ) -> tuple[list[Record], dict[str, tuple[TraceStep, ...]]]:
        """`run` for each record: the records, and the trace steps by record id."""
        out: list[Record] = []
        notes: dict[str, tuple[TraceStep, ...]] = {}
        for record in records:
            record, steps = self.run(record, data)
            out.append(record)
            if steps:
                notes[record.id] = steps
        return out, notes


def _registered() -> dict[str, Any]:
    """Entry points of the group by name; the built-ins also without them (an install whose
    metadata predates the group still routes with them)."""
    found: dict[str, Any] = {name: _BUILTIN[name] for name in BUILTIN_ENRICHERS}
    for ep in entry_points(group=ENRICHER_GROUP):
        found[ep.name] = ep
    return found


def compile_enrichment(steps: Sequence[EnrichStep], source: str | Path | None
                       ) -> Enrichment | None:
    """The routing file's validated `enrich:` steps as an `Enrichment` (None: no steps).
    Bad options raise ConfigError naming `enrich[i].NAME.OPTION`."""
    if not steps:
        return None
    registered = _registered()
    compiled: list[tuple[str, Enricher]] = []
    for i, (name, options) in enumerate(steps):
        path = f"enrich[{i}]"
        target = registered.get(name)
        if target is None:  # the loader checked the names; a plug-in uninstalled since
            raise ConfigError(source, path, "a registered enricher", name)
        try:
            factory = target.load() if hasattr(target, "load") else target
        except Exception as exc:  # noqa: BLE001 - a broken plug-in is a config problem
            raise ConfigError(source, path, "an enricher that loads").with_found_text(
                shorten(f"{name}: {type(exc).__name__}: {exc}")) from None
        try:
            compiled.append((name, factory(options)))
        except OptionError as exc:
            where = f"{path}.{name}.{exc.key}" if exc.key else f"{path}.{name}"
            raise ConfigError(source, where, exc.expected, exc.found) from None
        except Exception as exc:  # noqa: BLE001 - a plug-in's factory failing another way
            raise ConfigError(source, f"{path}.{name}", "options the enricher accepts"
                              ).with_found_text(shorten(f"{type(exc).__name__}: {exc}")
                                                ) from None
    return Enrichment(tuple(compiled), tuple(name for name, _ in steps))


def _no_options(name: str, options: Mapping[str, Any]) -> None:
    for key in options:
        raise OptionError(str(key), f"no options ({name} takes none)", key)


def _set_country(record: Record, code: str) -> Record:
    raw = dict(record.raw)
    folded = dict(record.folded)
    raw["country"] = code
    folded["country"] = code.lower()
    return replace(record, country=code, raw=raw, folded=folded)


def _plain(text: str) -> str:
    """Case, accents, dots and whitespace folded: `Québec` = `quebec`, `N.S.W.` = `nsw`."""
    decomposed = unicodedata.normalize("NFKD", text)
    letters = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(letters.casefold().replace(".", "").split())


# --- state_codes --------------------------------------------------------------------------

# Where the canonical subdivision code of a record's state lives (`us-ca`): a key no rule can
# name, read by the conditions on `state` when the file enriches with `state_codes`.
ISO_STATE = "iso:state"
# Without a country, a state is looked up in these countries' subdivisions, in this order:
# `CA` is California before anything Canadian, `WA` Washington before Western Australia.
DEFAULT_STATE_COUNTRIES = ("US", "CA", "AU")
MAX_STATE_CHARS = 100
_FULL_CODE = re.compile(r"([a-z]{2})-[a-z0-9]{1,3}")


@lru_cache(maxsize=1)
def _by_country() -> Mapping[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for sub in pycountry.subdivisions:
        grouped.setdefault(str(sub.country_code), []).append(sub)
    return grouped


@lru_cache(maxsize=512)
def _subdivisions(country: str) -> Mapping[str, tuple[str, str]]:
    """One country's subdivisions: folded short code and folded name -> (ISO code, name)."""
    subs = sorted(_by_country().get(country, ()), key=lambda s: str(s.code))
    out: dict[str, tuple[str, str]] = {}
    for sub in subs:  # codes first: a code never loses to another subdivision's name
        out.setdefault(_plain(sub.code.split("-", 1)[1]), (sub.code, sub.name))
    for sub in subs:
        out.setdefault(_plain(sub.name), (sub.code, sub.name))
    return out


def _lookup_state(text: str, countries: Sequence[str]) -> tuple[str, str] | None:
    key = _plain(text)
    if not key:
        return None
    full = _FULL_CODE.fullmatch(key)
    if full is not None and full.group(1).upper() in countries:
        hit = _subdivisions(full.group(1).upper()).get(key.split("-", 1)[1])
        if hit is not None:
            return hit
    for country in countries:
        hit = _subdivisions(country).get(key)
        if hit is not None:
            return hit
    return None


def state_operand_keys(value: object) -> frozenset[str]:
    """What a rule's `state` value matches once states are enriched: the canonical codes it
    may mean in the default countries (`WA`: Washington and Western Australia; `California`:
    US-CA; `US-CA` itself), lower case. Empty when it names no subdivision there."""
    text = " ".join(str(value).split())
    if not text or len(text) > MAX_STATE_CHARS:
        return frozenset()
    key = _plain(text)
    full = _FULL_CODE.fullmatch(key)
    if full is not None:
        hit = _subdivisions(full.group(1).upper()).get(key.split("-", 1)[1])
        if hit is not None:
            return frozenset({hit[0].lower()})
    return frozenset(hit[0].lower() for country in DEFAULT_STATE_COUNTRIES
                     if (hit := _subdivisions(country).get(key)) is not None)


class _StateCodes:
    def __call__(self, record: Record, data: EnrichData) -> tuple[Record, str] | None:
        text = record.raw.get("state")
        if text is None or len(text) > MAX_STATE_CHARS:
            return None
        # The record's country picks the subdivision set: a Canadian record's `CA` is no
        # province (and not California either), so it stays as written.
        countries = (record.country,) if record.country else DEFAULT_STATE_COUNTRIES
        hit = _lookup_state(text, countries)
        if hit is None:
            return None
        code, name = hit
        folded = dict(record.folded)
        folded[ISO_STATE] = code.lower()
        return replace(record, folded=folded), f"state = {code} {name} from {shorten(text)}"


def state_codes(options: Mapping[str, Any]) -> Enricher:
    """`state_codes`: state and province names and codes compare as one (docs)."""
    _no_options("state_codes", options)
    return _StateCodes()


# --- phone_country ------------------------------------------------------------------------

MAX_PHONE_CHARS = 64  # longer text is no phone number (phonenumbers itself stops at 250)


@lru_cache(maxsize=65_536)
def _phone_region(text: str) -> tuple[str, str] | None:
    """(ISO country, a short form for the trace) of an international number, else None."""
    # Imported here: phonenumbers' tables are loaded only by a file that uses the step.
    import phonenumbers

    number_text = text.strip()
    if number_text.startswith("00"):
        number_text = "+" + number_text[2:]  # the international prefix most of the world dials
    if not number_text.startswith("+"):
        return None  # a national number says nothing of its country without one assumed
    try:
        number = phonenumbers.parse(number_text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    region = phonenumbers.region_code_for_number(number)
    if not region or not region.isalpha() or len(region) != 2:
        return None  # "001": a non-geographic number (+800, satellite)
    national = phonenumbers.national_significant_number(number)
    # Enough to see why, not the whole number: the trace lands in the audit history.
    return region, f"+{number.country_code} {national[:2]}…"


class _PhoneCountry:
    def __call__(self, record: Record, data: EnrichData) -> tuple[Record, str] | None:
        if record.country is not None:
            return None
        text = record.raw.get("phone")
        if text is None or len(text) > MAX_PHONE_CHARS:
            return None
        found = _phone_region(text)
        if found is None:
            return None
        region, shown = found
        return _set_country(record, region), f"country = {region} from {shown}"


def phone_country(options: Mapping[str, Any]) -> Enricher:
    """`phone_country`: the country of an international phone number, when none is set."""
    _no_options("phone_country", options)
    return _PhoneCountry()


# --- tld_country --------------------------------------------------------------------------

# Country-code TLDs sold and used worldwide as generic names, which say nothing of where a
# company is: a `.io` startup is rarely in the British Indian Ocean Territory. Only the bare
# TLD: under a country's own second level (`acme.com.co`, `acme.co.me`) they are countries.
VANITY_TLDS = frozenset({
    "ac", "ai", "am", "bz", "cc", "co", "cx", "fm", "gg", "gl", "io", "la", "ly", "md", "me",
    "ms", "nu", "sh", "so", "st", "tk", "to", "tv", "vc", "ws",
})
# ccTLDs that are not the ISO code of their country.
_TLD_COUNTRY = {"uk": "GB"}
_ALPHA_2 = frozenset(str(country.alpha_2) for country in pycountry.countries)
# No suffix list URLs: tldextract reads the snapshot bundled with it, never the network.
_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@lru_cache(maxsize=65_536)
def _tld_country(domain: str) -> tuple[str, str] | None:
    """(ISO country, the public suffix) of a normalized domain's country-code TLD."""
    suffix = _EXTRACT(domain).suffix
    if not suffix:
        return None  # no known public suffix (`acme.internal`, an IP address)
    tld = suffix.rsplit(".", 1)[-1]
    if len(tld) != 2 or not tld.isascii() or not tld.isalpha():
        return None  # generic (`com`), or an IDN ccTLD (not mapped)
    if tld in VANITY_TLDS and "." not in suffix:
        return None
    code = _TLD_COUNTRY.get(tld, tld.upper())
    if code not in _ALPHA_2:
        return None  # `eu`, `su`: no country
    return code, suffix


class _TldCountry:
    def __call__(self, record: Record, data: EnrichData) -> tuple[Record, str] | None:
        if record.country is not None or record.domain is None or record.freemail:
            # A free-mail domain (gmx.de, yahoo.co.uk) says where the mailbox is, not the
            # company.
            return None
        found = _tld_country(record.domain)
        if found is None:
            return None
        code, suffix = found
        return _set_country(record, code), f"country = {code} from .{suffix}"


def tld_country(options: Mapping[str, Any]) -> Enricher:
    """`tld_country`: the country of the domain's country-code TLD, when none is set."""
    _no_options("tld_country", options)
    return _TldCountry()


# --- company_match ------------------------------------------------------------------------

# Legal forms folded away before names compare: `Acme, Inc.` = `ACME LLC` = `Acme GmbH`.
LEGAL_SUFFIXES = frozenset({
    "inc", "incorporated", "llc", "llp", "lp", "ltd", "limited", "corp", "corporation", "co",
    "company", "plc", "gmbh", "ag", "kg", "ug", "sa", "sas", "sarl", "srl", "spa", "bv", "nv",
    "ab", "as", "asa", "oy", "oyj", "aps", "kk", "pty", "pte", "pvt", "sl", "slu", "se", "nl",
})
_NAME_WORD = re.compile(r"[^\W_]+")
DEFAULT_THRESHOLD = 90


def company_key(name: object) -> str:
    """A company name for comparison: accents, case and punctuation folded, legal suffixes
    (Inc, LLC, Ltd, GmbH, SA, ...) and a leading `the` dropped; `&` and `and` are one word."""
    text = _plain(str(name)[:MAX_NAME_CHARS])
    words = _NAME_WORD.findall(text.replace("&", " and "))
    while words and words[-1] in LEGAL_SUFFIXES:
        words.pop()
    if words and words[0] == "the":
        words = words[1:]
    return " ".join(words)


class _CompanyMatch:
    needs_accounts = True

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def __call__(self, record: Record, data: EnrichData) -> tuple[Record, str] | None:
        accounts = data.accounts
        if record.object == "account" or accounts is None:
            return None
        if record.domain is not None and not record.freemail and \
                not accounts.domains.isdisjoint(record.domain_keys):
            return None  # its domain has an account: that is its account
        name = record.raw.get("name")
        if name is None:
            return None
        key = company_key(name)
        if not key:
            return None
        hit = accounts.match(key, self.threshold)
        if hit is None:
            return None
        account, domain, score = hit
        raw = dict(record.raw)
        folded = dict(record.folded)
        raw["domain"] = folded["domain"] = domain
        new = replace(record, domain=domain, domain_keys=domain_keys(domain), freemail=False,
                      raw=raw, folded=folded)
        return new, (f"domain = {domain} from name {shorten(repr(name))} ~ account "
                     f"{shorten(repr(account))} ({score:.0f})")


def company_match(options: Mapping[str, Any]) -> Enricher:
    """`company_match`: a lead or contact whose domain has no account takes the domain of the
    account whose company name matches its own (`threshold`, 0-100, default 90)."""
    for key in options:
        if key != "threshold":
            raise OptionError(str(key), "only `threshold` (unknown keys are errors)", key)
    threshold = options.get("threshold", DEFAULT_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
            or not 0 < threshold <= 100:
        raise OptionError("threshold", "a number above 0 and at most 100", threshold)
    return _CompanyMatch(float(threshold))


_BUILTIN: dict[str, EnricherFactory] = {
    "state_codes": state_codes,
    "phone_country": phone_country,
    "tld_country": tld_country,
    "company_match": company_match,
}
