"""Date-time parsing and formatting: GB/T 39046 compact forms, ISO 8601, offsets, clear reasons for bad input."""

from __future__ import annotations

from datetime import UTC as UTC_TZ
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.domain import format_compact, parse_date, parse_datetime, to_iso, to_local_naive

SHANGHAI = ZoneInfo("Asia/Shanghai")
UTC = ZoneInfo("UTC")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20260302T093000", datetime(2026, 3, 2, 9, 30, 0)),
        ("20260302093015", datetime(2026, 3, 2, 9, 30, 15)),
        ("2026-03-02T09:30:00", datetime(2026, 3, 2, 9, 30, 0)),
        ("2026-03-02 09:30", datetime(2026, 3, 2, 9, 30)),
        ("2026-03-02", datetime(2026, 3, 2)),
        ("20260302", datetime(2026, 3, 2)),
        ("  2026-03-02T09:30:00  ", datetime(2026, 3, 2, 9, 30)),
        ("2026-03-02T09:30:00.250000", datetime(2026, 3, 2, 9, 30, 0, 250000)),
        ("20240229T120000", datetime(2024, 2, 29, 12, 0)),
        ("20261231T235959", datetime(2026, 12, 31, 23, 59, 59)),
    ],
)
def test_accepted_forms_give_naive_local_datetimes(text: str, expected: datetime) -> None:
    parsed = parse_datetime(text, SHANGHAI)
    assert parsed == expected
    assert parsed.tzinfo is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-02T09:30:00+08:00", datetime(2026, 3, 2, 9, 30)),
        ("2026-03-02T09:30:00Z", datetime(2026, 3, 2, 17, 30)),
        ("2026-03-02T01:30:00+00:00", datetime(2026, 3, 2, 9, 30)),
        # Crosses midnight: 20:00 in New York on 1 March is 09:00 on 2 March in Shanghai.
        ("2026-03-01T20:00:00-05:00", datetime(2026, 3, 2, 9, 0)),
        ("2026-03-02T09:30:00+09:00", datetime(2026, 3, 2, 8, 30)),
    ],
)
def test_an_offset_is_converted_to_the_node_zone_then_dropped(text: str, expected: datetime) -> None:
    parsed = parse_datetime(text, SHANGHAI)
    assert parsed == expected
    assert parsed.tzinfo is None


def test_offset_conversion_uses_the_given_zone() -> None:
    assert parse_datetime("2026-03-02T09:30:00+08:00", UTC) == datetime(2026, 3, 2, 1, 30)
    # Without an offset the text is already local: no conversion, whatever the zone.
    assert parse_datetime("20260302T093000", UTC) == datetime(2026, 3, 2, 9, 30)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026-13-02", "month 13 out of range"),
        ("20261302T093000", "month 13 out of range"),
        ("20260002093000", "month 0 out of range"),
        ("20260230T000000", "day 30 out of range for 2026-02"),
        ("2025-02-29", "day 29 out of range for 2025-02"),
        ("2026-04-31 10:00", "day 31 out of range for 2026-04"),
        ("20260302T240000", "hour 24 out of range"),
        ("20260302T096000", "minute 60 out of range"),
        ("2026-03-02T09:30:60", "second 60 out of range"),
        ("00000302T093000", "year 0 out of range"),
        ("", "empty: expected YYYYMMDDThhmmss, YYYYMMDDhhmmss or ISO 8601"),
        ("   ", "empty: expected YYYYMMDDThhmmss, YYYYMMDDhhmmss or ISO 8601"),
        ("yesterday", "not a date-time: expected YYYYMMDDThhmmss, YYYYMMDDhhmmss or ISO 8601"),
        ("2026/03/02 09:30", "not a date-time: expected YYYYMMDDThhmmss, YYYYMMDDhhmmss or ISO 8601"),
        ("2026-03-02x09:30", "not a date-time: expected YYYYMMDDThhmmss, YYYYMMDDhhmmss or ISO 8601"),
        ("2026-03-02T9:30", "not a date-time: expected YYYYMMDDThhmmss, YYYYMMDDhhmmss or ISO 8601"),
        ("2026030209300", "not a date-time: expected YYYYMMDDThhmmss, YYYYMMDDhhmmss or ISO 8601"),
        ("２０２６０３０２０９３０００", "not a date-time: expected YYYYMMDDThhmmss, YYYYMMDDhhmmss or ISO 8601"),
    ],
)
def test_bad_values_raise_value_error_with_a_short_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_datetime(text, SHANGHAI)
    assert str(caught.value) == reason


