"""A local HTTP server speaking the Auralytik Conversations API (standard library only).

Used by the README demo, the end-to-end tests and the benchmarks::

    with Sandbox(SandboxConfig(days=3, per_day=40)) as sandbox:
        requests.get(f"{sandbox.url}/conversations", headers={"Authorization": f"Bearer {sandbox.api_key}"})

Binds to 127.0.0.1 by default; never talks to the real API.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import random
import selectors
import socket
import socketserver
import threading
import time
from datetime import date, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from airflow_provider_auralytik.conversations.window import UTC
from airflow_provider_auralytik.sandbox.data import (
    STATUS_ACTIVE,
    STATUS_COMPLETED,
    US,
    ConversationRecord,
    Dataset,
    SandboxConfig,
    generate_messages,
    parse_iso_us,
    reported_count,
    to_us,
)

__all__ = ["Sandbox", "SandboxStats"]

_JSON = "application/json; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_BASE = "/v1"
_TRUE = frozenset({"true", "1", "yes", "on"})
_KINDS = ("list", "get", "messages", "other")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _error_body(code: str, message: str, **extra: Any) -> bytes:
    return _dumps({"error": {"code": code, "message": message, **extra}}).encode()


class _BadRequest(Exception):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


class _Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str = _JSON,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


# --------------------------------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------------------------------
class SandboxStats:
    """Thread-safe request counters. Read the properties at any time; ``reset()`` zeroes them.

    ``requests``: every HTTP request received; ``by_kind``: per endpoint kind (``list``, ``get``,
    ``messages``, ``other``); ``by_status``: per status code of the responses actually sent;
    ``faults``: injected faults (``429``, ``5xx``, ``drop``, ``malformed``) and refusals of the rate
    limit (``rate_limit``, also ``throttled``); ``first_request_at``/``last_request_at``: ``time.monotonic()``
    of the first and the last request since the last reset (``None`` before any), ``last_answer_at``
    when the last answer was ready (after the latency), ``span`` the seconds from the first request
    to the last answer (what a benchmark's efficiency is measured on); ``in_flight`` and
    ``max_in_flight``: requests being handled now / at most at the same time; ``connections``:
    TCP connections accepted (fewer than ``requests`` when clients keep connections alive).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._connections = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._by_kind: dict[str, int] = {}
        self._by_status: dict[int, int] = {}
        self._faults: dict[str, int] = {}
        self._first_at: float | None = None
        self._last_at: float | None = None
        self._last_end: float | None = None
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._requests = 0
            self._connections = 0
            self._max_in_flight = self._in_flight
            self._by_kind = dict.fromkeys(_KINDS, 0)
            self._by_status = {}
            self._faults = dict.fromkeys(("429", "5xx", "drop", "malformed", "rate_limit"), 0)
            self._first_at = self._last_at = self._last_end = None

    # -- recording (server side) ----------------------------------------------------------------------
    def _connected(self) -> None:
        with self._lock:
            self._connections += 1

    def _begin(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._first_at is None:
                self._first_at = now
            self._last_at = now
            self._requests += 1
            self._in_flight += 1
            if self._in_flight > self._max_in_flight:
                self._max_in_flight = self._in_flight

    def _end(self, kind: str, status: int | None, fault: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            self._last_end = now
            self._in_flight -= 1
            self._by_kind[kind] = self._by_kind.get(kind, 0) + 1
            if status is not None:
                self._by_status[status] = self._by_status.get(status, 0) + 1
            if fault is not None:
                self._faults[fault] = self._faults.get(fault, 0) + 1

    # -- reading ------------------------------------------------------------------------------------------
    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    @property
    def by_kind(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_kind)

    @property
    def by_status(self) -> dict[int, int]:
        with self._lock:
            return dict(self._by_status)

    @property
    def faults(self) -> dict[str, int]:
        with self._lock:
            return dict(self._faults)

    @property
    def throttled(self) -> int:
        """Requests refused by the rate limit (429)."""
        with self._lock:
            return self._faults.get("rate_limit", 0)

    @property
    def first_request_at(self) -> float | None:
        with self._lock:
            return self._first_at

    @property
    def last_request_at(self) -> float | None:
        with self._lock:
            return self._last_at

    @property
    def last_answer_at(self) -> float | None:
        with self._lock:
            return self._last_end

    @property
    def span(self) -> float | None:
        """Seconds from the first request to the last answer since the last reset."""
        with self._lock:
            if self._first_at is None or self._last_end is None:
                return None
            return self._last_end - self._first_at

    def snapshot(self) -> dict[str, Any]:
        """All counters at once, consistent with each other."""
        with self._lock:
            return {
                "first_request_at": self._first_at,
                "last_request_at": self._last_at,
                "last_answer_at": self._last_end,
                "requests": self._requests,
                "connections": self._connections,
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "by_kind": dict(self._by_kind),
                "by_status": dict(self._by_status),
                "faults": dict(self._faults),
            }

    def __repr__(self) -> str:
        return f"SandboxStats({self.snapshot()!r})"


# --------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------
#: Connections the kernel queues until the server accepts them. A client opening hundreds at once (the
#: hook's pool at 256 in flight) while the server is busy must not overflow it: the kernel drops the SYNs
#: beyond it and the client's TCP sends them again only a second later.
BACKLOG = 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = BACKLOG
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: Sandbox) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls socket.getfqdn(), a reverse DNS lookup: skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(sock)

    def close_connections(self) -> None:
        """Shut down every open keep-alive connection (their threads then exit)."""
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "AuralytikSandbox/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections are closed after this many seconds

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)
        self.server.app.stats._connected()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request logging
        return

    def do_GET(self) -> None:
        self.server.app._handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date_cache
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = (now, email.utils.formatdate(now, usegmt=True))
        _date_cache = cached
    return cached[1]


def _truncate(body: bytes) -> bytes:
    """The first half of a JSON body, cut on a UTF-8 character boundary: valid UTF-8, invalid JSON."""
    cut = max(1, len(body) // 2)
    while cut > 1 and (body[cut] & 0xC0) == 0x80:
        cut -= 1
    return body[:cut]


def _route(path: str) -> tuple[str, str | None]:
    """``(kind, conversation id)`` of a request path."""
    if not path.startswith(_BASE + "/"):
        return "other", None
    parts = path[len(_BASE) + 1 :].rstrip("/").split("/")
    if parts[0] != "conversations":
        return "other", None
    if len(parts) == 1:
        return "list", None
    conv_id = unquote(parts[1])
    if not conv_id:
        return "other", None
    if len(parts) == 2:
        return "get", conv_id
    if len(parts) == 3 and parts[2] == "messages":
        return "messages", conv_id
    return "other", None


def _int_param(params: dict[str, list[str]], name: str, default: int, low: int, high: int | None) -> int:
    values = params.get(name)
    if not values:
        return default
    raw = values[0].strip()
    try:
        if not raw.lstrip("+-").isdigit():
            raise ValueError(raw)
        value = int(raw)
    except ValueError:
        raise _BadRequest(name, f"{name} must be an integer, got {values[0]!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise _BadRequest(name, f"{name} must be {bounds}, got {value}")
    return value


def _date_param(params: dict[str, list[str]], name: str) -> int | None:
    values = params.get(name)
    if not values:
        return None
    try:
        return parse_iso_us(values[0])
    except ValueError:
        raise _BadRequest(name, f"{name} must be an ISO 8601 timestamp with a timezone") from None


def _str_param(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


class _TokenBucket:
    """``rate`` requests per second, bursts of one second's worth; ``take()`` is ``None`` (allowed)
    or the whole seconds until a request is allowed again."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> int | None:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return None
            return max(1, math.ceil((1.0 - self.tokens) / self.rate))


class _AsyncRequest:
    """What :meth:`Sandbox._respond` and :meth:`Sandbox._send` read of a request, on the asyncio server."""

    __slots__ = ("close_connection", "command", "headers", "path", "wfile")

    def __init__(self, command: str, path: str, headers: dict[str, str], wfile: _AsyncConnection) -> None:
        self.command = command
        self.path = path
        self.headers = _Headers(headers)
        self.wfile = wfile
        self.close_connection = self.headers.get("Connection", "").lower() == "close"


class _Headers(dict[str, str]):
    """Request headers by lower-case name; ``get`` ignores case."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class _AsyncConnection(asyncio.Protocol):
    """One keep-alive connection of the asyncio server: one request at a time, answered by the same
    :meth:`Sandbox._prepare` and ``_send`` as the threaded server's. The answer is made when the request
    arrives and sent when its latency has passed (a timer, no thread sleeps): the timer's work is a
    write, so many answers due at once are not late by the time it takes to make them."""

    def __init__(self, server: _AsyncServer) -> None:
        self.server = server
        self.app = server.app
        self.buffer = b""
        self.busy = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP server: always an asyncio.Transport
        self.server.transports.add(transport)  # type: ignore[arg-type]  # likewise
        self.app.stats._connected()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _next(self) -> None:
        if self.busy or b"\r\n\r\n" not in self.buffer:
            return
        head, rest = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length", "0")
        size = int(length) if length.isdigit() else 0
        if len(parts) != 3 or len(rest) < size:
            if len(parts) != 3 and self.transport is not None:
                self.transport.close()
            return
        self.buffer = rest[size:]
        self.busy = True
        loop = asyncio.get_running_loop()
        due = loop.time() + self.app.config.latency_ms / 1000.0
        self.app.stats._begin()
        request = _AsyncRequest(parts[0], parts[1], headers, self)
        try:
            prepared = self.app._prepare(request)
        except BaseException:
            self.app.stats._end("other", None, None)
            raise
        loop.call_at(due, self._answer, request, prepared)

    def _answer(self, request: _AsyncRequest, prepared: tuple[_Response | None, str, str | None]) -> None:
        response, kind, fault = prepared
        self.app.stats._end(kind, None if response is None else response.status, fault)
        if response is not None:
            Sandbox._send(request, response)  # type: ignore[arg-type]  # duck-types the threaded handler's write
        if request.close_connection or response is None:
            if self.transport is not None:
                self.transport.close()
            return
        self.busy = False
        self._next()


class _AsyncServer:
    """The sandbox's connections on one asyncio event loop (``Sandbox(asyncio_server=True)``).

    A thread per connection (``_Server``) spends most of a core switching between hundreds of
    threads that each sleep the latency; here the latency is a timer, so a benchmark at 256 requests
    in flight measures the client, not the sandbox. Same answers, faults and stats; no trickling.
    """

    def __init__(self, address: tuple[str, int], app: Sandbox) -> None:
        self.app = app
        self.transports: set[asyncio.Transport] = set()
        # select(2) waits to the microsecond; epoll and poll wait whole milliseconds, rounded up, which
        # makes every answer up to 1 ms late (2% of a 50 ms latency). The sandbox serves far fewer than
        # select's 1,024 descriptors.
        self.loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
        sock = socket.create_server(address, backlog=BACKLOG)
        self.server_address = sock.getsockname()
        self._server = self.loop.run_until_complete(
            # ``backlog`` again: asyncio listens anew on the socket it is given (100 by default).
            self.loop.create_server(lambda: _AsyncConnection(self), sock=sock, backlog=BACKLOG)
        )
        self._done = threading.Event()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self._done.set()

    def _close(self) -> None:
        self._server.close()
        for transport in list(self.transports):
            transport.abort()
        self.loop.stop()

    def shutdown(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._close)
            self._done.wait(5)

    def server_close(self) -> None:
        if not self.loop.is_running() and not self.loop.is_closed():
            self.loop.close()

    def close_connections(self) -> None:
        """Done by :meth:`shutdown`."""


# --------------------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------------------
class Sandbox:
    """A fake Auralytik API on ``http://127.0.0.1:<port>/v1``, serving in a background thread.

    ``port=0`` picks a free port. Use as a context manager, or ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        asyncio_server: bool = False,
    ) -> None:
        if asyncio_server and config is not None and config.trickle_every:
            raise ValueError("trickle_every needs the threaded server (asyncio_server=False)")
        #: Serve every connection on one asyncio event loop instead of a thread each (benchmarks).
        self.asyncio_server = asyncio_server
        self.config = config or SandboxConfig()
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.start_date: date = self.config.start_date()
        self._data = Dataset(self.config, self.start_date)
        self.stats = SandboxStats()
        self._fault_rng = random.Random(f"auralytik:{self.config.seed}:faults")
        self._fault_lock = threading.Lock()
        self._rate_limiter = _TokenBucket(self.config.rate_limit) if self.config.rate_limit else None
        self._deletions_left = self.config.delete_during_listing
        #: Conversations deleted by ``delete_during_listing``, in order.
        self.deleted_ids: list[str] = []
        self._first_counts: dict[tuple[Any, ...], int] = {}
        self._t0 = time.time()
        #: Conversations held ``active`` (id -> epoch seconds they are released at) and ones completed on demand.
        self._held: dict[str, float] = {}
        self._done: set[str] = set()
        self.hold(*self._data.held_ids(), seconds=self.config.hold_for or None)
        #: ``(kind, path with query)`` of every request since the last ``reset_stats()``.
        self.request_log: list[tuple[str, str]] = []
        #: Masked messages bodies encoded ahead of time by ``preencode_messages`` (conversation id -> body).
        self._encoded: dict[str, bytes] = {}
        self._server: _Server | _AsyncServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------------------
    def start(self) -> Sandbox:
        """Bind, then serve in a daemon thread. Returns ``self``."""
        if self._server is not None:
            return self
        server = (_AsyncServer if self.asyncio_server else _Server)((self.host, self._requested_port), self)
        self._port = int(server.server_address[1])
        self._t0 = time.time()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"auralytik-sandbox-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and every open connection."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the sandbox is not started")
        return self._port

    @property
    def url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:8080/v1``."""
        return f"http://{self.host}:{self.port}{_BASE}"

    @property
    def api_key(self) -> str:
        return self.config.api_key

    # -- ground truth and test hooks ------------------------------------------------------------------
    @property
    def data_start(self) -> datetime:
        """Start of the generated data (UTC midnight of the first day)."""
        return datetime.fromtimestamp(self._data.start_us / US, tz=UTC)

    @property
    def data_end(self) -> datetime:
        """End (exclusive) of the generated data: UTC midnight after the last day."""
        return datetime.fromtimestamp(self._data.end_us / US, tz=UTC)

    def __len__(self) -> int:
        """Number of conversations currently served."""
        return len(self._data)

    def __bool__(self) -> bool:
        return True

    def conversations_in(
        self, date_from: datetime | date | str | None = None, date_to: datetime | date | str | None = None
    ) -> list[str]:
        """Ids of the conversations with ``date_from <= createdAt < date_to`` (half-open), in
        listing order (createdAt descending, then id). ``None`` leaves a side unbounded."""
        from_us = None if date_from is None else to_us(date_from)
        to_excl = None if date_to is None else to_us(date_to)
        with self._data.lock:
            lo, hi = self._data.range_indices(from_us, None if to_excl is None else to_excl - 1)
            return [r.id for r in self._data.records[lo:hi]]

    def all_conversations(self) -> list[dict[str, Any]]:
        """Every conversation as the API would return it now, in listing order."""
        now = time.time()
        with self._data.lock:
            records = list(self._data.records)
        return [self._record_dict(r, now) for r in records]

    def get_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        """The conversation as the API would return it now, or ``None``."""
        record = self._data.by_id.get(conversation_id)
        return None if record is None else self._record_dict(record, time.time())

    def messages(self, conversation_id: str, exclude_pii: bool = False) -> list[dict[str, Any]]:
        """The messages the API returns for that conversation (raises ``KeyError`` if unknown)."""
        return self._messages(self._data.by_id[conversation_id], exclude_pii)

    def add_conversation(self, **fields: Any) -> dict[str, Any]:
        """Insert a conversation; API field names (``createdAt``, ``channelId``, …) override the
        drawn values, unknown fields are kept. ``createdAt``/``startedAt`` take an ISO string or a
        datetime (default: now). Giving ``status`` freezes the status; otherwise it moves from
        ``active`` to ``completed`` like any other. Returns the object as served now."""
        record = self._data.add(fields)
        return self._record_dict(record, time.time())

    def delete_conversation(self, conversation_id: str) -> None:
        """Remove a conversation: afterwards the API answers 404 for it. ``KeyError`` if unknown."""
        self._data.delete(conversation_id)

    def insert_random_conversations(self, count: int) -> list[str]:
        """Insert ``count`` conversations at random seconds inside the data's range; their ids."""
        return [r.id for r in self._data.insert_random(count)]

    def completion_time(self, conversation_id: str) -> datetime:
        """When that conversation becomes (or became) ``completed``."""
        record = self._data.by_id[conversation_id]
        return datetime.fromtimestamp(record.completes_at(self._t0, self.config.complete_within), tz=UTC)

    def delete_during_listing(self, count: int) -> None:
        """Delete ``count`` conversations, one after each of the next listing answers (from that page)."""
        with self._fault_lock:
            self._deletions_left = count

    def preencode_messages(
        self, date_from: datetime | date | str | None = None, date_to: datetime | date | str | None = None
    ) -> int:
        """Encode the masked messages of the conversations in ``[date_from, date_to)`` now, so that
        serving them costs no generation or JSON encoding (benchmarks: the sandbox must not be what
        limits a client at hundreds of requests in flight). Same bytes as served otherwise; a held
        conversation is still generated on each request. Returns how many were encoded."""
        ids = self.conversations_in(date_from, date_to)
        for conversation_id in ids:
            record = self._data.by_id[conversation_id]
            messages = generate_messages(
                self.config.seed, record, exclude_pii=True, pii_leak_rate=self.config.pii_leak_rate
            )
            self._encoded[conversation_id] = _dumps({"conversationId": record.id, "messages": messages}).encode()
        return len(ids)

    def reset_stats(self) -> None:
        self.stats.reset()
        self.request_log.clear()

    def hold(self, *conversation_ids: str, seconds: float | None = None) -> None:
        """Keep these conversations ``active`` (``endedAt`` null, only the first half of their messages
        served) for ``seconds``, or until :meth:`complete`. Conversations added with a fixed ``status``
        are not affected. ``KeyError`` for an unknown id."""
        until = math.inf if seconds is None else time.time() + seconds
        for conversation_id in conversation_ids:
            self._data.by_id[conversation_id]  # raises KeyError for an unknown id
            self._held[conversation_id] = until
            self._done.discard(conversation_id)

    def complete(self, *conversation_ids: str) -> None:
        """Complete these conversations now (held or not): ``completed``, every message served."""
        for conversation_id in conversation_ids:
            self._data.by_id[conversation_id]  # raises KeyError for an unknown id
            self._held.pop(conversation_id, None)
            self._done.add(conversation_id)

    @property
    def held_ids(self) -> list[str]:
        """The conversations held ``active`` right now."""
        now = time.time()
        return sorted(cid for cid, until in self._held.items() if now < until)

    def requests_for(self, date_from: datetime | date | str, date_to: datetime | date | str) -> list[str]:
        """The logged requests about ``[date_from, date_to)``: listings whose range overlaps it by more than
        the second a client widens its bounds by, and fetches of conversations created in it (by id or their
        messages)."""
        low, high = to_us(date_from), to_us(date_to)
        touched: list[str] = []
        for kind, path in list(self.request_log):
            split = urlsplit(path)
            if kind == "list":
                params = parse_qs(split.query)
                start = _date_param(params, "dateFrom")
                end = _date_param(params, "dateTo")
                overlap = min(high, high if end is None else end) - max(low, low if start is None else start)
                if overlap > US:
                    touched.append(path)
            elif kind in ("get", "messages"):
                record = self._data.by_id.get(str(_route(split.path)[1]))
                if record is not None and low <= record.created_us < high:
                    touched.append(path)
        return touched

    # -- request handling ----------------------------------------------------------------------------------
    def _completed(self, record: ConversationRecord, now: float) -> bool:
        if record.fixed:
            return record.fields.get("status") == STATUS_COMPLETED
        if record.id in self._done:
            return True
        if self._is_held(record, now):
            return False
        return now >= record.completes_at(self._t0, self.config.complete_within)

    def _is_held(self, record: ConversationRecord, now: float) -> bool:
        return not record.fixed and now < self._held.get(record.id, -math.inf)

    def _status(self, record: ConversationRecord, now: float) -> str:
        if record.fixed:
            return str(record.fields.get("status"))
        return STATUS_COMPLETED if self._completed(record, now) else STATUS_ACTIVE

    def _record_dict(self, record: ConversationRecord, now: float) -> dict[str, Any]:
        return record.as_dict(self._completed(record, now))

    def _record_json(self, record: ConversationRecord, now: float) -> str:
        return record.json(record.fixed or self._completed(record, now), _dumps)

    def _messages(self, record: ConversationRecord, exclude_pii: bool) -> list[dict[str, Any]]:
        messages = generate_messages(
            self.config.seed, record, exclude_pii=exclude_pii, pii_leak_rate=self.config.pii_leak_rate
        )
        if self._is_held(record, time.time()):
            return messages[: max(1, (len(messages) + 1) // 2)]  # a conversation still going on
        return messages

    def _roll_fault(self) -> str | None:
        cfg = self.config
        if not (cfg.rate_429 or cfg.rate_5xx or cfg.rate_drop or cfg.rate_malformed):
            return None
        with self._fault_lock:
            u = self._fault_rng.random()
        for name, rate in (
            ("429", cfg.rate_429),
            ("5xx", cfg.rate_5xx),
            ("drop", cfg.rate_drop),
            ("malformed", cfg.rate_malformed),
        ):
            if u < rate:
                return name
            u -= rate
        return None

    def _handle(self, handler: _Handler) -> None:
        stats = self.stats
        stats._begin()
        try:
            length = handler.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > 0:
                handler.rfile.read(int(length))
            if self.config.latency_ms:
                time.sleep(self.config.latency_ms / 1000.0)
        except BaseException:
            stats._end("other", None, None)
            raise
        response = self._respond(handler)
        if response is not None:
            if self.config.trickle_every:
                self._trickle(handler, response)
            else:
                self._send(handler, response)

    def _respond(self, handler: Any) -> _Response | None:
        """The answer to a request whose latency has passed (``None``: the connection is dropped)."""
        # Everything a client could observe (stats, insertions) is recorded *before* the response
        # is written or the socket closed, so a test reading them right after a reply sees them.
        try:
            response, kind, fault = self._prepare(handler)
        except BaseException:
            self.stats._end("other", None, None)
            raise
        self.stats._end(kind, None if response is None else response.status, fault)
        return response

    def _prepare(self, handler: Any) -> tuple[_Response | None, str, str | None]:
        """The answer to a request (``None``: drop the connection), its kind and the fault injected; not
        recorded as answered (:meth:`_respond` does that, or the asyncio server when it sends it)."""
        kind, fault = "other", None
        response: _Response | None = None
        split = urlsplit(handler.path)
        kind, conv_id = _route(split.path)
        if handler.command != "GET":
            kind = "other"
        self.request_log.append((kind, handler.path))
        scheme, _, token = handler.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.config.api_key:
            response = _Response(
                401,
                _error_body("unauthorized", "Missing or invalid API key"),
                headers={"WWW-Authenticate": 'Bearer realm="auralytik"'},
            )
        else:
            throttled_for = self._rate_limiter.take() if self._rate_limiter is not None else None
            fault = "rate_limit" if throttled_for is not None else self._roll_fault()
            if fault == "rate_limit":
                response = self._too_many_requests(throttled_for)
            elif fault == "drop":
                handler.close_connection = True  # the socket is closed once we return
            elif fault == "429":
                response = self._too_many_requests()
            elif fault == "5xx":
                response = self._server_error()
            else:
                response = self._answer(handler, kind, conv_id, split.query)
                if fault == "malformed":
                    if response.status == 200:
                        response.body = _truncate(response.body)
                    else:
                        fault = None
                if kind == "list" and response.status == 200 and self.config.insert_during_listing:
                    self._data.insert_random(self.config.insert_during_listing)
                if kind == "list" and response.status == 200:
                    self._delete_after_listing(response)
        return response, kind, fault

    def _answer(self, handler: _Handler, kind: str, conv_id: str | None, query: str) -> _Response:
        if handler.command != "GET":
            return _Response(
                405,
                _error_body("method_not_allowed", f"{handler.command} is not allowed"),
                headers={"Allow": "GET"},
            )
        if kind == "list":
            try:
                return self._list(parse_qs(query))
            except _BadRequest as exc:
                return _Response(400, _error_body("invalid_parameter", exc.message, parameter=exc.parameter))
        if kind in ("get", "messages") and conv_id is not None:
            record = self._data.by_id.get(conv_id)
            if record is None:
                return _Response(404, _error_body("not_found", f"conversation {conv_id!r} not found"))
            if kind == "get":
                return _Response(200, self._record_json(record, time.time()).encode())
            exclude = handler.headers.get("X-Exclude-PII", "").strip().lower() in _TRUE
            encoded = self._encoded.get(record.id) if exclude else None
            if encoded is not None and not self._is_held(record, time.time()):
                return _Response(200, encoded)
            messages = self._messages(record, exclude)
            return _Response(200, _dumps({"conversationId": record.id, "messages": messages}).encode())
        return _Response(404, _error_body("not_found", f"no route for {handler.path.split('?')[0]!r}"))

    def _reported_count(self, true_count: int, on_page: int, query: tuple[Any, ...]) -> int:
        """``totalCount`` as ``total_count_mode`` says (stale: the first answer to the same query)."""
        mode = self.config.total_count_mode
        with self._fault_lock:
            first = self._first_counts.setdefault(query, true_count) if mode == "stale" else None
        return reported_count(mode, true_count, on_page, first)

    def _list(self, params: dict[str, list[str]]) -> _Response:
        page = _int_param(params, "page", 1, 1, None)
        page_size = _int_param(params, "pageSize", 25, 1, 100)
        from_us = _date_param(params, "dateFrom")
        to_us_incl = _date_param(params, "dateTo")  # inclusive, on purpose (worst case)
        channel = _str_param(params, "channelId")
        campaign = _str_param(params, "campaignId")
        status = _str_param(params, "status")
        now = time.time()
        offset = (page - 1) * page_size
        data = self._data
        with data.lock:
            lo, hi = data.range_indices(from_us, to_us_incl)
            records = data.records
            if channel is None and campaign is None and status is None:
                total = hi - lo
                start = lo + offset
                selected = records[start : min(start + page_size, hi)] if start < hi else []
            else:
                matched: list[ConversationRecord] = []
                for i in range(lo, hi):
                    r = records[i]
                    fields = r.fields
                    if channel is not None and fields.get("channelId") != channel:
                        continue
                    if campaign is not None and fields.get("campaignId") != campaign:
                        continue
                    if status is not None and self._status(r, now) != status:
                        continue
                    matched.append(r)
                total = len(matched)
                selected = matched[offset : offset + page_size]
        parts = ",".join([self._record_json(r, now) for r in selected])
        total = self._reported_count(total, len(selected), (from_us, to_us_incl, channel, campaign, status))
        body = f'{{"data":[{parts}],"page":{page},"pageSize":{page_size},"totalCount":{total}}}'
        return _Response(200, body.encode())

    def _delete_after_listing(self, response: _Response) -> None:
        """``delete_during_listing``: delete one conversation of the page just served (its last)."""
        with self._fault_lock:
            if self._deletions_left <= 0:
                return
            served = json.loads(response.body)["data"]
            if not served:
                return
            self._deletions_left -= 1
            conv_id = served[-1]["id"]
            self.deleted_ids.append(conv_id)
        self._data.delete(conv_id)

    def _too_many_requests(self, retry_after: int | None = None) -> _Response:
        if retry_after is None:
            retry_after = self.config.retry_after
        if self.config.retry_after_http_date:
            value = email.utils.formatdate(math.ceil(time.time()) + retry_after, usegmt=True)
        else:
            value = str(retry_after)
        return _Response(
            429,
            _error_body("rate_limited", "Too many requests, slow down"),
            headers={"Retry-After": value},
        )

    def _server_error(self) -> _Response:
        with self._fault_lock:
            code = 502 if self._fault_rng.random() < 0.5 else 503
        phrase = HTTPStatus(code).phrase
        body = (
            f"<html><head><title>{code} {phrase}</title></head>"
            f"<body><center><h1>{code} {phrase}</h1></center><hr><center>nginx</center></body></html>\n"
        )
        return _Response(code, body.encode(), _HTML)

    def _trickle(self, handler: _Handler, response: _Response) -> None:
        """Send the head at once, then the body one byte every ``trickle_every`` seconds."""
        body = response.body
        try:
            handler.wfile.write(self._head(handler, response))
            handler.wfile.flush()
            for i in range(len(body)):
                if not self.running:
                    break
                time.sleep(self.config.trickle_every)
                handler.wfile.write(body[i : i + 1])
                handler.wfile.flush()
        except OSError:
            handler.close_connection = True

    @staticmethod
    def _head(handler: _Handler, response: _Response) -> bytes:
        status = response.status
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Server: {_Handler.server_version}",
            f"Date: {_http_date()}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
        ]
        if response.headers:
            lines.extend(f"{k}: {v}" for k, v in response.headers.items())
        if handler.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @staticmethod
    def _send(handler: _Handler, response: _Response) -> None:
        head = Sandbox._head(handler, response)
        try:
            handler.wfile.write(head if handler.command == "HEAD" else head + response.body)
        except OSError:
            handler.close_connection = True
