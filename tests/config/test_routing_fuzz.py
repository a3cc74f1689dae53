"""Mutation fuzz of routing files (issue 8, point 6): hundreds of seeded mutations of the example
files. Each either is refused with the loader's ConfigError naming the file (the CLI's exit 2), or
loads and routes a fixed set of sample records, very long values included, without any exception
and quickly; no message quotes a list file that is not a list."""

from __future__ import annotations

import copy
import faulthandler
import os
import random
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import config.examples
from config.routing import ConfigError
from sync.compiler import CompiledRouting, load_routing
from sync.decide import RoutingContext, decide
from sync.models import Record
from sync.normalize import build_record
from tasks.cli import app

SEED = 20261207
CASES = 300
CASE_SECONDS = 5.0  # a hang shows as minutes; a slow shared CI core as well under a second
EXAMPLES = Path(config.examples.__file__).parent
NOW = datetime(2026, 12, 22, 15, 30, tzinfo=UTC)
SECRET = "hunter2-SECRET-TOKEN"

# A second base file that exercises what the example does not: every operator and combinator,
# weighted and least-loaded pools with caps and overflows, inline and file lists, field maps.
RICH: dict[str, Any] = {
    "version": 1,
    "timezone": "Europe/Berlin",
    "respect_existing_owner": "always",
    "ignore_owners": ["0059000000INTEG", "42"],
    "reps": [
        {"id": "ava", "name": "Ava", "email": "ava@example.com",
         "crm_ids": {"hubspot": "101", "salesforce": "005000000000001AAA"},
         "backup": "ben", "manager": "maya", "timezone": "America/New_York",
         "out_of_office": [{"start": "2026-12-20", "end": "2027-01-02"}]},
        {"id": "ben", "backup": "ava", "manager": "maya"},
        {"id": "cara"},
        {"id": "dev", "active": False},
        {"id": "maya"},
    ],
    "pools": {
        "w": {"members": ["ava", "ben", "cara"], "strategy": "weighted",
              "weights": {"ava": 3, "ben": 0}, "cap": {"max": 5, "per": "week"},
              "overflow": {"queue": "00G000000000001"}},
        "ll": {"members": ["cara", "dev"], "strategy": "least_loaded",
               "cap": {"max": 2, "per": "month"}, "overflow": {"rep": "maya"}},
    },
    "lists": {"inline": {"domains": ["acme.com", "globex.com"]},
              "named": {"file": "named_accounts.txt"}},
    "rules": [
        {"name": "combo", "when": {
            "any": [{"domain": {"in_list": "inline"}},
                    {"all": [{"employees": {"between": [10, 500]}},
                             {"not": {"country": {"in": ["US", "Deutschland"]}}}]}],
            "name": {"matches": "^ac.*e$"}}, "assign": {"pool": "w"}},
        {"name": "raw", "when": {"fields.tier": {"eq": "gold"},
                                 "annual_revenue": {"gte": 1000000}}, "assign": {"rep": "ava"}},
        {"name": "text", "when": {"industry": {"contains": "health"},
                                  "city": {"starts_with": "bos"}, "state": {"exists": True},
                                  "lead_source": {"ne": "web"},
                                  "postal_code": {"not_in": ["02134"]}},
         "assign": {"pool": "ll"}},
        {"name": "owner", "when": {"owner": {"eq": "ava"}}, "assign": {"queue": "00G000000000002"}},
        {"name": "named", "when": {"domain": {"in_list": "named"}}, "assign": {"rep": "cara"}},
        {"name": "lead", "when": {"object": "lead"}, "assign": {"account_owner": True}},
    ],
    "fallback": {"rep": "maya"},
    "field_maps": {"hubspot": {"companies": {"industry": "my_industry"}}},
}

LONG = 20_000  # characters in the long sample values: every operator must stay linear in them


