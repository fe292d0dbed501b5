"""Sandbox behaviour over time and under stress: status changes, test hooks, faults, stats."""

from __future__ import annotations

import email.utils
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from airflow_provider_auralytik.sandbox import Sandbox, SandboxConfig

UTC = timezone.utc


def _get(sb: Sandbox, path: str, session: Any = requests, **params: Any) -> requests.Response:
    return session.get(
        f"{sb.url}{path}",
        params=params or None,
        headers={"Authorization": f"Bearer {sb.api_key}"},
        timeout=10,
    )


def _total(sb: Sandbox, **params: Any) -> int:
    return int(_get(sb, "/conversations", **params).json()["totalCount"])


# -- status over time --------------------------------------------------------------------------------
# The data lies in a fixed past (``PAST``), never "yesterday": yesterday's last conversations end
# naturally after midnight, which made these tests depend on the time of day.
PAST = date(2024, 1, 1)


def test_complete_within_moves_every_conversation_to_completed(make_sandbox: Any) -> None:
    sb = make_sandbox(start=PAST, days=1, per_day=30, complete_within=1.0)
    first = _get(sb, "/conversations", pageSize=100).json()["data"]
    active = [c for c in first if c["status"] == "active"]
    assert len(active) >= 15, "right after start most conversations are still active"
    assert all(c["endedAt"] is None for c in active)
    assert _total(sb, status="active") + _total(sb, status="completed") == 30
    deadline = time.monotonic() + 5
    while _total(sb, status="completed") < 30:
        assert time.monotonic() < deadline, "not all completed within complete_within"
        time.sleep(0.1)
    assert time.monotonic() - (deadline - 5) <= 2.0
    for conv in _get(sb, "/conversations", pageSize=100).json()["data"]:
        assert conv["status"] == "completed"
        assert conv["endedAt"] is not None
        assert conv["endedAt"] > conv["startedAt"]
        assert sb.completion_time(conv["id"]) <= datetime.now(UTC)


def test_natural_end_in_the_future_stays_active(sandbox: Sandbox) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    conv = sandbox.add_conversation(createdAt=now)
    assert conv["status"] == "active"
    assert conv["endedAt"] is None
    served = _get(sandbox, f"/conversations/{conv['id']}").json()
    assert served == conv
    assert sandbox.completion_time(conv["id"]) > now + timedelta(seconds=59)


def test_complete_within_never_completes_before_natural_end(make_sandbox: Any) -> None:
    sb = make_sandbox(start=PAST, days=1, per_day=5, complete_within=0.2)
    conv = sb.add_conversation(createdAt=datetime.now(UTC))  # its natural end is a minute or more away
    time.sleep(0.3)
    assert _get(sb, f"/conversations/{conv['id']}").json()["status"] == "active"
    assert _total(sb, status="completed") == 5


# -- test hooks ------------------------------------------------------------------------------------------
def test_add_and_delete_conversation(make_sandbox: Any) -> None:
    sb = make_sandbox(start=date(2024, 1, 1), days=2, per_day=10)
    added = sb.add_conversation(createdAt="2024-01-01T12:00:00Z", channelId="ch_sms", language="xx")
    assert added["createdAt"] == added["startedAt"] == "2024-01-01T12:00:00Z"
    assert added["channelId"] == "ch_sms"
    assert added["language"] == "xx"
    assert added["status"] == "completed"
    assert len(sb) == 21
    assert added["id"] in sb.conversations_in("2024-01-01", "2024-01-02")
    listed = _get(sb, "/conversations", pageSize=100, dateFrom="2024-01-01T12:00:00Z", dateTo="2024-01-01T12:00:00Z")
    assert [c["id"] for c in listed.json()["data"]] == [added["id"]]
    assert len(_get(sb, f"/conversations/{added['id']}/messages").json()["messages"]) == added["messageCount"]

    fixed = sb.add_conversation(id="conv_custom", createdAt=datetime(2024, 1, 2, tzinfo=UTC), status="active")
    assert fixed["id"] == "conv_custom"
    assert (fixed["status"], fixed["endedAt"]) == ("active", None)
    assert _get(sb, "/conversations/conv_custom").json() == fixed

    sb.delete_conversation(added["id"])
    assert _get(sb, f"/conversations/{added['id']}").status_code == 404
    assert _get(sb, f"/conversations/{added['id']}/messages").status_code == 404
    assert added["id"] not in sb.conversations_in(None, None)
    assert _total(sb) == 21
    with pytest.raises(KeyError):
        sb.delete_conversation(added["id"])


