"""Sandbox: the request span and most in flight it measures, and pre-encoded messages bodies."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests


def get(sandbox, path: str, **headers: str) -> requests.Response:
    return requests.get(
        f"{sandbox.url}{path}", headers={"Authorization": f"Bearer {sandbox.api_key}", **headers}, timeout=10
    )


def test_span_runs_from_the_first_request_to_the_last_answer_and_counts_most_in_flight(make_sandbox):
    sandbox = make_sandbox(latency_ms=100)
    ids = sandbox.conversations_in()[:8]
    assert sandbox.stats.span is None
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: get(sandbox, f"/conversations/{c}"), ids))
    stats = sandbox.stats
    snapshot = stats.snapshot()
    assert stats.max_in_flight == snapshot["max_in_flight"] >= 2
    assert snapshot["first_request_at"] == stats.first_request_at
    assert stats.first_request_at <= stats.last_request_at <= stats.last_answer_at
    # Every answer waits the latency: the span holds at least one.
    assert stats.span == stats.last_answer_at - stats.first_request_at >= 0.1
    sandbox.reset_stats()
    assert sandbox.stats.span is None
    assert sandbox.stats.snapshot()["last_answer_at"] is None


def test_preencoded_messages_are_the_same_bytes_and_cost_no_generation(make_sandbox, monkeypatch):
    sandbox = make_sandbox(pii_leak_rate=0.2)
    ids = sandbox.conversations_in()
    before = {c: get(sandbox, f"/conversations/{c}/messages", **{"X-Exclude-PII": "true"}).content for c in ids[:5]}
    assert sandbox.preencode_messages() == len(ids)
    import airflow_provider_auralytik.sandbox.server as server

    def no_generation(*args, **kwargs):
        raise AssertionError("generated although pre-encoded")

    monkeypatch.setattr(server, "generate_messages", no_generation)
    for conversation_id, body in before.items():
        assert get(sandbox, f"/conversations/{conversation_id}/messages", **{"X-Exclude-PII": "true"}).content == body
        assert json.loads(body)["messages"] == sandbox_messages(sandbox, conversation_id)
    sandbox.delete_conversation(ids[0])
    assert get(sandbox, f"/conversations/{ids[0]}/messages", **{"X-Exclude-PII": "true"}).status_code == 404


def sandbox_messages(sandbox, conversation_id):
    from airflow_provider_auralytik.sandbox import data

    return data.generate_messages(
        sandbox.config.seed,
        sandbox._data.by_id[conversation_id],
        exclude_pii=True,
        pii_leak_rate=sandbox.config.pii_leak_rate,
    )


def test_a_held_conversation_is_still_served_as_it_is_now(make_sandbox):
    sandbox = make_sandbox()
    conversation_id = sandbox.conversations_in()[0]
    sandbox.preencode_messages()
    full = json.loads(get(sandbox, f"/conversations/{conversation_id}/messages", **{"X-Exclude-PII": "true"}).content)
    sandbox.hold(conversation_id)
    held = json.loads(get(sandbox, f"/conversations/{conversation_id}/messages", **{"X-Exclude-PII": "true"}).content)
    assert len(held["messages"]) < len(full["messages"]) or len(full["messages"]) == 1


# ---------------------------------------------------------------------------------------------
# The asyncio server (benchmarks): same answers, faults and stats as the threaded one
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def both():
    from airflow_provider_auralytik.sandbox import Sandbox, SandboxConfig

    config = SandboxConfig(days=2, per_day=30, start="2026-03-01")
    with Sandbox(config) as threaded, Sandbox(config, asyncio_server=True) as loop:
        yield threaded, loop


def test_asyncio_server_answers_byte_for_byte_like_the_threaded_one(both):
    threaded, loop = both
    conversation_id = threaded.conversations_in()[3]
    paths = [
        "/conversations?dateFrom=2026-03-01T00:00:00Z&dateTo=2026-03-02T00:00:00Z&pageSize=10",
        f"/conversations/{conversation_id}",
        f"/conversations/{conversation_id}/messages",
        "/conversations/nope/messages",
        "/conversations?pageSize=1000",
    ]
    for path in paths:
        a, b = get(threaded, path, **{"X-Exclude-PII": "true"}), get(loop, path, **{"X-Exclude-PII": "true"})
        assert (a.status_code, a.content) == (b.status_code, b.content), path
    unauthorised = requests.get(f"{loop.url}/conversations", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert unauthorised.status_code == 401
    assert loop.stats.requests == len(paths) + 1


def test_asyncio_server_keeps_connections_counts_in_flight_and_injects_faults():
    from airflow_provider_auralytik.sandbox import Sandbox, SandboxConfig

    config = SandboxConfig(days=1, per_day=40, latency_ms=100, rate_5xx=0.2, rate_drop=0.2, rate_malformed=0.2)
    with Sandbox(config, asyncio_server=True) as sandbox, requests.Session() as session:
        ids = sandbox.conversations_in()[:24]
        headers = {"Authorization": f"Bearer {sandbox.api_key}"}

        def fetch(conversation_id: str) -> int:
            try:
                return session.get(
                    f"{sandbox.url}/conversations/{conversation_id}", headers=headers, timeout=10
                ).status_code
            except requests.ConnectionError:
                return 0  # a dropped connection

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(fetch, ids))
        stats = sandbox.stats
        assert stats.max_in_flight >= 4  # timers, not threads: answered concurrently
        assert stats.span is not None
        assert stats.span >= 0.1
        assert 0 in statuses
        assert any(s >= 500 for s in statuses)
        assert 200 in statuses
        assert sum(stats.faults.values()) > 0
        assert stats.connections < stats.requests + 1


def test_asyncio_server_answers_once_the_latency_has_passed_and_counts_the_answer_then():
    from airflow_provider_auralytik.sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(days=1, per_day=5, latency_ms=100), asyncio_server=True) as sandbox:
        conversation_id = sandbox.conversations_in()[0]
        started = time.monotonic()
        answer = requests.get(
            f"{sandbox.url}/conversations/{conversation_id}/messages",
            headers={"Authorization": f"Bearer {sandbox.api_key}"},
            timeout=10,
        )
        elapsed = time.monotonic() - started
        stats = sandbox.stats
    assert answer.status_code == 200
    assert answer.json()["messages"] == sandbox.messages(conversation_id)
    # Made on arrival, sent (and counted as answered) when the 100 ms have passed: never early.
    assert elapsed >= 0.1
    assert stats.span is not None
    assert 0.1 <= stats.span < 1.0
    assert stats.by_kind["messages"] == 1


def test_asyncio_server_refuses_trickling():
    from airflow_provider_auralytik.sandbox import Sandbox, SandboxConfig

    with pytest.raises(ValueError, match="trickle_every"):
        Sandbox(SandboxConfig(trickle_every=0.1), asyncio_server=True)


@pytest.mark.parametrize("asyncio_server", [False, True])
def test_hundreds_of_connections_opened_at_once_are_all_queued_while_the_server_is_busy(asyncio_server):
    # A client opening 256 connections at once (the hook's pool, at 256 in flight) must not overflow the
    # listening socket's queue while the server is busy: the kernel drops the SYNs beyond it, and the
    # client's TCP retries them only a second later (a 1 s stall in a benchmark of 0.6 s).
    import socket
    import threading

    from airflow_provider_auralytik.sandbox import Sandbox, SandboxConfig
    from airflow_provider_auralytik.sandbox.server import _AsyncServer, _Server

    busy = threading.Event()

    def stall() -> None:
        busy.set()
        time.sleep(1.5)

    with Sandbox(SandboxConfig(days=1, per_day=10, start="2026-03-01"), asyncio_server=asyncio_server) as sandbox:
        server = sandbox._server
        address = (sandbox.host, sandbox.port)
        if isinstance(server, _AsyncServer):
            server.loop.call_soon_threadsafe(stall)  # its loop accepts nothing meanwhile
        else:
            assert isinstance(server, _Server)
            accept = server.get_request

            def accept_late() -> tuple[socket.socket, Any]:
                stall()
                return accept()

            server.get_request = accept_late  # type: ignore[method-assign]  # the accept loop stalls once
            socket.create_connection(address, timeout=1).close()
        assert busy.wait(2)
        opened: list[socket.socket] = []
        refused: list[OSError] = []  # a SYN dropped: the connection would only be made a second later
        try:
            while len(opened) + len(refused) < 300 and not refused:
                try:
                    opened.append(socket.create_connection(address, timeout=0.5))
                except OSError as exc:
                    refused.append(exc)
        finally:
            for sock in opened:
                sock.close()
        assert len(opened) == 300
