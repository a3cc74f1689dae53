"""The Salesforce vendor tables agree with its declared field maps and object names."""

from __future__ import annotations

import pytest

from connectors.registry import spec
from connectors.salesforce import settings as vendor
from connectors.salesforce.connector import from_settings
from connectors.transport import Unlimited
from tests.connectors.salesforce.builders import QUERY_URL, page, soql, token_settings


def test_every_salesforce_object_has_a_field_list():
    assert set(vendor.OBJECT_FIELDS) == set(spec("salesforce").objects)


@pytest.mark.parametrize("obj", sorted(vendor.OBJECT_KINDS))
def test_the_fields_read_are_the_field_map_columns_and_the_system_fields(obj):
    mapped = list(dict.fromkeys(vendor.FIELD_MAPS[obj].values()))
    assert list(vendor.OBJECT_FIELDS[obj]) == [*mapped, *vendor.SYSTEM_FIELDS]
    assert vendor.OWNER_FIELD in vendor.OBJECT_FIELDS[obj]


def test_vendor_sizes_are_the_documented_limits():
    assert vendor.QUERY_PAGE_SIZE == 2000
    assert vendor.COMPOSITE_BATCH == 200
    assert vendor.ID_CHUNK <= vendor.QUERY_PAGE_SIZE  # a read by ids is always one page
    assert dict(vendor.AUTO_ASSIGN_HEADER) == {"Sforce-Auto-Assign": "FALSE"}


def test_given_extra_fields_then_listings_read_them_too(rsps):
    # A routing file's field_maps may name custom fields (`Region__c`): they must be read.
    conn = from_settings(token_settings(), limiter=Unlimited(),
                         extra_fields={"lead": ["Region__c", "Email"]})
    rsps.get(QUERY_URL, json=page([]))

    conn.list_records("Lead", since=None, cursor=None)

    fields = ", ".join([*vendor.OBJECT_FIELDS["Lead"], "Region__c"])
    assert soql(rsps.calls[0]).startswith(f"SELECT {fields} FROM Lead ")


def test_given_an_extra_field_that_is_not_an_api_name_then_value_error():
    with pytest.raises(ValueError, match="Id FROM User"):
        from_settings(token_settings(), limiter=Unlimited(),
                      extra_fields={"Lead": ["Id FROM User"]})
