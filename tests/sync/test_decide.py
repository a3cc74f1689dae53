"""Tests for sync.decide: the exact routing semantics of docs/routing-file.md#routing-semantics."""

from __future__ import annotations

import copy
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sync.compiler import CompiledRouting
from sync.decide import OwnerInfo, RoutingContext, decide, window_key
from sync.models import Decision, Outcome, Record
from sync.normalize import id_key
from sync.state.base import PoolSnapshot
from tests.builders import rec, routing

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # a Wednesday

AVA_SF = "005000000000001AAA"  # 18-character Salesforce id; its 15-character form is AVA_SF[:15]
BEN_SF = "005000000000002AAA"
HOLD_SF = "005000000000HLDAAA"  # a holding user used as a `queue` target
INTEG_SF = "005000000000INTAAA"  # an integration user listed in ignore_owners
SF_QUEUE = "00G000000000QUEAAA"


# --- builders ----------------------------------------------------------------------------------




def context(r: CompiledRouting, now: datetime = NOW, **kw: object) -> RoutingContext:
    return RoutingContext(routing=r, now=now, **kw)  # type: ignore[arg-type]


def route(r: CompiledRouting, records: list[Record] | int, now: datetime = NOW,
          **kw: object) -> list[Decision]:
    """Decide records one after the other, applying each pool turn as the pipeline does."""
    if isinstance(records, int):
        records = [rec(id=f"r{i}") for i in range(records)]
    ctx = context(r, now, **kw)
    out = []
    for record in records:
        d = decide(record, ctx)
        if d.turn is not None:
            ctx.apply(d.turn)
        out.append(d)
    return out


def owners(decisions: list[Decision]) -> list[str | None]:
    return [d.owner for d in decisions]


def steps(d: Decision) -> list[tuple[str, str]]:
    return [(s.rule, s.result) for s in d.trace]


def pool_routing(members: str, strategy: str = "round_robin", extra: str = "",
                 reps: str = "") -> CompiledRouting:
    names = [m.strip() for m in members.split(",")]
    rep_lines = "".join(f"  - {{id: {n}}}\n" for n in names if f"id: {n}," not in reps)
    return routing(
        "version: 1\nreps:\n" + rep_lines + reps
        + f"pools:\n  p:\n    members: [{members}]\n    strategy: {strategy}\n" + extra
        + "rules:\n  - {name: pool, assign: {pool: p}}\n"
    )


# --- existing owner ----------------------------------------------------------------------------

OWNERS = """
version: 1
respect_existing_owner: {policy}
ignore_owners: ["{ignore}"]
reps:
  - {{id: ava, crm_ids: {{salesforce: "{ava}", hubspot: "101"}}}}
  - {{id: ben, active: false, crm_ids: {{salesforce: "{ben}"}}}}
  - id: cara
    out_of_office: [{{start: 2026-11-20, end: 2026-11-30}}]
  - {{id: maya, crm_ids: {{salesforce: "005000000000009AAA"}}}}
rules:
  - name: holding
    when: {{name: {{eq: hold me}}}}
    assign: {{queue: "{hold}"}}
  - name: to-maya
    assign: {{rep: maya}}
"""


def owners_routing(policy: str, *, ignore: str = INTEG_SF, ava: str = AVA_SF,
                   hold: str = HOLD_SF) -> CompiledRouting:
    return routing(OWNERS.format(policy=policy, ignore=ignore, ava=ava, ben=BEN_SF, hold=hold))


@pytest.mark.parametrize("owner", [AVA_SF, AVA_SF[:15], "ava"])
def test_given_an_active_rep_owner_under_valid_only_when_deciding_then_kept_without_a_turn(owner):
    d = decide(rec(owner=owner, crm="salesforce"), context(owners_routing("valid_only")))

    assert d.outcome is Outcome.KEPT_EXISTING
    assert d.owner == "ava"
    assert d.previous_owner == "ava"
    assert d.rule is None
    assert d.turn is None
    assert d.trace == ()
    assert d.reason


def test_given_an_inactive_rep_owner_under_valid_only_when_deciding_then_rerouted():
    d = decide(rec(owner=BEN_SF, crm="salesforce"), context(owners_routing("valid_only")))

    assert (d.outcome, d.owner, d.rule, d.previous_owner) == (
        Outcome.ASSIGNED, "maya", "to-maya", "ben")


def test_given_an_inactive_rep_owner_under_always_when_deciding_then_kept():
    d = decide(rec(owner=BEN_SF, crm="salesforce"), context(owners_routing("always")))

    assert (d.outcome, d.owner, d.rule) == (Outcome.KEPT_EXISTING, "ben", None)


def test_given_an_active_rep_owner_under_never_when_deciding_then_rerouted():
    d = decide(rec(owner=AVA_SF, crm="salesforce"), context(owners_routing("never")))

    assert (d.outcome, d.owner, d.previous_owner) == (Outcome.ASSIGNED, "maya", "ava")


@pytest.mark.parametrize("queue_owner", [SF_QUEUE, SF_QUEUE[:15], HOLD_SF, HOLD_SF[:15]])
def test_given_a_queue_owner_under_valid_only_when_deciding_then_it_counts_as_no_owner(
    queue_owner,
):
    d = decide(rec(owner=queue_owner, crm="salesforce"), context(owners_routing("valid_only")))

    assert (d.outcome, d.owner) == (Outcome.ASSIGNED, "maya")
    assert d.previous_owner == queue_owner  # maps to no rep: the raw id


@pytest.mark.parametrize("where", ["fallback: {queue: \"%s\"}",
                                   "pools: {p: {members: [maya], overflow: {queue: \"%s\"}}}"])
