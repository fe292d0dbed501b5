"""Unit tests of AuralytikHook: connection, headers, filters, paging, retries, errors, secrecy, async.

No network: the sync path runs against ``requests-mock``, the async path against ``httpx.MockTransport``.
Time is a fake clock: sleeps are recorded and advance it, never slept.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import logging
import traceback
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pendulum
import pytest
import pytest_asyncio
import requests
import requests_mock

from airflow_provider_auralytik import __version__
from airflow_provider_auralytik.conversations.listing import ListingError
from airflow_provider_auralytik.conversations.window import format_instant, parse_instant
from airflow_provider_auralytik.hooks import pacing
from airflow_provider_auralytik.hooks.auralytik import (
    DEFAULT_BASE_URL,
    POOL_HEADROOM,
    AuralytikApiError,
    AuralytikAuthError,
    AuralytikHook,
    AuralytikNotFoundError,
    AuralytikUnavailableError,
    HookSettings,
)

UTC = timezone.utc
KEY = "test-key-do-not-log"
BASE = "https://api.test/v1"
LIST_URL = f"{BASE}/conversations"
CONV_URL = f"{BASE}/conversations/conv_123"
MSGS_URL = f"{BASE}/conversations/conv_123/messages"
CONN_ENV = "AIRFLOW_CONN_AURALYTIK_DEFAULT"
#: What a server (or a proxy) might echo back: the key itself.
ECHO = {"message": f"invalid API key {KEY}"}
HTML = "<html><head><title>502 Bad Gateway</title></head><body><h1>nginx proxy secret-page</h1></body></html>"


# ---------------------------------------------------------------------------------------------
# Helpers and fixtures
# ---------------------------------------------------------------------------------------------


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str = "auralytik_default", **fields: Any) -> None:
    """Define a connection through ``AIRFLOW_CONN_<ID>`` as JSON."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "auralytik", **fields}))


def page(ids: list[str] | range, total: int, page_no: int = 1, page_size: int = 10) -> dict[str, Any]:
    return {
        "data": [{"id": str(i), "status": "completed", "createdAt": "2024-01-15T10:30:00Z"} for i in ids],
        "page": page_no,
        "pageSize": page_size,
        "totalCount": total,
    }


A_DAY = {"date_from": "2024-01-15T00:00:00Z", "date_to": "2024-01-16T00:00:00Z"}


def spread_over_a_day(count: int) -> list[dict[str, Any]]:
    step = 86_000 // max(count, 1)
    start = datetime(2024, 1, 15, tzinfo=UTC)
    return [
        {
            "id": f"c{i:03d}",
            "status": "completed",
            "createdAt": format_instant(start + timedelta(seconds=11 + step * i)),
        }
        for i in range(count)
    ]


def window_server(
    conversations: list[dict[str, Any]], count: Callable[[int, int], int] = lambda n, shown: n
) -> Callable[[Any, Any], dict[str, Any]]:
    """A ``GET /conversations`` callback: inclusive bounds, newest first, first page only, ``count`` for totalCount."""

    def answer(request: Any, context: Any) -> dict[str, Any]:
        q = dict(query(request))
        low, high = parse_instant(q["dateFrom"]), parse_instant(q["dateTo"])
        matched = [c for c in conversations if low <= parse_instant(c["createdAt"]) <= high]
        matched.sort(key=lambda c: c["createdAt"], reverse=True)
        size = int(q["pageSize"])
        data = matched[:size]
        return {"data": data, "page": 1, "pageSize": size, "totalCount": count(len(matched), len(data))}

    return answer


def query(request: Any) -> list[tuple[str, str]]:
    """The query string of a recorded request, decoded, in order (works for requests and httpx)."""
    return parse_qsl(urlsplit(str(request.url)).query, keep_blank_values=True)


def pages_requested(m: requests_mock.Mocker) -> list[int]:
    return [int(dict(query(r))["page"]) for r in m.request_history]


def drain(items: Iterator[dict[str, Any]], into: list[dict[str, Any]]) -> None:
    """Consume ``items`` into ``into``, so what came before an error can be checked."""
    into.extend(items)


def assert_no_key(text: str) -> None:
    assert KEY not in text
    # Nor a recognisable piece of it (a truncated echo would leave a prefix or a suffix).
    assert KEY[:8] not in text
    assert KEY[-8:] not in text


def assert_exception_has_no_key(exc: BaseException) -> None:
    assert_no_key(str(exc))
    assert_no_key(repr(exc))
    assert_no_key(repr(exc.args))
    assert_no_key("".join(traceback.format_exception(exc)))


def _call(hook: AuralytikHook, url: str) -> Any:
    if url == LIST_URL:
        return list(hook.list_conversations())
    if url == MSGS_URL:
        return hook.get_messages("conv_123")
    return hook.get_conversation("conv_123")


@pytest.fixture(autouse=True)
def default_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auralytik_default``: the test base URL and key, 3 retries, no backoff."""
    set_conn(
        monkeypatch,
        host=BASE,
        password=KEY,
        extra={"max_retries": 3, "backoff_base": 0, "backoff_max": 0},
    )


class FakeClock(pacing.Clock):
    """Time that only moves when someone sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    """The pacers of this test (none shared with other tests) run on a fake clock."""
    fake = FakeClock()
    monkeypatch.setattr(pacing, "SYSTEM_CLOCK", fake)
    pacing.forget_pacers()
    yield fake
    pacing.forget_pacers()


@pytest.fixture
def sleeps(clock: FakeClock) -> list[float]:
    """Every delay the hook asked for (backoff, 429 pauses, pacing); nothing really sleeps."""
    return clock.sleeps


@pytest.fixture
def m() -> Iterator[requests_mock.Mocker]:
    # case_sensitive: otherwise requests-mock lower-cases the recorded path and query.
    with requests_mock.Mocker(case_sensitive=True) as mocker:
        yield mocker


@pytest.fixture
def hook() -> AuralytikHook:
    return AuralytikHook()


# ---------------------------------------------------------------------------------------------
# Connection
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"host": "https://api.test/v1"}, "https://api.test/v1", id="base-url"),
        pytest.param({"host": "https://api.test/v1/"}, "https://api.test/v1", id="trailing-slash"),
        pytest.param({"host": "  https://api.test/v1  "}, "https://api.test/v1", id="whitespace"),
        pytest.param({"host": "api.test/v1"}, "https://api.test/v1", id="no-scheme"),
        pytest.param({"host": "http://127.0.0.1:8080/v1"}, "http://127.0.0.1:8080/v1", id="http-port"),
        pytest.param({"host": ""}, DEFAULT_BASE_URL, id="empty-host"),
        pytest.param({}, DEFAULT_BASE_URL, id="no-host"),
        # HttpHook's convention: schema http/https is the URL scheme.
        pytest.param({"host": "localhost", "schema": "http", "port": 8080}, "http://localhost:8080", id="schema"),
        # Anything else in schema is the path (what an auralytik://…/v1 URI stores there).
        pytest.param({"host": "api.test", "schema": "v1", "port": 8443}, "https://api.test:8443/v1", id="path"),
        pytest.param({"host": "api.test/v1", "port": 8443}, "https://api.test:8443/v1", id="port-and-path"),
    ],
)
def test_base_url_from_json_connection(monkeypatch, fields, expected):
    set_conn(monkeypatch, password=KEY, **fields)
    assert AuralytikHook().base_url == expected


