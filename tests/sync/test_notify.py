"""Who is told about a landed write, what they read, and delivery's once-only bookkeeping."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from connectors.links import CrmLinks
from sync.decide import RoutingContext, decide
from sync.models import Decision, HistoryEvent, Outcome, Record, decision_key
from sync.notify import (
    MAX_ATTEMPTS,
    Delivery,
    Notice,
    Notifier,
    compose,
    deliver,
    email_message,
    rule_fields,
    slack_message,
)
from sync.ports import Written
from tests.builders import rec, routing

NOW = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
LINKS = CrmLinks("62515", "https://acme.my.salesforce.com")

FILE = """
    version: 1
    notify: {manager_on_fallback: true}
    sla: {first_touch: 4h}
    reps:
      - {id: ana, name: Ana Ruiz, email: ana@example.com, manager: mia}
      - {id: ben, name: Ben Ode, slack: U0BEN}
      - {id: mia, name: Mia Kahn, email: mia@example.com, slack: U0MIA}
      - {id: quiet, name: Quiet Q, email: quiet@example.com}
      - {id: oli, name: Oli Away, email: oli@example.com, manager: mia, backup: ben,
         out_of_office: [{start: 2026-12-01, end: 2026-12-31}]}
    pools:
      emea: {members: [ana]}
    rules:
      - name: emea-enterprise
        when: {country: {in: [DE, FR]}, any: [{employees: {gte: 1000}}, {industry: software}]}
        assign: {pool: emea}
        sla: {first_touch: 15m}
      - name: hush
        when: {country: NZ}
        assign: {rep: quiet}
        notify: false
      - name: us
        when: {country: US}
        assign: {rep: ben}
      - name: canada
        when: {country: CA}
        assign: {rep: oli}
      - name: to-queue
        when: {country: JP}
        assign: {queue: Q-JP}
    fallback: {rep: ana}
