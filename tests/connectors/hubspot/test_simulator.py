"""End to end: the connector, its real client and Transport against the local CRM simulator."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from connectors.hubspot.connector import HubSpotConnector, from_settings
from connectors.simulator import HUBSPOT_TOKEN, RunningSimulator, Simulator, serve
from sync.normalize import normalize_domain
from sync.ports import QuotaExhausted
from tests.connectors.hubspot.fake_hubspot import RecordingLimiter, settings_for


@pytest.fixture
def sim() -> Iterator[tuple[Simulator, RunningSimulator]]:
    simulator = Simulator(11)
    simulator.seed(companies=450, contacts=40, accounts=0, leads=0, owners=8)
    with serve(simulator, tls=False) as running:
        yield simulator, running


@pytest.fixture
def conn(sim: tuple[Simulator, RunningSimulator], sleeps: list[float]
         ) -> Iterator[HubSpotConnector]:
    _, running = sim
    settings = settings_for(running.hubspot_url, token=HUBSPOT_TOKEN)
    connector = from_settings(settings, limiter=RecordingLimiter(), transport_sleep=sleeps.append)
    try:
        yield connector
    finally:
        connector.close()


def listed(conn: HubSpotConnector, obj: str, since: datetime | None) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = conn.list_records(obj, since=since, cursor=cursor)
        ids += [r.id for r in page.records]
        cursor = page.cursor
        if cursor is None:
            return ids


def test_given_the_simulator_when_listing_everything_then_every_company_comes_once(
    sim: tuple[Simulator, RunningSimulator], conn: HubSpotConnector,
) -> None:
    simulator, _ = sim
    assert listed(conn, "companies", None) == simulator.ids("hubspot", "companies")


def test_given_a_watermark_when_listing_then_exactly_the_records_changed_since_come_oldest_first(
    sim: tuple[Simulator, RunningSimulator], conn: HubSpotConnector,
) -> None:
    simulator, _ = sim
    records = sorted(simulator.hubspot_records["contacts"].values(), key=lambda r: r.updated_ms)
    cut = records[len(records) // 2].updated_ms
    since = datetime.fromtimestamp(cut / 1000, tz=UTC)

    got = listed(conn, "contacts", since)

    assert set(got) == {str(r.id) for r in records if r.updated_ms >= cut}
    assert len(got) == len(set(got))


def test_given_owners_and_records_when_writing_then_valid_owners_apply_and_bad_ones_fail_alone(
    sim: tuple[Simulator, RunningSimulator], conn: HubSpotConnector,
) -> None:
    simulator, _ = sim
    users = conn.users()
    people = [u for u in users if u.active and u.person]
    assert {u.id for u in users} == set(simulator.hubspot_owners)
    assert {u.id for u in users if not u.person} == {
        o.id for o in simulator.hubspot_owners.values() if o.type == "QUEUE"}
    ids = simulator.ids("hubspot", "companies")[:3]

    results = conn.write_owners("companies", {ids[0]: people[0].id, ids[1]: "999999",
                                              ids[2]: people[1].id})

    assert [(r.id, r.ok) for r in results] == [(ids[0], True), (ids[1], False), (ids[2], True)]
    owners = conn.read_owners("companies", ids + ["424242"])
    assert owners[ids[0]] == people[0].id and owners[ids[2]] == people[1].id
    assert "424242" not in owners
    assert simulator.owner_of("hubspot", "companies", ids[0]) == people[0].id


def test_given_the_daily_quota_runs_out_between_write_batches_then_the_landed_batch_is_reported(
    sim: tuple[Simulator, RunningSimulator], conn: HubSpotConnector,
) -> None:
    simulator, _ = sim
    owner = next(u.id for u in conn.users() if u.active and u.person)
    ids = simulator.ids("hubspot", "companies")[:150]  # two batch-update calls
    used = simulator.stats("hubspot")["daily_used"]
    simulator.configure_limits(hubspot_daily=used + 1)  # room for the first call only

    with pytest.raises(QuotaExhausted) as stopped:
        conn.write_owners("companies", dict.fromkeys(ids, owner))

    assert [r.id for r in stopped.value.landed] == ids[:100]
    assert all(r.ok for r in stopped.value.landed)
    assert all(simulator.owner_of("hubspot", "companies", i) == owner for i in ids[:100])


def test_given_owned_companies_when_matching_domains_then_their_owners_are_found(
    sim: tuple[Simulator, RunningSimulator], conn: HubSpotConnector,
) -> None:
    simulator, _ = sim
    owned: dict[str, str] = {}
    for record in sorted(simulator.hubspot_records["companies"].values(), key=lambda r: r.id):
        domain = normalize_domain(record.properties.get("domain"))
        owner = record.properties.get("hubspot_owner_id")
        if domain and owner:
            owned.setdefault(domain, owner)
    sample = sorted(owned)[:150]
    assert sample, "the seeded data should have owned companies with domains"

    found = conn.accounts_by_domain(sample + ["no-such-company.example"])

    assert found == {d: owned[d] for d in sample}


def test_given_injected_errors_when_listing_then_the_transport_retries_through_them(
    sim: tuple[Simulator, RunningSimulator], conn: HubSpotConnector, sleeps: list[float],
) -> None:
    simulator, _ = sim
    simulator.configure_faults(error_rate=0.5)  # seeded: the same calls fail every run

    got = listed(conn, "companies", None)

    assert got == simulator.ids("hubspot", "companies")
    assert conn.stats().retries > 0 and len(sleeps) == conn.stats().retries
    served = simulator.stats("hubspot")["calls"]["GET /crm/v3/objects/companies"]
    assert sum(n for status, n in served.items() if status != "200") == conn.stats().retries
