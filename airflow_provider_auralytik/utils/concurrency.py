"""
Reading ahead, and fetching concurrently in order: the backpressure between fetching and writing.

Both start working when created, so an export's requests overlap whatever it still has to set up
(opening the destination costs Airflow a few hundred milliseconds of imports on first use).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _End:
    """The producer's last word: the input is exhausted, or reading it raised ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class Prefetch(Generic[T]):
    """
    Iterate ``items`` in a background thread, at most ``buffer`` items ahead of the consumer.

    ``items`` is read lazily (it may be a paged listing doing its own requests). An exception
    raised while reading it is raised to the consumer. ``close()`` (or leaving the ``with``
    block) stops the reading.
    """

    def __init__(self, items: Iterable[T], *, buffer: int) -> None:
        if buffer < 1:
            raise ValueError(f"buffer must be at least 1, not {buffer}.")
        self._slots = threading.Semaphore(buffer)
        self._queue: queue.Queue[T | _End] = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(iter(items),), name="auralytik-read", daemon=True)
        self._thread.start()

    def _read(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                while not self._slots.acquire(timeout=0.1):
                    if self._closed.is_set():
                        return
                if self._closed.is_set():
                    return
                self._queue.put(item)
        except BaseException as exc:
            self._queue.put(_End(exc))
        else:
            self._queue.put(_End())

    def __iter__(self) -> Iterator[T]:
        while True:
            entry = self._queue.get()
            if isinstance(entry, _End):
                if entry.error is not None:
                    raise entry.error
                return
            try:
                yield entry
            finally:
                self._slots.release()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class OrderedMap(Generic[T, R]):
    """
    ``fn(item)`` for each item, in input order, up to ``workers`` calls at once.

    At most ``lookahead`` (default ``4 * workers``) calls are running, queued or done but not yet
    consumed: a slow consumer holds the producer back and memory stays bounded. An exception from
    ``fn`` or from reading ``items`` is raised to the consumer; ``close()`` stops the reading and
    cancels the calls not started.
    """

    def __init__(self, fn: Callable[[T], R], items: Iterable[T], *, workers: int, lookahead: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}.")
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="auralytik")
        submitted = (self._executor.submit(fn, item) for item in items)
        self._futures: Prefetch[Future[R]] = Prefetch(submitted, buffer=max(lookahead or 4 * workers, workers))

    def __iter__(self) -> Iterator[R]:
        for future in self._futures:
            yield future.result()

    def close(self) -> None:
        self._futures.close()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> OrderedMap[T, R]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int, lookahead: int | None = None) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in order, ``workers`` at a time (see :class:`OrderedMap`)."""
    with OrderedMap(fn, items, workers=workers, lookahead=lookahead) as results:
        yield from results
