"""Enrichment before the rules (docs/routing-file.md#enrichment): each built-in on good and
hostile input, the trace, the entry-point group, and the `enrich:` errors with their paths."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config.routing import ConfigError, parse
from sync.compiler import CompiledRouting, compile_routing
from sync.decide import RoutingContext, decide
from sync.enrich import (
    VANITY_TLDS,
    AccountIndex,
    EnrichData,
    Enrichment,
    company_key,
    compile_enrichment,
)
from sync.models import Record, TraceStep
from tests.builders import rec, routing

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


def steps(*names: str) -> Enrichment:
    enrichment = compile_enrichment([(name, {}) for name in names], None)
    assert enrichment is not None
    return enrichment


def enrich(record: Record, *names: str, data: EnrichData | None = None
           ) -> tuple[Record, tuple[TraceStep, ...]]:
    return steps(*names).run(record, data or EnrichData())


# --- state_codes ------------------------------------------------------------------------------

STATES = """
version: 1
enrich: [state_codes]
reps: [{id: cal}, {id: byname}, {id: wash}, {id: ont}, {id: other}]
rules:
  - {name: by-code, when: {state: {eq: CA}}, assign: {rep: cal}}
  - {name: by-name, when: {state: {in: [Texas]}}, assign: {rep: byname}}
  - {name: washington, when: {state: {eq: Washington}}, assign: {rep: wash}}
  - {name: ontario, when: {state: {eq: ON}}, assign: {rep: ont}}