def test_given_an_id_used_as_fallback_or_overflow_queue_when_it_owns_then_it_is_no_owner(where):
    r = routing(OWNERS.format(policy="valid_only", ignore=INTEG_SF, ava=AVA_SF, ben=BEN_SF,
                              hold=HOLD_SF) + where % "QUEUE-7")

    d = decide(rec(owner="QUEUE-7"), context(r))

    assert (d.outcome, d.owner) == (Outcome.ASSIGNED, "maya")


def test_given_a_15_char_queue_target_when_the_owner_is_its_18_char_form_then_it_is_a_queue():
    r = owners_routing("valid_only", hold=HOLD_SF[:15])

    d = decide(rec(owner=HOLD_SF, crm="salesforce"), context(r))

    assert d.outcome is Outcome.ASSIGNED


@pytest.mark.parametrize("queue_owner", [SF_QUEUE, HOLD_SF[:15]])
def test_given_a_queue_owner_under_always_when_deciding_then_kept(queue_owner):
    d = decide(rec(owner=queue_owner, crm="salesforce"), context(owners_routing("always")))

    assert (d.outcome, d.owner, d.rule) == (Outcome.KEPT_EXISTING, queue_owner, None)


@pytest.mark.parametrize("policy", ["valid_only", "always", "never"])
@pytest.mark.parametrize(("listed", "owner"), [
    (INTEG_SF, INTEG_SF), (INTEG_SF, INTEG_SF[:15]), (INTEG_SF[:15], INTEG_SF),
])
def test_given_an_ignored_owner_under_any_policy_when_deciding_then_it_is_no_owner(
    policy, listed, owner,
):
    d = decide(rec(owner=owner, crm="salesforce"), context(owners_routing(policy, ignore=listed)))

    assert (d.outcome, d.owner) == (Outcome.ASSIGNED, "maya")


def test_given_an_ignored_rep_owner_under_always_when_deciding_then_rerouted():
    d = decide(rec(owner=AVA_SF, crm="salesforce"),
               context(owners_routing("always", ignore=AVA_SF[:15])))

    assert d.owner == "maya"


@pytest.mark.parametrize("policy", ["valid_only", "always"])
def test_given_an_out_of_office_or_paused_owner_when_deciding_then_kept(policy):
    r = owners_routing(policy)

    ooo = decide(rec(owner="cara"), context(r))
    paused = decide(rec(owner=AVA_SF, crm="salesforce"), context(r, paused={"ava": None}))

    assert (ooo.outcome, ooo.owner) == (Outcome.KEPT_EXISTING, "cara")
    assert (paused.outcome, paused.owner) == (Outcome.KEPT_EXISTING, "ava")


def test_given_an_unknown_owner_in_file_mode_when_deciding_then_presumed_valid_and_kept():
    d = decide(rec(owner="005000000000777AAA"), context(owners_routing("valid_only"), users=None))

    assert d.outcome is Outcome.KEPT_EXISTING
    assert d.owner == "005000000000777AAA"
    assert d.previous_owner == "005000000000777AAA"
    assert d.rule is None


@pytest.mark.parametrize(("info", "kept"), [
    (OwnerInfo(active=True), True),
    (OwnerInfo(active=False), False),
    (None, False),  # not in the directory: not a user at all
    (OwnerInfo(active=True, person=False), False),  # e.g. a HubSpot owner of type QUEUE
])
def test_given_a_crm_directory_when_deciding_then_only_active_person_users_are_kept(info, kept):
    owner = "005000000000777AAA"
    users = {} if info is None else {id_key(owner): info}

    d = decide(rec(owner=owner[:15], crm="salesforce"),
               context(owners_routing("valid_only"), users=users))

    assert (d.outcome is Outcome.KEPT_EXISTING) is kept
    assert d.owner == (owner[:15] if kept else "maya")


def test_given_a_crm_directory_when_a_rep_owner_is_an_inactive_crm_user_then_rerouted():
    users = {id_key(AVA_SF): OwnerInfo(active=False)}

    d = decide(rec(owner=AVA_SF, crm="salesforce"),
               context(owners_routing("valid_only"), users=users))

    assert (d.outcome, d.owner, d.previous_owner) == (Outcome.ASSIGNED, "maya", "ava")


def test_given_a_crm_directory_under_always_when_the_owner_is_inactive_then_kept():
    users = {id_key(BEN_SF): OwnerInfo(active=False)}

    d = decide(rec(owner=BEN_SF, crm="salesforce"),
               context(owners_routing("always"), users=users))

    assert d.outcome is Outcome.KEPT_EXISTING


def test_given_a_hubspot_owner_id_when_deciding_then_previous_owner_is_the_rep_id():
    r = owners_routing("never")

    mapped = decide(rec(owner="101", crm="hubspot"), context(r))
    unknown = decide(rec(owner="202", crm="hubspot"), context(r))

    assert mapped.previous_owner == "ava"
    assert unknown.previous_owner == "202"


def test_given_a_15_char_crm_id_in_the_routing_file_when_the_owner_is_18_chars_then_equal():
    r = owners_routing("valid_only", ava=AVA_SF[:15])

    d = decide(rec(owner=AVA_SF, crm="salesforce"), context(r))

    assert (d.outcome, d.owner, d.previous_owner) == (Outcome.KEPT_EXISTING, "ava", "ava")


def test_given_no_owner_when_deciding_then_previous_owner_is_none():
    d = decide(rec(), context(owners_routing("valid_only")))

    assert d.previous_owner is None
    assert d.outcome is Outcome.ASSIGNED


# --- rule order and trace ----------------------------------------------------------------------

