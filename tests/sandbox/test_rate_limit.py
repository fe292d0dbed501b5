"""The sandbox's per-key rate limit: a token bucket of R requests/s, 429 with Retry-After, counted."""

from __future__ import annotations

import email.utils
import time
from datetime import datetime, timezone

import requests

from airflow_provider_auralytik.sandbox import Sandbox


def burst(sandbox: Sandbox, n: int, key: str | None = None) -> list[requests.Response]:
    """``n`` requests one after the other on one connection (well within a second)."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {key or sandbox.api_key}"
        return [session.get(f"{sandbox.url}/conversations", params={"pageSize": 1}, timeout=10) for _ in range(n)]


def test_a_burst_over_the_limit_gets_429_with_retry_after_in_whole_seconds(make_sandbox):
    sandbox = make_sandbox(rate_limit=10)
    answers = burst(sandbox, 25)
    statuses = [a.status_code for a in answers]
    assert statuses[:10] == [200] * 10  # a full bucket: one second's worth
    throttled = [a for a in answers if a.status_code == 429]
    assert 10 <= len(throttled) <= 15  # the rest, but what trickled back into the bucket meanwhile
    assert all(a.headers["Retry-After"] == "1" for a in throttled)  # whole seconds, rounded up
    assert all(a.json()["error"]["code"] == "rate_limited" for a in throttled)
    assert sandbox.stats.throttled == len(throttled)
    assert sandbox.stats.faults["rate_limit"] == len(throttled)
    assert sandbox.stats.by_status[429] == len(throttled)


def test_retry_after_is_honest_and_can_be_an_http_date(make_sandbox):
    sandbox = make_sandbox(rate_limit=5, retry_after_http_date=True)
    answers = burst(sandbox, 8)
    refused = next(a for a in answers if a.status_code == 429)
    when = email.utils.parsedate_to_datetime(refused.headers["Retry-After"])
    wait = (when - datetime.now(timezone.utc)).total_seconds()
    assert 0 <= wait <= 2
    time.sleep(max(wait, 0) + 0.25)  # the limit's own promise: after Retry-After, a request is allowed
    assert burst(sandbox, 1)[0].status_code == 200


def test_refused_keys_spend_no_tokens_and_no_limit_means_no_429(make_sandbox):
    limited = make_sandbox(rate_limit=3)
    assert {a.status_code for a in burst(limited, 5, key="wrong")} == {401}
    assert [a.status_code for a in burst(limited, 3)] == [200] * 3
    unlimited = make_sandbox()
    assert {a.status_code for a in burst(unlimited, 50)} == {200}
    assert unlimited.stats.throttled == 0


def test_first_and_last_request_times_are_recorded(make_sandbox):
    sandbox = make_sandbox()
    assert sandbox.stats.first_request_at is None
    before = time.monotonic()
    burst(sandbox, 3)
    first, last = sandbox.stats.first_request_at, sandbox.stats.last_request_at
    assert first is not None
    assert last is not None
    assert before <= first <= last <= time.monotonic()
    sandbox.reset_stats()
    assert sandbox.stats.first_request_at is None
