"""
CPU cost of reading timestamps with the package's one ISO 8601 parser, on the Parquet writer's hot path.

    .venv/bin/python benchmarks/bench_timestamps.py [--baseline 3020dde~1]

Times ``output.schemas._parse_timestamp`` (every timestamp a Parquet export writes goes through it)
on the API's form, the API's form with microseconds and an offset form, and ``RowBuffer.append`` of
a conversation (three timestamps). With ``--baseline REV`` the same is timed on that revision's
``output/schemas.py`` (before the parsers were one: its own fast path and regex) and both are
printed; the outcomes must be equal. Best of several repeats, so a loaded machine shows its least
disturbed run; writes the table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import timeit
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _docs import write_section

from airflow_provider_auralytik.output import schemas

ROOT = Path(__file__).resolve().parent.parent

API = [
    f"2024-01-{d:02d}T{h:02d}:{m:02d}:{s:02d}Z"
    for d in range(1, 29)
    for h in range(24)
    for m in (0, 59)
    for s in (0, 31)
]
CASES = {
    "API form `…:SSZ`": API,
    "API form `…:SS.ffffffZ`": [a[:-1] + ".123456Z" for a in API],
    "offset `…:SS+02:00`": [a[:-1] + "+02:00" for a in API],
}
RECORD = {
    "id": "conv_000123",
    "channelId": "ch_sms",
    "campaignId": "camp_001",
    "status": "completed",
    "participantCount": 2,
    "messageCount": 14,
    "startedAt": "2024-01-15T10:00:00Z",
    "endedAt": "2024-01-15T10:12:31Z",
    "createdAt": "2024-01-15T09:59:58.123456Z",
}


def load_revision(rev: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{rev}:airflow_provider_auralytik/output/schemas.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="bench-ts-")) / "baseline_schemas.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_schemas", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_schemas"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def per_call(function: Any, data: list[Any], repeat: int) -> float:
    """Nanoseconds per item, best of ``repeat``."""
    best = min(timeit.repeat(lambda: [function(v) for v in data], number=3, repeat=repeat))
    return best / (3 * len(data)) * 1e9


def per_record(module: Any, repeat: int) -> float:
    def fill() -> None:
        buffer = module.CONVERSATIONS.buffer()
        for _ in range(2000):
            buffer.append(RECORD)

    return min(timeit.repeat(fill, number=3, repeat=repeat)) / 6000 * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="a git revision to compare with (its output/schemas.py)")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    modules: dict[str, Any] = {"now": schemas}
    if args.baseline:
        modules = {args.baseline: load_revision(args.baseline), **modules}
    for name, data in CASES.items():
        outcomes = {label: [m._parse_timestamp(v) for v in data] for label, m in modules.items()}
        assert len({repr(o) for o in outcomes.values()}) == 1, f"{name}: the revisions read differently"
    head = " | ".join(f"{label} (ns)" for label in modules)
    rows = [f"| what | {head} |", "|---|" + "---:|" * len(modules)]
    for name, data in CASES.items():
        cells = " | ".join(f"{per_call(m._parse_timestamp, data, args.repeat):,.0f}" for m in modules.values())
        rows.append(f"| one timestamp, {name} | {cells} |")
    cells = " | ".join(f"{per_record(m, args.repeat):,.0f}" for m in modules.values())
    rows.append(f"| `RowBuffer.append` of a conversation (3 timestamps) | {cells} |")
    table = "\n".join(rows)
    print(table)
    baseline = f" Baseline: {args.baseline}, before the parsers were one." if args.baseline else ""
    command = "python benchmarks/bench_timestamps.py" + (f" --baseline {args.baseline}" if args.baseline else "")
    write_section(
        "timestamps",
        f"""{table}

The Parquet writer's cost of reading timestamps with the package's one ISO 8601 parser
(`conversations.window.read_iso8601`, which `parse_instant` and the sandbox use too). The API's own form
takes a fast path through Python's C parser; other forms a regular expression. Best of {args.repeat} runs
(the machine is shared: the least disturbed run).{baseline}

Produced by `{command}` on {date.today()}.""",
    )


if __name__ == "__main__":
    main()