def test_default_base_url_is_the_published_one():
    assert DEFAULT_BASE_URL == "https://api.auralytik.com/v1"


def test_trailing_slash_host_builds_single_slash_urls(monkeypatch, m):
    set_conn(monkeypatch, host=BASE + "/", password=KEY)
    m.get(CONV_URL, json={"id": "conv_123"})
    AuralytikHook().get_conversation("conv_123")
    assert m.last_request.url == CONV_URL


@pytest.mark.parametrize(
    "uri",
    [
        # The natural URI: Airflow stores "/v1" as the connection's schema, the hook reads it as the path.
        pytest.param(f"auralytik://:{KEY}@api.test/v1", id="path-in-uri"),
        # The path %-encoded into the host.
        pytest.param(f"auralytik://:{KEY}@api.test%2Fv1", id="path-encoded-in-host"),
        # What Connection.get_uri() itself writes for host="https://api.test/v1".
        pytest.param(f"auralytik://https://:{KEY}@api.test%2Fv1", id="airflow-get-uri-form"),
        pytest.param(f"auralytik://:{KEY}@https%3A%2F%2Fapi.test%2Fv1", id="full-url-encoded-in-host"),
    ],
)
def test_connection_from_uri(monkeypatch, m, uri):
    monkeypatch.setenv(CONN_ENV, uri)
    hook = AuralytikHook()
    assert hook.base_url == BASE
    m.get(CONV_URL, json={"id": "conv_123"})
    assert hook.get_conversation("conv_123") == {"id": "conv_123"}
    assert m.last_request.headers["Authorization"] == f"Bearer {KEY}"


def test_connection_from_uri_with_port_and_extras(monkeypatch):
    monkeypatch.setenv(CONN_ENV, f"auralytik://:{KEY}@api.test:8443/v1?timeout=5&max_retries=2")
    settings = AuralytikHook().settings
    assert settings.base_url == "https://api.test:8443/v1"
    assert (settings.timeout, settings.max_retries) == (5.0, 2)


def test_connection_get_uri_round_trip(monkeypatch):
    from airflow.sdk import Connection

    conn = Connection(conn_id="auralytik_default", conn_type="auralytik", host=BASE, password=KEY)
    monkeypatch.setenv(CONN_ENV, conn.get_uri())
    assert AuralytikHook().base_url == BASE


def test_other_conn_id(monkeypatch, m):
    set_conn(monkeypatch, "auralytik_eu", host="https://eu.api.test/v1", password="other-fake-key")
    m.get("https://eu.api.test/v1/conversations/c1", json={"id": "c1"})
    hook = AuralytikHook(auralytik_conn_id="auralytik_eu")
    assert hook.get_conversation("c1") == {"id": "c1"}
    assert m.last_request.headers["Authorization"] == "Bearer other-fake-key"


@pytest.mark.parametrize("password", [None, "", "   "])
def test_missing_password_raises_before_any_request(monkeypatch, m, password):
    fields: dict[str, Any] = {"host": BASE}
    if password is not None:
        fields["password"] = password
    set_conn(monkeypatch, **fields)
    m.get(requests_mock.ANY, json={})
    hook = AuralytikHook()
    with pytest.raises(AuralytikAuthError, match="'auralytik_default' has no API key") as info:
        hook.get_conversation("conv_123")
    assert m.call_count == 0
    assert "password" in str(info.value)
    with pytest.raises(AuralytikAuthError):
        list(hook.list_conversations())
    assert m.call_count == 0


def test_api_key_from_extra_when_no_password(monkeypatch, m):
    set_conn(monkeypatch, host=BASE, extra={"api_key": KEY})
    m.get(CONV_URL, json={"id": "conv_123"})
    hook = AuralytikHook()
    hook.get_conversation("conv_123")
    assert m.last_request.headers["Authorization"] == f"Bearer {KEY}"
    assert_no_key(repr(hook.settings))


def test_settings_defaults(monkeypatch):
    set_conn(monkeypatch, host=BASE, password=KEY)
    settings = AuralytikHook().settings
    assert settings.timeout == 30.0
    assert settings.max_retries == 6
    assert settings.max_concurrency == 16
    assert settings.retry_after_max == 120.0


def test_extras_are_parsed(monkeypatch):
    set_conn(
        monkeypatch,
        host=BASE,
        password=KEY,
        extra={
            "timeout": "12.5",
            "max_retries": 2,
            "max_concurrency": "4",
            "backoff_base": 0.25,
            "backoff_max": 3,
            "retry_after_max": 9,
        },
    )
    settings = AuralytikHook().settings
    assert settings.timeout == 12.5
    assert settings.max_retries == 2
    assert isinstance(settings.max_retries, int)
    assert settings.max_concurrency == 4
    assert isinstance(settings.max_concurrency, int)
    assert settings.backoff_base == 0.25
    assert settings.backoff_max == 3.0
    assert settings.retry_after_max == 9.0


@pytest.mark.parametrize("spec", [f for f in dataclasses.fields(HookSettings) if "minimum" in f.metadata])
def test_every_declared_extra_is_read_from_the_connection(monkeypatch, spec):
    """The numeric extras are declared once (HookSettings' fields): each one is read, with its own type."""
    value = spec.metadata["minimum"] + 7
    set_conn(monkeypatch, host=BASE, password=KEY, extra={spec.name: str(value)})
    read = getattr(AuralytikHook().settings, spec.name)
    assert read == (int(value) if isinstance(spec.default, int) else value)
    assert type(read) is (int if isinstance(spec.default, int) else float)
    set_conn(monkeypatch, host=BASE, password=KEY, extra={spec.name: spec.metadata["minimum"] - 1})
    with pytest.raises(ValueError, match=f"extra '{spec.name}' must be a finite number >= "):
        _ = AuralytikHook().settings


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        ({"timeout": "abc"}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": [1]}, "timeout"),
        ({"timeout": "nan"}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": "inf"}, "max_retries"),
        ({"max_retries": "many"}, "max_retries"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"backoff_base": -0.5}, "backoff_base"),
        ({"retry_after_max": "-1"}, "retry_after_max"),
    ],
)
def test_bad_extra_raises_value_error(monkeypatch, m, extra, name):
    set_conn(monkeypatch, host=BASE, password=KEY, extra=extra)
    m.get(requests_mock.ANY, json={})
    hook = AuralytikHook()
    with pytest.raises(ValueError, match=f"'auralytik_default'.*{name}"):
        hook.get_conversation("conv_123")
    assert m.call_count == 0


def test_constructor_overrides_win_over_extras(monkeypatch):
    set_conn(
        monkeypatch,
        host=BASE,
        password=KEY,
        extra={"timeout": 50, "max_retries": 9, "max_concurrency": 30, "backoff_base": 5, "backoff_max": 60},
    )
    settings = AuralytikHook(timeout=1.5, max_retries=0, max_concurrency=2, backoff_base=0, backoff_max=0.5).settings
    assert settings.timeout == 1.5
    assert settings.max_retries == 0
    assert settings.max_concurrency == 2
    assert settings.backoff_base == 0
    assert settings.backoff_max == 0.5
    # Overrides left at None do not clobber the extras.
    settings = AuralytikHook(timeout=2).settings
    assert (settings.timeout, settings.max_retries, settings.max_concurrency) == (2.0, 9, 30)