fallback: {rep: other}
"""


def route(compiled: CompiledRouting, record: Record) -> tuple[str | None, tuple[TraceStep, ...]]:
    enrichment = compiled.enrichment
    assert enrichment is not None
    record, notes = enrichment.run(record, EnrichData())
    ctx = RoutingContext(routing=compiled, now=NOW, enriched={record.id: notes} if notes else {})
    decision = decide(record, ctx)
    return decision.rule, decision.trace


@pytest.mark.parametrize(("fields", "rule"), [
    ({"state": "California"}, "by-code"),  # a name matches a rule written with the code
    ({"state": " california "}, "by-code"),
    ({"state": "CA"}, "by-code"),
    ({"state": "TX"}, "by-name"),  # a code matches a rule written with the name
    ({"state": "WA"}, "washington"),  # no country: US first
    ({"state": "WA", "country": "Australia"}, None),  # Western Australia is not Washington
    ({"state": "Ontario", "country": "Canada"}, "ontario"),
    ({"state": "ON"}, "ontario"),  # no US state ON: Canada next
    ({"state": "US-CA"}, "by-code"),
    ({"state": "Québec", "country": "CA"}, None),
])
def test_given_state_codes_when_routing_then_names_and_codes_match_each_other(fields, rule):
    assert route(routing(STATES), rec(**fields))[0] == rule


def test_given_a_canadian_record_with_state_ca_when_enriched_then_it_is_not_california():
    # The record's country picks the subdivisions: Canada has no province `CA`, so the value
    # stays as written (not US-CA), and `California` under Canada resolves to nothing either.
    for state in ("CA", "California"):
        record, notes = enrich(rec(state=state, country="CA"), "state_codes")
        assert notes == () and "iso:state" not in record.folded


def test_given_state_codes_when_a_state_resolves_then_the_trace_says_what_it_became():
    rule, trace = route(routing(STATES), rec(state="California"))
    assert rule == "by-code"
    assert trace[0] == TraceStep("enrich state_codes", "enriched",
                                 "state = US-CA California from California")
    assert trace[-1].rule == "by-code" and trace[-1].result == "won"


def test_given_no_state_codes_when_routing_then_state_compares_as_text():
    plain = routing(STATES.replace("enrich: [state_codes]\n", ""))
    ctx = RoutingContext(routing=plain, now=NOW)
    assert decide(rec(state="California"), ctx).rule is None
    assert decide(rec(state="CA"), ctx).rule == "by-code"


@pytest.mark.parametrize("state", ["x" * 5000, "", "   ", "\x00", "CA\ud800", "-", "US-", "ZZ-ZZ"])
def test_given_hostile_states_when_enriched_then_nothing_changes_and_nothing_raises(state):
    record = rec(state=state) if state.strip() else rec()
    assert enrich(record, "state_codes") == (record, ())


# --- phone_country ----------------------------------------------------------------------------

@pytest.mark.parametrize(("phone", "country"), [
    ("+44 20 7946 0000", "GB"),
    ("0044 20 7946 0000", "GB"),
    ("+1 415 555 2671", "US"),
    ("+1 416 555 0199", "CA"),  # +1 is shared: the area code decides
    ("+49 30 901820", "DE"),
    ("+61 2 9374 4000", "AU"),
])
def test_given_an_international_phone_and_no_country_when_enriched_then_country_is_set(
        phone, country):
    record, notes = enrich(rec(phone=phone), "phone_country")
    assert record.country == country
    assert record.raw["country"] == country and record.folded["country"] == country.lower()
    assert notes[0].rule == "enrich phone_country"
    assert notes[0].detail.startswith(f"country = {country} from +")
    # Only the calling code and two digits reach the trace (and so the audit history).
    assert phone.replace(" ", "")[-6:] not in notes[0].detail.replace(" ", "")


def test_given_a_phone_country_when_routing_then_a_country_rule_wins_and_trace_shows_it():
    compiled = routing("""
        version: 1
        enrich: [phone_country]
        reps: [{id: uk}, {id: other}]
        rules: [{name: uk, when: {country: {eq: GB}}, assign: {rep: uk}}]
        fallback: {rep: other}
    """)
    rule, trace = route(compiled, rec(phone="+44 20 7946 0000"))
    assert rule == "uk"
    assert trace[0] == TraceStep("enrich phone_country", "enriched", "country = GB from +44 20…")


def test_given_a_country_already_when_enriched_then_the_phone_does_not_override_it():
    record = rec(phone="+44 20 7946 0000", country="France")
    assert enrich(record, "phone_country") == (record, ())


@pytest.mark.parametrize("phone", [
    "garbage", "+0000", "020 7946 0000",  # national: no country without one assumed
    "+44 1481 123456",  # not a valid number
    "+800 1234 5678",  # non-geographic
    "+" + "9" * 5000, "1" * 5000, "+44 20 7946 0000" * 300, "☎", "+\ud800",
])
def test_given_garbage_phones_when_enriched_then_nothing_changes_and_nothing_raises(phone):
    record = rec(phone=phone)
    assert enrich(record, "phone_country") == (record, ())


def test_given_the_default_field_maps_then_phone_is_read_from_each_crm():
    from connectors.hubspot import settings as hubspot
    from connectors.salesforce import settings as salesforce

    assert hubspot.FIELD_MAPS["companies"]["phone"] == "phone"
    assert hubspot.FIELD_MAPS["contacts"]["phone"] == "phone"
    assert "phone" in hubspot.PROPERTIES["companies"] and "phone" in hubspot.PROPERTIES["contacts"]
    for obj in ("Account", "Lead", "Contact"):
        assert salesforce.FIELD_MAPS[obj]["phone"] == "Phone"


# --- tld_country ------------------------------------------------------------------------------

@pytest.mark.parametrize(("domain", "country"), [
    ("acme.co.uk", "GB"), ("acme.de", "DE"), ("eu.acme.fr", "FR"),
    ("https://www.acme.com.au", "AU"),
    ("acme.com.co", "CO"),  # under Colombia's own second level, .co is Colombia
    ("acme.com", None), ("acme.org", None), ("acme.eu", None), ("acme.internal", None),
    ("10.0.0.1", None), ("acme.io", None), ("acme.ai", None), ("acme.co", None),
    ("acme.tv", None), ("acme.me", None),
])
def test_given_a_domain_when_enriched_then_only_real_country_tlds_set_the_country(
        domain, country):
    record, notes = enrich(rec(domain=domain), "tld_country")
    assert record.country == country
    if country:
        assert notes[0].rule == "enrich tld_country"
        assert notes[0].detail.startswith(f"country = {country} from .")
    else:
        assert notes == ()


def test_given_the_vanity_list_then_the_documented_ones_are_in_it():
    assert {"io", "ai", "co", "tv", "me"} <= VANITY_TLDS
    assert "uk" not in VANITY_TLDS and "de" not in VANITY_TLDS


def test_given_a_free_mail_or_known_country_when_enriched_then_the_tld_is_ignored():
    for record in (rec(email="bob@gmx.de"), rec(domain="acme.de", country="US")):
        assert enrich(record, "tld_country") == (record, ())


def test_given_a_long_hostile_domain_when_enriched_then_nothing_raises():
    for domain in ("a." * 2000 + "de", "x" * 5000 + ".de", "ex\u00e4mple.de"):
        enrich(rec(domain=domain), "tld_country")  # no exception, whatever it finds


# --- company_match ----------------------------------------------------------------------------

ACCOUNTS = AccountIndex.build([
    ("ACME, Inc.", "acme.com"), ("Globex GmbH", "globex.de"), ("Initech LLC", "initech.com"),
    ("Umbrella Corp", "umbrella.com"), ("Umbrella Ltd", "umbrella.co.uk"),  # ambiguous name
    ("No Domain Co", ""),
])


@pytest.mark.parametrize(("name", "domain"), [
    ("Acme", "acme.com"), ("acme inc", "acme.com"), ("The ACME Company", "acme.com"),
    ("Globex G.m.b.H.", "globex.de"), ("Initech, L.L.C.", "initech.com"),
    ("Initeck", None),  # 86 < 90
    ("Umbrella", None),  # two accounts, two domains: never guessed
    ("Acme Rockets", None), ("Nothing Alike", None), ("No Domain", None),
])
def test_given_a_lead_without_an_account_domain_when_matched_then_the_name_finds_the_account(
        name, domain):
    lead = rec(object="lead", email="bob@gmail.com", name=name)
    record, notes = enrich(lead, "company_match", data=EnrichData(ACCOUNTS))
    if domain is None:
        assert (record, notes) == (lead, ())
        return
    assert record.domain == domain and record.domain_keys[-1] == domain and not record.freemail
    assert notes[0].rule == "enrich company_match"
    assert notes[0].detail.startswith(f"domain = {domain} from name {name!r} ~ account ")


def test_given_a_lower_threshold_when_matched_then_a_closer_typo_is_accepted():
    compiled = compile_enrichment([("company_match", {"threshold": 80})], None)
    assert compiled is not None
    record, _ = compiled.run(rec(object="lead", name="Initeck"), EnrichData(ACCOUNTS))
    assert record.domain == "initech.com"


def test_given_a_lead_whose_domain_has_an_account_when_matched_then_it_keeps_its_domain():
    lead = rec(object="lead", email="bob@globex.de", name="Acme")
    assert enrich(lead, "company_match", data=EnrichData(ACCOUNTS)) == (lead, ())
    # An account record, or no accounts known at all: nothing to do.
    account = rec(name="Acme")
    assert enrich(account, "company_match", data=EnrichData(ACCOUNTS)) == (account, ())
    lead = rec(object="lead", name="Acme")
    assert enrich(lead, "company_match") == (lead, ())


def test_given_hostile_company_names_when_matched_then_nothing_raises_and_nothing_is_guessed():
    for name in ("x" * 5000, "Acme " * 1000, "&&&", "Inc.", "\ud800", "💥" * 3000):
        lead = rec(object="lead", name=name)
        record, _ = enrich(lead, "company_match", data=EnrichData(ACCOUNTS))
        assert record.domain in (None, "acme.com")


def test_given_company_names_when_keyed_then_suffixes_and_punctuation_fold():
    assert company_key("ACME, Inc.") == company_key("Acme LLC") == company_key("acme") == "acme"
    assert company_key("Smith & Sons Ltd") == company_key("Smith and Sons") == "smith and sons"
    assert company_key("Société Générale SA") == "societe generale"
    assert company_key("Inc") == ""


# --- the trace and the stage ------------------------------------------------------------------

def test_given_several_steps_when_run_then_each_sees_the_last_and_each_is_traced():
    # The domain says GB, the phone says US: the first step to fill the country wins.
    record, notes = enrich(rec(domain="acme.co.uk", phone="+1 415 555 2671", state="NY"),
                           "tld_country", "phone_country", "state_codes")
    assert record.country == "GB"
    assert [n.rule for n in notes] == ["enrich tld_country"]  # NY is no GB subdivision


def test_given_a_plug_in_that_raises_when_run_then_the_record_goes_on_and_the_trace_says_so():
    def broken(record: Record, data: EnrichData) -> tuple[Record, str] | None:
        raise RuntimeError("boom")

    def upper(record: Record, data: EnrichData) -> tuple[Record, str] | None:
        return replace(record, country="NL"), "country = NL"

    stage = Enrichment((("broken", broken), ("upper", upper)))
    record, notes = stage.run(rec(), EnrichData())
    assert record.country == "NL"
    assert notes == (TraceStep("enrich broken", "failed", "RuntimeError: boom"),
                     TraceStep("enrich upper", "enriched", "country = NL"))


def test_given_no_enrich_key_then_nothing_is_compiled():
    assert routing("version: 1\n").enrichment is None


# --- the entry-point group ------------------------------------------------------------------

PLUGIN = '''\
from dataclasses import replace


class _Industry:
    def __call__(self, record, data):
        if record.industry is not None:
            return None
        return replace(record, industry="software", folded={**record.folded,
                       "industry": "software"}), "industry = software"


def industry_default(options):
    return _Industry()


def broken_factory(options):
    raise KeyError(options["needed"])
'''


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # What `pip install` of a package with an enricher leaves on sys.path: its module and a
    # dist-info naming it in the group.
    site = tmp_path / "site"
    (site / "example_enrichers-0.1.dist-info").mkdir(parents=True)
    (site / "example_enrichers-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: example-enrichers\nVersion: 0.1\n")
    (site / "example_enrichers-0.1.dist-info" / "entry_points.txt").write_text(textwrap.dedent("""\
        [account_router.enrichers]
        industry_default = example_enrichers:industry_default
        broken_factory = example_enrichers:broken_factory
        missing_module = no_such_module_anywhere:factory
        """))
    (site / "example_enrichers.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    yield


def test_given_a_registered_enricher_when_the_file_names_it_then_it_runs_before_the_rules(
        installed):
    compiled = routing("""
        version: 1
        enrich: [industry_default]
        reps: [{id: sw}]
        rules: [{name: software, when: {industry: {eq: Software}}, assign: {rep: sw}}]
    """)
    rule, trace = route(compiled, rec())
    assert rule == "software"
    assert trace[0] == TraceStep("enrich industry_default", "enriched", "industry = software")


def test_given_the_installed_package_then_the_built_ins_are_registered_in_the_group():
    from importlib.metadata import entry_points

    import sync.enrich as module

    found = {ep.name: ep for ep in entry_points(group="account_router.enrichers")}
    for name in ("state_codes", "phone_country", "tld_country", "company_match"):
        assert found[name].load() is getattr(module, name)


# --- errors with their paths ------------------------------------------------------------------

@pytest.mark.parametrize(("enrich", "path", "expected"), [
    ("[state_codes, phone_contry]", "enrich[1]", "an enricher, one of state_codes"),
    ("[42]", "enrich[0]", "an enricher"),
    ("[{company_match: {threshold: 150}}]", "enrich[0].company_match.threshold",
     "a number above 0 and at most 100"),
    ("[{company_match: {threshold: high}}]", "enrich[0].company_match.threshold", "a number"),
    ("[tld_country, {company_match: {treshold: 90}}]", "enrich[1].company_match.treshold",
     "only `threshold`"),
    ("[{company_match: 90}]", "enrich[0].company_match", "a mapping of options"),
    ("[{state_codes: {x: 1}}]", "enrich[0].state_codes.x", "no options"),
    ("[{a: {}, b: {}}]", "enrich[0]", "a step name, or one name with its options"),
    ("[tld_country, tld_country]", "enrich[1]", "each enricher at most once"),
    ("state_codes", "enrich", "a list"),
])
def test_given_a_bad_enrich_key_when_loading_then_the_error_names_its_path(enrich, path,
                                                                          expected):
    with pytest.raises(ConfigError) as caught:
        compile_routing(parse(f"version: 1\nenrich: {enrich}\n", source="r.yaml"))
    assert caught.value.path == path
    assert expected in caught.value.expected
    assert str(caught.value).startswith(f"r.yaml: {path}: expected ")


def test_given_options_with_defaults_when_loading_then_they_are_accepted():
    compiled = routing("""
        version: 1
        enrich: [{company_match: {threshold: 85}}, {state_codes: }, phone_country]
    """)
    assert compiled.enrichment is not None
    assert compiled.enrichment.names == ("company_match", "state_codes", "phone_country")
    assert compiled.enrichment.needs_accounts


@pytest.mark.parametrize(("name", "found"), [
    ("broken_factory", "KeyError: 'needed'"),
    ("missing_module", "missing_module: ModuleNotFoundError"),
])
def test_given_a_plug_in_that_fails_to_build_when_loading_then_exit_2_names_the_step(
        installed, name, found):
    with pytest.raises(ConfigError) as caught:
        compile_routing(parse(f"version: 1\nenrich: [state_codes, {name}]\n", source="r.yaml"))
    assert caught.value.path.startswith("enrich[1]")
    assert found in str(caught.value)
