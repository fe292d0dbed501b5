"""
AuralytikHook: talks HTTP to the Auralytik Conversations API, and nothing else.

Auth, retries, paging and turning answers into errors live here (the error classes are defined in
:mod:`airflow_provider_auralytik.exceptions`, which the domain imports without importing the hook,
and re-exported here, their published path). Requests are *described* once (:class:`ApiRequest`,
built by :func:`conversations_page_request` & co.), their responses *interpreted* once
(:func:`interpret_response`), and paced and retried by one policy
(:mod:`airflow_provider_auralytik.hooks.pacing`); the synchronous path (``requests``, used by
operators and sensors), the asynchronous path (``httpx``, used by the trigger) and the export's
asynchronous pool (:mod:`~airflow_provider_auralytik.hooks.transport`, hundreds of requests in
flight on one event loop) only differ in how bytes move.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow_provider_auralytik import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RATE_LIMIT_MAX_WAIT,
    DEFAULT_TIMEOUT,
    DOCS_URL,
    __version__,
    connection_form_widgets,
    ui_field_behaviour,
)
from airflow_provider_auralytik._compat import AirflowNotFoundException, BaseHook, aget_connection
from airflow_provider_auralytik.conversations.listing import (
    MAX_PAGE_SIZE,
    ConversationFilters,
    WindowListing,
    check_filter,
    check_page_size,
)
from airflow_provider_auralytik.conversations.window import DateWindow, format_instant, parse_instant
from airflow_provider_auralytik.exceptions import (
    AuralytikApiError,
    AuralytikAuthError,
    AuralytikNotFoundError,
    AuralytikUnavailableError,
)
from airflow_provider_auralytik.hooks.pacing import BudgetExhausted, Pacer, RequestBudget, RetryLimits, pacer_for
from airflow_provider_auralytik.utils.concurrency import Deadlines, Gate

if TYPE_CHECKING:
    import ssl

    import httpx
    import requests

    from airflow_provider_auralytik.hooks.transport import Answered, AsyncHttpPool

__all__ = [  # the errors and MAX_PAGE_SIZE are re-exported: their published import path
    "DEFAULT_BASE_URL",
    "LISTING_EARLIEST",
    "LISTING_LATEST",
    "MAX_PAGE_SIZE",
    "USER_AGENT",
    "ApiRequest",
    "AuralytikApiError",
    "AuralytikAuthError",
    "AuralytikHook",
    "AuralytikNotFoundError",
    "AuralytikUnavailableError",
    "HookSettings",
    "conversation_request",
    "conversations_page_request",
    "interpret_response",
    "messages_request",
]

DEFAULT_BASE_URL = "https://api.auralytik.com/v1"
#: The bounds of ``list_conversations`` when ``date_from``/``date_to`` are left open.
LISTING_EARLIEST = "1970-01-01T00:00:00Z"
LISTING_LATEST = "2100-01-01T00:00:00Z"
USER_AGENT = f"airflow-provider-auralytik/{__version__}"
POOL_HEADROOM = 4


# ---------------------------------------------------------------------------------------------
# Transient faults (the errors callers catch are in airflow_provider_auralytik.exceptions)
# ---------------------------------------------------------------------------------------------


class _Retryable(Exception):
    """A transient outcome: worth another try after ``retry_after`` seconds (or backoff).

    ``throttled``: a 429, the server saying "later": it spends waiting time, not attempts.
    """

    def __init__(self, reason: str, retry_after: float | None = None, *, throttled: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.throttled = throttled


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def _extra(default: float | None, *, minimum: float) -> Any:
    """A numeric extra of the connection: its default (``None``: off unless set) and the least value it takes."""
    return field(default=default, metadata={"minimum": minimum})


def _base_url(conn: Any) -> str:
    """The API base URL a connection names (``host``, ``schema``, ``port``), or :data:`DEFAULT_BASE_URL`."""
    host = (conn.host or "").strip()
    # ``schema`` is the URL scheme only when it says http(s); otherwise it is the path of an
    # ``auralytik://:KEY@api.auralytik.com/v1`` URI, which Airflow stores in ``schema``.
    schema = (conn.schema or "").strip().strip("/")
    scheme, path = (schema.lower(), "") if schema.lower() in ("http", "https") else ("https", schema)
    if host and "://" not in host:
        netloc, slash, rest = host.partition("/")
        host = f"{scheme}://{netloc}" + (f":{conn.port}" if conn.port else "") + slash + rest
    if host and path:
        host = f"{host.rstrip('/')}/{path}"
    return (host or DEFAULT_BASE_URL).rstrip("/")


def _number(conn_id: str, key: str, raw: Any, minimum: float) -> float:
    """An extra's value as a finite number >= ``minimum``; anything else raises, naming the extra."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"Connection {conn_id!r}: extra {key!r}={raw!r} is not a number.") from None
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"Connection {conn_id!r}: extra {key!r} must be a finite number >= {minimum}.")
    return value


