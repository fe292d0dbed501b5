"""Exact window listing against the sandbox over real HTTP (its dateTo is inclusive on purpose)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_auralytik.conversations.listing import (
    MAX_FAN_OUT,
    ConversationCall,
    ConversationFilters,
    CrowdedInstantError,
    Found,
    ListingError,
    ListingStats,
    PageCall,
    WindowListing,
    list_window,
)
from airflow_provider_auralytik.conversations.window import CreatedAtError, DateWindow, format_instant, parse_instant
from airflow_provider_auralytik.hooks.auralytik import AuralytikHook
from airflow_provider_auralytik.sandbox.data import TOTAL_COUNT_MODES, US, reported_count
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


def test_crowded_second_of_distinct_instants_is_cut_below_the_second(make_sandbox, connect):
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=50)
    second = DAY0 + timedelta(hours=12, seconds=7)
    added = {
        sandbox.add_conversation(createdAt=format_instant(second + timedelta(microseconds=4001 * n)))["id"]
        for n in range(230)
    }
    hook = connect(sandbox)
    listing = WindowListing(hook, day(0), page_size=100)
    got = ids(listing)
    assert len(got) == len(set(got)) == 50 + 230
    assert added <= set(got)
    assert listing.requests <= 12


def test_crowded_second_with_a_deletion_between_requests_loses_nothing_else(make_sandbox, connect):
    # 230 conversations within one second, and the sandbox deletes one conversation of each of the
    # next 3 pages it serves: page-number paging would shift and skip a conversation never deleted.
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=50)
    second = DAY0 + timedelta(hours=12, seconds=7)
    for n in range(230):
        sandbox.add_conversation(createdAt=format_instant(second + timedelta(microseconds=4001 * n)))
    before = set(sandbox.conversations_in(day(0).start, day(0).end))
    sandbox.delete_during_listing(3)
    hook = connect(sandbox)
    got = ids(WindowListing(hook, day(0)))
    assert len(sandbox.deleted_ids) == 3
    assert len(got) == len(set(got))
    assert before - set(sandbox.deleted_ids) <= set(got), "a conversation that was never deleted is missing"
    assert set(got) <= before


def test_crowded_instant_fails_naming_it_and_sends_few_requests(make_sandbox, connect):
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=50, crowded_second=150)
    hook = connect(sandbox)
    with pytest.raises(CrowdedInstantError) as caught:
        list(WindowListing(hook, day(0)))
    message = str(caught.value)
    assert "2026-03-01T12:00:00Z" in message
    assert "channel_id" in message
    assert "\n" not in message
    assert sandbox.stats.requests <= 20


@pytest.mark.parametrize("mode", TOTAL_COUNT_MODES)
@pytest.mark.parametrize("per_day", [106, 2000])
def test_exact_whatever_total_count_says_and_at_most_twice_the_honest_cost(make_sandbox, connect, mode, per_day):
    honest_sandbox = make_sandbox(start="2026-03-01", days=3, per_day=per_day)
    honest = WindowListing(connect(honest_sandbox), day(1))
    assert sorted(ids(honest)) == sorted(honest_sandbox.conversations_in(day(1).start, day(1).end))

    sandbox = make_sandbox(start="2026-03-01", days=3, per_day=per_day, total_count_mode=mode)
    listing = WindowListing(connect(sandbox), day(1))
    got = ids(listing)
    expected = sandbox.conversations_in(day(1).start, day(1).end)
    assert len(expected) == per_day
    assert len(got) == len(set(got))
    assert sorted(got) == sorted(expected)
    assert listing.requests == sandbox.stats.requests
    assert listing.requests <= 2 * honest.requests


def test_stale_count_after_deletions_and_inserts_stays_exact(make_sandbox, connect):
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=600, total_count_mode="stale")
    hook = connect(sandbox)
    list(WindowListing(hook, day(0)))  # the counts are cached now
    for conversation_id in sandbox.conversations_in(day(0).start, day(0).end)[::7]:
        sandbox.delete_conversation(conversation_id)
    sandbox.insert_random_conversations(150)
    got = ids(WindowListing(hook, day(0)))
    assert sorted(got) == sorted(sandbox.conversations_in(day(0).start, day(0).end))


@pytest.mark.parametrize(
    ("value", "shown"),
    [("2026-03-01T10:00:00", "'2026-03-01T10:00:00'"), ("not a date", "'not a date'")],
)
def test_created_at_that_cannot_be_placed_fails_naming_id_and_value(make_sandbox, connect, value, shown):
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=20)
    bad = sandbox.add_conversation(createdAt="2026-03-01T10:00:00Z")["id"]
    sandbox._data.by_id[bad].fields["createdAt"] = value  # served as is: what a faulty back end sends
    sandbox._data.by_id[bad]._json_active = sandbox._data.by_id[bad]._json_completed = None
    with pytest.raises(CreatedAtError) as caught:
        list(WindowListing(connect(sandbox), day(0)))
    assert bad in str(caught.value)
    assert f"createdAt={shown}" in str(caught.value)


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


# ---------------------------------------------------------------------------------------------
# The sans-I/O listing against servers unlike the sandbox (order, precision, page cap)
# ---------------------------------------------------------------------------------------------


class Gone(Exception):
    status = 404


@dataclass
class Server:
    """A listing server with chosen quirks: sort order, precision of dateFrom/dateTo, a page cap."""

    conversations: list[dict[str, Any]]
    order: str = "desc"  # desc | asc | shuffled
    #: Bounds are cut to this many microseconds (1_000_000: a server that ignores fractions).
    precision_us: int = 1
    page_cap: int = 100
    count_mode: str = "honest"
    calls: list[Any] = field(default_factory=list)

    def _bound(self, text: str) -> datetime:
        instant = parse_instant(text)
        us = instant.microsecond - instant.microsecond % self.precision_us if self.precision_us < US else 0
        return instant.replace(microsecond=us)

    def answer(self, call: Any) -> Any:
        self.calls.append(call)
        if isinstance(call, ConversationCall):
            found = [c for c in self.conversations if c["id"] == call.conversation_id]
            if not found:
                raise Gone(call.conversation_id)
            return found[0]
        query = call.query
        assert query["page"] == 1, "a window is never paged by number"
        low, high = self._bound(query["date_from"]), self._bound(query["date_to"])
        matched = [c for c in self.conversations if low <= parse_instant(c["createdAt"]) <= high]
        matched.sort(key=lambda c: (c["createdAt"], c["id"]), reverse=self.order == "desc")
        if self.order == "shuffled":
            random.Random(len(self.calls)).shuffle(matched)
        size = min(query["page_size"], self.page_cap)
        data = matched[:size]
        return {
            "data": data,
            "page": 1,
            "pageSize": size,
            "totalCount": reported_count(self.count_mode, len(matched), len(data), None),
        }

    def list(self, window: DateWindow, stats: ListingStats | None = None) -> list[str]:
        steps = list_window(window, page_size=100, stats=stats)
        got: list[str] = []
        answer: Any = None
        error: Exception | None = None
        while True:
            try:
                step = steps.throw(error) if error is not None else steps.send(answer)
            except StopIteration:
                return got
            answer, error = None, None
            if isinstance(step, Found):
                got += ids(step.conversations)
                continue
            try:
                answer = self.answer(step)
            except Gone as exc:
                error = exc


def uniform(n: int, window: DateWindow, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"id": f"c{i:05d}", "createdAt": format_instant(window.start + timedelta(seconds=rng.randrange(86_400)))}
        for i in range(n)
    ]


@pytest.mark.parametrize("order", ["desc", "asc", "shuffled"])
@pytest.mark.parametrize("count_mode", TOTAL_COUNT_MODES)
def test_exact_and_bounded_whatever_the_sort_order(order: str, count_mode: str) -> None:
    window = day(0)
    conversations = uniform(2000, window)
    server = Server(conversations, order=order, count_mode=count_mode)
    got = server.list(window)
    assert sorted(got) == sorted(ids(conversations))
    # An honest count on a newest-first server costs 28 (see benchmarks/bench_listing.py); whatever
    # the order and the count, never more than a full page's fan-out per level of a few levels.
    assert len(server.calls) <= 4 * MAX_FAN_OUT


def test_server_with_a_smaller_page_cap_is_still_exact() -> None:
    window = day(0)
    conversations = uniform(700, window)
    server = Server(conversations, page_cap=40)
    assert sorted(server.list(window)) == sorted(ids(conversations))


def test_server_ignoring_fractions_fails_instead_of_dropping() -> None:
    # 230 conversations in one second, and a server that truncates dateFrom/dateTo to the second:
    # the second cannot be cut, and the listing must say so rather than return part of it.
    window = day(0)
    second = window.start + timedelta(hours=12)
    crowded = [
        {"id": f"s{n:03d}", "createdAt": format_instant(second + timedelta(microseconds=4001 * n))} for n in range(230)
    ]
    server = Server([*uniform(50, window), *crowded], precision_us=US)
    with pytest.raises(ListingError, match="does not"):
        server.list(window)


def delete_one_after_the_first_page(server: Server) -> None:
    """A fault injected into the fake server: once the first page is answered, one conversation it showed is gone."""
    answer = server.answer

    def deleting(call: Any) -> Any:
        result = answer(call)
        if len(server.calls) == 1:
            server.conversations.remove(result["data"][5])
        return result

    server.answer = deleting  # type: ignore[method-assign]  # the fault replaces the server's answer


def test_a_conversation_gone_between_requests_is_fine_one_still_there_is_not() -> None:
    window = day(0)
    conversations = uniform(400, window)
    server = Server(conversations)
    delete_one_after_the_first_page(server)
    got = server.list(window)
    assert sorted(got) == sorted(ids(server.conversations))
    assert sum(isinstance(c, ConversationCall) for c in server.calls) == 1  # looked up: gone (404)

    # A server that leaves out a conversation it showed before, which still exists: an error.
    hiding = Server(uniform(400, window))
    shown = hiding.answer
    hidden: list[str] = []

    def forgetful(call: Any) -> Any:
        result = shown(call)
        if isinstance(call, PageCall) and len(hiding.calls) == 1:
            hidden.append(result["data"][5]["id"])
        elif isinstance(call, PageCall):
            result = {**result, "data": [c for c in result["data"] if c["id"] not in hidden]}
        return result

    hiding.answer = forgetful  # type: ignore[method-assign]  # a fault injected into the fake server
    with pytest.raises(ListingError, match="does not honour") as caught:
        hiding.list(window)
    assert f"conversation {hidden[0]!r}" in str(caught.value)