RULES = """
version: 1
reps:
  - {id: ava}
  - {id: ben, active: false}
  - {id: maya}
rules:
  - name: big
    when: {employees: {gt: 500}}
    assign: {rep: ben}
  - name: us
    when: {country: {eq: US}}
    assign: {rep: ava}
  - name: everyone
    assign: {rep: maya}
"""


def test_given_the_first_matching_rule_yields_an_assignee_when_deciding_then_it_wins():
    d = decide(rec(employees="10", country="United States"), context(routing(RULES)))

    assert (d.outcome, d.owner, d.rule) == (Outcome.ASSIGNED, "ava", "us")
    assert steps(d) == [("big", "no_match"), ("us", "won")]


def test_given_a_matching_rule_yields_nobody_when_deciding_then_traced_and_evaluation_continues():
    d = decide(rec(employees="600", country="US"), context(routing(RULES)))

    assert (d.owner, d.rule) == ("ava", "us")
    assert steps(d) == [("big", "no_assignee"), ("us", "won")]
    why = d.trace[0].detail
    assert "ben" in why and "inactive" in why


def test_given_later_rules_after_a_dead_end_when_deciding_then_every_rule_tried_is_listed():
    d = decide(rec(employees="600", country="DE"), context(routing(RULES)))

    assert d.rule == "everyone"
    assert steps(d) == [("big", "no_assignee"), ("us", "no_match"), ("everyone", "won")]
    assert all(s.detail for s in d.trace)


def test_given_no_rule_yields_anyone_and_no_fallback_when_deciding_then_unassigned():
    r = routing("""
        version: 1
        reps: [{id: ben, active: false}]
        rules:
          - {name: a, when: {country: {eq: FR}}, assign: {rep: ben}}
          - {name: b, assign: {rep: ben}}
          - {name: c, when: {country: {eq: FR}}, assign: {rep: ben}}
    """)

    d = decide(rec(country="DE"), context(r))

    assert (d.outcome, d.owner, d.owner_crm_id, d.rule) == (Outcome.UNASSIGNED, None, None, None)
    assert steps(d) == [("a", "no_match"), ("b", "no_assignee"), ("c", "no_match")]
    assert "no fallback" in d.reason


def test_given_pool_turns_in_one_snapshot_when_deciding_then_equal_traces_are_one_object():
    # Each turn's answer is a new string, yet the history stores a trace once per object it
    # sees: equal traces of one snapshot are one tuple, and each is the trace of its own turn.
    r = pool_routing("cara, dev")
    decisions = route(r, 6)

    assert owners(decisions) == ["cara", "dev"] * 3
    for d in decisions:
        assert [(s.rule, s.result, s.detail) for s in d.trace] == [
            ("pool", "won", f"pool p round_robin -> {d.owner}")]
    assert decisions[0].trace is decisions[2].trace is decisions[4].trace
    assert decisions[1].trace is decisions[3].trace
    assert decisions[0].trace is not decisions[1].trace


# --- rep chains --------------------------------------------------------------------------------

CHAIN = """
version: 1
reps:
  - {{id: ava, backup: ben, manager: maya, active: {ava}}}
  - {{id: ben, backup: cara, active: {ben}}}
  - {{id: cara}}
  - {{id: maya, active: {maya}}}
  - {{id: zed}}
rules:
  - {{name: to-ava, assign: {{rep: ava}}}}
  - {{name: rest, assign: {{rep: zed}}}}
"""


@pytest.mark.parametrize(("ava", "ben", "maya", "owner", "outcome"), [
    ("true", "true", "true", "ava", Outcome.ASSIGNED),
    ("false", "true", "true", "ben", Outcome.FALLBACK),
    ("false", "false", "true", "maya", Outcome.FALLBACK),
])
def test_given_a_rep_target_when_deciding_then_tries_rep_backup_manager_in_that_order(
    ava, ben, maya, owner, outcome,
):
    d = decide(rec(), context(routing(CHAIN.format(ava=ava, ben=ben, maya=maya))))

    assert (d.owner, d.outcome, d.rule) == (owner, outcome, "to-ava")
    assert steps(d) == [("to-ava", "won")]


def test_given_rep_backup_and_manager_unavailable_when_deciding_then_not_the_backups_backup():
    d = decide(rec(), context(routing(CHAIN.format(ava="false", ben="false", maya="false"))))

    assert d.owner == "zed"  # cara (ben's own backup) is never tried
    assert steps(d) == [("to-ava", "no_assignee"), ("rest", "won")]
    assert "ben" in d.trace[0].detail and "maya" in d.trace[0].detail


def test_given_the_backup_took_it_when_deciding_then_the_reason_names_the_chain():
    d = decide(rec(), context(routing(CHAIN.format(ava="false", ben="true", maya="true"))))

    assert "ava" in d.reason and "backup ben" in d.reason


MUTUAL = """
version: 1
reps:
  - id: ava
    backup: ben
    out_of_office: [{start: 2026-11-25, end: 2026-11-25}]
  - id: ben
    backup: ava
    out_of_office: [{start: 2026-11-26, end: 2026-11-26}]
rules:
  - {name: to-ava, assign: {rep: ava}}
  - {name: to-ben, assign: {rep: ben}}
"""


def test_given_mutual_backups_when_either_is_away_then_the_other_takes_it():
    r = routing(MUTUAL)

    on_25th = decide(rec(), context(r, datetime(2026, 11, 25, 12, tzinfo=UTC)))
    r2 = routing(MUTUAL.replace("to-ava, assign: {rep: ava}", "to-ben0, assign: {rep: ben}", 1))
    on_26th = decide(rec(), context(r2, datetime(2026, 11, 26, 12, tzinfo=UTC)))

    assert (on_25th.owner, on_25th.outcome) == ("ben", Outcome.FALLBACK)
    assert (on_26th.owner, on_26th.outcome) == ("ava", Outcome.FALLBACK)


