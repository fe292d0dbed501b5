"""AuralytikConversationsCompletedTrigger: serialisation, and its run loop over real HTTP against the sandbox.

Each run is bounded with ``asyncio.wait_for`` so that a trigger which hangs fails the test quickly.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator
from datetime import date, datetime, timezone
from typing import Any

import pytest

from airflow_provider_auralytik._compat import TriggerEvent
from airflow_provider_auralytik.sandbox import Sandbox, SandboxConfig
from airflow_provider_auralytik.triggers.conversations import AuralytikConversationsCompletedTrigger
from tests.fixtures.sandbox import SMALL_SANDBOX, MakeSandbox

UTC = timezone.utc
DAY = date(2024, 1, 15)
DATE_FROM = "2024-01-15T00:00:00Z"
DATE_TO = "2024-01-16T00:00:00Z"
CONN_ENV = "AIRFLOW_CONN_AURALYTIK_DEFAULT"
#: Quick retries for the tests: the hook reads these extras from the connection.
FAST_RETRIES = {"max_retries": 2, "backoff_base": 0.01, "backoff_max": 0.05, "timeout": 5}


def set_conn(monkeypatch: pytest.MonkeyPatch, url: str, key: str, **extra: Any) -> None:
    fields: dict[str, Any] = {"conn_type": "auralytik", "host": url, "password": key}
    if extra:
        fields["extra"] = extra
    monkeypatch.setenv(CONN_ENV, json.dumps(fields))


def window_trigger(**kwargs: Any) -> AuralytikConversationsCompletedTrigger:
    return AuralytikConversationsCompletedTrigger(date_from=DATE_FROM, date_to=DATE_TO, poll_interval=0.2, **kwargs)


async def first_event(trigger: AuralytikConversationsCompletedTrigger, timeout: float = 10.0) -> TriggerEvent:
    """The trigger's first event; fails (instead of hanging) after ``timeout`` seconds."""
    events: AsyncIterator[TriggerEvent] = trigger.run()
    try:
        return await asyncio.wait_for(events.__anext__(), timeout)
    finally:
        await events.aclose()  # type: ignore[attr-defined]  # typed AsyncIterator, really an async generator


def log_text(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    """What went through stdlib logging plus what Airflow's structlog printed."""
    out, err = capfd.readouterr()
    return caplog.text + out + err


def assert_plain_json(payload: Any) -> None:
    assert json.loads(json.dumps(payload)) == payload


# ---------------------------------------------------------------------------------------------
# Serialisation
# ---------------------------------------------------------------------------------------------


def test_serialize_round_trip_is_plain_and_never_holds_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "https://api.test/v1", "secret-key-never-serialised")
    trigger = AuralytikConversationsCompletedTrigger(
        auralytik_conn_id="my_auralytik",
        date_from=DATE_FROM,
        date_to=DATE_TO,
        channel_id="ch_sms",
        campaign_id="camp_001",
        poll_interval=30,
    )
    classpath, kwargs = trigger.serialize()

    module_name, _, class_name = classpath.rpartition(".")
    assert getattr(importlib.import_module(module_name), class_name) is AuralytikConversationsCompletedTrigger
    assert kwargs == {
        "auralytik_conn_id": "my_auralytik",
        "conversation_ids": None,
        "date_from": DATE_FROM,
        "date_to": DATE_TO,
        "channel_id": "ch_sms",
        "campaign_id": "camp_001",
        "max_pending": 0,
        "poll_interval": 30.0,
    }
    text = json.dumps(kwargs)
    assert "secret-key" not in text
    assert "api.test" not in text  # only the connection id: the host and key are read in the triggerer

    again = AuralytikConversationsCompletedTrigger(**json.loads(text))
    assert again.serialize() == (classpath, kwargs)


def test_serialize_ids() -> None:
    trigger = AuralytikConversationsCompletedTrigger(conversation_ids=["conv_1", "conv_2"], poll_interval=1)
    _, kwargs = trigger.serialize()
    assert kwargs["conversation_ids"] == ["conv_1", "conv_2"]
    assert json.loads(json.dumps(kwargs)) == kwargs


