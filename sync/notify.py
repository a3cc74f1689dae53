"""Who to tell about a landed owner write, and what: notices and their Slack and email text."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from jinja2 import Environment, select_autoescape

from config.routing import CHANNELS, Channel
from sync.compiler import CompiledRouting
from sync.models import Decision, HistoryEvent, Outcome, Record, decision_key, event_id
from sync.ports import Written
from sync.state.base import WatchEntry

# `review`: a reviewer (the proposed owner's manager) told that a held decision is overdue.
Role = Literal["owner", "manager", "review"]
# What a notice shows of one value a rule used: a hostile record must not make a message that
# Slack refuses (3,000 characters a text block) or an email nobody reads.
MAX_VALUE_CHARS = 200
MAX_NAME_CHARS = 200
MAX_FIELDS = 10


class Links(Protocol):
    """Where a record's page in its CRM is (connectors/links.py knows the CRMs' URLs)."""

    def decision(self, decision: Decision) -> str | None: ...

    def record(self, crm: str, crm_object: str, record_id: str) -> str | None: ...


class NoLinks:
    """No CRM links (messages name the record without one)."""

    def decision(self, decision: Decision) -> str | None:
        return None

    def record(self, crm: str, crm_object: str, record_id: str) -> str | None:
        return None


NO_LINKS = NoLinks()


@dataclass(frozen=True, slots=True)
class Notice:
    """One message to one person on one channel about one landed decision; plain JSON values,
    so that service mode can park it in Redis and any worker can send it."""

    decision_key: str  # sync.models.decision_key: the decision's natural identity
    channel: Channel
    role: Role  # the new owner, or their manager told about a fallback
    rep: str  # the recipient's rep id
    name: str  # the recipient's name (their id when the file gives none)
    email: str | None
    slack: str | None  # the recipient's Slack user id, when the routing file names it
    crm: str
    object: str
    record_id: str
    record_name: str
    link: str | None
    owner: str  # the assigned rep's id (the recipient, unless role is manager)
    owner_name: str
    outcome: str
    rule: str | None
    reason: str
    steps: tuple[tuple[str, str, str], ...] = ()  # (rule, result, detail) of the rules tried
    fields: tuple[tuple[str, str], ...] = ()  # (field, the record's value) the rule used
    written_at: str | None = None  # ISO instants
    deadline: str | None = None  # first touch due by, when an SLA applies
    attempts: int = 0  # deliveries tried so far (service mode re-queues a retryable failure)
    # `assigned`: a new owner; `sla_breach`: the first-touch deadline passed (`action` says what
    # followed: `reroute` to `new_owner_name`, or `notify_manager`, the owner kept).
    about: str = "assigned"
    action: str | None = None
    new_owner_name: str | None = None

    @property
    def key(self) -> str:
        """Its dedupe key: one message per decision, channel and recipient."""
        return f"{self.decision_key}|{self.channel}|{self.rep}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Notice:
        data: dict[str, Any] = json.loads(text)
        data["steps"] = tuple(tuple(s) for s in data.get("steps", ()))
        data["fields"] = tuple(tuple(f) for f in data.get("fields", ()))
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Delivery:
    """How sending one notice went. `retryable`: a later attempt may succeed (429, 5xx,
    timeouts, SMTP 4xx); otherwise a failure is final (user_not_found, SMTP 5xx)."""

    ok: bool
    error: str | None = None
    retryable: bool = False
    target: str = ""  # where it went: a Slack user id or an email address


class Sender(Protocol):
    """A channel (connectors/notify/): sends one notice; never raises for a vendor failure."""

    @property
    def channel(self) -> Channel: ...

    def send(self, notice: Notice) -> Delivery: ...


# --- who and what ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotifyPolicy:
    """The routing file's `notify:` as composition needs it (defaults when absent)."""

    channels: tuple[Channel, ...] = CHANNELS
    manager_on_fallback: bool = False