def test_given_mutual_backups_both_away_when_deciding_then_nobody_and_no_loop():
    r = routing(MUTUAL.replace("end: 2026-11-26", "end: 2026-11-27").replace(
        "start: 2026-11-26", "start: 2026-11-25"))

    d = decide(rec(), context(r))

    assert d.outcome is Outcome.UNASSIGNED
    assert steps(d) == [("to-ava", "no_assignee"), ("to-ben", "no_assignee")]


# --- eligibility -------------------------------------------------------------------------------

LEAVE = """
version: 1
reps:
  - id: ava
    timezone: {zone}
    out_of_office: [{{start: 2026-11-26, end: 2026-11-28}}]
  - {{id: zed}}
rules:
  - {{name: to-ava, assign: {{rep: ava}}}}
  - {{name: rest, assign: {{rep: zed}}}}
"""


@pytest.mark.parametrize(("local", "available"), [
    ("2026-11-25T23:59:59", True),
    ("2026-11-26T00:00:00", False),  # the first day is included
    ("2026-11-28T23:59:59", False),  # the last day is included
    ("2026-11-29T00:00:00", True),
])
def test_given_out_of_office_dates_when_deciding_then_both_ends_are_inclusive(local, available):
    r = routing(LEAVE.format(zone="UTC"))

    d = decide(rec(), context(r, datetime.fromisoformat(local).replace(tzinfo=UTC)))

    assert (d.owner == "ava") is available


def test_given_an_instant_still_before_the_leave_in_the_reps_timezone_then_the_rep_is_available():
    instant = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)  # 25th, 21:00 in Los Angeles

    la = decide(rec(), context(routing(LEAVE.format(zone="America/Los_Angeles")), instant))
    utc = decide(rec(), context(routing(LEAVE.format(zone="UTC")), instant))

    assert la.owner == "ava"
    assert utc.owner == "zed"


def test_given_an_instant_already_after_the_leave_in_utc_then_a_la_rep_is_still_away():
    instant = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)  # 28th, 21:00 in Los Angeles

    la = decide(rec(), context(routing(LEAVE.format(zone="America/Los_Angeles")), instant))
    utc = decide(rec(), context(routing(LEAVE.format(zone="UTC")), instant))

    assert la.owner == "zed"
    assert utc.owner == "ava"


def test_given_the_file_default_timezone_when_a_rep_has_none_then_the_default_applies():
    r = routing(LEAVE.format(zone="UTC").replace("    timezone: UTC\n", "").replace(
        "version: 1\n", "version: 1\ntimezone: America/Los_Angeles\n"))

    d = decide(rec(), context(r, datetime(2026, 11, 26, 5, 0, tzinfo=UTC)))

    assert d.owner == "ava"


@pytest.mark.parametrize(("until", "available"), [
    (None, False),
    (NOW + timedelta(minutes=1), False),
    (NOW - timedelta(minutes=1), True),
    (NOW, True),  # a pause ends at its `until`
])
def test_given_a_paused_rep_when_deciding_then_unavailable_until_the_pause_ends(until, available):
    r = routing(LEAVE.format(zone="UTC"))

    d = decide(rec(), context(r, paused={"ava": until}))

    assert (d.owner == "ava") is available
    if not available:
        assert "paused" in d.trace[0].detail


def test_given_a_rep_capped_in_a_pool_when_a_rule_targets_the_rep_directly_then_no_cap_applies():
    r = routing("""
        version: 1
        reps: [{id: ava}]
        pools:
          p: {members: [ava], cap: {max: 1, per: day}}
        rules:
          - {name: pool, assign: {pool: p}}
          - {name: direct, assign: {rep: ava}}
    """)
    snap = PoolSnapshot(pool="p", counts={"ava": 1})

    d = decide(rec(), context(r, pools={"p": snap}))

    assert (d.owner, d.rule, d.outcome) == ("ava", "direct", Outcome.ASSIGNED)
    assert steps(d) == [("pool", "no_assignee"), ("direct", "won")]
    assert "cap" in d.trace[0].detail


# --- pools: round robin ------------------------------------------------------------------------


def test_given_a_round_robin_pool_when_routing_then_strict_rotation_in_member_order():
    d = route(pool_routing("cara, dev, eli"), 7)

    assert owners(d) == ["cara", "dev", "eli", "cara", "dev", "eli", "cara"]
    assert all(x.outcome is Outcome.ASSIGNED and x.rule == "pool" and x.pool == "p" for x in d)


def test_given_an_ineligible_member_when_routing_then_its_turn_goes_to_the_next_member_not_backup():
    r = pool_routing("cara, dev, eli", reps="  - {id: dev, backup: zed, active: false}\n"
                     "  - {id: zed}\n")

    d = route(r, 5)

    assert owners(d) == ["cara", "eli", "cara", "eli", "cara"]
    assert "dev inactive" in d[1].reason


def test_given_a_cursor_when_the_next_member_is_away_then_the_turn_passes_on_in_list_order():
    r = pool_routing("cara, dev, eli")
    snap = PoolSnapshot(pool="p", version=3, last_served="cara")

    d = route(r, 3, pools={"p": snap}, paused={"dev": None})

    assert owners(d) == ["eli", "cara", "eli"]


