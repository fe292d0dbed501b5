"""
A whole-request deadline for the sync path (``requests``), from connect to the last header.

``requests``' ``timeout`` bounds each socket operation, not the request: a server that sends its
status line and headers a byte at a time, each within the timeout, holds a request for ever. The body
is read against the deadline by the hook itself (``_read_body``); this module covers the head. While
a thread waits for the answer's head, a timer shuts the connection's socket at the deadline, so the
read fails at once (urllib3 sees the connection end) and the hook retries or gives up as for any
timeout.

:class:`DeadlineAdapter` is a ``requests`` transport adapter whose connections do this;
:func:`request_deadline` sets the deadline of the requests the current thread sends. Requests sent
through a proxy keep the per-read timeout only (urllib3's proxy pools are not ours to replace).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_local = threading.local()


@contextlib.contextmanager
def request_deadline(deadline: float) -> Iterator[None]:
    """Requests this thread sends inside the block must have their answer's head by ``deadline`` (monotonic)."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = previous


class _DeadlineConnection:
    """Mixin: ``getresponse`` (reading the status line and headers) ends at the thread's deadline."""

    sock: socket.socket | None

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        deadline = getattr(_local, "deadline", None)
        if deadline is None:
            return super().getresponse(*args, **kwargs)  # type: ignore[misc]  # the urllib3 connection's
        timer = threading.Timer(max(deadline - time.monotonic(), 0.0), self._shut)
        timer.daemon = True
        timer.start()
        try:
            return super().getresponse(*args, **kwargs)  # type: ignore[misc]  # the urllib3 connection's
        finally:
            timer.cancel()

    def _shut(self) -> None:
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: nothing left to stop
                sock.shutdown(socket.SHUT_RDWR)


class _HTTPConnection(_DeadlineConnection, HTTPConnection):
    """urllib3's HTTP connection, its head read bounded by the thread's deadline."""


class _HTTPSConnection(_DeadlineConnection, HTTPSConnection):
    """urllib3's HTTPS connection, its head read bounded by the thread's deadline."""


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections honour :func:`request_deadline` while reading an answer's head."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}
