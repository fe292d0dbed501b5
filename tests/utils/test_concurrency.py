"""ordered_map, Prefetch, Gate, AsyncOrderedMap: input order, bounded lookahead (backpressure), lazy input, errors."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from airflow_provider_auralytik.utils.concurrency import STREAM_GC_THRESHOLD, ordered_map


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


# ---------------------------------------------------------------------------------------------
# The asyncio side: Gate and AsyncOrderedMap
# ---------------------------------------------------------------------------------------------


def test_gate_admits_up_to_its_limit_first_come_first_served_and_follows_a_moving_limit():
    from airflow_provider_auralytik.utils.concurrency import Gate

    limit = 2
    gate = Gate(lambda: limit)
    order: list[int] = []

    async def hold(n: int, release: asyncio.Event) -> None:
        async with gate:
            order.append(n)
            await release.wait()

    async def main() -> None:
        nonlocal limit
        releases = [asyncio.Event() for _ in range(6)]
        tasks = [asyncio.create_task(hold(n, releases[n])) for n in range(6)]
        await asyncio.sleep(0.01)
        assert order == [0, 1]
        assert gate.held == 2
        limit = 4  # e.g. slow start: takes effect at the next release
        releases[0].set()
        await asyncio.sleep(0.01)
        assert order == [0, 1, 2, 3, 4]
        assert gate.held == 4
        limit = 1  # e.g. a cut after a 429: nobody new until the holders drop below it
        releases[1].set()
        releases[2].set()
        await asyncio.sleep(0.01)
        assert order == [0, 1, 2, 3, 4]
        for event in releases[3:5]:
            event.set()
        await asyncio.sleep(0.01)
        assert order == [0, 1, 2, 3, 4, 5]
        assert gate.held == 1
        releases[5].set()
        await asyncio.gather(*tasks)
        assert gate.held == 0

    asyncio.run(main())


def test_gate_lets_a_critical_waiter_pass_the_queue():
    from airflow_provider_auralytik.utils.concurrency import Gate

    gate = Gate(lambda: 1)
    order: list[str] = []

    async def take(name: str, first: bool = False) -> None:
        await gate.acquire(first=first)
        order.append(name)
        gate.release()

    async def main() -> None:
        await gate.acquire()
        tasks = [asyncio.create_task(take(f"fetch {n}")) for n in range(3)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(take("listing", first=True)))
        await asyncio.sleep(0)
        gate.release()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert order == ["listing", "fetch 0", "fetch 1", "fetch 2"]


def test_gate_hands_on_the_slot_of_a_waiter_cancelled_after_admission():
    from airflow_provider_auralytik.utils.concurrency import Gate

    gate = Gate(lambda: 1)

    async def main() -> None:
        await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        third = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        gate.release()  # admits the waiter ...
        waiter.cancel()  # ... which is cancelled before it runs: its slot goes to the third
        await asyncio.sleep(0.01)
        assert third.done()
        assert gate.held == 1

    asyncio.run(main())


def test_gate_forgets_a_waiter_cancelled_before_admission():
    from airflow_provider_auralytik.utils.concurrency import Gate

    limit = 1
    gate = Gate(lambda: limit)

    async def main() -> None:
        nonlocal limit
        await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        waiter.cancel()  # e.g. an export closed while its requests waited
        await asyncio.gather(waiter, return_exceptions=True)
        limit = 2  # a free slot now: taken at once, not queued behind the dead waiter
        await asyncio.wait_for(gate.acquire(), timeout=1)
        assert gate.held == 2

    asyncio.run(main())


def test_deadlines_end_only_the_late_awaits_with_timeout_error_and_cancel_what_they_awaited():
    from airflow_provider_auralytik.utils.concurrency import Deadlines

    deadlines = Deadlines(0.2)
    cancelled: list[str] = []

    async def answer(name: str, after: float | None) -> str:
        try:
            await (asyncio.sleep(after) if after is not None else asyncio.Event().wait())
        except asyncio.CancelledError:
            cancelled.append(name)
            raise
        return name

    async def timed(name: str, after: float | None) -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            return await deadlines.within(answer(name, after)), loop.time() - start
        except TimeoutError:
            return "timeout", loop.time() - start

    async def main() -> list[tuple[str, float]]:
        first = [asyncio.create_task(timed(n, a)) for n, a in (("quick", 0.01), ("never", None), ("soon", 0.05))]
        await asyncio.sleep(0.1)  # started later: its own limit ends later, after the first timer ran
        later = asyncio.create_task(timed("late", None))
        return await asyncio.gather(*first, later)

    (quick, _), (never, never_took), (soon, _), (late, late_took) = asyncio.run(main())
    assert (quick, never, soon, late) == ("quick", "timeout", "soon", "timeout")
    assert 0.2 <= never_took < 5
    assert 0.2 <= late_took < 5
    assert cancelled == ["never", "late"]
    assert not deadlines._fifo  # nothing left waiting ...
    assert deadlines._timer is None  # ... and no timer left armed


def test_deadlines_leave_a_cancellation_from_elsewhere_a_cancellation():
    from airflow_provider_auralytik.utils.concurrency import Deadlines

    deadlines = Deadlines(30)

    async def main() -> None:
        task = asyncio.create_task(deadlines.within(asyncio.Event().wait()))
        await asyncio.sleep(0.01)
        task.cancel()  # e.g. the export closed while the request was in flight
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not deadlines._fifo

    asyncio.run(main())


def test_deadlines_hold_about_twice_the_awaits_still_waiting_whatever_order_they_end_in():
    from airflow_provider_auralytik.utils.concurrency import Deadlines

    deadlines = Deadlines(30)

    async def main() -> None:
        slow = asyncio.Event()
        head = asyncio.create_task(deadlines.within(slow.wait()))  # the oldest, still waiting
        for _ in range(1000):  # a thousand that end behind it, each while a few others wait
            await asyncio.gather(*(deadlines.within(asyncio.sleep(0)) for _ in range(4)))
            assert len(deadlines._fifo) <= 2 * 1 + 64
        slow.set()
        await head
        assert not deadlines._fifo

    asyncio.run(main())


def test_async_ordered_map_keeps_input_order_and_runs_calls_concurrently():
    from airflow_provider_auralytik.utils.concurrency import AsyncOrderedMap

    in_flight = 0
    most = 0

    async def items():
        for n in range(200):
            yield n

    async def slow_for_even(n: int) -> int:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.02 if n % 2 == 0 else 0.0)
        in_flight -= 1
        return n * 10

    with AsyncOrderedMap(slow_for_even, items, lookahead=64) as results:
        assert list(results) == [n * 10 for n in range(200)]
    assert most > 16  # one thread, many calls at once


def test_async_ordered_map_lookahead_bounds_what_is_started_but_not_consumed():
    from airflow_provider_auralytik.utils.concurrency import AsyncOrderedMap

    started = 0

    async def items():
        for n in range(1000):
            yield n

    async def work(n: int) -> int:
        nonlocal started
        started += 1
        return n

    results = AsyncOrderedMap(work, items, lookahead=10)
    try:
        iterator = iter(results)
        assert next(iterator) == 0
        time.sleep(0.1)
        assert started <= 11  # the window, plus the one slot the consumer gave back
        assert list(iterator) == list(range(1, 1000))
    finally:
        results.close()


def test_async_ordered_map_raises_an_error_in_its_place_and_close_cancels_and_cleans_up():
    from airflow_provider_auralytik.utils.concurrency import AsyncOrderedMap

    cancelled = 0
    cleaned = threading.Event()

    async def items():
        for n in range(100):
            yield n

    async def fail_on_3(n: int) -> int:
        nonlocal cancelled
        if n == 3:
            raise RuntimeError("boom on 3")
        try:
            await asyncio.sleep(0 if n < 3 else 30)
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return n

    async def cleanup() -> None:
        cleaned.set()

    got: list[int] = []
    with (
        pytest.raises(RuntimeError, match="boom on 3"),
        AsyncOrderedMap(fail_on_3, items, lookahead=8, cleanup=cleanup) as m,
    ):
        got.extend(m)
    assert got == [0, 1, 2]
    assert cancelled > 0
    assert cleaned.is_set()


def test_async_ordered_map_raises_what_the_items_raised():
    from airflow_provider_auralytik.utils.concurrency import AsyncOrderedMap

    async def broken():
        yield 1
        raise OSError("listing failed")

    async def same(n: int) -> int:
        return n

    got: list[int] = []
    with pytest.raises(OSError, match="listing failed"), AsyncOrderedMap(same, broken, lookahead=4) as m:
        got.extend(m)
    assert got == [1]


def test_async_ordered_map_keeps_the_heap_out_of_full_collections_while_it_runs():
    import gc

    from airflow_provider_auralytik.utils.concurrency import AsyncOrderedMap

    async def items():
        for n in range(3):
            yield n

    async def same(n: int) -> int:
        return n

    assert gc.get_freeze_count() == 0
    long_lived = [object() for _ in range(1000)]
    with AsyncOrderedMap(same, items, lookahead=4) as results:
        assert gc.get_freeze_count() >= len(long_lived)  # what was alive when it started: frozen
        assert list(results) == [0, 1, 2]
    assert gc.get_freeze_count() == 0  # thawed: collected as usual again


@pytest.mark.parametrize(
    ("before", "during"),
    [
        ((700, 10, 10), (STREAM_GC_THRESHOLD, 10, 10)),  # Python's default: young collections less often
        ((100_000, 5, 5), (100_000, 5, 5)),  # the process's own, rarer already: left alone
        ((0, 10, 10), (0, 10, 10)),  # collection turned off: left off
    ],
)
def test_async_ordered_map_collects_young_objects_less_often_while_it_runs(before, during):
    import gc

    from airflow_provider_auralytik.utils.concurrency import AsyncOrderedMap, freeze_heap, thaw_heap

    async def items():
        yield 1

    async def same(n: int) -> int:
        return n

    saved = gc.get_threshold()
    gc.set_threshold(*before)
    try:
        with AsyncOrderedMap(same, items, lookahead=4) as results:
            assert gc.get_threshold() == during
            freeze_heap()  # nested: shares the setting, leaves it on its way out
            thaw_heap()
            assert gc.get_threshold() == during
            assert list(results) == [1]
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*saved)


def test_async_ordered_map_leaves_a_heap_frozen_by_its_process_as_it_was():
    import gc

    from airflow_provider_auralytik.utils.concurrency import AsyncOrderedMap, freeze_heap, thaw_heap

    async def items():
        yield 1

    async def same(n: int) -> int:
        return n

    gc.freeze()  # e.g. Airflow froze it before forking this worker
    try:
        frozen = gc.get_freeze_count()
        freeze_heap()  # nested: one freeze shared, and the process's own left alone
        with AsyncOrderedMap(same, items, lookahead=4) as results:
            assert list(results) == [1]
        thaw_heap()
        assert 0 < gc.get_freeze_count() <= frozen  # still frozen (less what died meanwhile), nothing added
    finally:
        gc.unfreeze()