def test_given_a_member_added_when_routing_then_it_takes_its_listed_place_without_a_reset():
    before = route(pool_routing("cara, dev, eli"), 2)
    last = before[-1].turn.last_served

    after = route(pool_routing("cara, dev, fay, eli"), 4,
                  pools={"p": PoolSnapshot(pool="p", last_served=last)})

    assert owners(before) == ["cara", "dev"]
    assert owners(after) == ["fay", "eli", "cara", "dev"]


def test_given_a_member_added_before_the_cursor_when_routing_then_rotation_continues():
    after = route(pool_routing("abe, cara, dev, eli"), 4,
                  pools={"p": PoolSnapshot(pool="p", last_served="dev")})

    assert owners(after) == ["eli", "abe", "cara", "dev"]


def test_given_the_last_served_member_removed_when_routing_then_the_next_turn_is_the_first():
    after = route(pool_routing("cara, eli"), 3, pools={"p": PoolSnapshot(pool="p",
                                                                        last_served="dev")})

    assert owners(after) == ["cara", "eli", "cara"]


def test_given_a_fresh_pool_when_routing_then_the_cursor_starts_at_the_first_member():
    d = decide(rec(), context(pool_routing("eli, cara, dev")))

    assert d.owner == "eli"
    assert d.turn is not None and d.turn.last_served == "eli"


# --- pools: weighted ---------------------------------------------------------------------------


def test_given_weights_5_1_1_when_routing_then_the_nginx_smooth_sequence():
    r = pool_routing("a, b, c", "weighted", "    weights: {a: 5, b: 1, c: 1}\n")

    d = route(r, 14)

    assert owners(d) == list("aabacaa") * 2


def test_given_equal_weights_when_routing_then_round_robin_in_member_order():
    d = route(pool_routing("a, b, c", "weighted"), 6)

    assert owners(d) == list("abcabc")


def test_given_weight_zero_when_routing_then_that_member_is_never_chosen():
    r = pool_routing("a, b, c", "weighted", "    weights: {b: 0}\n")

    d = route(r, 10)

    assert "b" not in owners(d)
    assert Counter(owners(d)) == {"a": 5, "c": 5}


def test_given_an_away_member_when_weighted_then_its_credit_is_frozen_and_no_flood_on_return():
    r = pool_routing("a, b, c", "weighted", "    weights: {a: 1, b: 2, c: 1}\n")
    first = route(r, 4)
    snap = PoolSnapshot(pool="p", credits=dict(first[-1].turn.credits))

    away = route(r, 12, pools={"p": copy.deepcopy(snap)}, paused={"b": None})
    back = route(r, 8, pools={"p": PoolSnapshot(pool="p",
                                                credits=dict(away[-1].turn.credits))})

    assert owners(first) == list("bacb")
    assert all(d.turn.credits["b"] == snap.credits["b"] for d in away)
    assert "b" not in owners(away)
    assert Counter(owners(back)) == {"b": 4, "a": 2, "c": 2}  # its share, not a catch-up
    assert owners(back)[:2].count("b") == 1


def test_given_a_weighted_pool_when_routing_then_the_cursor_is_left_alone_and_credits_carry():
    r = pool_routing("a, b", "weighted", "    weights: {a: 2, b: 1}\n")

    one_go = route(r, 6)
    half = route(r, 3)
    rest = route(r, 3, pools={"p": PoolSnapshot(pool="p", credits=dict(half[-1].turn.credits))})

    assert owners(one_go) == owners(half) + owners(rest) == list("abaaba")


# --- pools: least loaded -----------------------------------------------------------------------


def test_given_loads_when_least_loaded_then_the_fewest_wins_with_ties_in_member_order():
    snap = PoolSnapshot(pool="p", counts={"cara": 3, "dev": 1, "eli": 1})

    d = route(pool_routing("eli, dev, cara", "least_loaded"), 5, pools={"p": snap})

    assert owners(d) == ["eli", "dev", "eli", "dev", "eli"]  # member order, not by name


def test_given_an_away_member_with_the_least_load_when_least_loaded_then_skipped():
    snap = PoolSnapshot(pool="p", counts={"cara": 3, "dev": 0, "eli": 1})

    d = route(pool_routing("cara, dev, eli", "least_loaded"), 2, pools={"p": snap},
              paused={"dev": None})

    assert owners(d) == ["eli", "eli"]


def test_given_least_loaded_without_a_cap_when_windows_are_asked_then_the_day_window():
    windows = RoutingContext.pool_windows(pool_routing("cara", "least_loaded"), NOW)

    assert windows == {"p": {"cara": "day:2026-11-25"}}


def test_given_a_kept_record_when_least_loaded_then_it_takes_no_turn():
    r = pool_routing("cara, dev", "least_loaded")

    d = route(r, [rec(id="k", owner="cara"), rec(id="n1"), rec(id="n2")])

    assert d[0].outcome is Outcome.KEPT_EXISTING and d[0].turn is None
    assert owners(d) == ["cara", "cara", "dev"]


# --- pools: caps and windows -------------------------------------------------------------------


def test_given_a_cap_when_members_reach_it_then_they_are_skipped_and_then_the_next_rule():
    r = routing("""
        version: 1
        reps: [{id: cara}, {id: dev}, {id: zed}]
        pools:
          p: {members: [cara, dev], cap: {max: 2, per: day}}
        rules:
          - {name: pool, assign: {pool: p}}
          - {name: rest, assign: {rep: zed}}
    """)

    d = route(r, 6)

    assert owners(d) == ["cara", "dev", "cara", "dev", "zed", "zed"]
    assert steps(d[4]) == [("pool", "no_assignee"), ("rest", "won")]
    assert "at cap 2/day" in d[4].trace[0].detail


