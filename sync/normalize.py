"""Pure, cached normalization of raw CRM/CSV values into the comparable forms rules use."""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import pycountry
import tldextract

from config.display import shorten
from sync.models import OBJECTS, RECORD_FIELDS, Record

__all__ = [
    "FREEMAIL_DOMAINS",
    "FREEMAIL_FAMILIES",
    "build_record",
    "collapse",
    "country_code",
    "domain_keys",
    "fold",
    "fold_industry",
    "id_key",
    "is_freemail",
    "normalize_domain",
    "parse_number",
    "record_fields",
    "registered_domain",
]

# Sized for a territory's worth of distinct values; misses only cost the uncached work again.
_CACHE_SIZE = 65_536

# --------------------------------------------------------------------------------------------
# Strings


def collapse(value: object) -> str | None:
    """`str(value)` trimmed, inner whitespace runs collapsed to one space; None when blank."""
    if value is None:
        return None
    # split() without arguments splits on any Unicode whitespace run and drops the ends.
    text = " ".join(str(value).split())
    return text or None


def fold(value: object) -> str | None:
    """`collapse` plus lower case: the form every case-insensitive string operator compares."""
    text = collapse(value)
    return text.lower() if text is not None else None


# Letters and digits of any script; `_` is excluded so HubSpot's `HOSPITAL_HEALTH_CARE` splits.
_WORD = re.compile(r"[^\W_]+")


def fold_industry(value: object) -> str | None:
    """Industry as a word sequence: punctuation separates words, `&`/`and` vanish.

    `Hospital & Health Care`, `HOSPITAL_HEALTH_CARE` and `hospital and health-care` all give
    `hospital health care`; `Healthcare` stays one word, so it differs from `Health Care`.
    """
    text = fold(value)
    return _fold_industry(text) if text is not None else None


@lru_cache(maxsize=_CACHE_SIZE)
def _fold_industry(text: str) -> str | None:
    if not text.isascii():
        # A decomposed accent is not a word character and would split the word in two.
        text = unicodedata.normalize("NFC", text)
    words = [w for w in _WORD.findall(text) if w != "and"]
    return " ".join(words) or None


# --------------------------------------------------------------------------------------------
# Numbers

# sign, then either digit groups of exactly three behind one repeated separator (the first
# group must not start with 0, so a European `0,125` is not read as 125) or plain digits,
# an optional `.fraction`, and an optional k/m suffix, glued on or after one space.
_NUMBER = re.compile(
    r"""
    (?P<sign>[+-])?
    (?:
        (?P<grouped>[1-9]\d{0,2}(?P<sep>[, \u00a0\u202f])\d{3}(?:(?P=sep)\d{3})*)
      | (?P<plain>\d*)
    )
    (?:\.(?P<fraction>\d+))?
    (?:[ \u00a0\u202f]?(?P<suffix>[kKmM]))?
    """,
    # ASCII: `\d` would otherwise accept other scripts' digits, which float() happily reads.
    re.VERBOSE | re.ASCII,
)
_SUFFIX_EXPONENT = {"k": 3, "m": 6}


def parse_number(value: object) -> float | None:
    """A number from a CRM value, or None when it does not parse (missing for every operator).

    Accepts ints/floats and strings such as `1,200`, `1 200`, `1,200.50`, `-3`, `1.2k`, `2.5 M`.
    Rejects currency signs, percentages, exponents and malformed grouping like `1,20`.
    """
    if type(value) is str:  # the common case first: CSV cells and most CRM payloads
        text = value.strip()
        # Plain digits need no grammar; isascii() keeps other scripts' digits out of float().
        if text.isdigit() and text.isascii():
            return float(text)
        return _parse_number_text(text)
    # bool is an int subclass, but `True` employees is a data error, not the number 1.
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            return None
        return number if math.isfinite(number) else None
    return _parse_number_text(str(value).strip())


