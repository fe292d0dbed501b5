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

from airflow_provider_auralytik.conversations.completed_check import (
    COMPLETED,
    Check,
    CheckMemory,
    CheckResult,
    ConversationCall,
    PageCall,
    build_check,
    check_ids,
    check_window,
    run_async,
    run_sync,
)
from airflow_provider_auralytik.conversations.listing import ConversationFilters, CrowdedInstantError
from airflow_provider_auralytik.conversations.window import DateWindow, EmptyWindowError, format_instant, parse_instant
from airflow_provider_auralytik.hooks.auralytik import AuralytikHook, AuralytikNotFoundError
from airflow_provider_auralytik.sandbox.data import TOTAL_COUNT_MODES, reported_count

UTC = timezone.utc
START = datetime(2024, 1, 15, tzinfo=UTC)
END = datetime(2024, 1, 16, tzinfo=UTC)
WINDOW = DateWindow(START, END)
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
    #: What ``totalCount`` says (the sandbox's modes): the truth or a lie.
    count_mode: str = "honest"
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
        assert page == 1, "a window is never paged by number"
        data = matched[:page_size]
        total = reported_count(self.count_mode, len(matched), len(data), None)
        return {"data": data, "page": page, "pageSize": page_size, "totalCount": total}

    def answer(self, call: PageCall | ConversationCall) -> dict[str, Any]:
        self.calls.append(call)
        if isinstance(call, PageCall):
            return self.page(**call.query)
        for c in self.conversations:
            if c["id"] == call.conversation_id:
                return c
        raise AuralytikNotFoundError(f"GET /conversations/{call.conversation_id} failed with HTTP 404", status=404)

    def run(self, check: Check) -> CheckResult:
        """Drive ``check`` to its end, answering each call (a 404 is thrown into the check)."""
        self.calls = []
        result: CheckResult | None = None
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
        assert isinstance(result, CheckResult)
        assert result.requests == len(self.calls), "CheckResult.requests must count what was asked"
        return result

    def set_status(self, cid: str, status: str) -> None:
        next(c for c in self.conversations if c["id"] == cid)["status"] = status


def window_check(memory: CheckMemory, filters: ConversationFilters = NO_FILTERS) -> Check:
    return check_window(WINDOW, filters, memory)


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
        (CheckResult(pending=37, total=412, requests=2), "37 of 412 conversations not completed yet."),
        (CheckResult(pending=3, total=None, requests=2), "3 conversations not completed yet."),
        (CheckResult(pending=3, total=None, requests=1, at_least=True), "At least 3 conversations not completed yet."),
        (CheckResult(pending=0, total=412, requests=2), "All 412 conversations are completed."),
        (CheckResult(pending=0, total=None, requests=2), "All conversations are completed."),
        (CheckResult(pending=0, total=0, requests=1), "All 0 conversations are completed."),
    ],
)
def test_describe(completion: CheckResult, text: str) -> None:
    assert completion.describe() == text
    assert completion.done is (completion.pending == 0)


# ---------------------------------------------------------------------------------------------
# check_window: small windows are decided from the data
# ---------------------------------------------------------------------------------------------


def test_small_window_is_decided_from_the_data_in_one_request() -> None:
    api = FakeApi(spread("c", 30, pending=3))
    completion = api.run(window_check(CheckMemory()))

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
    completion = api.run(window_check(CheckMemory()))
    assert (completion.done, completion.total, completion.requests) == (True, 10, 1)

    api.conversations.append(conv("at_start", START, "active"))  # date_from is included: must count
    completion = api.run(window_check(CheckMemory()))
    assert (completion.pending, completion.total, completion.examples) == (1, 11, ("at_start",))


def test_small_window_empty_is_done() -> None:
    completion = FakeApi([]).run(window_check(CheckMemory()))
    assert (completion.done, completion.total, completion.requests) == (True, 0, 1)


# ---------------------------------------------------------------------------------------------
# check_window: large windows. "Not done" is proven from data, cheaply; "done" only after an exact
# listing, whatever totalCount says.
# ---------------------------------------------------------------------------------------------


def test_pending_on_the_first_page_is_not_done_in_one_request() -> None:
    inside = spread("c", 412)
    for c in inside[-5:]:  # the newest: on the first page of a newest-first listing
        c["status"] = "active"
    completion = FakeApi(inside).run(window_check(CheckMemory()))
    assert (completion.done, completion.pending, completion.at_least, completion.requests) == (False, 5, True, 1)
    assert completion.describe() == "At least 5 conversations not completed yet."


