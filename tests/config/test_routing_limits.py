"""Routing files never crash or hang the router (issue 8, points 6 and 7): one regression test per
class of hostile file. Each is refused by the loader with file and path (the CLI's exit 2), or
loads and routes; and a list file's content never reaches a message."""

from __future__ import annotations

import os
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

import config.routing
import sync.conditions
from config.routing import MAX_ROUTING_BYTES, MAX_YAML_NODES, ConfigError, load, parse
from sync.compiler import CompiledRouting, compile_routing, load_routing
from sync.decide import RoutingContext, decide
from sync.normalize import build_record
from tasks.cli import app

NOW = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)

HEAD = """\
version: 1
reps:
  - {id: ava}
  - {id: ben}
"""


def compile_text(text: str) -> CompiledRouting:
    return compile_routing(parse(text, source="r.yaml"))


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        compile_text(text)
    assert caught.value.file == "r.yaml"
    return caught.value


def rule(when: str, name: str = "r") -> str:
    return HEAD + f"rules:\n  - {{name: {name}, when: {when}, assign: {{rep: ava}}}}\n"


def write(folder: Path, text: str) -> Path:
    path = folder / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def validate(path: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", str(path)], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    return result.exit_code, result.output


# ---------------------------------------------------------------------------------------------
# Numbers beyond float/int range


@pytest.mark.parametrize(
    ("when", "path"),
    [
        pytest.param("{employees: {gt: .inf}}", "rules[0].when.employees.gt", id="inf"),
        pytest.param("{employees: {lte: -.inf}}", "rules[0].when.employees.lte", id="-inf"),
        pytest.param("{employees: {gt: .nan}}", "rules[0].when.employees.gt", id="nan"),
        pytest.param("{employees: {between: [0, 1e999]}}", "rules[0].when.employees.between[1]",
                     id="float-overflow"),
        pytest.param("{employees: {in: [5, 1e400]}}", "rules[0].when.employees.in[1]",
                     id="in-overflow"),
        pytest.param("{employees: {gt: " + "9" * 5000 + "}}", "rules[0].when.employees.gt",
                     id="5000-digits"),
        pytest.param("{annual_revenue: {lt: 1e19}}", "rules[0].when.annual_revenue.lt",
                     id="beyond-1e18"),
        pytest.param("{fields.score: {gte: '" + "9" * 400 + "'}}", "rules[0].when.fields.score.gte",
                     id="raw-field"),
    ],
)
def test_given_a_condition_number_out_of_range_when_compiling_then_error_names_path(when, path):
    err = refused(rule(when))
    assert err.path == path
    assert "finite number" in err.expected


@pytest.mark.parametrize(
    ("pool", "path"),
    [
        pytest.param("{members: [ava], cap: {max: " + "9" * 5000 + "}}", "pools.p.cap.max",
                     id="cap-5000-digits"),
        pytest.param("{members: [ava], cap: {max: 10000000000000}}", "pools.p.cap.max",
                     id="cap-huge"),
        pytest.param("{members: [ava, ben], strategy: weighted, weights: {ava: "
                     + "9" * 400 + "}}", "pools.p.weights.ava", id="weight-400-digits"),
        pytest.param("{members: [ava, ben], strategy: weighted, weights: {ava: 99999999999}}",
                     "pools.p.weights.ava", id="weight-huge"),
    ],
)
def test_given_a_cap_or_weight_out_of_range_when_parsing_then_error_names_path(pool, path):
    err = refused(HEAD + f"pools:\n  p: {pool}\n")
    assert err.path == path
    assert len(str(err)) < 400  # a 5,000-digit value is shortened, not echoed


def test_given_weights_at_and_past_the_bound_when_loading_then_the_largest_still_routes():
    pool = ("pools:\n  p: {members: [ava, ben], strategy: weighted, "
            "weights: {ava: WEIGHT, ben: 1}}\nrules:\n  - {name: all, assign: {pool: p}}\n")
    err = refused(HEAD + pool.replace("WEIGHT", "1000001"))
    assert (err.path, err.expected) == ("pools.p.weights.ava", "a weight ≤ 1,000,000")
    r = compile_text(HEAD + pool.replace("WEIGHT", "1000000"))
    assert decide(build_record({"id": "1"}), RoutingContext(routing=r, now=NOW)).owner == "ava"


def test_given_a_5000_digit_id_when_parsing_then_it_stays_exact_text():
    # Python refuses int() on more than 4,300 digits; such a value is an identifier anyway.
    routing = parse(HEAD + "ignore_owners: [" + "7" * 5000 + "]\n", source="r.yaml")
    assert routing.ignore_owners == ["7" * 5000]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("!!int " + "9" * 5000, "a whole number of at most 18 digits", id="int-tag"),
        pytest.param("!!int 0x" + "f" * 5000, "a whole number of at most 18 digits", id="hex"),
        pytest.param("!!binary aGVsbG8=", "plain YAML values", id="binary"),
        pytest.param("!!timestamp 2026-12-07", "plain YAML values", id="timestamp"),
        pytest.param("!!set {a, b}", "plain YAML values", id="set"),
    ],
)
def test_given_an_explicit_tag_no_key_takes_when_parsing_then_refused_at_its_line(
        value, expected):
    err = refused(rule("{employees: {gt: " + value + "}}"))
    assert err.path == "line 6, column 38"  # where the value stands
    assert expected in err.expected


