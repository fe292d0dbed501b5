"""AsyncHttpPool: the export's asyncio HTTP/1.1 transport, over real sockets on 127.0.0.1.

Framing (Content-Length, chunked, close-delimited), keep-alive reuse, a reused connection the server
had closed, faults (reset mid-answer, not HTTP, refused), cancellation, and the hook on top of it
(deadline, the host named, the whole retry policy against the sandbox's faults). Every test runs
twice: answers read by httptools (installed with Airflow) and by h11 (where httptools is not).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_auralytik.hooks import transport
from airflow_provider_auralytik.hooks.auralytik import AuralytikHook, AuralytikUnavailableError
from airflow_provider_auralytik.hooks.transport import MAX_HEAD, AsyncHttpPool, ProtocolFault, ResponseHeaders
from tests.conftest import sandbox_connection

OK_BODY = b'{"ok":true}'


@pytest.fixture(autouse=True, params=["httptools", "h11"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which parser reads the answers: httptools where installed (as with Airflow), else h11."""
    if request.param == "h11":
        monkeypatch.setattr(transport, "httptools", None)
    elif transport.httptools is None:
        pytest.skip("httptools is not installed")
    return str(request.param)


def answer(body: bytes = OK_BODY, *, status: str = "200 OK", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


class RawServer:
    """A TCP server on 127.0.0.1 answering each request with ``script(n, request_head)``: bytes to
    send, then ``"close"`` to close the connection, ``"hang"`` to say nothing more, or ``None``."""

    def __init__(
        self, script: Callable[[int, bytes], tuple[bytes, str | None]], tls: ssl.SSLContext | None = None
    ) -> None:
        self.script = script
        self.tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)  # here, not in the thread: a server closed at once has no socket left to set
        self.port = self._sock.getsockname()[1]
        self._open: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except OSError:
                    conn.close()
                    continue
            self._open.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                self.requests.append(head)
                data, then = self.script(len(self.requests), head)
                conn.sendall(data)
                if then == "close":
                    conn.close()
                    return
                if then == "hang":
                    time.sleep(30)
                    return
        except OSError:
            return

    def close(self) -> None:
        self._stop = True
        self._sock.close()
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(script: Callable[[int, bytes], tuple[bytes, str | None]], tls: ssl.SSLContext | None = None) -> RawServer:
        server = RawServer(script, tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def run(pool: AsyncHttpPool, coro_fn: Callable[[AsyncHttpPool], Any]) -> Any:
    async def main() -> Any:
        try:
            return await coro_fn(pool)
        finally:
            pool.close()

    return asyncio.run(main())


def make_pool(url: str, **headers: str) -> AsyncHttpPool:
    return AsyncHttpPool(url, headers={"Authorization": "Bearer k", **headers})


# ---------------------------------------------------------------------------------------------
# Framing and keep-alive
# ---------------------------------------------------------------------------------------------


def test_a_get_sends_base_path_query_and_headers_and_reads_the_answer(raw_server):
    server = raw_server(lambda n, head: (answer(extra="Retry-After: 3\r\n"), None))
    status, headers, body = run(
        make_pool(server.url),
        lambda pool: pool.get("/conversations", [("dateFrom", "2026-01-01T00:00:00Z")], [("X-Exclude-PII", "true")]),
    )
    assert (status, body) == (200, OK_BODY)
    assert headers.get("Retry-After") == "3"
    assert headers.get("content-type") == "application/json"
    head = server.requests[0].decode()
    assert head.startswith("GET /v1/conversations?dateFrom=2026-01-01T00%3A00%3A00Z HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{server.port}" in head.lower()
    assert "authorization: bearer k" in head.lower()
    assert "x-exclude-pii: true" in head.lower()


def test_connections_are_kept_alive_and_reused(raw_server):
    server = raw_server(lambda n, head: (answer(b'{"n":%d}' % n), None))

    async def many(pool: AsyncHttpPool) -> list[bytes]:
        first = [await pool.get("/x") for _ in range(5)]
        together = await asyncio.gather(*(pool.get("/y") for _ in range(4)))
        return [b for _, _, b in first + list(together)]

    bodies = run(make_pool(server.url), many)
    assert sorted(bodies) == sorted(b'{"n":%d}' % n for n in range(1, 10))
    assert server.connections <= 4  # the sequential ones shared one connection


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"ok\r\n7\r\n":true}\r\n0\r\n\r\n', id="chunked"
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + OK_BODY, id="close-delimited"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gzip.compress(OK_BODY))
            + gzip.compress(OK_BODY),
            id="gzip",
        ),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(), id="informational-first"),
    ],
)
def test_every_framing_gives_the_whole_body(raw_server, raw):
    server = raw_server(lambda n, head: (raw, "close" if b"close" in raw else None))
    _, _, body = run(make_pool(server.url), lambda pool: pool.get("/x"))
    assert body == OK_BODY


