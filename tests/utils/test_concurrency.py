"""ordered_map: input order, bounded lookahead (backpressure), lazy input, errors."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_auralytik.utils.concurrency import ordered_map


def test_results_come_in_input_order_even_when_calls_finish_out_of_order():
    def slow_for_even(n: int) -> int:
        time.sleep(0.02 if n % 2 == 0 else 0.0)
        return n * 10

    assert list(ordered_map(slow_for_even, range(20), workers=4)) == [n * 10 for n in range(20)]


def test_calls_really_run_concurrently():
    barrier = threading.Barrier(4, timeout=5)

    def meet(n: int) -> int:
        barrier.wait()  # deadlocks (BrokenBarrierError) unless 4 calls run at once
        return n

    assert list(ordered_map(meet, range(8), workers=4)) == list(range(8))


def test_lookahead_bounds_what_is_pending_and_input_is_read_lazily():
    lock = threading.Lock()
    read = 0
    started = 0

    def source():
        nonlocal read
        for n in range(100):
            read += 1
            yield n

    def work(n: int) -> int:
        nonlocal started
        with lock:
            started += 1
        return n

    results = ordered_map(work, source(), workers=2, lookahead=5)
    first = next(results)
    assert first == 0
    time.sleep(0.05)
    # The consumer has taken one result: at most the lookahead window has been read and started.
    assert read <= 6
    assert started <= 6
    assert list(results) == list(range(1, 100))


def test_an_exception_is_raised_in_the_consumer_and_pending_calls_are_cancelled():
    calls = []

    def fail_on_3(n: int) -> int:
        calls.append(n)
        if n == 3:
            raise RuntimeError("boom on 3")
        time.sleep(0.01)
        return n

    with pytest.raises(RuntimeError, match="boom on 3"):
        list(ordered_map(fail_on_3, range(1000), workers=2, lookahead=4))
    assert len(calls) < 20


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers"):
        list(ordered_map(str, [1], workers=0))


def test_prefetch_reads_ahead_at_most_its_buffer_and_starts_at_once():
    from airflow_provider_auralytik.utils.concurrency import Prefetch

    read = []

    def source():
        for n in range(50):
            read.append(n)
            yield n

    with Prefetch(source(), buffer=3) as ahead:
        deadline = time.monotonic() + 2
        while len(read) < 4 and time.monotonic() < deadline:  # started before anyone iterates
            time.sleep(0.01)
        assert len(read) == 4  # three buffered, the fourth waiting for room
        assert list(ahead) == list(range(50))


def test_prefetch_raises_what_reading_raised_and_close_stops_the_reader():
    from airflow_provider_auralytik.utils.concurrency import Prefetch

    def broken():
        yield 1
        raise OSError("listing failed")

    with pytest.raises(OSError, match="listing failed"), Prefetch(broken(), buffer=2) as ahead:
        list(ahead)

    endless = Prefetch(iter(int, 1), buffer=2)  # never ends on its own
    endless.close()
    assert not endless._thread.is_alive()
