"""Postal-code ranges and prefixes: US ZIP, Canadian FSA, UK outward codes (issue 11, point 4)."""

from __future__ import annotations

import pytest

from config.routing import ConfigError
from sync.normalize import postal_keys
from tests.sync.test_conditions import compiled, matches


@pytest.mark.parametrize(("lo", "hi", "value", "expected"), [
    # US ZIP: by its five digits; ZIP+4 with or without the hyphen; leading zeros kept.
    ("94000", "95999", "94105", True),
    ("94000", "95999", "94105-1234", True),
    ("94000", "95999", "941051234", True),
    ("94000", "95999", "95999", True),
    ("94000", "95999", "96000", False),
    ("94000", "95999", "93999-9999", False),
    ("02000", "02999", "02134", True),
    ("02000", "02999", "2134", False),  # four digits: not a ZIP
    # Canada: by the forward sortation area, full code or FSA alone, any case and spacing.
    ("K1A", "K4C", "K1A 0B1", True),
    ("K1A", "K4C", "k2p1l4", True),
    ("K1A", "K4C", "K4C", True),
    ("K1A", "K4C", "K4E 1A1", False),
    ("K1A", "K4C", "M5V 2T6", False),
    # UK: by the outward code's area and district number: E14 is not between E1 and E9.
    ("E1", "E9", "E1 6AN", True),
    ("E1", "E9", "E9 5AB", True),
    ("E1", "E9", "E14 5AB", False),
    ("E1", "E9", "EC1A 1BB", False),
    ("E1", "E20", "E14 5AB", True),
    ("E1", "E1Z", "E1W 1AA", True),
    ("E1", "E1Z", "E14 5AB", False),
    ("SW1", "SW1", "SW1A 1AA", False),  # SW1A is district 1 with letter A: after SW1
    ("SW1", "SW1Z", "SW1A 1AA", True),
    ("W1A", "W1A", "W1A 0AX", True),  # a bare W1A is both an FSA and an outward code
    # Formats never mix: a Canadian code is not in a ZIP range, nor a ZIP in a UK one.
    ("94000", "95999", "K1A 0B1", False),
    ("E1", "E9", "94105", False),
])
def test_given_a_postal_range_when_matching_then_it_compares_within_the_format(
        lo, hi, value, expected):
    assert matches({"postal_code": {"between": [lo, hi]}}, {"postal_code": value}) is expected


def test_given_a_missing_or_foreign_postal_code_then_a_range_never_matches():
    when = {"postal_code": {"between": ["94000", "95999"]}}
    assert not matches(when, {})
    assert not matches(when, {"postal_code": "75008 Paris"})
    assert not matches(when, {"postal_code": "x" * 5000})


@pytest.mark.parametrize(("prefix", "value", "expected"), [
    ("94", "94105-1234", True),
    ("941", "94205", False),
    ("K1A", "k1a 0b1", True),
    ("SW1", "SW1A 1AA", True),
    ("SW1A", "sw1a 1aa", True),
    ("E1", "E14 5AB", True),  # text: a UK district alone needs a range (E1 to E1Z)
])
def test_given_a_postal_prefix_when_matching_then_it_is_a_folded_text_prefix(
        prefix, value, expected):
    assert matches({"postal_code": {"starts_with": prefix}}, {"postal_code": value}) is expected


def test_given_unquoted_numbers_then_the_range_stays_numeric_as_on_any_field():
    when = {"postal_code": {"between": [1000, 1999]}}  # e.g. Austrian four-digit codes
    assert matches(when, {"postal_code": "1010"})
    assert not matches(when, {"postal_code": "2000"})


@pytest.mark.parametrize(("operand", "expected"), [
    (["94000", "K1A"], "two postal codes of one format"),
    (["95999", "94000"], "low ≤ high"),
    (["E9", "E1"], "low ≤ high"),
])
def test_given_a_bad_postal_range_when_compiling_then_the_error_names_the_path(operand,
                                                                               expected):
    with pytest.raises(ConfigError) as caught:
        compiled({"postal_code": {"between": operand}})
    assert caught.value.path == "rules[0].when.postal_code.between"
    assert expected in str(caught.value)


def test_given_postal_codes_then_their_readings_are_exact():
    assert postal_keys("94105-1234") == (("US", 94105),)
    assert postal_keys("K1A 0B1") == (("CA", "K1A"),)
    assert postal_keys("EC1A 1BB") == (("GB", "EC", 1, "A"),)
    assert postal_keys("W1A") == (("CA", "W1A"), ("GB", "W", 1, "A"))
    assert postal_keys("") == () and postal_keys("hello") == ()
