"""Tests for sync.normalize: the value forms rules compare (docs/routing-file.md#value-folding)."""

from __future__ import annotations

import re
import socket
import time
import unicodedata
from datetime import UTC, datetime

import pycountry
import pytest

from sync import normalize
from sync.models import Record
from sync.normalize import (
    FREEMAIL_DOMAINS,
    build_record,
    collapse,
    country_code,
    domain_keys,
    fold,
    fold_industry,
    id_key,
    is_freemail,
    normalize_domain,
    parse_number,
    registered_domain,
)

# ---------------------------------------------------------------------------------------------
# collapse / fold


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  Acme   Inc ", "Acme Inc"),
        ("Acme\t\n Inc", "Acme Inc"),
        ("\u00a0Acme\u00a0\u00a0Inc\u00a0", "Acme Inc"),
        (1200, "1200"),
        ("Acme", "Acme"),
    ],
)
def test_given_messy_whitespace_when_collapsing_then_trims_and_joins_runs_with_one_space(
    value, expected
):
    assert collapse(value) == expected


@pytest.mark.parametrize("value", [None, "", "   ", "\t\n"])
def test_given_none_or_blank_when_collapsing_then_none(value):
    assert collapse(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("  ACME   Inc ", "acme inc"), ("Straße", "straße"), ("ÉCOLE", "école")],
)
def test_given_mixed_case_when_folding_then_collapses_and_lowers(value, expected):
    assert fold(value) == expected


@pytest.mark.parametrize("value", [None, "", "  "])
def test_given_blank_when_folding_then_none(value):
    assert fold(value) is None


# ---------------------------------------------------------------------------------------------
# fold_industry


@pytest.mark.parametrize(
    "value",
    [
        "Hospital & Health Care",
        "HOSPITAL_HEALTH_CARE",
        "hospital and health-care",
        "Hospital/Health, Care",
        "  hospital   AND   health care  ",
        "Hospital&Health&Care",
    ],
)
def test_given_industry_spellings_when_folding_industry_then_same_word_sequence(value):
    assert fold_industry(value) == "hospital health care"


def test_given_one_word_industry_when_folding_industry_then_differs_from_two_words():
    assert fold_industry("Healthcare") == "healthcare"
    assert fold_industry("Healthcare") != fold_industry("Health Care")


def test_given_and_inside_a_word_when_folding_industry_then_word_kept():
    assert fold_industry("Brand Andorra Handling") == "brand andorra handling"


def test_given_unicode_letters_when_folding_industry_then_letters_kept():
    assert fold_industry("Énergie & Télécoms") == "énergie télécoms"


def test_given_decomposed_accents_when_folding_industry_then_word_not_split():
    assert fold_industry(unicodedata.normalize("NFD", "Télécoms")) == "télécoms"


@pytest.mark.parametrize("value", [None, "", "&", " and ", "-/_", "AND & and"])
def test_given_nothing_but_punctuation_or_and_when_folding_industry_then_none(value):
    assert fold_industry(value) is None


# ---------------------------------------------------------------------------------------------
# parse_number


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1200", 1200.0),
        ("  42  ", 42.0),
        ("1,200", 1200.0),
        ("1 200", 1200.0),
        ("1\u00a0200", 1200.0),
        ("1\u202f200", 1200.0),
        ("12,345,678", 12_345_678.0),
        ("600.0", 600.0),
        ("1,200.50", 1200.5),
        ("0.5", 0.5),
        (".5", 0.5),
        ("-5", -5.0),
        ("+5", 5.0),
        ("-1,200.5", -1200.5),
        ("1.2k", 1200.0),
        ("1.2K", 1200.0),
        ("3M", 3_000_000.0),
        ("3m", 3_000_000.0),
        ("2.5 m", 2_500_000.0),
        ("1,200k", 1_200_000.0),
        ("-1.5M", -1_500_000.0),
        # Scaled in the decimal string: float multiplication would give 2009999.9999999998.
        ("2.01m", 2_010_000.0),
        ("0", 0.0),
    ],
)
def test_given_number_text_when_parsing_then_value(value, expected):
    result = parse_number(value)
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "12abc",
        "1,20",
        "1,2345",
        "1234,567",
        "0,123",  # a European decimal, not 123
        "1,200 300",  # mixed separators
        "1.2.3",
        "",
        "   ",
        ".",
        "5.",
        "-",
        "+",
        "k",
        "M",
        "$1,000",
        "10%",
        "1e5",
        "1E5",
        "1.2kk",
        "1.2  k",  # two spaces before the suffix
        "1.2 b",
        "- 5",
        "--5",
        "١٢٣",  # Arabic-Indic digits: float() would read them
        "nan",
        "inf",
    ],
)
def test_given_text_outside_the_number_grammar_when_parsing_then_none(value):
    assert parse_number(value) is None


