"""
The hook's asyncio HTTP/1.1 transport: hundreds of GETs in flight on one event-loop thread.

Why not ``httpx.AsyncClient`` (the trigger's client) or ``requests`` in threads for the export:
measured on the same local server (``benchmarks/export_messages.py``, docs/benchmarks.md), httpx's
connection pool spends about 3 ms of CPU per request with 32 connections open, and ``requests`` about
1 ms per request plus the GIL contention of one thread per request in flight. This module moves bytes
with `h11 <https://h11.readthedocs.io>`_ (the sans-I/O HTTP/1.1 parser httpx itself is built on, so no
new dependency) over asyncio protocols: about 0.15 ms per request, whatever the number in flight.
Where `httptools <https://github.com/MagicStack/httptools>`_ is installed (Airflow brings it: its API
server's ``uvicorn[standard]``), its C parser (llhttp) reads the answers instead of h11: ~3 µs per
answer instead of ~60 µs, the largest share of the event loop's CPU per request at 128-256 in flight.
Both read the same answers the same way (the tests run on both).

It only moves bytes: the hook describes the request (:class:`~airflow_provider_auralytik.hooks.auralytik.ApiRequest`),
interprets the answer, paces and retries, exactly as on its other paths. Kept deliberately small:
``GET`` only, keep-alive connections reused (a reused connection the server had already closed is
retried once on a new one, as urllib3 does: nothing was answered on it), TLS with the system's or
``REQUESTS_CA_BUNDLE``'s certificates, ``gzip``/``deflate`` bodies decoded. No proxy support: the
hook falls back to httpx when the environment configures a proxy for the base URL.

Errors are :class:`OSError` (a refused connection is :class:`ConnectionRefusedError`, a connection
closed mid-answer :class:`ConnectionResetError`, an answer that is not HTTP :class:`ProtocolFault`);
the caller bounds each request's time (``asyncio.timeout``), and a cancelled request closes its
connection.
"""

from __future__ import annotations

import abc
import asyncio
import re
import ssl
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import h11

try:
    import httptools
except ImportError:  # not a dependency of this provider: h11 reads the answers then
    httptools = None  # type: ignore[assignment]  # the module, or None where it is not installed

#: Idle keep-alive connections kept beyond this many are closed.
DEFAULT_MAX_IDLE = 256
#: Largest response head (status line and headers) accepted, bytes.
MAX_HEAD = 64 * 1024
#: Bytes a request target may not hold (as h11 checks it): controls, space, DEL.
_NOT_IN_TARGET = re.compile(rb"[\x00-\x20\x7f]")


#: Told an answer is in: its status, and the ``Retry-After`` header of a 429 or a 503 (else ``None``).
Answered = Callable[[int, str | None], None]


def _retry_after(status: int, raw_headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The ``Retry-After`` header of a 429 or 503 answer (RFC 9110: where it means "come back then")."""
    if status != 429 and status != 503:
        return None
    for name, value in raw_headers:
        if name.lower() == b"retry-after":
            return value.decode("latin-1").strip()
    return None


class ProtocolFault(ConnectionError):
    """The peer's bytes are not a valid HTTP/1.1 answer (a transient fault, like a dropped connection)."""


class ResponseHeaders(dict[str, str]):
    """Response headers by lower-case name; ``get`` ignores case (``headers.get("Retry-After")``)."""

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]  # case-insensitive key
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


