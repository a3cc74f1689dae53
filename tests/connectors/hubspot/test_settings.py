"""The HubSpot constants agree with its declared field maps and with each other (STYLE.md §6)."""

from __future__ import annotations

from connectors.hubspot import settings as hs
from connectors.registry import spec
from sync.enrich import MAX_TOKEN_ACCOUNTS


def test_given_the_objects_then_they_are_the_registrys_hubspot_objects() -> None:
    assert set(hs.OBJECTS) == set(spec("hubspot").objects) == set(hs.PROPERTIES) == \
        set(hs.MODIFIED_PROPERTY)


def test_given_each_object_then_its_properties_cover_the_default_field_map_and_bookkeeping(
) -> None:
    for obj in hs.OBJECTS:
        props = hs.PROPERTIES[obj]
        assert set(hs.FIELD_MAPS[obj].values()) <= set(props), obj
        assert {hs.MODIFIED_PROPERTY[obj], "hs_lastmodifieddate", hs.CREATED_PROPERTY,
                hs.ID_PROPERTY, hs.OWNER_PROPERTY} <= set(props), obj
        assert len(props) == len(set(props)), obj


def test_given_the_vendor_limits_then_they_are_hubspots() -> None:
    assert (hs.LIST_PAGE_SIZE, hs.BATCH_SIZE, hs.SEARCH_PAGE_SIZE) == (100, 100, 200)
    assert hs.SEARCH_RESULT_CAP == 10_000
    assert hs.SEARCH_CALLS_PER_SECOND == 5
    assert hs.SEARCH_RESULT_CAP % hs.SEARCH_PAGE_SIZE == 0
    assert hs.DAILY_POLICY not in hs.POLICY_WINDOW_SECONDS  # a quota is never waited out


def test_given_the_search_filter_limits_then_a_name_search_fits_them() -> None:
    # One CONTAINS_TOKEN filter per group (groups OR): a name search's prefixes fit both the
    # group limit and the filter limits (HubSpot changelog 2024-08-26: 5, 10 a group, 25).
    assert (hs.SEARCH_FILTER_GROUPS, hs.SEARCH_FILTERS_PER_GROUP,
            hs.SEARCH_FILTERS_TOTAL) == (5, 10, 25)
    assert hs.NAME_PREFIXES_PER_SEARCH == hs.SEARCH_FILTER_GROUPS <= hs.SEARCH_FILTERS_TOTAL


def test_given_the_name_search_bound_then_it_is_the_matchers_and_within_one_query() -> None:
    assert hs.NAME_SEARCH_MAX_ACCOUNTS == MAX_TOKEN_ACCOUNTS <= hs.SEARCH_RESULT_CAP
    assert hs.NAME_WORDS_SEARCHED <= hs.SEARCH_FILTERS_PER_GROUP  # a whole name is one group
