"""Unit tests of the date-window rules: parsing, formatting, the half-open window, slicing."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from typing import Any

import pendulum
import pytest

from airflow_provider_auralytik.conversations.window import (
    DEFAULT_DATE_FROM,
    DEFAULT_DATE_TO,
    UNITS,
    UTC,
    CreatedAtError,
    DateWindow,
    EmptyWindowError,
    created_at,
    explain_missing_data_interval,
    format_instant,
    in_api_form,
    parse_instant,
    read_iso8601,
    window_slices,
)
from airflow_provider_auralytik.output.schemas import _MISFIT, _parse_timestamp
from airflow_provider_auralytik.sandbox.data import parse_iso_us

DAY = DateWindow(datetime(2024, 1, 15, tzinfo=UTC), datetime(2024, 1, 16, tzinfo=UTC))
US = timedelta(microseconds=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, microsecond: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# parse_instant
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-15T10:30:00Z", utc(2024, 1, 15, 10, 30)),
        ("2024-01-15T10:30:00z", utc(2024, 1, 15, 10, 30)),
        ("  2024-01-15T10:30:00Z  ", utc(2024, 1, 15, 10, 30)),
        ("2024-01-15T10:30:00+00:00", utc(2024, 1, 15, 10, 30)),
        ("2024-01-15T12:30:00+02:00", utc(2024, 1, 15, 10, 30)),
        ("2024-01-15T05:30:00-05:00", utc(2024, 1, 15, 10, 30)),
        ("2024-01-15T16:00:00+05:30", utc(2024, 1, 15, 10, 30)),
        ("2024-01-15T00:30:00+01:00", utc(2024, 1, 14, 23, 30)),  # crosses the day back
        ("2024-01-15T10:30:00.123456Z", utc(2024, 1, 15, 10, 30, 0, 123456)),
        ("2024-01-15 10:30:00+00:00", utc(2024, 1, 15, 10, 30)),
    ],
)
def test_parse_instant_strings(value, expected):
    parsed = parse_instant(value)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_parse_instant_aware_datetimes_are_converted_to_utc():
    paris = datetime(2024, 7, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))
    parsed = parse_instant(paris)
    assert parsed == utc(2024, 7, 1, 0, 0)
    assert parsed.tzinfo == UTC
    assert (parsed.hour, parsed.day) == (0, 1)  # really converted, not only equal as an instant


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (pendulum.datetime(2024, 1, 15, 10, 30, tz="UTC"), utc(2024, 1, 15, 10, 30)),
        (pendulum.datetime(2024, 1, 15, 5, 30, tz="America/New_York"), utc(2024, 1, 15, 10, 30)),
        (pendulum.datetime(2024, 7, 15, 6, 30, tz="America/New_York"), utc(2024, 7, 15, 10, 30)),  # DST
        (pendulum.datetime(2024, 1, 15, 16, 0, tz="Asia/Kolkata"), utc(2024, 1, 15, 10, 30)),
    ],
)
def test_parse_instant_pendulum(value, expected):
    parsed = parse_instant(value)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)
    assert (parsed.hour, parsed.minute) == (10, 30)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 1, 15, 10, 30),
        pendulum.naive(2024, 1, 15, 10, 30),
        "2024-01-15T10:30:00",
        "2024-01-15",
    ],
)
def test_parse_instant_naive_is_refused(value):
    with pytest.raises(ValueError, match=r"date_from=.* has no time zone"):
        parse_instant(value, name="date_from")


@pytest.mark.parametrize("value", ["", "   ", "yesterday", "2024-13-01T00:00:00Z", "15/01/2024 10:30", "Z"])
def test_parse_instant_garbage_is_refused(value):
    with pytest.raises(ValueError, match=r"date_to=.* is not an ISO 8601 date-time"):
        parse_instant(value, name="date_to")


@pytest.mark.parametrize("value", [None, 1705314600, 1705314600.0, b"2024-01-15T10:30:00Z"])
def test_parse_instant_wrong_type(value):
    with pytest.raises(TypeError, match="createdAt must be a datetime or an ISO 8601 string"):
        parse_instant(value, name="createdAt")


# ---------------------------------------------------------------------------------------------
# read_iso8601: the package's one ISO 8601 parser
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-15T10:30:00Z", utc(2024, 1, 15, 10, 30)),  # the API's form (fast path)
        ("2024-01-15T10:30:00.123456Z", utc(2024, 1, 15, 10, 30, 0, 123456)),
        ("2024-01-15T10:30:00.1234567Z", utc(2024, 1, 15, 10, 30, 0, 123456)),  # truncated, not rounded
        ("2024-01-15T10:30:00,5z", utc(2024, 1, 15, 10, 30, 0, 500000)),
        ("2024-01-15t10:30Z", utc(2024, 1, 15, 10, 30)),
        ("2024-01-15 12:30:00+02:00", utc(2024, 1, 15, 10, 30)),
        ("2024-01-15T05:30:00-0500", utc(2024, 1, 15, 10, 30)),
        ("2024-01-15T00:30:00+01:00", utc(2024, 1, 14, 23, 30)),
        ("2024-01-15 10:30:00.5+00", utc(2024, 1, 15, 10, 30, 0, 500000)),  # PostgreSQL's text form
        ("2024-01-15T10:30:00.1234567890123Z", utc(2024, 1, 15, 10, 30, 0, 123456)),
        ("0001-01-01T00:00:00Z", utc(1, 1, 1)),
        ("2024-01-15T10:30:00", datetime(2024, 1, 15, 10, 30)),  # no zone: naive, the caller decides
        ("2024-01-15", datetime(2024, 1, 15)),  # a bare date: naive midnight
        ("2024-02-30T00:00:00Z", None),
        ("2024-01-15T24:00:00Z", None),
        ("2024-01-15T10:00:60Z", None),
        ("2024-01-15T10:00:00+24:00", None),
        ("0001-01-01T00:30:00+01:00", None),  # before the calendar's first day
        ("9999-12-31T23:30:00-01:00", None),  # after its last
        ("2024-W03-1T10:00:00Z", None),
        ("20240115T103000Z", None),
        ("\uff12024-01-15T10:00:00Z", None),  # a fullwidth digit
        (" 2024-01-15T10:30:00Z", None),  # whitespace is the caller's business
        ("2024-01-15Z", None),
        ("", None),
    ],
)
def test_read_iso8601(text: str, expected: datetime | None) -> None:
    parsed = read_iso8601(text)
    assert parsed == expected
    if parsed is not None:
        assert (parsed.tzinfo is None) is (expected.tzinfo is None)  # type: ignore[union-attr]  # not None here
        assert parsed.tzinfo in (None, UTC)


@pytest.mark.parametrize(
    ("text", "api_form"),
    [
        ("2024-01-15T10:30:00Z", True),
        ("2024-01-15T10:30:00.123456Z", True),
        ("2024-01-15T10:30:00.123Z", False),
        ("2024-01-15t10:30:00Z", False),
        ("2024-01-15T10:30:00+00:00", False),
        ("2024-01-15T10:30:00,123456Z", False),
    ],
)
def test_in_api_form(text: str, api_form: bool) -> None:
    assert in_api_form(text) is api_form
    assert read_iso8601(text, api_form=api_form) == read_iso8601(text)


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-15T10:30:00Z",
        "2024-01-15T10:30:00.5Z",
        "2024-01-15T10:30:00.123456789Z",
        "2024-01-15 12:30+02:00",
        "2024-01-15T05:30:00-0500",
        "2024-01-15T10:30:00-05",
        "2024-01-15T10:30:00",
        "2024-02-30T00:00:00Z",
        "2024-01-15T10:00:00+24:00",
        "2024-W03-1T10:00:00Z",
        "yesterday",
    ],
)
def test_the_window_the_parquet_schemas_and_the_sandbox_read_instants_alike(text: str) -> None:
    try:
        expected: int | None = (parse_instant(text) - utc(1970, 1, 1)) // US
    except ValueError:
        expected = None
    micros, _ = _parse_timestamp(text)
    assert (None if micros is _MISFIT else micros) == expected
    try:
        sandbox: int | None = parse_iso_us(text)
    except ValueError:
        sandbox = None
    assert sandbox == expected


# ---------------------------------------------------------------------------------------------
# format_instant
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (utc(2024, 1, 15, 10, 30), "2024-01-15T10:30:00Z"),
        (utc(2024, 1, 15, 10, 30, 0, 500000), "2024-01-15T10:30:00.500000Z"),
        (utc(2024, 1, 15, 10, 30, 0, 1), "2024-01-15T10:30:00.000001Z"),
        (datetime(2024, 1, 15, 12, 30, tzinfo=timezone(timedelta(hours=2))), "2024-01-15T10:30:00Z"),
        (pendulum.datetime(2024, 1, 15, 0, 30, tz="Europe/Paris"), "2024-01-14T23:30:00Z"),
    ],
)
def test_format_instant(value, expected):
    assert format_instant(value) == expected


@pytest.mark.parametrize("text", ["2024-01-15T10:30:00Z", "2024-02-29T23:59:59.999999Z", "1999-12-31T00:00:00.000001Z"])
def test_format_parse_round_trip(text):
    assert format_instant(parse_instant(text)) == text


# ---------------------------------------------------------------------------------------------
# DateWindow.resolve
# ---------------------------------------------------------------------------------------------


def test_resolve_parses_both_ends():
    window = DateWindow.resolve("2024-01-15T01:00:00+01:00", pendulum.datetime(2024, 1, 16, tz="UTC"))
    assert window == DAY
    assert window.start.tzinfo == UTC
    assert window.end.utcoffset() == timedelta(0)
    assert window.seconds == 86400.0
    assert str(window) == "[2024-01-15T00:00:00Z, 2024-01-16T00:00:00Z)"
    assert window.as_dict() == {"date_from": "2024-01-15T00:00:00Z", "date_to": "2024-01-16T00:00:00Z"}


@pytest.mark.parametrize(
    ("date_from", "date_to"),
    [
        ("2024-01-15T00:00:00Z", "2024-01-15T00:00:00Z"),
        ("2024-01-15T01:00:00+01:00", "2024-01-15T00:00:00Z"),  # the same instant written twice
        (pendulum.datetime(2024, 1, 15, tz="UTC"), pendulum.datetime(2024, 1, 15, tz="UTC")),
    ],
)
def test_resolve_empty_window(date_from, date_to):
    with pytest.raises(EmptyWindowError, match="CronDataIntervalTimetable") as info:
        DateWindow.resolve(date_from, date_to)
    assert isinstance(info.value, ValueError)
    assert "[2024-01-15T00:00:00Z, 2024-01-15T00:00:00Z) is empty" in str(info.value)


def test_resolve_reversed_window():
    with pytest.raises(ValueError, match=r"date_to \(2024-01-14T00:00:00Z\) is before date_from") as info:
        DateWindow.resolve("2024-01-15T00:00:00Z", "2024-01-14T00:00:00Z")
    assert not isinstance(info.value, EmptyWindowError)


def test_reversed_by_a_microsecond():
    with pytest.raises(ValueError, match="swap them"):
        DateWindow(utc(2024, 1, 15), utc(2024, 1, 15) - US)


@pytest.mark.parametrize(
    ("date_from", "date_to"),
    [(None, "2024-01-16T00:00:00Z"), ("2024-01-15T00:00:00Z", None), (None, None), ("", ""), ("", DAY.end)],
)
def test_resolve_missing_bound(date_from, date_to):
    with pytest.raises(ValueError, match="has no data interval") as info:
        DateWindow.resolve(date_from, date_to)
    # Says both ways out: a logical date for the run, or an explicit window.
    assert "logical date" in str(info.value)
    assert "pass date_from and date_to" in str(info.value)
    assert not isinstance(info.value, EmptyWindowError)


def test_resolve_naive_and_garbage_name_the_argument():
    with pytest.raises(ValueError, match=r"date_from=.* has no time zone"):
        DateWindow.resolve("2024-01-15T00:00:00", "2024-01-16T00:00:00Z")
    with pytest.raises(ValueError, match="date_to='tomorrow' is not an ISO 8601"):
        DateWindow.resolve("2024-01-15T00:00:00Z", "tomorrow")


def _render(template: str, **context: Any) -> str:
    import jinja2

    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(**context)


def test_default_templates_are_the_data_interval():
    start, end = utc(2024, 1, 15), utc(2024, 1, 16)
    context = {"data_interval_start": start, "data_interval_end": end}
    assert _render(DEFAULT_DATE_FROM, **context) == str(start)
    assert _render(DEFAULT_DATE_TO, **context) == str(end)
    assert DateWindow.resolve(_render(DEFAULT_DATE_FROM, **context), _render(DEFAULT_DATE_TO, **context)) == (
        DateWindow(start, end)
    )


def test_default_templates_without_a_data_interval_reach_the_clear_error():
    # Airflow leaves data_interval_* out of the context of a run without a logical date; under
    # StrictUndefined a plain "{{ data_interval_start }}" would fail in Jinja, before the task.
    rendered = _render(DEFAULT_DATE_FROM), _render(DEFAULT_DATE_TO)
    with pytest.raises(ValueError, match="has no data interval"):
        DateWindow.resolve(*rendered)


def test_undefined_interval_in_any_template_becomes_the_clear_error():
    import jinja2

    with pytest.raises(ValueError, match="has no data interval") as info, explain_missing_data_interval():
        _render("s3://lake/date={{ data_interval_start.strftime('%Y-%m-%d') }}")
    assert "pass date_from and date_to" in str(info.value)
    # Any other undefined name is the user's own mistake: Jinja's error is left alone.
    with pytest.raises(jinja2.UndefinedError, match="'my_typo' is undefined"), explain_missing_data_interval():
        _render("{{ my_typo }}")


# ---------------------------------------------------------------------------------------------
# contains: half-open [start, end)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("created_at", "inside"),
    [
        ("2024-01-15T00:00:00Z", True),  # start is in
        ("2024-01-16T00:00:00Z", False),  # end is out
        ("2024-01-15T23:59:59.999999Z", True),  # last microsecond in
        ("2024-01-14T23:59:59.999999Z", False),  # just before start
        ("2024-01-15T12:00:00Z", True),
        ("2024-01-16T01:00:00+01:00", False),  # end, written in another zone
        ("2024-01-15T00:59:59+01:00", False),  # before start, written in another zone
        ("2024-01-15T01:00:00+01:00", True),  # start, written in another zone
        (utc(2024, 1, 15), True),
        (utc(2024, 1, 16), False),
        (pendulum.datetime(2024, 1, 15, 18, tz="America/New_York"), True),  # 23:00Z
        (pendulum.datetime(2024, 1, 15, 19, tz="America/New_York"), False),  # 00:00Z next day
    ],
)
def test_contains_half_open(created_at, inside):
    assert DAY.contains(created_at) is inside


@pytest.mark.parametrize(
    "created_at",
    [None, "", "garbage", "2024-01-15T12:00:00", datetime(2024, 1, 15, 12), 1705320000, [], {}, 0],
)
def test_contains_refuses_what_cannot_be_placed(created_at):
    # "Outside" would drop a conversation silently: a value that cannot be placed raises.
    with pytest.raises((TypeError, ValueError), match="createdAt"):
        DAY.contains(created_at)


@pytest.mark.parametrize(
    ("conversation", "shown"),
    [
        ({"id": "conv_naive", "createdAt": "2024-01-15T12:00:00"}, "'2024-01-15T12:00:00'"),
        ({"id": "conv_garbage", "createdAt": "yesterday"}, "'yesterday'"),
        ({"id": "conv_none", "createdAt": None}, "None"),
        ({"id": "conv_missing"}, "None"),
        ({"id": "conv_number", "createdAt": 1705320000}, "1705320000"),
    ],
)
def test_created_at_names_the_conversation_and_the_value(conversation, shown):
    with pytest.raises(CreatedAtError) as caught:
        created_at(conversation)
    message = str(caught.value)
    assert conversation["id"] in message
    assert f"createdAt={shown}" in message
    assert "\n" not in message


def test_created_at_of_a_non_object_is_refused():
    with pytest.raises(CreatedAtError, match="conversation object"):
        created_at(["not", "a", "dict"])


def test_created_at_reads_zones_and_fractions():
    assert created_at({"id": "a", "createdAt": "2024-01-15T01:00:00.250+01:00"}) == utc(2024, 1, 15, 0, 0, 0, 250000)


def test_consecutive_windows_never_share_or_drop_an_instant():
    days = [DateWindow(utc(2024, 1, d), utc(2024, 1, d + 1)) for d in (14, 15, 16)]
    for instant in [utc(2024, 1, 15) - US, utc(2024, 1, 15), utc(2024, 1, 16) - US, utc(2024, 1, 16)]:
        assert sum(day.contains(instant) for day in days) == 1


# ---------------------------------------------------------------------------------------------
# server_bounds: wider than the window, by at least a second on each side
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (DAY, ("2024-01-14T23:59:59Z", "2024-01-16T00:00:01Z")),
        (
            DateWindow(utc(2024, 1, 15, 10, 0, 0, 500000), utc(2024, 1, 15, 10, 0, 0, 500000)),
            ("2024-01-15T09:59:59Z", "2024-01-15T10:00:02Z"),
        ),
        (
            DateWindow(utc(2024, 1, 15, 10, 0, 0, 1), utc(2024, 1, 15, 11, 0, 0, 999999)),
            ("2024-01-15T09:59:59Z", "2024-01-15T11:00:02Z"),
        ),
    ],
)
def test_server_bounds(window, expected):
    bounds = window.server_bounds()
    assert bounds == expected
    low, high = (parse_instant(b) for b in bounds)
    assert low <= window.start - timedelta(seconds=1)
    assert high >= window.end + timedelta(seconds=1)
    assert low.microsecond == 0
    assert high.microsecond == 0


# ---------------------------------------------------------------------------------------------
# split and window_slices
# ---------------------------------------------------------------------------------------------


def assert_exact_cover(window: DateWindow, parts: list[DateWindow]) -> None:
    assert parts[0].start == window.start
    assert parts[-1].end == window.end
    for a, b in itertools.pairwise(parts):
        assert a.end == b.start  # adjacent: nothing shared, nothing dropped
        assert a.end.microsecond == 0  # cut on whole seconds
    assert all(p.start < p.end for p in parts)  # no empty part
    assert sum(p.seconds for p in parts) == pytest.approx(window.seconds)


def test_split_day_in_24_hours():
    parts = DAY.split(24)
    assert len(parts) == 24
    assert_exact_cover(DAY, parts)
    assert all(p.seconds == 3600 for p in parts)
    assert parts[1] == DateWindow(utc(2024, 1, 15, 1), utc(2024, 1, 15, 2))


def test_split_uneven():
    window = DateWindow(utc(2024, 1, 15, 0, 0, 0), utc(2024, 1, 15, 0, 0, 10))
    parts = window.split(3)
    assert [(p.start.second, p.end.second) for p in parts] == [(0, 4), (4, 8), (8, 10)]


def test_split_with_fractional_ends_keeps_them():
    window = DateWindow(utc(2024, 1, 15, 0, 0, 0, 500000), utc(2024, 1, 15, 0, 0, 10, 250000))
    parts = window.split(2)
    assert len(parts) == 2
    assert_exact_cover(window, parts)
    assert parts[0].start.microsecond == 500000
    assert parts[-1].end.microsecond == 250000


@pytest.mark.parametrize(
    "window",
    [
        DateWindow(utc(2024, 1, 15, 0, 0, 0), utc(2024, 1, 15, 0, 0, 1)),  # exactly one second
        DateWindow(utc(2024, 1, 15, 0, 0, 0), utc(2024, 1, 15, 0, 0, 0, 400000)),  # less
        DateWindow(utc(2024, 1, 15), utc(2024, 1, 15)),  # empty, built directly
    ],
)
def test_split_unsplittable_window_comes_back_whole(window):
    assert window.split(10) == [window]


def test_split_parts_one_is_the_window_itself():
    assert DAY.split(1) == [DAY]


@pytest.mark.parametrize("parts", [0, -1])
def test_split_parts_below_one(parts):
    with pytest.raises(ValueError, match="parts must be at least 1"):
        DAY.split(parts)


def test_split_more_parts_than_seconds():
    window = DateWindow(utc(2024, 1, 15, 0, 0, 0), utc(2024, 1, 15, 0, 0, 5))
    parts = window.split(100)
    assert len(parts) == 5
    assert_exact_cover(window, parts)
    assert all(p.seconds == 1 for p in parts)


@pytest.mark.parametrize("parts", [2, 3, 7, 24, 60, 1000])
@pytest.mark.parametrize(
    "window",
    [
        DAY,
        DateWindow(utc(2024, 1, 15, 3, 7, 11, 123456), utc(2024, 1, 17, 8, 1, 2, 654321)),
        DateWindow(utc(2024, 1, 15, 0, 0, 0, 999999), utc(2024, 1, 15, 0, 0, 3)),
        DateWindow(utc(2024, 1, 15, 0, 0, 0, 900000), utc(2024, 1, 15, 0, 0, 1, 100000)),
    ],
)
def test_split_invariants(window, parts):
    result = window.split(parts)
    assert 1 <= len(result) <= parts
    assert_exact_cover(window, result)
    # Every instant of the window falls in exactly one part, the bounds included.
    probes = [window.start, window.end - US] + [p.start for p in result[:50]] + [p.end - US for p in result[-50:]]
    for instant in probes:
        assert sum(p.contains(instant) for p in result) == 1
    assert not any(p.contains(window.end) for p in result)


def test_split_pendulum_window():
    window = DateWindow.resolve(
        pendulum.datetime(2024, 1, 15, tz="Europe/Paris"), pendulum.datetime(2024, 1, 16, tz="Europe/Paris")
    )
    parts = window.split(4)
    assert len(parts) == 4
    assert_exact_cover(window, parts)
    assert format_instant(parts[1].start) == "2024-01-15T05:00:00Z"


def test_window_slices():
    slices = window_slices("2024-01-15T00:00:00Z", "2024-01-16T00:00:00Z", 4)
    assert slices == [
        {"date_from": "2024-01-15T00:00:00Z", "date_to": "2024-01-15T06:00:00Z"},
        {"date_from": "2024-01-15T06:00:00Z", "date_to": "2024-01-15T12:00:00Z"},
        {"date_from": "2024-01-15T12:00:00Z", "date_to": "2024-01-15T18:00:00Z"},
        {"date_from": "2024-01-15T18:00:00Z", "date_to": "2024-01-16T00:00:00Z"},
    ]


def test_window_slices_one_and_offsets():
    assert window_slices(pendulum.datetime(2024, 1, 15, tz="Asia/Tokyo"), "2024-01-15T00:00:00Z", 1) == [
        {"date_from": "2024-01-14T15:00:00Z", "date_to": "2024-01-15T00:00:00Z"}
    ]


def test_window_slices_round_trip_through_resolve():
    slices = window_slices("2024-01-15T00:00:00.250Z", "2024-01-15T00:10:00Z", 7)
    windows = [DateWindow.resolve(s["date_from"], s["date_to"]) for s in slices]
    assert_exact_cover(DateWindow.resolve("2024-01-15T00:00:00.250Z", "2024-01-15T00:10:00Z"), windows)


def test_window_slices_refuses_empty_reversed_and_missing():
    with pytest.raises(EmptyWindowError, match="CronDataIntervalTimetable"):
        window_slices("2024-01-15T00:00:00Z", "2024-01-15T00:00:00Z", 3)
    with pytest.raises(ValueError, match="swap them"):
        window_slices("2024-01-16T00:00:00Z", "2024-01-15T00:00:00Z", 3)
    with pytest.raises(ValueError, match="pass date_from and date_to"):
        window_slices(None, "2024-01-15T00:00:00Z", 3)  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(ValueError, match="parts must be at least 1"):
        window_slices("2024-01-15T00:00:00Z", "2024-01-16T00:00:00Z", 0)


# ---------------------------------------------------------------------------------------------
# Cutting a crowded second: milliseconds, then microseconds, each with bounds of its own unit
# ---------------------------------------------------------------------------------------------

SECOND, MILLI, MICRO = UNITS


def assert_tiles(window, parts):
    assert parts[0].start == window.start
    assert parts[-1].end == window.end
    assert all(a.end == b.start and a.start < a.end for a, b in itertools.pairwise(parts))


def test_one_second_is_cut_into_milliseconds_only_when_asked():
    second = DateWindow(utc(2024, 1, 15, 10), utc(2024, 1, 15, 10, 0, 1))
    assert second.split(4) == [second]  # slicing (the default) never goes below a second
    parts = second.split(4, finest=MICRO)
    assert len(parts) == 4
    assert_tiles(second, parts)
    assert format_instant(parts[1].start) == "2024-01-15T10:00:00.250000Z"
    assert {part.unit for part in parts} == {MILLI}
    assert parts[1].server_bounds() == ("2024-01-15T10:00:00.249000Z", "2024-01-15T10:00:00.501000Z")


def test_one_millisecond_is_cut_into_microseconds_then_no_further():
    milli = DateWindow(utc(2024, 1, 15, 10, 0, 0, 1000), utc(2024, 1, 15, 10, 0, 0, 2000), MILLI)
    parts = milli.split(2, finest=MICRO)
    assert [part.unit for part in parts] == [MICRO, MICRO]
    assert_tiles(milli, parts)
    assert parts[0].server_bounds() == ("2024-01-15T10:00:00.000999Z", "2024-01-15T10:00:00.001501Z")
    micro = DateWindow(utc(2024, 1, 15, 10, 0, 0, 7), utc(2024, 1, 15, 10, 0, 0, 8), MICRO)
    assert micro.split(8, finest=MICRO) == [micro]
    assert micro.finer() is None
    assert DateWindow(micro.start, micro.end).finer() == MILLI


def test_unit_does_not_change_equality():
    assert DateWindow(utc(2024, 1, 15), utc(2024, 1, 16), MICRO) == DAY
