"""The completion check (sans-IO): driven by hand, page by page, against a fake listing.

The fake listing below behaves like a server whose bounds rule can be chosen (``dateFrom`` and
``dateTo`` inclusive or exclusive), sorts newest first and pages by number, so each test can say
exactly which requests a check asks for and what it concludes from the answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests_mock

from airflow_provider_auralytik.hooks.auralytik import AuralytikHook, AuralytikNotFoundError
from airflow_provider_auralytik.utils.completion import (
    COMPLETED,
    Check,
    Completion,
    CompletionMemory,
    ConversationCall,
    PageCall,
    build_check,
    check_ids,
    check_window,
    run_async,
    run_sync,
)
from airflow_provider_auralytik.utils.listing import ConversationFilters
from airflow_provider_auralytik.utils.window import DateWindow, EmptyWindowError, format_instant, parse_instant

UTC = timezone.utc
START = datetime(2024, 1, 15, tzinfo=UTC)
END = datetime(2024, 1, 16, tzinfo=UTC)
WINDOW = DateWindow(START, END)
#: Long after the window: its one-second margins lie in the past.
LATER = datetime(2024, 2, 1, tzinfo=UTC)
NO_FILTERS = ConversationFilters()
BASE = "https://api.test/v1"
KEY = "completion-test-key"


# ---------------------------------------------------------------------------------------------
# A fake listing, and a driver that answers a check's calls from it
# ---------------------------------------------------------------------------------------------


def conv(cid: str, created: datetime | str, status: str = COMPLETED, **extra: Any) -> dict[str, Any]:
    created_text = created if isinstance(created, str) else format_instant(created)
    return {"id": cid, "status": status, "createdAt": created_text, "channelId": "ch_sms", **extra}


def spread(prefix: str, count: int, status: str = COMPLETED, *, pending: int = 0) -> list[dict[str, Any]]:
    """``count`` conversations spread inside the window (never on its edges); the first ``pending`` active."""
    step = (END - START - timedelta(seconds=2)) / max(count, 1)
    return [
        conv(f"{prefix}{i:05d}", START + timedelta(seconds=1) + step * i, "active" if i < pending else status)
        for i in range(count)
    ]


@dataclass
class FakeApi:
    """``GET /conversations`` and ``GET /conversations/{id}`` over a list, with a chosen bounds rule."""

    conversations: list[dict[str, Any]]
    from_inclusive: bool = True
    to_inclusive: bool = True
    calls: list[PageCall | ConversationCall] = field(default_factory=list)

    def page(
        self,
        *,
        page: int = 1,
        page_size: int = 100,
        status: str | None = None,
        date_from: datetime | str | None = None,
        date_to: datetime | str | None = None,
        channel_id: str | None = None,
        campaign_id: str | None = None,
    ) -> dict[str, Any]:
        low = parse_instant(date_from) if date_from is not None else None
        high = parse_instant(date_to) if date_to is not None else None

        def keep(c: dict[str, Any]) -> bool:
            created = parse_instant(c["createdAt"])
            if low is not None and (created < low or (created == low and not self.from_inclusive)):
                return False
            if high is not None and (created > high or (created == high and not self.to_inclusive)):
                return False
            if status is not None and c.get("status") != status:
                return False
            if channel_id is not None and c.get("channelId") != channel_id:
                return False
            return campaign_id is None or c.get("campaignId") == campaign_id

        matched = sorted(
            (c for c in self.conversations if keep(c)),
            key=lambda c: (-parse_instant(c["createdAt"]).timestamp(), c["id"]),
        )
        first = (page - 1) * page_size
        return {
            "data": matched[first : first + page_size],
            "page": page,
            "pageSize": page_size,
            "totalCount": len(matched),
        }

    def answer(self, call: PageCall | ConversationCall) -> dict[str, Any]:
        self.calls.append(call)
        if isinstance(call, PageCall):
            return self.page(**call.query)
        for c in self.conversations:
            if c["id"] == call.conversation_id:
                return c
        raise AuralytikNotFoundError(f"GET /conversations/{call.conversation_id} failed with HTTP 404", status=404)

    def run(self, check: Check) -> Completion:
        """Drive ``check`` to its end, answering each call (a 404 is thrown into the check)."""
        self.calls = []
        result: Completion | None = None
        try:
            call = next(check)
            while True:
                try:
                    answer = self.answer(call)
                except AuralytikNotFoundError as exc:
                    call = check.throw(exc)
                else:
                    call = check.send(answer)
        except StopIteration as stop:
            result = stop.value
        assert isinstance(result, Completion)
        assert result.requests == len(self.calls), "Completion.requests must count what was asked"
        return result

    def set_status(self, cid: str, status: str) -> None:
        next(c for c in self.conversations if c["id"] == cid)["status"] = status


def window_check(memory: CompletionMemory, now: datetime = LATER, filters: ConversationFilters = NO_FILTERS) -> Check:
    return check_window(WINDOW, filters, memory, now=now)


# Every combination of the server's unpublished boundary rules.
BOUNDS_RULES = pytest.mark.parametrize(
    ("from_inclusive", "to_inclusive"),
    [(True, True), (True, False), (False, True), (False, False)],
    ids=["from-incl,to-incl", "from-incl,to-excl", "from-excl,to-incl", "from-excl,to-excl"],
)


# ---------------------------------------------------------------------------------------------
# describe()
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "text"),
    [
        (Completion(pending=37, total=412, requests=2), "37 of 412 conversations not completed yet."),
        (Completion(pending=3, total=None, requests=2), "3 conversations not completed yet."),
        (Completion(pending=0, total=412, requests=2), "All 412 conversations are completed."),
        (Completion(pending=0, total=None, requests=2), "All conversations are completed."),
        (Completion(pending=0, total=0, requests=1), "All 0 conversations are completed."),
    ],
)
def test_describe(completion: Completion, text: str) -> None:
    assert completion.describe() == text
    assert completion.done is (completion.pending == 0)


# ---------------------------------------------------------------------------------------------
# check_window: small windows are decided from the data
# ---------------------------------------------------------------------------------------------


def test_small_window_is_decided_from_the_data_in_one_request() -> None:
    api = FakeApi(spread("c", 30, pending=3))
    completion = api.run(window_check(CompletionMemory()))

    assert (completion.pending, completion.total, completion.requests) == (3, 30, 1)
    assert sorted(completion.examples) == ["c00000", "c00001", "c00002"]
    assert completion.describe() == "3 of 30 conversations not completed yet."
    (call,) = api.calls
    assert isinstance(call, PageCall)
    # The window widened by a second on each side, every status, a full page.
    assert call.query == {
        "channel_id": None,
        "campaign_id": None,
        "status": None,
        "date_from": "2024-01-14T23:59:59Z",
        "date_to": "2024-01-16T00:00:01Z",
        "page": 1,
        "page_size": 100,
    }


@BOUNDS_RULES
def test_small_window_edges_are_exact(from_inclusive: bool, to_inclusive: bool) -> None:
    outside = [
        conv("at_end", END, "active"),  # date_to is excluded: must not count
        conv("before_start", START - timedelta(milliseconds=500), "active"),
    ]
    api = FakeApi([*spread("c", 10), *outside], from_inclusive, to_inclusive)
    completion = api.run(window_check(CompletionMemory()))
    assert (completion.done, completion.total, completion.requests) == (True, 10, 1)

    api.conversations.append(conv("at_start", START, "active"))  # date_from is included: must count
    completion = api.run(window_check(CompletionMemory()))
    assert (completion.pending, completion.total, completion.examples) == (1, 11, ("at_start",))


def test_small_window_empty_is_done() -> None:
    completion = FakeApi([]).run(window_check(CompletionMemory()))
    assert (completion.done, completion.total, completion.requests) == (True, 0, 1)


# ---------------------------------------------------------------------------------------------
# check_window: large windows cost a few requests whatever their size
# ---------------------------------------------------------------------------------------------


def test_large_window_all_completed_costs_two_requests() -> None:
    api = FakeApi(spread("c", 412))
    completion = api.run(window_check(CompletionMemory()))

    assert completion.done
    assert completion.requests == 2
    first, count = api.calls
    assert isinstance(first, PageCall)
    assert isinstance(count, PageCall)
    assert first.query["status"] is None
    assert first.query["page_size"] == 100
    # The second request only counts the completed ones: one item is enough.
    assert count.query["status"] == COMPLETED
    assert count.query["page_size"] == 1
    assert (count.query["date_from"], count.query["date_to"]) == ("2024-01-14T23:59:59Z", "2024-01-16T00:00:01Z")


def test_large_window_waiting_looks_at_the_margins_once_then_costs_two_requests() -> None:
    margins = [
        conv("m_end", END, "active"),  # outside, not completed: must not be counted as pending
        conv("m_start", START - timedelta(milliseconds=300)),
    ]
    api = FakeApi([*spread("c", 412, pending=37), *margins])
    memory = CompletionMemory()

    first = api.run(window_check(memory))
    assert (first.pending, first.total, first.done) == (37, 412, False)
    assert first.describe() == "37 of 412 conversations not completed yet."
    assert first.requests <= 4
    margin_bounds = [(c.query["date_from"], c.query["date_to"]) for c in api.calls[2:] if isinstance(c, PageCall)]
    assert len(margin_bounds) == 2
    # The margins looked at cover exactly what the widened query adds around the window.
    assert margin_bounds[0] == ("2024-01-14T23:59:59Z", "2024-01-15T00:00:00Z")
    assert parse_instant(margin_bounds[1][0]) <= END
    assert margin_bounds[1][1] == "2024-01-16T00:00:01Z"
    assert (memory.margin_pending, memory.margin_total) == (1, 2)

    for _ in range(3):
        later = api.run(window_check(memory))
        assert (later.pending, later.total, later.requests) == (37, 412, 2)

    for cid in [c["id"] for c in api.conversations if c["id"].startswith("c")][:37]:
        api.set_status(cid, COMPLETED)
    done = api.run(window_check(memory))
    # All completed inside; the active one at date_to is outside: done. The margin is looked at
    # again before saying so (it might have changed since it was remembered).
    assert done.done
    assert done.total == 412
    assert done.requests <= 4


def test_margins_in_the_future_are_not_remembered() -> None:
    api = FakeApi([*spread("c", 412, pending=5), conv("m_end", END, "active")])
    memory = CompletionMemory()
    just_after_end = END + timedelta(milliseconds=500)  # date_to + 1 s is still ahead
    for _ in range(2):
        completion = api.run(window_check(memory, now=just_after_end))
        assert (completion.pending, completion.total) == (5, 412)
        assert completion.requests == 4
        assert memory.margin_pending is None
        assert memory.margin_total is None


@BOUNDS_RULES
def test_not_completed_exactly_at_date_to_does_not_block(from_inclusive: bool, to_inclusive: bool) -> None:
    api = FakeApi([*spread("c", 412), conv("at_end", END, "active")], from_inclusive, to_inclusive)
    memory = CompletionMemory()
    for _ in range(3):  # and again with what was remembered
        completion = api.run(window_check(memory))
        assert completion.done, completion.describe()
        assert completion.total == 412
        assert completion.requests <= 4


@BOUNDS_RULES
def test_not_completed_exactly_at_date_from_blocks(from_inclusive: bool, to_inclusive: bool) -> None:
    api = FakeApi([*spread("c", 412), conv("at_start", START, "active")], from_inclusive, to_inclusive)
    memory = CompletionMemory()
    for _ in range(3):
        completion = api.run(window_check(memory))
        assert not completion.done
        assert (completion.pending, completion.total) == (1, 413)
        assert completion.requests <= 4


def test_remembered_margin_is_checked_again_before_done() -> None:
    """A remembered pending margin conversation that completes must not hide one still pending inside."""
    inside = conv("inside", START + timedelta(hours=5), "active")
    api = FakeApi([*spread("c", 200), inside, conv("at_end", END, "active")])
    memory = CompletionMemory()
    assert api.run(window_check(memory)).pending == 1
    assert memory.margin_pending == 1

    api.set_status("at_end", COMPLETED)  # the outside one completes, the inside one does not
    completion = api.run(window_check(memory))
    assert not completion.done
    assert completion.pending == 1

    api.set_status("inside", COMPLETED)
    assert api.run(window_check(memory)).done


def test_busy_margin_is_paged() -> None:
    busy_end = [conv(f"e{i:03d}", END, "active") for i in range(150)]  # 150 in the second at date_to
    api = FakeApi([*spread("c", 300), *busy_end])
    completion = api.run(window_check(CompletionMemory()))
    assert completion.done
    assert completion.total == 300
    assert completion.requests == 5  # listing, count, start margin, end margin in 2 pages
    pages = [c.query["page"] for c in api.calls if isinstance(c, PageCall)]
    assert pages == [1, 1, 1, 1, 2]


def test_filters_go_into_every_request() -> None:
    others = [conv(f"w{i:03d}", START + timedelta(minutes=i + 1), "active", channelId="ch_web") for i in range(50)]
    api = FakeApi([*spread("c", 300), *others])
    completion = api.run(window_check(CompletionMemory(), filters=ConversationFilters(channel_id="ch_sms")))
    assert completion.done
    assert all(isinstance(c, PageCall) and c.query["channel_id"] == "ch_sms" for c in api.calls)

    api.conversations.append(conv("late", START + timedelta(hours=3), "active", channelId="ch_sms"))
    completion = api.run(window_check(CompletionMemory(), filters=ConversationFilters(channel_id="ch_sms")))
    assert completion.pending == 1


def test_cost_does_not_grow_with_the_window() -> None:
    for size in (150, 1_500, 5_000):
        api = FakeApi(spread("c", size, pending=size // 10))
        memory = CompletionMemory()
        assert api.run(window_check(memory)).requests <= 4
        assert api.run(window_check(memory)).requests == 2
        for c in api.conversations:
            c["status"] = COMPLETED
        assert api.run(window_check(CompletionMemory())).requests == 2


# ---------------------------------------------------------------------------------------------
# check_ids
# ---------------------------------------------------------------------------------------------


def test_check_ids_fetches_each_id_once_and_remembers_completed_ones() -> None:
    api = FakeApi([conv("a", START), conv("b", START, "active"), conv("c", START)])
    memory = CompletionMemory()

    first = api.run(check_ids(["a", "b", "a", "c"], memory))
    assert (first.pending, first.total, first.examples, first.requests) == (1, 3, ("b",), 3)
    assert [c.conversation_id for c in api.calls if isinstance(c, ConversationCall)] == ["a", "b", "c"]
    assert memory.completed_ids == {"a", "c"}
    assert first.describe() == "1 of 3 conversations not completed yet."

    second = api.run(check_ids(["a", "b", "a", "c"], memory))
    assert [c.conversation_id for c in api.calls if isinstance(c, ConversationCall)] == ["b"]
    assert (second.pending, second.requests) == (1, 1)

    api.set_status("b", COMPLETED)
    third = api.run(check_ids(["a", "b", "c"], memory))
    assert (third.done, third.total, third.requests) == (True, 3, 1)
    # All known completed: nothing left to ask.
    assert api.run(check_ids(["a", "b", "c"], memory)).requests == 0


def test_check_ids_unknown_id_raises_a_clear_error() -> None:
    api = FakeApi([conv("a", START)])
    with pytest.raises(AuralytikNotFoundError, match="'conv_missing'") as info:
        api.run(check_ids(["a", "conv_missing"], CompletionMemory()))
    assert info.value.status == 404
    assert "conversation_ids" in str(info.value)


class NoCalls:
    """A hook that must not be used."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected call to hook.{name}")