@pytest.mark.parametrize("when", ['{name: {eq: "x\\ud800"}}', '{name: {matches: "\\udc00"}}'])
def test_given_a_lone_surrogate_escape_when_parsing_then_refused_at_its_line(when):
    # A condition's operand is no pydantic string: without the check it would reach `explain`
    # output and the audit store, neither of which can encode it.
    err = refused(rule(when))
    assert err.path.startswith("line 6, column ")
    assert err.expected == "valid Unicode text"


# ---------------------------------------------------------------------------------------------
# Regular expressions: linear time, or refused


def test_given_a_catastrophic_pattern_when_routing_a_long_value_then_it_answers_at_once():
    r = compile_text(rule("{name: {matches: '(a+)+$'}}") + "fallback: {rep: ben}\n")
    ctx = RoutingContext(routing=r, now=NOW)
    started = time.perf_counter()
    decision = decide(build_record({"id": "1", "name": "a" * 100_000 + "!"}), ctx)
    # Python's backtracking `re` takes longer than the age of the universe here.
    assert time.perf_counter() - started < 2.0
    assert decision.owner == "ben"
    assert decide(build_record({"id": "2", "name": "AAA"}), ctx).owner == "ava"
    # RE2 needs UTF-8; a lone surrogate (valid in JSON) is searched as bytes, not a crash.
    assert decide(build_record({"id": "3", "name": "a\ud800a"}), ctx).owner == "ava"


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        pytest.param(r"(a)\1", "invalid escape sequence", id="backreference"),
        pytest.param("foo(?=bar)", "invalid perl operator", id="lookahead"),
        pytest.param("(?<!x)y", "invalid perl operator", id="lookbehind"),
        pytest.param("(", "missing )", id="unbalanced"),
    ],
)
def test_given_a_pattern_re2_cannot_run_when_compiling_then_error_names_path_and_why(
        pattern, why):
    err = refused(rule("{name: {matches: '" + pattern + "'}}"))
    assert err.path == "rules[0].when.name.matches"
    assert "RE2" in err.expected
    assert why in err.expected


def test_given_a_very_long_pattern_when_compiling_then_it_is_refused_with_its_path():
    err = refused(rule("{name: {matches: '" + "a" * 5000 + "'}}"))
    assert err.path == "rules[0].when.name.matches"
    assert "at most 1,000 characters" in err.expected


# ---------------------------------------------------------------------------------------------
# YAML aliases and nesting


