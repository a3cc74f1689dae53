"""The decision page shows what the first-touch SLA watch recorded about that assignment."""

from __future__ import annotations

import re
from datetime import timedelta

from sync.models import HistoryEvent, decision_key, event_id
from tests.tasks.dashboard.conftest import NOW, Env, sign_in


def test_given_a_breach_and_a_reroute_when_opening_the_decision_then_both_show(
        env: Env) -> None:
    sign_in(env.client)
    found = env.history.decision(env.ids["700"])
    assert found is not None
    key = decision_key(found)

    def event(kind: str, **data: object) -> HistoryEvent:
        # The shape sync/sla_watch.py records: `decision` names the watched assignment.
        return HistoryEvent(id=event_id(kind, key), decision_id=None, record_id="700",
                            crm=found.crm, object=found.object, kind=kind,
                            at=NOW - timedelta(minutes=1), data={**data, "decision": key})

    env.store.record_events([
        event("sla_breach", rep="bo", rule="everyone", pool="smb", action="reroute", to="cy"),
        event("rerouted", **{"from": "bo", "to": "cy", "rule": "everyone", "pool": "smb"}),
    ])

    page = env.client.get(f"/dashboard/decisions/{env.ids['700']}").text
    events = re.search(r'<table id="events">(.*?)</table>', page, re.S)
    assert events is not None
    rows = dict(re.findall(r"<tr class=\"(\w+)\">(.*?)</tr>", events[1], re.S))
    assert set(rows) == {"sla_breach", "rerouted"}
    assert "action: reroute" in rows["sla_breach"] and "to: cy" in rows["sla_breach"]
    assert "from: bo" in rows["rerouted"]