def test_drivers_accept_a_check_with_nothing_to_ask() -> None:
    memory = CompletionMemory(completed_ids={"a", "b"})
    completion = run_sync(check_ids(["a", "b"], memory), NoCalls())
    assert (completion.done, completion.total, completion.requests) == (True, 2, 0)
    completion = asyncio.run(run_async(check_ids(["b", "a"], memory), NoCalls()))
    assert (completion.done, completion.total, completion.requests) == (True, 2, 0)


@pytest.fixture
def m(monkeypatch: pytest.MonkeyPatch) -> Iterator[requests_mock.Mocker]:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AURALYTIK_DEFAULT",
        json.dumps({"conn_type": "auralytik", "host": BASE, "password": KEY, "extra": {"max_retries": 0}}),
    )
    with requests_mock.Mocker(case_sensitive=True) as mocker:
        yield mocker


def test_run_sync_unknown_id_names_it(m: requests_mock.Mocker) -> None:
    m.get(f"{BASE}/conversations/conv_ok", json=conv("conv_ok", START))
    m.get(f"{BASE}/conversations/conv_404", status_code=404, json={"error": {"message": "not found"}})
    with pytest.raises(AuralytikNotFoundError) as info:
        run_sync(check_ids(["conv_ok", "conv_404"], CompletionMemory()), AuralytikHook())
    assert "'conv_404'" in str(info.value)
    assert "does not exist" in str(info.value)
    assert m.call_count == 2