def test_given_a_capped_member_when_round_robin_then_the_others_keep_rotating():
    snap = PoolSnapshot(pool="p", counts={"dev": 1})

    d = route(pool_routing("cara, dev, eli", extra="    cap: {max: 1, per: day}\n"), 2,
              pools={"p": snap})

    assert owners(d) == ["cara", "eli"]


@pytest.mark.parametrize(("per", "instant", "expected"), [
    ("day", datetime(2026, 11, 26, 3, 0, tzinfo=UTC), "day:2026-11-25"),  # 22:00 in New York
    ("day", datetime(2026, 11, 26, 5, 30, tzinfo=UTC), "day:2026-11-26"),  # 00:30 in New York
    ("week", datetime(2026, 11, 30, 4, 59, tzinfo=UTC), "week:2026-11-23"),  # Sunday 23:59
    ("week", datetime(2026, 11, 30, 5, 0, tzinfo=UTC), "week:2026-11-30"),  # Monday 00:00
    ("month", datetime(2026, 12, 1, 4, 59, tzinfo=UTC), "month:2026-11"),
    ("month", datetime(2026, 12, 1, 5, 0, tzinfo=UTC), "month:2026-12"),
])
def test_given_an_instant_when_computing_a_window_then_local_to_the_members_timezone(
    per, instant, expected,
):
    assert window_key(per, instant, ZoneInfo("America/New_York")) == expected


def test_given_members_in_two_timezones_when_windows_are_asked_then_each_gets_its_own_day():
    r = pool_routing("ny, ldn", extra="    cap: {max: 5, per: day}\n",
                     reps="  - {id: ny, timezone: America/New_York}\n"
                          "  - {id: ldn, timezone: Europe/London}\n")

    windows = RoutingContext.pool_windows(r, datetime(2026, 11, 26, 3, 0, tzinfo=UTC))

    assert windows == {"p": {"ny": "day:2026-11-25", "ldn": "day:2026-11-26"}}


def test_given_a_turn_when_deciding_then_it_carries_the_members_window():
    r = pool_routing("ny", extra="    cap: {max: 5, per: week}\n",
                     reps="  - {id: ny, timezone: America/New_York}\n")

    d = decide(rec(), context(r, datetime(2026, 11, 30, 3, 0, tzinfo=UTC)))

    assert d.turn is not None and d.turn.window == "week:2026-11-23"


# --- pools: overflow ---------------------------------------------------------------------------

OVERFLOW = """
version: 1
reps:
  - {{id: cara, active: false}}
  - {{id: dev, out_of_office: [{{start: 2026-11-01, end: 2026-11-30}}]}}
  - {{id: olga, backup: ben, manager: maya, active: {olga}}}
  - {{id: ben, active: {ben}}}
  - {{id: maya, active: {maya}}}
  - {{id: zed}}
pools:
  p:
    members: [cara, dev]
    {overflow}
rules:
  - {{name: pool, assign: {{pool: p}}}}
  - {{name: rest, assign: {{rep: zed}}}}
"""


def overflow_routing(overflow: str = "overflow: {rep: olga}", olga: str = "true",
                     ben: str = "true", maya: str = "true") -> CompiledRouting:
    return routing(OVERFLOW.format(overflow=overflow, olga=olga, ben=ben, maya=maya))


@pytest.mark.parametrize(("olga", "ben", "owner"), [
    ("true", "true", "olga"), ("false", "true", "ben"), ("false", "false", "maya"),
])
def test_given_all_members_away_when_the_pool_has_an_overflow_then_its_chain_as_fallback(
    olga, ben, owner,
):
    d = decide(rec(), context(overflow_routing(olga=olga, ben=ben)))

    assert (d.owner, d.outcome, d.rule, d.pool) == (owner, Outcome.FALLBACK, "pool", "p")
    assert d.turn is None
    assert "overflow" in d.reason


def test_given_an_overflow_queue_when_all_members_are_away_then_the_queue_unchecked():
    d = decide(rec(crm="salesforce"),
               context(overflow_routing(f'overflow: {{queue: "{SF_QUEUE}"}}')))

    assert (d.owner, d.owner_crm_id, d.outcome, d.rule) == (
        SF_QUEUE, SF_QUEUE, Outcome.FALLBACK, "pool")


def test_given_no_overflow_when_all_members_are_away_then_the_next_rule():
    d = decide(rec(), context(overflow_routing("strategy: round_robin")))

    assert (d.owner, d.rule, d.outcome) == ("zed", "rest", Outcome.ASSIGNED)
    assert steps(d) == [("pool", "no_assignee"), ("rest", "won")]
    assert "cara inactive" in d.trace[0].detail and "dev out of office" in d.trace[0].detail


def test_given_an_overflow_that_yields_nobody_when_deciding_then_the_next_rule():
    d = decide(rec(), context(overflow_routing(olga="false", ben="false", maya="false")))

    assert (d.owner, d.rule) == ("zed", "rest")
    assert steps(d) == [("pool", "no_assignee"), ("rest", "won")]
    assert "overflow olga" in d.trace[0].detail


def test_given_a_capped_pool_when_overflowing_then_the_overflow_takes_no_pool_turn():
    r = routing("""
        version: 1
        reps: [{id: cara}, {id: olga}]
        pools:
          p: {members: [cara], cap: {max: 0, per: day}, overflow: {rep: olga}}
        rules:
          - {name: pool, assign: {pool: p}}
    """)

    d = route(r, 2)

    assert owners(d) == ["olga", "olga"]
    assert all(x.outcome is Outcome.FALLBACK and x.turn is None for x in d)


# --- top-level fallback ------------------------------------------------------------------------