# ---------------------------------------------------------------------------------------------
# run() against the sandbox
# ---------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_window_fires_success_once_conversations_complete(
    make_sandbox: MakeSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = make_sandbox(days=1, per_day=300, start=DAY, complete_within=2)
    set_conn(monkeypatch, sandbox.url, sandbox.api_key)
    ids = sandbox.conversations_in(DATE_FROM, DATE_TO)
    assert len(ids) == 300
    last_completion = max(sandbox.completion_time(cid) for cid in ids)
    assert last_completion > datetime.now(UTC), "the test needs conversations still active at the start"

    event = await first_event(window_trigger(), timeout=15)

    assert datetime.now(UTC) >= last_completion
    assert event.payload == {
        "status": "success",
        "message": "All 300 conversations are completed.",
        "pending": 0,
        "total": 300,
    }
    assert_plain_json(event.payload)
    polls = sandbox.stats.by_kind["list"]
    # Polled every 0.2 s for ~2 s: several polls, each a few requests.
    assert 4 <= polls <= 60
    assert sandbox.stats.by_status == {200: polls}


@pytest.mark.asyncio
async def test_ids_fire_success_once_completed(
    make_sandbox: MakeSandbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    sandbox = make_sandbox(days=1, per_day=40, start=DAY, complete_within=1.5)
    set_conn(monkeypatch, sandbox.url, sandbox.api_key)
    ids = sandbox.conversations_in(DATE_FROM, DATE_TO)[:5]
    last_completion = max(sandbox.completion_time(cid) for cid in ids)
    trigger = AuralytikConversationsCompletedTrigger(conversation_ids=ids, poll_interval=0.2)

    with caplog.at_level(logging.INFO):
        event = await first_event(trigger, timeout=10)

    assert datetime.now(UTC) >= last_completion
    assert event.payload == {
        "status": "success",
        "message": "All 5 conversations are completed.",
        "pending": 0,
        "total": 5,
    }
    polls = 1 + log_text(caplog, capfd).count("conversations not completed yet")
    assert polls >= 3
    # An id seen completed is not asked again: fewer GETs than 5 per poll.
    assert sandbox.stats.by_kind["get"] < 5 * polls
    assert sandbox.stats.by_kind["list"] == 0


@pytest.mark.asyncio
async def test_logs_say_what_is_missing_never_the_key(
    make_sandbox: MakeSandbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    sandbox = make_sandbox(days=1, per_day=200, start=DAY, complete_within=3, api_key="trigger-secret-api-key")
    set_conn(monkeypatch, sandbox.url, sandbox.api_key)
    with caplog.at_level(logging.INFO):
        event = await first_event(window_trigger(), timeout=10)
    assert event.payload["status"] == "success"
    text = log_text(caplog, capfd)
    # On Airflow 3.0 a line reaches both caplog and stdout (its root handler): count each once.
    # A waiting poll stops at the first proof of "not done": it logs how many it saw, a lower bound.
    waiting = re.findall(r"At least (\d+) conversations not completed yet\.", text)
    assert len(waiting) >= 2, "each waiting poll logs what is still missing"
    assert all(0 < int(pending) <= 200 for pending in waiting)
    assert event.payload["message"] == "All 200 conversations are completed."
    assert "trigger-secret-api-key" not in text


@pytest.mark.asyncio
@pytest.mark.parametrize("count_mode", ["zero", "page", "half", "stale"])
async def test_never_fires_success_with_active_conversations_whatever_the_count(
    make_sandbox: MakeSandbox, monkeypatch: pytest.MonkeyPatch, count_mode: str
) -> None:
    sandbox = make_sandbox(days=1, per_day=300, start=DAY, total_count_mode=count_mode)
    set_conn(monkeypatch, sandbox.url, sandbox.api_key, **FAST_RETRIES)
    for conversation_id in sorted(sandbox.conversations_in(DATE_FROM, DATE_TO))[:3]:  # oldest, unseen status
        record = sandbox._data.by_id[conversation_id]
        record.fixed, record._json_completed = True, None
        record.fields["status"] = "escalated"
    with pytest.raises(TimeoutError):
        await first_event(window_trigger(), timeout=1.5)
    assert sandbox.stats.requests > 3  # it did poll, and listed the window to find them


@pytest.mark.asyncio
async def test_wrong_key_ends_with_an_error_event(make_sandbox: MakeSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = make_sandbox(**SMALL_SANDBOX)
    set_conn(monkeypatch, sandbox.url, "a-wrong-key-value", **FAST_RETRIES)
    started = time.monotonic()

    event = await first_event(window_trigger(), timeout=10)

    assert time.monotonic() - started < 5
    assert event.payload["status"] == "error"
    assert "401" in event.payload["message"]
    assert "a-wrong-key-value" not in event.payload["message"]
    assert_plain_json(event.payload)
    assert sandbox.stats.by_status == {401: 1}  # a refused key is not retried


@pytest.mark.asyncio
async def test_unknown_conversation_id_ends_with_an_error_event(
    make_sandbox: MakeSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = make_sandbox(days=1, per_day=10, start=DAY)
    set_conn(monkeypatch, sandbox.url, sandbox.api_key, **FAST_RETRIES)
    known = sandbox.conversations_in(DATE_FROM, DATE_TO)[0]
    trigger = AuralytikConversationsCompletedTrigger(conversation_ids=[known, "conv_nope"], poll_interval=0.2)

    event = await first_event(trigger, timeout=10)

    assert event.payload["status"] == "error"
    assert "'conv_nope'" in event.payload["message"]
    assert_plain_json(event.payload)


@pytest.mark.asyncio
async def test_empty_window_ends_with_an_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "http://127.0.0.1:9/v1", "k")
    trigger = AuralytikConversationsCompletedTrigger(date_from=DATE_FROM, date_to=DATE_FROM, poll_interval=0.2)
    event = await first_event(trigger, timeout=5)
    assert event.payload["status"] == "error"
    assert "CronDataIntervalTimetable" in event.payload["message"]


@pytest.mark.asyncio
async def test_missing_connection_ends_with_an_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_AURALYTIK_NOWHERE", raising=False)
    trigger = AuralytikConversationsCompletedTrigger(
        auralytik_conn_id="auralytik_nowhere", conversation_ids=["conv_1"], poll_interval=0.2
    )
    event = await first_event(trigger, timeout=5)
    assert event.payload["status"] == "error"
    assert "auralytik_nowhere" in event.payload["message"]
    assert_plain_json(event.payload)


@pytest.mark.asyncio
async def test_server_errors_are_retried(make_sandbox: MakeSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = make_sandbox(days=1, per_day=300, start=DAY, complete_within=1, rate_5xx=0.5)
    set_conn(monkeypatch, sandbox.url, sandbox.api_key, **FAST_RETRIES)

    event = await first_event(window_trigger(), timeout=15)

    assert event.payload["status"] == "success"
    assert event.payload["total"] == 300
    assert sandbox.stats.faults["5xx"] >= 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.asyncio
async def test_server_stopped_then_restarted_is_waited_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """The API goes away mid-wait, longer than the hook's retries: the trigger polls again, no error."""
    port = free_port()
    config: dict[str, Any] = {"days": 1, "per_day": 150, "start": DAY}
    first = Sandbox(SandboxConfig(**config, complete_within=600), port=port).start()
    second = Sandbox(SandboxConfig(**config), port=port)  # everything completed
    set_conn(monkeypatch, first.url, first.api_key, **FAST_RETRIES)
    try:
        with caplog.at_level(logging.WARNING):
            waiting = asyncio.ensure_future(first_event(window_trigger(), timeout=15))
            await asyncio.sleep(0.5)
            assert first.stats.by_kind["list"] >= 2, "the trigger polled the first server"
            assert not waiting.done()
            first.stop()
            await asyncio.sleep(1.0)  # several polls fail after their retries
            assert not waiting.done(), "a transient outage must not end the wait"
            second.start()
            event = await waiting
        assert event.payload["status"] == "success"
        assert event.payload["total"] == 150
        assert second.stats.by_kind["list"] >= 2
        assert "Polling again" in log_text(caplog, capfd)
    finally:
        first.stop()
        second.stop()