def samples() -> list[Record]:
    long_a, long_x = "a" * LONG, "x" * LONG
    rows: list[tuple[dict[str, Any], str]] = [
        ({"id": "plain", "name": "Acme", "domain": "acme.com", "employees": "250",
          "industry": "Hospital & Health Care", "country": "Austria", "city": "Boston",
          "state": "MA", "annual_revenue": "1.2m", "fields.tier": "gold"}, "account"),
        ({"id": "lead", "email": "jo@globex.com", "lead_source": "Web", "owner": "101"}, "lead"),
        ({"id": "empty"}, "account"),
        ({"id": "long", "name": long_a, "domain": long_x + ".com", "email": long_a + "@x.com",
          "industry": long_x, "employees": "9" * 5000, "annual_revenue": "9" * 400 + ".5",
          "country": long_a, "state": long_x, "city": long_a, "postal_code": long_x,
          "lead_source": long_a, "website": "https://" + long_x, "owner": long_a,
          "fields.tier": long_a}, "account"),
        ({"id": "odd", "name": "a\ud800c\x00[/x]:x:", "domain": "..", "employees": "-1e999",
          "country": "\u00d6sterreich", "owner": "005000000000001", "industry": "& and &",
          "annual_revenue": "nan"}, "contact"),
    ]
    return [build_record(values, object=obj) for values, obj in rows]


SAMPLES = samples()

# ---------------------------------------------------------------------------------------------
# Mutations. Markers stand for YAML that safe_dump cannot write (aliases, 5,000-digit numbers).

BOMBS = ["(a+)+$", "(a|aa)*b", "(.*a){25}", "(x+x+)+y", "^(([a-z])+.)+[A-Z]([a-z])+$",
         r"(a)\1", "foo(?=bar)", "(?<!x)y", "([", "a{1000}{1000}", "((a{100}){100}){100}",
         "x" * 2000, "\\", "[z-a]", "(?P<n>a)(?P=n)", "\\p{Greek}+", "(?i)ACME"]
NAMES = ["[/x]", ":x:", "[bold]", "[link=file:///etc/passwd]x[/link]", ":thumbs_up:",
         "x" * 10_000, "", " ", "\t", "ünïcødé", "a\nb", "%s%n", "${HOME}", "-", "null",
         "[", "]", "\\", "'", '"']
NUMBERS: list[Any] = ["@BIGINT", "@HUGEFLOAT", "@TAGINT", "@TAGHEX", float("inf"),
                      float("-inf"), float("nan"), -1, 10 ** 30, 1e308, -0.0, 0, 2 ** 63, 1.5,
                      "1,200", "3M", "-5k", "1e5"]
ZONES = ["America", "Etc", "a" * 5000, "../../../../etc/passwd", "/etc/localtime",
         "Europe/../UTC", "Europe/Nowhere", "", "UTC ", "utc", "posixrules", "zone.tab",
         "America/New_York/", "Europe//Berlin", "Factory", "EST5EDT", "Etc/GMT+12"]
LIST_FILES = ["/proc/self/environ", "/etc/passwd", "/etc/shadow", "~/.bashrc", "/dev/zero",
              "/dev/null", "pipe.txt", "folder.txt", "nul.txt", "long.txt", "binary.txt",
              "escape.txt", "../secret.txt", "secrets.txt", ".", "", "named_accounts.txt",
              "missing.txt", "x" * 5000, "/"]
SWAPS: list[Any] = [None, True, False, [], {}, "x", 1, [1, [2]], {"a": {"b": None}},
                    [{"rep": "ava"}], "@SELFALIAS", "@LAUGHS", "@DEEPLIST", "@BINARY", "@DATE",
                    "@SET", "@PYTHON", "@SURROGATE"]

MARKERS: dict[str, Callable[[], str]] = {
    "@BIGINT": lambda: "9" * 5000,
    "@HUGEFLOAT": lambda: "1e999",
    "@TAGINT": lambda: "!!int " + "9" * 5000,
    "@TAGHEX": lambda: "!!int 0x" + "f" * 5000,
    "@BINARY": lambda: "!!binary aGVsbG8=",
    "@DATE": lambda: "!!timestamp 2026-12-07",
    "@SET": lambda: "!!set {a, b}",
    "@PYTHON": lambda: "!!python/object/apply:os.system [echo]",
    "@SURROGATE": lambda: '"x\\ud800"',
    "@LAUGHS": lambda: "[&l0 [x, x, x, x, x, x, x, x, x, x], " + ", ".join(
        f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)) + "]",
    "@SELFALIAS": lambda: "&self [x, *self]",
    "@DEEPLIST": lambda: "[" * 3000 + "]" * 3000,
    "@DEEPNOT": lambda: "{not: " * 300 + "{name: x}" + "}" * 300,
}


