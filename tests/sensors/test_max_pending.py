"""max_pending: the sensor and its trigger stop waiting when at most N conversations are not completed.

Over real HTTP against the sandbox, with conversations held active on demand (no wall clock), for windows
of one page and of several pages, whatever the sandbox's ``totalCount`` says.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from airflow_provider_auralytik.conversations.completed_check import CheckResult
from airflow_provider_auralytik.sensors.conversations import AuralytikConversationsCompletedSensor
from airflow_provider_auralytik.triggers.conversations import AuralytikConversationsCompletedTrigger
from tests.fixtures.sandbox import MakeSandbox
from tests.triggers.test_conversations import DATE_FROM, DATE_TO, DAY, first_event, log_text, set_conn


def held_sandbox(make_sandbox: MakeSandbox, monkeypatch: pytest.MonkeyPatch, held: int, **config: Any) -> Any:
    """One day of conversations, ``held`` of them (spread over the day) still active."""
    sandbox = make_sandbox(days=1, start=DAY, **config)
    day = sandbox.conversations_in(DATE_FROM, DATE_TO)
    sandbox.hold(*day[:: max(1, len(day) // 8)][:held])
    assert len(sandbox.held_ids) == held
    set_conn(monkeypatch, sandbox.url, sandbox.api_key)
    return sandbox


def sensor(**kwargs: Any) -> AuralytikConversationsCompletedSensor:
    return AuralytikConversationsCompletedSensor(task_id="wait", date_from=DATE_FROM, date_to=DATE_TO, **kwargs)


@pytest.mark.parametrize("per_day", [40, 450])  # one page; several (probes, then an exact listing)
@pytest.mark.parametrize("count_mode", ["honest", "zero", "page", "stale", "plus1000"])
@pytest.mark.parametrize(("held", "done"), [(2, True), (3, True), (4, False), (6, False)])
def test_the_sensor_is_done_with_at_most_max_pending_not_completed(
    make_sandbox, monkeypatch, caplog, capfd, per_day, count_mode, held, done
):
    sandbox = held_sandbox(make_sandbox, monkeypatch, held, per_day=per_day, total_count_mode=count_mode)
    with caplog.at_level(logging.INFO):
        assert sensor(max_pending=3).poke({}) is done
    text = log_text(caplog, capfd)
    assert "conversations not completed yet" in text
    assert any(cid in text for cid in sandbox.held_ids)  # a few ids, for whoever reads the log
    if done:
        assert ": done, max_pending=3 allows them." in text
        if per_day > 100:  # "done" is never said on a count: the window was listed exactly
            assert sandbox.stats.by_kind["list"] >= 450 // 100
    else:
        assert "more than max_pending=3" in text


def test_without_max_pending_one_active_conversation_keeps_it_waiting(make_sandbox, monkeypatch):
    held_sandbox(make_sandbox, monkeypatch, 1, per_day=450)
    assert sensor().poke({}) is False
    assert sensor(max_pending=1).poke({}) is True


def test_conversation_ids_with_max_pending(make_sandbox, monkeypatch):
    sandbox = held_sandbox(make_sandbox, monkeypatch, 2, per_day=40)
    named = [*sandbox.held_ids, *sandbox.conversations_in(DATE_FROM, DATE_TO)[1:4]]
    assert sensor(conversation_ids=named, max_pending=2).poke({}) is True
    assert sensor(conversation_ids=named, max_pending=1).poke({}) is False


@pytest.mark.parametrize("value", [-1, True, 1.5, "3", None])
def test_max_pending_must_be_a_count(value):
    with pytest.raises(ValueError, match="max_pending must be an integer >= 0"):
        sensor(max_pending=value)


def test_deferring_hands_max_pending_to_the_trigger():
    trigger = AuralytikConversationsCompletedTrigger(date_from=DATE_FROM, date_to=DATE_TO, max_pending=3)
    _, kwargs = trigger.serialize()
    assert kwargs["max_pending"] == 3
    assert AuralytikConversationsCompletedTrigger(**kwargs).max_pending == 3
    target = sensor(max_pending=3)._target().as_dict()
    assert target["max_pending"] == 3


@pytest.mark.asyncio
async def test_the_trigger_fires_once_at_most_max_pending_remain(make_sandbox, monkeypatch):
    sandbox = held_sandbox(make_sandbox, monkeypatch, 4, per_day=450)
    trigger = AuralytikConversationsCompletedTrigger(
        date_from=DATE_FROM, date_to=DATE_TO, max_pending=3, poll_interval=0.2
    )
    events = trigger.run()
    waiting = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(1.0)  # a few polls
    assert not waiting.done()
    sandbox.complete(sandbox.held_ids[0])
    event = await asyncio.wait_for(waiting, 15)
    await events.aclose()  # type: ignore[attr-defined]  # run() is an async generator
    assert event.payload["status"] == "success"
    assert event.payload["pending"] == 3
    assert "done, max_pending=3" in event.payload["message"]
    assert all(cid in event.payload["message"] for cid in sandbox.held_ids)


@pytest.mark.asyncio
async def test_the_trigger_with_max_pending_zero_still_waits_for_all(make_sandbox, monkeypatch):
    held_sandbox(make_sandbox, monkeypatch, 1, per_day=40)
    with pytest.raises(asyncio.TimeoutError):
        await first_event(
            AuralytikConversationsCompletedTrigger(date_from=DATE_FROM, date_to=DATE_TO, poll_interval=0.2), 1.0
        )


@pytest.mark.parametrize(
    ("completion", "text"),
    [
        (CheckResult(0, 10, 1, max_pending=3), "All 10 conversations are completed."),
        (
            CheckResult(2, 10, 1, ("a", "b"), max_pending=3),
            "2 of 10 conversations not completed yet: done, max_pending=3 allows them. Not completed: a, b.",
        ),
        (
            CheckResult(7, None, 2, ("a", "b"), at_least=True, max_pending=3),
            "At least 7 conversations not completed yet, more than max_pending=3. Not completed: a, b, ….",
        ),
    ],
)
def test_describe_with_ids(completion, text):
    assert completion.describe(ids=True) == text
    assert completion.done is (completion.pending <= 3 and not completion.at_least)