@pytest.mark.parametrize(("value", "expected"), [(7, 7.0), (2.5, 2.5), (-3, -3.0), (0, 0.0)])
def test_given_int_or_float_when_parsing_then_passes_through_as_float(value, expected):
    result = parse_number(value)
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize(
    "value", [True, False, None, float("nan"), float("inf"), float("-inf"), 10**400]
)
def test_given_bool_none_nonfinite_or_huge_when_parsing_then_none(value):
    assert parse_number(value) is None


# ---------------------------------------------------------------------------------------------
# normalize_domain


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bob@acme.com", "acme.com"),
        ("Bob.Smith@Sales.ACME.com", "sales.acme.com"),
        ('"odd@local"@acme.com', "acme.com"),
        ("mailto:bob@acme.com", "acme.com"),
    ],
)
def test_given_email_when_normalizing_domain_then_takes_part_after_at(value, expected):
    assert normalize_domain(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ACME.COM", "acme.com"),
        ("  acme.com  ", "acme.com"),
        ("http://acme.com", "acme.com"),
        ("https://acme.com", "acme.com"),
        ("ftp://files.acme.com", "files.acme.com"),
        ("//acme.com/x", "acme.com"),
        ("https://user:pw@acme.com/", "acme.com"),
        ("https://acme.com/about/team", "acme.com"),
        ("https://acme.com?utm=x", "acme.com"),
        ("https://acme.com#top", "acme.com"),
        ("acme.com/contact", "acme.com"),
        ("acme.com:8080", "acme.com"),
        ("https://www.Acme.com:443/about?x=1#y", "acme.com"),
        ("acme.com.", "acme.com"),
        ("www.acme.com", "acme.com"),
        ("www.eu.acme.co.uk", "eu.acme.co.uk"),
    ],
)
def test_given_url_or_host_when_normalizing_domain_then_bare_lower_case_host(value, expected):
    assert normalize_domain(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("www2.acme.com", "www2.acme.com"),  # only `www.` is dropped
        ("wwwacme.com", "wwwacme.com"),
        ("www.com", "www.com"),  # `www` is the registrable name itself here
    ],
)
def test_given_www_like_prefix_when_normalizing_domain_then_only_a_www_label_is_dropped(
    value, expected
):
    assert normalize_domain(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("MÜNCHEN.de", "münchen.de"),
        ("https://www.bücher.example/", "bücher.example"),
        ("xn--mnchen-3ya.de", "münchen.de"),  # punycode and Unicode spellings compare equal
        (unicodedata.normalize("NFD", "münchen.de"), "münchen.de"),
    ],
)
def test_given_idn_when_normalizing_domain_then_lower_case_unicode(value, expected):
    assert normalize_domain(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("http://10.0.0.1:8080/x", "10.0.0.1"),
        ("[2001:DB8::1]:443", "2001:db8::1"),
        ("https://[::1]/", "::1"),
    ],
)
def test_given_ip_address_when_normalizing_domain_then_returned_as_host(value, expected):
    assert normalize_domain(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "localhost",
        "acme",
        "bob@",
        "http://",
        "acme .com",
        "Acme Inc.",
        "n/a",
        "-acme.com",
        "acme-.com",
        "acme..com",
        "acme.com..",
        "acme.com:http",
        "acme!.com",
        "1.2.3",  # a broken IP, not a host
        "acme.123",
        "xn--zz-.de",  # punycode that does not decode
        "[::1",
    ],
)
def test_given_nothing_host_like_when_normalizing_domain_then_none(value):
    assert normalize_domain(value) is None


# ---------------------------------------------------------------------------------------------
# registered_domain / domain_keys


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("acme.com", "acme.com"),
        ("eu.acme.co.uk", "acme.co.uk"),
        ("a.b.c.acme.com.au", "acme.com.au"),
        ("mail.yahoo.co.jp", "yahoo.co.jp"),
        ("münchen.de", "münchen.de"),
    ],
)
def test_given_host_when_taking_registered_domain_then_name_under_public_suffix(
    domain, expected
):
    assert registered_domain(domain) == expected


