"""Bounded, order-preserving concurrent map: the backpressure between fetching and writing."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int, lookahead: int | None = None) -> Iterator[R]:
    """
    Yield ``fn(item)`` for each item, in input order, running up to ``workers`` calls at once.

    At most ``lookahead`` (default ``4 * workers``) results are pending or waiting to be consumed,
    so a slow consumer holds back the producers and memory stays bounded. ``items`` is read lazily,
    only as room frees up. If ``fn`` raises, the exception is re-raised here and the calls not yet
    started are cancelled.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}.")
    limit = max(lookahead or 4 * workers, workers)
    pending: deque[Future[R]] = deque()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="auralytik")
    try:
        for item in items:
            pending.append(executor.submit(fn, item))
            while len(pending) >= limit or (pending and pending[0].done()):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
