"""``timeout`` bounds a whole request, connect to last byte, on the sync and the async path.

Against the sandbox over real HTTP, trickling every body one byte every 0.3 s: ``requests``' own
timeout is per socket read, so without a deadline one conversation (~300 bytes) would take
~90 s per attempt. Timed assertions are what this behaviour is about; margins are generous.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_provider_auralytik.hooks.auralytik import AuralytikHook, AuralytikUnavailableError
from tests.conftest import sandbox_connection

TIMEOUT = 2.0
#: Two attempts (max_retries=1) of TIMEOUT, plus a byte's wait, plus a loaded machine.
BOUND = 2 * TIMEOUT + 0.3 + 3.0


def local_connection(monkeypatch: pytest.MonkeyPatch, port: int, **extra: float) -> None:
    """The default connection, to a server of the test's own on ``port``."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_AURALYTIK_DEFAULT",
        json.dumps({"conn_type": "auralytik", "host": f"http://127.0.0.1:{port}/v1", "password": "k", "extra": extra}),
    )


@pytest.fixture
def trickling(make_sandbox, monkeypatch):
    sandbox = make_sandbox(trickle_every=0.3)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AURALYTIK_DEFAULT",
        sandbox_connection(sandbox, timeout=TIMEOUT, max_retries=1, backoff_base=0, backoff_max=0),
    )
    return sandbox


def test_sync_request_gives_up_at_the_deadline(trickling):
    conversation_id = trickling.conversations_in()[0]
    start = time.monotonic()
    with pytest.raises(AuralytikUnavailableError) as info:
        AuralytikHook().get_conversation(conversation_id)
    elapsed = time.monotonic() - start
    assert 2 * TIMEOUT - 0.5 <= elapsed < BOUND
    assert trickling.stats.requests == 2
    message = str(info.value)
    assert "\n" not in message
    assert f"within timeout={TIMEOUT:g} s" in message
    assert "127.0.0.1" in message  # names the host


def test_async_request_gives_up_at_the_deadline(trickling):
    conversation_id = trickling.conversations_in()[0]

    async def fetch() -> None:
        hook = AuralytikHook()
        try:
            await hook.aget_conversation(conversation_id)
        finally:
            await hook.aclose()

    start = time.monotonic()
    with pytest.raises(AuralytikUnavailableError, match=f"within timeout={TIMEOUT:g} s"):
        asyncio.run(fetch())
    elapsed = time.monotonic() - start
    assert 2 * TIMEOUT - 0.5 <= elapsed < BOUND
    assert trickling.stats.requests == 2


def test_a_prompt_answer_is_read_whole_through_the_deadline_loop(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox, timeout=TIMEOUT))
    conversation_id = sandbox.conversations_in()[0]
    hook = AuralytikHook()
    messages = hook.get_messages(conversation_id)
    assert messages == sandbox.messages(conversation_id, exclude_pii=True)
    assert hook.get_messages(conversation_id) == messages  # the connection went back to the pool, intact
    assert sandbox.stats.connections == 1


def test_a_refused_connection_names_the_host(monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    local_connection(monkeypatch, port, max_retries=0)
    with pytest.raises(AuralytikUnavailableError) as info:
        AuralytikHook().get_conversation("conv_1")
    message = str(info.value)
    assert f"connection to 127.0.0.1:{port} refused" in message
    assert "\n" not in message


@pytest.fixture
def head_trickler():
    """A server on 127.0.0.1 that answers every connection with a status line and headers that never end,
    one byte every 0.3 s (each read well within the timeout): only a whole-request deadline stops it."""
    import socket
    import threading

    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[int] = []

    def trickle(conn: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 10_000
        with conn:
            for byte in head:
                if stop.wait(0.3):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:  # the client gave up and closed
                    return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:  # the accept timeout: look at stop again
                continue
            accepted.append(1)
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(timeout=5)
    server.close()


def test_sync_request_gives_up_at_the_deadline_while_the_head_trickles(head_trickler, monkeypatch):
    port, accepted = head_trickler
    local_connection(monkeypatch, port, timeout=TIMEOUT, max_retries=1, backoff_base=0, backoff_max=0)
    start = time.monotonic()
    with pytest.raises(AuralytikUnavailableError) as info:
        AuralytikHook().get_conversation("conv_1")
    elapsed = time.monotonic() - start
    assert 2 * TIMEOUT - 0.5 <= elapsed < BOUND
    assert len(accepted) == 2  # two attempts, each cut at its deadline
    message = str(info.value)
    assert f"within timeout={TIMEOUT:g} s" in message
    assert "\n" not in message
