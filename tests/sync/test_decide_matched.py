"""`Decision.matched`: every rule whose `when` the record matches, as `overlaps` counts them."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from sync.decide import RoutingContext, decide
from sync.engine import skipped
from sync.models import Outcome
from sync.overlaps import rule_matches
from tests.builders import rec, routing

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)

FILE = """
version: 1
respect_existing_owner: valid_only
reps: [{id: ava}, {id: ben}, {id: gone, active: false}]
pools:
  smb: {members: [ben], cap: {max: 2}}
rules:
  - {name: named, when: {domain: {eq: acme.com}}, assign: {rep: ava}}
  - {name: de, when: {country: {eq: DE}}, assign: {rep: gone}}
  - {name: big, when: {employees: {gt: 500}}, assign: {pool: smb}}
  - {name: us, when: {country: {eq: US}}, assign: {rep: ben}}
  - {name: small, when: {employees: {lt: 100}}, assign: {rep: ava}}
"""


def test_given_a_record_matching_later_rules_when_decided_then_matched_names_them_all() -> None:
    r = routing(FILE)
    ctx = RoutingContext(routing=r, now=NOW)

    d = decide(rec(id="a", domain="acme.com", country="US", employees="50"), ctx)

    # The first rule wins; the record also matches `us` and `small`, which routing never tried.
    assert d.rule == "named" and d.outcome == Outcome.ASSIGNED
    assert [s.rule for s in d.trace] == ["named"]
    assert d.matched == ("named", "us", "small")


def test_given_rules_with_nobody_before_the_winner_when_decided_then_they_are_matched_too(
        ) -> None:
    r = routing(FILE)
    ctx = RoutingContext(routing=r, now=NOW)

    d = decide(rec(id="b", country="DE", employees="900"), ctx)

    # `de` has nobody (inactive rep), `big` takes a pool turn.
    assert d.rule == "big"
    assert d.matched == ("de", "big")


def test_given_a_kept_owner_or_no_match_when_decided_then_matched_is_still_exact() -> None:
    r = routing(FILE)
    ctx = RoutingContext(routing=r, now=NOW)

    kept = decide(rec(id="c", owner="ava", country="US", employees="50"), ctx)
    nothing = decide(rec(id="d", country="FR", employees="300"), ctx)

    assert kept.outcome == Outcome.KEPT_EXISTING and kept.matched == ("us", "small")
    assert nothing.outcome == Outcome.UNASSIGNED and nothing.matched == ()
    assert skipped("e", "line 3: no id", NOW).matched == ()


@pytest.mark.parametrize("extra", ["", "fallback: {rep: ben}\n"])
def test_given_many_random_records_when_decided_then_matched_equals_rule_matches_by_any_path(
        extra: str) -> None:
    """Every way `decide` answers (memoized rule, memoized path, pool turn, fallback, kept),
    with the later rules evaluated, walked by `first_match`, or known beforehand."""
    r = routing(FILE + extra)
    walked = replace(r, later_matches=None)  # the `first_match` walk gives the same sets
    known = replace(r, known_matches=lambda record: rule_matches(r, record))  # as route-file
    rng = random.Random(5)
    records = [rec(id=f"r{i}", domain=rng.choice(["acme.com", "x.io", ""]),
                   country=rng.choice(["US", "DE", "FR", ""]),
                   employees=rng.choice(["5", "300", "900", ""]),
                   owner=rng.choice(["", "", "ava", "gone"])) for i in range(300)]
    for compiled in (r, walked, known):
        ctx = RoutingContext(routing=compiled, now=NOW)
        names = [rule.name for rule in compiled.rules]
        for record in records:
            d = decide(record, ctx)
            if d.turn is not None:
                ctx.apply(d.turn)
            assert d.matched == tuple(names[i] for i in rule_matches(r, record)), record.id
    # Equal sets are one object (the embedded history keys its cache by identity).
    ctx = RoutingContext(routing=r, now=NOW)
    a = decide(rec(id="x", country="US", employees="50"), ctx)
    b = decide(rec(id="y", country="US", employees="50"), ctx)
    assert a.matched is b.matched
