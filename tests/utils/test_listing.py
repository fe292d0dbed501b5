"""Exact window listing against the sandbox over real HTTP (its dateTo is inclusive on purpose)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_auralytik.hooks.auralytik import AuralytikHook
from airflow_provider_auralytik.utils.listing import ConversationFilters, WindowListing
from airflow_provider_auralytik.utils.window import DateWindow, format_instant, parse_instant
from tests.conftest import sandbox_connection

DAY0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


@pytest.fixture
def connect(monkeypatch):
    def _connect(sandbox, **extra):
        monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox, **extra))
        return AuralytikHook()

    return _connect


def ids(conversations):
    return [c["id"] for c in conversations]


def day(n: int) -> DateWindow:
    return DateWindow(DAY0 + timedelta(days=n), DAY0 + timedelta(days=n + 1))


def test_day_is_exact_at_both_edges_and_in_created_order(make_sandbox, connect):
    sandbox = make_sandbox(start="2026-03-01", days=3, per_day=400)
    hook = connect(sandbox)
    window = day(1)
    listing = WindowListing(hook, window)
    got = list(listing)

    expected = sandbox.conversations_in(window.start, window.end)
    assert len(expected) == 400
    assert Counter(ids(got)) == Counter(expected)
    created = [parse_instant(c["createdAt"]) for c in got]
    assert created == sorted(created)
    # The sandbox puts a conversation at each midnight: the window keeps its own, not the next day's.
    assert created[0] == window.start
    assert all(window.start <= t < window.end for t in created)
    assert listing.requests <= 12


def test_consecutive_windows_share_and_miss_nothing(make_sandbox, connect):
    sandbox = make_sandbox(start="2026-03-01", days=3, per_day=150)
    hook = connect(sandbox)
    seen: list[str] = []
    for n in range(3):
        seen += ids(WindowListing(hook, day(n)))
    assert len(seen) == len(set(seen)) == 450
    assert set(seen) == {c["id"] for c in sandbox.all_conversations()}


def test_filters_pass_through_and_stay_exact(make_sandbox, connect):
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=300)
    hook = connect(sandbox)
    got = list(WindowListing(hook, day(0), ConversationFilters(channel_id="ch_whatsapp")))
    expected = [
        c["id"]
        for c in sandbox.all_conversations()
        if c["channelId"] == "ch_whatsapp" and day(0).contains(c["createdAt"])
    ]
    assert 0 < len(got) < 300
    assert sorted(ids(got)) == sorted(expected)


def test_listing_that_shifts_while_read_loses_and_duplicates_nothing(make_sandbox, connect):
    # Every listing request inserts 5 conversations at random times inside the data: page-number
    # paging would see later pages shift. Each piece read is one atomic answer, so nothing that
    # existed before the export started can be lost or read twice.
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=1000, insert_during_listing=5)
    hook = connect(sandbox)
    window = day(0)
    before = set(sandbox.conversations_in(window.start, window.end))
    got = ids(WindowListing(hook, window))
    assert len(got) == len(set(got)), "a conversation was exported twice"
    assert before <= set(got), "a conversation that existed before the export was lost"
    assert set(got) <= set(sandbox.conversations_in(window.start, window.end))
    assert len(sandbox.all_conversations()) > 1000  # inserts really happened


def test_more_conversations_in_one_second_than_a_page_holds(make_sandbox, connect):
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=50)
    crowded = DAY0 + timedelta(hours=12, seconds=7)
    added = {sandbox.add_conversation(createdAt=format_instant(crowded))["id"] for _ in range(230)}
    hook = connect(sandbox)
    got = ids(WindowListing(hook, day(0), page_size=100))
    assert len(got) == len(set(got))
    assert added <= set(got)
    assert len(got) == 50 + 230


def test_window_of_one_second_with_inclusive_server_bounds(make_sandbox, connect):
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=10)
    at = DAY0 + timedelta(hours=5)
    inside = sandbox.add_conversation(createdAt=format_instant(at))["id"]
    after = sandbox.add_conversation(createdAt=format_instant(at + timedelta(seconds=1)))["id"]
    before = sandbox.add_conversation(createdAt=format_instant(at - timedelta(seconds=1)))["id"]
    hook = connect(sandbox)
    got = ids(WindowListing(hook, DateWindow(at, at + timedelta(seconds=1))))
    assert got == [inside]
    assert after not in got
    assert before not in got


def test_page_size_is_validated_before_any_request(make_sandbox, connect):
    sandbox = make_sandbox(days=1, per_day=5)
    hook = connect(sandbox)
    with pytest.raises(ValueError, match="page_size"):
        WindowListing(hook, day(0), page_size=101)
    assert sandbox.stats.requests == 0


def test_small_pages_still_exact(make_sandbox, connect):
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=120)
    hook = connect(sandbox)
    got = ids(WindowListing(hook, day(0), page_size=7))
    assert sorted(got) == sorted(sandbox.conversations_in(day(0).start, day(0).end))