def test_parse_date_takes_the_date_part() -> None:
    assert parse_date("2026-02-14") == date(2026, 2, 14)
    assert parse_date("20260214") == date(2026, 2, 14)
    assert parse_date("20260214T235959") == date(2026, 2, 14)
    # 23:30 UTC on the 13th is already the 14th in Shanghai.
    assert parse_date("2026-02-13T23:30:00Z", SHANGHAI) == date(2026, 2, 14)
    with pytest.raises(ValueError, match="month 14 out of range"):
        parse_date("2026-14-01")


def test_format_compact_is_the_standard_form() -> None:
    assert format_compact(datetime(2026, 3, 6, 23, 59, 59)) == "20260306T235959"
    assert format_compact(datetime(987, 1, 2, 3, 4, 5)) == "09870102T030405"


def test_to_iso_names_the_zone_offset() -> None:
    assert to_iso(datetime(2026, 3, 6, 23, 59, 59), SHANGHAI) == "2026-03-06T23:59:59+08:00"
    assert to_iso(datetime(2026, 3, 6, 23, 59, 59, 999), SHANGHAI) == "2026-03-06T23:59:59+08:00"
    aware_utc = datetime(2026, 3, 6, 15, 59, 59, tzinfo=UTC_TZ)
    assert to_iso(aware_utc, SHANGHAI) == "2026-03-06T23:59:59+08:00"
    assert to_iso(datetime(2026, 7, 1, 12, 0), ZoneInfo("Europe/Berlin")) == "2026-07-01T12:00:00+02:00"


def test_to_local_naive() -> None:
    assert to_local_naive(datetime(2026, 1, 1, 16, 0, tzinfo=UTC_TZ), SHANGHAI) == datetime(2026, 1, 2, 0, 0)
    naive = datetime(2026, 1, 1, 16, 0)
    assert to_local_naive(naive, SHANGHAI) is naive


_local_datetimes = st.datetimes(min_value=datetime(1995, 1, 1), max_value=datetime(2100, 12, 31)).map(
    lambda dt: dt.replace(microsecond=0)
)


@settings(max_examples=300, deadline=None)
@given(_local_datetimes)
def test_compact_and_iso_round_trip(value: datetime) -> None:
    compact = format_compact(value)
    assert parse_datetime(compact, SHANGHAI) == value
    assert parse_datetime(compact.replace("T", ""), SHANGHAI) == value
    assert parse_datetime(to_iso(value, SHANGHAI), SHANGHAI) == value
    # The same instant written in UTC comes back as the same Shanghai local time.
    as_utc = value.replace(tzinfo=SHANGHAI).astimezone(UTC_TZ).isoformat()
    assert parse_datetime(as_utc, SHANGHAI) == value


@settings(max_examples=200, deadline=None)
@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)), st.integers(0, 86399))
def test_every_real_date_time_parses_in_both_compact_forms(day: date, second_of_day: int) -> None:
    value = datetime.combine(day, datetime.min.time()) + timedelta(seconds=second_of_day)
    text = value.strftime("%Y%m%d%H%M%S")
    assert parse_datetime(text, SHANGHAI) == value
    assert parse_datetime(text[:8] + "T" + text[8:], SHANGHAI) == value
