"""alist_window: the window's pieces listed concurrently, with the same result and order as list_window.

Against the sans-I/O test server of ``test_listing`` (its quirks: sort order, counts, page cap,
deletions), answering each call after a random delay so pieces finish out of order.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_auralytik.conversations.listing import (
    ConversationCall,
    Found,
    ListingError,
    ListingStats,
    PageCall,
    alist_window,
    list_window,
)
from airflow_provider_auralytik.conversations.window import DateWindow, format_instant
from airflow_provider_auralytik.sandbox.data import TOTAL_COUNT_MODES
from tests.conversations.test_listing import Server, day, delete_one_after_the_first_page, ids, uniform


class Concurrent:
    """Answers a :class:`Server`'s calls asynchronously after random delays; counts what is in flight."""

    def __init__(self, server: Server, seed: int = 3, delay: float = 0.004) -> None:
        self.server = server
        self.rng = random.Random(seed)
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0

    async def answer(self, call: PageCall | ConversationCall) -> Any:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.rng.uniform(0, self.delay))
            return self.server.answer(call)
        finally:
            self.in_flight -= 1

    def list(self, window: DateWindow, *, ahead: int, stats: ListingStats | None = None) -> list[str]:
        async def collect() -> list[str]:
            return [c["id"] async for c in alist_window(window, self.answer, ahead=ahead, stats=stats)]

        return asyncio.run(collect())


@pytest.mark.parametrize("order", ["desc", "asc", "shuffled"])
@pytest.mark.parametrize("count_mode", TOTAL_COUNT_MODES)
def test_same_conversations_in_the_same_order_as_the_sequential_listing(order: str, count_mode: str) -> None:
    window = day(0)
    conversations = uniform(2000, window)
    sequential = Server(list(conversations), order=order, count_mode=count_mode).list(window)
    parallel = Concurrent(Server(list(conversations), order=order, count_mode=count_mode))
    got = parallel.list(window, ahead=8)
    assert got == sequential  # createdAt order, every conversation once
    assert len(got) == len(set(got)) == 2000


def test_pieces_are_listed_concurrently_but_never_more_than_ahead_at_once() -> None:
    window = day(0)
    server = Server(uniform(2000, window))
    parallel = Concurrent(server)
    stats = ListingStats()
    parallel.list(window, ahead=6, stats=stats)
    assert parallel.max_in_flight == 6
    assert stats.requests == len(server.calls)
    one_at_a_time = Concurrent(Server(uniform(2000, window)))
    one_at_a_time.list(window, ahead=1)
    assert one_at_a_time.max_in_flight == 1


def test_a_slow_early_piece_holds_the_later_ones_back_in_order() -> None:
    window = day(0)
    conversations = uniform(1000, window)
    server = Server(list(conversations))
    parallel = Concurrent(server)
    answer = parallel.answer

    async def first_piece_slow(call: Any) -> Any:
        # Not the window's own first request, but the earliest of its pieces: answered last.
        if isinstance(call, PageCall) and call.query["date_from"] <= format_instant(window.start) and server.calls:
            await asyncio.sleep(0.1)
        return await answer(call)

    parallel.answer = first_piece_slow  # type: ignore[method-assign]  # a fault injected into the fake server
    assert parallel.list(window, ahead=10) == Server(list(conversations)).list(window)


def test_a_deletion_between_requests_is_verified_and_the_listing_stays_exact() -> None:
    window = day(0)
    conversations = uniform(400, window)
    server = Server(list(conversations))
    delete_one_after_the_first_page(server)
    got = Concurrent(server).list(window, ahead=8)
    assert sorted(got) == sorted(ids(server.conversations))
    assert any(isinstance(c, ConversationCall) for c in server.calls)  # looked up, found gone


def test_an_error_in_a_piece_is_raised_and_the_other_pieces_are_cancelled() -> None:
    window = day(0)
    second = window.start + timedelta(hours=12)
    crowded = [
        {"id": f"s{n:03d}", "createdAt": format_instant(second + timedelta(microseconds=4001 * n))} for n in range(230)
    ]
    server = Server([*uniform(50, window), *crowded], precision_us=1_000_000)

    async def run() -> None:
        tasks_before = len(asyncio.all_tasks())
        with pytest.raises(ListingError, match="does not"):
            _ = [conversation async for conversation in alist_window(window, Concurrent(server).answer, ahead=8)]
        await asyncio.sleep(0.05)
        assert len(asyncio.all_tasks()) == tasks_before  # nothing left running

    asyncio.run(run())


def test_a_long_window_on_a_newest_first_server_reaches_its_first_conversations_in_a_few_calls() -> None:
    # A page of a server sorting newest first holds the window's last hour: not a burst to cut
    # around hour by hour (a hundred calls in a row before the first conversation), but a sample
    # telling how many the window holds: cut it evenly.
    window = DateWindow(day(0).start, day(0).start + timedelta(days=10))
    rng = random.Random(11)
    conversations = [
        {"id": f"c{i:05d}", "createdAt": format_instant(window.start + timedelta(seconds=rng.randrange(864_000)))}
        for i in range(20_000)
    ]
    server = Server(conversations, order="desc")
    steps = list_window(window, page_size=100)
    calls_before_first = None
    answer: Any = None
    while True:
        try:
            step = steps.send(answer)
        except StopIteration:
            break
        answer = None
        if isinstance(step, Found):
            calls_before_first = len(server.calls) if calls_before_first is None else calls_before_first
            continue
        answer = server.answer(step)
    assert calls_before_first is not None
    assert calls_before_first <= 4
    assert len(server.calls) <= 400  # ~267 pieces of 75 and the levels above them


def test_the_window_s_first_page_is_told_once_after_its_pieces_are_asked_for() -> None:
    window = day(0)
    server = Server(uniform(2000, window))
    parallel = Concurrent(server)
    answer = parallel.answer
    events: list[str] = []
    told: list[list[str]] = []
    early: list[asyncio.Future[None]] = []

    async def record(call: Any) -> Any:
        events.append("listing")
        return await answer(call)

    async def early_work() -> None:
        events.append("early")

    def on_cut(conversations: list[dict[str, Any]]) -> None:
        told.append([c["id"] for c in conversations])
        early.extend(asyncio.ensure_future(early_work()) for _ in conversations)

    async def collect() -> list[str]:
        return [c["id"] async for c in alist_window(window, record, ahead=8, on_cut=on_cut)]

    listed = asyncio.run(collect())
    assert listed == Server(uniform(2000, window)).list(window)
    assert len(told) == 1
    assert len(told[0]) == len(set(told[0])) == 100  # the first page: a page of conversations inside the window
    assert set(told[0]) <= set(listed)
    # The window's request, then the first 8 pieces' requests, and only then the caller's early work.
    assert events[:9] == ["listing"] * 9
    assert events.index("early") == 9


@pytest.mark.parametrize("conversations", [0, 50])
def test_a_window_that_fits_in_one_page_is_not_cut_and_nothing_is_told(conversations: int) -> None:
    window = day(0)
    told: list[Any] = []

    async def collect() -> list[str]:
        server = Concurrent(Server(uniform(conversations, window)))
        return [c["id"] async for c in alist_window(window, server.answer, ahead=8, on_cut=told.append)]

    assert len(asyncio.run(collect())) == conversations
    assert told == []
