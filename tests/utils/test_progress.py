"""Progress lines: throttled, with done of total, rate and ETA; counts only."""

from __future__ import annotations

from airflow_provider_auralytik.utils.progress import Progress


class FakeLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, event, *args, **kw):
        self.lines.append(event % args)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_logs_at_most_once_per_interval_with_total_rate_and_eta():
    log, clock = FakeLog(), Clock()
    total: dict[str, int | None] = {"value": None}
    progress = Progress(log, "messages", total=lambda: total["value"], interval=5.0, clock=clock)
    progress.add(100)
    assert log.lines == []  # nothing before the first interval
    total["value"] = 1000
    clock.now += 5.0
    progress.add(150)
    clock.now += 1.0
    progress.add(10)  # within the interval: not logged
    assert log.lines == ["250 of ~1,000 messages (25%), 50/s, ETA 15s"]
    clock.now += 5.0
    progress.add(740)
    assert log.lines[-1] == "1,000 of ~1,000 messages (100%), 91/s"


def test_unknown_total_and_summary():
    log, clock = FakeLog(), Clock()
    progress = Progress(log, "conversations", interval=1.0, clock=clock)
    clock.now += 2.0
    progress.add(3000)
    assert log.lines == ["3,000 conversations, 1,500/s"]
    assert progress.summary() == "3,000 conversations in 2.0 s (1,500/s)"


def test_pace_is_shown_once_the_api_paces_the_export():
    log, clock = FakeLog(), Clock()
    pace = {"now": "unpaced"}
    progress = Progress(log, "messages", total=lambda: 100, pace=lambda: pace["now"], interval=1.0, clock=clock)
    clock.now += 1.0
    progress.add(10)
    assert log.lines == ["10 of ~100 messages (10%), 10/s, ETA 9s"]
    pace["now"] = "16.0 requests/s, 12 in flight, 3 throttled (429)"
    clock.now += 1.0
    progress.add(10)
    assert (
        log.lines[-1]
        == "20 of ~100 messages (20%), 10/s, ETA 8s; API pace: 16.0 requests/s, 12 in flight, 3 throttled (429)"
    )