def test_pending_off_the_first_page_is_found_by_a_status_page() -> None:
    api = FakeApi(spread("c", 412, pending=37))  # the oldest are active: not on the first page
    completion = api.run(window_check(CheckMemory()))
    assert (completion.done, completion.requests) == (False, 2)
    probe = api.calls[1]
    assert isinstance(probe, PageCall)
    assert (probe.query["status"], probe.query["page_size"]) == ("active", 100)


def test_all_completed_is_verified_by_an_exact_listing() -> None:
    api = FakeApi(spread("c", 412))
    completion = api.run(window_check(CheckMemory()))
    assert (completion.done, completion.total) == (True, 412)
    assert 2 + 412 / 100 < completion.requests <= 2 + 2 * (412 / 75 + 1)
    assert all(isinstance(c, PageCall) and c.query["page"] == 1 for c in api.calls)


@pytest.mark.parametrize("count_mode", TOTAL_COUNT_MODES)
def test_never_fooled_into_done_whatever_the_count_says(count_mode: str) -> None:
    # Three conversations of a status never seen before, the oldest of the window: neither the first
    # page nor the status pages show them; only the exact listing does.
    inside = spread("c", 412)
    for c in inside[:3]:
        c["status"] = "escalated"
    api = FakeApi(inside, count_mode=count_mode)
    memory = CheckMemory()
    first = api.run(window_check(memory))
    assert (first.done, first.pending, first.total) == (False, 3, 412)
    assert sorted(first.examples) == ["c00000", "c00001", "c00002"]
    # Learned: the next waiting check is cheap.
    assert "escalated" in memory.pending_statuses
    again = api.run(window_check(memory))
    assert not again.done
    assert again.requests <= 3
    for c in inside[:3]:
        c["status"] = COMPLETED
    assert api.run(window_check(memory)).done


@pytest.mark.parametrize("count_mode", TOTAL_COUNT_MODES)
def test_active_inside_never_done_under_any_count(count_mode: str) -> None:
    api = FakeApi(spread("c", 412, pending=3), count_mode=count_mode)
    completion = api.run(window_check(CheckMemory()))
    assert not completion.done


@BOUNDS_RULES
def test_large_window_not_completed_just_outside_does_not_block(from_inclusive: bool, to_inclusive: bool) -> None:
    outside = [conv("m_end", END, "active"), conv("m_start", START - timedelta(milliseconds=300), "active")]
    api = FakeApi([*spread("c", 412), *outside], from_inclusive, to_inclusive)
    completion = api.run(window_check(CheckMemory()))
    assert (completion.done, completion.total) == (True, 412)


@BOUNDS_RULES
def test_large_window_not_completed_exactly_at_date_from_blocks(from_inclusive: bool, to_inclusive: bool) -> None:
    api = FakeApi([*spread("c", 412), conv("at_start", START, "pending")], from_inclusive, to_inclusive)
    completion = api.run(window_check(CheckMemory()))
    assert (completion.done, completion.examples) == (False, ("at_start",))


def test_crowded_instant_next_to_the_window_fails_clearly() -> None:
    # 150 conversations created exactly at date_to: no query tells them from the window's last
    # microsecond on a server whose dateTo is inclusive; the check says so rather than guess.
    api = FakeApi([*spread("c", 300), *(conv(f"e{i:03d}", END, "active") for i in range(150))])
    with pytest.raises(CrowdedInstantError, match="2024-01-16T00:00:00Z"):
        api.run(window_check(CheckMemory()))


def test_filters_go_into_every_request() -> None:
    others = [conv(f"w{i:03d}", START + timedelta(minutes=i + 1), "active", channelId="ch_web") for i in range(50)]
    api = FakeApi([*spread("c", 300), *others])
    completion = api.run(window_check(CheckMemory(), filters=ConversationFilters(channel_id="ch_sms")))
    assert completion.done
    assert all(isinstance(c, PageCall) and c.query["channel_id"] == "ch_sms" for c in api.calls)

    api.conversations.append(conv("late", START + timedelta(hours=3), "active", channelId="ch_sms"))
    completion = api.run(window_check(CheckMemory(), filters=ConversationFilters(channel_id="ch_sms")))
    assert completion.pending == 1