def test_timeout_is_sent_with_every_request(monkeypatch, m):
    set_conn(monkeypatch, host=BASE, password=KEY, extra={"timeout": 7})
    m.get(CONV_URL, json={"id": "conv_123"})
    AuralytikHook().get_conversation("conv_123")
    assert m.last_request.timeout == 7.0


def test_pool_size_follows_max_concurrency(monkeypatch):
    # max_concurrency workers fetch while one more thread lists: the pool has a little headroom.
    set_conn(monkeypatch, host=BASE, password=KEY, extra={"max_concurrency": 7})
    session = AuralytikHook().session
    for prefix in ("https://api.test", "http://api.test"):
        adapter = session.get_adapter(prefix)
        assert adapter.poolmanager.connection_pool_kw["maxsize"] == 7 + POOL_HEADROOM  # type: ignore[attr-defined]  # urllib3 internals
        assert adapter._pool_maxsize == 7 + POOL_HEADROOM  # type: ignore[attr-defined]  # requests internals  # urllib3 internals
        assert adapter.max_retries.total == 0  # type: ignore[attr-defined]  # retries are the hook's
    assert 0 <= POOL_HEADROOM <= 8
    override = AuralytikHook(max_concurrency=3).session.get_adapter("https://api.test")
    assert override.poolmanager.connection_pool_kw["maxsize"] == 3 + POOL_HEADROOM  # type: ignore[attr-defined]  # urllib3 internals


def test_get_conn_is_the_session_and_close_is_idempotent(hook):
    assert hook.get_conn() is hook.session
    first = hook.session
    hook.close()
    hook.close()
    assert hook.session is not first


def test_ui_field_behaviour():
    behaviour = AuralytikHook.get_ui_field_behaviour()
    assert set(behaviour["hidden_fields"]) == {"schema", "port", "login"}
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
    assert (AuralytikHook.conn_type, AuralytikHook.default_conn_name) == ("auralytik", "auralytik_default")


# ---------------------------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------------------------


def test_headers_on_listing(m, hook):
    m.get(LIST_URL, json=page(["a"], 1))
    list(hook.list_conversations())
    headers = m.last_request.headers
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["User-Agent"] == f"airflow-provider-auralytik/{__version__}"
    assert headers["Accept"] == "application/json"
    assert "X-Exclude-PII" not in headers


def test_headers_on_conversation(m, hook):
    m.get(CONV_URL, json={"id": "conv_123"})
    hook.get_conversation("conv_123")
    assert m.last_request.headers["Authorization"] == f"Bearer {KEY}"
    assert "X-Exclude-PII" not in m.last_request.headers


def test_messages_always_request_pii_masking(m, hook):
    m.get(MSGS_URL, json={"conversationId": "conv_123", "messages": []})
    hook.get_messages("conv_123")
    headers = m.last_request.headers
    assert headers["X-Exclude-PII"] == "true"
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["User-Agent"] == f"airflow-provider-auralytik/{__version__}"
    # The per-request header did not leak into the shared session.
    assert "X-Exclude-PII" not in hook.session.headers


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


def test_no_filters_lists_between_the_open_bounds(m, hook):
    m.get(LIST_URL, json=page([], 0))
    list(hook.list_conversations())
    # Open sides: LISTING_EARLIEST/LISTING_LATEST, widened by a second like every window.
    assert query(m.last_request) == [
        ("dateFrom", "1969-12-31T23:59:59Z"),
        ("dateTo", "2100-01-01T00:00:01Z"),
        ("page", "1"),
        ("pageSize", "100"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "param", "value"),
    [
        ({"channel_id": "ch_whatsapp"}, "channelId", "ch_whatsapp"),
        ({"campaign_id": "camp_456"}, "campaignId", "camp_456"),
        ({"status": "completed"}, "status", "completed"),
        ({"date_from": "2024-01-15T00:00:00Z"}, "dateFrom", "2024-01-15T00:00:00Z"),
        ({"date_to": "2024-01-16T00:00:00Z"}, "dateTo", "2024-01-16T00:00:00Z"),
        ({"date_from": datetime(2024, 1, 15, tzinfo=UTC)}, "dateFrom", "2024-01-15T00:00:00Z"),
        (
            {"date_from": datetime(2024, 1, 15, 2, 30, tzinfo=timezone(timedelta(hours=2)))},
            "dateFrom",
            "2024-01-15T00:30:00Z",
        ),
        ({"date_to": "2024-01-15T19:00:00-05:00"}, "dateTo", "2024-01-16T00:00:00Z"),
        ({"date_from": "2024-01-15T00:00:00.250+00:00"}, "dateFrom", "2024-01-15T00:00:00.250000Z"),
        (
            {"date_from": pendulum.datetime(2024, 1, 15, 5, 30, tz="Asia/Kolkata")},
            "dateFrom",
            "2024-01-15T00:00:00Z",
        ),
        ({"date_to": pendulum.datetime(2024, 1, 16, tz="UTC")}, "dateTo", "2024-01-16T00:00:00Z"),
    ],
)
def test_each_filter_maps_to_its_query_param(m, hook, kwargs, param, value):
    m.get(LIST_URL, json=page([], 0))
    hook.get_conversations_page(page_size=25, **kwargs)
    assert query(m.last_request) == [(param, value), ("page", "1"), ("pageSize", "25")]


def test_all_filters_together(m, hook):
    m.get(LIST_URL, json=page([], 0))
    hook.get_conversations_page(
        channel_id="ch_whatsapp",
        campaign_id="camp_456",
        status="completed",
        date_from=pendulum.datetime(2024, 1, 15, tz="Europe/Paris"),
        date_to="2024-01-16T00:00:00+01:00",
        page_size=50,
    )
    assert query(m.last_request) == [
        ("channelId", "ch_whatsapp"),
        ("campaignId", "camp_456"),
        ("status", "completed"),
        ("dateFrom", "2024-01-14T23:00:00Z"),
        ("dateTo", "2024-01-15T23:00:00Z"),
        ("page", "1"),
        ("pageSize", "50"),
    ]


@pytest.mark.parametrize("value", [["ch_a", "ch_b"], ("ch_a",), 42])
def test_filter_that_is_not_one_string_sends_nothing(m, hook, value):
    m.get(requests_mock.ANY, json=page([], 0))
    with pytest.raises(ValueError, match="channel_id must be"):
        hook.list_conversations(channel_id=value)
    with pytest.raises(ValueError, match="channel_id must be"):
        hook.get_conversations_page(channel_id=value)
    assert m.call_count == 0


def test_filters_are_repeated_on_every_request(m, hook):
    m.get(LIST_URL, json=window_server(spread_over_a_day(30)))
    got = list(hook.list_conversations(channel_id="ch", status="completed", page_size=10, **A_DAY))
    assert len(got) == 30
    assert m.call_count > 1
    for request in m.request_history:
        assert dict(query(request))["channelId"] == "ch"
        assert dict(query(request))["status"] == "completed"


def test_get_conversations_page_returns_the_page(m, hook):
    body = page(["x"], 523, 3, 1)
    m.get(LIST_URL, json=body)
    assert hook.get_conversations_page(page=3, page_size=1, status="completed") == body
    assert query(m.last_request) == [("status", "completed"), ("page", "3"), ("pageSize", "1")]


# ---------------------------------------------------------------------------------------------
# Paging edges
# ---------------------------------------------------------------------------------------------


def test_single_page(m, hook):
    m.get(LIST_URL, json=page(["a", "b", "c"], 3))
    assert [c["id"] for c in hook.list_conversations(page_size=10)] == ["a", "b", "c"]
    assert m.call_count == 1