def test_a_reused_connection_the_server_had_closed_is_retried_once_on_a_new_one(raw_server):
    # The server closes each connection after answering, without saying so (an idle timeout).
    server = raw_server(lambda n, head: (answer(b'{"n":%d}' % n), "close"))

    async def twice(pool: AsyncHttpPool) -> list[bytes]:
        first = await pool.get("/x")
        await asyncio.sleep(0.05)  # the close reaches the client ... or not yet: both are handled
        second = await pool.get("/x")
        return [first[2], second[2]]

    assert run(make_pool(server.url), twice) == [b'{"n":1}', b'{"n":2}']
    assert server.connections == 2


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------


def test_a_connection_cut_mid_answer_is_a_connection_error_not_a_retry(raw_server):
    server = raw_server(lambda n, head: (answer()[:-4], "close"))
    with pytest.raises(ConnectionError, match="without sending complete message body"):
        run(make_pool(server.url), lambda pool: pool.get("/x"))
    assert len(server.requests) == 1


def test_an_answer_that_is_not_http_is_a_protocol_fault(raw_server):
    server = raw_server(lambda n, head: (b"<html>proxy error</html>\r\n\r\n", "close"))
    with pytest.raises(ProtocolFault):
        run(make_pool(server.url), lambda pool: pool.get("/x"))


def test_a_head_still_incomplete_after_max_head_bytes_is_a_protocol_fault(raw_server):
    endless = b"HTTP/1.1 200 OK\r\nX-Filler: " + b"x" * (MAX_HEAD + 10)
    server = raw_server(lambda n, head: (endless, "hang"))
    with pytest.raises(ProtocolFault):
        run(make_pool(server.url), lambda pool: pool.get("/x"))


def test_a_connection_that_said_close_is_not_reused(raw_server):
    server = raw_server(lambda n, head: (answer(extra="Connection: close\r\n" if n == 1 else ""), None))

    async def twice(pool: AsyncHttpPool) -> None:
        await pool.get("/x")
        await pool.get("/x")

    run(make_pool(server.url), twice)
    assert server.connections == 2


def test_httptools_leaves_a_connection_that_sent_stray_bytes_unused(raw_server, parser):
    if parser == "h11":
        pytest.skip("h11 reads stray bytes as the start of the next answer: that one fails")
    server = raw_server(lambda n, head: (answer() + (b"HTTP/1.1 200 OK\r\n" if n == 1 else b""), None))

    async def twice(pool: AsyncHttpPool) -> list[int]:
        first = await pool.get("/x")
        await asyncio.sleep(0.05)  # the stray bytes arrive while the connection is idle
        return [first[0], (await pool.get("/x"))[0]]

    assert run(make_pool(server.url), twice) == [200, 200]
    assert server.connections == 2


def test_a_target_with_a_space_or_a_control_byte_is_refused_before_sending(raw_server):
    server = raw_server(lambda n, head: (answer(), None))
    for path in ("/a b", "/a\r\nX-Injected: 1", "/a\x7f"):

        async def get(pool: AsyncHttpPool, path: str = path) -> Any:
            return await pool.get(path)

        with pytest.raises(ValueError, match="not a valid request target"):
            run(make_pool(server.url), get)
    assert server.connections == 0


def test_httptools_reads_the_answers_where_it_is_installed(parser):
    pool = make_pool("http://127.0.0.1:1/v1")
    assert (pool._connection is transport._FastConnection) == (parser == "httptools")


def test_a_refused_connection_is_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        run(make_pool(f"http://127.0.0.1:{port}"), lambda pool: pool.get("/x"))


