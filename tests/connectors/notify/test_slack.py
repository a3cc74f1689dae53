"""The Slack channel against the local fake Slack Web API (slack-sdk over real HTTP)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.notify.slack import SlackSender
from connectors.simulator.slack import TOKEN, FakeSlack
from tests.connectors.notify.notices import notice


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(users={"ana@example.com": "U0ANA", "ben@example.com": "U0BEN"}) as fake:
        yield fake


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def sender(slack: FakeSlack, sleep: Sleeps | None = None, token: str = TOKEN) -> SlackSender:
    return SlackSender(token, slack.base_url, sleep=sleep or Sleeps())


def test_given_a_rep_with_only_an_email_when_sending_then_it_is_looked_up_once_and_dm_d(
        slack: FakeSlack) -> None:
    out = sender(slack)
    first = out.send(notice())
    second = out.send(notice(record_id="502"))
    assert first.ok and second.ok and first.target == "U0ANA"
    assert [c.method for c in slack.calls] == \
        ["users.lookupByEmail", "chat.postMessage", "chat.postMessage"]  # the lookup is cached
    [msg, _] = slack.messages_to("U0ANA")
    # Blocks carry the link around the escaped name; the text fallback has the link too.
    head = msg.blocks[0]["text"]["text"]
    assert "<https://app.hubspot.com/contacts/62515/record/0-2/501|Acme &lt;b&gt;Corp&lt;/b&gt;" \
        " &amp; Sons>" in head
    assert "https://app.hubspot.com/contacts/62515/record/0-2/501" in msg.text
    assert "first touch due by 2026-12-07T15:15:00+00:00" in msg.text
    fields = msg.blocks[2]["fields"]
    assert fields[0]["text"] == "*country*\nDE"


def test_given_a_rep_with_a_slack_id_when_sending_then_no_lookup_is_made(
        slack: FakeSlack) -> None:
    assert sender(slack).send(notice(slack="U0BEN", email=None)).ok
    assert [c.method for c in slack.calls] == ["chat.postMessage"]
    assert len(slack.messages_to("U0BEN")) == 1


def test_given_a_429_with_retry_after_when_sending_then_it_waits_that_long_and_succeeds(
        slack: FakeSlack) -> None:
    sleeps = Sleeps()
    slack.rate_limit(calls=1, retry_after="3")
    delivery = sender(slack, sleeps).send(notice(slack="U0ANA"))
    assert delivery.ok
    assert sleeps.waits == [3.0]  # Retry-After honoured (jitter only ever waits longer)
    assert [c.status for c in slack.calls] == [429, 200]
    assert len(slack.messages_to("U0ANA")) == 1


def test_given_a_huge_retry_after_when_sending_then_the_wait_is_capped(slack: FakeSlack) -> None:
    sleeps = Sleeps()
    slack.rate_limit(calls=1, retry_after="3600")
    assert sender(slack, sleeps).send(notice(slack="U0ANA")).ok
    assert sleeps.waits == [10.0]


def test_given_a_user_who_left_when_sending_then_user_not_found_is_final_and_not_retried(
        slack: FakeSlack) -> None:
    slack.remove_user("U0ANA")
    sleeps = Sleeps()
    delivery = sender(slack, sleeps).send(notice(slack="U0ANA"))
    assert not delivery.ok and not delivery.retryable
    assert "user_not_found" in (delivery.error or "")
    assert len(slack.calls) == 1 and sleeps.waits == []


def test_given_an_unknown_email_when_sending_then_users_not_found_is_final_and_cached(
        slack: FakeSlack) -> None:
    out = sender(slack)
    for _ in range(2):
        delivery = out.send(notice(email="nobody@example.com"))
        assert not delivery.ok and not delivery.retryable and "users_not_found" in delivery.error
    assert [c.method for c in slack.calls] == ["users.lookupByEmail"]


def test_given_5xx_when_sending_then_it_retries_a_bounded_number_of_times(
        slack: FakeSlack) -> None:
    slack.fail(calls=10, status=503)
    sleeps = Sleeps()
    delivery = sender(slack, sleeps).send(notice(slack="U0ANA"))
    assert not delivery.ok and delivery.retryable
    assert len(slack.calls) == 3 and len(sleeps.waits) == 2
    slack.fail(calls=1, status=500)
    assert sender(slack).send(notice(slack="U0ANA")).ok  # one 500, then through


def test_given_a_wrong_token_when_sending_then_the_error_names_the_setting_not_the_token(
        slack: FakeSlack) -> None:
    delivery = sender(slack, token="xoxb-wrong-secret").send(notice(slack="U0ANA"))
    assert not delivery.ok and not delivery.retryable
    assert "ACCOUNT_ROUTER_SLACK_TOKEN" in (delivery.error or "")
    assert "xoxb-wrong-secret" not in (delivery.error or "")


def test_given_no_server_when_sending_then_the_failure_is_retryable() -> None:
    from tests.loopback import free_port

    out = SlackSender(TOKEN, f"http://127.0.0.1:{free_port()}/api/", sleep=Sleeps())
    delivery = out.send(notice(slack="U0ANA"))
    assert not delivery.ok and delivery.retryable