def policy(routing: CompiledRouting) -> NotifyPolicy:
    notify = routing.file.notify
    if notify is None:
        return NotifyPolicy()
    return NotifyPolicy(tuple(notify.channels), notify.manager_on_fallback)


def rule_fields(when: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The record fields a rule's `when` names, in order, through any/all/not."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key in ("any", "all"):
                    for sub in value if isinstance(value, list) else ():
                        walk(sub)
                elif key == "not":
                    walk(value)
                elif str(key) not in found:
                    found.append(str(key))

    walk(when)
    return tuple(found)


def compose(decision: Decision, record: Record, routing: CompiledRouting, decision_key: str,
            links: Links = NO_LINKS, channels: Iterable[str] = CHANNELS) -> list[Notice]:
    """The notices a landed write calls for, on the `channels` that are configured.

    Nobody is told about a kept owner, an unassigned record, a queue, a rep the file does not
    know, or a decision whose winning rule says `notify: false`; the new owner is told, and
    their manager too when the outcome is a fallback and `notify.manager_on_fallback`."""
    if decision.written_at is None or decision.owner is None:
        return []
    if decision.outcome not in (Outcome.ASSIGNED, Outcome.FALLBACK):
        return []
    owner = routing.reps.get(decision.owner)
    if owner is None:  # a queue or an unknown owner: no person to tell
        return []
    rule = _rule(routing, decision.rule)
    if rule is not None and not rule.notify:
        return []
    wanted = policy(routing)
    on = [c for c in wanted.channels if c in set(channels)]
    recipients: list[tuple[Role, str]] = [("owner", owner.id)]
    if decision.outcome == Outcome.FALLBACK and wanted.manager_on_fallback:
        manager = _manager_on_fallback(routing, decision, owner.id)
        if manager is not None:
            recipients.append(("manager", manager))

    sla = routing.sla_for(decision.rule, decision.pool)
    deadline = (decision.written_at + sla.first_touch).isoformat() if sla is not None else None
    used = rule_fields(rule.when) if rule is not None else ()
    values = tuple((name, _short(_value(record, name), MAX_VALUE_CHARS))
                   for name in used[:MAX_FIELDS])
    steps = tuple((s.rule, s.result, s.detail) for s in decision.trace if s.result != "no_match")
    name = _short(record.raw.get("name") or decision.record_id, MAX_NAME_CHARS)
    link = links.decision(decision)
    notices = []
    for role, rep_id in recipients:
        rep = routing.reps[rep_id]
        for channel in on:
            if channel == "email" and not rep.email:
                continue
            if channel == "slack" and not (rep.slack or rep.email):
                continue
            notices.append(Notice(
                decision_key=decision_key, channel=channel, role=role, rep=rep.id,
                name=rep.name or rep.id, email=rep.email, slack=rep.slack, crm=decision.crm,
                object=decision.object, record_id=decision.record_id, record_name=name,
                link=link, owner=owner.id, owner_name=owner.name or owner.id,
                outcome=str(decision.outcome), rule=decision.rule, reason=decision.reason,
                steps=steps, fields=values, written_at=decision.written_at.isoformat(),
                deadline=deadline))
    return notices


def breach_notices(entry: WatchEntry, action: str, new_owner: str | None,
                   routing: CompiledRouting, links: Links = NO_LINKS,
                   channels: Iterable[str] = CHANNELS, *, kind: str | None = None,
                   name: str | None = None) -> list[Notice]:
    """Who hears that a first-touch SLA ran out: the owner's manager, and after a re-route the
    rep who let it run out (the new owner hears of the re-route as of any write)."""
    owner = routing.reps.get(entry.owner)
    if owner is None:
        return []
    recipients: list[tuple[Role, str]] = []
    if owner.manager and owner.manager in routing.reps and owner.manager != owner.id:
        recipients.append(("manager", owner.manager))
    if action == "reroute" and new_owner and new_owner != owner.id:
        recipients.append(("owner", owner.id))
    on = [c for c in policy(routing).channels if c in set(channels)]
    moved_to = routing.reps.get(new_owner) if new_owner else None
    # The watch entry holds the CRM's own object name, which the link needs; `kind` (the
    # record kind) is what the message calls it when the pass knows it.
    shown = kind or entry.object
    link = links.record(entry.crm, entry.object, entry.record_id)
    notices = []
    for role, rep_id in recipients:
        rep = routing.reps[rep_id]
        for channel in on:
            if (channel == "email" and not rep.email) or \
                    (channel == "slack" and not (rep.slack or rep.email)):
                continue
            notices.append(Notice(
                # Its own key: the assignment's notices to the same people stay distinct.
                decision_key=f"{entry.decision_key}#sla", channel=channel, role=role,
                rep=rep.id, name=rep.name or rep.id, email=rep.email, slack=rep.slack,
                crm=entry.crm, object=shown, record_id=entry.record_id,
                record_name=name or f"record {entry.record_id}", link=link, owner=owner.id,
                owner_name=owner.name or owner.id, outcome="sla_breach", rule=entry.rule,
                reason=(f"rule {entry.rule}: " if entry.rule else "")
                + f"first touch was due by {entry.deadline.isoformat()}",
                written_at=entry.written_at.isoformat(), deadline=entry.deadline.isoformat(),
                about="sla_breach", action=action,
                new_owner_name=(moved_to.name or moved_to.id) if moved_to else new_owner))
    return notices


def _manager_on_fallback(routing: CompiledRouting, decision: Decision, owner: str
                         ) -> str | None:
    """The manager of the rep the winning rule wanted (out of office, paused or at cap, so a
    backup took it), else of the rep who got it (the file's `fallback`); never the owner."""
    wanted = owner
    for rule in routing.rules:
        if rule.name == decision.rule and rule.kind == "rep" and rule.target is not None \
                and rule.target in routing.reps:
            wanted = rule.target
            break
    for rep_id in dict.fromkeys((wanted, owner)):
        manager = routing.reps[rep_id].manager
        if manager and manager in routing.reps and manager != owner:
            return manager
    return None


def _value(record: Record, field_name: str) -> str:
    if field_name == "object":
        return record.object
    if field_name == "id":
        return record.id
    return record.raw.get(field_name, "(empty)")


def _rule(routing: CompiledRouting, name: str | None) -> Any:
    if name is None:
        return None
    for rule in routing.file.rules:
        if rule.name == name:
            return rule
    return None


def _short(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Slack ----------------------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Text safe inside Slack mrkdwn: `&`, `<` and `>` are control characters there (a record
    named `<!channel>` would otherwise ping a whole channel)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _headline(notice: Notice) -> str:
    if notice.about == "sla_breach":
        return _breach_line(notice, notice.record_name)
    if notice.role == "review":
        return (f"{notice.record_name} waits for review past its deadline: "
                f"{notice.owner_name} proposed ({notice.crm} {notice.object})")
    if notice.role == "manager":
        return (f"{notice.record_name} went to {notice.owner_name} by fallback "
                f"({notice.crm} {notice.object})")
    return f"New {notice.object} for you: {notice.record_name} ({notice.crm})"


def _breach_line(notice: Notice, title: str) -> str:
    who = "You" if notice.role == "owner" else notice.owner_name
    line = (f"First-touch SLA missed: {who} did not touch {title} ({notice.crm} "
            f"{notice.object}) by {notice.deadline}")
    if notice.action == "reroute" and notice.new_owner_name:
        return f"{line}; it now belongs to {notice.new_owner_name}"
    return f"{line}; the owner is kept"


def _why(notice: Notice) -> str:
    if notice.rule:
        return f"rule {notice.rule}"
    return "fallback" if notice.outcome == "fallback" else notice.outcome


def slack_message(notice: Notice) -> tuple[str, list[dict[str, Any]]]:
    """(`text`, `blocks`) for chat.postMessage: Block Kit, and the plain text Slack shows in
    notifications and where blocks cannot be rendered."""
    name = slack_escape(notice.record_name)
    title = f"<{notice.link}|{name}>" if notice.link else f"*{name}*"
    if notice.about == "sla_breach":
        head = _breach_line(replace(notice, owner_name=slack_escape(notice.owner_name),
                                    new_owner_name=slack_escape(notice.new_owner_name or "")
                                    or None), title)
        text = _breach_line(notice, notice.record_name)
        if notice.link:
            text += f" {notice.link}"
        return slack_escape(text), [{"type": "section",
                                     "text": {"type": "mrkdwn", "text": _short(head, 2900)}}]
    if notice.role == "review":
        head = (f"{title} waits for review past its deadline: "
                f"*{slack_escape(notice.owner_name)}* proposed ({notice.crm} {notice.object})")
    elif notice.role == "manager":
        head = (f"{title} went to *{slack_escape(notice.owner_name)}* by fallback "
                f"({notice.crm} {notice.object})")
    else:
        head = f"New {notice.object} for you: {title} ({notice.crm})"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": head}},
        {"type": "section", "text": {
            "type": "mrkdwn",
            "text": _short(f"*Why:* {slack_escape(notice.reason or _why(notice))}", 2900)}},
    ]
    if notice.fields:
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*{slack_escape(k)}*\n{slack_escape(v)}"}
            for k, v in notice.fields]})
    context = [f"Routed by {slack_escape(_why(notice))}"]
    passed = [f"{slack_escape(r)}: {slack_escape(d or res)}" for r, res, d in notice.steps
              if res != "won"]
    if passed:
        context.append("tried first: " + "; ".join(passed))
    if notice.deadline:
        context.append(f"first touch due by {notice.deadline}")
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": _short(" · ".join(context), 2900)}]})
    text = _headline(notice)
    if notice.link:
        text += f" {notice.link}"
    if notice.deadline:
        text += f" (first touch due by {notice.deadline})"
    return slack_escape(text), blocks