@lru_cache(maxsize=_CACHE_SIZE)
def _parse_number_text(text: str) -> float | None:
    match = _NUMBER.fullmatch(text)
    if match is None:
        return None
    integer = match["grouped"] or match["plain"] or ""
    fraction = match["fraction"]
    if not integer and fraction is None:
        return None  # `.`, `k`, a bare sign or an empty string
    if match["sep"]:
        integer = integer.replace(match["sep"], "")
    # Scale by the suffix in the decimal exponent, not by multiplying floats: float() rounds
    # once, so `2.01m` is exactly 2010000 rather than 2009999.9999999998.
    exponent = _SUFFIX_EXPONENT[match["suffix"].lower()] if match["suffix"] else 0
    number = float(f"{integer or '0'}.{fraction or '0'}e{exponent}")
    return -number if match["sign"] == "-" else number


# --------------------------------------------------------------------------------------------
# Domains

# Any `scheme://` and also a scheme-relative `//host`.
_SCHEME = re.compile(r"^(?:[a-z][a-z0-9+.\-]*:)?//")
# Labels of letters/digits (any script) with inner `-`/`_`; the last label must hold a letter,
# since no TLD is numeric and `1.2.3` is a broken IP, not a host.
_HOST = re.compile(r"(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W_]*[^\W\d_][^\W_]*")
_IPV4 = re.compile(r"[\d.]+")
# Where a URL's authority (or a bare host) ends. Compiled once: `re.split` with a pattern string
# looks it up in re's cache on every call, a third of the split's cost at a million hosts.
_AUTHORITY_END = re.compile(r"[/?#]")


def _make_extractor() -> tldextract.TLDExtract:
    # No suffix list URLs and no cache dir: tldextract goes straight to the public suffix
    # snapshot bundled with the package, so normalizing never touches the network or the disk.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


_EXTRACT = _make_extractor()


def _suffix_rules(rules: list[str]) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    # The public suffix list's three kinds of rule: plain, wildcard (`*.ck`), exception (`!www.ck`).
    plain, wild, exceptions = set(), set(), set()
    for rule in rules:
        if rule.startswith("!"):
            exceptions.add(rule[1:])
        elif rule.startswith("*."):
            wild.add(rule[2:])
        else:
            plain.add(rule)
    return frozenset(plain), frozenset(wild), frozenset(exceptions)


# tldextract's own parser costs ~30 µs a host (it re-parses URLs); the rules it bundles, matched
# here with set lookups, give the same answer in ~2 µs, which matters at 100k rows a run.
_PLAIN, _WILD, _EXCEPT = _suffix_rules(list(_EXTRACT.tlds))


def _suffix_labels(labels: list[str]) -> int:
    """How many trailing labels form the public suffix (0: no known suffix)."""
    return _suffix_facts(".".join(labels))[0]


@lru_cache(maxsize=_CACHE_SIZE)
def _suffix_facts(name: str) -> tuple[int, bool]:
    """How many trailing labels of `name` form the public suffix, and whether an exception
    rule settled it.

    The rules are tried from the last label on, longer and longer; so a name's answer is its
    parent's (cached: a long file has millions of hosts but few parents) plus one more try
    with the whole name, unless an exception rule already settled the parent's.
    """
    head, dot, parent = name.partition(".")
    if dot:
        best, settled = _suffix_facts(parent)
        if settled:
            return best, True
        n = name.count(".") + 1
        if name in _EXCEPT:
            return n - 1, True  # an exception rule: the suffix is one label shorter than it
        if name in _PLAIN or parent in _WILD:
            return n, False
        return best, False
    if name in _EXCEPT:
        return 0, True
    return (1 if name in _PLAIN else 0), False


def normalize_domain(value: object) -> str | None:
    """The host of a domain, URL or email: lower case, no scheme/userinfo/path/port/`www.`.

    `https://www.Acme.com:443/about` and `bob@acme.com` both give `acme.com`. IDNs stay Unicode
    (`xn--` labels are decoded so both spellings compare equal); IP addresses are returned as
    hosts. None when nothing host-like remains.
    """
    if value is None:
        return None
    text = str(value).strip().lower()
    return _normalize_domain(text) if text else None


