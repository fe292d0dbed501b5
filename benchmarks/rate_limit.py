"""
Benchmark of exports sharing one rate-limited key (run: python benchmarks/rate_limit.py).

1. 1, 4 and 8 messages exports at once, each in its own process (as mapped slices of one day on
   separate workers), on a sandbox limiting the key to 20 requests/s (token bucket, 429 with
   ``Retry-After`` in whole seconds): tasks that succeeded, share of requests answered 429, and
   first-to-last request time over the ideal at the quota (requests answered, not 429, / 20).
2. What pacing costs when no limit is hit: the export benchmark's figures (50 ms latency, 16 and 64
   in flight; CPU at zero latency) with the pacer as shipped and with its slow start taken out (the
   in-flight limit at ``max_concurrency`` from the first request: ``_export_once.py`` with
   ``AURALYTIK_BENCH_NO_SLOW_START=1``), alternating runs in the same session.

Writes the results to docs/benchmarks.md (section ``rate-limit``) and prints them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from _docs import write_section

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airflow_provider_auralytik.sandbox import Sandbox, SandboxConfig  # noqa: E402  # after the path

PY = sys.executable
QUOTA = 20
DAY = datetime(2026, 3, 2, tzinfo=timezone.utc)
REPEATS = 3

WORKER = """
import json, os, sys, tempfile
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="auralytik-bench-"))
import logging
from airflow_provider_auralytik.operators.export import AuralytikExportMessagesOperator
logging.disable(logging.INFO)
date_from, date_to = sys.argv[1:3]
with tempfile.TemporaryDirectory() as out:
    summary = AuralytikExportMessagesOperator(
        task_id="slice", destination=out, date_from=date_from, date_to=date_to
    ).execute(context={})
print(json.dumps(summary))
"""


def shared_key(exports: int) -> dict[str, Any]:
    """``exports`` adjacent slices of one day of 500 conversations, at once, on a 20 requests/s key."""
    config = SandboxConfig(start="2026-03-02", days=1, per_day=500, max_messages=8, rate_limit=QUOTA)
    with Sandbox(config) as sandbox:
        env = {
            **os.environ,
            "AIRFLOW_CONN_AURALYTIK_DEFAULT": json.dumps(
                {"conn_type": "auralytik", "host": sandbox.url, "password": sandbox.api_key}
            ),
        }
        width = timedelta(days=1) / exports
        procs = [
            subprocess.Popen(
                [PY, "-c", WORKER, (DAY + i * width).isoformat(), (DAY + (i + 1) * width).isoformat()],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(exports)
        ]
        for proc in procs:
            proc.communicate(timeout=900)
        stats = sandbox.stats
        answered = stats.requests - stats.throttled
        assert stats.first_request_at is not None
        assert stats.last_request_at is not None
        return {
            "exports": exports,
            "succeeded": sum(proc.returncode == 0 for proc in procs),
            "requests": stats.requests,
            "throttled": stats.throttled,
            "elapsed": stats.last_request_at - stats.first_request_at,
            "ideal": answered / QUOTA,
        }


def tree_at_head() -> Path:
    """The committed tree, unpacked on its own (a work tree being edited would not measure it)."""
    target = Path(tempfile.mkdtemp(prefix="auralytik-head-"))
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def export_once(
    tree: Path, url: str, window: tuple[str, str], concurrency: int, *, slow_start: bool = True
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree), "AURALYTIK_BENCH_NO_SLOW_START": "" if slow_start else "1"}
    out = subprocess.run(
        [PY, str(tree / "benchmarks" / "_export_once.py"), url, *window, str(concurrency), "messages"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def no_limit_cost() -> list[str]:
    """Export wall time (50 ms latency) and CPU (no latency), without and with slow start, alternating."""
    tree = tree_at_head()
    day = ("2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z")
    trees = {"no slow start": False, "as shipped": True}
    walls: dict[tuple[str, int], list[float]] = {}
    cpus: dict[str, list[float]] = {}
    slow = SandboxConfig(start="2026-01-01", days=3, per_day=2000, latency_ms=50)
    fast = SandboxConfig(start="2026-01-01", days=3, per_day=2000)
    with Sandbox(slow) as sandbox:
        for _ in range(REPEATS):
            for label, slow_start in trees.items():
                for n in (16, 64):
                    run = export_once(tree, sandbox.url, day, n, slow_start=slow_start)
                    walls.setdefault((label, n), []).append(run["export_wall_s"])
    with Sandbox(fast) as sandbox:
        for _ in range(REPEATS):
            for label, slow_start in trees.items():
                run = export_once(tree, sandbox.url, day, 16, slow_start=slow_start)
                cpus.setdefault(label, []).append(run["export_cpu_s"] / run["messages"] * 100_000)
    rows = [
        "| pacer | wall s, 16 in flight (50 ms) | wall s, 64 in flight (50 ms) | CPU s per 100k messages (0 ms) |",
        "|---|---|---|---|",
    ]
    medians = {
        label: (
            statistics.median(walls[(label, 16)]),
            statistics.median(walls[(label, 64)]),
            statistics.median(cpus[label]),
        )
        for label in trees
    }
    for label, (w16, w64, cpu) in medians.items():
        rows.append(f"| {label} | {w16:.2f} | {w64:.2f} | {cpu:.2f} |")
    (b16, b64, bcpu), (a16, a64, acpu) = medians["no slow start"], medians["as shipped"]
    rows.append(
        f"| change | {(a16 / b16 - 1) * 100:+.1f}% | {(a64 / b64 - 1) * 100:+.1f}% | {(acpu / bcpu - 1) * 100:+.1f}% |"
    )
    return rows


def main() -> None:
    started = time.perf_counter()
    rows = [
        f"One day of 500 conversations (up to 8 messages each) on a key limited to {QUOTA} requests/s, "
        "cut into N adjacent slices exported at once, each in its own process with default settings "
        "(16 in flight, no max_requests_per_second).",
        "",
        "| exports at once | tasks succeeded | requests | answered 429 | first to last request "
        "| ideal at the quota | time / ideal |",
        "|---|---|---|---|---|---|---|",
    ]
    for exports in (1, 4, 8):
        r = shared_key(exports)
        rows.append(
            f"| {exports} | {r['succeeded']} of {exports} | {r['requests']:,} | "
            f"{r['throttled']} ({r['throttled'] / r['requests']:.1%}) | {r['elapsed']:.1f} s | {r['ideal']:.1f} s | "
            f"{r['elapsed'] / r['ideal']:.2f} |"
        )
    rows += [
        "",
        "No limit hit: the export benchmark's day (2,000 conversations) with the pacer's slow start taken out "
        f"and as shipped, alternating, median of {REPEATS} runs each:",
        "",
        *no_limit_cost(),
    ]
    table = "\n".join(rows)
    print(table)
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    write_section("rate-limit", table)


if __name__ == "__main__":
    main()
