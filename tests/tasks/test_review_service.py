"""Review in the service with real parts: `account-router serve`, a `celery -A tasks worker`
subprocess, redis-server (state and broker) and the CRM simulator. A signed HubSpot webhook
routes a record into review; the ops API approves it; the CRM sees exactly one write."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from connectors.simulator import Simulator
from sync.state import open_store
from tests.tasks.test_distributed import OBJ, Workers, running_crm, wait_for
from tests.tasks.test_service import Service

ROUTING = """version: 1
reps:
  - {id: ana, crm_ids: {hubspot: '101'}}
  - {id: bo, crm_ids: {hubspot: '102'}}
pools: {team: {members: [ana, bo], strategy: round_robin}}
rules:
  - {name: big, when: {employees: {gt: 1000}}, assign: {pool: team}, review: true}
  - {name: everyone, assign: {pool: team}}
"""


@pytest.fixture
def service(redis_url, monkeypatch, tmp_path) -> Iterator[tuple[Simulator, Service, Workers]]:
    sim = Simulator(seed=31)
    sim.seed(companies=0, contacts=0, accounts=0, leads=0, days=1)
    config = tmp_path / "routing.yaml"
    config.write_text(ROUTING)
    workers = Workers(tmp_path)
    served = Service(tmp_path)
    with running_crm(sim, redis_url, monkeypatch):
        monkeypatch.setenv("ACCOUNT_ROUTER_CONFIG", str(config))
        monkeypatch.setenv("ACCOUNT_ROUTER_VISIBILITY_TIMEOUT", "60")
        try:
            workers.start()
            served.start()
            yield sim, served, workers
        finally:
            served.stop()
            workers.stop_all()


def test_given_a_webhook_for_a_record_under_review_when_approved_via_the_api_then_written_once(
        service, redis_url):
    sim, served, workers = service
    big = str(sim.hubspot_create(OBJ, {"name": "Big Co", "domain": "big.example",
                                       "numberofemployees": 5000}))
    small = str(sim.hubspot_create(OBJ, {"name": "Small Co", "domain": "small.example",
                                         "numberofemployees": 5}))

    # When: HubSpot tells us about both; the worker routes them.
    status, _ = served.post_hubspot(served.creation_events([big, small]))
    assert status == 200
    wait_for(lambda: sim.owner_of("hubspot", OBJ, small) is not None, workers,
             "the small company to be written")

    def listed() -> list[dict[str, object]]:
        status, body = served.ops("GET", "/review")
        assert status == 200, body
        items: list[dict[str, object]] = json.loads(body)["items"]
        return items

    wait_for(lambda: bool(listed()), workers, "the big company to wait for review")
    [item] = listed()
    # Then: the big one waits with its proposal (the pool's first turn), unwritten.
    assert (item["record_id"], item["proposed_owner"], item["rule"]) == (big, "ana", "big")
    assert sim.owner_of("hubspot", OBJ, big) is None
    assert sim.owner_of("hubspot", OBJ, small) == "102"  # the turn was taken: bo next

    # Another webhook for it (a property change) routes nothing and takes no turn: the next
    # company, routed after it, gets the pool's next turn (ana), not a turn further.
    later = str(sim.hubspot_create(OBJ, {"name": "Later Co", "domain": "later.example",
                                         "numberofemployees": 7}))
    served.post_hubspot(served.creation_events([big]))
    served.post_hubspot(served.creation_events([later]))
    wait_for(lambda: sim.owner_of("hubspot", OBJ, later) is not None, workers,
             "the later company to be written")
    assert sim.owner_of("hubspot", OBJ, later) == "101"
    assert sim.owner_of("hubspot", OBJ, big) is None
    assert len(listed()) == 1

    # When: approved over the API, twice.
    first = served.ops("POST", f"/review/{item['id']}/approve")
    second = served.ops("POST", f"/review/{item['id']}/approve")

    # Then: written once, to the proposal; the queue is empty; the repeat is a 409.
    assert first[0] == 200, first[1]
    assert json.loads(first[1])["status"] == "approved"
    assert second[0] == 409
    assert sim.owner_of("hubspot", OBJ, big) == "101"
    assert sim.stats("hubspot")["records_updated"] == 3  # small, later, and big once
    store = open_store(redis_url)
    try:
        assert store.reviews(closed=True)[0].by == "api"
    finally:
        store.close()
    assert listed() == []