@pytest.mark.parametrize(
    "domain", ["co.uk", "com", "localhost", "1.2.3.4", "::1", "acme.internal"]
)
def test_given_no_registrable_part_when_taking_registered_domain_then_none(domain):
    assert registered_domain(domain) is None


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("eu.sales.acme.com", ("eu.sales.acme.com", "sales.acme.com", "acme.com")),
        ("eu.acme.co.uk", ("eu.acme.co.uk", "acme.co.uk")),
        ("acme.com", ("acme.com",)),
        ("x.y.acme.com.au", ("x.y.acme.com.au", "y.acme.com.au", "acme.com.au")),
    ],
)
def test_given_subdomain_when_taking_domain_keys_then_parents_down_to_registered_domain(
    domain, expected
):
    assert domain_keys(domain) == expected


@pytest.mark.parametrize("domain", ["eu.acme.co.uk", "a.b.acme.com", "x.acme.com.au"])
def test_given_subdomain_when_taking_domain_keys_then_never_reaches_public_suffix(domain):
    keys = domain_keys(domain)
    assert not {"co.uk", "uk", "com", "com.au", "au"} & set(keys)
    assert keys[-1] == registered_domain(domain)


@pytest.mark.parametrize("domain", ["co.uk", "com"])
def test_given_bare_public_suffix_when_taking_domain_keys_then_empty(domain):
    assert domain_keys(domain) == ()


@pytest.mark.parametrize("domain", ["1.2.3.4", "acme.internal", "::1"])
def test_given_no_registered_domain_when_taking_domain_keys_then_domain_alone(domain):
    assert domain_keys(domain) == (domain,)


@pytest.mark.parametrize("domain", [None, ""])
def test_given_no_domain_when_taking_domain_keys_then_empty(domain):
    assert domain_keys(domain) == ()


def suffix_labels_label_by_label(labels: list[str]) -> int:
    """The public suffix's length as the suffix list defines it, tried label by label."""
    n, best = len(labels), 0
    for k in range(1, n + 1):
        candidate = ".".join(labels[n - k:])
        if candidate in normalize._EXCEPT:
            return k - 1
        parent = ".".join(labels[n - k + 1:])
        if candidate in normalize._PLAIN or k > 1 and parent in normalize._WILD:
            best = k
    return best


def test_given_every_suffix_rule_when_measuring_suffixes_from_parents_then_as_label_by_label(
) -> None:
    names = {"", "a", "a..b", "x."}
    for rule in normalize._PLAIN | normalize._EXCEPT | {f"*.{w}" for w in normalize._WILD}:
        for prefix in ("", "acme.", "eu.acme.", "www."):
            names.add(prefix + rule.replace("*", "w"))
    for name in sorted(names):
        labels = name.split(".")
        suffix = suffix_labels_label_by_label(labels)
        assert normalize._suffix_labels(labels) == suffix, name
        registered = None if suffix in (0, len(labels)) or suffix > len(labels) else ".".join(
            labels[-suffix - 1:])
        assert registered_domain.__wrapped__(name) == registered, name


def test_given_hosts_under_known_parents_when_taking_facts_at_once_then_as_one_by_one() -> None:
    import random

    rng = random.Random(3)
    rules = sorted(normalize._PLAIN | normalize._EXCEPT | {f"*.{w}" for w in normalize._WILD})
    bases = [r.replace("*", "w") for r in rng.sample(rules, 400)]
    bases += sorted(FREEMAIL_DOMAINS) + ["yahoo.co.jp", "gmx.at", "example.com", "acme.internal",
                                         "1.2.3.4", "::ffff:1.2.3.4", "localhost", "co.uk"]
    hosts = [prefix + base for base in bases
             for prefix in ("", "a.", "mail.", "b.a.", "www.x.", "7.")]
    normalize.forget_hosts()
    for host in hosts:  # parents first and last: both orders reach the shortcut
        assert normalize._domain_facts(host) == (
            domain_keys.__wrapped__(host), is_freemail.__wrapped__(host)), host
    normalize.forget_hosts()
    for host in reversed(hosts):
        assert normalize._domain_facts(host) == (
            domain_keys.__wrapped__(host), is_freemail.__wrapped__(host)), host