def test_never_pages_by_number_and_is_exact(m, hook):
    conversations = spread_over_a_day(250)
    m.get(LIST_URL, json=window_server(conversations))
    got = [c["id"] for c in hook.list_conversations(page_size=10, **A_DAY)]
    assert sorted(got) == sorted(c["id"] for c in conversations)
    assert pages_requested(m) == [1] * m.call_count


@pytest.mark.parametrize("total", [0, 3, 10, 1000])
def test_short_page_is_complete_whatever_total_count_says(m, hook, total):
    m.get(LIST_URL, json=page(["a", "b", "c"], total))
    assert [c["id"] for c in hook.list_conversations(page_size=10)] == ["a", "b", "c"]
    assert m.call_count == 1


@pytest.mark.parametrize(
    "lie",
    [lambda n, shown: 0, lambda n, shown: shown, lambda n, shown: n // 2, lambda n, shown: n + 1000],
    ids=["zero", "page", "half", "plus1000"],
)
def test_lying_total_count_costs_requests_never_records(m, hook, lie):
    conversations = spread_over_a_day(400)
    m.get(LIST_URL, json=window_server(conversations, count=lie))
    got = [c["id"] for c in hook.list_conversations(**A_DAY)]
    assert sorted(got) == sorted(c["id"] for c in conversations)
    assert m.call_count <= 30


def test_empty_first_page(m, hook):
    m.get(LIST_URL, json=page([], 0))
    assert list(hook.list_conversations()) == []
    assert m.call_count == 1


def test_page_size_two(m, hook):
    conversations = spread_over_a_day(7)
    m.get(LIST_URL, json=window_server(conversations))
    assert [c["id"] for c in hook.list_conversations(page_size=2, **A_DAY)] == [f"c{i:03d}" for i in range(7)]
    assert {dict(query(r))["pageSize"] for r in m.request_history} == {"2"}


def test_items_are_returned_as_is(m, hook):
    item = {
        "id": "conv_1",
        "endedAt": None,
        "futureField": {"nested": [1, 2]},
        "status": "active",
        "createdAt": "2024-01-15T10:30:00Z",
    }
    m.get(LIST_URL, json={"data": [item], "page": 1, "pageSize": 100, "totalCount": 1, "cursor": "x"})
    assert list(hook.list_conversations()) == [item]


def test_list_is_lazy_and_nothing_is_sent_before_iteration(m, hook):
    m.get(LIST_URL, json=page(["a"], 1))
    iterator = hook.list_conversations()
    assert m.call_count == 0
    assert next(iterator)["id"] == "a"
    assert m.call_count == 1


# ---------------------------------------------------------------------------------------------
# Invalid arguments send nothing
# ---------------------------------------------------------------------------------------------

INVALID_LIST_KWARGS = [
    pytest.param({"page_size": 0}, id="page_size-0"),
    pytest.param({"page_size": 101}, id="page_size-101"),
    pytest.param({"page_size": -1}, id="page_size-negative"),
    pytest.param({"page_size": "10"}, id="page_size-str"),
    pytest.param({"page_size": True}, id="page_size-bool"),
    pytest.param({"page_size": 10.0}, id="page_size-float"),
    pytest.param({"page_size": None}, id="page_size-none"),
    pytest.param({"date_from": datetime(2024, 1, 15)}, id="naive-datetime"),
    pytest.param({"date_to": pendulum.naive(2024, 1, 15)}, id="naive-pendulum"),
    pytest.param({"date_from": "2024-01-15T00:00:00"}, id="naive-string"),
    pytest.param({"date_from": "2024-01-15"}, id="date-only"),
    pytest.param({"date_from": "yesterday"}, id="unparsable"),
    pytest.param({"date_to": ""}, id="empty-string"),
    pytest.param({"date_from": "2024-01-16T00:00:00Z", "date_to": "2024-01-15T00:00:00Z"}, id="reversed"),
    pytest.param({"date_from": "2024-01-15T00:00:00Z", "date_to": "2024-01-15T00:00:00Z"}, id="empty-window"),
    pytest.param(
        {"date_from": "2024-01-15T01:00:00+01:00", "date_to": "2024-01-15T00:00:00Z"},
        id="empty-window-across-zones",
    ),
]


@pytest.mark.parametrize("kwargs", INVALID_LIST_KWARGS)
def test_invalid_list_arguments_raise_at_call_time_and_send_nothing(m, hook, kwargs):
    m.get(requests_mock.ANY, json=page([], 0))
    with pytest.raises(ValueError):  # noqa: PT011 - the point is the type, each message is checked below
        hook.list_conversations(**kwargs)  # no next(): must raise here, not on first iteration
    with pytest.raises(ValueError):  # noqa: PT011 - the messages are checked case by case above
        hook.get_conversations_page(**kwargs)
    assert m.call_count == 0


def test_invalid_argument_messages(hook):
    with pytest.raises(ValueError, match=r"page_size must be an integer from 1 to 100, not 101"):
        hook.list_conversations(page_size=101)
    with pytest.raises(ValueError, match=r"date_from=.* has no time zone"):
        hook.list_conversations(date_from=datetime(2024, 1, 15))
    with pytest.raises(ValueError, match=r"date_to='tomorrow' is not an ISO 8601"):
        hook.list_conversations(date_to="tomorrow")
    with pytest.raises(ValueError, match=r"date_to \(2024-01-15T00:00:00Z\) must be after date_from"):
        hook.list_conversations(date_from="2024-01-15T00:00:00Z", date_to="2024-01-15T00:00:00Z")


def test_invalid_date_type_raises_type_error(m, hook):
    m.get(requests_mock.ANY, json={})
    with pytest.raises(TypeError, match="date_from must be a datetime or an ISO 8601 string"):
        hook.list_conversations(date_from=1705276800)
    assert m.call_count == 0


@pytest.mark.parametrize("kwargs", [{"page": 0}, {"page": "2"}, {"page": True}])
def test_invalid_page_sends_nothing(m, hook, kwargs):
    m.get(requests_mock.ANY, json={})
    with pytest.raises(ValueError, match="page must be a positive integer"):
        hook.get_conversations_page(**kwargs)
    assert m.call_count == 0


@pytest.mark.parametrize("conversation_id", ["", "   ", None, 123])
@pytest.mark.parametrize("method", ["get_conversation", "get_messages"])
def test_invalid_conversation_id_sends_nothing(m, hook, method, conversation_id):
    m.get(requests_mock.ANY, json={})
    with pytest.raises(ValueError, match="conversation_id must be a non-empty string"):
        getattr(hook, method)(conversation_id)
    assert m.call_count == 0


def test_invalid_arguments_are_checked_before_the_connection_is_read(monkeypatch, m):
    monkeypatch.delenv(CONN_ENV)
    hook = AuralytikHook()  # no such connection: the argument error must come first
    with pytest.raises(ValueError, match="page_size"):
        hook.list_conversations(page_size=0)
    with pytest.raises(ValueError, match="conversation_id"):
        hook.get_messages("")
    assert m.call_count == 0


# ---------------------------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------------------------


def test_429_retry_after_seconds_is_used(m, hook, sleeps):
    m.get(CONV_URL, [{"status_code": 429, "headers": {"Retry-After": "7"}}, {"json": {"id": "conv_123"}}])
    assert hook.get_conversation("conv_123") == {"id": "conv_123"}
    assert m.call_count == 2
    assert sleeps == [pytest.approx(7.0, abs=pacing.PAUSE_JITTER)]


def test_429_retry_after_http_date_is_used(m, hook, sleeps):
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    m.get(CONV_URL, [{"status_code": 429, "headers": {"Retry-After": when}}, {"json": {"id": "conv_123"}}])
    hook.get_conversation("conv_123")
    assert m.call_count == 2
    assert len(sleeps) == 1
    assert 25.0 < sleeps[0] <= 30.0 + pacing.PAUSE_JITTER


def test_429_retry_after_http_date_in_the_past_means_now(m, hook, sleeps):
    when = "Wed, 21 Oct 2015 07:28:00 GMT"
    m.get(CONV_URL, [{"status_code": 429, "headers": {"Retry-After": when}}, {"json": {"id": "conv_123"}}])
    hook.get_conversation("conv_123")
    assert m.call_count == 2
    assert sleeps == []  # the moment is past: no pause


def test_retry_after_above_cap_is_capped(monkeypatch, m, sleeps):
    m.get(
        CONV_URL,
        [
            {"status_code": 429, "headers": {"Retry-After": "100000"}},
            {"status_code": 429, "headers": {"Retry-After": "inf"}},
            {"json": {"id": "conv_123"}},
        ],
    )
    AuralytikHook().get_conversation("conv_123")
    assert sleeps == [pytest.approx(120.0, abs=pacing.PAUSE_JITTER)] * 2  # the default retry_after_max

    set_conn(monkeypatch, host=BASE, password=KEY, extra={"retry_after_max": 5})
    sleeps.clear()
    m.get(CONV_URL, [{"status_code": 429, "headers": {"Retry-After": "60"}}, {"json": {"id": "conv_123"}}])
    pacing.forget_pacers()
    AuralytikHook().get_conversation("conv_123")
    assert sleeps == [pytest.approx(5.0, abs=pacing.PAUSE_JITTER)]


@pytest.mark.parametrize("retry_after", ["soon", "", "nan", "-5"])
def test_garbage_retry_after_pauses_a_second(monkeypatch, m, sleeps, retry_after):
    set_conn(monkeypatch, host=BASE, password=KEY, extra={"backoff_base": 10, "backoff_max": 10})
    m.get(
        CONV_URL,
        [{"status_code": 429, "headers": {"Retry-After": retry_after}}, {"json": {"id": "conv_123"}}],
    )
    AuralytikHook().get_conversation("conv_123")
    assert m.call_count == 2
    if retry_after == "-5":  # a number, clamped at zero: "now", so this request backs off alone (backoff_base 10)
        assert len(sleeps) == 1
        assert 5.0 <= sleeps[0] <= 10.0
    else:  # no usable moment: the pacer's default pause, not the fault backoff
        assert sleeps == [pytest.approx(pacing.DEFAULT_PAUSE, abs=pacing.PAUSE_JITTER)]


def test_backoff_grows_and_is_capped(monkeypatch, m, sleeps):
    set_conn(
        monkeypatch,
        host=BASE,
        password=KEY,
        extra={"max_retries": 4, "backoff_base": 1, "backoff_max": 4},
    )
    m.get(CONV_URL, [{"status_code": 503}] * 4 + [{"json": {"id": "conv_123"}}])
    AuralytikHook().get_conversation("conv_123")
    assert m.call_count == 5
    ceilings = [1, 2, 4, 4]
    assert len(sleeps) == 4
    for delay, ceiling in zip(sleeps, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_503_retry_after_is_honoured(m, hook, sleeps):
    m.get(CONV_URL, [{"status_code": 503, "headers": {"Retry-After": "3"}}, {"json": {"id": "conv_123"}}])
    hook.get_conversation("conv_123")
    assert sleeps == [3.0]  # a 5xx's Retry-After is backoff of that request only (no shared pause)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_with_html_are_retried(m, hook, sleeps, status):
    m.get(
        CONV_URL,
        [
            {"status_code": status, "text": HTML, "headers": {"Content-Type": "text/html"}},
            {"json": {"id": "conv_123", "x": 1}},
        ],
    )
    assert hook.get_conversation("conv_123") == {"id": "conv_123", "x": 1}
    assert m.call_count == 2
    assert sleeps == [0.0]


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectionError,
        requests.exceptions.ConnectTimeout,
        requests.exceptions.ReadTimeout,
        requests.exceptions.Timeout,
        requests.exceptions.ChunkedEncodingError,
    ],
)
def test_transport_errors_are_retried(m, hook, exc):
    m.get(CONV_URL, [{"exc": exc}, {"exc": exc}, {"json": {"id": "conv_123"}}])
    assert hook.get_conversation("conv_123") == {"id": "conv_123"}
    assert m.call_count == 3


