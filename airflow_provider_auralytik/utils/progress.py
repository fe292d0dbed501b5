"""Progress lines for long exports: done of total, rate, ETA, the API pace, at most every few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol


class _Log(Protocol):
    def info(self, event: Any, *args: Any, **kw: Any) -> Any: ...


class Progress:
    """
    Count records and log ``"12,000 of ~20,900 messages (57%), 3,400/s, ETA 3s"`` now and then.

    ``total`` is a callable because the total is often known only after the first request.
    ``pace`` (e.g. ``AuralytikHook.pace``) tells how fast the API lets the export go; it is added
    to the line once the hook paces itself (after a 429, or with ``max_requests_per_second``).
    Only counts are logged: never record content.
    """

    def __init__(
        self,
        log: _Log,
        noun: str,
        *,
        total: Callable[[], int | None] = lambda: None,
        pace: Callable[[], str] = lambda: "unpaced",
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.noun = noun
        self.total = total
        self.pace = pace
        self.interval = interval
        self.clock = clock
        self.count = 0
        self.started = clock()
        self._next_report = self.started + interval

    def add(self, n: int = 1) -> None:
        self.count += n
        now = self.clock()
        if now >= self._next_report:
            self._next_report = now + self.interval
            self.log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        text = self._counts(now)
        pace = self.pace()
        return text if pace == "unpaced" else f"{text}; API pace: {pace}"

    def _counts(self, now: float | None) -> str:
        elapsed = max((now if now is not None else self.clock()) - self.started, 1e-9)
        rate = self.count / elapsed
        text = f"{self.count:,} {self.noun}"
        total = self.total()
        if total:
            share = min(self.count / total, 1.0)
            text = f"{self.count:,} of ~{total:,} {self.noun} ({share:.0%})"
            if rate > 0 and self.count < total:
                text += f", {rate:,.0f}/s, ETA {max(total - self.count, 0) / rate:,.0f}s"
                return text
        return f"{text}, {rate:,.0f}/s"

    def summary(self) -> str:
        """The closing line: ``"4,814 messages in 0.4 s (12,035/s)"``."""
        elapsed = max(self.clock() - self.started, 1e-9)
        return f"{self.count:,} {self.noun} in {elapsed:,.1f} s ({self.count / elapsed:,.0f}/s)"