@pytest.mark.parametrize("host", [
    "city.kawasaki.jp",  # an exception rule (!city.kawasaki.jp) under a wildcard (*.kawasaki.jp)
    "www.city.kawasaki.jp",  # under the exception: registered as city.kawasaki.jp
    "foo.kawasaki.jp",  # a wildcard's match: itself a public suffix, no keys
    "a.foo.kawasaki.jp",
    "co.uk",  # a plain rule under a plain rule
    "a.co.uk",
])
def test_given_a_host_a_suffix_rule_names_when_its_parent_is_known_then_facts_as_from_scratch(
    host: str,
) -> None:
    # The shortcut takes a host's suffix from its parent's: a rule naming the host itself
    # (exception, plain, or the parent's wildcard) must send it the long way.
    normalize.forget_hosts()
    parent = host.split(".", 1)[1]
    normalize._domain_facts(parent)
    normalize._domain_facts(parent.split(".", 1)[-1])

    assert normalize._domain_facts(host) == (
        domain_keys.__wrapped__(host), is_freemail.__wrapped__(host))


def test_given_hosts_when_normalized_on_the_plain_host_path_then_as_the_full_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import random

    rng = random.Random(5)
    alphabet = ["a", "b", "0", "7", "-", ".", ".", "www.", "xn--", "_", "é", ":", "/", "@", " "]
    labels = ["acme", "a1", "b-c", "-x", "y-", "7", "www", "xn--mnchen-3ya", "co", "uk", "é"]
    texts = ["company1.example.com", "www.acme.com", "www.com", "a-.com", "1.2.3.4", "a.b-",
             "xn--mnchen-3ya.de", "a" * 250 + ".com", "acme.com."]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
              for _ in range(3000)]
    texts += [".".join(rng.choice(labels) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    normalized = normalize._normalize_domain.__wrapped__
    fast = [normalized(t) for t in texts]
    monkeypatch.setattr(normalize, "_PLAIN_HOST", re.compile(r"(?!)"))  # never matches
    full = [normalized(t) for t in texts]
    assert fast == full
    assert sum(t == f for t, f in zip(texts, fast, strict=True)) > 100  # the plain path ran


def test_given_suffix_extractor_when_built_then_uses_bundled_snapshot_only():
    extractor = normalize._EXTRACT
    assert extractor.suffix_list_urls == ()
    assert extractor.fallback_to_snapshot


def test_given_network_blocked_when_normalizing_fresh_domains_then_no_connection_attempted(
    monkeypatch,
):
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        # Record, then fail: tldextract swallows fetch errors and falls back to its snapshot,
        # so a raise alone would not reveal an attempt.
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)

    # A brand-new extractor exercises the suffix-list loading path, not a warm one.
    fresh = normalize._make_extractor()
    assert fresh("eu.never-seen-before-4711.co.uk").suffix == "co.uk"
    domain = normalize_domain("https://www.never-seen-before-4712.co.uk/x")
    assert domain_keys(domain) == ("never-seen-before-4712.co.uk",)
    assert not is_freemail(domain)
    assert attempts == []


# ---------------------------------------------------------------------------------------------
# free-mail


@pytest.mark.parametrize(
    "domain",
    [
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.fr",
        "yahoo.co.jp",  # family member not in the explicit list
        "yahoo.com.br",
        "ymail.com",
        "rocketmail.com",
        "hotmail.com",
        "hotmail.co.uk",
        "hotmail.fr",
        "hotmail.it",
        "outlook.com",
        "outlook.de",
        "live.com",
        "live.co.uk",
        "msn.com",
        "aol.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "proton.me",
        "protonmail.com",
        "pm.me",
        "gmx.de",
        "gmx.net",
        "gmx.at",
        "web.de",
        "yandex.ru",
        "yandex.com",
        "yandex.kz",
        "ya.ru",
        "mail.ru",
        "inbox.ru",
        "bk.ru",
        "list.ru",
        "qq.com",
        "163.com",
        "126.com",
        "sina.com",
        "zoho.com",
        "zohomail.com",
        "tutanota.com",
        "tuta.io",
        "fastmail.com",
        "hey.com",
        "mail.com",
        "naver.com",
        "daum.net",
        "rediffmail.com",
        "libero.it",
        "laposte.net",
        "orange.fr",
        "free.fr",
        "t-online.de",
        "seznam.cz",
        "wp.pl",
        "o2.pl",
        "btinternet.com",
        "comcast.net",
        "verizon.net",
        "att.net",
        "sbcglobal.net",
    ],
)
def test_given_freemail_provider_when_checking_then_freemail(domain):
    assert is_freemail(domain)


@pytest.mark.parametrize("domain", ["mail.yahoo.co.jp", "smtp.gmail.com", "eu.gmx.de"])
def test_given_subdomain_of_freemail_provider_when_checking_then_freemail(domain):
    assert is_freemail(domain)


@pytest.mark.parametrize(
    "domain",
    [
        "acme.com",
        "yahoo-partners.com",
        "gmailer.com",
        "livenation.com",
        "yahoo.acme.com",  # the family label must be the registered name, not a subdomain
        "gmail.acme.com",
        "1.2.3.4",
        None,
        "",
    ],
)
def test_given_company_or_no_domain_when_checking_then_not_freemail(domain):
    assert not is_freemail(domain)


def test_given_explicit_list_when_reading_then_holds_named_providers():
    assert {"gmail.com", "proton.me", "qq.com", "163.com"} <= FREEMAIL_DOMAINS


# ---------------------------------------------------------------------------------------------
# country_code


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("UK", "GB"),
        ("Great Britain", "GB"),
        ("England", "GB"),
        ("U.S.", "US"),
        ("U.S.A.", "US"),
        ("America", "US"),
        ("Deutschland", "DE"),
        ("Holland", "NL"),
        ("The Netherlands", "NL"),
        ("Österreich", "AT"),
        ("Schweiz", "CH"),
    ],
)
def test_given_alias_when_resolving_country_then_iso_code(value, expected):
    assert country_code(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("uk", "GB"),
        ("  great   BRITAIN ", "GB"),
        ("u.s.a.", "US"),
        ("ÖSTERREICH", "AT"),
        (unicodedata.normalize("NFD", "Österreich"), "AT"),
        ("the netherlands", "NL"),
    ],
)
def test_given_alias_in_other_case_or_spacing_when_resolving_country_then_iso_code(
    value, expected
):
    assert country_code(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("US", "US"),
        ("us", "US"),
        ("USA", "US"),
        ("United States", "US"),
        ("united   states", "US"),
        ("United States of America", "US"),
        ("germany", "DE"),
        ("DEU", "DE"),
        ("gb", "GB"),
        ("United Kingdom", "GB"),
        ("Netherlands", "NL"),
        ("Viet Nam", "VN"),
        ("Vietnam", "VN"),  # pycountry common_name
        ("Czech Republic", "CZ"),
    ],
)
def test_given_code_or_name_when_resolving_country_then_iso_code(value, expected):
    assert country_code(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "Untied States",  # a typo: fuzzy search would say US
        "Germny",
        "Britain",  # not in the closed alias list
        "Englnd",
        "840",  # ISO numeric codes are not accepted
        "276",
        "Atlantis",
        "",
        "  ",
        None,
    ],
)
def test_given_unresolvable_value_when_resolving_country_then_none(value):
    assert country_code(value) is None