def laughs(levels: int = 9) -> str:
    lines = ["version: 1", "ignore_owners:", "  - &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"  - &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_given_billion_laughs_when_parsing_then_refused_before_expansion_but_merges_work():
    started = time.perf_counter()
    err = refused(laughs())
    assert time.perf_counter() - started < 2.0
    assert f"at most {MAX_YAML_NODES:,} values with aliases expanded" in err.expected
    # Anchors themselves stay allowed: a merge of shared rep settings is fair use.
    r = compile_text("version: 1\nreps:\n  - &base {id: ava, timezone: Europe/Berlin}\n"
                     "  - {<<: *base, id: ben}\n")
    assert r.zones["ben"].key == "Europe/Berlin"


def test_given_an_alias_inside_its_own_anchor_when_parsing_then_refused():
    err = refused("version: 1\nignore_owners: &a [x, *a]\n")
    assert "do not contain themselves" in err.expected


@pytest.mark.parametrize("depth", [100, 5000])
def test_given_deeply_nested_yaml_when_parsing_then_refused_with_its_line(depth):
    err = refused("version: 1\nignore_owners: " + "[" * depth + "]" * depth + "\n")
    assert err.path.startswith("line 2, column ")
    assert "nesting at most" in err.expected


@pytest.mark.parametrize(
    "when",
    [
        pytest.param("{not: " * 40 + "{name: x}" + "}" * 40, id="not"),
        pytest.param("{any: [" * 26 + "{name: x}" + "]}" * 26, id="any"),
        pytest.param("{all: [{not: " * 13 + "{name: x}" + "}]}" * 13, id="all-not"),
    ],
)
def test_given_deeply_nested_conditions_when_compiling_then_refused_with_a_path(when):
    err = refused(rule(when))
    assert err.path.startswith("rules[0].when.")
    assert "nested at most" in err.expected


def test_given_conditions_at_and_past_the_depth_limit_when_compiling_then_only_past_refused():
    err = refused(rule("{not: " * 25 + "{name: x}" + "}" * 25))
    assert err.path == "rules[0].when" + ".not" * 25
    r = compile_text(rule("{not: " * 24 + "{name: x}" + "}" * 24))
    ctx = RoutingContext(routing=r, now=NOW)
    assert decide(build_record({"id": "1", "name": "x"}), ctx).outcome == "assigned"


def test_given_more_values_than_the_budget_as_written_when_parsing_then_refused(monkeypatch):
    # A lower budget for the test: parsing 200,000 values takes PyYAML seconds.
    monkeypatch.setattr(config.routing, "MAX_YAML_NODES", 1_000)
    err = refused("version: 1\nignore_owners: [" + ", ".join(["x"] * 1_000) + "]\n")
    assert "at most 1,000 values with aliases expanded" in err.expected
    assert err.path.startswith("line 2, column ")  # where the budget ran out


def test_given_a_routing_file_over_a_megabyte_when_loading_then_refused_unread(tmp_path):
    path = write(tmp_path, "version: 1\n# " + "x" * MAX_ROUTING_BYTES + "\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert "larger than the 1,048,576-byte limit" in str(caught.value)


def test_given_more_operator_tests_than_the_budget_when_compiling_then_refused_at_the_first_over(
        monkeypatch):
    monkeypatch.setattr(sync.conditions, "MAX_OPERATORS", 3)
    text = HEAD + "rules:\n" + "".join(
        f"  - {{name: r{i}, when: {{name: {{eq: x{i}}}}}, assign: {{rep: ava}}}}\n"
        for i in range(4))
    err = refused(text)
    assert err.path == "rules[3].when.name.eq"
    assert "at most 3 operator tests in all rules" in err.expected


# ---------------------------------------------------------------------------------------------
# Timezones


@pytest.mark.parametrize(
    "zone",
    ["America", "Etc", "a" * 5000, "Europe/" + "x" * 300],
)
def test_given_a_timezone_that_is_no_iana_key_when_parsing_then_error_names_path(zone):
    err = refused(HEAD.replace("{id: ben}", f"{{id: ben, timezone: {zone}}}"))
    assert err.path == "reps[1].timezone"
    assert "IANA timezone" in err.expected
    assert len(str(err)) < 300


# ---------------------------------------------------------------------------------------------
# The routing file itself


def test_given_a_routing_path_that_is_a_fifo_when_loading_then_refused_without_waiting(
        tmp_path):
    fifo = tmp_path / "routing.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as caught:
        load(fifo)
    assert "FIFO" in str(caught.value)


def test_given_a_routing_path_that_is_a_device_when_validating_then_exit_2_unread():
    code, output = validate(Path("/dev/zero"))  # read to the end, it would fill the memory
    assert code == 2
    assert "/dev/zero: (top level): expected a readable UTF-8 routing file, found a " \
           "character device" in output


# ---------------------------------------------------------------------------------------------
# List files (point 7): they stay in their folder and their content never reaches a message


SECRET = "AWS_SECRET=hunter2"


def routing_with_list(folder: Path, file: str) -> Path:
    return write(folder, HEAD + f"lists:\n  named: {{file: '{file}'}}\n")


def assert_refused_without_content(path: Path, list_roots: tuple[str, ...] = ()) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_routing(path, list_roots=list_roots)
    err = caught.value
    assert err.file == str(path)
    assert err.path == "lists.named.file"
    assert SECRET not in str(err)
    assert "hunter2" not in str(err)
    return err


@pytest.mark.parametrize("target", ["/proc/self/environ", "/etc/passwd", "~/.bashrc",
                                    "../secret.txt"])
def test_given_a_list_file_outside_the_routing_folder_when_loading_then_refused(
        tmp_path, target):
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    folder = tmp_path / "conf"
    folder.mkdir()
    err = assert_refused_without_content(routing_with_list(folder, target))
    assert "ACCOUNT_ROUTER_LIST_ROOTS" in err.expected or "no such file" not in str(err)


def test_given_a_symlink_escaping_the_folder_when_loading_then_refused(tmp_path):
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "named.txt").symlink_to(tmp_path / "secret.txt")
    err = assert_refused_without_content(routing_with_list(folder, "named.txt"))
    assert "outside" in str(err)


def test_given_proc_allowed_as_a_root_when_listing_environ_then_refused_for_nul_bytes(tmp_path):
    os.environ["ROUTING_TEST_SECRET"] = SECRET  # so this process's environ holds it
    try:
        err = assert_refused_without_content(
            routing_with_list(tmp_path, "/proc/self/environ"), list_roots=("/proc",))
    finally:
        del os.environ["ROUTING_TEST_SECRET"]
    assert "NUL" in str(err)
    environ = Path("/proc/self/environ").read_bytes().split(b"\0")
    assert not any(entry and entry.decode(errors="replace") in str(err) for entry in environ)


def test_given_a_list_of_secrets_in_its_folder_when_compiling_then_no_line_is_quoted(tmp_path):
    (tmp_path / "named.txt").write_text(f"acme.com\n{SECRET}\n")
    with pytest.raises(ConfigError) as caught:
        load_routing(routing_with_list(tmp_path, "named.txt"))
    assert caught.value.path == "lists.named.file (named.txt, line 2)"
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("make", "why"),
    [
        pytest.param(lambda p: os.mkfifo(p), "FIFO", id="fifo"),
        pytest.param(lambda p: p.mkdir(), "directory", id="directory"),
        pytest.param(lambda p: p.write_bytes(b"acme.com\n" + SECRET.encode() + b"\0\n"),
                     "NUL", id="nul-bytes"),
        pytest.param(lambda p: p.write_bytes(b"acme.com\n\xff\xfe" + SECRET.encode()),
                     "UTF-8", id="not-utf8"),
        pytest.param(lambda p: p.write_text("acme.com\n" + SECRET * 100 + "\n"),
                     "line 2 longer than", id="long-line"),
    ],
)
def test_given_a_list_file_that_is_no_text_list_when_loading_then_refused_with_why(
        tmp_path, make, why):
    make(tmp_path / "named.txt")
    err = assert_refused_without_content(routing_with_list(tmp_path, "named.txt"))
    assert why in str(err)


