"""
Pacing of one API key: how fast, how many at once, and for how long to hold off after a 429.

One :class:`Pacer` per key and base URL in a process (:func:`pacer_for`), shared by every thread
and the async client of every hook on that connection. It is a good citizen of a shared quota,
the way TCP flows share a link, without talking to the other clients of the key:

* a 429 holds every request of the pacer until the server's ``Retry-After`` moment (one shared
  pause, a little jitter so waiters do not wake as one), and cuts the allowed rate to ``BETA`` x
  the rate the server accepted just before, and the requests in flight to ``BETA`` x as many
  (multiplicative decrease, once per episode: the 429s of requests sent before the cut are the same
  signal);
* every ``INCREASE_INTERVAL`` without a 429 in which the rate was the bottleneck, the rate climbs by
  a fixed step (additive increase; up to ``MAX_STEPS`` steps after as many such intervals in a row),
  and the in-flight limit by one, up to ``max_concurrency``;
* before the first 429 there is no rate limit, and the in-flight limit starts low and grows by one
  per answer (slow start: it doubles every round trip), so a fast server costs nothing and a limited
  one sees a small first burst (one request at the default 16 in flight; above it half of
  ``max_concurrency``, at least 16); from ``FAST_START_FROM`` in flight on, while the answers come as
  fast as the fastest so far, by ``FAST_START_GROWTH`` per answer (x4 every round trip): 256 in flight
  are open after 1 round trip instead of 8;
* ``max_rate`` (the connection's ``max_requests_per_second``) is a client-side limit the rate
  never exceeds: at or below the key's quota, no 429 at all.

The core (:meth:`Pacer.try_acquire`, :meth:`Pacer.release`) is thread-safe, never sleeps and reads
time from an injected :class:`Clock`; :meth:`Pacer.acquire` / :meth:`Pacer.aacquire` are the thin
sync and asyncio wrappers that sleep. :class:`RequestBudget` is the retry policy of one request
(attempts for faults, wall-clock for 429s), shared by the hook's sync and async loops.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Multiplicative decrease of the rate and the in-flight limit on a 429.
BETA = 0.8
#: Seconds of success (with the rate as the bottleneck) between two additive increases.
INCREASE_INTERVAL = 1.0
#: Additive increase per interval, requests/s: at least this, or this share of the rate after the cut.
MIN_STEP = 1.0
STEP_SHARE = 0.05
#: The k-th increase in a row without a 429 adds k steps, up to this many (a rate left alone by
#: the other clients of the key, once they are done, is found in seconds, not tens of seconds).
MAX_STEPS = 3
#: The rate never goes below this (requests/s).
MIN_RATE = 0.5
#: In-flight limit at the start, up to ``FAST_START_FROM`` in flight (slow start: +1 per answer until the
#: first 429): the default 16 starts with 1, so several processes sharing a small key open by doubling ...
INITIAL_IN_FLIGHT = 1
#: ... above it, this share of ``max_concurrency``, and at least ``FAST_START_FROM``: who asks for 64, 128
#: or 256 at once vouches for a key that takes a burst of 32, 64 or 128.
INITIAL_SHARE = 1 / 2
#: From this many in flight, slow start adds FAST_START_GROWTH per answer instead of 1, while the answers'
#: latency (its moving average) stays within FAST_START_LATENCY x the least seen: a key that took this many
#: at once without a 429 or a slower answer is not one whose burst is counted in units (the several
#: processes sharing a small key, at the default 16 in flight, still start by doubling).
FAST_START_FROM = 16
FAST_START_GROWTH = 3.0
FAST_START_LATENCY = 1.5
#: The server's accepted rate is measured over this many seconds (at least MIN_WINDOW of history).
WINDOW = 2.0
MIN_WINDOW = 1.0
#: Pause when a 429 has no usable Retry-After.
DEFAULT_PAUSE = 1.0
#: Waiters wake at most this much after a pause ends, spread at random.
PAUSE_JITTER = 0.05
#: Share of an interval a late request may make up for (burst of at most 1 + CATCH_UP).
CATCH_UP = 0.1
#: Longest wait for an in-flight slot before checking again.
MAX_SLOT_POLL = 0.02


def initial_in_flight(max_concurrency: int) -> int:
    """The in-flight limit slow start begins with (see ``INITIAL_SHARE``)."""
    if max_concurrency <= FAST_START_FROM:
        return INITIAL_IN_FLIGHT
    return max(FAST_START_FROM, math.floor(INITIAL_SHARE * max_concurrency))


class Clock:
    """Monotonic time and sleeping, in one place so tests can replace both with a fake."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = Clock()


