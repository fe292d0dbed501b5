"""The pacer and the retry budget, on a fake clock: no test sleeps, none depends on the time of day."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
from collections.abc import Iterator

import pytest

from airflow_provider_auralytik.hooks import pacing
from airflow_provider_auralytik.hooks.pacing import (
    BETA,
    INCREASE_INTERVAL,
    PAUSE_JITTER,
    BudgetExhausted,
    Pacer,
    RequestBudget,
    RetryLimits,
    forget_pacers,
    pacer_for,
)


class FakeClock(pacing.Clock):
    def __init__(self) -> None:
        self.t = 500.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, max_concurrency: int = 16, max_rate: float | None = None) -> Pacer:
    return Pacer(
        max_concurrency=max_concurrency,
        max_rate=max_rate,
        name="https://api.test/v1",
        clock=clock,
        rng=random.Random(7),
    )


def answered(pacer: Pacer, clock: FakeClock, n: int, every: float) -> None:
    """``n`` requests, one every ``every`` seconds, each answered at once (not a 429)."""
    for _ in range(n):
        assert pacer.try_acquire() == 0.0
        pacer.release(clock.t)
        clock.t += every


def throttle(pacer: Pacer, clock: FakeClock, retry_after: float | None = 1.0) -> None:
    """One request sent now, answered 429."""
    while (delay := pacer.try_acquire()) > 0:
        clock.t += delay
    pacer.release(clock.t, throttled=True, retry_after=retry_after)


def admissions(pacer: Pacer, clock: FakeClock, seconds: float, step: float = 0.001) -> list[float]:
    """When a client asking as often as it can gets to send, over ``seconds`` (each answer is instant)."""
    sent: list[float] = []
    end = clock.t + seconds
    while clock.t < end:
        if pacer.try_acquire() == 0.0:
            sent.append(clock.t)
            pacer.release(clock.t)
        else:
            clock.t += step
    return sent


# ---------------------------------------------------------------------------------------------
# Before any 429: nothing is paced
# ---------------------------------------------------------------------------------------------


def test_unthrottled_pacer_never_waits_and_slow_start_opens_the_in_flight_limit(clock):
    pacer = make(clock, max_concurrency=16)
    assert pacer.in_flight_limit == pacing.INITIAL_IN_FLIGHT
    answered(pacer, clock, 50, every=0.0)  # a fast server: no time passes
    assert pacer.in_flight_limit == 16
    assert pacer.rate is None
    assert pacer.pace() == "unpaced"
    for _ in range(16):
        assert pacer.try_acquire() == 0.0
    assert pacer.try_acquire() > 0  # the 17th waits for one of the 16 to be answered
    pacer.release(clock.t)
    assert pacer.try_acquire() == 0.0


def round_trips_to_open(pacer: Pacer, clock: FakeClock, latencies: Iterator[float]) -> int:
    """Round trips until the in-flight limit is ``max_concurrency``: each sends all it may, then all are answered."""
    trips = 0
    while pacer.in_flight_limit < pacer.max_concurrency:
        sent = clock.t
        count = 0
        while pacer.try_acquire() == 0.0:
            count += 1
        clock.t += next(latencies)
        for _ in range(count):
            pacer.release(sent)
        trips += 1
    return trips


def test_slow_start_doubles_per_round_trip_then_grows_faster_while_answers_stay_as_fast(clock):
    # Above the default, half of max_concurrency (at least 16) at once, then x4 while the latency
    # stays flat: 64, 128 and 256 are open after one round trip; 17 and 32 start at 16.
    assert [make(clock, max_concurrency=n).in_flight_limit for n in (17, 32, 64, 128, 256)] == [16, 16, 32, 64, 128]
    for n in (64, 128, 256):
        assert round_trips_to_open(make(clock, max_concurrency=n), clock, itertools.repeat(0.05)) == 1
    # The default 16 starts at 1 and only doubles (FAST_START_FROM): it opens as before.
    assert make(clock, max_concurrency=16).in_flight_limit == 1
    assert round_trips_to_open(make(clock, max_concurrency=16), clock, itertools.repeat(0.05)) == 4


def test_the_limit_a_round_trip_from_now_is_what_slow_start_or_the_climb_can_reach(clock):
    # What the pool opens connections for ahead of need: x4 in slow start, +1 after it.
    assert make(clock, max_concurrency=256).in_flight_limit_soon() == 256
    assert make(clock, max_concurrency=1024).in_flight_limit_soon() == 1024  # 512 x 4, capped
    assert make(clock, max_concurrency=16).in_flight_limit_soon() == 4  # 1 x 4
    pacer = make(clock, max_concurrency=16)
    answered(pacer, clock, 40, every=0.05)
    throttle(pacer, clock, retry_after=1)  # slow start is over: the limit climbs by one at most
    assert pacer.in_flight_limit_soon() == pacer.in_flight_limit + 1


def test_slow_start_grows_by_one_per_answer_once_the_answers_slow_down(clock):
    # 256 asked for, 128 sent at once: the first answers come in 50 ms, the next in 200 ms (the server,
    # or this client, is loaded). Once the moving average of the latency passes 1.5x the least, each
    # answer adds 1, not 3: the limit is not open after this round trip.
    pacer = make(clock, max_concurrency=256)
    sent, count = clock.t, 0
    while pacer.try_acquire() == 0.0:
        count += 1
    assert count == 128
    for latency in [0.05] * 4 + [0.2] * 60:  # x4 per answer would open all 256 with these 64
        clock.t = sent + latency
        pacer.release(sent)
    assert 128 + 4 * 3 < pacer.in_flight_limit < 256
    flat = make(clock, max_concurrency=256)
    assert round_trips_to_open(flat, clock, itertools.repeat(0.05)) == 1


# ---------------------------------------------------------------------------------------------
# Multiplicative decrease, once per episode, and the shared pause
# ---------------------------------------------------------------------------------------------


def test_a_429_cuts_the_rate_to_beta_times_what_the_server_accepted(clock):
    pacer = make(clock)
    answered(pacer, clock, 40, every=0.05)  # 20 requests/s for 2 s
    throttle(pacer, clock, retry_after=2)
    assert pacer.rate == pytest.approx(BETA * 20, rel=0.05)
    assert pacer.in_flight_limit == math.floor(16 * BETA)
    assert pacer.throttled == 1
    assert "requests/s" in pacer.pace()


def test_429s_of_requests_sent_before_the_cut_do_not_cut_again(clock):
    pacer = make(clock)
    answered(pacer, clock, 40, every=0.05)
    sent = [clock.t] * 5
    for _ in sent:
        assert pacer.try_acquire() == 0.0  # five in flight at once
    pacer.release(sent[0], throttled=True, retry_after=1)
    rate = pacer.rate
    for at in sent[1:]:
        pacer.release(at, throttled=True, retry_after=1)
    assert pacer.rate == rate
    assert pacer.throttled == 5
    clock.t += 1.1
    throttle(pacer, clock)  # a request sent after the cut: a new episode
    assert pacer.rate < rate  # type: ignore[operator]  # set by the first 429


def test_one_shared_pause_holds_every_request_until_retry_after_with_jitter(clock):
    pacer = make(clock)
    answered(pacer, clock, 10, every=0.05)
    throttle(pacer, clock, retry_after=3)
    waits = [pacer.try_acquire() for _ in range(20)]  # twenty threads asking during the pause
    assert all(3.0 <= w <= 3.0 + PAUSE_JITTER for w in waits)
    assert len(set(waits)) > 10  # they do not all wake at the same instant
    clock.t += 1.5
    assert 1.5 <= pacer.try_acquire() <= 1.5 + PAUSE_JITTER  # still held
    clock.t += 1.5
    assert pacer.try_acquire() == 0.0  # the moment has come
    assert pacer.paused_seconds == pytest.approx(3.0)


def test_a_later_retry_after_extends_the_pause_and_an_earlier_one_does_not_shorten_it(clock):
    pacer = make(clock)
    answered(pacer, clock, 10, every=0.05)
    in_flight = clock.t
    assert pacer.try_acquire() == 0.0
    throttle(pacer, clock, retry_after=2)
    pacer.release(in_flight, throttled=True, retry_after=1)  # shorter: ignored
    assert pacer.try_acquire() >= 2.0
    pacer.release(in_flight, throttled=True, retry_after=5)  # longer: the pause is extended
    assert pacer.try_acquire() >= 5.0


def test_without_retry_after_the_pause_is_the_default(clock):
    pacer = make(clock)
    throttle(pacer, clock, retry_after=None)
    assert pacing.DEFAULT_PAUSE <= pacer.try_acquire() <= pacing.DEFAULT_PAUSE + PAUSE_JITTER


def test_after_the_pause_requests_are_spaced_at_the_new_rate(clock):
    pacer = make(clock)
    answered(pacer, clock, 40, every=0.05)
    throttle(pacer, clock, retry_after=1)
    clock.t += 1.0 + PAUSE_JITTER
    cut = pacer.rate
    assert cut is not None
    assert cut == pytest.approx(BETA * 20, rel=0.05)
    sent = admissions(pacer, clock, 1.0)
    assert cut - 1 <= len(sent) <= cut + pacing.MIN_STEP + 1  # at most one additive step in a second


def test_the_cut_is_logged_once_per_episode_at_info_never_per_429(clock, caplog):
    caplog.set_level(logging.INFO, logger="airflow_provider_auralytik.hooks.pacing")
    pacer = make(clock)
    answered(pacer, clock, 40, every=0.05)
    sent = clock.t
    for _ in range(8):
        pacer.try_acquire()
    for _ in range(8):
        pacer.release(sent, throttled=True, retry_after=1)
    lines = [r for r in caplog.records if r.name == "airflow_provider_auralytik.hooks.pacing"]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    assert "slowing down to" in lines[0].getMessage()


# ---------------------------------------------------------------------------------------------
# Additive increase
# ---------------------------------------------------------------------------------------------


def test_sustained_success_climbs_back_additively_up_to_where_it_was(clock, caplog):
    caplog.set_level(logging.INFO, logger="airflow_provider_auralytik.hooks.pacing")
    pacer = make(clock)
    answered(pacer, clock, 40, every=0.05)
    throttle(pacer, clock, retry_after=1)
    clock.t += 1.0 + PAUSE_JITTER
    cut = pacer.rate
    assert cut is not None
    rates = []
    for _ in range(8):
        admissions(pacer, clock, INCREASE_INTERVAL + 0.01)  # a client that always has work
        rates.append(pacer.rate)
    steps = [b - a for a, b in zip([cut, *rates], rates, strict=False)]  # type: ignore[operator]  # rates are set
    # Additive: a fixed step per interval, two then three in a row without a 429 (never more).
    climbs = [min(k, pacing.MAX_STEPS) * pacing.MIN_STEP for k in range(1, len(steps))]
    assert steps[1:] == pytest.approx(climbs)
    assert (rates[-1] or 0) > 20  # back above the rate it had before the 429: probing for more
    assert pacer.in_flight_limit == 16
    assert sum("speeding up again" in r.getMessage() for r in caplog.records) == 1


def test_no_increase_while_the_rate_is_not_what_holds_requests_back(clock):
    pacer = make(clock)
    answered(pacer, clock, 40, every=0.05)
    throttle(pacer, clock, retry_after=1)
    clock.t += 1.0 + PAUSE_JITTER
    rate = pacer.rate
    answered(pacer, clock, 10, every=1.0)  # 1 request/s: far below the allowed rate
    assert pacer.rate == rate


# ---------------------------------------------------------------------------------------------
# max_requests_per_second
# ---------------------------------------------------------------------------------------------


def test_max_rate_paces_from_the_first_request_and_is_never_exceeded(clock):
    pacer = make(clock, max_rate=20)
    sent = admissions(pacer, clock, 10.0)
    assert len(sent) == pytest.approx(200, abs=2)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= (1 - pacing.CATCH_UP) / 20 - 0.0011  # a late wake-up may make up a tenth
    assert pacer.rate == 20  # success never lifts it above the quota


def test_max_rate_earns_no_burst_from_an_idle_spell(clock):
    pacer = make(clock, max_rate=10)
    assert pacer.try_acquire() == 0.0
    pacer.release(clock.t)
    clock.t += 60  # idle a minute
    assert pacer.try_acquire() == 0.0
    assert pacer.try_acquire() == pytest.approx(0.1 * (1 - pacing.CATCH_UP))


# ---------------------------------------------------------------------------------------------
# Several processes on one key converge to its rate (a simulated token-bucket server)
# ---------------------------------------------------------------------------------------------


def simulate(processes: int, requests_each: int, quota: float = 20.0, latency: float = 0.002) -> dict[str, float]:
    """Independent pacers (no shared state) against one token bucket of ``quota``/s, 16 workers each."""
    clock = FakeClock()
    tokens, updated = quota, clock.t
    pacers = [make(clock) for _ in range(processes)]
    left = [requests_each] * processes
    ready = [[clock.t] * 16 for _ in range(processes)]
    pending: list[tuple[float, int, float, int | None]] = []
    accepted = refused = 0
    first = last = None
    while any(left) or pending:
        now = clock.t
        for item in [p for p in pending if p[0] <= now]:
            pending.remove(item)
            _, i, sent, retry_after = item
            pacers[i].release(sent, throttled=retry_after is not None, retry_after=retry_after)
            left[i] += retry_after is not None
        for i, pacer in enumerate(pacers):
            for w in range(16):
                if not left[i] or ready[i][w] > now:
                    continue
                if (delay := pacer.try_acquire()) > 0:
                    ready[i][w] = now + delay
                    continue
                left[i] -= 1
                tokens, updated = min(quota, tokens + (now - updated) * quota), now
                if tokens >= 1:
                    tokens -= 1
                    accepted += 1
                    answer = None
                else:
                    refused += 1
                    answer = max(1, math.ceil((1 - tokens) / quota))
                first = now if first is None else first
                last = now
                pending.append((now + latency, i, now, answer))
                ready[i][w] = now + latency
        clock.t += 0.0005
    assert first is not None
    assert last is not None
    return {"refused_share": refused / (accepted + refused), "time_over_ideal": (last - first) / (accepted / quota)}


@pytest.mark.parametrize("processes", [1, 4])
def test_independent_processes_on_one_key_converge_to_its_rate(processes):
    result = simulate(processes, 512 // processes)
    assert result["refused_share"] < 0.10
    assert result["time_over_ideal"] < 1.25


# ---------------------------------------------------------------------------------------------
# The registry: one pacer per key and base URL in a process
# ---------------------------------------------------------------------------------------------


def test_one_pacer_per_key_and_base_url_and_the_key_never_shows():
    forget_pacers()
    try:
        a = pacer_for("https://api.test/v1", "secret-key-1", max_concurrency=16, max_rate=None)
        assert pacer_for("https://api.test/v1", "secret-key-1", max_concurrency=4, max_rate=None) is a
        assert pacer_for("https://api.test/v1", "secret-key-2", max_concurrency=16, max_rate=None) is not a
        assert pacer_for("https://other.test/v1", "secret-key-1", max_concurrency=16, max_rate=None) is not a
        assert "secret-key" not in repr(a)
        assert "secret-key" not in a.pace()
        assert "secret-key" not in repr(pacing._pacers)
        # A hook asking for a lower client-side limit lowers it for all.
        assert pacer_for("https://api.test/v1", "secret-key-1", max_concurrency=32, max_rate=5).rate == 5
        assert a.max_concurrency == 32
    finally:
        forget_pacers()


# ---------------------------------------------------------------------------------------------
# The retry budget: attempts for faults, wall-clock for 429s
# ---------------------------------------------------------------------------------------------


LIMITS = RetryLimits(max_retries=2, rate_limit_max_wait=30.0, backoff_base=1.0, backoff_max=4.0, retry_after_max=120.0)


def send_until_done(budget: RequestBudget, clock: FakeClock, outcomes: list[str]) -> None:
    """Drive one request through the budget like the hook's loop: each send takes the next outcome."""
    for outcome in outcomes:
        while (wait := budget.turn()) > 0:
            clock.sleep(wait)
        if outcome == "ok":
            budget.done()
            return
        delay = budget.retry(outcome, retry_after=1.0 if outcome == "429" else None, throttled=outcome == "429")
        clock.sleep(delay)
    raise AssertionError("ran out of outcomes")


