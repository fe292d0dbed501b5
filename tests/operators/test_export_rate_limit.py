"""Exports on a key the API limits to 20 requests/s: the sandbox's token bucket, over real HTTP.

One export, and four exports at once in four processes (mapped tasks on separate workers share
nothing but the key): every task succeeds, the output is exact, fewer than 10% of the requests
are answered 429, and the first-to-last request time is at most 1.25 x the ideal at the quota.
A day of 500 conversations takes ~26 s at 20 requests/s.
"""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_auralytik.hooks.auralytik import AuralytikUnavailableError
from airflow_provider_auralytik.operators.export import AuralytikExportMessagesOperator
from airflow_provider_auralytik.sandbox import Sandbox
from tests.conftest import sandbox_connection

QUOTA = 20
DAY = datetime(2026, 3, 2, tzinfo=timezone.utc)
NEXT = DAY + timedelta(days=1)
CONN = "AIRFLOW_CONN_AURALYTIK_DEFAULT"


@pytest.fixture
def limited(make_sandbox):
    """A day of 500 conversations on a key limited to 20 requests/s."""
    return make_sandbox(start="2026-03-02", days=1, per_day=500, max_messages=8, rate_limit=QUOTA)


def read_rows(directory: Path) -> list[dict[str, Any]]:
    manifest = json.loads((directory / "_manifest.json").read_text())
    rows = []
    for part in manifest["files"]:
        raw = (directory / part["path"]).read_bytes()
        rows += [json.loads(line) for line in gzip.decompress(raw).decode().splitlines()]
    return rows


def expected_messages(sandbox: Sandbox) -> list[tuple[str, str]]:
    return sorted(
        (cid, m["id"]) for cid in sandbox.conversations_in(DAY, NEXT) for m in sandbox.messages(cid, exclude_pii=True)
    )


def assert_good_citizen(sandbox: Sandbox) -> None:
    """Fewer than 10% of the requests answered 429; first to last request within 1.25 x the ideal."""
    stats = sandbox.stats
    answered = stats.requests - stats.throttled
    assert stats.throttled < 0.10 * stats.requests, stats
    first, last = stats.first_request_at, stats.last_request_at
    assert first is not None
    assert last is not None
    assert last - first <= 1.25 * answered / QUOTA, (last - first, answered, stats)


def test_one_export_on_a_limited_key_succeeds_exactly_and_paces_itself(limited, monkeypatch, tmp_path, caplog):
    # max_retries=0: were a 429 to spend an attempt, the first one would fail the task.
    monkeypatch.setenv(CONN, sandbox_connection(limited, max_retries=0))
    caplog.set_level(logging.INFO, logger="airflow_provider_auralytik.hooks.pacing")
    summary = AuralytikExportMessagesOperator(
        task_id="messages", destination=str(tmp_path), date_from=DAY, date_to=NEXT
    ).execute(context={})
    rows = read_rows(tmp_path)
    assert sorted((r["conversationId"], r["id"]) for r in rows) == expected_messages(limited)
    assert_good_citizen(limited)
    assert limited.stats.throttled > 0  # the limit was met (the pacer learned it from 429s) ...
    assert summary["throttled_requests"] == limited.stats.throttled  # ... and the XCom counts them
    manifest = json.loads((tmp_path / "_manifest.json").read_text())
    assert manifest["rate_limit"]["throttled_requests"] == limited.stats.throttled
    assert manifest["rate_limit"]["rate_limit_wait_seconds"] >= 1.0  # at least one whole Retry-After second
    slowdowns = [r for r in caplog.records if "slowing down" in r.getMessage()]
    assert slowdowns
    assert all(r.levelno == logging.INFO for r in slowdowns)
    assert len(slowdowns) < limited.stats.throttled or limited.stats.throttled == 1  # not one line per 429


def test_a_known_quota_set_as_max_requests_per_second_sees_no_429(limited, monkeypatch, tmp_path):
    monkeypatch.setenv(CONN, sandbox_connection(limited, max_requests_per_second=QUOTA))
    summary = AuralytikExportMessagesOperator(
        task_id="messages", destination=str(tmp_path), date_from=DAY, date_to=NEXT
    ).execute(context={})
    assert limited.stats.throttled == 0
    assert summary["throttled_requests"] == 0
    assert sorted((r["conversationId"], r["id"]) for r in read_rows(tmp_path)) == expected_messages(limited)


WORKER = """
import json, sys
from datetime import datetime
from airflow_provider_auralytik.operators.export import AuralytikExportMessagesOperator
date_from, date_to, destination = sys.argv[1:4]
summary = AuralytikExportMessagesOperator(
    task_id="messages", destination=destination, date_from=date_from, date_to=date_to
).execute(context={})
print(json.dumps(summary))
"""


def test_four_exports_in_four_processes_share_the_key_without_failing(limited, monkeypatch, tmp_path):
    monkeypatch.setenv(CONN, sandbox_connection(limited))  # default settings, as the sliced DAG has them
    slices = [(DAY + timedelta(hours=6 * i), DAY + timedelta(hours=6 * (i + 1))) for i in range(4)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, start.isoformat(), end.isoformat(), str(tmp_path / f"slice-{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, (start, end) in enumerate(slices)
    ]
    results = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_out, err) in zip(workers, results, strict=True):
        assert worker.returncode == 0, err[-3000:]
    rows = [row for i in range(4) for row in read_rows(tmp_path / f"slice-{i}")]
    assert sorted((r["conversationId"], r["id"]) for r in rows) == expected_messages(limited)  # each once
    assert_good_citizen(limited)
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    assert sum(s["throttled_requests"] for s in summaries) == limited.stats.throttled


def test_a_429_storm_longer_than_rate_limit_max_wait_fails_with_one_clear_line(make_sandbox, monkeypatch, tmp_path):
    sandbox = make_sandbox(start="2026-03-02", days=1, per_day=20, rate_429=1.0, retry_after=1)
    monkeypatch.setenv(CONN, sandbox_connection(sandbox, rate_limit_max_wait=3))
    start = time.monotonic()
    with pytest.raises(AuralytikUnavailableError) as info:
        AuralytikExportMessagesOperator(
            task_id="messages", destination=str(tmp_path), date_from=DAY, date_to=NEXT
        ).execute(context={})
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "\n" not in message
    assert "429 Too Many Requests" in message
    assert "rate_limit_max_wait=3" in message
    assert 3.0 <= elapsed < 30.0  # the budget, not an attempt count, ended it
    assert sandbox.stats.requests > 2  # retried through the storm meanwhile, one request a second
    assert not (tmp_path / "_manifest.json").exists()
