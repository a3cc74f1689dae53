"""A notice builder for the channel tests."""

from __future__ import annotations

from typing import Any

from sync.notify import Notice


def notice(**overrides: Any) -> Notice:
    values: dict[str, Any] = {
        "decision_key": "hubspot:account:501:1796000000000000", "channel": "slack",
        "role": "owner", "rep": "ana", "name": "Ana Ruiz", "email": "ana@example.com",
        "slack": None, "crm": "hubspot", "object": "account", "record_id": "501",
        "record_name": "Acme <b>Corp</b> & Sons",
        "link": "https://app.hubspot.com/contacts/62515/record/0-2/501", "owner": "ana",
        "owner_name": "Ana Ruiz", "outcome": "assigned", "rule": "emea-enterprise",
        "reason": "rule emea-enterprise: pool emea (round robin)",
        "steps": (("emea-enterprise", "won", "pool emea (round robin)"),),
        "fields": (("country", "DE"), ("employees", "1200")),
        "written_at": "2026-12-07T15:00:00+00:00", "deadline": "2026-12-07T15:15:00+00:00",
    }
    values.update(overrides)
    return Notice(**values)