def deep_condition(rng: random.Random) -> Any:
    depth = rng.choice([1, 5, 20, 24, 25, 40, 100, 300])
    if depth == 300:  # too deep for safe_dump itself: written as text
        return "@DEEPNOT"
    node: Any = {"name": {"matches": rng.choice(BOMBS)}} if rng.random() < 0.3 \
        else {"employees": {"gt": 5}}
    for _ in range(depth):
        kind = rng.choice(["any", "all", "not"])
        node = {"not": node} if kind == "not" else {kind: [node, {"city": "x"}]}
    return node


def paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, (*at, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += paths(value, (*at, i))
    return out


def get(doc: Any, at: tuple[Any, ...]) -> Any:
    for part in at:
        doc = doc[part]
    return doc


def put(doc: Any, at: tuple[Any, ...], value: Any) -> None:
    get(doc, at[:-1])[at[-1]] = value


def mutate(doc: dict[str, Any], rng: random.Random) -> str:
    """Change `doc` in place in one way; return what was done, for the failure report."""
    every = [p for p in paths(doc) if p]
    at = rng.choice(every)
    kind = rng.choice(["number", "string", "zone", "list", "nest", "regex", "swap", "delete",
                       "duplicate", "name"])
    if kind == "number":
        numeric = [p for p in every if isinstance(get(doc, p), int | float)] or every
        at = rng.choice(numeric)
        value = rng.choice(NUMBERS)
    elif kind == "string":
        text = [p for p in every if isinstance(get(doc, p), str)] or every
        at = rng.choice(text)
        value = rng.choice(BOMBS + NAMES)
    elif kind == "zone":
        reps = [("reps", i, "timezone") for i in range(len(doc.get("reps") or []))
                if isinstance(doc["reps"][i], dict)]
        at = rng.choice([("timezone",), *reps])
        value = rng.choice(ZONES)
    elif kind == "list":
        lists = doc.setdefault("lists", {})
        if not isinstance(lists, dict):
            return "lists is not a mapping"
        at = ("lists", rng.choice([*lists, "added"]))
        value = {"file": rng.choice(LIST_FILES)}
    elif kind in ("nest", "regex"):
        rules = doc.get("rules")
        if not isinstance(rules, list) or not rules or not isinstance(rules[0], dict):
            return "no rules to nest"
        i = rng.randrange(len(rules))
        if not isinstance(rules[i], dict):
            return "rule is not a mapping"
        at = ("rules", i, "when")
        value = deep_condition(rng) if kind == "nest" else {
            rng.choice(["name", "domain", "industry", "fields.x", "owner"]):
                {"matches": rng.choice(BOMBS)}}
    elif kind == "swap":
        value = rng.choice(SWAPS)
    elif kind == "delete":
        parent = get(doc, at[:-1])
        del parent[at[-1]]
        return f"delete {at}"
    elif kind == "duplicate":
        parent = get(doc, at[:-1])
        if isinstance(parent, list):
            parent.append(copy.deepcopy(parent[at[-1]]))
            return f"duplicate {at}"
        value = copy.deepcopy(get(doc, at))
    else:  # names: rep, pool and rule names that rich would read as markup or emoji
        name = rng.choice(NAMES[:5] + ["ava", "maya", "w"])
        keyed = [p for p in every if p and p[-1] in ("name", "id", "rep", "backup", "manager")]
        at = rng.choice(keyed or every)
        value = name
    put(doc, at, value)
    shown = value if not isinstance(value, str) or len(value) < 40 else value[:40] + "…"
    return f"{kind} {at} = {shown!r}"


def dump(doc: dict[str, Any]) -> str:
    # libyaml's dumper when present: writing the cases should not cost what reading them does.
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text = yaml.dump(doc, Dumper=dumper, sort_keys=False, allow_unicode=True, width=1_000_000)
    for marker, make in MARKERS.items():
        # safe_dump writes a marker plain or quoted, depending on where it stands.
        for written in (f"'{marker}'", marker):
            text = text.replace(written, make())
    return text


def case(rng: random.Random, bases: list[dict[str, Any]]) -> tuple[str, list[str]]:
    doc = copy.deepcopy(rng.choice(bases))
    done = [mutate(doc, rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    return dump(doc), done


# ---------------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A routing folder beside a secret, holding every kind of hostile list file."""
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    os.environ["ROUTING_FUZZ_SECRET"] = SECRET  # in /proc/self/environ too
    work = tmp_path / "conf"
    work.mkdir()
    shutil.copy(EXAMPLES / "named_accounts.txt", work / "named_accounts.txt")
    os.mkfifo(work / "pipe.txt")
    (work / "folder.txt").mkdir()
    (work / "nul.txt").write_bytes(b"acme.com\n" + SECRET.encode() + b"\0\n")
    (work / "long.txt").write_text("acme.com\n" + SECRET * 200 + "\n")
    (work / "binary.txt").write_bytes(b"\xff\xfe" + SECRET.encode("utf-16-le"))
    (work / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (work / "secrets.txt").write_text("acme.com\n" + SECRET + "\n")
    yield work
    del os.environ["ROUTING_FUZZ_SECRET"]


def route_samples(routing: CompiledRouting) -> None:
    ctx = RoutingContext(routing=routing, now=NOW)
    for record in SAMPLES:
        decision = decide(record, ctx)
        if decision.turn is not None:
            ctx.apply(decision.turn)
        for rule in routing.rules:  # `explain` evaluates clause by clause
            for clause in rule.clauses:
                clause.test(record)
    routing.summary()


def test_given_hundreds_of_mutated_routing_files_when_loading_then_refused_or_routing(folder):
    rng = random.Random(SEED)
    example = yaml.safe_load((EXAMPLES / "routing.yaml").read_text())
    bases = [example, RICH]
    file = folder / "routing.yaml"
    failures: list[str] = []
    refused: list[Path] = []
    accepted: list[Path] = []
    seen: set[str] = set()
    # A hang inside C code (a backtracking regex) would never return: fail loudly instead.
    faulthandler.dump_traceback_later(300, exit=True)
    try:
        for n in range(CASES):
            text, done = case(rng, bases)
            file.write_text(text, encoding="utf-8", errors="surrogatepass")
            started = time.perf_counter()
            try:
                routing = load_routing(file)
            except ConfigError as exc:
                message = str(exc)
                seen |= {name for name, words in CLASSES.items()
                         if any(word in exc.expected for word in words)}
                if exc.file != str(file) or not message.startswith(f"{file}: "):
                    failures.append(f"case {n} {done}: error does not name the file: {message}")
                if SECRET in message or "hunter2" in message:
                    failures.append(f"case {n} {done}: error quotes a secret: {message}")
                if len(message) > 2000:
                    failures.append(f"case {n} {done}: {len(message)}-character message")
                if len(refused) < 12 and n % 3 == 0:
                    refused.append(keep(file, f"refused{n}.yaml"))
            except Exception as exc:  # noqa: BLE001 - exactly what this test hunts
                failures.append(f"case {n} {done}: load raised {type(exc).__name__}: "
                                f"{str(exc)[:300]}")
            else:
                try:
                    route_samples(routing)
                except Exception as exc:  # noqa: BLE001
                    failures.append(f"case {n} {done}: routing raised {type(exc).__name__}: "
                                    f"{str(exc)[:300]}")
                if len(accepted) < 4 and n % 5 == 0:
                    accepted.append(keep(file, f"accepted{n}.yaml"))
            elapsed = time.perf_counter() - started
            if elapsed > CASE_SECONDS:
                failures.append(f"case {n} {done}: took {elapsed:.1f} s")
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert not failures, "\n".join(failures[:20])
    assert len(refused) >= 10 and accepted, "the mutations should both break and keep files"
    assert seen == set(CLASSES)

    # The CLI turns each refusal into exit 2 with the file (and no traceback), and accepts the
    # files that load: `validate` says yes exactly when the router can run the file.
    runner = CliRunner()
    for path in refused:
        result = runner.invoke(app, ["validate", str(path)])
        output = result.output.replace("\n", "")
        assert result.exit_code == 2, (path.read_text()[:500], result.output)
        assert str(path) in output
        assert "Traceback" not in output and SECRET not in output
    for path in accepted:
        result = runner.invoke(app, ["validate", str(path)])
        assert result.exit_code == 0, result.output


# Every class of issue 8's point 6 must be hit by the seeded mix, by the words of its refusal.
CLASSES = {
    "numbers": ("finite number", "a number ≤", "digits"),
    "tags": ("plain YAML values", "valid Unicode"),
    "regex": ("RE2", "regular expression of at most"),
    "nesting": ("nesting at most", "nested at most"),
    "aliases": ("aliases expanded", "do not contain themselves"),
    "timezones": ("IANA timezone",),
    "list files": ("list file",),
}


def keep(file: Path, name: str) -> Path:
    """A copy beside the original, so list files resolve the same for the CLI."""
    kept = file.with_name(name)
    shutil.copy(file, kept)
    return kept