@pytest.mark.parametrize("body", [b"", b"not json", b'{"data": [', b"<html>ok</html>"])
def test_200_with_invalid_json_is_retried(m, hook, body):
    m.get(LIST_URL, [{"content": body}, {"json": page(["a"], 1)}])
    assert [c["id"] for c in hook.list_conversations()] == ["a"]
    assert m.call_count == 2


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"items": []},
        {"data": [], "totalCount": "1"},
        {"data": "x", "totalCount": 1},
        {"data": None, "totalCount": 0},
        "a string",
        None,
    ],
)
def test_200_listing_of_wrong_shape_is_retried(m, hook, payload):
    m.get(LIST_URL, [{"json": payload}, {"json": page(["a"], 1)}])
    assert [c["id"] for c in hook.list_conversations()] == ["a"]
    assert m.call_count == 2


@pytest.mark.parametrize(
    "payload", [{"conversationId": "conv_123"}, {"messages": {"a": 1}}, {"messages": ["hi"]}, [], None]
)
def test_200_messages_of_wrong_shape_is_retried(m, hook, payload):
    m.get(MSGS_URL, [{"json": payload}, {"json": {"conversationId": "conv_123", "messages": [{"id": "m"}]}}])
    assert hook.get_messages("conv_123") == [{"id": "m"}]
    assert m.call_count == 2


@pytest.mark.parametrize("payload", [[{"id": "conv_123"}], "conv_123", 1])
def test_200_conversation_of_wrong_shape_is_retried(m, hook, payload):
    m.get(CONV_URL, [{"json": payload}, {"json": {"id": "conv_123"}}])
    assert hook.get_conversation("conv_123") == {"id": "conv_123"}
    assert m.call_count == 2


EXHAUSTING = [
    pytest.param(CONV_URL, {"status_code": 500, "text": HTML}, "HTTP 500", id="500-html"),
    pytest.param(CONV_URL, {"status_code": 502, "text": HTML}, "HTTP 502", id="502-html"),
    pytest.param(CONV_URL, {"status_code": 503, "json": ECHO}, "HTTP 503", id="503-json-echo"),
    pytest.param(
        CONV_URL, {"exc": requests.exceptions.ConnectionError(f"refused {KEY}")}, "to api.test refused", id="conn"
    ),
    pytest.param(CONV_URL, {"exc": requests.exceptions.ReadTimeout}, "within timeout=30 s", id="timeout"),
    pytest.param(CONV_URL, {"content": f"garbage {KEY}".encode()}, "not valid JSON", id="invalid-json"),
    pytest.param(MSGS_URL, {"json": {"unexpected": KEY}}, "has no 'messages' list", id="wrong-shape"),
    pytest.param(MSGS_URL, {"json": {"messages": [{"id": "m1"}, "m2"]}}, "list of objects", id="not-objects"),
    pytest.param(LIST_URL, {"json": {"data": []}}, "not a listing page", id="wrong-shape-page"),
]


