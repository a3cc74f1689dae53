"""Routing-file validation (docs/routing-file.md#loading-and-errors): every error names the file,
the exact path of the offending item, what was expected and what was found; nothing routes with a
broken file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import config.examples
from config.routing import ConfigError, load, parse
from connectors.registry import known_crms
from sync.compiler import CompiledRouting, compile_routing, load_routing
from sync.normalize import build_record
from tasks.cli import app

EXAMPLE = Path(config.examples.__file__).parent / "routing.yaml"

# Three reps and nothing else: the smallest valid file most cases extend.
REPS = """\
version: 1
reps:
  - {id: ava}
  - {id: ben}
  - {id: cara}
"""


def doc(body: str = "", reps: str = REPS) -> str:
    return reps + textwrap.dedent(body)


def compile_text(text: str, source: str = "r.yaml") -> CompiledRouting:
    """What `load_routing` does, from text: parse (schema, references, the CRM names the
    connector registry declares) then compile (rules)."""
    return compile_routing(parse(text, source=source, crms=known_crms()))


def config_error(text: str, source: str = "r.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        compile_text(text, source=source)
    return caught.value


def assert_error(err: ConfigError, path: str, expected: str, found: str) -> None:
    """The error names file and exact path, says what was expected and what was found."""
    assert err.file == "r.yaml"
    assert err.path == path
    assert expected in err.expected
    message = str(err)
    assert message.startswith(f"r.yaml: {path}: expected "), message
    assert f", found {found}" in message, message


# ---------------------------------------------------------------------------------------------
# The smallest valid files


def test_given_a_minimal_file_when_compiling_then_it_is_valid_and_routes_nothing():
    compiled = compile_text("version: 1\n")
    assert compiled.rules == ()
    assert compiled.file.reps == []


def test_given_the_example_file_when_loading_then_it_compiles_without_warnings():
    compiled = load_routing(EXAMPLE)
    assert [r.name for r in compiled.rules] == [
        "lead-to-account", "named-accounts", "healthcare", "enterprise-size", "everyone-else"]
    assert compiled.warnings == ()


# ---------------------------------------------------------------------------------------------
# Unknown keys at every level


@pytest.mark.parametrize(
    ("text", "path"),
    [
        pytest.param(doc("rulez: []\n"), "rulez", id="top"),
        pytest.param(doc(reps="version: 1\nreps: [{id: ava}, {id: ben, manger: ava}]\n"),
                     "reps[1].manger", id="reps[i]"),
        pytest.param(doc(reps="version: 1\nreps: [{id: ava, crm_ids: {hubspot: '1'},"
                          " out_of_office: [{start: 2026-01-01, end: 2026-01-02, why: ski}]}]\n"),
                     "reps[0].out_of_office[0].why", id="reps[i].out_of_office[j]"),
        pytest.param(doc("pools: {smb: {members: [ava], strat: round_robin}}\n"),
                     "pools.smb.strat", id="pools.x"),
        pytest.param(doc("pools: {smb: {members: [ava], cap: {max: 3, pr: day}}}\n"),
                     "pools.smb.cap.pr", id="pools.x.cap"),
        pytest.param(doc("pools: {smb: {members: [ava], overflow: {rep: ben, then: cara}}}\n"),
                     "pools.smb.overflow.then", id="pools.x.overflow"),
        pytest.param(doc("lists: {named: {domains: [acme.com], extra: 1}}\n"),
                     "lists.named.extra", id="lists.x"),
        pytest.param(doc("""\
            rules:
              - {name: first, assign: {rep: ava}}
              - {name: second, whn: {name: x}, assign: {rep: ava}}
            """), "rules[1].whn", id="rules[i]"),
        pytest.param(doc("rules: [{name: r, assign: {rep: ava, weight: 2}}]\n"),
                     "rules[0].assign.weight", id="rules[i].assign"),
        pytest.param(doc("fallback: {rep: ava, escalate: ben}\n"), "fallback.escalate",
                     id="fallback"),
    ],
)
def test_given_an_unknown_key_when_parsing_then_error_names_its_exact_path(text, path):
    err = config_error(text)
    key = path.rsplit(".", 1)[-1]
    assert_error(err, path, "only known keys", f"unknown key {key!r}")


def test_given_a_target_kind_the_fallback_does_not_take_when_parsing_then_unknown_key():
    err = config_error(doc("pools: {smb: {members: [ava]}}\nfallback: {pool: smb}\n"))
    assert_error(err, "fallback.pool", "only known keys", "unknown key 'pool'")


@pytest.mark.parametrize(
    ("body", "path", "found"),
    [
        ("rules: [{name: r, assign: {rep: ava, pool: smb}}]\npools: {smb: {members: [ava]}}\n",
         "rules[0].assign", "{rep: ava, pool: smb}"),
        ("rules: [{name: r, assign: {}}]\n", "rules[0].assign", "an empty mapping"),
        ("fallback: {rep: ava, queue: Q1}\n", "fallback", "{rep: ava, queue: Q1}"),
        ("pools: {smb: {members: [ava], overflow: {}}}\n", "pools.smb.overflow",
         "an empty mapping"),
    ],
)
def test_given_not_exactly_one_target_when_parsing_then_error_shows_what_was_given(
        body, path, found):
    assert_error(config_error(doc(body)), path, "exactly one of", found)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ("rules: [{assign: {rep: ava}}]\n", "rules[0].name"),
        ("rules: [{name: r}]\n", "rules[0].assign"),
        ("pools: {smb: {strategy: weighted}}\n", "pools.smb.members"),
    ],
)
def test_given_a_required_key_missing_when_parsing_then_error_names_it(body, path):
    err = config_error(doc(body))
    assert err.path == path
    assert str(err) == f"r.yaml: {path}: expected this required key"


# ---------------------------------------------------------------------------------------------
# References to reps, pools and lists


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        pytest.param(doc("rules: [{name: r, assign: {rep: zed}}]\n"), "rules[0].assign.rep",
                     "a rep id defined under `reps`", id="rule-rep"),
        pytest.param(doc("rules: [{name: r, assign: {pool: zed}}]\n"), "rules[0].assign.pool",
                     "a pool defined under `pools`", id="rule-pool"),
        pytest.param(doc("pools: {smb: {members: [ava, zed]}}\n"), "pools.smb.members[1]",
                     "a rep id defined under `reps`", id="pool-member"),
        pytest.param("version: 1\nreps: [{id: ava}, {id: ben, backup: zed}]\n",
                     "reps[1].backup", "a rep id defined under `reps`", id="backup"),
        pytest.param("version: 1\nreps: [{id: ava, manager: zed}]\n", "reps[0].manager",
                     "a rep id defined under `reps`", id="manager"),
        pytest.param(doc("fallback: {rep: zed}\n"), "fallback.rep",
                     "a rep id defined under `reps`", id="fallback-rep"),
        pytest.param(doc("pools: {smb: {members: [ava], overflow: {rep: zed}}}\n"),
                     "pools.smb.overflow.rep", "a rep id defined under `reps`", id="overflow"),
        pytest.param(doc("""\
            lists: {named: {domains: [acme.com]}}
            rules:
              - {name: a, when: {domain: {in_list: named}}, assign: {rep: ava}}
              - {name: b, assign: {rep: ben}}
              - {name: c, when: {domain: {in_list: zed}}, assign: {rep: cara}}
            """), "rules[2].when.domain.in_list", "the name of a list defined under `lists`",
                     id="in_list"),
        pytest.param(doc("""\
            rules:
              - name: nested
                when: {any: [{name: x}, {not: {domain: {in_list: zed}}}]}
                assign: {rep: ava}
            """), "rules[0].when.any[1].not.domain.in_list",
                     "the name of a list defined under `lists`", id="nested-in_list"),
    ],
)
def test_given_an_unknown_reference_when_compiling_then_error_names_path_and_missing_name(
        text, path, expected):
    assert_error(config_error(text), path, expected, "'zed'")


def test_given_a_rep_that_backs_itself_up_when_parsing_then_error():
    err = config_error("version: 1\nreps: [{id: ava, backup: ava}]\n")
    assert_error(err, "reps[0].backup", "another rep", "'ava'")


# ---------------------------------------------------------------------------------------------
# Chains: manager cycles are errors, backups may loop


@pytest.mark.parametrize(
    ("reps", "path", "chain"),
    [
        pytest.param("[{id: a, manager: b}, {id: b, manager: a}]", "reps[0].manager",
                     "a -> b -> a", id="a-b-a"),
        pytest.param("[{id: a, manager: a}]", "reps[0].manager", "a -> a", id="self"),
        pytest.param("[{id: a, manager: b}, {id: b, manager: c}, {id: c, manager: d},"
                     " {id: d, manager: a}]", "reps[0].manager", "a -> b -> c -> d -> a",
                     id="four"),
        pytest.param("[{id: x, manager: a}, {id: a, manager: b}, {id: b, manager: a}]",
                     "reps[1].manager", "a -> b -> a", id="cycle-behind-a-tail"),
        pytest.param("[{id: a, backup: b, manager: b}, {id: b, backup: a, manager: a}]",
                     "reps[0].manager", "a -> b -> a", id="cycle-beside-mutual-backups"),
    ],
)
def test_given_a_cycle_of_manager_links_when_parsing_then_error_shows_the_cycle(
        reps, path, chain):
    err = config_error(f"version: 1\nreps: {reps}\n")
    assert_error(err, path, "manager links that end (no cycle)", repr(chain))


@pytest.mark.parametrize(
    "reps",
    [
        pytest.param("[{id: a, backup: b}, {id: b, backup: a}]", id="mutual-backups"),
        pytest.param("[{id: a, backup: b}, {id: b, manager: a}]", id="backup-then-manager"),
        pytest.param("[{id: a, manager: b}, {id: b, backup: a}]", id="manager-then-backup"),
        pytest.param("[{id: a, backup: b, manager: c}, {id: b, backup: c, manager: c},"
                     " {id: c, backup: a}]", id="mixed-loop"),
        pytest.param("[{id: a, manager: b}, {id: b, manager: c}, {id: c}]", id="long-chain"),
    ],
)
def test_given_loops_that_are_not_only_manager_links_when_compiling_then_valid(reps):
    compiled = compile_text(f"version: 1\nreps: {reps}\n")
    assert set(compiled.reps) >= {"a", "b"}


# ---------------------------------------------------------------------------------------------
# Pools


@pytest.mark.parametrize(
    ("body", "path", "expected", "found"),
    [
        pytest.param("pools: {p: {members: [ava, ben], strategy: weighted,"
                     " weights: {ava: 2, cara: 1}}}\n", "pools.p.weights.cara",
                     "a member of this pool", "'cara'", id="weight-for-non-member"),
        pytest.param("pools: {p: {members: [ava, ben], strategy: weighted,"
                     " weights: {ben: -1}}}\n", "pools.p.weights.ben", "a weight ≥ 0", "-1",
                     id="negative-weight"),
        pytest.param("pools: {p: {members: [ava], strategy: weighted, weights: {ava: 1.5}}}\n",
                     "pools.p.weights.ava", "a whole number", "1.5", id="fractional-weight"),
        pytest.param("pools: {p: {members: [ava, ben], strategy: weighted,"
                     " weights: {ava: 0, ben: 0}}}\n", "pools.p.weights",
                     "at least one member with a weight above 0", "{ava: 0, ben: 0}",
                     id="all-weights-zero"),
        pytest.param("pools: {p: {members: [ava], weights: {ava: 2}}}\n", "pools.p.weights",
                     "weights only with `strategy: weighted`", "'round_robin'",
                     id="weights-without-weighted"),
        pytest.param("pools: {p: {members: []}}\n", "pools.p.members", "a non-empty value",
                     "an empty list", id="empty-pool"),
        pytest.param("pools: {p: {members: [ava, ben, ava]}}\n", "pools.p.members[2]",
                     "each member listed once", "'ava'", id="duplicate-member"),
        pytest.param("pools: {p: {members: [ava], strategy: random}}\n", "pools.p.strategy",
                     "one of 'round_robin', 'weighted' or 'least_loaded'", "'random'",
                     id="unknown-strategy"),
        pytest.param("pools: {p: {members: [ava], cap: {max: 5, per: hour}}}\n",
                     "pools.p.cap.per", "one of 'day', 'week' or 'month'", "'hour'",
                     id="cap-per-hour"),
        pytest.param("pools: {p: {members: [ava], cap: {max: -1}}}\n", "pools.p.cap.max",
                     "a number ≥ 0", "-1", id="negative-cap"),
    ],
)
def test_given_a_broken_pool_when_parsing_then_error_names_path(body, path, expected, found):
    assert_error(config_error(doc(body)), path, expected, found)


def test_given_weights_with_zero_for_some_members_when_parsing_then_valid():
    compiled = compile_text(doc(
        "pools: {p: {members: [ava, ben], strategy: weighted, weights: {ava: 0, ben: 3}}}\n"))
    assert compiled.pools["p"].weights == {"ava": 0, "ben": 3}


# ---------------------------------------------------------------------------------------------
# Reps: ids, dates, timezones


@pytest.mark.parametrize(
    ("reps", "path", "expected", "found"),
    [
        pytest.param("[{id: ava}, {id: ben}, {id: ava}]", "reps[2].id",
                     "a rep id not used before (duplicate)", "'ava'", id="duplicate-id"),
        pytest.param("[{id: ava, out_of_office: [{start: 2026-13-01, end: 2026-12-31}]}]",
                     "reps[0].out_of_office[0].start", "a date YYYY-MM-DD", "'2026-13-01'",
                     id="month-13"),
        pytest.param("[{id: ava, out_of_office: [{start: 2026-02-01, end: 2026-02-30}]}]",
                     "reps[0].out_of_office[0].end", "a date YYYY-MM-DD", "'2026-02-30'",
                     id="february-30"),
        pytest.param("[{id: ava, out_of_office: [{start: 2026-12-01, end: tomorrow}]}]",
                     "reps[0].out_of_office[0].end", "a date YYYY-MM-DD", "'tomorrow'",
                     id="not-a-date"),
        pytest.param("[{id: ava, out_of_office: [{start: 2026-12-20, end: 2026-12-19}]}]",
                     "reps[0].out_of_office[0]", "an end on or after the start 2026-12-20",
                     "end 2026-12-19", id="end-before-start"),
        pytest.param("[{id: ava, out_of_office: [{start: 2026-12-20}]}]",
                     "reps[0].out_of_office[0].end", "this required key", None,
                     id="missing-end"),
        pytest.param("[{id: ava, timezone: Mars/Olympus_Mons}]", "reps[0].timezone",
                     "an IANA timezone", "'Mars/Olympus_Mons'", id="rep-timezone"),
        pytest.param("[{id: ava, active: maybe}]", "reps[0].active", "true or false",
                     "'maybe'", id="active-not-bool"),
        pytest.param("[{id: ava, crm_ids: {salesforce: 005000000000101AAA}},"
                     " {id: ben, crm_ids: {salesforce: '005000000000101'}}]",
                     "reps[1].crm_ids", "CRM ids not already used by rep 'ava'",
                     "'005000000000101'", id="crm-id-shared-15-vs-18"),
    ],
)
def test_given_a_broken_rep_when_compiling_then_error_names_path(reps, path, expected, found):
    err = config_error(f"version: 1\nreps: {reps}\n")
    if found is None:
        assert err.path == path and expected in err.expected
    else:
        assert_error(err, path, expected, found)


def test_given_an_out_of_office_of_one_day_when_parsing_then_valid():
    routing = parse("version: 1\nreps: [{id: ava, out_of_office: "
                    "[{start: 2026-12-24, end: 2026-12-24}]}]\n", source="r.yaml")
    assert str(routing.reps[0].out_of_office[0].end) == "2026-12-24"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "EST5EDT/x", "utc+2", ""])
def test_given_a_bad_top_level_timezone_when_parsing_then_error(zone):
    err = config_error(doc(f"timezone: '{zone}'\n"))
    assert_error(err, "timezone", "an IANA timezone such as Europe/Berlin", repr(zone))


@pytest.mark.parametrize(
    ("body", "path", "expected", "found"),
    [
        ("respect_existing_owner: sometimes\n", "respect_existing_owner",
         "one of 'valid_only', 'always' or 'never'", "'sometimes'"),
        ("ignore_owners: 005000000000INTEG\n", "ignore_owners", "a list", "'005000000000INTEG'"),
        ("field_maps: {pipedrive: {deals: {name: title}}}\n", "field_maps.pipedrive",
         "one of csv, file, hubspot, salesforce", "'pipedrive'"),
        ("field_maps: {hubspot: {compnies: {name: title}}}\n", "field_maps.hubspot.compnies",
         "a hubspot object, one of companies, contacts", "'compnies'"),
        ("field_maps: {hubspot: {companies: {revenue: annualrevenue}}}\n",
         "field_maps.hubspot.companies.revenue", "a normalized record field", "'revenue'"),
    ],
)
def test_given_a_wrong_top_level_value_when_parsing_then_error_names_path(
        body, path, expected, found):
    assert_error(config_error(doc(body)), path, expected, found)


def test_given_a_crm_ids_key_no_connector_declares_when_parsing_then_error_names_it():
    err = config_error("version: 1\nreps: [{id: ava, crm_ids: {hubspt: '101'}}]\n")
    assert_error(err, "reps[0].crm_ids.hubspt", "one of csv, file, hubspot, salesforce",
                 "'hubspt'")


def test_given_known_crms_when_parsing_then_only_those_names_pass_the_check():
    # The loader names no CRM itself: whatever the caller (the registry) declares is valid.
    text = "version: 1\nreps: [{id: ava, crm_ids: {memcrm: u1}}]\n" \
           "field_maps: {memcrm: {Deal: {name: title}}}\n"
    assert parse(text, crms={"memcrm": ("deal",)}).reps[0].crm_ids == {"memcrm": "u1"}
    with pytest.raises(ConfigError) as caught:
        parse(text, source="r.yaml", crms={"other": ("deal",)})
    assert caught.value.path == "reps[0].crm_ids.memcrm"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ("rules:\n  - {name: r, assign: {rep: ava}}\n  - {name: s, assign: {rep: ben}}\n"
         "  - {name: r, assign: {rep: cara}}\n", "rules[2].name"),
        ("rules:\n  - {name: r, assign: {rep: ava}}\n  - {name: r, assign: {rep: ava}}\n",
         "rules[1].name"),
    ],
)
def test_given_duplicate_rule_names_when_parsing_then_error_names_the_second(body, path):
    assert_error(config_error(doc(body)), path, "a rule name not used before", "'r'")


# ---------------------------------------------------------------------------------------------
# Conditions: shapes, operands, operators, fields


def rules_text(*whens: str) -> str:
    """A file whose rules[i] carries the i-th `when` (YAML flow text)."""
    lines = ["rules:"]
    for i, when in enumerate(whens):
        lines.append(f"  - {{name: r{i}, when: {when}, assign: {{queue: Q}}}}")
    return doc("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("whens", "path", "expected", "found"),
    [
        pytest.param(("{name: x}", "{name: y}", "{employees: {gt: lots}}"),
                     "rules[2].when.employees.gt", "a number", "'lots'", id="gt-not-a-number"),
        pytest.param(("{employees: {gte: true}}",), "rules[0].when.employees.gte", "a number",
                     "True", id="gte-bool"),
        pytest.param(("{fields.score: {lt: [1]}}",), "rules[0].when.fields.score.lt",
                     "a number", "[1]", id="lt-list"),
        pytest.param(("{employees: {in: [10, ten]}}",), "rules[0].when.employees.in[1]",
                     "a number", "'ten'", id="in-item-not-a-number"),
        pytest.param(("{employees: {eq: n/a}}",), "rules[0].when.employees.eq", "a number",
                     "'n/a'", id="eq-not-a-number"),
        pytest.param(("{employees: {bigger: 3}}",), "rules[0].when.employees.bigger",
                     "an operator (eq, in, gt", "'bigger'", id="unknown-operator"),
        pytest.param(("{employes: {gt: 3}}",), "rules[0].when.employes",
                     "a record field (id, object, name", "'employes'", id="unknown-field"),
        pytest.param(("{fields.: {eq: 3}}",), "rules[0].when.fields.", "a record field",
                     "'fields.'", id="fields-without-name"),
        pytest.param(("{all: [{name: x}, {nmae: y}]}",), "rules[0].when.all[1].nmae",
                     "a record field", "'nmae'", id="unknown-field-nested"),
        pytest.param(("{employees: {between: [1]}}",), "rules[0].when.employees.between",
                     "a list [low, high]", "[1]", id="between-one"),
        pytest.param(("{employees: {between: [1, 2, 3]}}",), "rules[0].when.employees.between",
                     "a list [low, high]", "[1, 2, 3]", id="between-three"),
        pytest.param(("{employees: {between: 5}}",), "rules[0].when.employees.between",
                     "a list [low, high]", "5", id="between-scalar"),
        pytest.param(("{employees: {between: {lo: 1, hi: 2}}}",),
                     "rules[0].when.employees.between", "a list [low, high]",
                     "{lo: 1, hi: 2}", id="between-mapping"),
        pytest.param(("{employees: {between: [1, many]}}",),
                     "rules[0].when.employees.between[1]", "a number", "'many'",
                     id="between-high-not-a-number"),
        pytest.param(("{employees: {between: [500, 10]}}",), "rules[0].when.employees.between",
                     "low ≤ high", "[500, 10]", id="between-reversed"),
        pytest.param(("{country: {in: US}}",), "rules[0].when.country.in", "a list of values",
                     "'US'", id="in-not-a-list"),
        pytest.param(("{domain: {not_in: acme.com}}",), "rules[0].when.domain.not_in",
                     "a list of values", "'acme.com'", id="not_in-not-a-list"),
        pytest.param(("{name: {in: [a, [b]]}}",), "rules[0].when.name.in[1]", "a single value",
                     "[b]", id="in-item-a-list"),
        pytest.param(("{country: {eq: Narnia}}",), "rules[0].when.country.eq",
                     "a country (ISO code or name)", "'Narnia'", id="country-eq"),
        pytest.param(("{country: {not_in: [US, Untied States]}}",),
                     "rules[0].when.country.not_in[1]", "a country (ISO code or name)",
                     "'Untied States'", id="country-not_in"),
        pytest.param(("{domain: {eq: 'not a domain'}}",), "rules[0].when.domain.eq",
                     "a domain such as acme.com", "'not a domain'", id="domain-eq"),
        pytest.param(("{name: {matches: '(['}}",), "rules[0].when.name.matches",
                     "a valid regular expression", "'(['", id="bad-regex"),
        pytest.param(("{name: {exists: maybe}}",), "rules[0].when.name.exists",
                     "true or false", "'maybe'", id="exists-not-bool"),
        pytest.param(("{name: {contains: '  '}}",), "rules[0].when.name.contains",
                     "a non-empty text", "'  '", id="contains-blank"),
        pytest.param(("{industry: {eq: '&'}}",), "rules[0].when.industry.eq",
                     "a non-empty value", "'&'", id="industry-only-punctuation"),
        pytest.param(("{name: {}}",), "rules[0].when.name", "at least one operator",
                     "an empty mapping", id="no-operator"),
        pytest.param(("{name: [a, b]}",), "rules[0].when.name", "a mapping of operators",
                     "[a, b]", id="bare-list"),
        pytest.param(("{any: {name: x}}",), "rules[0].when.any", "a list of conditions",
                     "{name: x}", id="any-not-a-list"),
        pytest.param(("{not: [{name: x}]}",), "rules[0].when.not",
                     "a mapping of fields to operators", "[{name: x}]", id="not-a-list"),
        pytest.param(("{all: [{name: x}, 5]}",), "rules[0].when.all[1]",
                     "a mapping of fields to operators", "5", id="all-item-scalar"),
    ],
)
def test_given_a_broken_condition_when_compiling_then_error_names_path(
        whens, path, expected, found):
    assert_error(config_error(rules_text(*whens)), path, expected, found)


def test_given_a_when_that_is_a_list_when_parsing_then_error_expects_a_mapping():
    err = config_error(doc("rules: [{name: r, when: [a], assign: {rep: ava}}]\n"))
    assert_error(err, "rules[0].when", "a mapping", "[a]")


def test_given_the_brief_example_when_gt_gets_text_then_the_exact_message():
    err = config_error(rules_text("{name: x}", "{name: y}", "{employees: {gt: lots}}"))
    assert str(err) == "r.yaml: rules[2].when.employees.gt: expected a number, found 'lots'"


@pytest.mark.parametrize("when", [
    "{country: {in: [SE, NO, DK]}}", "{country: {eq: NO}}", "{country: NO}"])
def test_given_norway_written_as_NO_when_compiling_then_it_is_a_country_not_false(when):
    compiled = compile_text(rules_text(when))
    assert compiled.first_match(build_record({"id": "1", "country": "Norway"}), 0) == 0


@pytest.mark.parametrize(
    ("yaml_value", "python_value"),
    [
        ("NO", "NO"), ("yes", "yes"), ("off", "off"), ("02134", "02134"), ("1:30", "1:30"),
        ("true", True), ("false", False), ("42", 42), ("-5", -5), ("1_000", 1000),
        ("2.5", 2.5), ("1e3", 1000.0), ("2026-12-01", "2026-12-01"),
    ],
)
def test_given_yaml_scalars_when_parsing_then_only_yaml_1_2_style_values_change_type(
        yaml_value, python_value):
    routing = parse(f"version: 1\nrules: [{{name: r, when: {{fields.x: {{eq: {yaml_value}}}}},"
                    f" assign: {{queue: Q}}}}]\n", source="r.yaml")
    operand = routing.rules[0].when["fields.x"]["eq"]  # type: ignore[index]
    assert operand == python_value
    assert type(operand) is type(python_value)


def test_given_a_postal_code_with_a_leading_zero_when_matching_then_it_is_compared_as_text():
    compiled = compile_text(rules_text("{postal_code: {in: [02134, 02135]}}"))
    assert compiled.first_match(build_record({"id": "1", "postal_code": "02134"}), 0) == 0
    assert compiled.first_match(build_record({"id": "1", "postal_code": "1116"}), 0) == -1


# ---------------------------------------------------------------------------------------------
# Lists


def test_given_a_list_file_relative_to_the_routing_file_when_loading_then_comments_are_skipped(
        tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    (folder / "lists").mkdir(parents=True)
    (folder / "lists" / "named.txt").write_text(
        "\ufeff# Named accounts\n\nacme.com\n   \n  # indented comment\nGlobex.com  \n"
        "https://www.initech.co.uk/about\n", encoding="utf-8")
    (folder / "routing.yaml").write_text(doc("""\
        lists: {named: {file: lists/named.txt}}
        rules: [{name: named, when: {domain: {in_list: named}}, assign: {rep: ava}}]
        """), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the routing file, not to the working directory

    compiled = load_routing(folder / "routing.yaml")

    assert compiled.file.list_domains("named") == (
        "acme.com", "Globex.com", "https://www.initech.co.uk/about")
    for domain in ("acme.com", "globex.com", "eu.initech.co.uk"):
        assert compiled.first_match(build_record({"id": "1", "domain": domain}), 0) == 0
    assert compiled.first_match(build_record({"id": "1", "domain": "umbrella.com"}), 0) == -1


def test_given_a_relative_routing_path_when_loading_then_list_files_are_found_beside_it(
        tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "named.txt").write_text("acme.com\n", encoding="utf-8")
    (tmp_path / "conf" / "r.yaml").write_text(doc("lists: {named: {file: named.txt}}\n"))
    monkeypatch.chdir(tmp_path)
    assert load_routing(Path("conf/r.yaml")).file.list_domains("named") == ("acme.com",)


def test_given_a_missing_list_file_when_loading_then_error_names_the_list_and_the_file(
        tmp_path):
    (tmp_path / "r.yaml").write_text(doc("lists: {named: {file: missing.txt}}\n"))
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "r.yaml")
    err = caught.value
    assert err.file == str(tmp_path / "r.yaml")
    assert err.path == "lists.named.file"
    assert "a readable list file" in err.expected
    assert str(tmp_path / "missing.txt") in err.expected
    assert str(err).endswith("found 'missing.txt'")


def test_given_a_list_file_line_no_domain_when_compiling_then_error_gives_its_number_not_text(
        tmp_path):
    (tmp_path / "named.txt").write_text("# header\n\nacme.com\nnot a domain\n")
    (tmp_path / "r.yaml").write_text(doc("lists: {named: {file: named.txt}}\n"))
    with pytest.raises(ConfigError) as caught:
        load_routing(tmp_path / "r.yaml")
    err = caught.value
    assert err.path == "lists.named.file (named.txt, line 4)"
    assert err.expected == "a domain such as acme.com"
    # Only the line number: the text of a file that is not a list could be a secret.
    assert str(err).endswith("found a line that is not a domain")
    assert "not a domain'" not in str(err)


def test_given_an_inline_domain_that_is_no_domain_when_compiling_then_error_gives_its_index():
    err = config_error(doc("lists: {named: {domains: [acme.com, 'bad domain']}}\n"))
    assert_error(err, "lists.named.domains[1]", "a domain such as acme.com", "'bad domain'")


@pytest.mark.parametrize(
    ("spec", "found"),
    [("{}", "an empty mapping"), ("{domains: [a.com], file: b.txt}", "{domains: [a.com], file:")],
)
def test_given_a_list_with_neither_or_both_sources_when_parsing_then_error(spec, found):
    err = config_error(doc(f"lists: {{named: {spec}}}\n"))
    assert err.path == "lists.named"
    assert "exactly one of `domains` or `file`" in err.expected
    assert f"found {found}" in str(err)


@pytest.mark.parametrize(
    ("entries", "where"),
    [
        ("[acme.com, gmail.com]", "lists.named.domains[1]"),
        ("[Yahoo.co.jp]", "lists.named.domains[0]"),
        ("['https://www.hotmail.com/']", "lists.named.domains[0]"),
    ],
)
def test_given_a_free_mail_domain_in_a_list_when_compiling_then_one_warning_names_it(
        entries, where):
    compiled = compile_text(doc(f"lists: {{named: {{domains: {entries}}}}}\n"))
    assert len(compiled.warnings) == 1
    assert compiled.warnings[0].startswith(f"{where}: ")
    assert "free-mail" in compiled.warnings[0]


def test_given_a_free_mail_domain_condition_when_compiling_then_warned_once_with_its_path():
    compiled = compile_text(rules_text("{domain: {eq: gmail.com}, name: {exists: true}}"))
    assert compiled.warnings == (
        "rules[0].when.domain.eq: free-mail domain in a domain condition",)


# ---------------------------------------------------------------------------------------------
# The file itself: version, YAML, reading


@pytest.mark.parametrize(
    ("text", "path", "expected", "found"),
    [
        ("version: 2\n", "version", "one of 1", "2"),
        ("version: '1.0'\n", "version", "one of 1", "'1.0'"),
        ("reps: []\n", "version", "this required key", None),
        ("- version: 1\n", "(top level)", "a mapping with `version: 1`", "[{version: 1}]"),
        ("", "(top level)", "a mapping with `version: 1`", "nothing"),
        ("just text\n", "(top level)", "a mapping with `version: 1`", "'just text'"),
    ],
)
def test_given_a_file_that_is_not_a_version_1_mapping_when_parsing_then_error(
        text, path, expected, found):
    err = config_error(text)
    assert err.path == path
    assert expected in err.expected
    if found is not None:
        assert str(err).endswith(f"found {found}")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("version: 1\nreps: [\n", 3),
        ("version: 1\nrules:\n  - name: r\n   assign: {rep: ava}\n", 4),
        ("version: 1\nreps:\n\t- {id: ava}\n", 3),
    ],
)
def test_given_invalid_yaml_when_parsing_then_error_names_file_line_and_problem(text, line):
    err = config_error(text)
    assert err.file == "r.yaml"
    assert err.path.startswith(f"line {line}, column ")
    assert err.expected == "valid YAML"
    assert str(err).startswith(f"r.yaml: line {line}, column ")


@pytest.mark.parametrize(
    ("text", "key", "line", "first"),
    [
        ("version: 1\nrules: []\nreps: []\nrules: []\n", "rules", 4, 2),
        ("version: 1\nreps:\n  - id: ava\n    manager: ben\n    manager: cara\n", "manager", 5, 4),
        ("version: 1\nreps: [{id: ava, id: ben}]\n", "id", 2, 2),
    ],
)
def test_given_a_key_twice_in_one_mapping_when_parsing_then_error_instead_of_last_wins(
        text, key, line, first):
    err = config_error(text)
    assert err.path.startswith(f"line {line}, column ")
    assert err.expected == "each key at most once in a mapping"
    assert str(err).endswith(f"found {key!r} again (first given on line {first})")


def test_given_yaml_merge_keys_when_parsing_then_overriding_a_merged_key_is_allowed():
    anchored = textwrap.dedent("""\
        version: 1
        reps:
          - &base {id: ava, timezone: Europe/Berlin, active: true}
          - {<<: *base, id: ben, active: false}
        """)
    reps = parse(anchored, source="r.yaml").reps
    assert [(r.id, r.timezone, r.active) for r in reps] == [
        ("ava", "Europe/Berlin", True), ("ben", "Europe/Berlin", False)]


def test_given_a_missing_file_when_loading_then_error_names_it_and_says_no_such_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load(missing)
    err = caught.value
    assert err.file == str(missing)
    assert str(err) == f"{missing}: (top level): expected a readable routing file, " \
                       "found no such file"
    with pytest.raises(ConfigError):
        load_routing(missing)


def test_given_a_file_with_a_bom_when_loading_then_it_parses(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes("\ufeffversion: 1\nreps: [{id: ava}]\n".encode())
    assert load(path).reps[0].id == "ava"


def test_given_a_loaded_file_when_a_rule_is_broken_then_error_names_that_file(tmp_path):
    path = tmp_path / "team.yaml"
    path.write_text(rules_text("{employees: {gt: lots}}"))
    with pytest.raises(ConfigError) as caught:
        load_routing(path)
    assert caught.value.file == str(path)
    assert str(caught.value).startswith(f"{path}: rules[0].when.employees.gt: expected a number")


# ---------------------------------------------------------------------------------------------
# `account-router validate`


runner = CliRunner()


def test_given_the_example_file_when_validating_then_exit_0_and_one_summary_line(monkeypatch):
    monkeypatch.chdir(EXAMPLE.parent)
    result = runner.invoke(app, ["validate", "routing.yaml"])
    assert result.exit_code == 0, result.stderr
    expected = f"routing.yaml: OK: {load_routing(EXAMPLE).summary()}"
    assert result.stdout == expected + "\n"
    assert "10 reps, 2 pools, 1 lists, 5 rules" in expected
    assert result.stderr == ""


def test_given_a_long_path_when_validating_then_the_summary_is_still_one_line(tmp_path):
    folder = tmp_path / ("a-rather-long-folder-name-for-territory-plans" * 2)
    folder.mkdir()
    (folder / "routing.yaml").write_text(doc("rules: [{name: r, assign: {rep: ava}}]\n"))
    result = runner.invoke(app, ["validate", str(folder / "routing.yaml")])
    assert result.exit_code == 0
    assert result.stdout == f"{folder / 'routing.yaml'}: OK: 3 reps, 0 pools, 0 lists, 1 rules\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (rules_text("{name: x}", "{name: y}", "{employees: {gt: lots}}"),
         "r.yaml: rules[2].when.employees.gt: expected a number, found 'lots'"),
        ("version: 2\n", "r.yaml: version: expected one of 1, found 2"),
        ("version: 1\nreps: [\n", "r.yaml: line 3, column 1: expected valid YAML"),
        (doc("rules: [{name: r, assign: {rep: zed}}]\n"),
         "r.yaml: rules[0].assign.rep: expected a rep id defined under `reps`, found 'zed'"),
    ],
)
def test_given_a_broken_file_when_validating_then_exit_2_message_on_stderr_no_traceback(
        tmp_path, monkeypatch, text, message):
    (tmp_path / "r.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", "r.yaml"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not isinstance(result.exception, Exception) or isinstance(result.exception,
                                                                     SystemExit)


def test_given_a_missing_file_when_validating_then_exit_2_and_says_no_such_file(tmp_path,
                                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", "nope.yaml"])
    assert result.exit_code == 2
    assert "nope.yaml: (top level): expected a readable routing file, found no such file" \
        in " ".join(result.stderr.split())


@pytest.mark.parametrize("pattern", ["[abc](", "[/abc]("])
def test_given_an_error_that_contains_brackets_when_validating_then_printed_verbatim(
        tmp_path, monkeypatch, pattern):
    (tmp_path / "r.yaml").write_text(rules_text(f"{{name: {{matches: '{pattern}'}}}}"))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", "r.yaml"])
    assert result.exit_code == 2
    assert f"found {pattern!r}" in result.stderr


def test_given_a_list_with_a_free_mail_domain_when_validating_then_warning_on_stderr_exit_0(
        tmp_path, monkeypatch):
    (tmp_path / "r.yaml").write_text(doc("lists: {named: {domains: [acme.com, gmail.com]}}\n"))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", "r.yaml"])
    assert result.exit_code == 0
    assert result.stderr.startswith("warning: r.yaml: lists.named.domains[1]: 'gmail.com'")
    assert "free-mail" in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stdout.startswith("r.yaml: OK: 3 reps, 0 pools, 1 lists, 0 rules")
    assert "gmail" not in result.stdout
