"""
Reading ahead, and fetching concurrently in order: the backpressure between fetching and writing.

Threads (:class:`Prefetch`, :class:`OrderedMap`) for the hook's sync methods; one asyncio event-loop
thread (:class:`AsyncOrderedMap`, with :class:`Gate` bounding what is in flight) for its async
methods, which is how the messages export keeps hundreds of requests in flight. All start working
when created, so an export's requests overlap whatever it still has to set up
(opening the destination costs Airflow a few hundred milliseconds of imports on first use).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import gc
import queue
import sys
import threading
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_C = TypeVar("_C", bound="_ClosedOnExit")


class _ClosedOnExit(abc.ABC):
    """``with`` support: leaving the block calls ``close()``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop the work and release what it holds; safe to call twice."""

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _End:
    """The producer's last word: the input is exhausted, or reading it raised ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    def finish(self) -> None:
        """Raise the producer's error, if there was one: the consumer's iteration ends either way."""
        if self.error is not None:
            raise self.error


class Prefetch(_ClosedOnExit, Generic[T]):
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
                entry.finish()
                return
            try:
                yield entry
            finally:
                self._slots.release()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()


class OrderedMap(_ClosedOnExit, Generic[T, R]):
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


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int, lookahead: int | None = None) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in order, ``workers`` at a time (see :class:`OrderedMap`)."""
    with OrderedMap(fn, items, workers=workers, lookahead=lookahead) as results:
        yield from results


# ---------------------------------------------------------------------------------------------
# The asyncio side: one event-loop thread keeps hundreds of requests in flight
# ---------------------------------------------------------------------------------------------


class Gate:
    """
    Admits at most ``limit()`` holders at once, first come first served unless a waiter asks to
    go ``first`` (asyncio, one loop).

    ``limit`` is read again on every release and admission, so a limit that moves (the pacer's
    in-flight limit: slow start, a cut after a 429) takes effect at once, without polling. When
    nothing is held, one waiter is always admitted.
    """

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._held = 0

    @property
    def held(self) -> int:
        return self._held

    async def acquire(self, *, first: bool = False) -> None:
        """Wait for a slot; ``first``: ahead of every waiter (a request on the critical path)."""
        if not self._waiters and (self._held == 0 or self._held < self._limit()):
            self._held += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if first:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # admitted, then cancelled: hand the slot on
                self.release()
            else:  # never admitted: leave no dead waiter ahead of the next ones
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self._held -= 1
        limit = self._limit()
        while self._waiters and (self._held == 0 or self._held < limit):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._held += 1
                waiter.set_result(None)

    async def __aenter__(self) -> Gate:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class _Deadline:
    __slots__ = ("at", "cancelling", "expired", "task")

    def __init__(self, at: float, task: asyncio.Task[Any], cancelling: int) -> None:
        self.at = at
        #: The task while it waits; ``None`` once it is done waiting (answered, failed or expired).
        self.task: asyncio.Task[Any] | None = task
        self.cancelling = cancelling
        self.expired = False


class Deadlines:
    """
    One time limit for many awaits on one event loop, all of the same length: one timer for them all.

    ``asyncio.timeout`` arms a timer per await and cancels it after: a handle, a heap entry and ~8 µs of
    the event loop's CPU, a few percent of a request's at 256 in flight. Limits of one length end in
    the order they began, so the awaits wait in a FIFO and one timer, armed for the oldest, ends each
    one that is late: its task is cancelled and :meth:`within` raises :class:`TimeoutError` there, as
    ``asyncio.timeout`` would (a cancellation from anywhere else stays a cancellation). The FIFO holds
    at most about twice the awaits still waiting, whatever the order they end in.

    :param seconds: The limit of each await.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._fifo: deque[_Deadline] = deque()
        self._waiting = 0
        self._timer: asyncio.TimerHandle | None = None

    async def within(self, answer: Awaitable[R]) -> R:
        """``await answer``, or :class:`TimeoutError` once ``seconds`` have passed (3.10: ``asyncio.wait_for``)."""
        task = asyncio.current_task()
        if sys.version_info < (3, 11) or task is None:  # no Task.uncancel() before 3.11
            return await asyncio.wait_for(answer, self.seconds)
        loop = asyncio.get_running_loop()
        entry = _Deadline(loop.time() + self.seconds, task, task.cancelling())
        self._fifo.append(entry)
        self._waiting += 1
        if self._timer is None:
            self._timer = loop.call_at(entry.at, self._expire)
        try:
            return await answer
        except asyncio.CancelledError:
            if entry.expired and task.uncancel() <= entry.cancelling:
                raise TimeoutError from None
            raise
        finally:
            if entry.task is not None:
                entry.task = None
                self._waiting -= 1
            self._prune()

    def _prune(self) -> None:
        fifo = self._fifo
        while fifo and fifo[0].task is None:
            fifo.popleft()
        if len(fifo) > 2 * self._waiting + 64:  # a slow one at the head holds many done behind it
            self._fifo = deque(entry for entry in fifo if entry.task is not None)

    def _expire(self) -> None:
        """The timer: end every await whose time is up, then wait for the oldest of the others."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        fifo = self._fifo
        while fifo:
            entry = fifo[0]
            task = entry.task
            if task is not None:
                if entry.at > now:
                    self._timer = loop.call_at(entry.at, self._expire)
                    return
                entry.expired = True
                entry.task = None
                self._waiting -= 1
                task.cancel()
            fifo.popleft()


class EventLoopThread:
    """An asyncio event loop running in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str = "auralytik-io") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, R]) -> Future[R]:
        """Run ``coro`` on the loop; its :class:`concurrent.futures.Future`."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


_frozen_lock = threading.Lock()
_frozen_users = 0
_froze = False
_threshold_before: tuple[int, int, int] | None = None
#: Allocations between two young collections while a stream runs (Python's default: 700).
STREAM_GC_THRESHOLD = 20_000


def freeze_heap() -> None:
    """
    Leave the objects alive now out of the garbage collector's full collections until :func:`thaw_heap`,
    and collect the young ones less often meanwhile.

    A worker process holds Airflow's modules, the DAG and its own state: hundreds of thousands of
    long-lived objects that a full collection scans every time. An export allocates fast (each answer's
    decoded JSON), which triggers such collections: ~200 ms each, during which no request is sent or
    answered (measured at 256 in flight: one per day of messages). Frozen (:func:`gc.freeze`), they
    are not scanned; what the export itself allocates is collected as usual. Nested or concurrent
    callers share one freeze; the last :func:`thaw_heap` ends it. A process that froze its heap itself
    (Airflow does before forking workers) is left as it is.

    The young collections (every 700 allocations by default) scan, each tenth of them, the results held
    in flight too (at 256 in flight, a thousand conversations' messages): 5 % of a day's export at 256 in
    flight (``benchmarks/export_messages.py``, 0.59 s -> 0.56 s). While the stream runs, they come every
    :data:`STREAM_GC_THRESHOLD` allocations instead; almost all of an export's garbage (decoded JSON,
    written lines) has no cycles and is freed at once without them.
    """
    global _frozen_users, _froze, _threshold_before
    with _frozen_lock:
        if _frozen_users == 0:
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
            threshold = gc.get_threshold()
            _threshold_before = None
            if 0 < threshold[0] < STREAM_GC_THRESHOLD:  # 0: collection off; larger: the process's choice
                _threshold_before = threshold
                gc.set_threshold(STREAM_GC_THRESHOLD, *threshold[1:])
        _frozen_users += 1


def thaw_heap() -> None:
    """End a :func:`freeze_heap`: the objects it froze are collected as usual again, as often as before."""
    global _frozen_users
    with _frozen_lock:
        _frozen_users -= 1
        if _frozen_users == 0:
            if _froze:
                gc.unfreeze()
            if _threshold_before is not None and gc.get_threshold()[0] == STREAM_GC_THRESHOLD:
                gc.set_threshold(*_threshold_before)


class AsyncOrderedMap(_ClosedOnExit, Generic[T, R]):
    """
    ``await fn(item)`` for each item of an async iterable, on an event-loop thread of its own;
    the results are handed to a synchronous consumer in input order.

    The asyncio counterpart of :class:`OrderedMap`: no thread per call, so hundreds of calls can be
    in flight without contending for the GIL. How many run at once is up to ``fn`` (the hook's
    :class:`Gate`); at most ``lookahead`` calls are started but not yet consumed, so a slow consumer
    holds the producer back and memory stays bounded. ``items`` is a factory called on the loop
    (e.g. an async generator function). An exception from ``fn`` or from ``items`` is raised to the
    consumer in its place in the order; ``close()`` (or leaving the ``with`` block) cancels whatever
    still runs, awaits ``cleanup()`` on the loop, and stops it. While it runs, the objects alive when it
    was created are left out of full garbage collections (:func:`freeze_heap`).
    """

    def __init__(
        self,
        fn: Callable[[T], Coroutine[Any, Any, R]],
        items: Callable[[], AsyncIterable[T]],
        *,
        lookahead: int,
        cleanup: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if lookahead < 1:
            raise ValueError(f"lookahead must be at least 1, not {lookahead}.")
        self._fn = fn
        self._lookahead = lookahead
        self._cleanup = cleanup
        # Results go over in lists: one hand-over (one wake-up of the consumer) per loop iteration.
        self._out: queue.SimpleQueue[list[R] | _End] = queue.SimpleQueue()
        self._flush_scheduled = False
        self._pending: deque[asyncio.Task[R]] = deque()
        self._exhausted = False
        self._items_error: BaseException | None = None
        self._finished = False
        self._consumed = 0
        self._io = EventLoopThread()
        self._slots = asyncio.Semaphore(lookahead)
        self._producer = self._io.submit(self._produce(items))
        freeze_heap()

    async def _produce(self, items: Callable[[], AsyncIterable[T]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for item in items():
                await self._slots.acquire()
                task: asyncio.Task[R] = loop.create_task(self._fn(item))
                self._pending.append(task)
                task.add_done_callback(self._schedule_flush)
        except BaseException as exc:  # raised to the consumer after the results of the items before it
            self._items_error = exc
            raise
        finally:
            self._exhausted = True
            self._flush()

    def _schedule_flush(self, _: object = None) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Hand the consumer every result at the head of the order that is ready, in one list."""
        self._flush_scheduled = False
        pending = self._pending
        ready: list[R] = []
        error: BaseException | None = None
        while pending and pending[0].done() and not self._finished:
            task = pending.popleft()
            error = asyncio.CancelledError() if task.cancelled() else task.exception()
            if error is not None:
                break
            ready.append(task.result())
        if ready and not self._finished:
            self._out.put(ready)
        if error is not None:
            self._finish(error)
        elif self._exhausted and not pending:
            self._finish(self._items_error)

    def _finish(self, error: BaseException | None) -> None:
        if not self._finished:
            self._finished = True
            self._out.put(_End(error))

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    def __iter__(self) -> Iterator[R]:
        batch = max(1, self._lookahead // 8)  # hand slots back in batches: one loop wake-up each
        taken = 0
        while True:
            entries = self._out.get()
            if isinstance(entries, _End):
                entries.finish()
                return
            for entry in entries:
                taken += 1
                if taken >= batch:
                    self._io.loop.call_soon_threadsafe(self._release, taken)
                    taken = 0
                yield entry

    async def _shutdown(self) -> None:
        self._finished = True
        tasks = [*self._pending, *(t for t in asyncio.all_tasks() if t is not asyncio.current_task())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.get_running_loop().shutdown_asyncgens()
        if self._cleanup is not None:
            await self._cleanup()

    def close(self) -> None:
        if self._io.loop.is_closed():
            return
        try:
            self._io.submit(self._shutdown()).result()
        finally:
            self._io.stop()
            thaw_heap()
