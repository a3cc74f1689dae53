"""Condition semantics (docs/routing-file.md#conditions): every operator on every
kind of field, missing values, combinators, folding, numbers, countries, domains and owners.

Each case compiles a one-rule routing file (`assign: {queue: Q}`) and asks whether the rule
matches a record built by `build_record`, exactly as the router sees it."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
import yaml

from config.routing import parse
from sync.compiler import CompiledRouting, compile_routing
from sync.normalize import build_record

HEAD: dict[str, Any] = {
    "version": 1,
    "reps": [
        {"id": "ava", "crm_ids": {"salesforce": "005000000000101AAA", "hubspot": "101"}},
        {"id": "ben", "crm_ids": {"salesforce": "005000000000102AAA", "hubspot": "102"}},
    ],
    "lists": {
        "named": {"domains": [
            "acme.com", "HTTPS://WWW.Globex.com:443/about", " Initech.CO.UK ", "eu.umbrella.com",
            "gmail.com", "yahoo.co.jp", "co.uk",
        ]},
        "words": {"domains": ["acme.com"]},
    },
}


@cache
def _compile(rules_yaml: str) -> CompiledRouting:
    text = yaml.safe_dump(HEAD, sort_keys=False) + rules_yaml
    return compile_routing(parse(text, source="r.yaml"))


def compiled(*whens: Any) -> CompiledRouting:
    """A routing file whose rule i carries whens[i] (None: a rule without `when`)."""
    rules = []
    for i, when in enumerate(whens):
        rule: dict[str, Any] = {"name": f"r{i}"}
        if when is not None:
            rule["when"] = when
        rule["assign"] = {"queue": "Q"}
        rules.append(rule)
    return _compile(yaml.safe_dump({"rules": rules}, sort_keys=False))


def record(values: dict[str, Any] | None = None, **kw: Any) -> Any:
    return build_record({"id": "rec-1", **(values or {})}, **kw)


def matches(when: Any, values: dict[str, Any] | None = None, **kw: Any) -> bool:
    return compiled(when).first_match(record(values, **kw), 0) == 0


# ---------------------------------------------------------------------------------------------
# Text fields: every operator, case-insensitive, trimmed, whitespace collapsed


@pytest.mark.parametrize(
    ("field", "op", "operand", "value", "expected"),
    [
        ("name", "eq", "Acme Corp", "acme corp", True),
        ("name", "eq", "  ACME   Corp ", "acme\t corp", True),
        ("name", "eq", "Acme Corp", "Acme Corporation", False),
        ("name", "ne", "Acme Corp", " ACME CORP ", False),
        ("name", "ne", "Acme Corp", "Globex", True),
        ("state", "in", ["CA", "NY"], " ny ", True),
        ("state", "in", ["CA", "NY"], "TX", False),
        ("state", "not_in", ["CA", "NY"], "ca", False),
        ("state", "not_in", ["CA", "NY"], "TX", True),
        ("city", "contains", "FRAN", "San  Francisco", True),
        ("city", "contains", "san francisco", "San   Francisco", True),
        ("city", "contains", "Fresno", "San Francisco", False),
        ("city", "starts_with", " SAN ", "san jose", True),
        ("city", "starts_with", "jose", "san jose", False),
        ("lead_source", "matches", "web", "Organic Web Search", True),
        ("lead_source", "matches", "^WEB", "Organic Web Search", False),
        ("lead_source", "matches", "^organic", "ORGANIC web", True),
        ("lead_source", "matches", "search$", "web search", True),
        ("lead_source", "matches", "we+b|partner", "Partner referral", True),
        ("lead_source", "matches", "^organic web$", "  Organic    Web  ", True),
        ("email", "eq", "Bob@Acme.com", "bob@acme.COM", True),
        ("email", "exists", True, "bob@acme.com", True),
        ("fields.Tier", "eq", "gold", " GOLD ", True),
        ("fields.Tier", "in", ["silver", "gold"], "Gold", True),
        ("fields.Tier", "contains", "OL", "gold", True),
        ("fields.Tier", "ne", "gold", "silver", True),
        ("fields.Tier", "exists", True, "gold", True),
        ("fields.Tier", "exists", False, "gold", False),
        ("postal_code", "starts_with", "021", "02134", True),
    ],
)
def test_given_a_text_field_when_an_operator_is_applied_then_case_and_spacing_do_not_matter(
        field, op, operand, value, expected):
    column = field.removeprefix("fields.")
    assert matches({field: {op: operand}}, {column: value}) is expected


def test_given_a_raw_column_when_a_rule_names_fields_dot_it_then_the_column_name_is_exact():
    assert matches({"fields.Tier": {"eq": "gold"}}, {"Tier": "gold"})
    assert not matches({"fields.tier": {"eq": "gold"}}, {"Tier": "gold"})


def test_given_a_bare_value_when_used_as_an_operator_mapping_then_it_means_eq():
    assert matches({"name": "ACME"}, {"name": "acme"})
    assert not matches({"name": "ACME"}, {"name": "globex"})


@pytest.mark.parametrize(("obj", "expected"), [("account", True), ("lead", False)])
def test_given_the_object_field_when_eq_then_it_is_the_records_object(obj, expected):
    assert matches({"object": {"eq": "Account"}}, object=obj) is expected


# ---------------------------------------------------------------------------------------------
# Missing fields: positive operators false, ne/not_in true, exists:false true


POSITIVE_BY_FIELD: list[tuple[str, str, Any]] = [
    (field, op, operand)
    for field, ops in {
        "name": {"eq": "x", "in": ["x"], "gt": 1, "gte": 1, "lt": 1, "lte": 1,
                 "between": [0, 9], "contains": "x", "starts_with": "x", "matches": ".*",
                 "in_list": "words"},
        "employees": {"eq": 5, "in": [5], "gt": -1, "gte": 0, "lt": 1e12, "lte": 1e12,
                      "between": [-1e12, 1e12], "contains": "1", "starts_with": "1",
                      "matches": ".*", "in_list": "words"},
        "annual_revenue": {"eq": 5, "gt": -1, "lte": 1e12, "between": [-1e12, 1e12],
                           "matches": ".*"},
        "domain": {"eq": "acme.com", "in": ["acme.com"], "contains": "a",
                   "starts_with": "a", "matches": ".*", "in_list": "named"},
        "country": {"eq": "US", "in": ["US", "DE"], "contains": "u", "starts_with": "u",
                    "matches": ".*", "in_list": "words"},
        "industry": {"eq": "Software", "in": ["Software"], "contains": "soft",
                     "starts_with": "s", "matches": ".*", "in_list": "words"},
        "owner": {"eq": "ava", "in": ["ava", "ben"], "contains": "0", "starts_with": "0",
                  "matches": ".*", "in_list": "words"},
        "fields.score": {"eq": "x", "in": [1, 2], "gt": -1, "between": [-1, 1e9],
                         "contains": "1", "matches": ".*"},
    }.items()
    for op, operand in ops.items()
]
NEGATIVE_BY_FIELD: list[tuple[str, str, Any]] = [
    (field, op, operand)
    for field, (eq_operand, in_operand) in {
        "name": ("x", ["x"]), "employees": (5, [5, 6]), "annual_revenue": (5, [5]),
        "domain": ("acme.com", ["acme.com"]), "country": ("US", ["US"]),
        "industry": ("Software", ["Software"]), "owner": ("ava", ["ava"]),
        "fields.score": ("x", ["x"]),
    }.items()
    for op, operand in (("ne", eq_operand), ("not_in", in_operand))
]
ALL_FIELDS = sorted({f for f, _, _ in POSITIVE_BY_FIELD})


@pytest.mark.parametrize(("field", "op", "operand"), POSITIVE_BY_FIELD)
def test_given_the_field_missing_when_a_positive_operator_then_false(field, op, operand):
    assert not matches({field: {op: operand}}, {"city": "Boston"})


@pytest.mark.parametrize(("field", "op", "operand"), NEGATIVE_BY_FIELD)
def test_given_the_field_missing_when_ne_or_not_in_then_true(field, op, operand):
    assert matches({field: {op: operand}}, {"city": "Boston"})


@pytest.mark.parametrize("field", ALL_FIELDS)
def test_given_the_field_missing_when_exists_then_false_and_exists_false_then_true(field):
    assert matches({field: {"exists": False}}, {"city": "Boston"})
    assert not matches({field: {"exists": True}}, {"city": "Boston"})


@pytest.mark.parametrize("blank", ["", "   ", "\t", None])
def test_given_a_blank_value_when_matching_then_it_counts_as_missing(blank):
    assert matches({"name": {"exists": False}}, {"name": blank})
    assert matches({"name": {"ne": "x"}}, {"name": blank})
    assert not matches({"name": {"matches": ".*"}}, {"name": blank})


@pytest.mark.parametrize(
    "when",
    [
        {"not": {"employees": {"gt": 500}}},
        {"employees": {"not_in": [1, 2]}},
        {"not": {"employees": {"lte": 500}}},
    ],
)
def test_given_employees_missing_when_negated_then_true_two_valued_logic(when):
    assert matches(when, {"name": "Acme"})


# ---------------------------------------------------------------------------------------------
# Numbers


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("1,200", 1200), ("1 200", 1200), ("600.0", 600), ("1,200.50", 1200.5),
        ("1.2k", 1200), ("1.2K", 1200), ("3M", 3_000_000), ("3m", 3_000_000), ("-5", -5),
        ("+7", 7), ("  42 ", 42), ("0", 0), ("1,234,567", 1_234_567), (250, 250), (2.5, 2.5),
    ],
)
@pytest.mark.parametrize("field", ["employees", "annual_revenue", "fields.headcount"])
def test_given_a_formatted_number_when_compared_then_it_parses(field, value, number):
    values = {field.removeprefix("fields."): value}
    assert matches({field: {"eq": number}}, values)
    assert matches({field: {"in": [number, 99_999_999]}}, values)
    assert matches({field: {"between": [number, number]}}, values)
    assert matches({field: {"gte": number}}, values)
    assert matches({field: {"lte": number}}, values)
    assert not matches({field: {"gt": number}}, values)
    assert not matches({field: {"lt": number}}, values)
    assert not matches({field: {"ne": number}}, values)
    assert matches({field: {"ne": number + 1}}, values)
    assert matches({field: {"exists": True}}, values)


@pytest.mark.parametrize("value", ["n/a", "unknown", "12abc", "1,20", "$5,000", "5%",
                                   "1e3", "1.2.3", "--5", "k", "1,2345"])
@pytest.mark.parametrize(
    ("op", "operand", "expected"),
    [
        ("eq", 5, False), ("in", [5], False), ("gt", -1e12, False), ("gte", -1e12, False),
        ("lt", 1e12, False), ("lte", 1e12, False), ("between", [-1e12, 1e12], False),
        ("contains", "n", False), ("starts_with", "1", False), ("matches", ".*", False),
        ("in_list", "words", False), ("exists", True, False),
        ("ne", 5, True), ("not_in", [5], True), ("exists", False, True),
    ],
)
def test_given_unparsable_employees_when_any_operator_then_it_is_missing(
        value, op, operand, expected):
    assert matches({"employees": {op: operand}}, {"employees": value}) is expected


@pytest.mark.parametrize(
    ("op", "operand", "value", "expected"),
    [
        ("gt", 500, "501", True), ("gt", 500, "500", False),
        ("gte", 500, "500", True), ("gte", 500, "499.99", False),
        ("lt", 500, "499", True), ("lt", 500, "500", False),
        ("lte", 500, "500", True), ("lte", 500, "500.01", False),
        ("between", [10, 20], "10", True), ("between", [10, 20], "20", True),
        ("between", [10, 20], "15", True), ("between", [10, 20], "9.99", False),
        ("between", [10, 20], "20.5", False), ("between", [-10, -5], "-5", True),
        ("gt", "1k", "1,001", True), ("gt", "1k", "1000", False),
        ("between", ["1k", "2.5K"], "2,500", True), ("lte", "1.5m", "1.5M", True),
    ],
)
def test_given_a_number_when_comparing_then_bounds_are_exact_and_between_is_inclusive(
        op, operand, value, expected):
    assert matches({"employees": {op: operand}}, {"employees": value}) is expected


def test_given_numbers_as_text_when_eq_on_a_raw_field_then_compared_as_numbers():
    assert matches({"fields.score": {"eq": 6}}, {"score": "6.0"})
    assert matches({"fields.score": {"in": [6, 7]}}, {"score": "7"})
    assert not matches({"fields.score": {"eq": 6}}, {"score": "six"})
    assert matches({"fields.score": {"gt": 5}}, {"score": "1,000"})
    assert not matches({"fields.score": {"gt": 5}}, {"score": "n/a"})


# ---------------------------------------------------------------------------------------------
# Industry: compared as words


@pytest.mark.parametrize(
    ("operand", "value", "expected"),
    [
        ("Hospital & Health Care", "HOSPITAL_HEALTH_CARE", True),
        ("HOSPITAL_HEALTH_CARE", "Hospital & Health Care", True),
        ("hospital and health-care", "Hospital & Health Care", True),
        ("Hospital  &  Health Care ", "hospital health care", True),
        ("Food & Beverages", "FOOD_AND_BEVERAGES", True),
        ("Health Care", "Healthcare", False),
        ("Healthcare", "Health Care", False),
        ("Health Care", "Hospital & Health Care", False),
        ("Computer Software", "COMPUTER_SOFTWARE", True),
    ],
)
def test_given_industry_when_eq_then_compared_by_folded_words(operand, value, expected):
    assert matches({"industry": {"eq": operand}}, {"industry": value}) is expected
    assert matches({"industry": {"ne": operand}}, {"industry": value}) is not expected
    assert matches({"industry": {"in": ["Retail", operand]}}, {"industry": value}) is expected
    assert matches({"industry": {"not_in": [operand]}}, {"industry": value}) is not expected


@pytest.mark.parametrize(
    ("op", "operand", "value", "expected"),
    [
        ("contains", "health care", "HOSPITAL_HEALTH_CARE", True),
        ("contains", "Health & Care", "Hospital & Health Care", True),
        ("contains", "h health", "HOSPITAL_HEALTH_CARE", False),
        ("contains", "l h", "HOSPITAL_HEALTH_CARE", True),
        ("contains", "_health", "HOSPITAL_HEALTH_CARE", True),
        ("contains", "health care", "Healthcare", False),
        ("starts_with", "Hospital", "HOSPITAL_HEALTH_CARE", True),
        ("starts_with", "Health", "HOSPITAL_HEALTH_CARE", False),
        ("starts_with", "hospital & health", "Hospital and Health Care", True),
        ("matches", "health care$", "HOSPITAL_HEALTH_CARE", True),
        ("matches", "^hospital health", "Hospital & Health Care", True),
        ("matches", "health ?care", "Healthcare", True),
        ("matches", "&", "Hospital & Health Care", False),
    ],
)
def test_given_industry_when_text_operators_then_they_work_on_the_folded_words(
        op, operand, value, expected):
    assert matches({"industry": {op: operand}}, {"industry": value}) is expected


@pytest.mark.parametrize("value", ["&", " and ", "& - /"])
def test_given_an_industry_of_only_punctuation_when_matching_then_it_is_missing(value):
    assert matches({"industry": {"exists": False}}, {"industry": value})
    assert not matches({"industry": {"exists": True}}, {"industry": value})
    assert not matches({"industry": {"matches": ".*"}}, {"industry": value})
    assert matches({"industry": {"ne": "Retail"}}, {"industry": value})


# ---------------------------------------------------------------------------------------------
# Countries


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("US", "US"), ("us", "US"), ("USA", "US"), ("United States", "US"),
        ("united states", "US"), ("U.S.A.", "US"), ("U.S.", "US"), ("America", "US"),
        ("UK", "GB"), ("GB", "GB"), ("England", "GB"), ("Great Britain", "GB"),
        ("United Kingdom", "GB"), ("Deutschland", "DE"), ("Germany", "DE"), ("DEU", "DE"),
        ("Österreich", "AT"), ("ÖSTERREICH", "AT"), ("Schweiz", "CH"), ("Holland", "NL"),
        ("The Netherlands", "NL"), ("  united   states ", "US"),
    ],
)
def test_given_a_record_country_in_any_common_form_when_eq_its_code_then_true(value, code):
    assert matches({"country": {"eq": code}}, {"country": value})
    assert matches({"country": {"in": ["FR", code]}}, {"country": value})
    assert not matches({"country": {"ne": code}}, {"country": value})
    assert not matches({"country": {"not_in": [code]}}, {"country": value})


@pytest.mark.parametrize("operand", ["US", "usa", "United States", "U.S.A.", "America"])
def test_given_a_rule_country_in_any_form_when_eq_then_it_resolves_like_the_record(operand):
    assert matches({"country": {"eq": operand}}, {"country": "United States"})
    assert not matches({"country": {"eq": operand}}, {"country": "Canada"})


@pytest.mark.parametrize("value", ["Narnia", "Untied States", "Europe", "840", "Amerika"])
def test_given_a_record_country_that_does_not_resolve_when_eq_false_and_ne_true(value):
    assert not matches({"country": {"eq": "US"}}, {"country": value})
    assert not matches({"country": {"in": ["US", "DE"]}}, {"country": value})
    assert matches({"country": {"ne": "US"}}, {"country": value})
    assert matches({"country": {"not_in": ["US", "DE"]}}, {"country": value})


# ---------------------------------------------------------------------------------------------
# Domains


@pytest.mark.parametrize(
    "value",
    ["acme.com", "ACME.COM", "www.acme.com", "https://www.acme.com", "http://acme.com/about",
     "https://Acme.com:8443/x?y=1#z", "  acme.com  ", "acme.com/", "//www.acme.com"],
)
def test_given_a_domain_with_scheme_www_path_port_or_case_when_compared_then_normalized(value):
    assert matches({"domain": {"eq": "acme.com"}}, {"domain": value})
    assert matches({"domain": {"in_list": "named"}}, {"domain": value})
    assert matches({"domain": {"in": ["https://WWW.ACME.COM/"]}}, {"domain": value})
    assert not matches({"domain": {"ne": "acme.com"}}, {"domain": value})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"domain": "acme.com", "email": "bob@globex.com"}, "acme.com"),
        ({"email": "bob@ACME.com", "website": "https://globex.com"}, "acme.com"),
        ({"website": "https://www.acme.com/contact"}, "acme.com"),
        ({"domain": "  ", "email": "bob@acme.com"}, "acme.com"),
        ({"email": "not-an-email", "website": "acme.com"}, "acme.com"),
    ],
)
def test_given_domain_email_and_website_when_matching_then_domain_wins_then_email_then_website(
        values, expected):
    assert matches({"domain": {"eq": expected}}, values)
    assert matches({"domain": {"exists": True}}, values)
    other = "globex.com"
    assert not matches({"domain": {"eq": other}}, values)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("acme.com", True),
        ("eu.acme.com", True),
        ("sales.eu.acme.com", True),
        ("bob@eu.acme.com", True),
        ("acme.com.evil.io", False),
        ("notacme.com", False),
        ("acme.co", False),
        ("globex.com", True),
        ("www.globex.com/about", True),
        ("initech.co.uk", True),
        ("eu.initech.co.uk", True),
        ("other.co.uk", False),
        ("eu.umbrella.com", True),
        ("x.eu.umbrella.com", True),
        ("umbrella.com", False),
        ("us.umbrella.com", False),
    ],
)
def test_given_a_record_domain_when_in_list_then_it_or_a_parent_must_be_an_entry(
        value, expected):
    key = "email" if "@" in value else "domain"
    assert matches({"domain": {"in_list": "named"}}, {key: value}) is expected


@pytest.mark.parametrize(
    "values",
    [
        {"domain": "gmail.com"}, {"email": "bob@gmail.com"}, {"email": "Bob@GMAIL.COM"},
        {"email": "taro@yahoo.co.jp"}, {"domain": "mail.yahoo.co.jp"},
        {"email": "bob@gmail.com", "website": "https://acme.com"},
    ],
)
def test_given_a_free_mail_domain_when_in_list_then_never_matches_even_if_listed(values):
    assert not matches({"domain": {"in_list": "named"}}, values)
    assert matches({"domain": {"exists": True}}, values)


@pytest.mark.parametrize("value", ["co.uk", "foo.co.uk", "bar.baz.co.uk"])
def test_given_a_public_suffix_entry_when_in_list_then_it_never_matches_companies_under_it(
        value):
    assert not matches({"domain": {"in_list": "named"}}, {"domain": value})


@pytest.mark.parametrize(
    ("entry", "values"),
    [
        ("HTTPS://WWW.Globex.com:443/about", {"domain": "globex.com"}),
        ("HTTPS://WWW.Globex.com:443/about", {"email": "ann@sales.globex.com"}),
        (" Initech.CO.UK ", {"website": "http://www.initech.co.uk/"}),
    ],
)
def test_given_list_entries_written_as_urls_when_in_list_then_normalized_like_records(
        entry, values):
    assert entry in HEAD["lists"]["named"]["domains"]
    assert matches({"domain": {"in_list": "named"}}, values)


@pytest.mark.parametrize(
    ("op", "operand", "values", "expected"),
    [
        ("contains", "acme", {"domain": "https://www.ACME.com/about"}, True),
        ("contains", "www", {"domain": "https://www.acme.com"}, False),
        ("contains", "about", {"domain": "https://www.acme.com/about"}, False),
        ("starts_with", "acme", {"website": "http://www.acme.com"}, True),
        ("matches", r"^acme\.com$", {"domain": "HTTPS://WWW.ACME.COM:443/x"}, True),
        ("matches", r"^acme\.com$", {"website": "https://www.acme.com/x"}, True),
        ("matches", "http", {"domain": "https://acme.com"}, False),
        ("matches", ".*", {"domain": "not a domain"}, False),
        ("exists", True, {"domain": "not a domain"}, False),
        ("exists", False, {"domain": "not a domain"}, True),
        ("ne", "acme.com", {"domain": "not a domain"}, True),
    ],
)
def test_given_domain_text_operators_when_matching_then_they_see_the_normalized_domain(
        op, operand, values, expected):
    assert matches({"domain": {op: operand}}, values) is expected


# ---------------------------------------------------------------------------------------------
# Owners


@pytest.mark.parametrize(
    ("operand", "owner", "expected"),
    [
        ("005000000000999", "005000000000999AAA", True),
        ("005000000000999AAA", "005000000000999", True),
        ("005000000000999AAA", "005000000000999ZZZ", True),
        ("005000000000999", "005000000000998AAA", False),
        ("ava", "ava", True),
        ("ava", " ava ", True),
        ("ava", "101", True),
        ("ava", "005000000000101AAA", True),
        ("ava", "005000000000101", True),
        ("ava", "102", False),
        ("ava", "005000000000102AAA", False),
        ("ben", "102", True),
        ("101", "101", True),
        ("999", "101", False),
    ],
)
def test_given_an_owner_when_eq_then_ids_compare_15_to_18_and_rep_ids_name_their_crm_ids(
        operand, owner, expected):
    assert matches({"owner": {"eq": operand}}, {"owner": owner}) is expected
    assert matches({"owner": {"ne": operand}}, {"owner": owner}) is not expected
    assert matches({"owner": {"in": ["nobody", operand]}}, {"owner": owner}) is expected
    assert matches({"owner": {"not_in": [operand]}}, {"owner": owner}) is not expected


# ---------------------------------------------------------------------------------------------
# Combinators


@pytest.mark.parametrize(
    ("when", "values", "expected"),
    [
        ({"not": {"name": {"eq": "acme"}}}, {"name": "ACME"}, False),
        ({"not": {"name": {"eq": "acme"}}}, {"name": "globex"}, True),
        ({"not": {"not": {"name": {"eq": "acme"}}}}, {"name": "acme"}, True),
        ({"any": [{"name": {"eq": "acme"}}, {"employees": {"gt": 500}}]},
         {"name": "globex", "employees": "501"}, True),
        ({"any": [{"name": {"eq": "acme"}}, {"employees": {"gt": 500}}]},
         {"name": "globex", "employees": "500"}, False),
        ({"all": [{"name": {"eq": "acme"}}, {"employees": {"gt": 500}}]},
         {"name": "acme", "employees": "501"}, True),
        ({"all": [{"name": {"eq": "acme"}}, {"employees": {"gt": 500}}]},
         {"name": "acme", "employees": "5"}, False),
        ({"name": {"eq": "acme"}, "employees": {"gt": 500}}, {"name": "acme", "employees": "501"},
         True),
        ({"name": {"eq": "acme"}, "employees": {"gt": 500}}, {"name": "acme", "employees": "5"},
         False),
        ({"name": {"eq": "acme"}, "employees": {"gt": 500}}, {"name": "x", "employees": "501"},
         False),
        ({"employees": {"gt": 100, "lt": 200}}, {"employees": "150"}, True),
        ({"employees": {"gt": 100, "lt": 200}}, {"employees": "250"}, False),
        # fields and combinators side by side: all AND-ed
        ({"country": {"eq": "US"}, "any": [{"state": {"eq": "CA"}}, {"state": {"eq": "NY"}}]},
         {"country": "USA", "state": "ny"}, True),
        ({"country": {"eq": "US"}, "any": [{"state": {"eq": "CA"}}, {"state": {"eq": "NY"}}]},
         {"country": "Canada", "state": "NY"}, False),
        ({"country": {"eq": "US"}, "any": [{"state": {"eq": "CA"}}, {"state": {"eq": "NY"}}]},
         {"country": "US", "state": "TX"}, False),
        ({"country": {"eq": "US"}, "not": {"state": {"eq": "CA"}}}, {"country": "US",
                                                                    "state": "TX"}, True),
        ({"country": {"eq": "US"}, "not": {"state": {"eq": "CA"}}}, {"country": "US",
                                                                    "state": "CA"}, False),
        ({"all": [{"country": {"eq": "US"}}], "any": [{"employees": {"gte": 10}}],
          "not": {"industry": {"eq": "Retail"}}},
         {"country": "US", "employees": "10", "industry": "Software"}, True),
        ({"all": [{"country": {"eq": "US"}}], "any": [{"employees": {"gte": 10}}],
          "not": {"industry": {"eq": "Retail"}}},
         {"country": "US", "employees": "10", "industry": "RETAIL"}, False),
        # nesting
        ({"any": [{"all": [{"country": {"eq": "DE"}}, {"employees": {"gt": 50}}]},
                  {"all": [{"country": {"eq": "AT"}}, {"not": {"employees": {"lt": 10}}}]}]},
         {"country": "Österreich"}, True),
        ({"any": [{"all": [{"country": {"eq": "DE"}}, {"employees": {"gt": 50}}]},
                  {"all": [{"country": {"eq": "AT"}}, {"not": {"employees": {"lt": 10}}}]}]},
         {"country": "Deutschland", "employees": "50"}, False),
        ({"any": [{"all": [{"country": {"eq": "DE"}}, {"employees": {"gt": 50}}]},
                  {"all": [{"country": {"eq": "AT"}}, {"not": {"employees": {"lt": 10}}}]}]},
         {"country": "Deutschland", "employees": "51"}, True),
    ],
)
def test_given_combinators_when_matching_then_not_any_all_and_side_by_side_fields_combine(
        when, values, expected):
    assert matches(when, values) is expected


# ---------------------------------------------------------------------------------------------
# Rule order


def test_given_several_rules_when_first_match_then_the_first_matching_index_wins():
    routing = compiled({"name": {"eq": "globex"}}, {"employees": {"gt": 500}},
                       {"country": {"eq": "US"}}, None)
    big_us = record({"name": "acme", "employees": "900", "country": "US"})
    assert routing.first_match(big_us, 0) == 1
    assert routing.first_match(record({"name": "acme", "country": "US"}), 0) == 2
    assert routing.first_match(record({"name": "Globex", "employees": "900"}), 0) == 0
    assert routing.first_match(record({"name": "acme"}), 0) == 3


def test_given_a_start_index_when_first_match_then_earlier_rules_are_skipped():
    routing = compiled({"name": {"eq": "acme"}}, {"name": {"contains": "cm"}},
                       {"employees": {"gt": 5}}, {"name": {"starts_with": "ac"}})
    acme = record({"name": "acme"})
    assert [routing.first_match(acme, start) for start in range(5)] == [0, 1, 3, 3, -1]


def test_given_no_rule_matches_when_first_match_then_minus_one():
    routing = compiled({"name": {"eq": "acme"}}, {"employees": {"gt": 5}})
    assert routing.first_match(record({"name": "globex", "employees": "5"}), 0) == -1


@pytest.mark.parametrize("values", [{}, {"name": "anything"}, {"employees": "n/a"},
                                    {"email": "bob@gmail.com"}])
def test_given_a_rule_without_when_when_first_match_then_it_matches_every_record(values):
    assert compiled(None).first_match(record(values), 0) == 0
    assert compiled({"name": {"eq": "zzz"}}, None).first_match(record(values), 0) == 1


def test_given_the_same_record_when_matched_twice_then_the_answer_is_the_same():
    routing = compiled({"employees": {"gt": 500}}, {"fields.score": {"gt": 5}})
    rec = record({"employees": "1.2k", "score": "7"})
    assert routing.first_match(rec, 0) == routing.first_match(rec, 0) == 0
    assert routing.first_match(rec, 1) == 1