def test_run_sync_window_over_http(m: requests_mock.Mocker) -> None:
    api = FakeApi([*spread("c", 250, pending=7), conv("at_end", END, "active")])

    def listing(request: Any, context: Any) -> dict[str, Any]:
        q = {k: v[0] for k, v in request.qs.items()}
        return api.page(
            page=int(q.get("page", 1)),
            page_size=int(q.get("pageSize", 25)),
            status=q.get("status"),
            date_from=q.get("dateFrom"),
            date_to=q.get("dateTo"),
        )

    m.get(f"{BASE}/conversations", json=listing)
    memory = CompletionMemory()
    completion = run_sync(build_check(memory, **WINDOW.as_dict()), AuralytikHook())
    assert (completion.pending, completion.total) == (7, 250)
    assert m.call_count == completion.requests == 4
    m.reset_mock()
    completion = run_sync(build_check(memory, **WINDOW.as_dict()), AuralytikHook())
    assert (completion.pending, m.call_count) == (7, 2)


# ---------------------------------------------------------------------------------------------
# build_check
# ---------------------------------------------------------------------------------------------


def test_build_check_prefers_ids_over_the_window() -> None:
    api = FakeApi([conv("a", START)])
    # The window would be refused (empty), but the ids are what is waited for.
    check = build_check(CompletionMemory(), conversation_ids=["a"], date_from=START, date_to=START)
    assert api.run(check).done
    assert isinstance(api.calls[0], ConversationCall)