FALLBACK = """
version: 1
reps:
  - {{id: ben, active: false}}
  - {{id: fay, backup: gus, active: {fay}}}
  - {{id: gus, active: {gus}}}
rules:
  - {{name: only, assign: {{rep: ben}}}}
{fallback}
"""


def test_given_no_rule_yields_anyone_when_a_fallback_rep_is_available_then_outcome_fallback():
    r = routing(FALLBACK.format(fay="true", gus="true", fallback="fallback: {rep: fay}"))

    d = decide(rec(), context(r))

    assert (d.owner, d.outcome, d.rule) == ("fay", Outcome.FALLBACK, None)
    assert steps(d) == [("only", "no_assignee")]
    assert "fallback" in d.reason


def test_given_the_fallback_rep_away_when_its_backup_is_available_then_the_backup():
    r = routing(FALLBACK.format(fay="false", gus="true", fallback="fallback: {rep: fay}"))

    d = decide(rec(), context(r))

    assert (d.owner, d.outcome, d.rule) == ("gus", Outcome.FALLBACK, None)


def test_given_a_fallback_that_yields_nobody_when_deciding_then_unassigned_with_why():
    r = routing(FALLBACK.format(fay="false", gus="false", fallback="fallback: {rep: fay}"))

    d = decide(rec(), context(r))

    assert (d.owner, d.outcome, d.rule) == (None, Outcome.UNASSIGNED, None)
    assert "fay" in d.reason


def test_given_a_fallback_queue_when_no_rule_yields_anyone_then_the_queue():
    r = routing(FALLBACK.format(fay="false", gus="false",
                                fallback=f'fallback: {{queue: "{SF_QUEUE}"}}'))

    d = decide(rec(crm="salesforce"), context(r))

    assert (d.owner, d.owner_crm_id, d.outcome, d.rule) == (
        SF_QUEUE, SF_QUEUE, Outcome.FALLBACK, None)


def test_given_no_fallback_when_no_rule_yields_anyone_then_unassigned():
    r = routing(FALLBACK.format(fay="true", gus="true", fallback=""))

    d = decide(rec(), context(r))

    assert (d.owner, d.outcome, d.rule) == (None, Outcome.UNASSIGNED, None)
    assert d.reason


def test_given_a_queue_rule_when_deciding_then_assigned_without_any_availability_check():
    r = routing(f"""
        version: 1
        rules:
          - {{name: hold, assign: {{queue: "{SF_QUEUE}"}}}}
    """)

    d = decide(rec(crm="salesforce"), context(r))

    assert (d.owner, d.owner_crm_id, d.outcome, d.rule) == (
        SF_QUEUE, SF_QUEUE, Outcome.ASSIGNED, "hold")


# --- account owner -----------------------------------------------------------------------------

FOLLOW = f"""
version: 1
reps:
  - {{id: ava, crm_ids: {{salesforce: "{AVA_SF}"}}}}
  - {{id: ben, active: false, crm_ids: {{salesforce: "{BEN_SF}"}}}}
  - {{id: maya}}
rules:
  - {{name: follow, assign: {{account_owner: true}}}}
  - {{name: rest, assign: {{rep: maya}}}}
"""


@pytest.mark.parametrize("obj", ["lead", "contact"])
def test_given_a_lead_whose_domain_has_an_account_when_following_then_the_account_owner(obj):
    d = decide(rec(object=obj, crm="salesforce", email="jo@eu.acme.com"),
               context(routing(FOLLOW), account_owners={"acme.com": AVA_SF[:15]}))

    assert (d.owner, d.owner_crm_id, d.outcome, d.rule) == (
        "ava", AVA_SF, Outcome.ASSIGNED, "follow")


def test_given_an_account_record_when_following_account_owner_then_the_rule_yields_nobody():
    d = decide(rec(crm="salesforce", domain="acme.com"),
               context(routing(FOLLOW), account_owners={"acme.com": AVA_SF}))

    assert (d.owner, d.rule) == ("maya", "rest")
    assert steps(d) == [("follow", "no_assignee"), ("rest", "won")]


def test_given_a_free_mail_lead_when_following_account_owner_then_no_match_on_the_mail_domain():
    d = decide(rec(object="lead", email="jo@gmail.com"),
               context(routing(FOLLOW), account_owners={"gmail.com": AVA_SF}))

    assert (d.owner, d.rule) == ("maya", "rest")


def test_given_the_account_owner_is_inactive_when_following_then_the_next_rule():
    d = decide(rec(object="lead", email="jo@acme.com"),
               context(routing(FOLLOW), account_owners={"acme.com": BEN_SF}))

    assert (d.owner, d.rule) == ("maya", "rest")
    assert "ben" in d.trace[0].detail


def test_given_the_account_owner_is_out_of_office_when_following_then_still_the_account_owner():
    # "when that owner is valid" (docs/routing-file.md#assign-targets): validity is ownership
    # (active user, not a queue), not availability, just as an out-of-office owner is kept
    # (docs/routing-file.md#edge-cases-owners).
    d = decide(rec(object="lead", email="jo@acme.com"),
               context(routing(FOLLOW), paused={"ava": None},
                       account_owners={"acme.com": AVA_SF}))

    assert (d.owner, d.rule, d.outcome) == ("ava", "follow", Outcome.ASSIGNED)


def test_given_no_account_with_the_domain_when_following_then_the_next_rule():
    d = decide(rec(object="lead", email="jo@initech.com"),
               context(routing(FOLLOW), account_owners={"acme.com": AVA_SF}))

    assert d.owner == "maya"