def test_waiting_cost_does_not_grow_with_the_window() -> None:
    for size in (150, 1_500, 5_000):
        api = FakeApi(spread("c", size, pending=size // 10))
        memory = CheckMemory()
        assert api.run(window_check(memory)).requests <= 2
        assert api.run(window_check(memory)).requests <= 2


@pytest.mark.parametrize(
    ("created", "shown"), [("2024-01-15T10:00:00", "'2024-01-15T10:00:00'"), ("soon", "'soon'"), (None, "None")]
)
def test_created_at_that_cannot_be_placed_fails_naming_id_and_value(created: Any, shown: str) -> None:
    bad = {"id": "conv_bad", "status": COMPLETED, "createdAt": created}
    api = FakeApi(spread("c", 30))
    page = {"data": [bad, *spread("c", 3)], "page": 1, "pageSize": 100, "totalCount": 4}
    api.page = lambda **query: page  # type: ignore[method-assign]  # a server answering a bad createdAt
    with pytest.raises(ValueError, match="conv_bad") as info:
        api.run(window_check(CheckMemory()))
    assert f"createdAt={shown}" in str(info.value)


# ---------------------------------------------------------------------------------------------
# check_ids
# ---------------------------------------------------------------------------------------------


def test_check_ids_fetches_each_id_once_and_remembers_completed_ones() -> None:
    api = FakeApi([conv("a", START), conv("b", START, "active"), conv("c", START)])
    memory = CheckMemory()

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
        api.run(check_ids(["a", "conv_missing"], CheckMemory()))
    assert info.value.status == 404
    assert "conversation_ids" in str(info.value)


class NoCalls:
    """A hook that must not be used."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected call to hook.{name}")


def test_drivers_accept_a_check_with_nothing_to_ask() -> None:
    memory = CheckMemory(completed_ids={"a", "b"})
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
        run_sync(check_ids(["conv_ok", "conv_404"], CheckMemory()), AuralytikHook())
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
    memory = CheckMemory()
    completion = run_sync(build_check(memory, **dict[str, Any](WINDOW.as_dict())), AuralytikHook())
    assert (completion.pending, completion.total, completion.at_least) == (7, None, True)
    assert m.call_count == completion.requests == 2
    m.reset_mock()
    completion = run_sync(build_check(memory, **dict[str, Any](WINDOW.as_dict())), AuralytikHook())
    assert (completion.pending, m.call_count) == (7, 2)


# ---------------------------------------------------------------------------------------------
# build_check
# ---------------------------------------------------------------------------------------------


def test_build_check_prefers_ids_over_the_window() -> None:
    api = FakeApi([conv("a", START)])
    # The window would be refused (empty), but the ids are what is waited for.
    check = build_check(CheckMemory(), conversation_ids=["a"], date_from=START, date_to=START)
    assert api.run(check).done
    assert isinstance(api.calls[0], ConversationCall)


def test_build_check_empty_window_is_refused() -> None:
    with pytest.raises(EmptyWindowError, match="CronDataIntervalTimetable"):
        build_check(CheckMemory(), date_from="2024-01-15T00:00:00Z", date_to="2024-01-15T00:00:00Z")
    with pytest.raises(ValueError, match="no data interval"):
        build_check(CheckMemory(), date_from=None, date_to=END)


def test_build_check_passes_filters() -> None:
    check = build_check(CheckMemory(), date_from=START, date_to=END, channel_id="ch_x", campaign_id="camp_y")
    call = next(check)
    assert isinstance(call, PageCall)
    assert (call.query["channel_id"], call.query["campaign_id"]) == ("ch_x", "camp_y")
    check.close()


def test_an_empty_list_of_ids_names_nothing_to_wait_for() -> None:
    api = FakeApi([conv("a", START, "active")])
    completion = api.run(build_check(CheckMemory(), conversation_ids=[], date_from=START, date_to=END))
    assert completion.done
    assert api.calls == []


@pytest.mark.parametrize(
    "ids",
    [["a", ""], ["a", "  "], ["a", None], [1, 2], "conv_1", {"a": 1}, 42],
    ids=["empty", "blank", "none", "ints", "string", "dict", "int"],
)
def test_build_check_refuses_bad_conversation_ids_before_any_request(ids: Any) -> None:
    with pytest.raises(ValueError, match="conversation_ids must be a list of non-empty strings"):
        build_check(CheckMemory(), conversation_ids=ids)
