"""The sandbox speaks the Auralytik API: auth, routes, filters, paging, objects, messages, masking."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from airflow_provider_auralytik.sandbox import MASK, Sandbox

UTC = timezone.utc
DOC_FIELDS = {
    "id",
    "channelId",
    "campaignId",
    "status",
    "participantCount",
    "messageCount",
    "startedAt",
    "endedAt",
    "createdAt",
}
PHONE_RE = re.compile(r"\+44 7700 900\d{3}|\(555\) 010-01\d{2}|\+1-202-555-01\d{2}")
EMAIL_RE = re.compile(r"[a-z]+\.[a-z]+@[a-z.]*example\.(?:com|org|net)")


def _get(sb: Sandbox, path: str, headers: dict[str, str] | None = None, **params: Any) -> requests.Response:
    hdrs = {"Authorization": f"Bearer {sb.api_key}", **(headers or {})}
    return requests.get(f"{sb.url}{path}", params=params or None, headers=hdrs, timeout=10)


def _list_all(sb: Sandbox, **params: Any) -> tuple[list[dict[str, Any]], int]:
    out: list[dict[str, Any]] = []
    page = 1
    while True:
        body = _get(sb, "/conversations", page=page, pageSize=100, **params).json()
        out.extend(body["data"])
        if not body["data"]:
            return out, body["totalCount"]
        page += 1


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- auth and routes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/conversations", "/conversations/conv_000001", "/conversations/x/messages"])
@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic c2FuZGJveC1rZXk6", "sandbox-key"])
def test_missing_or_wrong_key_is_401_json(sandbox: Sandbox, path: str, auth: str | None) -> None:
    headers = {} if auth is None else {"Authorization": auth}
    resp = requests.get(f"{sandbox.url}{path}", headers=headers, timeout=10)
    assert resp.status_code == 401
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json()["error"]["code"] == "unauthorized"


def test_bearer_scheme_is_case_insensitive(sandbox: Sandbox) -> None:
    resp = requests.get(
        f"{sandbox.url}/conversations", headers={"Authorization": f"bearer {sandbox.api_key}"}, timeout=10
    )
    assert resp.status_code == 200


def test_custom_api_key(make_sandbox: Any) -> None:
    sb = make_sandbox(api_key="s3cret", days=1, per_day=5)
    assert sb.api_key == "s3cret"
    assert _get(sb, "/conversations").status_code == 200
    bad = requests.get(f"{sb.url}/conversations", headers={"Authorization": "Bearer sandbox-key"}, timeout=10)
    assert bad.status_code == 401


@pytest.mark.parametrize(
    "path", ["/nope", "/conversations/conv_000001/notes", "/conversations/a/b/c", "/../conversations"]
)
def test_unknown_path_is_404(sandbox: Sandbox, path: str) -> None:
    resp = _get(sandbox, path)
    assert resp.status_code == 404
    assert "error" in resp.json()


def test_unknown_id_is_404(sandbox: Sandbox) -> None:
    for path in ("/conversations/conv_999999", "/conversations/conv_999999/messages"):
        resp = _get(sandbox, path)
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "not_found"


def test_non_get_is_405(sandbox: Sandbox) -> None:
    resp = requests.post(
        f"{sandbox.url}/conversations", headers={"Authorization": f"Bearer {sandbox.api_key}"}, timeout=10
    )
    assert resp.status_code == 405


def test_url_and_keep_alive(sandbox: Sandbox) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", sandbox.url)
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {sandbox.api_key}"
        for _ in range(5):
            resp = session.get(f"{sandbox.url}/conversations", timeout=10)
            assert resp.status_code == 200
            assert resp.headers["Content-Length"] == str(len(resp.content))
    assert sandbox.stats.requests == 5
    assert sandbox.stats.connections == 1  # HTTP/1.1 keep-alive: one connection for all


# -- listing -----------------------------------------------------------------------------------------
def test_listing_defaults_and_shape(sandbox: Sandbox) -> None:
    body = _get(sandbox, "/conversations").json()
    assert set(body) == {"data", "page", "pageSize", "totalCount"}
    assert (body["page"], body["pageSize"], body["totalCount"]) == (1, 25, 3 * 40)
    assert len(body["data"]) == 25
    for conv in body["data"]:
        assert set(conv) >= DOC_FIELDS
        assert re.fullmatch(r"conv_\d{6}", conv["id"])
        assert conv["channelId"] in {"ch_whatsapp", "ch_webchat", "ch_sms"}
        assert conv["campaignId"] in {None, "camp_001", "camp_002", "camp_003", "camp_004", "camp_005"}
        assert conv["createdAt"] == conv["startedAt"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", conv["createdAt"])
        assert conv["status"] in {"active", "completed"}
        assert (conv["endedAt"] is None) == (conv["status"] == "active")
        assert 1 <= conv["messageCount"] <= 30
        assert conv["participantCount"] >= 2


def test_sort_order_paging_and_total(sandbox: Sandbox) -> None:
    items, total = _list_all(sandbox)
    assert total == len(items) == len(sandbox) == 120
    keys = [(c["createdAt"], c["id"]) for c in items]
    assert keys == sorted(keys, key=lambda k: (-_ts(k[0]), k[1]))
    assert [c["id"] for c in items] == sandbox.conversations_in(None, None)
    # small pages tile the same sequence
    small = [c["id"] for p in range(1, 14) for c in _get(sandbox, "/conversations", page=p, pageSize=10).json()["data"]]
    assert small == [c["id"] for c in items]


def test_page_past_the_end_is_empty(sandbox: Sandbox) -> None:
    body = _get(sandbox, "/conversations", page=99, pageSize=100).json()
    assert body["data"] == []
    assert body["totalCount"] == 120
    assert body["page"] == 99


@pytest.mark.parametrize(
    ("params", "bad"),
    [
        ({"pageSize": 0}, "pageSize"),
        ({"pageSize": 101}, "pageSize"),
        ({"pageSize": -5}, "pageSize"),
        ({"pageSize": "ten"}, "pageSize"),
        ({"pageSize": "1.5"}, "pageSize"),
        ({"page": 0}, "page"),
        ({"page": "x"}, "page"),
        ({"dateFrom": "yesterday"}, "dateFrom"),
        ({"dateFrom": "2024-13-01T00:00:00Z"}, "dateFrom"),
        ({"dateTo": "2024-01-01T00:00:00"}, "dateTo"),
        ({"dateTo": "2024-01-01T25:00:00Z"}, "dateTo"),
    ],
)
def test_bad_parameters_are_400_json(sandbox: Sandbox, params: dict[str, Any], bad: str) -> None:
    resp = _get(sandbox, "/conversations", **params)
    assert resp.status_code == 400
    assert resp.json()["error"]["parameter"] == bad


@pytest.mark.parametrize("size", [1, 100])
def test_page_size_bounds_accepted(sandbox: Sandbox, size: int) -> None:
    body = _get(sandbox, "/conversations", pageSize=size).json()
    assert len(body["data"]) == size
    assert body["pageSize"] == size


@pytest.mark.parametrize(
    ("param", "field", "value"),
    [
        ("channelId", "channelId", "ch_sms"),
        ("campaignId", "campaignId", "camp_002"),
        ("status", "status", "completed"),
    ],
)
def test_filters(make_sandbox: Any, param: str, field: str, value: str) -> None:
    sb = make_sandbox(start=date(2024, 1, 1), days=2, per_day=60)
    expected = [c["id"] for c in sb.all_conversations() if c[field] == value]
    assert expected
    items, total = _list_all(sb, **{param: value})
    assert [c["id"] for c in items] == expected
    assert total == len(expected)


def test_filters_combine(make_sandbox: Any) -> None:
    sb = make_sandbox(start=date(2024, 1, 1), days=2, per_day=100)
    day2 = datetime(2024, 1, 2, tzinfo=UTC)
    expected = [
        c["id"]
        for c in sb.all_conversations()
        if c["channelId"] == "ch_whatsapp" and c["campaignId"] == "camp_001" and _ts(c["createdAt"]) >= day2.timestamp()
    ]
    assert expected
    items, total = _list_all(sb, channelId="ch_whatsapp", campaignId="camp_001", dateFrom=_iso(day2))
    assert [c["id"] for c in items] == expected
    assert total == len(expected)
    assert _list_all(sb, status="pending") == ([], 0)
    assert _list_all(sb, channelId="ch_fax") == ([], 0)


def test_date_range_is_inclusive_on_both_ends(make_sandbox: Any) -> None:
    sb = make_sandbox(start=date(2024, 1, 1), days=3, per_day=40)
    day2, day3 = datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)
    half_open = sb.conversations_in(day2, day3)
    at_end = sb.conversations_in(day3, day3 + timedelta(seconds=1))
    assert len(half_open) == 40
    assert len(at_end) == 1  # the midnight conversation of the next day
    items, total = _list_all(sb, dateFrom=_iso(day2), dateTo=_iso(day3))
    assert [c["id"] for c in items] == at_end + half_open  # dateTo inclusive: one extra item
    assert total == 41
    assert items[-1]["createdAt"] == "2024-01-02T00:00:00Z"  # dateFrom inclusive


@pytest.mark.parametrize(
    ("date_from", "date_to"),
    [
        ("2024-01-02T01:00:00+01:00", "2024-01-03T01:00:00+01:00"),
        ("2024-01-01T19:00:00-05:00", "2024-01-02T19:00:00-0500"),
        ("2024-01-01T23:59:59.000001Z", "2024-01-03T00:00:00.999Z"),
        ("2024-01-02", "2024-01-03"),
    ],
)
def test_date_formats(make_sandbox: Any, date_from: str, date_to: str) -> None:
    sb = make_sandbox(start=date(2024, 1, 1), days=3, per_day=40)
    expected = sb.conversations_in("2024-01-02T00:00:00Z", "2024-01-03T00:00:01Z")
    items, total = _list_all(sb, dateFrom=date_from, dateTo=date_to)
    assert [c["id"] for c in items] == expected
    assert total == 41


def test_unencoded_plus_in_offset_is_tolerated(make_sandbox: Any) -> None:
    sb = make_sandbox(start=date(2024, 1, 1), days=3, per_day=10)
    url = f"{sb.url}/conversations?pageSize=100&dateFrom=2024-01-02T01:00:00+01:00&dateTo=2024-01-02T23:59:59Z"
    resp = requests.get(url, headers={"Authorization": f"Bearer {sb.api_key}"}, timeout=10)
    assert resp.status_code == 200
    assert resp.json()["totalCount"] == 10


def test_edge_cases_in_every_day(make_sandbox: Any) -> None:
    sb = make_sandbox(start=date(2024, 1, 1), days=3, per_day=40)
    for day in range(3):
        lo = datetime(2024, 1, 1 + day, tzinfo=UTC)
        items, _ = _list_all(sb, dateFrom=_iso(lo), dateTo=_iso(lo + timedelta(seconds=86399)))
        created = Counter(c["createdAt"] for c in items)
        assert created[_iso(lo)] == 1, "one conversation exactly at midnight"
        assert created[_iso(lo + timedelta(seconds=86399))] >= 1, "one at 23:59:59"
        assert max(created.values()) >= 3, "a group sharing one createdAt second"
        assert sum(created.values()) == 40


def test_extra_fields_are_served(make_sandbox: Any) -> None:
    sb = make_sandbox(start=date(2024, 1, 1), days=2, per_day=200)
    items, _ = _list_all(sb)
    extras = Counter(k for c in items for k in set(c) - DOC_FIELDS)
    assert extras["language"] > 0
    assert extras["tags"] > 0
    tagged = next(c for c in items if "tags" in c)
    assert tagged["tags"] is None
    assert _get(sb, f"/conversations/{tagged['id']}").json() == tagged


def test_get_matches_listing(sandbox: Sandbox) -> None:
    for conv in _get(sandbox, "/conversations", pageSize=10).json()["data"]:
        assert _get(sandbox, f"/conversations/{conv['id']}").json() == conv


# -- messages and PII ----------------------------------------------------------------------------------
def test_messages_shape_and_count(sandbox: Sandbox) -> None:
    for conv in _get(sandbox, "/conversations", pageSize=20).json()["data"]:
        body = _get(sandbox, f"/conversations/{conv['id']}/messages").json()
        assert body["conversationId"] == conv["id"]
        messages = body["messages"]
        assert len(messages) == conv["messageCount"]
        assert messages[0]["role"] == "customer"
        assert messages[0]["timestamp"] == conv["startedAt"]
        assert len({m["id"] for m in messages}) == len(messages)
        for m in messages:
            assert set(m) == {"id", "role", "content", "timestamp"}
            assert m["role"] in {"customer", "agent"}
            assert m["content"]
            assert conv["startedAt"] <= m["timestamp"]
        timestamps = [m["timestamp"] for m in messages]
        assert timestamps == sorted(timestamps)
        assert body["messages"] == sandbox.messages(conv["id"])


def _contents(sb: Sandbox, ids: list[str], headers: dict[str, str] | None = None) -> list[str]:
    return [m["content"] for cid in ids for m in _get(sb, f"/conversations/{cid}/messages", headers).json()["messages"]]


def test_masking_with_header_only(sandbox: Sandbox) -> None:
    ids = sandbox.conversations_in(None, None)[:40]
    raw = _contents(sandbox, ids)
    masked = _contents(sandbox, ids, {"X-Exclude-PII": "true"})
    assert len(raw) == len(masked)
    phones = [p for c in raw for p in PHONE_RE.findall(c)]
    emails = [e for c in raw for e in EMAIL_RE.findall(c)]
    with_pii = [c for c in raw if PHONE_RE.search(c) or EMAIL_RE.search(c)]
    assert len(with_pii) >= len(raw) // 10, "a good share of messages carry PII"
    assert {p[:3] for p in phones} >= {"+44", "(55", "+1-"}, "every phone format appears"
    assert emails
    for r, m in zip(raw, masked, strict=True):
        assert not PHONE_RE.search(m)
        assert not EMAIL_RE.search(m)
        assert PHONE_RE.sub(MASK, EMAIL_RE.sub(MASK, r)) == m
    assert any(MASK in m for m in masked)
    assert _contents(sandbox, ids, {"X-Exclude-PII": "false"}) == raw


def test_pii_leak_rate(make_sandbox: Any) -> None:
    leaky = make_sandbox(pii_leak_rate=0.5)
    ids = leaky.conversations_in(None, None)[:40]
    raw = _contents(leaky, ids)
    masked = _contents(leaky, ids, {"X-Exclude-PII": "true"})
    pii = [(r, m) for r, m in zip(raw, masked, strict=True) if r != PHONE_RE.sub("", EMAIL_RE.sub("", r))]
    leaked = sum(1 for r, m in pii if r == m)
    assert 0.25 * len(pii) < leaked < 0.75 * len(pii)

    all_leak = make_sandbox(pii_leak_rate=1.0)
    assert _contents(all_leak, ids, {"X-Exclude-PII": "true"}) == raw


def test_determinism(make_sandbox: Any) -> None:
    a = make_sandbox(seed=7, start="2024-03-01")
    b = make_sandbox(seed=7, start="2024-03-01")
    c = make_sandbox(seed=8, start="2024-03-01")
    assert _list_all(a) == _list_all(b)
    assert _list_all(a) != _list_all(c)
    for cid in a.conversations_in(None, None)[:5]:
        for hdr in ({}, {"X-Exclude-PII": "true"}):
            assert (
                _get(a, f"/conversations/{cid}/messages", hdr).json()
                == _get(b, f"/conversations/{cid}/messages", hdr).json()
            )


def test_default_start_covers_yesterday(make_sandbox: Any) -> None:
    def midnight() -> datetime:
        return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    before = midnight()
    sandbox = make_sandbox()
    # The default is relative to the day the sandbox starts: bracket it, so midnight cannot fall in between.
    today = sandbox.data_end
    assert today in (before, midnight())
    assert sandbox.data_start == today - timedelta(days=3)
    assert len(sandbox.conversations_in(today - timedelta(days=1), today)) == 40


def _ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