# --- email ----------------------------------------------------------------------------------

_TEXT = """\
{{ headline }}

{% if link %}Open it: {{ link }}
{% endif %}Why: {{ reason }}
{% if fields %}
What the rule looked at:
{% for k, v in fields %}  {{ k }}: {{ v }}
{% endfor %}{% endif %}{% if passed %}
Tried first: {{ passed | join('; ') }}
{% endif %}{% if deadline and about != 'sla_breach' %}
First touch due by {{ deadline }}.
{% endif %}
-- account-router
"""

_HTML = """\
<!doctype html>
<html><body style="font-family: sans-serif">
<p>{% if about == 'sla_breach' %}{{ headline }}{% if link %} \
<a href="{{ link }}">Open it</a>{% endif %}.\
{% elif role == 'review' %}<strong>{% if link %}<a href="{{ link }}">{{ name }}</a>{% else %}\
{{ name }}{% endif %}</strong> waits for review past its deadline: {{ owner_name }} proposed \
({{ crm }} {{ object }}).{% elif role == 'manager' %}\
<strong>{% if link %}<a href="{{ link }}">{{ name }}</a>{% else %}\
{{ name }}{% endif %}</strong> went to {{ owner_name }} by fallback ({{ crm }} {{ object }}).\
{% else %}New {{ object }} for you: <strong>{% if link %}<a href="{{ link }}">{{ name }}</a>\
{% else %}{{ name }}{% endif %}</strong> ({{ crm }}).{% endif %}</p>
<p><strong>Why:</strong> {{ reason }}</p>
{% if fields %}<table>{% for k, v in fields %}<tr><th align="left">{{ k }}</th><td>{{ v }}</td>\
</tr>{% endfor %}</table>{% endif %}
{% if passed %}<p>Tried first: {{ passed | join('; ') }}</p>{% endif %}
{% if deadline and about != 'sla_breach' %}\
<p><strong>First touch due by {{ deadline }}.</strong></p>{% endif %}
<p style="color: #777">account-router</p>
</body></html>
"""