@pytest.mark.parametrize(("url", "response", "reason"), EXHAUSTING)
def test_exhaustion_after_max_retries_plus_one_attempts(m, hook, sleeps, url, response, reason):
    m.get(url, [response])
    with pytest.raises(AuralytikApiError) as info:
        _call(hook, url)
    exc = info.value
    assert m.call_count == 4  # max_retries=3 in the connection, plus the first attempt
    assert len(sleeps) == 3
    assert type(exc) is AuralytikUnavailableError  # what sensors and triggers treat as an outage
    assert exc.status is None
    message = str(exc)
    assert "\n" not in message
    assert "still failing after 4 attempts" in message
    assert reason in message
    assert "max_retries" in message
    assert "'auralytik_default'" in message
    assert "<html" not in message
    assert "secret-page" not in message
    assert_exception_has_no_key(exc)


def test_max_retries_zero_means_one_attempt(m, sleeps):
    m.get(CONV_URL, status_code=503)
    with pytest.raises(AuralytikApiError, match="after 1 attempts"):
        AuralytikHook(max_retries=0).get_conversation("conv_123")
    assert m.call_count == 1
    assert sleeps == []


@pytest.mark.parametrize(
    ("status", "exc_type"),
    [
        (400, AuralytikApiError),
        (401, AuralytikAuthError),
        (403, AuralytikAuthError),
        (404, AuralytikNotFoundError),
        (409, AuralytikApiError),
        (422, AuralytikApiError),
    ],
)
def test_client_errors_are_not_retried(m, hook, sleeps, status, exc_type):
    m.get(CONV_URL, status_code=status, text=HTML, headers={"Content-Type": "text/html"})
    with pytest.raises(AuralytikApiError) as info:
        hook.get_conversation("conv_123")
    assert type(info.value) is exc_type
    assert info.value.status == status
    assert m.call_count == 1
    assert sleeps == []
    message = str(info.value)
    assert f"HTTP {status}" in message
    assert "\n" not in message
    assert "<html" not in message
    assert "secret-page" not in message
    assert "Bad Gateway" not in message


def test_401_names_the_connection_and_scope(m, hook):
    m.get(LIST_URL, status_code=401, json={"error": {"message": "token expired"}})
    with pytest.raises(AuralytikAuthError) as info:
        list(hook.list_conversations())
    message = str(info.value)
    assert "'auralytik_default'" in message
    assert "conversations:read" in message
    assert "(token expired)" in message  # a JSON reason is kept, short
    assert m.call_count == 1


def test_404_on_messages(m, hook):
    m.get(MSGS_URL, status_code=404, json={"message": "conversation not found"})
    with pytest.raises(AuralytikNotFoundError, match="conversation not found") as info:
        hook.get_messages("conv_123")
    assert info.value.status == 404
    assert m.call_count == 1


def test_json_error_detail_is_one_short_line(m, hook):
    m.get(CONV_URL, status_code=400, json={"message": "bad\n\nrequest  " + "x" * 500})
    with pytest.raises(AuralytikApiError) as info:
        hook.get_conversation("conv_123")
    message = str(info.value)
    assert "\n" not in message
    assert "(bad request " in message
    assert len(message) < 400


def test_error_on_a_later_page_propagates(m, hook):
    m.get(LIST_URL, [{"json": page(range(10), 30, 1)}, {"status_code": 403, "json": {"message": "scope"}}])
    seen: list[dict[str, Any]] = []
    with pytest.raises(AuralytikAuthError):
        drain(hook.list_conversations(page_size=10), into=seen)
    assert seen == []  # a full page is only "maybe more": nothing is yielded before its piece is complete
    assert m.call_count == 2


def test_redirect_loop_is_not_followed_forever(m, hook):
    m.get(CONV_URL, status_code=302, headers={"Location": CONV_URL})
    # Today requests' own TooManyRedirects escapes; an AuralytikApiError would be as good.
    with pytest.raises((requests.TooManyRedirects, AuralytikApiError)) as info:
        hook.get_conversation("conv_123")
    assert m.call_count <= 31
    assert_exception_has_no_key(info.value)


# ---------------------------------------------------------------------------------------------
# The key never appears
# ---------------------------------------------------------------------------------------------

LONG_ECHO = {"message": "x" * 190 + " " + KEY}  # an echo straddling the 200-character cut

KEY_CASES = [
    pytest.param(CONV_URL, {"status_code": 401, "json": ECHO}, AuralytikAuthError, id="401-json-echo"),
    pytest.param(CONV_URL, {"status_code": 401, "text": f"<p>{KEY}</p>"}, AuralytikAuthError, id="401-html"),
    pytest.param(
        CONV_URL,
        {"status_code": 403, "json": {"error": f"key {KEY} lacks scope"}},
        AuralytikAuthError,
        id="403-json-echo",
    ),
    pytest.param(CONV_URL, {"status_code": 404, "json": {"detail": KEY}}, AuralytikNotFoundError, id="404-json-echo"),
    pytest.param(CONV_URL, {"status_code": 400, "json": ECHO}, AuralytikApiError, id="400-json-echo"),
    pytest.param(CONV_URL, {"status_code": 400, "json": LONG_ECHO}, AuralytikApiError, id="400-long-echo"),
    pytest.param(CONV_URL, {"status_code": 422, "json": [KEY, "bad"]}, AuralytikApiError, id="422-list-echo"),
    pytest.param(
        CONV_URL,
        {"status_code": 400, "text": json.dumps(ECHO), "headers": {"Content-Type": "text/plain"}},
        AuralytikApiError,
        id="400-json-as-text",
    ),
    pytest.param(CONV_URL, {"status_code": 500, "json": ECHO}, AuralytikUnavailableError, id="500-json-echo"),
    pytest.param(CONV_URL, {"status_code": 503, "text": HTML + KEY}, AuralytikUnavailableError, id="503-html-echo"),
    pytest.param(
        CONV_URL,
        {"status_code": 429, "json": ECHO, "headers": {"Retry-After": "1"}},
        AuralytikUnavailableError,
        id="429",
    ),
    pytest.param(
        CONV_URL,
        {"exc": requests.exceptions.ConnectionError(f"Max retries exceeded (Bearer {KEY})")},
        AuralytikUnavailableError,
        id="connection-error",
    ),
    pytest.param(
        CONV_URL, {"exc": requests.exceptions.Timeout(f"timed out {KEY}")}, AuralytikUnavailableError, id="timeout"
    ),
    pytest.param(CONV_URL, {"content": f"{{{KEY}".encode()}, AuralytikUnavailableError, id="200-invalid-json"),
    pytest.param(MSGS_URL, {"json": ECHO}, AuralytikUnavailableError, id="200-wrong-shape"),
    pytest.param(LIST_URL, {"json": {"data": KEY, "totalCount": 1}}, AuralytikUnavailableError, id="200-bad-page"),
]


@pytest.mark.parametrize(("url", "response", "exc_type"), KEY_CASES)
def test_key_never_in_any_error(m, hook, url, response, exc_type):
    m.get(url, [response])
    with pytest.raises(AuralytikApiError) as info:
        _call(hook, url)
    assert type(info.value) is exc_type
    assert_exception_has_no_key(info.value)