def test_a_cancelled_request_closes_its_connection_instead_of_reusing_it(raw_server):
    server = raw_server(lambda n, head: (b"", "hang") if n == 1 else (answer(), None))

    async def cancel_then_get(pool: AsyncHttpPool) -> tuple[int, bytes]:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await pool.get("/slow")
        assert pool.idle_connections == 0
        status, _, body = await pool.get("/x")
        return status, body

    assert run(make_pool(server.url), cancel_then_get) == (200, OK_BODY)
    assert server.connections == 2


def test_connections_opened_ahead_are_used_by_the_requests_that_follow(raw_server):
    server = raw_server(lambda n, head: (answer(), None))

    async def open_then_get(pool: AsyncHttpPool) -> list[int]:
        pool.open_ahead(5)
        pool.open_ahead(5)  # already being opened: nothing more
        while pool.idle_connections < 5:
            await asyncio.sleep(0.01)
        answers = await asyncio.gather(*(pool.get(f"/x{i}") for i in range(5)))
        pool.open_ahead(5)  # 5 open (idle again): nothing more
        await asyncio.sleep(0.05)
        return [status for status, _, _ in answers]

    assert run(make_pool(server.url), open_then_get) == [200] * 5
    assert server.connections == 5  # the five requests went over the five connections opened ahead
    assert len(server.requests) == 5


def test_a_request_that_opens_others_ahead_is_sent_before_they_are_opened(raw_server, monkeypatch, parser):
    # A fresh pool, the first request of an export asking for 8 connections: its own is opened and its
    # bytes go out first, the other 7 are opened during its round trip, not before it.
    server = raw_server(lambda n, head: (answer(), None))
    events: list[str] = []
    connection = transport._Connection if parser == "h11" else transport._FastConnection
    connect, exchange = AsyncHttpPool._connect, connection.exchange

    async def recorded_connect(self: AsyncHttpPool) -> Any:
        events.append("open")
        return await connect(self)

    def recorded_exchange(self: Any, *args: Any, **kwargs: Any) -> Any:
        events.append("send")
        return exchange(self, *args, **kwargs)

    monkeypatch.setattr(AsyncHttpPool, "_connect", recorded_connect)
    monkeypatch.setattr(connection, "exchange", recorded_exchange)

    async def first_get(pool: AsyncHttpPool) -> int:
        status, _, _ = await pool.get("/x", open_ahead=8)
        while pool.idle_connections < 8:
            await asyncio.sleep(0.01)
        return status

    assert run(make_pool(server.url), first_get) == 200
    assert events == ["open", "send"] + ["open"] * 7  # (the server may not have accepted them all yet)


def test_a_request_never_waits_for_an_opening_that_already_ended(raw_server, monkeypatch):
    # The opening's task hands its connection out and ends; the requests that run in the same turn of
    # the loop must not count it as still opening (its task leaves the pool's set a turn later), or one
    # of them waits for a connection nobody will hand it until its deadline.
    server = raw_server(lambda n, head: (answer(), None))

    async def two_gets_as_the_opening_ends(pool: AsyncHttpPool) -> list[int]:
        ready = await pool._connect()
        release: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def connect_when_released() -> Any:
            await release
            return ready

        monkeypatch.setattr(pool, "_connect", connect_when_released)
        pool.open_ahead(1)
        await asyncio.sleep(0)  # the opening waits for `release`
        monkeypatch.undo()
        release.set_result(None)  # the opening ends first in the next turn, then both requests start
        gets = [asyncio.ensure_future(pool.get(f"/x{i}")) for i in range(2)]
        async with asyncio.timeout(5):
            answers = await asyncio.gather(*gets)
        return [status for status, _, _ in answers]

    assert run(make_pool(server.url), two_gets_as_the_opening_ends) == [200, 200]
    assert server.connections == 2


def test_a_request_waiting_for_an_opening_that_fails_unexpectedly_opens_its_own(raw_server, monkeypatch):
    server = raw_server(lambda n, head: (answer(), None))

    async def get_while_the_opening_fails(pool: AsyncHttpPool) -> int:
        release: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def connect_then_fail() -> Any:
            await release
            raise RuntimeError("not an OSError")

        monkeypatch.setattr(pool, "_connect", connect_then_fail)
        pool.open_ahead(1)
        await asyncio.sleep(0)
        get = asyncio.ensure_future(pool.get("/x"))
        await asyncio.sleep(0)  # the request waits for the connection being opened
        monkeypatch.undo()
        release.set_result(None)
        async with asyncio.timeout(5):
            status, _, _ = await get
        return status

    assert run(make_pool(server.url), get_while_the_opening_fails) == 200
    assert server.connections == 1