def test_given_typo_when_resolving_country_then_fuzzy_search_never_called(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("search_fuzzy must not be used")

    monkeypatch.setattr(pycountry.countries, "search_fuzzy", fail)
    assert country_code("Unitd Kingdm") is None


# ---------------------------------------------------------------------------------------------
# id_key


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("005000000000001AAA", "005000000000001"),
        (" 005000000000001AAA ", "005000000000001"),
        ("005000000000001", "005000000000001"),
        (" 00G000000000001 ", "00G000000000001"),
        ("101", "101"),
        ("123456789012345678", "123456789012345678"),  # 18 digits: a numeric id, not Salesforce
        ("00500000000000-AAA", "00500000000000-AAA"),  # not alphanumeric
        ("005000000000001AAAA", "005000000000001AAAA"),  # 19 characters
        ("0050000000000ÄÄAAA", "0050000000000ÄÄAAA"),  # not ASCII
        ("ava", "ava"),
    ],
)
def test_given_crm_id_when_keying_then_18_char_salesforce_id_reduced_to_15(value, expected):
    assert id_key(value) == expected


def test_given_15_and_18_char_forms_when_keying_then_equal():
    assert id_key("0059000000INTEGAAA") == id_key("0059000000INTEG")


# ---------------------------------------------------------------------------------------------
# build_record