@dataclass(frozen=True)
class HookSettings:
    """Everything the hook reads from its connection. ``repr`` never shows the key.

    The numeric extras are declared once, below: name, default and least value (:func:`_extra`);
    :meth:`from_connection` reads each of them by that declaration.
    """

    base_url: str
    api_key: str = field(repr=False)
    timeout: float = _extra(DEFAULT_TIMEOUT, minimum=0.001)
    max_retries: int = _extra(DEFAULT_MAX_RETRIES, minimum=0)
    backoff_base: float = _extra(0.5, minimum=0)
    backoff_max: float = _extra(30.0, minimum=0)
    retry_after_max: float = _extra(120.0, minimum=0)
    max_concurrency: int = _extra(DEFAULT_MAX_CONCURRENCY, minimum=1)
    rate_limit_max_wait: float = _extra(DEFAULT_RATE_LIMIT_MAX_WAIT, minimum=0)
    max_requests_per_second: float | None = _extra(None, minimum=0.01)

    @classmethod
    def from_connection(cls, conn: Any, conn_id: str, overrides: Mapping[str, Any]) -> HookSettings:
        """
        The settings of a connection; a missing key or a bad extra raises, naming it.

        :param conn: The Airflow connection.
        :param conn_id: Its id, for errors.
        :param overrides: Values that replace the connection's extras (``None``: keep the extra).
        """
        extra = dict(conn.extra_dejson or {})
        extra.update({k: v for k, v in overrides.items() if v is not None})
        api_key = (conn.password or extra.pop("api_key", None) or "").strip()
        if not api_key:
            raise AuralytikAuthError(
                f"Connection {conn_id!r} has no API key: set its password (the 'API key' field) "
                "to an Auralytik key with the conversations:read scope."
            )
        numbers: dict[str, Any] = {}
        for spec in fields(cls):
            if "minimum" not in spec.metadata:
                continue
            raw = extra.get(spec.name)
            if raw is None or raw == "":  # absent, or a form field left empty
                numbers[spec.name] = spec.default
                continue
            value = _number(conn_id, spec.name, raw, spec.metadata["minimum"])
            numbers[spec.name] = int(value) if isinstance(spec.default, int) else value
        return cls(base_url=_base_url(conn), api_key=api_key, **numbers)

    @cached_property  # read per request; a frozen dataclass costs a few microseconds to build
    def retry_limits(self) -> RetryLimits:
        return RetryLimits(
            max_retries=self.max_retries,
            rate_limit_max_wait=self.rate_limit_max_wait,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            retry_after_max=self.retry_after_max,
        )


# ---------------------------------------------------------------------------------------------
# Requests, described once for both the sync and the async path
# ---------------------------------------------------------------------------------------------


def _expect_page(payload: Any) -> dict[str, Any]:
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("data"), list)
        or not isinstance(payload.get("totalCount"), int)
    ):
        raise _Retryable("the answer is not a listing page (data/totalCount missing)")
    return payload


def _expect_object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise _Retryable("the answer is not a JSON object")
    return payload


#: What a JSON decoder makes of an object: checked over a whole list at C speed (``map(type, ...)``).
_OBJECTS = frozenset((dict,))


def _expect_messages(payload: Any) -> list[dict[str, Any]]:
    messages = payload.get("messages") if isinstance(payload, dict) else None
    if not isinstance(messages, list) or not _OBJECTS.issuperset(map(type, messages)):
        raise _Retryable("the answer has no 'messages' list of objects")
    return messages


@dataclass(frozen=True)
class ApiRequest:
    """One GET against the API: path below the base URL, query, extra headers, expected answer."""

    path: str
    params: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    #: What to call it in errors and logs (never includes the key).
    label: str = ""
    #: Checks the parsed JSON; a 200 of the wrong shape is a transient fault like a 5xx.
    expect: Callable[[Any], Any] = _expect_object
    #: A request of a window's listing (a page, or a look-up verifying one): the export's critical
    #: path, so on the async path it passes the fetches waiting for an in-flight slot.
    listing: bool = False

    def describe(self) -> str:
        return self.label or f"GET {self.path}"