# RFC 1035: a name is at most 253 characters in its ASCII form; a Unicode (IDN) form is shorter.
MAX_HOST_CHARS = 253


# A plain lower-case ASCII host (`company1.example.com`), most domain values: it is its own
# normalized form, unless it starts with `www.` or holds an IDN (`xn--`) label.
_PLAIN_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9]*[a-z][a-z0-9]*")


@lru_cache(maxsize=_CACHE_SIZE)
def _normalize_domain(text: str) -> str | None:
    if (len(text) <= MAX_HOST_CHARS and _PLAIN_HOST.fullmatch(text) is not None
            and not text.startswith("www.") and "xn--" not in text):
        return text  # what the steps below give it, at a fraction of their cost
    scheme = _SCHEME.match(text)
    if scheme is not None:
        # A URL: the authority ends at the path, query or fragment; userinfo precedes the last @.
        host = _AUTHORITY_END.split(text[scheme.end():], maxsplit=1)[0].rpartition("@")[2]
    else:
        # An email (or a bare user@host): the domain is after the last @; a bare
        # `acme.com/about` may still carry a path.
        host = _AUTHORITY_END.split(text.rpartition("@")[2], maxsplit=1)[0]
    if not host:
        return None
    if host.startswith("["):  # bracketed IPv6, possibly with a port
        inner, closed, _ = host[1:].partition("]")
        return _ip(inner) if closed else None
    if host.count(":") > 1:  # bare IPv6
        return _ip(host)
    host, colon, port = host.partition(":")
    if colon and port and not port.isdigit():
        return None
    host = host.removesuffix(".")
    if len(host) > MAX_HOST_CHARS:
        # Longer than DNS allows, so no real domain: refusing it here also bounds the suffix
        # and list-key work below, which grows with the square of the label count.
        return None
    if _IPV4.fullmatch(host):
        return _ip(host)
    if not host.isascii():
        # NFC so that a decomposed `ü` matches the composed one in the suffix list and in lists.
        host = unicodedata.normalize("NFC", host)
    if "xn--" in host:
        host = _decode_idn(host)
        if host is None:
            return None
    # Only when a real name is left: `www.com` is itself a registrable domain.
    if host.startswith("www.") and "." in host[4:]:
        host = host[4:]
    return host if _HOST.fullmatch(host) else None


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _decode_idn(host: str) -> str | None:
    labels = []
    for label in host.split("."):
        if label.startswith("xn--"):
            try:
                label = label.encode("ascii").decode("idna").lower()
            except UnicodeError:
                return None  # punycode that does not decode is not a host
        labels.append(label)
    return ".".join(labels)


@lru_cache(maxsize=_CACHE_SIZE)
def registered_domain(domain: str) -> str | None:
    """The registrable domain (`eu.acme.co.uk` -> `acme.co.uk`); None for `co.uk`, IPs, etc."""
    if ":" in domain or _IPV4.fullmatch(domain):
        return None
    suffix = _suffix_facts(domain)[0]
    if suffix == 0:
        return None
    # The last suffix + 1 labels, when the domain has more than its suffix.
    parts = domain.rsplit(".", suffix + 1)
    if len(parts) <= suffix:
        return None
    return domain if len(parts) == suffix + 1 else domain[len(parts[0]) + 1:]


@lru_cache(maxsize=_CACHE_SIZE)
def domain_keys(domain: str | None) -> tuple[str, ...]:
    """The domain and each parent down to its registered domain, most specific first.

    `eu.sales.acme.com` -> (`eu.sales.acme.com`, `sales.acme.com`, `acme.com`). A list entry
    matches when it equals any key, so `eu.acme.com` matches `acme.com` but never `com`.
    """
    if not domain:
        return ()
    registered = registered_domain(domain)
    if registered is None:
        # A bare public suffix (`co.uk`) must never become a key: it would match every company
        # under it. Other hosts without a registrable part (IPs, `acme.internal`) key as is.
        return () if _is_public_suffix(domain) else (domain,)
    if domain != registered and not domain.endswith("." + registered):
        return (domain,)  # not expected for normalized input; stay literal rather than guess
    keys = [domain]
    while keys[-1] != registered:
        keys.append(keys[-1].split(".", 1)[1])
    return tuple(keys)