def test_given_full_row_when_building_record_then_fields_normalized():
    created = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    record = build_record(
        {
            "id": " 001A ",
            "name": "  Acme   Inc ",
            "domain": "https://www.Acme.com/about",
            "industry": "Hospital & Health Care",
            "employees": "1,200",
            "annual_revenue": "2.5M",
            "country": "U.S.A.",
            "state": " CA ",
            "owner": " 005000000000001AAA ",
        },
        crm="salesforce",
        created_at=created,
    )
    assert isinstance(record, Record)
    assert record.id == "001A"
    assert record.object == "account"
    assert record.crm == "salesforce"
    assert record.created_at == created
    assert record.owner == "005000000000001AAA"
    assert record.domain == "acme.com"
    assert record.domain_keys == ("acme.com",)
    assert record.freemail is False
    assert record.country == "US"
    assert record.industry == "hospital health care"
    assert record.employees == 1200.0
    assert record.annual_revenue == 2_500_000.0
    assert record.raw["name"] == "Acme Inc"
    assert record.raw["domain"] == "https://www.Acme.com/about"  # as given
    assert record.raw["country"] == "U.S.A."
    assert record.folded["name"] == "acme inc"
    assert record.folded["domain"] == "acme.com"
    assert record.folded["industry"] == "hospital health care"
    assert record.folded["country"] == "u.s.a."
    assert record.folded["state"] == "ca"


def test_given_blank_values_when_building_record_then_absent_from_raw_and_folded():
    record = build_record({"id": "1", "name": "  ", "city": None, "industry": ""})
    for name in ("name", "city", "industry"):
        assert name not in record.raw
        assert name not in record.folded
    assert record.industry is None


def test_given_domain_email_and_website_when_building_record_then_domain_field_wins():
    record = build_record(
        {"id": "1", "domain": "acme.com", "email": "bob@globex.com", "website": "initech.com"}
    )
    assert record.domain == "acme.com"


def test_given_email_and_website_when_building_record_then_email_domain_wins():
    record = build_record(
        {"id": "1", "email": "Bob@EU.Globex.com", "website": "https://www.initech.com"}
    )
    assert record.domain == "eu.globex.com"
    assert record.domain_keys == ("eu.globex.com", "globex.com")
    assert record.raw["domain"] == "eu.globex.com"
    assert record.folded["domain"] == "eu.globex.com"


def test_given_only_website_when_building_record_then_website_domain_used():
    record = build_record({"id": "1", "website": "https://www.initech.com/contact"})
    assert record.domain == "initech.com"
    assert record.raw["domain"] == "initech.com"
    assert record.folded["domain"] == "initech.com"


def test_given_invalid_domain_field_when_building_record_then_falls_back_to_email():
    record = build_record({"id": "1", "domain": "n/a", "email": "bob@globex.com"})
    assert record.domain == "globex.com"
    assert record.raw["domain"] == "globex.com"
    assert record.folded["domain"] == "globex.com"


def test_given_email_without_at_when_building_record_then_not_taken_as_domain():
    record = build_record({"id": "1", "email": "john.smith", "website": "initech.com"})
    assert record.domain == "initech.com"


def test_given_no_usable_domain_when_building_record_then_domain_absent():
    record = build_record({"id": "1", "domain": "n/a", "email": "none", "website": "TBD"})
    assert record.domain is None
    assert record.domain_keys == ()
    assert record.freemail is False
    assert "domain" not in record.folded
    assert record.raw["domain"] == "n/a"  # the raw value as given is kept


def test_given_freemail_email_when_building_record_then_flagged_freemail():
    record = build_record({"id": "1", "email": "someone@yahoo.co.jp"})
    assert record.domain == "yahoo.co.jp"
    assert record.freemail is True


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("Region", "fields.Region"),
        ("Custom__c", "fields.Custom__c"),
        ("fields.Region", "fields.Region"),
        ("numberofemployees", "fields.numberofemployees"),
    ],
)
def test_given_non_record_column_when_building_record_then_stored_as_fields_key(key, expected):
    record = build_record({"id": "1", key: "  EMEA   North "})
    assert record.raw[expected] == "EMEA North"
    assert record.folded[expected] == "emea north"
    assert key == expected or key not in record.raw