def test_key_never_in_argument_or_setting_errors(monkeypatch, m, hook):
    for kwargs in ({"page_size": 0}, {"date_from": "nope"}, {"date_from": datetime(2024, 1, 1)}):
        with pytest.raises(ValueError) as info:  # noqa: PT011 - the message is checked just below
            hook.list_conversations(**kwargs)
        assert_exception_has_no_key(info.value)
    set_conn(monkeypatch, host=BASE, password=KEY, extra={"timeout": "soon"})
    with pytest.raises(ValueError, match="timeout") as info:
        AuralytikHook().get_conversation("conv_123")
    assert_exception_has_no_key(info.value)
    assert m.call_count == 0


def test_listing_error_has_no_key(m, hook):
    # A server that ignores dateFrom/dateTo: the listing refuses its answers, without the key.
    m.get(LIST_URL, json=page(range(5), 5, 1, 5))
    with pytest.raises(ListingError, match="outside those bounds") as info:
        list(hook.list_conversations(page_size=5, date_from="2025-01-01T00:00:00Z", date_to="2025-01-02T00:00:00Z"))
    assert_exception_has_no_key(info.value)


def test_key_never_in_hook_or_settings_repr(hook):
    assert_no_key(repr(hook))
    assert_no_key(str(hook))
    assert_no_key(repr(hook.settings))
    assert_no_key(str(hook.settings))
    assert "api.test" in repr(hook.settings)  # the repr is still useful
    assert hook.settings.api_key == KEY  # ... and the key is there, just not shown


