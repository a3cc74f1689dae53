"""The email channel against a real local SMTP server (aiosmtpd): STARTTLS, AUTH, 4xx and 5xx."""

from __future__ import annotations

from connectors.notify.email import EmailSender
from tests.connectors.notify.notices import notice
from tests.loopback import free_port
from tests.servers.smtp import PASSWORD, SmtpServer, smtp_server

__all__ = ["smtp_server"]


def _sender(server: SmtpServer, url: str | None = None) -> tuple[EmailSender, list[float]]:
    waits: list[float] = []
    return EmailSender(url or server.url, "router@example.com", sleep=waits.append,
                       context=server.client_context), waits


def test_given_a_notice_when_emailing_then_text_and_escaped_html_arrive_over_starttls(
        smtp_server: SmtpServer) -> None:
    out, _ = _sender(smtp_server)
    delivery = out.send(notice(channel="email"))
    assert delivery.ok and delivery.target == "ana@example.com"
    [msg] = smtp_server.mailbox.messages
    assert smtp_server.mailbox.tls == [True]  # STARTTLS was offered, so it was used
    assert msg["To"] == "Ana Ruiz <ana@example.com>" and msg["From"] == "router@example.com"
    assert msg["Subject"] == "New account for you: Acme <b>Corp</b> & Sons (hubspot)"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Open it: https://app.hubspot.com/contacts/62515/record/0-2/501" in text
    assert "country: DE" in text and "First touch due by 2026-12-07T15:15:00+00:00" in text
    # The record name is hostile input: escaped in HTML, never markup.
    assert "Acme &lt;b&gt;Corp&lt;/b&gt; &amp; Sons" in html and "<b>Corp" not in html
    assert 'href="https://app.hubspot.com/contacts/62515/record/0-2/501"' in html


def test_given_a_permanent_5xx_when_emailing_then_it_is_recorded_and_not_retried(
        smtp_server: SmtpServer) -> None:
    smtp_server.mailbox.replies = ["550 5.1.1 mailbox unavailable"]
    out, waits = _sender(smtp_server)
    delivery = out.send(notice(channel="email"))
    assert not delivery.ok and not delivery.retryable
    assert "550" in (delivery.error or "") and waits == []
    assert smtp_server.mailbox.messages == []


def test_given_a_transient_4xx_when_emailing_then_it_is_retried_and_lands_once(
        smtp_server: SmtpServer) -> None:
    smtp_server.mailbox.replies = ["451 4.3.0 try again later"]
    out, waits = _sender(smtp_server)
    assert out.send(notice(channel="email")).ok
    assert len(waits) == 1 and len(smtp_server.mailbox.messages) == 1


def test_given_4xx_every_time_when_emailing_then_it_gives_up_retryable_after_a_few_tries(
        smtp_server: SmtpServer) -> None:
    smtp_server.mailbox.replies = ["421 4.3.2 shutting down"] * 5
    out, waits = _sender(smtp_server)
    delivery = out.send(notice(channel="email"))
    assert not delivery.ok and delivery.retryable and len(waits) == 2


def test_given_a_wrong_password_when_emailing_then_the_error_names_the_setting_not_the_password(
        smtp_server: SmtpServer) -> None:
    wrong = smtp_server.url.replace(PASSWORD, "not-the-password")
    out, waits = _sender(smtp_server, wrong)
    delivery = out.send(notice(channel="email"))
    assert not delivery.ok and not delivery.retryable and waits == []
    assert "ACCOUNT_ROUTER_SMTP_URL" in (delivery.error or "")
    assert "not-the-password" not in (delivery.error or "") and PASSWORD not in delivery.error


def test_given_no_server_when_emailing_then_the_failure_is_retryable(
        smtp_server: SmtpServer) -> None:
    out, _ = _sender(smtp_server, f"smtp://127.0.0.1:{free_port()}")
    delivery = out.send(notice(channel="email"))
    assert not delivery.ok and delivery.retryable