def test_build_check_empty_window_is_refused() -> None:
    with pytest.raises(EmptyWindowError, match="CronDataIntervalTimetable"):
        build_check(CompletionMemory(), date_from="2024-01-15T00:00:00Z", date_to="2024-01-15T00:00:00Z")
    with pytest.raises(ValueError, match="date_from and date_to are required"):
        build_check(CompletionMemory(), date_from=None, date_to=END)


def test_build_check_passes_filters() -> None:
    check = build_check(CompletionMemory(), date_from=START, date_to=END, channel_id="ch_x", campaign_id="camp_y")
    call = next(check)
    assert isinstance(call, PageCall)
    assert (call.query["channel_id"], call.query["campaign_id"]) == ("ch_x", "camp_y")
    check.close()


def test_without_lasting_memory_a_waiting_check_skips_the_margins() -> None:
    # Reschedule mode: nothing survives to the next poke, so a margin look could never be reused.
    # A not-completed conversation seen inside the window already answers "not done".
    margins = [conv("m_end", END, "active")]
    inside = spread("c", 412)
    for c in inside[-37:]:  # the newest: on the first page of a newest-first listing
        c["status"] = "active"
    api = FakeApi([*inside, *margins])
    for _ in range(3):
        waiting = api.run(window_check(CompletionMemory(lasting=False)))
        assert waiting.requests == 2
        assert not waiting.done
        assert waiting.approximate
        # The counts include the margins' conversations (here: one active at date_to).
        assert (waiting.pending, waiting.total) == (38, 413)
        assert waiting.describe() == "~38 of ~413 conversations not completed yet."

    for c in inside[-37:]:
        api.set_status(c["id"], COMPLETED)
    done = api.run(window_check(CompletionMemory(lasting=False)))
    assert done.done  # still exact at the edges: the active one at date_to is outside
    assert not done.approximate


def test_an_empty_list_of_ids_names_nothing_to_wait_for() -> None:
    api = FakeApi([conv("a", START, "active")])
    completion = api.run(build_check(CompletionMemory(), conversation_ids=[], date_from=START, date_to=END))
    assert completion.done
    assert api.calls == []


def test_without_lasting_memory_the_margins_are_still_looked_at_when_the_first_page_shows_no_pending() -> None:
    # The pending ones are the oldest, not on the first page: only the margins can tell.
    api = FakeApi([*spread("c", 412, pending=37), conv("m_end", END, "active")])
    waiting = api.run(window_check(CompletionMemory(lasting=False)))
    assert (waiting.pending, waiting.total, waiting.approximate) == (37, 412, False)
    assert waiting.requests == 4
