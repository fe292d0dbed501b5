"""
Requests per poke of ``AuralytikConversationsCompletedSensor`` over a 5,000-conversation window.

Starts the local API sandbox (its ``dateTo`` is inclusive, on purpose) with one day of 5,000
conversations, and counts the HTTP requests the sandbox receives for each poke, in four states:

* all completed;
* waiting (conversations complete over the next hour);
* all completed, plus a non-completed conversation created exactly at the window's end
  (``date_to``: outside the half-open window, but inside the server's inclusive answer);
* all completed, plus a non-completed conversation created exactly at the window's start
  (``date_from``: inside the window, so the sensor must keep waiting).

For each state: the first poke of a sensor, the later pokes of the same sensor (``mode="poke"``,
which remembers the statuses it saw), a poke in ``mode="reschedule"`` (a fresh task each time, no
memory), and the checks of the deferrable trigger (the same check, driven asynchronously).

Run::

    python benchmarks/sensor_requests_per_poke.py [--per-day 5000]

Prints the table as Markdown and writes it into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from _docs import write_section

# Airflow reads its configuration when first imported: keep this script away from ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="auralytik-bench-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airflow_provider_auralytik.sandbox import Sandbox, SandboxConfig  # noqa: E402 - after AIRFLOW_HOME is set

DAY = date(2024, 1, 15)
DATE_FROM = "2024-01-15T00:00:00Z"
DATE_TO = "2024-01-16T00:00:00Z"
LATER_POKES = 3


def _sensor(**kwargs: Any) -> Any:
    from airflow_provider_auralytik.sensors.conversations import AuralytikConversationsCompletedSensor

    return AuralytikConversationsCompletedSensor(task_id="wait", date_from=DATE_FROM, date_to=DATE_TO, **kwargs)


def _poke(sandbox: Sandbox, sensor: Any) -> tuple[bool, int]:
    """One poke, and the requests the sandbox received for it."""
    sandbox.reset_stats()
    done = bool(sensor.poke({}))
    return done, sandbox.stats.requests


def _trigger_checks(sandbox: Sandbox, checks: int) -> tuple[bool, list[int]]:
    """What the trigger's run loop does each ``poll_interval``: the same check, async, with memory."""
    from airflow_provider_auralytik.conversations.completed_check import CheckMemory, build_check, run_async
    from airflow_provider_auralytik.hooks.auralytik import AuralytikHook

    async def run() -> tuple[bool, list[int]]:
        hook, memory = AuralytikHook(), CheckMemory()
        counts, done = [], False
        try:
            for _ in range(checks):
                sandbox.reset_stats()
                completion = await run_async(build_check(memory, date_from=DATE_FROM, date_to=DATE_TO), hook)
                counts.append(sandbox.stats.requests)
                done = completion.done
        finally:
            await hook.aclose()
        return done, counts

    return asyncio.run(run())


def measure(
    state: str, per_day: int, prepare: Callable[[Sandbox], None], complete_within: float = 0.0
) -> dict[str, Any]:
    config = SandboxConfig(days=1, per_day=per_day, start=DAY, complete_within=complete_within)
    with Sandbox(config) as sandbox:
        prepare(sandbox)
        os.environ["AIRFLOW_CONN_AURALYTIK_DEFAULT"] = json.dumps(
            {"conn_type": "auralytik", "host": sandbox.url, "password": sandbox.api_key}
        )
        in_window = len(sandbox.conversations_in(DATE_FROM, DATE_TO))

        poke_mode = _sensor()
        done, first = _poke(sandbox, poke_mode)
        later = [_poke(sandbox, poke_mode)[1] for _ in range(LATER_POKES)]
        poke_mode.hook.close()

        rescheduled = []
        for _ in range(LATER_POKES):
            # Reschedule mode: every poke is a new task run, with nothing remembered.
            fresh = _sensor(mode="reschedule")
            rescheduled.append(_poke(sandbox, fresh)[1])
            fresh.hook.close()

        trigger_done, trigger = _trigger_checks(sandbox, 1 + LATER_POKES)
    if trigger_done != done:
        raise AssertionError(f"{state}: the trigger and the sensor disagree")
    return {
        "state": state,
        "conversations": in_window,
        "done": done,
        "first": first,
        "later": later,
        "reschedule": rescheduled,
        "trigger_first": trigger[0],
        "trigger_later": trigger[1:],
    }


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def table(rows: list[dict[str, Any]], per_day: int) -> str:
    lines = [
        '| state | conversations in window | sensor says | first poke | later pokes (`mode="poke"`) '
        '| each poke (`mode="reschedule"`) | trigger (`deferrable=True`): first / later checks |',
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['state']} | {row['conversations']:,} | {'done' if row['done'] else 'waiting'} "
            f"| {row['first']} | {_span(row['later'])} | {_span(row['reschedule'])} "
            f"| {row['trigger_first']} / {_span(row['trigger_later'])} |"
        )
    naive = math.ceil(per_day / 100)
    notes = [
        "",
        f"Requests received by the sandbox per poke (one day of {per_day:,} conversations, sandbox `dateTo` "
        f"inclusive). Reading the whole window instead would take at least {naive} requests of 100 items.",
        "",
        "- A waiting poke stops at the first proof that a conversation inside the window is not completed: "
        "the window's first page (newest first here), else one page per non-completed status seen so far "
        "(`active` to begin with). `totalCount` is never used to say *done*.",
        "- A poke that finds no such proof lists the window exactly (one request per ~75 conversations) before "
        "saying done: the poke that finds a window done costs that listing, once.",
        "- A non-completed conversation at `date_to` is outside the half-open window: the sensor says done "
        "after the exact listing; one at `date_from` is inside: waiting, proven by the status page.",
        "",
        f"Produced by `python benchmarks/sensor_requests_per_poke.py --per-day {per_day}` "
        f"on {datetime.now(timezone.utc):%Y-%m-%d}.",
    ]
    return "\n".join(lines + notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--per-day", type=int, default=5000, help="conversations in the window")
    args = parser.parse_args(argv)

    def nothing(sandbox: Sandbox) -> None:
        return None

    def active_at(instant: str) -> Callable[[Sandbox], None]:
        def add(sandbox: Sandbox) -> None:
            sandbox.add_conversation(createdAt=instant, status="active")

        return add

    rows = [
        measure("all completed", args.per_day, nothing),
        measure("waiting (completing over the next hour)", args.per_day, nothing, complete_within=3600),
        measure("all completed + a non-completed one exactly at `date_to`", args.per_day, active_at(DATE_TO)),
        measure("all completed + a non-completed one exactly at `date_from`", args.per_day, active_at(DATE_FROM)),
    ]
    expected = [True, False, True, False]
    if [row["done"] for row in rows] != expected:
        raise AssertionError(f"unexpected outcomes: {[row['done'] for row in rows]}, expected {expected}")

    markdown = table(rows, args.per_day)
    print(markdown)
    write_section("sensor", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
