"""
Requests a window listing costs under each ``totalCount`` lie, against the sandbox over real HTTP.

    .venv/bin/python benchmarks/bench_listing.py

For each size (conversations in one day) and each ``total_count_mode`` of the sandbox, lists the day
with :class:`WindowListing`, checks the result is exact (the sandbox's own ground truth) and prints
the number of requests and its ratio to the honest count's; writes the table into docs/benchmarks.md.
Deterministic (seeded data): the counts do not depend on the machine.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="auralytik-bench-airflow-"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _docs import write_section

SIZES = (106, 2000)
START = datetime(2026, 3, 1, tzinfo=timezone.utc)


def measure(per_day: int, mode: str) -> dict[str, Any]:
    from airflow_provider_auralytik.conversations.listing import WindowListing
    from airflow_provider_auralytik.conversations.window import DateWindow
    from airflow_provider_auralytik.hooks.auralytik import AuralytikHook
    from airflow_provider_auralytik.sandbox import Sandbox, SandboxConfig

    config = SandboxConfig(start="2026-03-01", days=3, per_day=per_day, total_count_mode=mode)
    with Sandbox(config) as sandbox:
        os.environ["AIRFLOW_CONN_AURALYTIK_DEFAULT"] = json.dumps(
            {"conn_type": "auralytik", "host": sandbox.url, "password": sandbox.api_key}
        )
        window = DateWindow(START + timedelta(days=1), START + timedelta(days=2))
        hook = AuralytikHook()
        listing = WindowListing(hook, window)
        got = [c["id"] for c in listing]
        expected = sandbox.conversations_in(window.start, window.end)
        hook.close()
        return {
            "per_day": per_day,
            "mode": mode,
            "exact": sorted(got) == sorted(expected) and len(got) == len(set(got)),
            "requests": listing.requests,
            "sent": sandbox.stats.requests,
        }


def main() -> int:
    from airflow_provider_auralytik.sandbox.data import TOTAL_COUNT_MODES

    rows = []
    for per_day in SIZES:
        honest = None
        for mode in TOTAL_COUNT_MODES:
            row = measure(per_day, mode)
            honest = honest or row["requests"]
            row["ratio"] = round(row["requests"] / honest, 2)
            rows.append(row)
            print(f"{per_day:>5} {mode:<9} exact={row['exact']} requests={row['requests']:>4} x{row['ratio']}")
    lines = [
        "| `totalCount` says | " + " | ".join(f"{n:,} conversations: requests (vs honest)" for n in SIZES) + " |",
        "|---|" + "---:|" * len(SIZES),
    ]
    for mode in TOTAL_COUNT_MODES:
        cells = [next(r for r in rows if r["mode"] == mode and r["per_day"] == n) for n in SIZES]
        lines.append(f"| `{mode}` | " + " | ".join(f"{c['requests']} (x{c['ratio']})" for c in cells) + " |")
    lines += [
        "",
        "One day listed exactly by `WindowListing` (page size 100) against the sandbox, whose `totalCount` tells "
        "the truth, 0, the page's item count, half, triple, the truth + 1,000, or its first answer (stale). Every "
        "run exported exactly the day's conversations. The sandbox lists newest first; servers that sort "
        "oldest first or not at all are covered by `tests/conversations/test_listing.py` (same bound).",
        "",
        f"Produced by `python benchmarks/bench_listing.py` on {datetime.now(timezone.utc):%Y-%m-%d}.",
    ]
    write_section("listing", "\n".join(lines))
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
