"""An item past its deadline under `on_review_timeout: escalate`: the proposed owner's manager
is emailed once (a real SMTP server, aiosmtpd), the item stays in the queue."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.settings import Settings
from connectors.simulator import Simulator, serve
from sync.state.sqlite import SqliteStateStore
from tasks.review import expire_pass
from tests.servers.smtp import SmtpServer, smtp_server
from tests.tasks.test_review_cli import held, listed

__all__ = ["smtp_server"]

ROUTING = """version: 1
reps:
  - {id: ana, email: ana@example.com, crm_ids: {hubspot: '101'}, manager: mo}
  - {id: bo, email: bo@example.com, crm_ids: {hubspot: '102'}, manager: mo}
  - {id: mo, name: Mo Reyes, email: mo@example.com, crm_ids: {hubspot: '103'}}
pools: {team: {members: [ana, bo], strategy: round_robin}}
rules: [{name: everyone, assign: {pool: team}, review: true}]
review_timeout: 15m
notify: {channels: [email]}
"""


@pytest.fixture
def env(smtp_server: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> Iterator[Simulator]:
    sim = Simulator(seed=8)
    sim.seed(companies=0, contacts=0, accounts=0, leads=0, days=1)
    config = tmp_path / "routing.yaml"
    config.write_text(ROUTING)
    with serve(sim) as running:
        environ = running.env()
        bundle = tmp_path / "cas.pem"
        bundle.write_text(Path(environ["SSL_CERT_FILE"]).read_text()
                          + Path(smtp_server.ca_file).read_text())
        environ |= {"SSL_CERT_FILE": str(bundle), "REQUESTS_CA_BUNDLE": str(bundle),
                    "ACCOUNT_ROUTER_SMTP_URL": smtp_server.url,
                    "ACCOUNT_ROUTER_MAIL_FROM": "router@example.com",
                    "ACCOUNT_ROUTER_CONFIG": str(config),
                    "ACCOUNT_ROUTER_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}"}
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("ACCOUNT_ROUTER_REDIS_URL", raising=False)
        yield sim


def test_given_an_overdue_item_when_expired_twice_then_the_manager_is_emailed_once(
        env: Simulator, smtp_server: SmtpServer, tmp_path: Path) -> None:
    [record] = held(env)
    [item] = listed()
    later = datetime.now(UTC) + timedelta(minutes=16)

    first = expire_pass(Settings(), later)
    second = expire_pass(Settings(), later + timedelta(minutes=1))

    assert first.escalated == [item["id"]] and second.escalated == []
    [mail] = smtp_server.mailbox.messages
    assert mail["To"] == "Mo Reyes <mo@example.com>"
    assert "waits for review past its deadline: ana proposed" in mail["Subject"]
    assert item["id"] in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert [i["id"] for i in listed()] == [item["id"]]  # still waiting for a reviewer
    assert env.owner_of("hubspot", "companies", record) is None
    with SqliteStateStore(tmp_path / "state.db") as store:
        kinds = sorted((e.kind, e.data.get("action") or e.data.get("recipient"))
                       for e in store.history.events())
    assert kinds == [("notified", "mo"), ("review", "escalated")]