def _is_public_suffix(domain: str) -> bool:
    if ":" in domain or _IPV4.fullmatch(domain):
        return False
    return _suffix_facts(domain)[0] == domain.count(".") + 1


FREEMAIL_DOMAINS: frozenset[str] = frozenset({
    "gmail.com", "googlemail.com",
    "yahoo.com", "yahoo.co.uk", "yahoo.fr", "ymail.com", "rocketmail.com",
    "hotmail.com", "hotmail.co.uk", "hotmail.fr", "outlook.com", "live.com", "msn.com",
    # Microsoft's country variants, listed one by one: `live.*` or `outlook.*` as a family would
    # swallow real companies (live.events, outlook.ai).
    "outlook.fr", "outlook.de", "outlook.es", "outlook.it", "outlook.jp", "outlook.co.uk",
    "live.co.uk", "live.fr", "live.de", "live.it", "live.nl", "live.ca", "live.com.au",
    "aol.com", "icloud.com", "me.com", "mac.com",
    "proton.me", "protonmail.com", "pm.me",
    "gmx.de", "gmx.net", "gmx.com", "web.de", "t-online.de",
    "yandex.ru", "yandex.com", "ya.ru", "mail.ru", "inbox.ru", "bk.ru", "list.ru",
    "qq.com", "163.com", "126.com", "sina.com",
    "zoho.com", "zohomail.com", "tutanota.com", "tuta.io", "fastmail.com", "hey.com", "mail.com",
    "naver.com", "daum.net", "rediffmail.com",
    "libero.it", "laposte.net", "orange.fr", "free.fr", "seznam.cz", "wp.pl", "o2.pl",
    "btinternet.com", "comcast.net", "verizon.net", "att.net", "sbcglobal.net",
})
# Providers that run the same service under many country suffixes (yahoo.co.jp, gmx.at, ...):
# matched by the registered domain's first label, since the suffix list is open-ended.
FREEMAIL_FAMILIES: frozenset[str] = frozenset({
    "yahoo", "hotmail", "gmx", "yandex",
})


@lru_cache(maxsize=_CACHE_SIZE)
def _domain_facts(domain: str) -> tuple[tuple[str, ...], bool]:
    """`domain_keys` and `is_freemail` of a normalized domain at once: one cache entry a host
    for `build_record`, which sees each of a long file's hosts once."""
    _, dot, parent = domain.partition(".")
    if dot and ":" not in domain:
        # The usual host, a name under a parent seen before (`company1.example.com`): the
        # same suffix, so the same registered domain, and its keys are the parent's after it.
        # Its suffix is the parent's unless a suffix rule names this very host (`_suffix_facts`
        # with the parent's answer in hand): checked here rather than by caching the host's
        # own answer, which a file of distinct hosts only ever evicts (a third of the cost).
        settled = _suffix_facts(parent)[1]
        if settled or (domain not in _EXCEPT and domain not in _PLAIN and parent not in _WILD):
            registered = registered_domain(parent)
            keys = _domain_facts(parent)[0]
            if registered is not None and keys and keys[0] == parent and keys[-1] == registered:
                return (domain, *keys), domain in FREEMAIL_DOMAINS or _free_registered(registered)
    return domain_keys.__wrapped__(domain), is_freemail.__wrapped__(domain)


@lru_cache(maxsize=_CACHE_SIZE)
def is_freemail(domain: str | None) -> bool:
    """True when the domain belongs to a free-mail provider; such domains never match lists."""
    if not domain:
        return False
    if domain in FREEMAIL_DOMAINS:
        return True
    registered = registered_domain(domain)
    return registered is not None and _free_registered(registered)


