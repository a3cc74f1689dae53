"""A real local SMTP server (aiosmtpd) on a free loopback port: STARTTLS, AUTH and switches."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.loopback import free_port

USER = "router"
PASSWORD = "smtp-hunter2"


@dataclass
class Mailbox:
    """What the server received and how it answers the next DATA commands."""

    messages: list[EmailMessage] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)  # per message: over STARTTLS?
    replies: list[str] = field(default_factory=list)  # answers to the next DATA, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            if self.replies:
                return self.replies.pop(0)
            parsed = message_from_bytes(envelope.content, policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            self.messages.append(parsed)
            self.tls.append(session.ssl is not None)
        return "250 OK"


@dataclass
class SmtpServer:
    url: str  # smtp://router:PASSWORD@127.0.0.1:PORT
    mailbox: Mailbox
    client_context: ssl.SSLContext  # trusts the server's test CA
    ca_file: str  # the test CA as PEM, for SSL_CERT_FILE in a worker's environment


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                   data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == USER.encode() \
        and data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    """aiosmtpd offering STARTTLS (a trustme CA) and AUTH LOGIN/PLAIN after it."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    ca_file = tmp_path_factory.mktemp("smtp-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, tls_context=server_context,
                            authenticator=_authenticator, auth_require_tls=True)
    controller.start()
    try:
        yield SmtpServer(f"smtp://{USER}:{PASSWORD}@127.0.0.1:{port}", mailbox, client_context,
                         str(ca_file))
    finally:
        controller.stop()