def _all_log_output(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    """Both what went through stdlib logging and what Airflow's structlog printed."""
    out, err = capfd.readouterr()
    return caplog.text + out + err


def test_key_never_in_logs_of_a_retrying_request(m, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    m.get(
        CONV_URL,
        [
            {"status_code": 503, "json": ECHO},
            {"status_code": 429, "json": ECHO, "headers": {"Retry-After": "2"}},
            {"exc": requests.exceptions.ConnectionError(f"refused {KEY}")},
            {"content": f"not json {KEY}".encode()},
            {"json": {"id": "conv_123"}},
        ],
    )
    hook = AuralytikHook(max_retries=4)
    assert hook.get_conversation("conv_123") == {"id": "conv_123"}
    text = _all_log_output(caplog, capfd)
    # The retries were logged (so the capture works); the 429 is not a retry but one slow-down line ...
    assert "retry 1 of 4" in text
    assert "retry 3 of 4" in text
    assert "retry 4 of 4" not in text
    assert sum("slowing down" in r.getMessage() for r in caplog.records) == 1
    # ... and nothing of the key.
    assert_no_key(text)
    for record in caplog.records:
        assert_no_key(record.getMessage())
        assert_no_key(repr(record.args))


def test_key_never_in_logs_of_an_exhausted_request(m, hook, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    m.get(CONV_URL, status_code=503, json=ECHO)
    with pytest.raises(AuralytikApiError):
        hook.get_conversation("conv_123")
    text = _all_log_output(caplog, capfd)
    assert "retry 3 of 3" in text
    assert_no_key(text)


# ---------------------------------------------------------------------------------------------
# Return values
# ---------------------------------------------------------------------------------------------


def test_get_conversation_returns_the_object_with_unknown_fields(m, hook):
    body = {
        "id": "conv_123",
        "channelId": "ch_whatsapp",
        "status": "active",
        "endedAt": None,
        "sentiment": {"score": 0.4},
    }
    m.get(CONV_URL, json=body)
    assert hook.get_conversation("conv_123") == body


def test_get_messages_returns_the_list_with_unknown_fields(m, hook):
    messages = [
        {"id": "msg_001", "role": "customer", "content": "account ending in ****", "timestamp": None},
        {"id": "msg_002", "role": "agent", "content": "ok", "timestamp": "2024-01-15T10:31:00Z", "lang": "en"},
    ]
    m.get(MSGS_URL, json={"conversationId": "conv_123", "messages": messages, "truncated": False})
    assert hook.get_messages("conv_123") == messages


@pytest.mark.parametrize(
    ("conversation_id", "quoted"),
    [
        ("conv/1", "conv%2F1"),
        ("a b?c#d", "a%20b%3Fc%23d"),
        ("../admin", "..%2Fadmin"),
        ("conv_ü", "conv_%C3%BC"),
    ],
)
def test_conversation_ids_are_url_quoted(m, hook, conversation_id, quoted):
    m.get(requests_mock.ANY, json={"id": conversation_id, "messages": []})
    hook.get_conversation(conversation_id)
    assert m.last_request.url == f"{BASE}/conversations/{quoted}"
    hook.get_messages(conversation_id)
    assert m.last_request.url == f"{BASE}/conversations/{quoted}/messages"


# ---------------------------------------------------------------------------------------------
# test_connection
# ---------------------------------------------------------------------------------------------


def test_test_connection_success(m, hook):
    m.get(LIST_URL, json=page(["conv_1"], 523, 1, 1))
    ok, message = hook.test_connection()
    assert ok is True
    assert "523" in message
    assert BASE in message
    assert query(m.last_request) == [("page", "1"), ("pageSize", "1")]
    assert m.call_count == 1


def test_test_connection_401(m, hook):
    m.get(LIST_URL, status_code=401, json=ECHO)
    ok, message = hook.test_connection()
    assert ok is False
    assert "HTTP 401" in message
    assert "'auralytik_default'" in message
    assert_no_key(message)
    assert m.call_count == 1


def test_test_connection_connection_error(m, hook):
    m.get(LIST_URL, exc=requests.exceptions.ConnectionError(f"refused {KEY}"))
    ok, message = hook.test_connection()
    assert ok is False
    assert "ConnectionError" in message
    assert_no_key(message)


def test_test_connection_without_key(monkeypatch, m):
    set_conn(monkeypatch, host=BASE)
    m.get(requests_mock.ANY, json={})
    ok, message = AuralytikHook().test_connection()
    assert ok is False
    assert "'auralytik_default' has no API key" in message
    assert m.call_count == 0


# ---------------------------------------------------------------------------------------------
# Async path (httpx)
# ---------------------------------------------------------------------------------------------


class FakeApi:
    """An ``httpx.MockTransport`` handler answering from a script; records every request."""

    def __init__(self) -> None:
        self.script: list[httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return step
        return step(request)


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    """Every ``httpx.AsyncClient`` the hook opens talks to :class:`FakeApi` instead of the network."""
    api = FakeApi()
    real_client = httpx.AsyncClient

    def client(*args: Any, **kwargs: Any) -> httpx.AsyncClient:
        kwargs["transport"] = httpx.MockTransport(api)
        return real_client(*args, **kwargs)

    monkeypatch.setattr(httpx, "AsyncClient", client)
    return api


@pytest_asyncio.fixture
async def ahook() -> Any:
    hook = AuralytikHook()
    yield hook
    await hook.aclose()


@pytest.mark.asyncio
async def test_async_page(fake_api, ahook):
    body = page(["a", "b"], 2, 1, 10)
    fake_api.script = [httpx.Response(200, json=body)]
    assert await ahook.aget_conversations_page(status="completed", page_size=10) == body
    (request,) = fake_api.requests
    assert str(request.url).startswith(f"{LIST_URL}?")
    assert query(request) == [("status", "completed"), ("page", "1"), ("pageSize", "10")]
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["User-Agent"] == f"airflow-provider-auralytik/{__version__}"
    assert "X-Exclude-PII" not in request.headers


@pytest.mark.asyncio
async def test_async_retries_503_then_succeeds(fake_api, ahook):
    fake_api.script = [
        httpx.Response(503, text=HTML, headers={"Content-Type": "text/html"}),
        httpx.ConnectError("refused"),
        httpx.Response(200, json=page(["a"], 1)),
    ]
    result = await ahook.aget_conversations_page()
    assert [c["id"] for c in result["data"]] == ["a"]
    assert len(fake_api.requests) == 3


@pytest.mark.asyncio
async def test_async_401_not_retried(fake_api, ahook):
    fake_api.script = [httpx.Response(401, json=ECHO)]
    with pytest.raises(AuralytikAuthError) as info:
        await ahook.aget_conversations_page()
    assert info.value.status == 401
    assert len(fake_api.requests) == 1
    assert_exception_has_no_key(info.value)


@pytest.mark.asyncio
async def test_async_exhaustion(fake_api, ahook):
    fake_api.script = [httpx.Response(502, text=HTML + KEY)]
    with pytest.raises(AuralytikApiError, match="still failing after 4 attempts") as info:
        await ahook.aget_conversations_page()
    assert len(fake_api.requests) == 4
    assert "\n" not in str(info.value)
    assert_exception_has_no_key(info.value)


@pytest.mark.asyncio
async def test_async_invalid_arguments_send_nothing(fake_api, ahook):
    fake_api.script = [httpx.Response(200, json=page([], 0))]
    with pytest.raises(ValueError, match="page_size"):
        await ahook.aget_conversations_page(page_size=101)
    with pytest.raises(ValueError, match="conversation_id"):
        await ahook.aget_conversation("")
    assert fake_api.requests == []


@pytest.mark.asyncio
async def test_async_get_conversation(fake_api, ahook):
    body = {"id": "conv/1", "status": "completed", "extra": None}
    fake_api.script = [httpx.Response(200, json=body)]
    assert await ahook.aget_conversation("conv/1") == body
    (request,) = fake_api.requests
    assert request.url.raw_path == b"/v1/conversations/conv%2F1"
    assert request.headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.asyncio
async def test_async_and_sync_send_the_same_query(fake_api, ahook, m):
    kwargs: dict[str, Any] = {
        "channel_id": "ch_whatsapp",
        "campaign_id": "camp 456&x",
        "status": "completed",
        "date_from": pendulum.datetime(2024, 1, 15, tz="Europe/Paris"),
        "date_to": "2024-01-16T00:00:00.5+01:00",
        "page": 3,
        "page_size": 20,
    }
    body = page([], 0)
    fake_api.script = [httpx.Response(200, json=body)]
    m.get(LIST_URL, json=body)
    await ahook.aget_conversations_page(**kwargs)
    AuralytikHook().get_conversations_page(**kwargs)
    sync_query, async_query = query(m.last_request), query(fake_api.requests[0])
    assert async_query == sync_query
    assert sync_query == [
        ("channelId", "ch_whatsapp"),
        ("campaignId", "camp 456&x"),
        ("status", "completed"),
        ("dateFrom", "2024-01-14T23:00:00Z"),
        ("dateTo", "2024-01-15T23:00:00.500000Z"),
        ("page", "3"),
        ("pageSize", "20"),
    ]
    assert urlsplit(str(fake_api.requests[0].url)).path == urlsplit(m.last_request.url).path


@pytest.mark.asyncio
async def test_async_missing_key(monkeypatch, fake_api):
    set_conn(monkeypatch, host=BASE)
    hook = AuralytikHook()
    with pytest.raises(AuralytikAuthError, match="'auralytik_default' has no API key"):
        await hook.aget_conversation("conv_123")
    assert fake_api.requests == []


@pytest.mark.asyncio
async def test_async_path_holds_in_the_pause_a_sync_429_started(fake_api, ahook, m, sleeps):
    # A sensor's or an export's 429 (sync) holds the trigger's requests (async) on the same key.
    m.get(CONV_URL, [{"status_code": 429, "headers": {"Retry-After": "30"}}, {"json": {"id": "conv_123"}}])
    sync_hook = AuralytikHook()
    pacer = sync_hook.pacer
    assert pacer.try_acquire() == 0.0  # a sync request in flight ...
    pacer.release(pacer.clock.now(), throttled=True, retry_after=30)  # ... answered 429, Retry-After 30
    fake_api.script = [httpx.Response(200, json={"id": "conv_123"})]
    assert await ahook.aget_conversation("conv_123") == {"id": "conv_123"}
    assert await ahook._asettings() is not None
    assert ahook.pacer is pacer
    assert sum(sleeps) == pytest.approx(30.0, abs=pacing.PAUSE_JITTER)  # waited before sending
    assert len(fake_api.requests) == 1


@pytest.mark.asyncio
async def test_async_429s_spend_no_attempts_and_are_counted(monkeypatch, fake_api):
    set_conn(monkeypatch, host=BASE, password=KEY, extra={"max_retries": 0})
    hook = AuralytikHook()
    fake_api.script = [
        httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.Response(200, json={"id": "conv_123"}),
    ]
    try:
        assert await hook.aget_conversation("conv_123") == {"id": "conv_123"}
    finally:
        await hook.aclose()
    assert hook.throttle_counts() == {"throttled_requests": 2, "rate_limit_wait_seconds": pytest.approx(4.0, abs=0.2)}


def test_429_storm_past_rate_limit_max_wait_fails_in_one_line_naming_it(monkeypatch, m, sleeps):
    set_conn(monkeypatch, host=BASE, password=KEY, extra={"rate_limit_max_wait": 60, "max_retries": 0})
    m.get(CONV_URL, status_code=429, headers={"Retry-After": "10"}, json=ECHO)
    with pytest.raises(AuralytikUnavailableError) as info:
        AuralytikHook().get_conversation("conv_123")
    message = str(info.value)
    assert "\n" not in message
    assert "429 Too Many Requests" in message
    assert "rate_limit_max_wait=60 s" in message
    assert "'auralytik_default'" in message
    assert 50 <= sum(sleeps) <= 61  # held until the next pause would end past the budget; no attempt count
    assert 6 <= m.call_count <= 7
    assert_exception_has_no_key(info.value)


@pytest.mark.parametrize("empty", [None, ""])
def test_an_empty_extra_means_its_default(monkeypatch, empty):
    # What the connection form stores for a field left empty.
    set_conn(monkeypatch, host=BASE, password=KEY, extra={"timeout": empty, "max_requests_per_second": empty})
    settings = AuralytikHook().settings
    assert settings.timeout == 30.0
    assert settings.max_requests_per_second is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"conversationId":"c","messages":[{"id":"m","score":1e-05,"n":123456789012345678901234567890,"t":"\\u00e9"}]}',
        b'{"conversationId":"c","messages":[{"id":"m","score":NaN,"big":1e400,"s":"\\ud800"}]}',  # beyond RFC 8259
        b'\xef\xbb\xbf{"conversationId":"c","messages":[{"id":"m","dup":1,"dup":2}]}',  # a byte-order mark
    ],
)
def test_answers_are_read_as_json_loads_reads_them(m, hook, body):
    m.get(MSGS_URL, content=body)
    assert repr(hook.get_messages("conv_123")) == repr(json.loads(body)["messages"])