def _instant_param(value: datetime | str | None, name: str) -> str | None:
    return None if value is None else format_instant(parse_instant(value, name=name))


def conversations_page_request(
    *,
    page: int = 1,
    page_size: int = MAX_PAGE_SIZE,
    channel_id: str | None = None,
    campaign_id: str | None = None,
    status: str | None = None,
    date_from: datetime | str | None = None,
    date_to: datetime | str | None = None,
) -> ApiRequest:
    """
    Describe ``GET /conversations`` for one page; invalid arguments raise before anything is sent.

    :param page: The page number, from 1.
    :param page_size: Conversations per page, 1 to :data:`MAX_PAGE_SIZE`.
    :param channel_id: Only this channel's conversations.
    :param campaign_id: Only this campaign's conversations.
    :param status: Only conversations with this status (``active``, ``completed``).
    :param date_from: Start of the window on ``createdAt``, included: an aware datetime or ISO 8601.
    :param date_to: End of the window, excluded: an aware datetime or ISO 8601.
    """
    check_page_size(page_size)
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise ValueError(f"page must be a positive integer, not {page!r}.")
    for name, value in (("channel_id", channel_id), ("campaign_id", campaign_id), ("status", status)):
        check_filter(name, value)
    start = _instant_param(date_from, "date_from")
    end = _instant_param(date_to, "date_to")
    if start is not None and end is not None and parse_instant(end) <= parse_instant(start):
        raise ValueError(f"date_to ({end}) must be after date_from ({start}).")
    params: list[tuple[str, str | None]] = [
        ("channelId", channel_id),
        ("campaignId", campaign_id),
        ("status", status),
        ("dateFrom", start),
        ("dateTo", end),
        ("page", str(page)),
        ("pageSize", str(page_size)),
    ]
    return ApiRequest(
        path="/conversations",
        params=tuple((k, v) for k, v in params if v),
        label=f"GET /conversations (page {page})",
        expect=_expect_page,
        listing=True,
    )


def _conversation_path(conversation_id: str) -> str:
    if not isinstance(conversation_id, str) or not conversation_id.strip():
        raise ValueError(f"conversation_id must be a non-empty string, not {conversation_id!r}.")
    return f"/conversations/{quote(conversation_id, safe='')}"


def conversation_request(conversation_id: str) -> ApiRequest:
    path = _conversation_path(conversation_id)
    return ApiRequest(path=path, label=f"GET /conversations/{conversation_id}", listing=True)


def messages_request(conversation_id: str) -> ApiRequest:
    """Messages are always requested with PII masked."""
    path = _conversation_path(conversation_id) + "/messages"
    return ApiRequest(
        path=path,
        headers=(("X-Exclude-PII", "true"),),
        label=f"GET /conversations/{conversation_id}/messages",
        expect=_expect_messages,
    )


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date; ``None`` if absent or garbage."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return max(seconds, 0.0)


def _error_detail(body: bytes, content_type: str, secret: str) -> str:
    """A short reason from a JSON error body; HTML or anything else is summarised, never echoed."""
    if "json" not in content_type.lower() and body.lstrip()[:1] not in (b"{", b"["):
        return ""
    try:
        payload = json.loads(body)
    except ValueError:
        return ""
    detail: Any = payload
    if isinstance(payload, dict):
        detail = payload.get("message") or payload.get("error") or payload.get("detail") or ""
        if isinstance(detail, dict):
            detail = detail.get("message", "")
    text = " ".join(str(detail).split())
    if secret:  # before truncating: a cut could leave a prefix of the key that no longer matches
        text = text.replace(secret, "***")
    return text[:200]


_fast_parse: Any = None


def _parse_json(body: bytes) -> Any:
    """``json.loads(body)``, by msgspec where it reads the text (~2x faster; an Airflow dependency, imported on
    first use): it refuses what json reads beyond RFC 8259 (NaN, a byte-order mark, lone surrogates, 1e400),
    which json then reads, or refuses, as before."""
    global _fast_parse
    if _fast_parse is None:
        import msgspec

        _fast_parse = msgspec.json.Decoder().decode
    try:
        return _fast_parse(body)
    except Exception:  # msgspec.DecodeError or ValidationError, UnicodeDecodeError: json's answer stands
        return json.loads(body)


