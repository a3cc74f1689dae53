"""The review queue page over the app's test client: what it lists (escaped), and how its
actions refuse bad requests (no CSRF token, unknown item, no rep) without writing anything."""

from __future__ import annotations

import html as htmllib
from datetime import timedelta

from sync.models import ReviewItem, review_id
from tests.tasks.dashboard.conftest import HOSTILE, NOW, PORTAL, Env, csrf_of, sign_in


def item(record_id: str = "9001", reason: str = "rule rest: ana; held for review") -> ReviewItem:
    return ReviewItem(
        id=review_id(f"hubspot:account:{record_id}:1"), record_id=record_id, crm="hubspot",
        object="companies", proposed_owner="ana", proposed_crm_id="101", rule="rest",
        pool="smb", window="day:2026-12-07", reason=reason, previous_owner=None,
        created_at=NOW - timedelta(hours=5), deadline=NOW - timedelta(hours=1), escalated=True)


def test_given_items_waiting_when_opening_the_queue_then_each_shows_with_its_actions(
        env: Env) -> None:
    waiting = item(reason=HOSTILE)
    env.store.add_reviews([waiting])
    sign_in(env.client)

    page = env.client.get("/dashboard/review")

    assert page.status_code == 200
    assert f'data-item="{waiting.id}"' in page.text
    assert HOSTILE not in page.text and htmllib.escape(HOSTILE) in page.text
    assert f"https://app.hubspot.com/contacts/{PORTAL}/record/0-2/9001" in page.text
    assert "overdue" in page.text and "escalated" in page.text
    assert f'action="/dashboard/review/{waiting.id}/approve"' in page.text
    assert 'data-confirm="Write ana as owner of 9001?"' in page.text
    assert '<option value="bo">bo</option>' in page.text  # reassign offers the active reps
    assert '<option value="dee">' not in page.text  # dee is inactive


def test_given_an_empty_queue_when_opening_it_then_it_says_so(env: Env) -> None:
    sign_in(env.client)
    page = env.client.get("/dashboard/review")
    assert page.status_code == 200 and "Nothing waits for review." in page.text


def test_given_bad_requests_when_acting_then_refused_with_a_page_and_nothing_changes(
        env: Env) -> None:
    waiting = item()
    env.store.add_reviews([waiting])
    sign_in(env.client)
    csrf = csrf_of(env.client.get("/dashboard/review").text)
    base = f"/dashboard/review/{waiting.id}"

    assert env.client.post(f"{base}/approve", data={}).status_code == 403  # no CSRF token
    assert env.client.post(f"{base}/reassign", data={"csrf": csrf}).status_code == 400
    unknown = env.client.post("/dashboard/review/nosuchitem/approve", data={"csrf": csrf})
    assert unknown.status_code == 404 and "no review item" in unknown.text
    long = env.client.post(f"/dashboard/review/{'x' * 300}/approve", data={"csrf": csrf})
    assert long.status_code == 404
    ineligible = env.client.post(f"{base}/reassign", data={"csrf": csrf, "rep": "dee"})
    assert ineligible.status_code == 422 and "inactive" in ineligible.text
    assert env.store.reviews() == [waiting]
