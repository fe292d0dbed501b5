"""The sans-I/O protocol's drivers, the one page-size rule and the check's target (no HTTP)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import warnings
from collections.abc import Generator
from typing import Any

import pytest

from airflow_provider_auralytik.conversations import completed_check
from airflow_provider_auralytik.conversations.completed_check import CheckMemory, CheckResult, CheckTarget
from airflow_provider_auralytik.conversations.listing import MAX_PAGE_SIZE, Found, check_page_size
from airflow_provider_auralytik.conversations.sansio import (
    Call,
    ConversationCall,
    ConversationsApi,
    PageCall,
    answered,
    arun,
    make_call,
    passed_on,
    relay,
    run,
)
from airflow_provider_auralytik.exceptions import AuralytikNotFoundError
from airflow_provider_auralytik.hooks.auralytik import AuralytikHook


class Api:
    """The four methods the domain needs, answering from a dict (a missing id: 404)."""

    def __init__(self, conversations: dict[str, dict[str, Any]]) -> None:
        self.conversations = conversations
        self.calls: list[str] = []

    def get_conversations_page(self, **query: Any) -> dict[str, Any]:
        self.calls.append("page")
        data = list(self.conversations.values())
        return {"data": data, "page": 1, "pageSize": query.get("page_size"), "totalCount": len(data)}

    def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        self.calls.append(conversation_id)
        if conversation_id not in self.conversations:
            raise AuralytikNotFoundError(f"no {conversation_id}", status=404)
        return self.conversations[conversation_id]

    async def aget_conversations_page(self, **query: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        return self.get_conversations_page(**query)

    async def aget_conversation(self, conversation_id: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return self.get_conversation(conversation_id)


API = Api({"a": {"id": "a", "status": "completed"}})


def steps() -> Generator[Call | Found, Any, list[str]]:
    """Asks for a page, for a conversation that exists and one that does not (its 404 is an answer)."""
    page = yield PageCall({"page": 1, "page_size": 10})
    seen = [c["id"] for c in page["data"]]
    yield Found([{"id": "from-a-piece"}])
    seen.append((yield ConversationCall("a"))["status"])
    try:
        yield ConversationCall("gone")
    except AuralytikNotFoundError:
        seen.append("404 thrown in")
    return seen


def calls_only() -> Generator[Call, Any, list[str]]:
    result = yield from relay(steps(), passed_on(lambda found: None))
    return result


EXPECTED = ["a", "completed", "404 thrown in"]


def test_make_call_maps_each_call_to_the_api_method() -> None:
    api = Api({"a": {"id": "a"}})
    assert make_call(api, ConversationCall("a")) == {"id": "a"}
    assert make_call(api, PageCall({"page_size": 3}))["pageSize"] == 3
    assert asyncio.run(make_call(api, ConversationCall("a"), asynchronous=True)) == {"id": "a"}
    assert api.calls == ["a", "page", "a"]


def test_relay_answers_calls_and_yields_the_other_steps_out() -> None:
    driven = relay(steps(), answered(functools.partial(make_call, API)))
    assert next(driven) == Found([{"id": "from-a-piece"}])
    with pytest.raises(StopIteration) as stop:
        next(driven)
    assert stop.value.value == EXPECTED


def test_a_relay_passes_calls_on_to_its_own_driver() -> None:
    """A check runs a listing inside itself: the listing's calls go out to the check's driver."""
    assert run(calls_only(), functools.partial(make_call, API)) == EXPECTED
    assert asyncio.run(arun(calls_only(), functools.partial(make_call, API, asynchronous=True))) == EXPECTED


def test_an_error_the_steps_do_not_handle_ends_the_drive() -> None:
    def asks_for_a_missing_one() -> Generator[Call, Any, None]:
        yield ConversationCall("missing")

    with pytest.raises(AuralytikNotFoundError):
        run(asks_for_a_missing_one(), functools.partial(make_call, API))
    with pytest.raises(AuralytikNotFoundError):
        asyncio.run(arun(asks_for_a_missing_one(), functools.partial(make_call, API, asynchronous=True)))


def test_run_refuses_a_step_that_is_not_a_call() -> None:
    with pytest.raises(TypeError, match="run\\(\\) answers calls only"):
        run(steps(), functools.partial(make_call, API))  # type: ignore[arg-type]  # it yields Found too


def test_steps_with_nothing_to_ask_return_at_once() -> None:
    def nothing() -> Generator[Call, Any, str]:
        return "done"
        yield  # a generator

    assert run(nothing(), functools.partial(make_call, API)) == "done"


def test_the_hook_is_what_the_domain_needs() -> None:
    for name in ("get_conversations_page", "get_conversation", "aget_conversations_page", "aget_conversation"):
        protocol, hook = getattr(ConversationsApi, name), getattr(AuralytikHook, name)
        assert inspect.iscoroutinefunction(protocol) == inspect.iscoroutinefunction(hook)
        assert list(inspect.signature(protocol).parameters) == list(inspect.signature(hook).parameters)


@pytest.mark.parametrize("page_size", [1, 50, MAX_PAGE_SIZE])
def test_check_page_size_accepts(page_size: int) -> None:
    assert check_page_size(page_size) == page_size


@pytest.mark.parametrize("page_size", [0, MAX_PAGE_SIZE + 1, -1, True, 10.0, "10", None])
def test_check_page_size_refuses_in_one_line_naming_it(page_size: Any) -> None:
    with pytest.raises(ValueError, match=rf"^page_size must be an integer from 1 to {MAX_PAGE_SIZE}, not ") as info:
        check_page_size(page_size)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "values",
    [
        {"conversation_ids": ["a", "b"], "max_pending": 1},
        {"date_from": "2024-01-15T00:00:00Z", "date_to": "2024-01-16T00:00:00Z", "channel_id": "ch_sms"},
        {"date_from": "2024-01-15T01:00:00+01:00", "date_to": "2024-01-16T00:00:00Z", "campaign_id": ""},
    ],
)
def test_a_target_round_trips_through_plain_values(values: dict[str, Any]) -> None:
    target = CheckTarget.resolve(values)
    assert CheckTarget.resolve(target.as_dict()) == target


def test_a_target_is_checked_before_any_request() -> None:
    with pytest.raises(ValueError, match="max_pending must be an integer >= 0"):
        CheckTarget.resolve({"conversation_ids": ["a"], "max_pending": -1})
    with pytest.raises(ValueError, match="channel_id must be one value"):
        CheckTarget.resolve({"date_from": "2024-01-15T00:00:00Z", "date_to": "2024-01-16T00:00:00Z", "channel_id": []})
    with pytest.raises(TypeError, match="unexpected target arguments: status"):
        CheckTarget.resolve({"conversation_ids": ["a"], "status": "active"})


def test_a_target_of_ids_checks_them() -> None:
    result = run(
        CheckTarget.resolve({"conversation_ids": ["a"]}).check(CheckMemory()), functools.partial(make_call, API)
    )
    assert result == CheckResult(pending=0, total=1, requests=1)


@pytest.mark.parametrize(("old", "new"), [("Completion", CheckResult), ("CompletionMemory", CheckMemory)])
def test_the_old_names_still_work_with_a_warning(old: str, new: type) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert getattr(completed_check, old) is new
    assert any(issubclass(w.category, DeprecationWarning) and new.__name__ in str(w.message) for w in caught)