def interpret_response(
    request: ApiRequest,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    conn_id: str,
    secret: str,
) -> Any:
    """
    Turn one HTTP answer into parsed JSON, a :class:`_Retryable`, or a permanent error.

    Shared by the sync and the async path so they agree on every status code.
    """
    what = request.describe()
    if status == 429:
        retry_after = _retry_after_seconds(headers.get("Retry-After"))
        raise _Retryable(f"{what}: 429 Too Many Requests", retry_after, throttled=True)
    if status >= 500 or status == 408:
        raise _Retryable(f"{what}: HTTP {status}", _retry_after_seconds(headers.get("Retry-After")))
    if status >= 400:
        detail = _error_detail(body, headers.get("Content-Type", ""), secret)
        reason = f" ({detail})" if detail else ""
        if status in (401, 403):
            raise AuralytikAuthError(
                f"{what} failed with HTTP {status}{reason}: check the API key in connection {conn_id!r} "
                "(it needs the conversations:read scope).",
                status=status,
            )
        if status == 404:
            raise AuralytikNotFoundError(
                f"{what} failed with HTTP 404{reason}: check the id, and the base URL (host) of "
                f"connection {conn_id!r}.",
                status=status,
            )
        raise AuralytikApiError(
            f"{what} failed with HTTP {status}{reason}: the request was refused; check the arguments.",
            status=status,
        )
    if status >= 300:
        raise AuralytikApiError(
            f"{what} answered with a redirect (HTTP {status}): set the exact base URL in connection {conn_id!r}.",
            status=status,
        )
    try:
        payload = _parse_json(body)
    except ValueError:
        raise _Retryable(f"{what}: HTTP {status} with a body that is not valid JSON") from None
    try:
        return request.expect(payload)
    except _Retryable as exc:
        raise _Retryable(f"{what}: {exc.reason}") from None


def _read_body(response: requests.Response, deadline: float) -> bytes:
    """
    The whole body of a streamed response, or :class:`TimeoutError` once ``deadline`` passes.

    ``requests``' own timeout bounds each socket read, so a server trickling a byte at a time
    could hold a request for ever; here every read gets only what is left of the request's time.
    """
    raw = response.raw
    connection = getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the answer did not arrive in time")
        if sock is not None:
            sock.settimeout(remaining)
        chunk = raw.read1(_READ_SIZE, decode_content=True)
        if not chunk:
            break
        chunks.append(chunk)
    raw.release_conn()
    return b"".join(chunks)


_READ_SIZE = 256 * 1024


class _InFlightSlot:
    """
    One attempt's place in the async gate and the pacer, freed once: as soon as its answer is in, if
    it is a success (the pool says so from the event loop's read callback: the next request goes out in
    the same turn of the loop, not after every answer read with this one is decoded), else when the
    attempt ends. A 429 reaches the pacer as early (its pause must hold the requests freed in that same
    turn), its slot when the attempt ends.
    """

    __slots__ = ("_budget", "_gate", "_held")

    def __init__(self, budget: RequestBudget, gate: Gate) -> None:
        self._budget = budget
        self._gate = gate
        self._held = True

    def answered(self, status: int, retry_after: str | None) -> None:
        if not self._held:
            return
        if 200 <= status < 300:
            self._held = False
            self._budget.done()
            self._gate.release()
        elif status == 429:
            self._budget.throttled_now(_retry_after_seconds(retry_after))

    def free(self) -> None:
        if self._held:
            self._held = False
            self._gate.release()