def test_a_connection_that_cannot_be_opened_ahead_is_left_to_the_request_that_needs_it():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def open_then_get(pool: AsyncHttpPool) -> None:
        pool.open_ahead(3)
        await asyncio.sleep(0.05)  # refused, quietly
        assert pool.idle_connections == 0
        await pool.get("/x")  # the request says what went wrong

    with pytest.raises(ConnectionRefusedError):
        run(make_pool(f"http://127.0.0.1:{port}"), open_then_get)


def test_closing_the_pool_stops_opening_ahead(raw_server):
    server = raw_server(lambda n, head: (answer(), None))

    async def open_then_close(pool: AsyncHttpPool) -> int:
        pool.open_ahead(50)
        pool.close()
        await asyncio.sleep(0.05)
        pool.open_ahead(50)  # closed: nothing
        return pool.idle_connections

    assert run(make_pool(server.url), open_then_close) == 0


def test_the_caller_is_told_an_answer_is_in_before_its_request_returns(raw_server, parser):
    throttled = answer(status="429 Too Many Requests", extra="Retry-After: 7\r\n")
    server = raw_server(lambda n, head: (answer(status="201 Created") if n == 1 else throttled, None))
    events: list[tuple[str, object]] = []

    async def get(pool: AsyncHttpPool) -> None:
        def answered(status: int, retry_after: str | None) -> None:
            events.append(("answered", (status, retry_after)))
            events.append(("in a task", asyncio.current_task() is not None))

        for path in ("/ok", "/slow-down"):
            await pool.get(path, answered=answered)
            events.append(("returned", path))

    run(make_pool(server.url), get)
    # httptools: from the event loop's read callback, outside any task (the slot is free before the
    # request's coroutine resumes); h11 reads in the request's task: just before it returns. A 429's
    # Retry-After comes with it (the pacer pauses at once).
    in_task = parser == "h11"
    assert events == [
        ("answered", (201, None)),
        ("in a task", in_task),
        ("returned", "/ok"),
        ("answered", (429, "7")),
        ("in a task", in_task),
        ("returned", "/slow-down"),
    ]


def test_no_answer_no_call(raw_server):
    server = raw_server(lambda n, head: (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{", "close"))
    calls: list[tuple[int, str | None]] = []

    with pytest.raises(ConnectionError):  # reset (httptools) or not valid HTTP (h11): no whole answer
        run(make_pool(server.url), lambda pool: pool.get("/x", answered=lambda *told: calls.append(told)))
    assert calls == []


def test_response_headers_ignore_case():
    headers = ResponseHeaders({"retry-after": "5"})
    assert headers.get("Retry-After") == "5"
    assert headers["RETRY-AFTER"] == "5"
    assert "Retry-after" in headers
    assert headers.get("Content-Type", "") == ""


def test_only_http_and_https_base_urls():
    with pytest.raises(ValueError, match="http"):
        AsyncHttpPool("ftp://example.com/v1", headers={})


# ---------------------------------------------------------------------------------------------
# The hook on the pool
# ---------------------------------------------------------------------------------------------


def hook_on_pool() -> AuralytikHook:
    hook = AuralytikHook()
    assert hook.use_async_pool()
    return hook


def test_the_hook_on_the_pool_gets_masked_messages_and_keeps_connections(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox))
    ids = sandbox.conversations_in()[:20]

    async def fetch_all() -> list[list[dict[str, Any]]]:
        hook = hook_on_pool()
        try:
            return list(await asyncio.gather(*(hook.aget_messages(c) for c in ids)))
        finally:
            await hook.aclose()

    assert asyncio.run(fetch_all()) == [sandbox.messages(c, exclude_pii=True) for c in ids]
    assert sandbox.stats.connections <= 16  # max_concurrency: the gate holds the rest back


def test_the_hook_on_the_pool_rides_out_every_transient_fault(make_sandbox, monkeypatch):
    sandbox = make_sandbox(rate_429=0.1, retry_after=0, rate_5xx=0.1, rate_drop=0.1, rate_malformed=0.1)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox, backoff_base=0.001, max_retries=10)
    )
    ids = sandbox.conversations_in()[:40]

    async def fetch_all() -> list[list[dict[str, Any]]]:
        hook = hook_on_pool()
        try:
            return list(await asyncio.gather(*(hook.aget_messages(c) for c in ids)))
        finally:
            await hook.aclose()

    assert asyncio.run(fetch_all()) == [sandbox.messages(c, exclude_pii=True) for c in ids]
    assert all(sandbox.stats.faults[k] > 0 for k in ("429", "5xx", "drop", "malformed"))