def test_given_a_device_in_an_allowed_root_when_loading_then_refused_without_reading(tmp_path):
    err = assert_refused_without_content(routing_with_list(tmp_path, "/dev/zero"),
                                         list_roots=("/dev",))
    assert "character device" in str(err)


def test_given_a_list_in_an_allowed_root_when_validating_then_the_setting_admits_it(tmp_path):
    lists = tmp_path / "shared"
    lists.mkdir()
    (lists / "named.txt").write_text("acme.com\n")
    folder = tmp_path / "conf"
    folder.mkdir()
    path = routing_with_list(folder, str(lists / "named.txt"))
    code, output = validate(path, env={"ACCOUNT_ROUTER_LIST_ROOTS": ""})
    assert code == 2
    assert "lists.named.file" in output
    code, output = validate(path, env={"ACCOUNT_ROUTER_LIST_ROOTS": f"/nowhere:{lists}"})
    assert code == 0, output
    assert load_routing(path, list_roots=(str(lists),)).file.list_domains("named") == (
        "acme.com",)
    # Below the routing file's own folder needs no setting.
    (folder / "sub").mkdir()
    (folder / "sub" / "named.txt").write_text("# comment\n\nglobex.com\n")
    r = load_routing(routing_with_list(folder, "sub/named.txt"))
    assert r.file.list_domains("named") == ("globex.com",)


