"""Who to tell about a landed owner write, and what: notices and their Slack and email text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from jinja2 import Environment, select_autoescape

Channel = Literal["slack", "email"]
CHANNELS: tuple[Channel, ...] = ("slack", "email")
Role = Literal["owner", "manager"]
# What a notice shows of one value a rule used: a hostile record must not make a message that
# Slack refuses (3,000 characters a text block) or an email nobody reads.
MAX_VALUE_CHARS = 200
MAX_NAME_CHARS = 200
MAX_FIELDS = 10


@dataclass(frozen=True, slots=True)
class Links:
    """What a CRM link needs from the settings (HUBSPOT_PORTAL_ID, SALESFORCE_INSTANCE_URL)."""

    hubspot_portal_id: str | None = None
    salesforce_instance_url: str | None = None


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

    channel: Channel

    def send(self, notice: Notice) -> Delivery: ...


# --- who and what ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotifyPolicy:
    """The routing file's `notify:` as composition needs it (defaults when absent)."""

    channels: tuple[Channel, ...] = CHANNELS
    manager_on_fallback: bool = False


def _short(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Slack ----------------------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Text safe inside Slack mrkdwn: `&`, `<` and `>` are control characters there (a record
    named `<!channel>` would otherwise ping a whole channel)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _headline(notice: Notice) -> str:
    if notice.role == "manager":
        return (f"{notice.record_name} went to {notice.owner_name} by fallback "
                f"({notice.crm} {notice.object})")
    return f"New {notice.object} for you: {notice.record_name} ({notice.crm})"


def _why(notice: Notice) -> str:
    if notice.rule:
        return f"rule {notice.rule}"
    return "fallback" if notice.outcome == "fallback" else notice.outcome


def slack_message(notice: Notice) -> tuple[str, list[dict[str, Any]]]:
    """(`text`, `blocks`) for chat.postMessage: Block Kit, and the plain text Slack shows in
    notifications and where blocks cannot be rendered."""
    name = slack_escape(notice.record_name)
    title = f"<{notice.link}|{name}>" if notice.link else f"*{name}*"
    if notice.role == "manager":
        head = (f"{title} went to *{slack_escape(notice.owner_name)}* by fallback "
                f"({notice.crm} {notice.object})")
    else:
        head = f"New {notice.object} for you: {title} ({notice.crm})"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": head}},
        {"type": "section", "text": {
            "type": "mrkdwn", "text": f"*Why:* {slack_escape(notice.reason or _why(notice))}"}},
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
{% endif %}{% if deadline %}
First touch due by {{ deadline }}.
{% endif %}
-- account-router
"""

_HTML = """\
<!doctype html>
<html><body style="font-family: sans-serif">
<p>{% if role == 'manager' %}<strong>{% if link %}<a href="{{ link }}">{{ name }}</a>{% else %}\
{{ name }}{% endif %}</strong> went to {{ owner_name }} by fallback ({{ crm }} {{ object }}).\
{% else %}New {{ object }} for you: <strong>{% if link %}<a href="{{ link }}">{{ name }}</a>\
{% else %}{{ name }}{% endif %}</strong> ({{ crm }}).{% endif %}</p>
<p><strong>Why:</strong> {{ reason }}</p>
{% if fields %}<table>{% for k, v in fields %}<tr><th align="left">{{ k }}</th><td>{{ v }}</td>\
</tr>{% endfor %}</table>{% endif %}
{% if passed %}<p>Tried first: {{ passed | join('; ') }}</p>{% endif %}
{% if deadline %}<p><strong>First touch due by {{ deadline }}.</strong></p>{% endif %}
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
    }
    # A subject is one header line: no newline from a record name may reach it.
    subject = _short(_headline(notice), 180)
    return subject, _text_template.render(values), _html_template.render(values)


# --- delivery ---------------------------------------------------------------------------------


@dataclass
class Outcomes:
    """What one delivery pass did, by notice key."""

    sent: list[Notice] = field(default_factory=list)
    failed: list[tuple[Notice, str]] = field(default_factory=list)
    again: list[Notice] = field(default_factory=list)  # retryable: hand back for a later try
    skipped: list[Notice] = field(default_factory=list)  # already claimed (sent or in flight)


def senders_by_channel(senders: Sequence[Sender]) -> dict[str, Sender]:
    return {s.channel: s for s in senders}