def raw_connection(server: RawServer, **extra: Any) -> str:
    return json.dumps({"conn_type": "auralytik", "host": server.url, "password": "k", "extra": extra})


def test_the_hook_frees_the_slot_once_whatever_the_answer(raw_server, monkeypatch):
    # A 200 that is not JSON (retried, its slot freed as the answer came in), a 429 (its slot freed by
    # the retry policy, which needs the whole answer), then the messages.
    body = json.dumps({"conversationId": "c1", "messages": [{"id": "m1", "content": "hi"}]}).encode()
    script = {1: answer(b"{not json"), 2: answer(b"{}", status="429 Too Many Requests", extra="Retry-After: 0\r\n")}
    server = raw_server(lambda n, head: (script.get(n, answer(body)), None))
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", raw_connection(server, backoff_base=0.001, max_retries=3))

    async def fetch() -> list[dict[str, Any]]:
        hook = hook_on_pool()
        try:
            messages = await hook.aget_messages("c1")
            assert hook._agate.held == 0  # every attempt gave its slot back, once
            assert hook.pacer.pace().endswith("1 throttled (429)")
            return messages
        finally:
            await hook.aclose()

    assert asyncio.run(fetch()) == [{"id": "m1", "content": "hi"}]
    assert len(server.requests) == 3


def test_the_hook_on_the_pool_gives_up_at_the_deadline_naming_the_host(make_sandbox, monkeypatch):
    sandbox = make_sandbox(trickle_every=0.3)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AURALYTIK_DEFAULT",
        sandbox_connection(sandbox, timeout=1.0, max_retries=1, backoff_base=0, backoff_max=0),
    )

    async def fetch() -> None:
        hook = hook_on_pool()
        try:
            await hook.aget_conversation(sandbox.conversations_in()[0])
        finally:
            await hook.aclose()

    start = time.monotonic()
    with pytest.raises(AuralytikUnavailableError, match=r"127\.0\.0\.1.*within timeout=1 s"):
        asyncio.run(fetch())
    assert time.monotonic() - start < 2 * 1.0 + 5.0  # two attempts, a loaded machine
    assert sandbox.stats.requests == 2


def test_the_hook_keeps_httpx_when_a_proxy_is_configured(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox))
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert AuralytikHook().use_async_pool() is False


# ---------------------------------------------------------------------------------------------
# TLS (the real API is https)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path) -> str:
    """A self-signed certificate for 127.0.0.1 (openssl CLI), as one PEM file with its key."""
    pem = tmp_path / "server.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(pem),
            "-out",
            str(pem),
        ],
        check=True,
        capture_output=True,
    )
    return str(pem)


def tls_server_context(pem: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    return context


def test_https_is_verified_against_the_ca_bundle_the_hook_uses(raw_server, certificate, monkeypatch):
    body = b'{"id":"c1","createdAt":"2026-01-01T00:00:00Z"}'
    server = raw_server(lambda n, head: (answer(body), None), tls=tls_server_context(certificate))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AURALYTIK_DEFAULT",
        json.dumps({"conn_type": "auralytik", "host": server.url, "password": "k"}),
    )

    async def fetch() -> dict[str, Any]:
        hook = hook_on_pool()
        try:
            return await hook.aget_conversation("c1")
        finally:
            await hook.aclose()

    assert asyncio.run(fetch()) == {"id": "c1", "createdAt": "2026-01-01T00:00:00Z"}
    assert server.requests[0].startswith(b"GET /v1/conversations/c1 HTTP/1.1")


def test_https_with_an_untrusted_certificate_is_refused(raw_server, certificate):
    server = raw_server(lambda n, head: (answer(), None), tls=tls_server_context(certificate))
    with pytest.raises(ssl.SSLCertVerificationError):
        run(make_pool(server.url), lambda pool: pool.get("/x"))  # the system's certificates only