# Autoescaped: a record name is whatever someone typed into a web form.
_html_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_text_env = Environment(autoescape=False, keep_trailing_newline=True)
_html_template = _html_env.from_string(_HTML)
_text_template = _text_env.from_string(_TEXT)


def email_message(notice: Notice) -> tuple[str, str, str]:
    """(subject, text, html) of the notification email."""
    values = {
        "headline": _headline(notice), "name": notice.record_name, "link": notice.link,
        "role": notice.role, "owner_name": notice.owner_name, "crm": notice.crm,
        "object": notice.object, "reason": notice.reason or _why(notice),
        "fields": notice.fields, "deadline": notice.deadline,
        "passed": [f"{r}: {d or res}" for r, res, d in notice.steps if res != "won"],
        "about": notice.about,
    }
    # A subject is one header line: no newline from a record name may reach it.
    subject = _short(_headline(notice), 180)
    return subject, _text_template.render(values), _html_template.render(values)


# --- delivery ---------------------------------------------------------------------------------

# A notice is claimed (`StateStore.seen`) before it is sent, for this long: far longer than
# any redelivery or re-queue, so a notice is sent at most once per decision, channel and person.
CLAIM_TTL_SECONDS = 7 * 24 * 3600.0
# Deliveries of one notice in all, each already retried by its channel's transport: a Slack or
# SMTP outage of minutes is waited out (service mode re-queues), a permanent one is recorded.
MAX_ATTEMPTS = 3