def test_429s_never_spend_attempts(clock):
    budget = RequestBudget(make(clock), LIMITS)
    send_until_done(budget, clock, ["429"] * 10 + ["ok"])  # max_retries=2, but 429s are not faults
    assert budget.throttled == 10
    assert budget.faults == 0


def test_faults_spend_attempts_with_growing_backoff(clock):
    budget = RequestBudget(make(clock), LIMITS)
    with pytest.raises(BudgetExhausted) as info:
        send_until_done(budget, clock, ["HTTP 503"] * 5)
    assert info.value.rate_limited is False
    assert info.value.attempts == 3  # max_retries=2, plus the first
    assert [0.5 <= clock.sleeps[0] <= 1.0, 1.0 <= clock.sleeps[1] <= 2.0] == [True, True]


def test_a_429_storm_longer_than_the_budget_ends_the_request(clock):
    budget = RequestBudget(make(clock), LIMITS)
    start = clock.t
    with pytest.raises(BudgetExhausted) as info:
        send_until_done(budget, clock, ["429"] * 100)
    assert info.value.rate_limited is True
    assert 30.0 < info.value.waited <= 32.0
    assert clock.t - start <= 32.0


def test_a_request_held_by_another_threads_429_counts_that_wait(clock):
    pacer = make(clock)
    throttle(pacer, clock, retry_after=100)  # another thread's 429: every request held 100 s
    budget = RequestBudget(pacer, LIMITS)
    with pytest.raises(BudgetExhausted) as info:
        budget.turn()  # fails at once: the pause ends past the 30 s budget anyway
    assert info.value.rate_limited is True
    assert clock.sleeps == []


def test_async_acquire_sleeps_through_the_clock(clock):
    pacer = make(clock)
    throttle(pacer, clock, retry_after=2)

    async def go() -> float:
        return await pacer.aacquire()

    sent = asyncio.run(go())
    assert sum(clock.sleeps) == pytest.approx(2.0, abs=PAUSE_JITTER)
    assert sent == clock.t


def test_retry_after_zero_holds_nobody_and_cuts_nothing_but_backs_the_request_off(clock):
    pacer = make(clock)
    answered(pacer, clock, 40, every=0.05)
    budget = RequestBudget(pacer, LIMITS)
    assert budget.turn() == 0.0
    delay = budget.retry("429 Too Many Requests", retry_after=0.0, throttled=True)
    assert 0.5 <= delay <= 1.0  # backoff_base=1: this request alone waits
    assert pacer.rate is None  # no cut ...
    assert pacer.try_acquire() == 0.0  # ... and no pause for the others
    assert pacer.throttled == 1
    assert budget.faults == 0