def _ssl_context() -> ssl.SSLContext:
    """The system's certificates, or the bundle ``requests`` would use (``REQUESTS_CA_BUNDLE``)."""
    import ssl

    return ssl.create_default_context(cafile=os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE"))


# ---------------------------------------------------------------------------------------------
# The hook
# ---------------------------------------------------------------------------------------------


class AuralytikHook(BaseHook):
    """
    Interact with the Auralytik Conversations API.

    :param auralytik_conn_id: Connection of type ``auralytik``: ``host`` is the base URL
        (default ``https://api.auralytik.com/v1``), ``password`` the API key. Optional extras:
        ``timeout`` (seconds per request, connect to last byte, default 30), ``max_retries``
        (attempts after a 5xx, dropped connection or malformed answer, default 6),
        ``backoff_base``/``backoff_max`` (seconds), ``retry_after_max`` (cap on a server's
        ``Retry-After``, default 120 s), ``max_concurrency`` (requests in flight, default 16),
        ``rate_limit_max_wait`` (seconds a request may be held by 429s, default 600) and
        ``max_requests_per_second`` (a client-side limit for a known quota; default none).
        429s are paced, not failed: see :mod:`airflow_provider_auralytik.hooks.pacing`.
    :param timeout: Overrides the connection's ``timeout`` extra for this hook.
    :param max_retries: Overrides the connection's ``max_retries`` extra for this hook.
    :param max_concurrency: Overrides the connection's ``max_concurrency`` extra for this hook.
    :param backoff_base: Overrides the connection's ``backoff_base`` extra for this hook.
    :param backoff_max: Overrides the connection's ``backoff_max`` extra for this hook.
    """

    conn_name_attr = "auralytik_conn_id"
    default_conn_name = "auralytik_default"
    conn_type = "auralytik"
    hook_name = "Auralytik"

    def __init__(
        self,
        auralytik_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        max_concurrency: int | None = None,
        backoff_base: float | None = None,
        backoff_max: float | None = None,
    ) -> None:
        super().__init__()
        self.auralytik_conn_id = auralytik_conn_id
        self._overrides = {
            "timeout": timeout,
            "max_retries": max_retries,
            "max_concurrency": max_concurrency,
            "backoff_base": backoff_base,
            "backoff_max": backoff_max,
        }
        self._async_client: httpx.AsyncClient | None = None
        self._pool: AsyncHttpPool | None = None
        #: The request deadlines of the event loop the async path runs on (one timer for all of them).
        self._loop_deadlines: tuple[asyncio.AbstractEventLoop, Deadlines] | None = None
        self._counts_lock = threading.Lock()
        self._throttled = 0
        self._paused_baseline = 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(auralytik_conn_id={self.auralytik_conn_id!r})"

    # -- connection form ---------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Only the base URL and the API key mean something here (Airflow 3.0/3.1; defined in ``__init__``)."""
        return ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extras as form fields (Airflow 3.0/3.1; 3.2+ reads ``conn-fields`` from the provider info)."""
        return connection_form_widgets()

    # -- settings and sessions ---------------------------------------------------------------

    @cached_property
    def settings(self) -> HookSettings:
        try:
            conn = self.get_connection(self.auralytik_conn_id)
        except AirflowNotFoundException:
            raise self._connection_not_found() from None
        return HookSettings.from_connection(conn, self.auralytik_conn_id, self._overrides)

    def _connection_not_found(self) -> AirflowNotFoundException:
        """Which connection, of which type, how to create it and where the docs are (still the same class)."""
        conn_id = self.auralytik_conn_id
        return AirflowNotFoundException(
            f"Connection {conn_id!r} (type {self.conn_type!r}) is not defined: create it in the UI (Admin > "
            f"Connections, type {self.hook_name}), with 'airflow connections add {conn_id} --conn-type "
            f"{self.conn_type} --conn-password <API key>', or as AIRFLOW_CONN_{conn_id.upper()}; or pass "
            f"auralytik_conn_id=<your connection id>. See {DOCS_URL}/connection.md"
        )

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def _default_headers(self, settings: HookSettings) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {settings.api_key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }

    def get_conn(self) -> requests.Session:
        """The hook's pooled ``requests.Session`` (thread-safe for concurrent GETs)."""
        return self.session

    @cached_property
    def session(self) -> requests.Session:
        import requests

        from airflow_provider_auralytik.hooks.deadline import DeadlineAdapter

        settings = self.settings
        session = requests.Session()
        # Headroom over max_concurrency for the thread that lists while the workers fetch.
        adapter = DeadlineAdapter(
            pool_connections=1, pool_maxsize=settings.max_concurrency + POOL_HEADROOM, max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update(self._default_headers(settings))
        # requests re-reads proxy and CA settings from the environment on every request (a scan of
        # os.environ: a quarter of the export's CPU). Read them once; the base URL never changes.
        session.proxies.update(requests.utils.get_environ_proxies(settings.base_url))
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle:
            session.verify = ca_bundle
        session.trust_env = False
        return session

    def close(self) -> None:
        """Close the pooled HTTP session (safe to call more than once)."""
        session = self.__dict__.pop("session", None)
        if session is not None:
            session.close()

    # -- pacing and retries, one policy for both paths ----------------------------------------

    @cached_property
    def pacer(self) -> Pacer:
        """This process's pacer of the connection's key: shared with every hook on the same key."""
        settings = self.settings
        pacer = pacer_for(
            settings.base_url,
            settings.api_key,
            max_concurrency=settings.max_concurrency,
            max_rate=settings.max_requests_per_second,
        )
        self._paused_baseline = pacer.paused_seconds
        return pacer

    def throttle_counts(self) -> dict[str, Any]:
        """429 answers to this hook's requests, and seconds the key's requests were paused since it started."""
        paused = self.pacer.paused_seconds - self._paused_baseline if "pacer" in self.__dict__ else 0.0
        return {"throttled_requests": self._throttled, "rate_limit_wait_seconds": round(paused, 1)}

    def pace(self) -> str:
        """How fast the hook is allowed to go now (for progress lines)."""
        return self.pacer.pace()

    def _budget(self) -> RequestBudget:
        return RequestBudget(self.pacer, self.settings.retry_limits)

    def _retry_delay(self, budget: RequestBudget, request: ApiRequest, exc: _Retryable) -> float | None:
        """Seconds to back off after a fault (``None`` after a 429: the pacer holds), or the error that ends it."""
        if exc.throttled:
            with self._counts_lock:
                self._throttled += 1
        delay = budget.retry(exc.reason, retry_after=exc.retry_after, throttled=exc.throttled)
        if exc.throttled:  # the pacer's business: it logs once per slow-down, never per request
            return delay or None
        self.log.warning("%s; retry %d of %d in %.1f s", exc.reason, budget.faults, budget.limits.max_retries, delay)
        return delay

    def _exhausted(self, request: ApiRequest, end: BudgetExhausted) -> AuralytikApiError:
        conn_id = self.auralytik_conn_id
        if end.rate_limited:
            return AuralytikUnavailableError(
                f"{request.describe()}: the API kept answering 429 Too Many Requests for {end.waited:.0f} s, "
                f"longer than rate_limit_max_wait={self.settings.rate_limit_max_wait:g} s of connection "
                f"{conn_id!r}: other clients use up the key's quota; raise rate_limit_max_wait, or run fewer "
                "exports on this key at once."
            )
        return AuralytikUnavailableError(
            f"{request.describe()} still failing after {end.attempts} attempts ({end.reason}): the API is "
            f"unavailable; retry later or raise max_retries in connection {conn_id!r}."
        )

    def _transport_reason(self, request: ApiRequest, exc: BaseException) -> str:
        """Why a request got no answer, naming the host (never the key)."""
        url = urlsplit(self.settings.base_url)  # host and port only: never a userinfo part
        host = f"{url.hostname}:{url.port}" if url.port else str(url.hostname)
        if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
            return f"{request.describe()}: no complete answer from {host} within timeout={self.settings.timeout:g} s"
        cause: BaseException | None = exc
        for _ in range(10):  # the chain of causes, not forever should it loop
            if cause is None:
                break
            if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
                return f"{request.describe()}: connection to {host} refused ({type(exc).__name__})"
            cause = cause.__cause__ or cause.__context__
        return f"{request.describe()}: {type(exc).__name__} talking to {host}"

    # -- the sync path (requests) --------------------------------------------------------------

    def _send(self, request: ApiRequest) -> Any:
        try:
            return self._send_paced(request)
        except BudgetExhausted as end:
            raise self._exhausted(request, end) from None

    def _send_paced(self, request: ApiRequest) -> Any:
        budget, clock = self._budget(), self.pacer.clock
        while True:
            if (wait := budget.turn()) > 0:
                clock.sleep(wait)
                continue
            try:
                result = self._get(request)
            except _Retryable as exc:
                if (delay := self._retry_delay(budget, request, exc)) is not None:
                    clock.sleep(delay)
                continue
            except BaseException:
                budget.done()
                raise
            budget.done()
            return result

    def _get(self, request: ApiRequest) -> Any:
        """One attempt: the answer interpreted, a :class:`_Retryable`, or a permanent error."""
        import requests
        import urllib3

        from airflow_provider_auralytik.hooks.deadline import request_deadline

        settings = self.settings
        session = self.session
        deadline = time.monotonic() + settings.timeout
        response = None
        try:
            # Prepared here and sent as is: Session.request's per-call merging of settings
            # costs a third of the CPU of a request. Redirects are refused, not followed.
            prepared = requests.PreparedRequest()
            prepared.prepare(
                method="GET",
                url=settings.base_url + request.path,
                params=request.params,
                headers={**session.headers, **dict(request.headers)},
            )
            with request_deadline(deadline):  # the answer's head, however slowly it trickles in
                response = session.send(
                    prepared, timeout=settings.timeout, allow_redirects=False, proxies=session.proxies, stream=True
                )
            body = _read_body(response, deadline)
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError,  # raised by the body read (a drop, a timeout, a bad gzip)
            OSError,  # TimeoutError at the deadline
        ) as exc:
            if response is not None:
                response.close()
            # Past the deadline the watchdog ended the read: a timeout, whatever urllib3 calls it.
            fault: BaseException = TimeoutError() if time.monotonic() >= deadline else exc
            raise _Retryable(self._transport_reason(request, fault)) from None
        except requests.RequestException as exc:  # a bad URL, a redirect loop: retrying won't help
            raise AuralytikApiError(
                f"{request.describe()} failed ({type(exc).__name__}): check the base URL (host) of "
                f"connection {self.auralytik_conn_id!r}."
            ) from None
        return interpret_response(
            request,
            response.status_code,
            response.headers,
            body,
            conn_id=self.auralytik_conn_id,
            secret=settings.api_key,
        )

    # -- the async path (httpx for triggers; an h11 pool for exports) -------------------------

    def use_async_pool(self) -> bool:
        """
        Move the async path's bytes with :class:`~airflow_provider_auralytik.hooks.transport.AsyncHttpPool`
        (hundreds of requests in flight on one event loop, a fraction of httpx's CPU per request)
        instead of httpx; the export operators do. Not when the environment configures a proxy for
        the base URL (httpx honours it). Returns whether the pool is used.
        """
        import urllib.request

        from airflow_provider_auralytik.hooks.transport import AsyncHttpPool

        settings = self.settings
        if self._pool is None:
            parts = urlsplit(settings.base_url)
            proxies = urllib.request.getproxies()
            if parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname or ""):
                return False
            self._pool = AsyncHttpPool(
                settings.base_url,
                headers=self._default_headers(settings),
                ssl_context=_ssl_context() if parts.scheme == "https" else None,
                max_idle=settings.max_concurrency + POOL_HEADROOM,
            )
        return True

    @cached_property
    def _agate(self) -> Gate:
        """Holds async requests back while the pacer's in-flight limit (or ``max_concurrency``) is reached."""
        settings, pacer = self.settings, self.pacer
        return Gate(lambda: min(settings.max_concurrency, pacer.in_flight_limit))

    async def _asettings(self) -> HookSettings:
        if "settings" not in self.__dict__:
            try:
                conn = await aget_connection(self.auralytik_conn_id)
            except AirflowNotFoundException:
                raise self._connection_not_found() from None
            self.__dict__["settings"] = HookSettings.from_connection(conn, self.auralytik_conn_id, self._overrides)
        return self.settings

    async def _asend(self, request: ApiRequest) -> Any:
        await self._asettings()
        try:
            return await self._asend_paced(request)
        except BudgetExhausted as end:
            raise self._exhausted(request, end) from None

    async def _asend_paced(self, request: ApiRequest) -> Any:
        budget, clock, gate = self._budget(), self.pacer.clock, self._agate
        while True:
            # The gate admits a request when the pacer has an in-flight slot for it, so hundreds of
            # waiting requests never poll the pacer; it is not held while a request waits its turn.
            # A listing request passes the fetches waiting: the window's next pieces are what the
            # fetches after them wait for.
            await gate.acquire(first=request.listing)
            slot = _InFlightSlot(budget, gate)
            try:
                if (wait := budget.turn()) == 0:
                    try:
                        result = await self._aget(request, slot.answered)
                    except _Retryable as exc:
                        wait = self._retry_delay(budget, request, exc) or 0.0
                    except BaseException:
                        budget.done()
                        raise
                    else:
                        budget.done()
                        return result
            finally:
                slot.free()
            if wait > 0:
                await clock.asleep(wait)

    def _deadlines(self) -> Deadlines:
        """Each async request's whole time (connect to last byte) is bounded by ``timeout``, on this loop."""
        loop = asyncio.get_running_loop()
        if self._loop_deadlines is None or self._loop_deadlines[0] is not loop:
            self._loop_deadlines = (loop, Deadlines(self.settings.timeout))
        return self._loop_deadlines[1]

    async def _aget(self, request: ApiRequest, answered: Answered | None = None) -> Any:
        """Async :meth:`_get`: the whole request (connect, headers, body) within ``timeout``; ``answered``
        is told the status as soon as the whole answer is in (the pool only)."""
        settings = self.settings
        if self._pool is not None:
            # As many connections open as requests may be in flight a round trip from now: opened while
            # the answers the limit waits for are on their way, not all at once when it opens.
            ahead = min(settings.max_concurrency, self.pacer.in_flight_limit_soon())
            try:
                answer = self._pool.get(request.path, request.params, request.headers, answered, ahead)
                status, headers, body = await self._deadlines().within(answer)
            except (OSError, asyncio.TimeoutError) as exc:  # refused, reset, not HTTP, TLS, the deadline
                raise _Retryable(self._transport_reason(request, exc)) from None
            return interpret_response(
                request, status, headers, body, conn_id=self.auralytik_conn_id, secret=settings.api_key
            )
        import httpx

        if self._async_client is None:
            self._async_client = httpx.AsyncClient(
                headers=self._default_headers(settings),
                timeout=settings.timeout,
                limits=httpx.Limits(max_connections=settings.max_concurrency),
            )
        try:
            sent = self._async_client.get(
                settings.base_url + request.path,
                params=list(request.params),
                headers=dict(request.headers),
            )
            response = await self._deadlines().within(sent)
        except (httpx.TransportError, asyncio.TimeoutError) as exc:
            raise _Retryable(self._transport_reason(request, exc)) from None
        return interpret_response(
            request,
            response.status_code,
            response.headers,
            response.content,
            conn_id=self.auralytik_conn_id,
            secret=settings.api_key,
        )

    async def aclose(self) -> None:
        """Close the async HTTP client or pool, if one was opened."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None

    # -- API: sync -------------------------------------------------------------------------

    def get_conversations_page(self, **query: Any) -> dict[str, Any]:
        """
        One page of ``GET /conversations``: ``{"data": [...], "page", "pageSize", "totalCount"}``.

        Takes the keyword arguments of :meth:`list_conversations` plus ``page``.
        """
        request = conversations_page_request(**query)
        return self._send(request)

    def list_conversations(
        self,
        *,
        channel_id: str | None = None,
        campaign_id: str | None = None,
        status: str | None = None,
        date_from: datetime | str | None = None,
        date_to: datetime | str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        """
        Every conversation matching the filters with ``createdAt`` in ``[date_from, date_to)``, once each.

        Listed as the export operators list a window (:mod:`airflow_provider_auralytik.conversations.listing`):
        never by page number, and complete whatever ``totalCount`` says. An open side of the window is
        bounded by :data:`LISTING_EARLIEST` / :data:`LISTING_LATEST`. Conversations come in
        ``createdAt`` order. Invalid arguments raise before anything is sent.

        :param channel_id: Only this channel's conversations.
        :param campaign_id: Only this campaign's conversations.
        :param status: Only conversations with this status (``active``, ``completed``).
        :param date_from: Start of the window on ``createdAt``, included: an aware datetime or ISO 8601.
        :param date_to: End of the window, excluded: an aware datetime or ISO 8601.
        :param page_size: Conversations per request, 1 to :data:`MAX_PAGE_SIZE`.
        """
        query: dict[str, Any] = {
            "channel_id": channel_id,
            "campaign_id": campaign_id,
            "status": status,
            "date_from": LISTING_EARLIEST if date_from is None else date_from,
            "date_to": LISTING_LATEST if date_to is None else date_to,
            "page_size": page_size,
        }
        conversations_page_request(page=1, **query)  # validate before the generator starts
        _ = self.settings  # a missing key fails here, not on the first next()
        window = DateWindow(parse_instant(query["date_from"]), parse_instant(query["date_to"]))
        filters = ConversationFilters(channel_id=channel_id, campaign_id=campaign_id, status=status)
        return iter(WindowListing(self, window, filters, page_size=page_size))

    def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        """``GET /conversations/{id}``.

        :param conversation_id: The conversation's id.
        """
        return self._send(conversation_request(conversation_id))

    def get_messages(self, conversation_id: str) -> list[dict[str, Any]]:
        """``GET /conversations/{id}/messages`` with ``X-Exclude-PII: true``: the masked messages.

        :param conversation_id: The conversation's id.
        """
        return self._send(messages_request(conversation_id))

    def test_connection(self) -> tuple[bool, str]:
        """One cheap request (a one-item page) for the UI's Test button."""
        try:
            payload = self.get_conversations_page(page=1, page_size=1)
        except Exception as exc:  # the UI wants a message, not a traceback
            return False, str(exc)
        return True, f"Connected to {self.settings.base_url}: {payload['totalCount']} conversations visible."

    # -- API: async ------------------------------------------------------------------------

    async def aget_conversations_page(self, **query: Any) -> dict[str, Any]:
        """Async :meth:`get_conversations_page`, for triggers."""
        return await self._asend(conversations_page_request(**query))

    async def aget_conversation(self, conversation_id: str) -> dict[str, Any]:
        """Async :meth:`get_conversation`, for triggers."""
        return await self._asend(conversation_request(conversation_id))

    async def aget_messages(self, conversation_id: str) -> list[dict[str, Any]]:
        """Async :meth:`get_messages` (``X-Exclude-PII: true``), for the messages export."""
        return await self._asend(messages_request(conversation_id))