@dataclass
class Outcomes:
    """What one delivery pass did."""

    sent: list[Notice] = field(default_factory=list)
    failed: list[tuple[Notice, str]] = field(default_factory=list)
    again: list[Notice] = field(default_factory=list)  # retryable: try later, attempts + 1
    skipped: list[Notice] = field(default_factory=list)  # claimed already: sent or in flight


class Claims(Protocol):
    """What delivery needs of the state store: `seen`/`forget` (atomic across processes) and
    durable events."""

    def seen(self, key: str, ttl_seconds: float) -> bool: ...

    def forget(self, key: str) -> None: ...

    def record_events(self, events: Sequence[HistoryEvent]) -> None: ...


def claim_key(notice: Notice) -> str:
    return f"notify:{notice.key}"


def event_for(notice: Notice, kind: str, at: datetime, delivery: Delivery) -> HistoryEvent:
    """A `notified` or `notify_failed` event: on the decision's record, naming the decision."""
    data: dict[str, Any] = {"decision": notice.decision_key, "channel": notice.channel,
                            "recipient": notice.rep, "role": notice.role,
                            "to": delivery.target or None, "attempts": notice.attempts + 1}
    if delivery.error:
        data["error"] = delivery.error[:500]
    return HistoryEvent(id=event_id(kind, notice.key), decision_id=None,
                        record_id=notice.record_id, crm=notice.crm, object=notice.object,
                        kind=kind, at=at, data=data)


def deliver(notices: Iterable[Notice], senders: Mapping[str, Sender], claims: Claims,
            clock: Callable[[], datetime], attempts: int = MAX_ATTEMPTS) -> Outcomes:
    """Send each notice once: claim it, send it, record what happened. A claimed notice is
    skipped, so a redelivered task or a second worker never sends it twice (a worker killed
    between claim and send loses that one message rather than risking two); a retryable
    failure gives the claim back and comes back in `again` until `attempts` deliveries."""
    out = Outcomes()
    for notice in notices:
        sender = senders.get(notice.channel)
        if sender is None:  # the channel was turned off since the notice was composed
            out.skipped.append(notice)
            continue
        if claims.seen(claim_key(notice), CLAIM_TTL_SECONDS):
            out.skipped.append(notice)
            continue
        try:
            delivery = sender.send(notice)
        except Exception as exc:  # noqa: BLE001 - a channel bug must not lose the others
            delivery = Delivery(False, f"{type(exc).__name__} while sending", False)
        if delivery.ok:
            claims.record_events([event_for(notice, "notified", clock(), delivery)])
            out.sent.append(notice)
        elif delivery.retryable and notice.attempts + 1 < attempts:
            claims.forget(claim_key(notice))
            out.again.append(replace(notice, attempts=notice.attempts + 1))
        else:
            claims.record_events([event_for(notice, "notify_failed", clock(), delivery)])
            out.failed.append((notice, delivery.error or "failed"))
    return out


