"""Links to a record's page in its CRM (the dashboard and notifications share them)."""

from __future__ import annotations

import pytest

from connectors.links import crm_link
from sync.models import Decision, Outcome


def _decision(crm: str, obj: str, record_id: str) -> Decision:
    return Decision(record_id=record_id, object=obj, crm=crm, outcome=Outcome.ASSIGNED)


@pytest.mark.parametrize(("crm", "obj", "record_id", "portal", "instance", "expected"), [
    ("hubspot", "account", "501", "62515", None,
     "https://app.hubspot.com/contacts/62515/record/0-2/501"),
    ("hubspot", "contact", "77", "62515", None,
     "https://app.hubspot.com/contacts/62515/record/0-1/77"),
    ("hubspot", "account", "501", None, None, None),
    ("hubspot", "lead", "5", "62515", None, None),
    ("salesforce", "lead", "00Q5g00000AbCdEAAZ", None, "https://acme.my.salesforce.com/",
     "https://acme.my.salesforce.com/lightning/r/Lead/00Q5g00000AbCdEAAZ/view"),
    ("salesforce", "account", "a/../b?x", None, "https://acme.my.salesforce.com",
     "https://acme.my.salesforce.com/lightning/r/Account/a%2F..%2Fb%3Fx/view"),
    ("salesforce", "account", "001", None, "javascript:alert(1)//", None),
    ("salesforce", "account", "001", None, None, None),
    ("csv", "account", "1", "62515", "https://acme.my.salesforce.com", None),
])
def test_given_a_decision_when_linking_then_the_crms_record_page_or_none(
        crm: str, obj: str, record_id: str, portal: str | None, instance: str | None,
        expected: str | None) -> None:
    assert crm_link(_decision(crm, obj, record_id), portal, instance) == expected


@pytest.mark.parametrize(("crm", "obj", "expected"), [
    ("hubspot", "companies", "https://app.hubspot.com/contacts/62515/record/0-2/7"),
    ("hubspot", "contacts", "https://app.hubspot.com/contacts/62515/record/0-1/7"),
    ("salesforce", "Lead", "https://acme.my.salesforce.com/lightning/r/Lead/7/view"),
    ("hubspot", "deals", None),
    ("csv", "accounts", None),
])
def test_given_a_crm_object_name_when_linking_then_the_same_pages_as_by_kind(crm, obj, expected):
    from connectors.links import record_link

    assert record_link(crm, obj, "7", "62515", "https://acme.my.salesforce.com") == expected