def test_given_an_unknown_account_owner_in_file_mode_when_following_then_that_raw_owner():
    d = decide(rec(object="lead", email="jo@acme.com"),
               context(routing(FOLLOW), account_owners={"acme.com": "005000000000777AAA"}))

    assert (d.owner, d.owner_crm_id, d.outcome) == (
        "005000000000777AAA", "005000000000777AAA", Outcome.ASSIGNED)


def test_given_a_crm_directory_when_the_account_owner_is_inactive_there_then_the_next_rule():
    users = {id_key(AVA_SF): OwnerInfo(active=False)}

    d = decide(rec(object="lead", crm="salesforce", email="jo@acme.com"),
               context(routing(FOLLOW), users=users, account_owners={"acme.com": AVA_SF}))

    assert d.owner == "maya"


# --- decision fields ---------------------------------------------------------------------------

FIELDS = f"""
version: 1
reps:
  - {{id: ava, crm_ids: {{salesforce: "{AVA_SF}", hubspot: "101"}}}}
rules:
  - {{name: to-ava, assign: {{rep: ava}}}}
"""


@pytest.mark.parametrize(("crm", "crm_id"), [("salesforce", AVA_SF), ("hubspot", "101")])
def test_given_a_rep_assignee_when_deciding_then_owner_crm_id_is_for_the_records_crm(crm, crm_id):
    created = datetime(2026, 11, 1, tzinfo=UTC)

    d = decide(rec(id="x9", crm=crm, object="lead", created_at=created),
               context(routing(FIELDS)), trigger="webhook")

    assert (d.record_id, d.object, d.crm, d.owner, d.owner_crm_id) == (
        "x9", "lead", crm, "ava", crm_id)
    assert (d.trigger, d.created_at, d.decided_at) == ("webhook", created, NOW)
    assert "to-ava" in d.reason and "ava" in d.reason


def test_given_any_outcome_when_deciding_then_reason_is_human_readable_and_time_is_passed_in():
    r = overflow_routing(olga="false", ben="false", maya="false")
    at = datetime(2027, 1, 4, 9, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    decisions = [
        decide(rec(), context(r, at)),  # via the next rule
        decide(rec(owner="zed"), context(r, at)),  # kept
        decide(rec(), context(routing(FALLBACK.format(fay="false", gus="false", fallback="")),
                              at)),  # unassigned
    ]

    for d in decisions:
        assert d.decided_at == at
        assert len(d.reason) > 10 and " " in d.reason


def test_given_a_naive_instant_when_building_a_context_then_an_error():
    with pytest.raises(ValueError, match="timezone-aware"):
        context(routing(FIELDS), datetime(2026, 11, 25, 15, 0))


# --- purity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["round_robin", "weighted", "least_loaded"])
def test_given_a_context_when_deciding_twice_then_equal_decisions_and_snapshot_untouched(strategy):
    r = pool_routing("cara, dev, eli", strategy, extra="    cap: {max: 9, per: week}\n")
    snap = PoolSnapshot(pool="p", version=4, last_served="cara",
                        credits={"cara": -1.0, "dev": 1.0, "eli": 0.0},
                        counts={"cara": 2, "dev": 1, "eli": 1})
    ctx = context(r, pools={"p": snap})
    before = copy.deepcopy(ctx.pools)

    first = decide(rec(), ctx)
    second = decide(rec(), ctx)

    assert first == second
    assert first.turn is not None
    assert ctx.pools == before
    assert ctx.pending_changes() == []


def test_given_a_turn_applied_when_deciding_again_then_the_next_turn():
    ctx = context(pool_routing("cara, dev"))

    first = decide(rec(), ctx)
    ctx.apply(first.turn)
    second = decide(rec(), ctx)

    assert (first.owner, second.owner) == ("cara", "dev")
    [change] = ctx.pending_changes()
    assert change.last_served == "cara"
    assert dict(change.increments) == {("cara", "day:2026-11-25"): 1}


def test_given_a_batch_past_its_caps_when_decided_in_one_context_then_each_as_on_a_fresh_one():
    # One context memoizes answers (pools that took no turn, whole paths of rules) until the
    # next turn: every decision must still be the one a fresh snapshot of the same state gives.
    r = routing("""
        version: 1
        reps:
          - {id: cara, crm_ids: {hubspot: "1"}}
          - {id: dev, crm_ids: {hubspot: "2"}}
          - {id: eve}
          - {id: maya, crm_ids: {hubspot: "9"}}
          - {id: hana, active: false, manager: maya}
        pools:
          big: {members: [eve], cap: {max: 1, per: day}, overflow: {rep: maya}}
          p: {members: [cara, dev], cap: {max: 2, per: day}}
        rules:
          - {name: health, when: {industry: {eq: Healthcare}}, assign: {rep: hana}}
          - {name: size, when: {employees: {gt: 500}}, assign: {pool: big}}
          - {name: named, when: {domain: {eq: acme.com}}, assign: {queue: HOLD}}
          - {name: rest, assign: {pool: p}}
        fallback: {rep: maya}
    """)
    shapes = [{}, {"employees": "900"}, {"industry": "Healthcare"}, {"domain": "acme.com"},
              {"industry": "Healthcare", "employees": "900"}, {"owner": "2"}, {"owner": "77"}]
    records = [rec(id=f"r{k}", crm="hubspot", **shapes[k % len(shapes)]) for k in range(40)]
    ctx = context(r)

    for record in records:
        fresh = context(r, pools=copy.deepcopy(ctx.pools))
        d = decide(record, ctx)
        assert d == decide(record, fresh)
        if d.turn is not None:
            ctx.apply(d.turn)

    assert {d.outcome for d in route(r, records)} == {
        Outcome.ASSIGNED, Outcome.FALLBACK, Outcome.KEPT_EXISTING}