# After a channel's retries ran out, the embedded notifier stops calling it for this long:
# a Slack or SMTP outage must not add its retry waits to every record a sweep writes.
COOLDOWN_SECONDS = 60.0


class Breaker:
    """A `Sender` that, once its channel failed retryably (the transport's tries spent), fails
    the next notices at once for COOLDOWN_SECONDS, recorded as such, then tries again."""

    def __init__(self, sender: Sender, clock: Callable[[], float],
                 cooldown: float = COOLDOWN_SECONDS) -> None:
        self.sender = sender
        self.clock = clock
        self.cooldown = cooldown
        self._open_until = 0.0
        self._why = ""

    @property
    def channel(self) -> Channel:
        return self.sender.channel

    def send(self, notice: Notice) -> Delivery:
        if self.clock() < self._open_until:
            return Delivery(False, f"not tried: {self.channel} failed just before "
                                   f"({self._why})", False)
        delivery = self.sender.send(notice)
        if not delivery.ok and delivery.retryable:
            self._open_until = self.clock() + self.cooldown
            self._why = delivery.error or "unavailable"
        return delivery


class NoticeQueue(Protocol):
    """Service mode: where notices wait for a worker (tasks/notify.py, Redis)."""

    def put(self, notices: Sequence[Notice]) -> None: ...


class Notifier:
    """The pipeline follower (`sync.ports.AfterWrite`) that tells reps about landed writes.

    Embedded (no queue): sends inline, right after the write, once (the channel's transport
    has retried); a channel that just failed is not called again for COOLDOWN_SECONDS, so an
    outage costs a sweep one round of retries, not one per record. Service: parks the notices
    in `queue` for a `notify.send` task, so a slow Slack never holds a routing worker."""

    def __init__(self, routing: CompiledRouting, senders: Sequence[Sender], claims: Claims, *,
                 links: Links = NO_LINKS, queue: NoticeQueue | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.routing = routing
        self.senders: dict[str, Sender] = senders_by_channel(
            senders if queue is not None else [Breaker(s, monotonic) for s in senders])
        self.claims = claims
        self.links = links
        self.queue = queue
        self.clock = clock

    def notices(self, items: Sequence[Written]) -> list[Notice]:
        return [n for w in items
                for n in compose(w.decision, w.record, self.routing, decision_key(w.decision),
                                 self.links, self.senders)]

    def written(self, crm: str, obj: str, items: Sequence[Written]) -> None:
        self.dispatch(self.notices(items))

    def dispatch(self, notices: Sequence[Notice]) -> None:
        """Queue `notices` (service) or send them now, each once (embedded: nothing would
        come back for a later try, so a retryable failure is recorded as failed)."""
        if not notices:
            return
        if self.queue is not None:
            self.queue.put(notices)
            return
        deliver(notices, self.senders, self.claims, self.clock, attempts=1)

    def breached(self, entry: WatchEntry, kind: str, name: str | None, action: str,
                 new_owner: str | None, at: datetime) -> None:
        """`sync.sla_watch.BreachNotifier`: tell the manager (and, after a re-route, the rep
        who breached) that a first-touch SLA ran out."""
        self.dispatch(breach_notices(entry, action, new_owner, self.routing, self.links,
                                     self.senders, kind=kind, name=name))


def senders_by_channel(senders: Sequence[Sender]) -> dict[str, Sender]:
    """Senders by channel name (the last one given for a channel wins)."""
    return {s.channel: s for s in senders}