# ---------------------------------------------------------------------------------------------
# The CLI: every class above is exit 2 with file and path, never a traceback


@pytest.mark.parametrize(
    ("text", "path"),
    [
        pytest.param(rule("{employees: {gt: '" + "9" * 400 + "'}}"), "rules[0].when.employees.gt",
                     id="inf"),
        pytest.param(rule("{name: {matches: '(a)\\1'}}"), "rules[0].when.name.matches",
                     id="backreference"),
        pytest.param(laughs(), "line ", id="laughs"),
        pytest.param(rule("{not: " * 40 + "{name: x}" + "}" * 40), "rules[0].when.not",
                     id="deep-not"),
        pytest.param(HEAD.replace("{id: ben}", "{id: ben, timezone: America}"),
                     "reps[1].timezone", id="tz-directory"),
    ],
)
def test_given_a_hostile_file_when_validating_then_exit_2_with_file_and_path(
        tmp_path, text, path):
    file = write(tmp_path, text)
    code, output = validate(file)
    assert code == 2
    assert str(file) in output.replace("\n", "")
    assert path in output
    assert "Traceback" not in output


def test_given_long_field_values_when_compiling_the_example_conditions_then_routing_is_fast():
    text = textwrap.dedent("""\
        version: 1
        reps: [{id: ava}]
        lists: {named: {domains: [acme.com]}}
        rules:
          - name: r
            when:
              any:
                - {name: {matches: '(x+x+)+y'}}
                - {domain: {in_list: named}}
                - {industry: {contains: health}}
                - {country: {in: [US, DE]}}
                - {employees: {between: [10, 500]}}
            assign: {rep: ava}
        """)
    r = compile_text(text)
    ctx = RoutingContext(routing=r, now=NOW)
    long = "x" * 200_000
    started = time.perf_counter()
    record = build_record({"id": "1", "name": long, "domain": long + ".com", "industry": long,
                           "country": long, "employees": "9" * 5000})
    decision = decide(record, ctx)
    assert time.perf_counter() - started < 3.0
    assert decision.outcome in ("assigned", "unassigned")