def _free_registered(registered: str) -> bool:
    return registered in FREEMAIL_DOMAINS or registered.split(".", 1)[0] in FREEMAIL_FAMILIES


def forget_hosts() -> None:
    """Empty the per-host caches. A long file's hosts are mostly seen once: a process that
    normalizes millions (a `route-file` worker) calls this now and then, so its memory holds
    a few thousand hosts instead of each cache's full 65,536."""
    for cache in (_suffix_facts, _normalize_domain, registered_domain, domain_keys,
                  _domain_facts, is_freemail):
        cache.cache_clear()


# --------------------------------------------------------------------------------------------
# Countries

# The closed alias list of docs/routing-file.md#countries, keyed by folded form; everything else is
# pycountry's.
_COUNTRY_ALIASES: Mapping[str, str] = {
    "uk": "GB",
    "great britain": "GB",
    "england": "GB",
    "u.s.": "US",
    "u.s.a.": "US",
    "america": "US",
    "deutschland": "DE",
    "holland": "NL",
    "the netherlands": "NL",
    "österreich": "AT",
    "schweiz": "CH",
}


def country_code(value: object) -> str | None:
    """ISO 3166-1 alpha-2 for a code, name or alias (`USA`, `Germany`, `UK`); else None."""
    text = fold(value)
    return _country_code(text) if text is not None else None


@lru_cache(maxsize=4096)
def _country_code(text: str) -> str | None:
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)  # a decomposed `Ö` must still hit the alias
    alias = _COUNTRY_ALIASES.get(text)
    if alias is not None:
        return alias
    # pycountry also resolves numeric codes (`840`), but a number in a country column is a data
    # error more often than an ISO numeric code, and the design admits only codes and names.
    if text.isdigit():
        return None
    try:
        # lookup() is exact (case-insensitive); search_fuzzy() would turn typos into countries.
        return pycountry.countries.lookup(text).alpha_2
    except LookupError:
        return None


# --------------------------------------------------------------------------------------------
# Ids


def id_key(value: str) -> str:
    """The comparison key of a CRM id: an 18-character Salesforce id reduced to its 15-char form."""
    text = value.strip()
    if (
        len(text) == 18
        and text.isascii()
        and text.isalnum()
        # All-digit 18-char ids are HubSpot/other numeric ids, not Salesforce ones.
        and not text.isdigit()
    ):
        return text[:15]
    return text


# --------------------------------------------------------------------------------------------
# Records


_RECORD_FIELD_SET = frozenset(RECORD_FIELDS)  # a set: membership is tested per column


def build_record(
    values: Mapping[str, object],
    *,
    object: str = "account",  # shadows the builtin on purpose: the record field's name
    crm: str = "file",
    created_at: datetime | None = None,
) -> Record:
    """Normalize one CRM/CSV row into a `Record` (docs/routing-file.md#value-folding).

    Keys named like record fields are normalized; any other key `k` lands as `fields.<k>`.
    Raises ValueError for a blank `id` or an unknown `object`.
    """
    return Record(*record_fields(values, object=object, crm=crm, created_at=created_at))