class _BaseConnection(asyncio.Protocol, abc.ABC):
    """One keep-alive connection fed by the event loop; a subclass parses the answers."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.answers = 0
        self._received = False
        self._waiter: asyncio.Future[None] | None = None
        #: Told the status once the current exchange's whole answer is in (see :meth:`AsyncHttpPool.get`).
        self._answered: Answered | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP connection: always an asyncio.Transport

    def _notify(self, status: int, raw_headers: Iterable[tuple[bytes, bytes]]) -> None:
        """The whole answer is in: tell the caller now, before its task resumes (once per exchange)."""
        answered, self._answered = self._answered, None
        if answered is not None:
            answered(status, _retry_after(status, raw_headers))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _more(self) -> None:
        """Wait for the event loop to feed more bytes (or the end of the connection)."""
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter
        self._waiter = None

    @property
    def reusable(self) -> bool:
        transport = self.transport
        return not self.lost and transport is not None and not transport.is_closing()

    @property
    def received(self) -> bool:
        """Whether any byte of the current exchange's answer arrived."""
        return self._received

    @abc.abstractmethod
    async def exchange(
        self, target: bytes, headers: _HeaderSet, answered: Answered | None = None
    ) -> tuple[int, ResponseHeaders, bytes]:
        """Send ``GET target`` and read its whole answer: status, headers, body (decoded); ``answered``
        is told as soon as the whole answer is in (see :meth:`AsyncHttpPool.get`)."""

    @abc.abstractmethod
    def next_cycle(self) -> bool:
        """Ready the connection for the next request; ``False`` if it cannot be reused."""

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Connection(_BaseConnection):
    """Answers read by an h11 state machine."""

    def __init__(self) -> None:
        super().__init__()
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)

    def data_received(self, data: bytes) -> None:
        self._received = True
        self.h11.receive_data(data)
        self._wake()

    def eof_received(self) -> bool:
        self.h11.receive_data(b"")
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.h11.their_state is not h11.ERROR:
            self.h11.receive_data(b"")  # EOF: h11 ends a close-delimited body, or reports the cut
        self._wake()

    async def exchange(
        self, target: bytes, headers: _HeaderSet, answered: Answered | None = None
    ) -> tuple[int, ResponseHeaders, bytes]:
        assert self.transport is not None
        conn = self.h11
        self._received = False
        request = h11.Request(method=b"GET", target=target, headers=headers.h11)
        try:
            self.transport.write(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
            response: h11.Response | None = None
            chunks: list[bytes] = []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    if self.lost:
                        raise ConnectionResetError("the connection was closed before the answer was complete")
                    await self._more()
                    continue
                kind = type(event)
                if kind is h11.Data:
                    chunks.append(event.data)  # type: ignore[union-attr]  # kind is h11.Data
                elif kind is h11.Response:
                    response = event  # type: ignore[assignment]  # kind is h11.Response
                elif kind is h11.EndOfMessage:
                    break
                elif kind is h11.ConnectionClosed:
                    raise ConnectionResetError("the connection was closed before an answer arrived")
                # h11.InformationalResponse (1xx): the real answer follows
        except h11.ProtocolError as exc:
            raise ProtocolFault(f"not a valid HTTP/1.1 answer ({exc})") from None
        assert response is not None
        self.answers += 1
        if answered is not None:  # h11 reads in this task: no earlier moment to tell
            answered(response.status_code, _retry_after(response.status_code, response.headers))
        return _answer(response.status_code, response.headers, chunks)

    def next_cycle(self) -> bool:
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE and self.reusable:
            conn.start_next_cycle()
            return True
        return False


class _FastConnection(_BaseConnection):
    """Answers read by httptools (llhttp, in C) through its callbacks; the same answers as h11 reads."""

    def __init__(self) -> None:
        super().__init__()
        self._parser: Any = None
        self._head = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._status = 0
        self._framed = False
        self._keep_alive = False
        self._complete = False
        self._fault: Exception | None = None

    # -- the event loop's side: bytes in, the parser's callbacks ---------------------------------

    def data_received(self, data: bytes) -> None:
        self._received = True
        if self._parser is None:
            self._fault = ProtocolFault("bytes nobody asked for")  # the connection is not reused
        if self._fault is not None:
            return
        if not self._status:
            self._head += len(data)
        try:
            self._parser.feed_data(data)
            if not self._status and self._head > MAX_HEAD:
                raise ProtocolFault(f"not a valid HTTP/1.1 answer (a head of more than {MAX_HEAD} bytes)")
        except httptools.HttpParserError as exc:
            self._fault = ProtocolFault(f"not a valid HTTP/1.1 answer ({exc})")
        except ProtocolFault as exc:
            self._fault = exc
        self._wake()

    def on_message_begin(self) -> None:
        if self._complete:
            self._fault = ProtocolFault("bytes after the answer")  # the connection is not reused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 1xx: the real answer follows
            self._headers = []
            return
        self._status = status
        self._keep_alive = self._parser.should_keep_alive()
        names = {name.lower() for name, _ in self._headers}
        self._framed = b"content-length" in names or b"transfer-encoding" in names or status in (204, 304)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        self._complete = self._status > 0
        if self._complete:
            self._notify(self._status, self._headers)

    def eof_received(self) -> bool:
        self._end_of_stream()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._end_of_stream()

    def _end_of_stream(self) -> None:
        if self._status and not self._framed:
            self._complete = True  # a close-delimited body ends with the connection
            self._notify(self._status, self._headers)
        self._wake()

    # -- the caller's side --------------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        return self._fault is None and super().reusable

    async def exchange(
        self, target: bytes, headers: _HeaderSet, answered: Answered | None = None
    ) -> tuple[int, ResponseHeaders, bytes]:
        assert self.transport is not None
        self._received = self._complete = False
        self._answered = answered
        self._status = self._head = 0
        self._headers, self._chunks = [], []
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(b"GET " + target + b" HTTP/1.1\r\n" + headers.block)
        try:
            while not self._complete:
                if self._fault is not None:
                    raise self._fault
                if self.lost:
                    if not self._received:
                        raise ConnectionResetError("the connection was closed before an answer arrived")
                    raise ConnectionResetError(
                        "the connection was closed before the answer was complete "
                        "(the peer closed it without sending complete message body)"
                    )
                await self._more()
        finally:
            self._answered = None  # never called for an exchange that failed or was cancelled
        self.answers += 1
        return _answer(self._status, self._headers, self._chunks)

    def next_cycle(self) -> bool:
        self._parser = None
        return self._complete and self._keep_alive and self.reusable


class _HeaderSet:
    """The request headers, validated once by h11: as h11 takes them, and as the bytes of a request's head."""

    __slots__ = ("block", "h11")

    def __init__(self, headers: Sequence[tuple[str, str]]) -> None:
        self.h11 = h11.Request(method="GET", target="/", headers=list(headers)).headers
        self.block = b"".join(name + b": " + value + b"\r\n" for name, value in self.h11.raw_items()) + b"\r\n"


def _answer(
    status: int, raw_headers: Iterable[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[int, ResponseHeaders, bytes]:
    """The answer as the pool returns it: status, headers by lower-case name, body decoded."""
    headers = ResponseHeaders((name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in raw_headers)
    body = b"".join(chunks)
    encoding = headers.get("content-encoding", "")
    if encoding and body:
        body = _decode(body, encoding)
    return status, headers, body


def _decode(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise ProtocolFault(f"a {encoding} body that does not decode ({exc})") from None
    if encoding == "identity":
        return body
    raise ProtocolFault(f"an answer in an encoding this client did not ask for ({encoding})")


class AsyncHttpPool:
    """
    Keep-alive connections to one base URL, for ``GET`` requests from one event loop.

    :param base_url: ``http(s)://host[:port][/path]``; request paths are appended to it.
    :param headers: Sent with every request (e.g. ``Authorization``).
    :param ssl_context: For ``https`` (default: the system's certificates).
    :param max_idle: Idle connections kept for reuse; more are closed.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = DEFAULT_MAX_IDLE,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base URL must be http(s)://host[/path], not {base_url!r}.")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        self._prefix = quote(parts.path.rstrip("/"), safe="/%")
        netloc = parts.netloc.rpartition("@")[2]
        self._headers = [("Host", netloc), *headers.items()]
        # Headers validated once per set of extra headers (h11 re-validates a plain list per request).
        self._header_sets: dict[tuple[tuple[str, str], ...], _HeaderSet] = {}
        self._connection: type[_BaseConnection] = _Connection if httptools is None else _FastConnection
        self._idle: list[_BaseConnection] = []
        self._max_idle = max_idle
        self._closed = False
        #: Connections a request holds (from checkout, or from the moment one is opened for it or handed
        #: to it), being opened ahead of need (:meth:`open_ahead`), and the requests waiting for one of
        #: those (``None`` if it could not be opened).
        self._busy = 0
        self._opening: set[asyncio.Task[None]] = set()
        self._waiting: deque[asyncio.Future[_BaseConnection | None]] = deque()

    def target(self, path: str, params: Sequence[tuple[str, str]] = ()) -> str:
        """The request target (path and query) of ``path`` below the base URL."""
        return self._prefix + path + (f"?{urlencode(params)}" if params else "")

    async def get(
        self,
        path: str,
        params: Sequence[tuple[str, str]] = (),
        headers: Sequence[tuple[str, str]] = (),
        answered: Answered | None = None,
        open_ahead: int = 0,
    ) -> tuple[int, ResponseHeaders, bytes]:
        """
        One ``GET``: status, headers, body. Raises :class:`OSError` when no whole answer came.

        ``open_ahead``: then :meth:`open_ahead` that many, once this request has its connection, so its
        bytes go out before the others are opened (the first request of a pool is not held back by them).

        ``answered`` is called with the status (and, for a 429 or 503, the ``Retry-After`` header) as soon
        as the whole answer is in: with httptools, from the event loop's read callback, before this
        coroutine resumes. A caller that frees its in-flight slot there lets the next request go out in
        the same turn of the loop as the answers read with this one, instead of after all of them are
        decoded (hundreds, at 256 in flight).
        """
        if self._closed:
            raise ConnectionAbortedError("the HTTP pool is closed")
        extra = tuple(headers)
        header_set = self._header_sets.get(extra)
        if header_set is None:
            header_set = self._header_sets[extra] = _HeaderSet([*self._headers, *extra])
        target = self.target(path, params).encode("ascii")
        if _NOT_IN_TARGET.search(target):
            raise ValueError(f"not a valid request target: {target!r}")
        while True:
            conn, reused = await self._checkout()  # counted in ``_busy`` from here
            if open_ahead:
                self.open_ahead(open_ahead)
            try:
                answer = await conn.exchange(target, header_set, answered)
            except ConnectionResetError:
                self._busy -= 1
                conn.close()
                if reused and not conn.received:
                    continue  # the server had closed this idle connection: nothing was answered on it
                raise
            except BaseException:  # a fault, a timeout or a cancellation: the connection's state is unknown
                self._busy -= 1
                conn.close()
                raise
            self._busy -= 1
            self._checkin(conn)
            return answer

    def open_ahead(self, count: int) -> None:
        """
        Open connections in the background until ``count`` are open (idle, in use or being opened).

        Opening a connection costs the event loop about as much CPU as a request; a client whose
        in-flight limit jumps (slow start, x4 per round trip) would otherwise open a hundred of them
        at once, in the middle of the answers, instead of in the idle round trip before. A failure is
        left to the request that needs the connection: it opens its own and reports the error.
        """
        missing = min(count, self._max_idle) - len(self._idle) - self._busy - len(self._opening)
        if missing <= 0 or self._closed:
            return
        loop = asyncio.get_running_loop()
        for _ in range(missing):
            task = loop.create_task(self._open_idle())
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _open_idle(self) -> None:
        conn: _BaseConnection | None = None
        try:
            conn = await self._connect()
        except Exception:  # refused, TLS, DNS, anything: the request that needs the connection opens its
            conn = None  # own, and says what went wrong
        finally:
            # Whatever ended the opening (a failure, or the pool's close cancelling it), it ends now,
            # not when the task's done callback runs a turn of the loop later: a request checking out in
            # between would otherwise wait for a connection nobody hands it, until its deadline.
            self._opening.discard(asyncio.current_task())
            self._hand_over(conn)

    def _hand_over(self, conn: _BaseConnection | None) -> None:
        """A connection just opened ahead (``None``: it could not be) to the first request waiting for one,
        else to the idle ones."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                if conn is not None:
                    self._busy += 1  # the request's from now on, though it resumes a turn of the loop later
                waiter.set_result(conn)
                return
        if conn is None:
            return
        if self._closed or len(self._idle) >= self._max_idle:
            conn.close()
        else:
            self._idle.append(conn)  # fresh: no exchange to end (``_checkin`` is for used ones)

    async def _connect(self) -> _BaseConnection:
        _, conn = await asyncio.get_running_loop().create_connection(
            self._connection,
            self.host,
            self.port,
            ssl=self._ssl,
            server_hostname=self.host if self._ssl is not None else None,
        )
        return conn

    async def _checkout(self) -> tuple[_BaseConnection, bool]:
        """A connection for one exchange (and whether it was used before), counted in ``_busy``."""
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable:
                self._busy += 1
                return conn, True
            conn.close()
        if len(self._opening) > len(self._waiting):
            # One is being opened ahead for a request like this one, and no other request waits for it.
            waiter: asyncio.Future[_BaseConnection | None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                opened = await waiter
            except asyncio.CancelledError:
                if not waiter.done() or waiter.cancelled():
                    if waiter in self._waiting:
                        self._waiting.remove(waiter)
                elif (handed := waiter.result()) is not None:
                    self._busy -= 1
                    self._idle.append(handed)  # handed over as this request was cancelled: still fresh
                raise
            if opened is not None:
                return opened, True
        self._busy += 1
        try:
            return await self._connect(), False
        except BaseException:
            self._busy -= 1
            raise

    def _checkin(self, conn: _BaseConnection) -> None:
        if not self._closed and len(self._idle) < self._max_idle and conn.next_cycle():
            self._idle.append(conn)
        else:
            conn.close()

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        """Close every idle connection; connections in use close when their request ends."""
        self._closed = True
        for task in self._opening:
            task.cancel()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionAbortedError("the HTTP pool is closed"))
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