def test_insert_during_listing_shifts_pages(make_sandbox: Any) -> None:
    sb = make_sandbox(start=date(2024, 1, 1), days=2, per_day=50, insert_during_listing=3)
    before = set(sb.conversations_in(None, None))
    seen: list[str] = []
    for page in range(1, 6):
        body = _get(sb, "/conversations", page=page, pageSize=20).json()
        seen.extend(c["id"] for c in body["data"])
    assert len(sb) == 100 + 5 * 3
    new = set(sb.conversations_in(None, None)) - before
    assert len(new) == 15
    for cid in new:
        created = sb.get_conversation(cid)
        assert created is not None
        assert "2024-01-01T00:00:00Z" <= created["createdAt"] < "2024-01-03T00:00:00Z"
    # the listing shifted while it was paged: duplicates and/or gaps appear
    assert len(set(seen)) < len(seen) or (before - set(seen))
    # non-listing requests do not insert
    _get(sb, f"/conversations/{next(iter(new))}")
    assert len(sb) == 115


# -- faults ----------------------------------------------------------------------------------------------
def test_fault_429_with_retry_after_seconds(make_sandbox: Any) -> None:
    sb = make_sandbox(rate_429=1.0, retry_after=3)
    resp = _get(sb, "/conversations")
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "3"
    assert sb.stats.faults["429"] == 1


def test_fault_429_with_retry_after_http_date(make_sandbox: Any) -> None:
    sb = make_sandbox(rate_429=1.0, retry_after=2, retry_after_http_date=True)
    resp = _get(sb, "/conversations/conv_000001")
    assert resp.status_code == 429
    when = email.utils.parsedate_to_datetime(resp.headers["Retry-After"])
    assert timedelta(seconds=1) < when - datetime.now(UTC) <= timedelta(seconds=4)


def test_fault_5xx_is_html(make_sandbox: Any) -> None:
    sb = make_sandbox(rate_5xx=1.0)
    codes = set()
    for _ in range(12):
        resp = _get(sb, "/conversations/conv_000001/messages")
        codes.add(resp.status_code)
        assert resp.headers["Content-Type"].startswith("text/html")
        assert resp.text.lstrip().startswith("<html>")
        with pytest.raises(ValueError):  # noqa: PT011 - any JSON decoding error of a truncated body - whatever JSON error class requests uses
            resp.json()
    assert codes == {502, 503}


def test_fault_drop_closes_the_socket(make_sandbox: Any) -> None:
    sb = make_sandbox(rate_drop=1.0)
    with pytest.raises(requests.ConnectionError):
        _get(sb, "/conversations")
    assert sb.stats.faults["drop"] == 1
    assert sb.stats.by_status == {}


def test_fault_malformed_is_truncated_json(make_sandbox: Any) -> None:
    sb = make_sandbox(rate_malformed=1.0)
    for path in ("/conversations", "/conversations/conv_000001", "/conversations/conv_000001/messages"):
        resp = _get(sb, path)
        assert resp.status_code == 200
        assert resp.headers["Content-Length"] == str(len(resp.content))
        with pytest.raises(json.JSONDecodeError):
            json.loads(resp.content)
    # errors are passed through untouched
    assert _get(sb, "/conversations/conv_999999").status_code == 404
    # the cut never splits a UTF-8 character: the body decodes, only the JSON is broken
    for cid in sb.conversations_in(None, None)[:30]:
        content = _get(sb, f"/conversations/{cid}/messages").content
        with pytest.raises(json.JSONDecodeError):
            json.loads(content.decode("utf-8"))


def test_faults_apply_after_auth(make_sandbox: Any) -> None:
    sb = make_sandbox(rate_429=1.0)
    assert requests.get(f"{sb.url}/conversations", timeout=10).status_code == 401


