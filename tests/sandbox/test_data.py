"""Unit tests of the synthetic data (no HTTP)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from airflow_provider_auralytik.sandbox import SandboxConfig
from airflow_provider_auralytik.sandbox.data import Dataset, format_us, generate_messages, parse_iso_us, to_us

UTC = timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-15T10:30:00Z", datetime(2024, 1, 15, 10, 30, tzinfo=UTC)),
        ("2024-01-15T10:30:00.5Z", datetime(2024, 1, 15, 10, 30, 0, 500000, tzinfo=UTC)),
        ("2024-01-15T10:30:00.123456789Z", datetime(2024, 1, 15, 10, 30, 0, 123456, tzinfo=UTC)),
        ("2024-01-15T12:30:00+02:00", datetime(2024, 1, 15, 10, 30, tzinfo=UTC)),
        ("2024-01-15T05:30:00-0500", datetime(2024, 1, 15, 10, 30, tzinfo=UTC)),
        ("2024-01-15T12:30:00 02:00", datetime(2024, 1, 15, 10, 30, tzinfo=UTC)),
        ("2024-01-15", datetime(2024, 1, 15, tzinfo=UTC)),
    ],
)
def test_parse_iso(text: str, expected: datetime) -> None:
    assert parse_iso_us(text) == to_us(expected)


@pytest.mark.parametrize("text", ["", "2024-01-15T10:30:00", "2024-02-30T00:00:00Z", "15/01/2024", "2024-01-15Z"])
def test_parse_iso_rejects(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - only the type matters: a bad config is refused
        parse_iso_us(text)


def test_format_us() -> None:
    assert format_us(to_us(datetime(2024, 1, 15, 10, 30, tzinfo=UTC))) == "2024-01-15T10:30:00Z"
    assert format_us(to_us(datetime(2024, 1, 15, 10, 30, 0, 5, tzinfo=UTC))) == "2024-01-15T10:30:00.000005Z"


def test_start_date_default_and_explicit() -> None:
    today = date(2026, 1, 10)
    assert SandboxConfig(days=7).start_date(today) == date(2026, 1, 3)
    assert SandboxConfig(start="2024-05-01").start_date() == date(2024, 5, 1)
    assert SandboxConfig(start=datetime(2024, 5, 1, 23, tzinfo=timezone(timedelta(hours=-3)))).start_date() == date(
        2024, 5, 2
    )


@pytest.mark.parametrize("per_day", [0, 1, 3, 4, 5, 7])
def test_small_days_keep_edge_cases_that_fit(per_day: int) -> None:
    cfg = SandboxConfig(start=date(2024, 1, 1), days=2, per_day=per_day)
    data = Dataset(cfg, cfg.start_date())
    assert len(data) == 2 * per_day
    created = sorted(r.fields["createdAt"] for r in data.records)
    if per_day >= 1:
        assert "2024-01-01T00:00:00Z" in created
    if per_day >= 5:
        assert "2024-01-01T23:59:59Z" in created


def test_messages_are_not_stored_and_are_deterministic() -> None:
    cfg = SandboxConfig(start=date(2024, 1, 1), days=1, per_day=20, max_messages=200)
    data = Dataset(cfg, cfg.start_date())
    record = data.records[0]
    first = generate_messages(42, record, exclude_pii=False)
    assert first == generate_messages(42, record, exclude_pii=False)
    assert first != generate_messages(43, record, exclude_pii=False)
    assert len(first) == record.message_count
    assert max(r.message_count for r in data.records) > 30
    assert not hasattr(record, "__dict__")
