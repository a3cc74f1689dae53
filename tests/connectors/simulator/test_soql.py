"""The simulator's SOQL parser: the grammar connectors use, Salesforce's error codes, evaluation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from simple_salesforce import format_soql

from connectors.simulator.schema import parse_time
from connectors.simulator.soql import SoqlError, parse

T0 = parse_time("2026-11-25T10:00:00Z") or 0
ROWS = [
    {"Id": "001000000000001AAA", "Name": "Acme Corp", "Industry": "Healthcare",
     "NumberOfEmployees": 800, "AnnualRevenue": 5e6, "OwnerId": None, "IsDeleted": False,
     "SystemModstamp": T0, "BillingCountry": "US", "Website": "https://acme.com"},
    {"Id": "001000000000002AAA", "Name": "O'Brien & Sons", "Industry": "Retail",
     "NumberOfEmployees": 40, "AnnualRevenue": None, "OwnerId": "005000000000101AAA",
     "IsDeleted": False, "SystemModstamp": T0 + 1500, "BillingCountry": None,
     "Website": None},
    {"Id": "001000000000003AAA", "Name": "100% Labs", "Industry": None,
     "NumberOfEmployees": None, "AnnualRevenue": 1e5, "OwnerId": "00G000000000199AAA",
     "IsDeleted": False, "SystemModstamp": T0 - 60_000, "BillingCountry": "DE",
     "Website": "labs.io"},
]


def ids(soql: str) -> list[str]:
    return [r["Id"][-4:-3] for r in parse(soql).run(ROWS)]


def test_given_select_when_parsed_then_fields_are_canonically_spelled_in_order():
    query = parse("select id, NAME, ownerid from account")
    assert query.object.name == "Account"
    assert [f.name for f in query.fields] == ["Id", "Name", "OwnerId"]


@pytest.mark.parametrize(("where", "expected"), [
    ("Name = 'acme corp'", ["1"]),  # string equality ignores case
    ("Name != 'Acme Corp'", ["2", "3"]),
    ("NumberOfEmployees > 500", ["1"]),
    ("NumberOfEmployees <= 40", ["2"]),  # null is never < or >
    ("OwnerId = null", ["1"]),
    ("OwnerId != null", ["2", "3"]),
    ("Industry != 'Retail'", ["1", "3"]),  # != keeps nulls, as in SOQL
    ("Industry IN ('healthcare', 'Retail')", ["1", "2"]),
    ("Industry NOT IN ('Retail')", ["1", "3"]),
    ("Name LIKE '%LABS'", ["3"]),
    ("Name LIKE 'A_me%'", ["1"]),
    ("Name LIKE '100\\% %'", ["3"]),
    ("NOT Name LIKE '%Corp%'", ["2", "3"]),
    ("(Industry = 'Retail' OR Industry = null) AND NumberOfEmployees = null", ["3"]),
    ("Industry = 'Retail' OR Industry = null AND NumberOfEmployees = null", ["2", "3"]),
    ("AnnualRevenue >= 100000.0 AND AnnualRevenue < 5000000", ["3"]),
    ("OwnerId = '005000000000101'", ["2"]),  # a 15-character id matches its 18-char form
    ("Id > '001000000000001AAA'", ["2", "3"]),
    ("SystemModstamp >= 2026-11-25T10:00:00Z", ["1", "2"]),
    ("SystemModstamp > 2026-11-25T10:00:00.000+0000", ["2"]),
    ("SystemModstamp < 2026-11-25T11:00:00+01:00", ["3"]),
    ("SystemModstamp >= 2026-11-25", ["1", "2", "3"]),
    ("IsDeleted = false", ["1", "2", "3"]),
])
def test_given_a_where_clause_when_run_then_the_matching_rows_come_back(where, expected):
    assert ids(f"SELECT Id FROM Account WHERE {where}") == expected


def test_given_format_soql_escapes_when_parsed_then_values_round_trip():
    soql = format_soql("SELECT Id FROM Account WHERE Name = {} OR Name IN {}",
                       "O'Brien & Sons", ["x\\y", 'q"'])
    assert ids(soql) == ["2"]
    since = format_soql("SELECT Id FROM Account WHERE SystemModstamp > {}",
                        datetime(2026, 11, 25, 10, tzinfo=UTC))
    assert ids(since) == ["2"]  # format_soql drops milliseconds: 10:00:00.000 is not after


def test_given_order_by_when_run_then_sorted_with_salesforce_null_defaults():
    assert ids("SELECT Id FROM Account ORDER BY NumberOfEmployees") == ["3", "2", "1"]
    assert ids("SELECT Id FROM Account ORDER BY NumberOfEmployees DESC") == ["1", "2", "3"]
    assert ids("SELECT Id FROM Account ORDER BY NumberOfEmployees ASC NULLS LAST") == \
        ["2", "1", "3"]
    assert ids("SELECT Id FROM Account ORDER BY BillingCountry DESC NULLS FIRST, Name") == \
        ["2", "1", "3"]
    assert ids("SELECT Id FROM Account ORDER BY SystemModstamp, Id LIMIT 2") == ["3", "1"]
    assert ids("SELECT Id FROM Account ORDER BY Name LIMIT 1 OFFSET 1") == ["1"]


def test_given_count_when_parsed_then_it_is_a_count_query():
    query = parse("SELECT COUNT() FROM Lead WHERE OwnerId = null")
    assert query.count and query.fields == ()


@pytest.mark.parametrize(("soql", "code"), [
    ("SELECT Id FROM Nope", "INVALID_TYPE"),
    ("SELECT Idd FROM Account", "INVALID_FIELD"),
    ("SELECT Id FROM Account WHERE Foo = 1", "INVALID_FIELD"),
    ("SELECT Owner.Name FROM Account", "INVALID_FIELD"),
    ("SELECT Id, id FROM Account", "MALFORMED_QUERY"),
    ("SELECT FROM Account", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account WHERE Name = 'open", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account LIMIT ten", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account WHERE Name = 'a' extra", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account WHERE Id IN (SELECT AccountId FROM Contact)", "MALFORMED_QUERY"),
    ("", "MALFORMED_QUERY"),
    # The f-string bug: a quoted datetime. Salesforce refuses it, so does the simulator.
    ("SELECT Id FROM Account WHERE SystemModstamp > '2026-11-25T10:00:00Z'",
     "INVALID_QUERY_FILTER_OPERATOR"),
    ("SELECT Id FROM Account WHERE NumberOfEmployees > '5'", "INVALID_QUERY_FILTER_OPERATOR"),
    ("SELECT Id FROM Account WHERE Name = 5", "INVALID_QUERY_FILTER_OPERATOR"),
    ("SELECT Id FROM Account WHERE NumberOfEmployees LIKE '5%'",
     "INVALID_QUERY_FILTER_OPERATOR"),
    ("SELECT Id FROM Account WHERE OwnerId > null", "INVALID_QUERY_FILTER_OPERATOR"),
])
def test_given_a_bad_query_when_parsed_then_salesforce_s_error_code(soql, code):
    with pytest.raises(SoqlError) as caught:
        parse(soql)
    assert caught.value.code == code


def test_given_keywords_in_any_case_and_the_group_object_when_parsed_then_accepted():
    query = parse("select Id, Name from group where type = 'Queue' order by name desc limit 5")
    assert query.object.name == "Group" and query.limit == 5
