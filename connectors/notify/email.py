"""Email channel: one message per notice over SMTP, STARTTLS when the server offers it."""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Final
from urllib.parse import unquote, urlsplit

from connectors.notify.common import run, transport
from connectors.notify.errors import classify_smtp
from sync.notify import Delivery, Notice, email_message

URL_SETTING = "ACCOUNT_ROUTER_SMTP_URL"
TIMEOUT_SECONDS = 15.0


class EmailSender:
    """Sends notices from ACCOUNT_ROUTER_MAIL_FROM through ACCOUNT_ROUTER_SMTP_URL."""

    channel: Final = "email"

    def __init__(self, url: str, mail_from: str, *, timeout: float = TIMEOUT_SECONDS,
                 sleep: Callable[[float], None] = time.sleep,
                 context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme.lower() == "smtps"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (465 if self.tls else 587)
        self.user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self.mail_from = mail_from
        self.timeout = timeout
        # The system's trust store (SSL_CERT_FILE honoured by OpenSSL's defaults).
        self.context = context or ssl.create_default_context()
        self.transport = transport("smtp", classify_smtp, URL_SETTING, sleep=sleep)

    def message(self, notice: Notice) -> EmailMessage:
        subject, text, html = email_message(notice)
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = self.mail_from
        msg["To"] = formataddr((notice.name, notice.email or ""))
        msg["Message-ID"] = make_msgid(domain=self.mail_from.rpartition("@")[2] or None)
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        return msg

    def _deliver(self, msg: EmailMessage) -> None:
        smtp: smtplib.SMTP
        if self.tls:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=self.context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            smtp.ehlo()
            if not self.tls and smtp.has_extn("starttls"):
                smtp.starttls(context=self.context)
                smtp.ehlo()
            if self.user is not None:
                smtp.login(self.user, self._password or "")
            smtp.send_message(msg)

    def send(self, notice: Notice) -> Delivery:
        if not notice.email:
            return Delivery(False, "no email for this rep", False)
        msg = self.message(notice)
        answer = run(self.transport, "send", lambda: self._deliver(msg))
        if isinstance(answer, Delivery):
            return Delivery(False, answer.error, answer.retryable, notice.email)
        return Delivery(True, None, False, notice.email)

    def close(self) -> None:
        return None
