"""The routing-file keys of the people loop (DESIGN §8): notify, sla, touch_fields, review."""

from __future__ import annotations

from datetime import timedelta

import pytest

from config.routing import parse_duration
from sync.normalize import build_record
from tests.config.test_routing import compile_text, config_error, doc

FULL = """\
pools:
  smb: {members: [ava, ben], sla: {first_touch: 1h, on_breach: reroute}}
notify: {channels: [slack], manager_on_fallback: true}
sla: {first_touch: 15m}
review_when: {employees: {gt: 5000}}
review_timeout: 2h
on_review_timeout: approve
touch_fields: {hubspot: {contacts: hs_lead_status}, salesforce: {Lead: Status}}
rules:
  - name: big
    when: {employees: {gt: 1000}}
    assign: {rep: ava}
    review: true
    notify: false
    sla: {first_touch: 30m, max_reroutes: 2}
  - {name: rest, assign: {pool: smb}}
"""


def test_given_every_people_loop_key_when_compiling_then_each_is_typed():
    compiled = compile_text(doc(FULL).replace("- {id: ava}", "- {id: ava, slack: U0AVA}"))
    file = compiled.file
    assert file.reps[0].slack == "U0AVA"
    assert file.notify is not None and file.notify.channels == ["slack"]
    assert file.notify.manager_on_fallback is True
    assert file.review_timeout == timedelta(hours=2) and file.on_review_timeout == "approve"
    assert file.touch_fields == {"hubspot": {"contacts": "hs_lead_status"},
                                 "salesforce": {"Lead": "Status"}}
    big = compiled.rule_named("big")
    assert big is not None and big.review and not big.notify
    assert compiled.review_when is not None
    assert compiled.review_when(build_record({"id": "1", "employees": "6000"}))
    assert not compiled.review_when(build_record({"id": "2", "employees": "900"}))


def test_given_no_people_loop_keys_then_defaults_notify_everyone_and_review_nothing():
    compiled = compile_text(doc("rules:\n  - {name: r, assign: {rep: ava}}\n"))
    file = compiled.file
    assert file.notify is None and file.sla is None and file.review_when is None
    assert file.review_timeout == timedelta(hours=4) and file.on_review_timeout == "escalate"
    rule = compiled.rule_named("r")
    assert rule is not None and rule.notify and not rule.review
    assert compiled.sla_for("r", None) is None


def test_given_slas_at_three_levels_then_the_most_specific_wins():
    compiled = compile_text(doc(FULL))
    rule_sla = compiled.sla_for("big", None)
    assert rule_sla is not None and rule_sla.first_touch == timedelta(minutes=30)
    assert rule_sla.max_reroutes == 2 and rule_sla.on_breach == "notify_manager"
    pool_sla = compiled.sla_for("rest", "smb")
    assert pool_sla is not None and pool_sla.first_touch == timedelta(hours=1)
    assert pool_sla.on_breach == "reroute" and pool_sla.max_reroutes == 1
    top = compiled.sla_for(None, None)
    assert top is not None and top.first_touch == timedelta(minutes=15)
    assert compiled.sla_for("unknown", "unknown") == top


@pytest.mark.parametrize(("text", "expected"), [
    ("15m", timedelta(minutes=15)), ("4h", timedelta(hours=4)), ("1d", timedelta(days=1)),
    ("1h30m", timedelta(minutes=90)), (" 90S ", timedelta(seconds=90)),
    (600, timedelta(minutes=10)),
    ("30d", timedelta(days=30)),
])
def test_given_a_duration_when_parsing_then_its_timedelta(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0m", "15", "15 minutes", "-5m", "31d", "1.5h", "m", True,
                                  0, 10**12, "9" * 7 + "d", None, [15]])
def test_given_a_bad_duration_when_parsing_then_valueerror_says_what_is_expected(text):
    with pytest.raises(ValueError, match="a duration such as 15m"):
        parse_duration(text)


def test_given_an_sla_without_first_touch_when_parsing_then_the_key_is_named_as_required():
    err = config_error(doc("sla: {on_breach: reroute}\n"))
    assert err.path == "sla.first_touch" and "required" in str(err)


@pytest.mark.parametrize(("body", "path", "found"), [
    ("sla: {first_touch: soon}\n", "sla.first_touch", "'soon'"),
    ("sla: {first_touch: 15m, on_breach: shout}\n", "sla.on_breach", "'shout'"),
    ("sla: {first_touch: 15m, max_reroutes: 11}\n", "sla.max_reroutes", "11"),
    ("notify: {channels: [pager]}\n", "notify.channels[0]", "'pager'"),
    ("review_timeout: 0m\n", "review_timeout", "'0m'"),
    ("on_review_timeout: ignore\n", "on_review_timeout", "'ignore'"),
    ("touch_fields: {hubspt: {contacts: x}}\n", "touch_fields.hubspt", "'hubspt'"),
    ("touch_fields: {hubspot: {deals: x}}\n", "touch_fields.hubspot.deals", "'deals'"),
    ("review_when: {employees: {gtt: 5}}\n", "review_when.employees.gtt", "'gtt'"),
    ("rules:\n  - {name: r, assign: {rep: ava}, sla: {first_touch: 1w}}\n",
     "rules[0].sla.first_touch", "'1w'"),
    ("rules:\n  - {name: r, assign: {rep: ava}, reveiw: true}\n", "rules[0].reveiw",
     "unknown key 'reveiw'"),
])
def test_given_a_bad_people_loop_key_when_parsing_then_the_error_names_its_path(body, path,
                                                                                 found):
    err = config_error(doc(body))
    assert err.path == path, str(err)
    assert f"found {found}" in str(err), str(err)