def test_given_object_column_when_building_record_then_overrides_kwarg_folded():
    record = build_record({"id": "1", "object": " Lead "}, object="account")
    assert record.object == "lead"
    assert record.folded["object"] == "lead"


def test_given_blank_object_column_when_building_record_then_kwarg_used():
    record = build_record({"id": "1", "object": "  "}, object="contact")
    assert record.object == "contact"
    assert record.folded["object"] == "contact"


def test_given_no_object_column_when_building_record_then_default_account():
    record = build_record({"id": "1"})
    assert record.object == "account"
    assert record.folded["object"] == "account"


@pytest.mark.parametrize(
    ("values", "kwargs"),
    [({"id": "1", "object": "opportunity"}, {}), ({"id": "1"}, {"object": "deal"})],
)
def test_given_unknown_object_when_building_record_then_value_error(values, kwargs):
    with pytest.raises(ValueError, match="object"):
        build_record(values, **kwargs)


@pytest.mark.parametrize("values", [{}, {"id": None}, {"id": ""}, {"id": "   "}, {"name": "x"}])
def test_given_missing_or_blank_id_when_building_record_then_value_error(values):
    with pytest.raises(ValueError, match="id"):
        build_record(values)


@pytest.mark.parametrize(
    ("industry", "expected"),
    [
        ("HOSPITAL_HEALTH_CARE", "hospital health care"),
        ("Healthcare", "healthcare"),
        ("Computer Software", "computer software"),
    ],
)
def test_given_industry_when_building_record_then_word_folded(industry, expected):
    record = build_record({"id": "1", "industry": industry})
    assert record.industry == expected
    assert record.folded["industry"] == expected
    assert record.raw["industry"] == industry


@pytest.mark.parametrize(
    ("employees", "expected"),
    [("1 200", 1200.0), (250, 250.0), ("1.2k", 1200.0), ("about 50", None), ("10%", None)],
)
def test_given_employees_when_building_record_then_parsed_number(employees, expected):
    assert build_record({"id": "1", "employees": employees}).employees == expected


@pytest.mark.parametrize(
    ("country", "expected"),
    [("Deutschland", "DE"), ("USA", "US"), ("Untied States", None), ("UK", "GB")],
)
def test_given_country_when_building_record_then_iso_code_and_folded_raw(country, expected):
    record = build_record({"id": "1", "country": country})
    assert record.country == expected
    assert record.folded["country"] == country.lower()


def test_given_non_string_values_when_building_record_then_stringified():
    record = build_record({"id": 42, "employees": 1200, "postal_code": 94107})
    assert record.id == "42"
    assert record.raw["employees"] == "1200"
    assert record.raw["postal_code"] == "94107"
    assert record.employees == 1200.0


@pytest.mark.parametrize("domain", ["live.events", "outlook.ai", "liveperson.com"])
def test_given_company_named_like_a_mail_brand_when_checking_freemail_then_not_freemail(domain):
    assert not is_freemail(domain)


@pytest.mark.parametrize("domain", ["live.fr", "outlook.de", "live.co.uk", "yahoo.co.jp"])
def test_given_microsoft_or_yahoo_country_domain_when_checking_freemail_then_freemail(domain):
    assert is_freemail(domain)


@pytest.mark.parametrize("labels", [127, 8_000, 400_000])
def test_given_a_host_longer_than_dns_allows_when_normalizing_then_none_at_once(labels):
    # Suffix and list-key work grows with the square of the label count: a crafted website of
    # 400,000 labels took minutes before the DNS bound.
    host = "a." * labels + "com"
    started = time.perf_counter()

    got = normalize_domain(f"https://{host}/x")

    assert got is None
    assert time.perf_counter() - started < 0.5


def test_given_a_host_of_253_characters_when_normalizing_then_it_is_kept():
    host = "a" * 249 + ".com"

    assert normalize_domain(host) == host
    assert normalize_domain("a" + host) is None


def test_given_a_megabyte_object_value_when_building_then_the_error_quotes_a_short_prefix():
    with pytest.raises(ValueError) as caught:
        build_record({"id": "1", "object": "x" * 1_000_000}, object="account")

    assert len(str(caught.value)) < 300 and "1,000,002 characters" in str(caught.value)