class Pacer:
    """
    AIMD pacing of one API key (see the module docstring).

    :param max_concurrency: Upper bound of the in-flight limit.
    :param max_rate: Client-side limit, requests/s (``None``: only what 429s teach).
    :param name: How log lines name it (the base URL; never the key).
    """

    def __init__(
        self,
        *,
        max_concurrency: int,
        max_rate: float | None = None,
        name: str = "",
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.max_concurrency = max_concurrency
        self.max_rate = max_rate
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._limit = float(min(initial_in_flight(max_concurrency), max_concurrency))
        self._slow_start = True
        self._rate: float | None = max_rate
        self._step = max(MIN_STEP, STEP_SHARE * (max_rate or 0.0))
        self._next_slot = -math.inf
        self._pause_until = -math.inf
        self._last_cut = -math.inf
        self._last_change = -math.inf
        self._rate_before_cut: float | None = None
        self._accepted: deque[float] = deque()
        self._first_answer: float | None = None
        self._latency = 0.0
        self._least_latency = math.inf
        self._held_by_rate = False
        self._climbs = 0
        #: Totals since creation: 429 answers, and wall-clock seconds every request was held by a pause.
        self.throttled = 0
        self.paused_seconds = 0.0

    def __repr__(self) -> str:
        return f"Pacer({self.name!r}, {self.pace()})"

    # -- the core: thread-safe, never sleeps -------------------------------------------------

    def try_acquire(self) -> float:
        """``0.0``: send now (the request counts as in flight until :meth:`release`); else wait that long."""
        with self._lock:
            now = self.clock.now()
            if now < self._pause_until:
                return self._pause_until - now + self._rng.uniform(0, PAUSE_JITTER)
            if self._in_flight >= self._limit:
                return min(MAX_SLOT_POLL, max(0.001, self._latency / max(self._limit, 1.0)))
            if self._rate is not None:
                if self._next_slot > now:
                    self._held_by_rate = True
                    return self._next_slot - now
                # A wake-up a little late keeps its slot (the schedule does not drift); an idle spell
                # earns no burst: the next request waits nearly a whole interval.
                interval = 1.0 / self._rate
                self._next_slot = max(self._next_slot, now - CATCH_UP * interval) + interval
            self._in_flight += 1
            return 0.0

    def paused(self) -> bool:
        """Whether every request is held by a 429 pause right now."""
        with self._lock:
            return self.clock.now() < self._pause_until

    def release(self, sent_at: float, *, throttled: bool = False, retry_after: float | None = None) -> None:
        """A request sent at ``sent_at`` (this pacer's clock) got its answer: a 429 (``throttled``) or not."""
        with self._lock:
            now = self.clock.now()
            self._in_flight -= 1
            latency = max(now - sent_at, 0.0)
            self._latency = 0.8 * self._latency + 0.2 * latency
            self._least_latency = min(self._least_latency, latency)
            if throttled:
                self._on_429(now, sent_at, DEFAULT_PAUSE if retry_after is None else retry_after)
            else:
                self._on_answer(now)

    def _measured_rate(self, now: float) -> float | None:
        """Answers (not 429) per second over the last ``WINDOW`` s of sending, ``None`` with less than
        ``MIN_WINDOW`` s of it (a pause is not sending: it would read as a low rate)."""
        while self._accepted and self._accepted[0] < now - WINDOW:
            self._accepted.popleft()
        start = max(now - WINDOW, self._first_answer if self._first_answer is not None else now)
        if self._pause_until <= now:
            start = max(start, self._pause_until)
        if now - start < MIN_WINDOW:
            return None
        return sum(1 for t in self._accepted if t >= start) / (now - start)

    def _on_429(self, now: float, sent_at: float, pause: float) -> None:
        self.throttled += 1
        if pause <= 0:
            return  # "Retry-After: 0": the server holds nothing against the key; the request backs off alone
        until = now + max(pause, 0.0)
        if until > self._pause_until:
            self.paused_seconds += until - max(now, self._pause_until)
            self._pause_until = until
        self._next_slot = max(self._next_slot, self._pause_until)
        if sent_at <= self._last_cut:
            return  # sent before the last cut: the same episode, already acted on
        measured = self._measured_rate(now)
        before = self._rate
        if measured is None:  # a burst (the first one), or right after a pause: trust the allowed rate
            base = before if before is not None else len(self._accepted) / MIN_WINDOW
        else:
            base = measured if before is None else min(before, measured)
        self._rate = max(MIN_RATE, BETA * base)
        if self.max_rate is not None:
            self._rate = min(self._rate, self.max_rate)
        self._rate_before_cut = before if before is not None else base
        self._step = max(MIN_STEP, STEP_SHARE * self._rate)
        self._limit = max(1.0, math.floor(self._limit * BETA))
        self._slow_start = False
        self._last_cut = self._last_change = now
        self._climbs = 0
        log.info(
            "Auralytik API %s answered 429 Too Many Requests: slowing down to %.1f requests/s, %d in flight, "
            "all requests paused %.1f s.",
            self.name,
            self._rate,
            int(self._limit),
            pause,
        )

    def _on_answer(self, now: float) -> None:
        if self._first_answer is None:
            self._first_answer = now
        self._accepted.append(now)
        while self._accepted[0] < now - WINDOW:  # only the last WINDOW seconds are ever measured
            self._accepted.popleft()
        if self._slow_start:
            fast = self._limit >= FAST_START_FROM and self._latency <= FAST_START_LATENCY * self._least_latency
            self._limit = min(float(self.max_concurrency), self._limit + (FAST_START_GROWTH if fast else 1.0))
            return
        if now - self._last_change < INCREASE_INTERVAL or now < self._pause_until:
            return
        self._last_change = now
        self._limit = min(float(self.max_concurrency), self._limit + 1)
        if self._rate is None or (self.max_rate is not None and self._rate >= self.max_rate):
            return
        if not self._held_by_rate:
            return  # the rate is not what holds the requests back: raising it would prove nothing
        self._held_by_rate = False
        self._climbs += 1
        self._rate += self._step * min(self._climbs, MAX_STEPS)
        if self.max_rate is not None:
            self._rate = min(self._rate, self.max_rate)
        recovered = self._rate_before_cut
        if recovered is not None and self._rate >= recovered:
            self._rate_before_cut = None
            log.info(
                "Auralytik API %s: no 429 for %.0f s, speeding up again: %.1f requests/s, %d in flight.",
                self.name,
                now - self._last_cut,
                self._rate,
                int(self._limit),
            )

    # -- the thin wrappers that sleep -------------------------------------------------------

    def acquire(self) -> float:
        """Wait (sleeping) until a request may be sent; its send time, for :meth:`release`."""
        while (delay := self.try_acquire()) > 0:
            self.clock.sleep(delay)
        return self.clock.now()

    async def aacquire(self) -> float:
        """Async :meth:`acquire`, for the asyncio client."""
        while (delay := self.try_acquire()) > 0:
            await self.clock.asleep(delay)
        return self.clock.now()

    # -- what it does now -------------------------------------------------------------------

    def pace(self) -> str:
        """``"unpaced"``, or the rate and in-flight limit now and the 429s so far."""
        with self._lock:
            if self._rate is None and not self.throttled:
                return "unpaced"
            rate = "no rate limit" if self._rate is None else f"{self._rate:.1f} requests/s"
            return f"{rate}, {int(self._limit)} in flight, {self.throttled} throttled (429)"

    @property
    def rate(self) -> float | None:
        """The allowed requests/s now (``None``: unlimited)."""
        with self._lock:
            return self._rate

    @property
    def in_flight_limit(self) -> int:
        with self._lock:
            return int(self._limit)

    def in_flight_limit_soon(self) -> int:
        """The most the in-flight limit can be one round trip from now: in slow start each request
        in flight may add ``FAST_START_GROWTH``, after it the limit climbs by one at most."""
        with self._lock:
            growth = (1 + FAST_START_GROWTH) * self._limit if self._slow_start else self._limit + 1
            return int(min(growth, self.max_concurrency))


# ---------------------------------------------------------------------------------------------
# One pacer per key and base URL in a process
# ---------------------------------------------------------------------------------------------

_pacers: dict[tuple[str, str], Pacer] = {}
_pacers_lock = threading.Lock()


def key_fingerprint(api_key: str) -> str:
    """A short hash that tells keys apart in a registry, never the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def pacer_for(base_url: str, api_key: str, *, max_concurrency: int, max_rate: float | None) -> Pacer:
    """
    The process's pacer of that key on that base URL, created on first use.

    Hooks that ask for the same pacer with other limits share it: the largest ``max_concurrency``
    and the smallest ``max_rate`` win.
    """
    key = (base_url, key_fingerprint(api_key))
    with _pacers_lock:
        pacer = _pacers.get(key)
        if pacer is None:
            pacer = _pacers[key] = Pacer(
                max_concurrency=max_concurrency, max_rate=max_rate, name=base_url, clock=SYSTEM_CLOCK
            )
            return pacer
    with pacer._lock:
        pacer.max_concurrency = max(pacer.max_concurrency, max_concurrency)
        if max_rate is not None and (pacer.max_rate is None or max_rate < pacer.max_rate):
            pacer.max_rate = max_rate
            pacer._rate = max_rate if pacer._rate is None else min(pacer._rate, max_rate)
    return pacer


def forget_pacers() -> None:
    """Drop every pacer (tests; a new clock takes effect for pacers created afterwards)."""
    with _pacers_lock:
        _pacers.clear()


# ---------------------------------------------------------------------------------------------
# The retry policy of one request, for the sync and the async loop alike
# ---------------------------------------------------------------------------------------------


@dataclass
class RetryLimits:
    """The budgets: ``max_retries`` for faults (5xx, dropped connections, bad bodies), seconds for 429s."""

    max_retries: int
    rate_limit_max_wait: float
    backoff_base: float
    backoff_max: float
    retry_after_max: float


class BudgetExhausted(Exception):
    """A request ran out of its budget: ``rate_limited`` tells which one."""

    def __init__(self, reason: str, *, attempts: int, rate_limited: bool, waited: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.rate_limited = rate_limited
        self.waited = waited


class RequestBudget:
    """
    One request's way through the pacer and its retries.

    The hook's loop, sync or async, is: wait :meth:`turn` (0: go), send, then :meth:`done` on
    an answer, or :meth:`retry` on a transient outcome, which says how long to back off or raises
    :class:`BudgetExhausted`. 429s spend wall-clock time (``rate_limit_max_wait``, counted from the
    first moment this request was held by a 429), never attempts.
    """

    def __init__(self, pacer: Pacer, limits: RetryLimits, rng: random.Random | None = None) -> None:
        self.pacer = pacer
        self.limits = limits
        self.rng = rng or random
        self.faults = 0
        self.throttled = 0
        self._held_since: float | None = None
        self._sent_at: float | None = None

    def _check_wait(self, reason: str, ahead: float = 0.0) -> None:
        """Raise if this request has been (or, ``ahead`` seconds from now, will have been) held too long."""
        now = self.pacer.clock.now()
        if self._held_since is None:
            self._held_since = now
        waited = now + ahead - self._held_since
        if waited > self.limits.rate_limit_max_wait:
            raise BudgetExhausted(reason, attempts=self.faults + self.throttled + 1, rate_limited=True, waited=waited)

    def turn(self) -> float:
        """``0.0``: send now; else the seconds to wait before asking again."""
        delay = self.pacer.try_acquire()
        if delay > 0:
            if self.pacer.paused():
                # Fail now rather than after a pause that would end past the budget anyway.
                self._check_wait("429 Too Many Requests", ahead=delay)
            return delay
        self._sent_at = self.pacer.clock.now()
        return 0.0

    def _release(self, *, throttled: bool = False, retry_after: float | None = None) -> None:
        if self._sent_at is not None:
            self.pacer.release(self._sent_at, throttled=throttled, retry_after=retry_after)
            self._sent_at = None

    def done(self) -> None:
        """The request got an answer that is not a 429 (a success, or an error not worth retrying)."""
        self._release()

    def throttled_now(self, retry_after: float | None) -> None:
        """A 429 is in: the pacer learns it at once (its pause holds every request from now, not from when
        this request's answer is read); :meth:`retry` then counts it as usual."""
        self._release(throttled=True, retry_after=self._bounded(retry_after))

    def _bounded(self, retry_after: float | None) -> float | None:
        return None if retry_after is None else min(max(retry_after, 0.0), self.limits.retry_after_max)

    def retry(self, reason: str, *, retry_after: float | None, throttled: bool) -> float:
        """
        A transient outcome: seconds to back off before the next :meth:`turn`.

        After a 429 the pacer holds every request until the ``Retry-After`` moment (0 here); one
        that says "now" (``Retry-After: 0``) is backed off like a fault, without spending an attempt.
        """
        limits = self.limits
        retry_after = self._bounded(retry_after)
        if throttled:
            self.throttled += 1
            self._release(throttled=True, retry_after=retry_after)
            self._check_wait(reason)
            return self._backoff(self.throttled) if retry_after == 0 else 0.0
        self._release()
        self.faults += 1
        if self.faults > limits.max_retries:
            raise BudgetExhausted(reason, attempts=self.faults + self.throttled, rate_limited=False, waited=0.0)
        return retry_after if retry_after is not None else self._backoff(self.faults)

    def _backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
        ceiling = min(self.limits.backoff_max, self.limits.backoff_base * (2 ** (attempt - 1)))
        return self.rng.uniform(ceiling / 2, ceiling)
