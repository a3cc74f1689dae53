"""The dashboard's pure pieces: windows, CRM links, chart geometry, sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tasks.dashboard.auth import SESSION_SECONDS, Signer, Throttle, derive_key
from tasks.dashboard.charts import rule_bars, seconds, speed_chart
from tasks.dashboard.data import Share, window_bounds

NOW = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)


@dataclass
class Point:
    start: datetime
    count: int
    p50: float | None
    p95: float | None


def test_given_today_in_a_zone_when_bounding_then_it_starts_at_local_midnight() -> None:
    since, until = window_bounds("today", NOW, ZoneInfo("America/New_York"))
    assert since == datetime(2026, 12, 7, 5, 0, tzinfo=UTC) and until == NOW
    assert window_bounds("7d", NOW, UTC)[0] == NOW - timedelta(days=7)
    with pytest.raises(ValueError, match="today, 7d, 30d"):
        window_bounds("1y", NOW, UTC)


def test_given_midnight_itself_when_bounding_today_then_the_window_is_not_empty() -> None:
    midnight = NOW.replace(hour=0)
    since, until = window_bounds("today", midnight, UTC)
    assert since < until == midnight


def test_given_seconds_when_formatting_then_short_units() -> None:
    assert [seconds(v) for v in (None, 0, 0.456, 42, 300, 9000)] == \
        ["–", "0 s", "0.46 s", "42 s", "5.0 min", "2.5 h"]


def test_given_an_empty_bucket_when_charting_then_the_line_breaks_there() -> None:
    points = [Point(NOW + timedelta(hours=i), n, p, p and p * 2)
              for i, (n, p) in enumerate([(3, 1.0), (0, None), (2, 4.0), (5, 2.0)])]
    chart = speed_chart(points)
    p50 = next(runs for name, _, runs in chart.series if name == "p50")
    assert len(p50) == 2 and len(p50[1].split()) == 2  # one point, then a gap, then two
    assert not chart.empty and chart.y_ticks[-1].label == "10 s"
    assert len(chart.dots) == 6
    assert speed_chart([Point(NOW, 0, None, None)]).empty


def test_given_long_rule_names_when_charting_bars_then_labels_shorten_and_bars_scale() -> None:
    bars = rule_bars([Share("a" * 40, 10, 50.0), Share("", 5, 25.0)]).bars
    assert bars[0].label.endswith("…") and len(bars[0].label) <= 26 and bars[0].full == "a" * 40
    assert bars[1].label == "(no rule)" and bars[1].width == pytest.approx(bars[0].width / 2)


def test_given_a_session_when_checked_then_only_its_own_unexpired_unrevoked_cookie_passes(
) -> None:
    signer = Signer(derive_key("token"))
    cookie, session = signer.issue(1000.0)
    assert signer.check(cookie, 1000.0) == session
    assert signer.check(cookie, 1000.0 + SESSION_SECONDS + 1) is None
    assert Signer(derive_key("another token")).check(cookie, 1000.0) is None
    assert signer.csrf_for(session.nonce) == session.csrf
    signer.revoke(session.nonce, 1001.0)
    assert signer.check(cookie, 1002.0) is None


def test_given_failures_when_throttling_then_the_client_is_locked_and_others_are_not() -> None:
    throttle = Throttle()
    for t in range(4):
        throttle.failed("a", float(t))
    assert throttle.retry_after("a", 5.0) == 0
    throttle.failed("a", 5.0)
    assert throttle.retry_after("a", 6.0) > 500 and throttle.retry_after("b", 6.0) == 0
    throttle.succeeded("a")
    assert throttle.retry_after("a", 6.0) == 0
