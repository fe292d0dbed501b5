"""
Benchmark of the messages export against the local sandbox (run: python benchmarks/export_messages.py).

Each export runs in a fresh Python process (``_export_once.py``); the sandbox serves from a thread
of this process, which does nothing else, so:

* the **first→last request span** (first request received to last answer ready) and the **most
  requests in flight** are measured by the sandbox itself (``SandboxStats``), not by the client;
* the **sandbox's CPU** is this process's CPU time over the export (``resource.getrusage``): shown as
  a share of the span, to check that the sandbox is not what limits the client. It serves on one
  asyncio event loop (``Sandbox(asyncio_server=True)``: the latency is a timer, not 256 sleeping
  threads) and messages bodies are encoded ahead of time (``Sandbox.preencode_messages``).

Measures, at 50 ms latency per request, efficiency = ideal / span with ideal = requests x 50 ms /
max_concurrency, for max_concurrency 16, 64, 128 and 256, on one day (~2,000 conversations) and on
ten days (~20,000); then, at zero latency, peak RSS for 1 and 20 days and CPU in ``execute()`` per
1,000 requests. Writes the tables into docs/benchmarks.md (between markers) and prints them.

Options: ``--repeats N`` (default 3: median by span), ``--ten-day-repeats N`` (default 1),
``--only-day`` (skip the ten-day and memory runs), ``--no-write``, ``--tree PATH`` (measure the export
of another checkout, e.g. ``git archive <commit> | tar -x -C PATH``, for a before/after).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _docs import write_section

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airflow_provider_auralytik.sandbox import Sandbox, SandboxConfig  # noqa: E402  # after sys.path names the repository

PY = sys.executable
#: The provider tree whose export is measured (``--tree``: e.g. an older checkout, for a before/after).
TREE = ROOT
PYCACHE = Path(tempfile.gettempdir()) / "auralytik-bench-pycache"
LABEL = (
    "this provider (asyncio pool, parallel listing, httptools, msgspec, slot freed on answer, first page early, "
    "a conversation's lines in one block)"
)
LATENCY_MS = 50
PER_DAY = 2000
START = "2026-01-01"
DAY = ("2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z")
TEN_DAYS = ("2026-01-02T00:00:00Z", "2026-01-12T00:00:00Z")
TWENTY_DAYS = ("2026-01-02T00:00:00Z", "2026-01-22T00:00:00Z")
CONCURRENCIES = (16, 64, 128, 256)

#: Issue 13's figures (an independent simulator, 50 ms, one day of 2,010 conversations, 2,038
#: requests), threaded ``requests`` client: the baseline.
BASELINE = {16: (6.91, 17, 6.37, 0.92), 64: (1.87, 65, 1.59, 0.85), 128: (2.15, 87, 0.80, 0.37)}
#: This benchmark's figures before the second pass of issue 13 (commit 44b3f4c: h11, json, gc, slow start
#: doubling from 1), one day and ten days: span, most in flight, ideal, efficiency.
PREVIOUS_LABEL = "before the second pass (44b3f4c: h11 parser, json, no gc freeze, doubling slow start)"
PREVIOUS_DAY = {
    16: (6.82, 16, 6.34, 0.93),
    64: (1.97, 64, 1.58, 0.80),
    128: (1.35, 128, 0.79, 0.59),
    256: (1.18, 256, 0.40, 0.34),
}
#: One day before the third pass (commit 04022a8: 1/16 slow start, no connections opened ahead, the slot
#: freed after decoding, the JSON line pattern search on every line), measured on this benchmark's
#: microsecond sandbox (``--tree``, median of 3): span, most in flight, ideal, efficiency.
THIRD_PASS_LABEL = "before the third pass (04022a8, same sandbox)"
THIRD_PASS_DAY = {
    16: (6.73, 16, 6.34, 0.94),
    64: (1.87, 64, 1.58, 0.85),
    128: (1.12, 128, 0.79, 0.71),
    256: (0.84, 256, 0.40, 0.47),
}
#: One day before the fourth pass (commit d1eef64: the first page's messages fetched only once its pieces
#: were listed), measured on this benchmark's sandbox with ``--tree``, median of 5.
FOURTH_PASS_LABEL = "before the fourth pass (d1eef64, same sandbox)"
FOURTH_PASS_DAY = {
    16: (6.65, 16, 6.34, 0.95),
    64: (1.80, 64, 1.58, 0.88),
    128: (1.00, 128, 0.79, 0.79),
    256: (0.63, 256, 0.40, 0.63),
}
#: One day before the fifth pass (commit 1798dff: slow start from a quarter, a JSON line per message, an
#: asyncio.timeout per request), measured on this benchmark's sandbox at the start of the pass, median of 5.
FIFTH_PASS_LABEL = "before the fifth pass (1798dff, same sandbox)"
FIFTH_PASS_DAY = {
    16: (6.69, 16, 6.34, 0.95),
    64: (1.76, 64, 1.58, 0.90),
    128: (0.96, 128, 0.79, 0.83),
    256: (0.58, 256, 0.40, 0.68),
}
#: Ten days before the fifth pass (1798dff), as this benchmark measured them then (median of 3).
FIFTH_PASS_TEN_LABEL = "before the fifth pass (1798dff)"
FIFTH_PASS_TEN = {
    16: (65.45, 16, 63.68, 0.97),
    64: (16.56, 64, 15.92, 0.96),
    128: (8.46, 128, 7.96, 0.94),
    256: (5.17, 256, 3.98, 0.77),
}
#: Ten days before the fourth pass (d1eef64), as this benchmark measured them then (median of 3).
FOURTH_PASS_TEN_LABEL = "before the fourth pass (d1eef64)"
FOURTH_PASS_TEN = {
    16: (65.25, 16, 63.68, 0.98),
    64: (16.62, 64, 15.92, 0.96),
    128: (8.52, 128, 7.96, 0.93),
    256: (5.06, 256, 3.98, 0.79),
}
PREVIOUS_TEN = {
    16: (67.00, 16, 63.68, 0.95),
    64: (19.77, 64, 15.92, 0.81),
    128: (11.85, 128, 7.96, 0.67),
    256: (8.12, 256, 3.98, 0.49),
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def export_env() -> dict[str, str]:
    """The export process's environment: bytecode cached as in a deployment (this machine's
    ``PYTHONDONTWRITEBYTECODE=1`` would recompile Airflow's modules in every process)."""
    env = {**os.environ, "PYTHONPATH": str(TREE), "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def export_once(sandbox: Sandbox, window: tuple[str, str], concurrency: int) -> dict[str, Any]:
    """One export in a fresh process; the sandbox's view of it added to the export's own figures."""
    sandbox.reset_stats()
    cpu0, start = cpu_seconds(), time.perf_counter()
    out = subprocess.run(
        [PY, str(TREE / "benchmarks" / "_export_once.py"), sandbox.url, *window, str(concurrency), "messages"],
        check=True,
        capture_output=True,
        text=True,
        env=export_env(),
    )
    sandbox_cpu = cpu_seconds() - cpu0
    result = json.loads(out.stdout.strip().splitlines()[-1])
    stats = sandbox.stats
    span = stats.span or 0.0
    result.update(
        process_wall_s=time.perf_counter() - start,
        sandbox_requests=stats.requests,
        span_s=span,
        max_in_flight=stats.max_in_flight,
        sandbox_cpu_s=sandbox_cpu,
        ideal_s=stats.requests * sandbox.config.latency_ms / 1000 / concurrency,
    )
    return result


def ceiling_once(sandbox: Sandbox, window: tuple[str, str], requests: int, concurrency: int) -> dict[str, Any]:
    """The same number of requests by the least client there is (``_ceiling_once.py``): the machine's ceiling."""
    ids = sandbox.conversations_in(*window)
    sandbox.reset_stats()
    cpu0 = cpu_seconds()
    subprocess.run(
        [
            PY,
            str(ROOT / "benchmarks" / "_ceiling_once.py"),
            sandbox.url,
            sandbox.api_key,
            str(requests),
            str(concurrency),
            *ids,
        ],
        check=True,
        env=export_env(),
    )
    stats = sandbox.stats
    return {
        "span_s": stats.span or 0.0,
        "max_in_flight": stats.max_in_flight,
        "sandbox_cpu_s": cpu_seconds() - cpu0,
        "ideal_s": stats.requests * sandbox.config.latency_ms / 1000 / concurrency,
    }


def median_run(sandbox: Sandbox, window: tuple[str, str], concurrency: int, repeats: int) -> dict[str, Any]:
    runs = sorted((export_once(sandbox, window, concurrency) for _ in range(repeats)), key=lambda r: r["span_s"])
    best = runs[len(runs) // 2]
    best["spans"] = [r["span_s"] for r in runs]
    return best


def efficiency_table(
    runs: dict[int, dict[str, Any]],
    baseline: bool,
    ceiling: dict[int, dict[str, Any]] | None = None,
    previous: list[tuple[str, dict[int, tuple[float, int, float, float]]]] | None = None,
) -> list[str]:
    rows = [
        "| client | max_concurrency | first→last request | most in flight | ideal | efficiency | sandbox CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    recorded = [("baseline (issue 13: threaded `requests`, sequential listing)", BASELINE if baseline else {})]
    recorded += previous or []
    for label, figures in recorded:
        for n, (span, most, ideal, eff) in figures.items():
            rows.append(f"| {label} | {n} | {span:.2f} s | {most} | {ideal:.2f} s | {eff:.2f} | |")
    rows += [table_row(LABEL, n, run) for n, run in runs.items()]
    if ceiling:
        label = "machine ceiling (a raw asyncio client, the same number of requests, no listing, no writing)"
        rows += [table_row(label, n, run) for n, run in ceiling.items()]
    return rows


def table_row(label: str, n: int, run: dict[str, Any]) -> str:
    eff = run["ideal_s"] / run["span_s"] if run["span_s"] else 0.0
    sandbox_share = 100 * run["sandbox_cpu_s"] / max(run["span_s"], 1e-9)
    return (
        f"| {label} | {n} | {run['span_s']:.2f} s | {run['max_in_flight']} | "
        f"{run['ideal_s']:.2f} s | {eff:.2f} | {sandbox_share:.0f}% |"
    )


def main() -> None:
    global TREE, LABEL
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ten-day-repeats", type=int, default=1)
    parser.add_argument("--only-day", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--tree", type=Path, default=ROOT, help="measure the export of this checkout")
    parser.add_argument("--label", default=LABEL, help="what the table calls the measured tree")
    args = parser.parse_args()
    TREE, LABEL = args.tree.resolve(), args.label
    load_before = os.getloadavg()[0]

    config = SandboxConfig(start=START, days=25, per_day=PER_DAY, latency_ms=LATENCY_MS)
    with Sandbox(config, asyncio_server=True) as sandbox:
        sandbox.preencode_messages(TEN_DAYS[0], TEN_DAYS[1] if not args.only_day else DAY[1])
        day = {n: median_run(sandbox, DAY, n, args.repeats) for n in CONCURRENCIES}
        for n, run in day.items():
            print(f"day n={n}: spans {[round(s, 2) for s in run['spans']]}", file=sys.stderr, flush=True)
        ceiling = {n: ceiling_once(sandbox, DAY, day[n]["sandbox_requests"], n) for n in CONCURRENCIES}
        ten = {}
        if not args.only_day:
            ten = {n: median_run(sandbox, TEN_DAYS, n, args.ten_day_repeats) for n in CONCURRENCIES}
    first = day[16]
    rows = [
        f"One day: {first['conversations']:,} conversations, {first['messages']:,} messages, "
        f"{first['sandbox_requests']:,} requests; 50 ms per request; median of {args.repeats} runs (by span).",
        "",
        *efficiency_table(
            day,
            baseline=True,
            ceiling=ceiling,
            previous=[
                (PREVIOUS_LABEL, PREVIOUS_DAY),
                (THIRD_PASS_LABEL, THIRD_PASS_DAY),
                (FOURTH_PASS_LABEL, FOURTH_PASS_DAY),
                (FIFTH_PASS_LABEL, FIFTH_PASS_DAY),
            ]
            if TREE == ROOT
            else None,
        ),
    ]
    if ten:
        t = ten[16]
        ten_previous = [
            (PREVIOUS_LABEL, PREVIOUS_TEN),
            (FOURTH_PASS_TEN_LABEL, FOURTH_PASS_TEN),
            (FIFTH_PASS_TEN_LABEL, FIFTH_PASS_TEN),
        ]
        rows += [
            "",
            f"Ten days: {t['conversations']:,} conversations, {t['messages']:,} messages, "
            f"{t['sandbox_requests']:,} requests; {args.ten_day_repeats} run(s) each.",
            "",
            *efficiency_table(ten, baseline=False, previous=ten_previous if TREE == ROOT else None),
        ]

    if not args.only_day:
        with Sandbox(SandboxConfig(start=START, days=25, per_day=PER_DAY), asyncio_server=True) as fast:
            fast.preencode_messages(*TWENTY_DAYS)
            one = export_once(fast, DAY, 16)
            ten_zero = export_once(fast, TEN_DAYS, 16)
            twenty = export_once(fast, TWENTY_DAYS, 16)
        per_1000 = [1000 * r["export_cpu_s"] / r["sandbox_requests"] for r in (one, ten_zero)]
        marginal = (
            1000
            * (ten_zero["export_cpu_s"] - one["export_cpu_s"])
            / (ten_zero["sandbox_requests"] - one["sandbox_requests"])
        )
        rows += [
            "",
            "At zero latency (max_concurrency=16), the export process only:",
            "",
            "| window | conversations | messages | requests | peak RSS MiB | CPU in execute() | per 1,000 requests |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, run in (("1 day", one), ("10 days", ten_zero), ("20 days", twenty)):
            rows.append(
                f"| {label} | {run['conversations']:,} | {run['messages']:,} | {run['sandbox_requests']:,} | "
                f"{run['peak_rss_mib']:.1f} | {run['export_cpu_s']:.2f} s | "
                f"{1000 * run['export_cpu_s'] / run['sandbox_requests']:.2f} s |"
            )
        rows += [
            "",
            f"Peak memory growth from 1 to 20 days: {twenty['peak_rss_mib'] - one['peak_rss_mib']:+.1f} MiB. "
            f"CPU per 1,000 requests: {per_1000[0]:.2f} s on one day, {per_1000[1]:.2f} s on ten days, "
            f"{marginal:.2f} s at the margin (ten days minus one day: without the one-time cost of the "
            "first use of object storage and the writer).",
        ]
    load_after = os.getloadavg()[0]
    rows += [
        "",
        f"Machine load (1-minute average) before / after: {load_before:.1f} / {load_after:.1f} "
        f"on {os.cpu_count()} cores. Measured {time.strftime('%Y-%m-%d', time.gmtime())}.",
    ]
    table = "\n".join(rows)
    print(table)
    if not args.no_write:
        write_section("export", table)


if __name__ == "__main__":
    main()
