"""The ops API: odd input is a clear 4xx (never a 5xx), and only reps of the routing file can
be paused."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from sync.state import StateStore
from tests.tasks.test_http import AUTH, RecordingEnqueue

LATER = datetime(2026, 1, 1, tzinfo=UTC)


def reprocess(client: TestClient, body: dict[str, object]) -> Response:
    # json.dumps escapes a lone surrogate as `\ud800`, as a JSON client may send it.
    return client.post("/reprocess", content=json.dumps(body),
                       headers={**AUTH, "Content-Type": "application/json"})


@pytest.mark.parametrize("until", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00",
                                   "0001-01-01T00:00:00+14:00"])
def test_given_an_until_beyond_the_utc_range_when_pausing_then_400_naming_until(
    client: TestClient, sqlite_store: StateStore, until: str,
) -> None:
    response = client.post("/reps/ana/pause", headers=AUTH, json={"until": until})

    assert response.status_code == 400
    assert response.json()["error"].startswith("body.until: ")
    assert "out of range" in response.json()["error"]
    assert sqlite_store.pauses(LATER) == {}


def test_given_the_last_instant_in_range_when_pausing_then_200(
    client: TestClient, sqlite_store: StateStore,
) -> None:
    response = client.post("/reps/ana/pause", headers=AUTH,
                           json={"until": "9999-12-31T23:59:59+00:00"})

    assert response.status_code == 200
    assert sqlite_store.pauses(LATER) == {"ana": datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)}


def test_given_a_rep_not_in_the_routing_file_when_paused_then_404_and_nothing_stored(
    client: TestClient, sqlite_store: StateStore,
) -> None:
    response = client.post("/reps/mallory/pause", headers=AUTH)

    assert response.status_code == 404
    assert "mallory" in response.json()["error"]
    assert sqlite_store.pauses(LATER) == {}
    assert client.post("/reps/mallory/resume", headers=AUTH).status_code == 404


def test_given_a_paused_rep_since_removed_from_the_routing_file_when_resumed_then_resumed(
    client: TestClient, sqlite_store: StateStore,
) -> None:
    sqlite_store.pause("carol", None)

    response = client.post("/reps/carol/resume", headers=AUTH)

    assert response.json() == {"rep": "carol", "resumed": True}
    assert sqlite_store.pauses(LATER) == {}


@pytest.mark.parametrize("ids", [["\ud800"], ["a\x00b"], ["x" * 256], [" "], ["1", 2]])
def test_given_odd_ids_when_reprocessing_then_400_naming_the_id_and_nothing_enqueued(
    client: TestClient, enqueue: RecordingEnqueue, ids: list[object],
) -> None:
    response = reprocess(client, {"crm": "hubspot", "object": "companies", "ids": ids})

    assert response.status_code == 400
    assert response.json()["error"].startswith("body.ids.")
    assert enqueue.calls == []


@pytest.mark.parametrize("crm", ["\ud800", "x" * 10_000, "pipedrive"])
def test_given_an_odd_crm_when_reprocessing_then_400_with_a_short_message(
    client: TestClient, enqueue: RecordingEnqueue, crm: str,
) -> None:
    response = reprocess(client, {"crm": crm, "object": "companies", "ids": ["1"]})

    assert response.status_code == 400
    assert len(response.json()["error"]) < 200
    assert enqueue.calls == []


@pytest.mark.parametrize("path", ["/decisions/a%00b", f"/decisions/{'x' * 256}",
                                  "/reps/a%0Ab/pause", "/reps/a%0Ab/resume"])
def test_given_an_odd_id_in_the_path_when_called_then_400(client: TestClient, path: str) -> None:
    assert client.post(path, headers=AUTH).status_code in (400, 405)
    if path.startswith("/decisions"):
        assert client.get(path, headers=AUTH).status_code == 400


def test_given_a_huge_unexpected_field_when_reprocessing_then_400_with_a_short_message(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    response = reprocess(client, {"x" * 100_000: 1, "crm": "hubspot", "object": "companies",
                                  "ids": ["1"]})

    assert response.status_code == 400
    assert response.json()["error"].startswith("body.xxxx")
    assert len(response.json()["error"]) < 300
    assert enqueue.calls == []