"""


def _written(record: Record, yaml_text: str = FILE, crm: str = "hubspot") -> Decision:
    ctx = RoutingContext(routing(yaml_text), NOW)
    decision = decide(replace(record, crm=crm), ctx)
    return decision._replace(written_at=NOW + timedelta(seconds=2))


def _compose(record: Record, yaml_text: str = FILE) -> list[Notice]:
    decision = _written(record, yaml_text)
    return compose(decision, record, routing(yaml_text), decision_key(decision), LINKS)


def test_given_a_pool_assignment_when_composing_then_the_owner_gets_link_fields_and_deadline():
    record = rec(id="501", name="Acme GmbH", country="DE", employees=1200, crm="hubspot")
    notices = _compose(record)
    assert [(n.channel, n.rep, n.role) for n in notices] == \
        [("slack", "ana", "owner"), ("email", "ana", "owner")]
    n = notices[0]
    assert n.link == "https://app.hubspot.com/contacts/62515/record/0-2/501"
    assert n.record_name == "Acme GmbH" and n.rule == "emea-enterprise"
    # The fields the rule named (through any:), with the record's values; absent shows empty.
    assert n.fields == (("country", "DE"), ("employees", "1200"), ("industry", "(empty)"))
    # The rule's SLA wins over the top level's: written_at + 15 minutes.
    assert n.deadline == (NOW + timedelta(seconds=2, minutes=15)).isoformat()


def test_given_a_fallback_and_manager_on_fallback_when_composing_then_the_manager_is_told_too():
    notices = _compose(rec(id="9", name="Nowhere Ltd", country="BR"))
    assert {(n.rep, n.role, n.channel) for n in notices} == {
        ("ana", "owner", "slack"), ("ana", "owner", "email"),
        ("mia", "manager", "slack"), ("mia", "manager", "email")}
    manager = next(n for n in notices if n.role == "manager")
    assert manager.owner == "ana" and manager.outcome == "fallback" and manager.rule is None
    assert manager.deadline == (NOW + timedelta(seconds=2, hours=4)).isoformat()  # top level
    text, _ = slack_message(manager)
    assert text.startswith("Nowhere Ltd went to Ana Ruiz by fallback")


def test_given_the_wanted_rep_away_when_a_backup_takes_it_then_the_wanted_reps_manager_is_told():
    notices = _compose(rec(id="11", name="Maple Inc", country="CA"))
    assert {(n.rep, n.role) for n in notices} == {("ben", "owner"), ("mia", "manager")}
    assert all(n.owner == "ben" and n.outcome == "fallback" for n in notices)
    assert notices[0].fields == (("country", "CA"),)


def test_given_manager_on_fallback_off_when_a_fallback_lands_then_only_the_owner_is_told():
    quiet = FILE.replace("notify: {manager_on_fallback: true}", "notify: {channels: [email]}")
    notices = _compose(rec(id="9", country="BR"), quiet)
    assert [(n.rep, n.channel) for n in notices] == [("ana", "email")]


def test_given_notify_false_on_the_rule_when_composing_then_nobody_is_told():
    assert _compose(rec(id="7", country="NZ")) == []


def test_given_kept_unassigned_queue_or_unwritten_decisions_when_composing_then_nobody_is_told():
    r = routing(FILE)
    queued = _written(rec(id="8", country="JP"))
    assert queued.outcome == Outcome.ASSIGNED and queued.owner == "Q-JP"
    kept = Decision("1", "account", "hubspot", Outcome.KEPT_EXISTING, owner="ben",
                    written_at=NOW)
    unassigned = Decision("2", "account", "hubspot", Outcome.UNASSIGNED, written_at=NOW)
    unwritten = _written(rec(id="3", country="US"))._replace(written_at=None)
    for d in (queued, kept, unassigned, unwritten):
        assert compose(d, rec(id=d.record_id), r, decision_key(d), LINKS) == [], d


def test_given_a_rep_with_slack_only_when_composing_then_no_email_notice():
    notices = _compose(rec(id="5", country="US", crm="hubspot"))
    assert [(n.channel, n.slack, n.deadline is not None) for n in notices] == \
        [("slack", "U0BEN", True)]


def test_given_nested_conditions_when_listing_rule_fields_then_each_field_once_in_order():
    when = {"country": "DE", "not": {"industry": "gov"}, "all": [{"country": "FR"},
                                                                {"fields.tier": "A"}]}
    assert rule_fields(when) == ("country", "industry", "fields.tier")


def test_given_a_hostile_record_name_when_rendering_then_slack_and_html_escape_it():
    [n, *_] = _compose(rec(id="6", name="<!channel> <script>x</script> & co", country="US"))
    text, blocks = slack_message(n)
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert "<!channel>" not in str(blocks)
    subject, plain, html = email_message(replace(n, channel="email"))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "\n" not in subject


class Claims:
    """The state store's seen/forget/record_events, in memory: the contract suite proves the
    real stores' atomicity; this is about the order of delivery's steps."""

    def __init__(self) -> None:
        self.marks: set[str] = set()
        self.events: list[HistoryEvent] = []

    def seen(self, key: str, ttl_seconds: float) -> bool:
        if key in self.marks:
            return True
        self.marks.add(key)
        return False

    def forget(self, key: str) -> None:
        self.marks.discard(key)

    def record_events(self, events):
        self.events.extend(events)


class Scripted:
    channel = "slack"

    def __init__(self, *answers: Delivery) -> None:
        self.answers = list(answers)
        self.sent: list[Notice] = []

    def send(self, notice: Notice) -> Delivery:
        self.sent.append(notice)
        return self.answers.pop(0) if self.answers else Delivery(True, target="U0BEN")


def _notice() -> Notice:
    return _compose(rec(id="5", country="US"))[0]


def test_given_a_notice_delivered_twice_when_delivering_then_it_is_sent_once_and_recorded():
    claims, slack = Claims(), Scripted()
    first = deliver([_notice()], {"slack": slack}, claims, lambda: NOW)
    again = deliver([_notice()], {"slack": slack}, claims, lambda: NOW)
    assert len(first.sent) == 1 and len(again.skipped) == 1 and len(slack.sent) == 1
    [event] = claims.events
    assert event.kind == "notified" and event.record_id == "5"
    assert event.data["channel"] == "slack" and event.data["recipient"] == "ben"
    assert event.data["decision"] == _notice().decision_key


def test_given_retryable_failures_when_delivering_then_the_claim_is_released_until_the_bound():
    claims = Claims()
    slack = Scripted(*[Delivery(False, "slack: HTTP 503", True)] * MAX_ATTEMPTS)
    notices = [_notice()]
    for attempt in range(MAX_ATTEMPTS):
        out = deliver(notices, {"slack": slack}, claims, lambda: NOW)
        notices = out.again
        assert claims.events == [] if attempt < MAX_ATTEMPTS - 1 else len(out.failed) == 1
    assert notices == [] and len(slack.sent) == MAX_ATTEMPTS
    [event] = claims.events
    assert event.kind == "notify_failed" and "503" in event.data["error"]
    assert event.data["attempts"] == MAX_ATTEMPTS


def test_given_a_final_failure_when_delivering_then_it_is_recorded_once_and_not_retried():
    claims = Claims()
    slack = Scripted(Delivery(False, "slack: user_not_found", False, "U0BEN"))
    out = deliver([_notice()], {"slack": slack}, claims, lambda: NOW)
    assert out.again == [] and len(out.failed) == 1
    assert [e.kind for e in claims.events] == ["notify_failed"]
    assert claims.events[0].data["error"] == "slack: user_not_found"


def test_given_the_embedded_notifier_when_a_write_lands_then_it_sends_inline():
    claims, slack = Claims(), Scripted()
    r = routing(FILE)
    record = rec(id="5", country="US", crm="hubspot")
    notifier = Notifier(r, [slack], claims, links=LINKS, clock=lambda: NOW)
    notifier.written("hubspot", "companies", [Written(_written(record), record)])
    assert len(slack.sent) == 1 and [e.kind for e in claims.events] == ["notified"]


def test_given_a_channel_down_when_embedded_then_one_round_of_retries_and_the_rest_fail_fast():
    claims = Claims()
    slack = Scripted(*[Delivery(False, "slack: chat.postMessage: gave up after 3 attempts: "
                                       "HTTP 503", True)] * 10)
    r = routing(FILE)
    ticks = [0.0]
    notifier = Notifier(r, [slack], claims, links=LINKS, clock=lambda: NOW,
                        monotonic=lambda: ticks[0])
    items = []
    for i in range(3):
        record = rec(id=f"5{i}", country="US", crm="hubspot")
        items.append(Written(_written(record), record))
    notifier.written("hubspot", "companies", items)
    # The first notice spent the transport's tries; the next two were not tried at all.
    assert len(slack.sent) == 1
    assert [e.kind for e in claims.events] == ["notify_failed"] * 3
    assert "not tried: slack failed just before" in claims.events[2].data["error"]
    # After the cool-down the channel is tried again.
    ticks[0] = 61.0
    record = rec(id="59", country="US", crm="hubspot")
    notifier.written("hubspot", "companies", [Written(_written(record), record)])
    assert len(slack.sent) == 2


def test_given_a_notice_when_round_tripped_through_json_then_it_is_equal():
    n = _notice()
    assert Notice.from_json(n.to_json()) == n


def test_given_huge_hostile_values_when_rendering_then_slack_limits_hold_and_one_line_subject():
    name = ("<@U123> &\n" * 2000)
    [n, *_] = _compose(rec(id="501", name=name, country="DE", employees=1200, industry="x" * 5000))
    text, blocks = slack_message(n)
    for block in blocks:
        if "text" in block:
            assert len(block["text"]["text"]) <= 3000
        for f in block.get("fields", []):
            assert len(f["text"]) <= 2000
        for e in block.get("elements", []):
            assert len(e["text"]) <= 3000
    assert len(blocks[2]["fields"]) <= 10 and len(text) <= 4000
    assert "<@U123>" not in str(blocks)
    subject, _, _ = email_message(n)
    assert len(subject) <= 180 and "\n" not in subject