def test_mixed_fault_rates(make_sandbox: Any) -> None:
    sb = make_sandbox(rate_429=0.2, rate_5xx=0.2, rate_malformed=0.2, seed=3)
    with requests.Session() as session:
        codes = [_get(sb, "/conversations/conv_000001", session).status_code for _ in range(200)]
    faults = sb.stats.faults
    assert 20 < faults["429"] < 60
    assert 20 < faults["5xx"] < 60
    assert 20 < faults["malformed"] < 60
    assert codes.count(429) == faults["429"]
    assert codes.count(200) == 200 - faults["429"] - faults["5xx"]


def test_latency(make_sandbox: Any) -> None:
    sb = make_sandbox(latency_ms=150)
    t0 = time.perf_counter()
    assert _get(sb, "/conversations").status_code == 200
    assert time.perf_counter() - t0 >= 0.15


# -- stats, concurrency, life cycle ---------------------------------------------------------------------
def test_stats_counters(sandbox: Sandbox) -> None:
    with requests.Session() as session:
        _get(sandbox, "/conversations", session)
        _get(sandbox, "/conversations", session, pageSize=500)
        _get(sandbox, "/conversations/conv_000001", session)
        _get(sandbox, "/conversations/conv_000001/messages", session)
        _get(sandbox, "/conversations/nope/messages", session)
        _get(sandbox, "/elsewhere", session)
        session.get(f"{sandbox.url}/conversations", timeout=10)  # no key
    snap = sandbox.stats.snapshot()
    assert snap["requests"] == 7
    assert snap["by_kind"] == {"list": 3, "get": 1, "messages": 2, "other": 1}
    assert snap["by_status"] == {200: 3, 400: 1, 404: 2, 401: 1}
    assert snap["in_flight"] == 0
    assert snap["max_in_flight"] == 1
    sandbox.reset_stats()
    assert sandbox.stats.requests == 0
    assert sandbox.stats.by_kind == {"list": 0, "get": 0, "messages": 0, "other": 0}
    assert sandbox.stats.by_status == {}


def test_many_concurrent_connections(make_sandbox: Any) -> None:
    sb = make_sandbox(latency_ms=300)
    n = 120
    barrier = threading.Barrier(n)

    def one(i: int) -> int:
        barrier.wait(timeout=10)
        return _get(sb, f"/conversations/conv_{i % 100 + 1:06d}/messages").status_code

    with ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(one, range(n)))
    assert codes == [200] * n
    assert sb.stats.max_in_flight >= n * 3 // 4
    assert sb.stats.in_flight == 0


def test_stop_closes_listener_and_kept_alive_connections() -> None:
    sb = Sandbox(SandboxConfig(days=1, per_day=5)).start()
    assert sb.running
    session = requests.Session()
    assert _get(sb, "/conversations", session).status_code == 200
    port = sb.port
    t0 = time.perf_counter()
    sb.stop()
    assert time.perf_counter() - t0 < 1.0
    assert not sb.running
    with pytest.raises(requests.ConnectionError):
        _get(sb, "/conversations", session)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    sb.stop()  # idempotent
    session.close()


def test_fixed_port_and_context_manager() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Sandbox(SandboxConfig(days=1, per_day=3, api_key="k"), port=port) as sb:
        assert sb.url == f"http://127.0.0.1:{port}/v1"
        assert _get(sb, "/conversations").json()["totalCount"] == 3


def test_config_validation() -> None:
    for bad in (
        {"days": 0},
        {"per_day": -1},
        {"max_messages": 0},
        {"rate_429": 1.5},
        {"rate_429": 0.6, "rate_5xx": 0.6},
        {"pii_leak_rate": -0.1},
        {"api_key": ""},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - any JSON decoding error of a truncated body
            SandboxConfig(**bad)


def test_large_dataset_listing_is_cheap() -> None:
    t0 = time.perf_counter()
    sb = Sandbox(SandboxConfig(start=date(2024, 1, 1), days=5, per_day=20_000))
    build = time.perf_counter() - t0
    assert len(sb) == 100_000
    assert build < 5
    with sb, requests.Session() as session:
        t0 = time.perf_counter()
        for page in range(1, 51):
            body = _get(
                sb, "/conversations", session, page=page, pageSize=100, dateFrom="2024-01-03", dateTo="2024-01-04"
            ).json()
            assert len(body["data"]) == 100
        assert body["totalCount"] == 20_001
        assert time.perf_counter() - t0 < 3