def record_fields(
    values: Mapping[str, object],
    *,
    object: str = "account",  # shadows the builtin on purpose: the record field's name
    crm: str = "file",
    created_at: datetime | None = None,
) -> tuple[Any, ...]:
    """`build_record`'s fields, in `Record`'s order, without making the `Record`: a frozen
    dataclass sets each field through `object.__setattr__`, a quarter of the cost of a row
    for `route-file`, whose workers read the fields off a named tuple instead."""
    raw: dict[str, str] = {}
    folded: dict[str, str] = {}
    for key, value in values.items():
        # collapse(), inlined: this loop runs for every column of every record.
        if type(value) is str:
            text = " ".join(value.split())
        elif value is None:
            continue
        else:
            text = " ".join(str(value).split())
        if not text:
            continue
        if key not in _RECORD_FIELD_SET and not key.startswith("fields."):
            key = "fields." + key
        raw[key] = text
        folded[key] = text.lower()

    record_id = raw.get("id")
    if record_id is None:
        raise ValueError("record has no id")

    obj = folded.get("object") or object.lower()
    if obj not in OBJECTS:
        raise ValueError(
            f"unknown object {shorten(repr(obj))} for record {shorten(repr(record_id))}: "
            f"expected one of {OBJECTS}"
        )
    if "object" not in raw:
        # The object is always known, so rules on `object` see it even when the row had none.
        raw["object"] = folded["object"] = obj

    domain = _normalize_domain(folded["domain"]) if "domain" in folded else None
    if domain is None:
        email = folded.get("email", "")
        # Only a real address: an `email` of `john.smith` must not become a domain.
        if "@" in email:
            domain = _normalize_domain(email)
        if domain is None and "website" in folded:
            domain = _normalize_domain(folded["website"])
        if domain is not None:
            # Derived from email/website: expose it as the domain so `exists` and string
            # operators on `domain` see what lists match.
            raw["domain"] = domain
    if domain is not None:
        folded["domain"] = domain
    else:
        folded.pop("domain", None)  # an unusable domain value has no normalized form

    industry = None
    if "industry" in folded:
        industry = _fold_industry(folded["industry"])
        if industry is not None:
            folded["industry"] = industry
        else:
            del folded["industry"]  # only punctuation or `and`: nothing left to compare

    return (
        record_id,
        obj,
        crm,
        raw.get("owner"),
        domain,
        *(_domain_facts(domain) if domain is not None else ((), False)),
        _country_code(folded["country"]) if "country" in folded else None,
        industry,
        parse_number(values["employees"]) if "employees" in raw else None,
        parse_number(values["annual_revenue"]) if "annual_revenue" in raw else None,
        raw,
        folded,
        created_at,
    )


# --- postal codes: ranges by format (docs/routing-file.md#postal-codes) -------------------
# A postal code compares within its own format: a US ZIP by its five digits (ZIP+4 included),
# a Canadian code by its forward sortation area (FSA, the first three characters), a UK code by
# its outward code (area letters, district number, district letter: `E14` after `E9`, which a
# text comparison would get wrong). A bare three-character `W1A` is both a Canadian FSA and a
# UK outward code; it keeps both readings and a range of either format may match it.
PostalKey = tuple[Any, ...]
_ZIP = re.compile(r"(\d{5})(?:-?\d{4})?")
_CANADA = re.compile(r"([A-Z]\d[A-Z])(\d[A-Z]\d)?")
_UK = re.compile(r"([A-Z]{1,2})(\d{1,2})([A-Z]?)(\d[A-Z]{2})?")
_MAX_POSTAL = 16  # longer text is no postal code of these formats


@lru_cache(maxsize=65536)
def postal_keys(value: str) -> tuple[PostalKey, ...]:
    """The comparable readings of a postal code (empty: none of the known formats)."""
    text = "".join(value.split()).upper()
    if not text or len(text) > _MAX_POSTAL:
        return ()
    keys: list[PostalKey] = []
    if m := _ZIP.fullmatch(text):
        keys.append(("US", int(m.group(1))))
    if m := _CANADA.fullmatch(text):
        keys.append(("CA", m.group(1)))
    if (m := _UK.fullmatch(text)) and not (len(text) == 6 and keys):
        # Six characters that read as a full Canadian code are never a UK one (a UK inward
        # code is digit-letter-letter, a Canadian LDU digit-letter-digit: they cannot both be).
        keys.append(("GB", m.group(1), int(m.group(2)), m.group(3)))
    return tuple(keys)


def postal_between(value: str | None, ranges: tuple[tuple[PostalKey, PostalKey], ...]) -> bool:
    """Whether a postal code falls in one of `ranges` (inclusive, same format at both ends)."""
    if value is None:
        return False
    for key in postal_keys(value):
        for lo, hi in ranges:
            if key[0] == lo[0] and lo <= key <= hi:
                return True
    return False
