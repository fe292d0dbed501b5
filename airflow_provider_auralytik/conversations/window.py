"""Date windows: parsing instants, the half-open ``[date_from, date_to)`` rule, and slicing.

The one place that decides what "a window" is, shared by the hook (argument checks), the export
operators, the sensor and the trigger; and the package's one :data:`UTC` and one ISO 8601 parser
(:func:`read_iso8601`), which the record schemas and the sandbox use too. Standard library only: it
is imported when DAGs are parsed, and by the sandbox, which never imports Airflow.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

UTC = timezone.utc
_SECOND = timedelta(seconds=1)
_fromisoformat = datetime.fromisoformat
#: Python 3.11+ reads the API's trailing ``Z`` itself (to the ``UTC`` singleton); 3.10 needs an offset.
_Z = "Z" if sys.version_info >= (3, 11) else "+00:00"

#: Default templates: the DAG run's data interval. A run without one (triggered without a logical
#: date) has no ``data_interval_*`` in its context: they render empty, and :meth:`DateWindow.resolve`
#: says what to do, instead of Jinja's "'data_interval_start' is undefined".
DEFAULT_DATE_FROM = "{{ data_interval_start if data_interval_start is defined else '' }}"
DEFAULT_DATE_TO = "{{ data_interval_end if data_interval_end is defined else '' }}"

#: Why a task has no window, and the two ways to give it one.
NO_DATA_INTERVAL = (
    "This DAG run has no data interval (it was triggered without a logical date), so the task has no "
    "window: trigger the run with a logical date (airflow dags trigger --logical-date ..., the UI's "
    "'Logical date' field, or logical_date in the REST API) or pass date_from and date_to."
)

#: Context keys Airflow sets only for a run with a logical date (and so a data interval).
_INTERVAL_KEYS = (
    "data_interval_start",
    "data_interval_end",
    "logical_date",
    "ds",
    "ds_nodash",
    "ts",
    "ts_nodash",
    "ts_nodash_with_tz",
    "prev_data_interval_start_success",
    "prev_data_interval_end_success",
)


@contextlib.contextmanager
def explain_missing_data_interval() -> Iterator[None]:
    """
    Turn Jinja's ``'data_interval_start' is undefined`` into :data:`NO_DATA_INTERVAL`.

    Wraps an operator's template rendering: a template such as ``date={{ data_interval_start | ds }}``
    in ``destination`` fails before the task can say anything itself.
    """
    from jinja2 import UndefinedError

    try:
        yield
    except UndefinedError as exc:
        if any(f"'{key}' is undefined" in str(exc) for key in _INTERVAL_KEYS):
            raise ValueError(f"{NO_DATA_INTERVAL} (Jinja: {exc})") from None
        raise


class EmptyWindowError(ValueError):
    """The window holds no time at all (``date_from == date_to``)."""


#: ISO 8601 as the API writes it and in the usual variants: ``T``, ``t`` or a space between date and
#: time; seconds optional; a fraction of any length after ``.`` or ``,``; ``Z``/``z`` or an offset
#: ``±HH:MM``/``±HHMM``/``±HH`` (PostgreSQL's ``+00``); or a bare date. ASCII digits only.
_ISO_8601 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?)?",
    re.ASCII,
)


def in_api_form(text: str) -> bool:
    """
    Whether ``text`` is shaped as the API writes instants, ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` (the
    separators only: :func:`read_iso8601` checks the digits).

    :param text: The string to look at.
    """
    n = len(text)
    return (
        (n == 20 or (n == 27 and text[19] == "."))
        and text[-1] == "Z"
        and text[10] == "T"
        and text[4] == text[7] == "-"
        and text[13] == text[16] == ":"
    )


def read_iso8601(text: str, *, api_form: bool | None = None) -> datetime | None:
    """
    The package's one ISO 8601 parser (:func:`parse_instant`, the Parquet schemas and the sandbox use it).

    Accepts the forms of :data:`_ISO_8601`; the API's own form (:func:`in_api_form`) takes a fast path
    through the C parser. A fraction beyond microseconds is truncated. Never raises on a string.

    :param text: The string, as is (no whitespace is stripped).
    :param api_form: ``in_api_form(text)``, when the caller has asked already (the Parquet writer does).
    :return: An aware UTC datetime when ``text`` has a zone; a naive datetime when it has none (a
        bare date: midnight), for the caller to refuse or place; ``None`` when ``text`` is not ISO
        8601 or names no real instant (February 30th, hour 25, an offset of 24 hours).
    """
    if api_form if api_form is not None else in_api_form(text):
        try:  # (no .replace(tzinfo=...): it costs ten times the parse)
            return _fromisoformat(text if _Z == "Z" else text[:-1] + _Z)
        except ValueError:  # month 13, hour 24, a leap second, a non-digit ...
            return None
    match = _ISO_8601.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_hours, off_minutes = match.groups()
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    zone = None if zulu is None and sign is None else UTC
    try:
        value = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micros, zone
        )
    except ValueError:
        return None
    if sign is None:
        return value
    if int(off_hours) > 23 or int(off_minutes or 0) > 59:
        return None
    offset = timedelta(hours=int(off_hours), minutes=int(off_minutes or 0))
    try:
        return value - offset if sign == "+" else value + offset
    except OverflowError:  # the first or last day of the calendar, pushed out of it
        return None


def parse_instant(value: datetime | str, *, name: str = "date") -> datetime:
    """
    Return ``value`` as an aware UTC datetime.

    Accepts an aware ``datetime`` (pendulum's included) or an ISO 8601 string with ``Z`` or an
    offset (read by :func:`read_iso8601`; surrounding whitespace ignored). A naive value is refused:
    a date without a time zone means different instants on different workers.

    :param value: The instant.
    :param name: The parameter's name, for errors.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        read = read_iso8601(value.strip())
        if read is None:
            raise ValueError(f"{name}={value!r} is not an ISO 8601 date-time: use e.g. '2024-01-15T00:00:00Z'.")
        parsed = read
    else:
        raise TypeError(f"{name} must be a datetime or an ISO 8601 string, not {type(value).__name__}.")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(
            f"{name}={value!s} has no time zone: pass an aware datetime or an ISO 8601 string with Z or an offset."
        )
    return parsed.astimezone(UTC)


def format_instant(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``: whole seconds when possible, else microseconds."""
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: Resolutions a window is cut at, coarsest first: a second, a millisecond, a microsecond.
UNITS = (_SECOND, timedelta(milliseconds=1), _MICROSECOND)


def _plain(value: datetime) -> datetime:
    """A standard-library UTC datetime (pendulum's arithmetic with ``timedelta`` units differs)."""
    value = value.astimezone(UTC)
    return datetime(*value.timetuple()[:6], value.microsecond, tzinfo=UTC)


def floor_to(value: datetime, unit: timedelta) -> datetime:
    """``value`` rounded down to a multiple of ``unit`` since the epoch (a plain UTC datetime)."""
    plain = _plain(value)
    return plain - (plain - _EPOCH) % unit


def _ceil(value: datetime, unit: timedelta) -> datetime:
    floored = floor_to(value, unit)
    return floored if floored == value else floored + unit


class CreatedAtError(ValueError):
    """A listed conversation's ``createdAt`` cannot be placed in or out of a window."""


def created_at(conversation: Any) -> datetime:
    """
    The ``createdAt`` of a listed conversation, as an aware UTC datetime.

    Raises :class:`CreatedAtError` naming the conversation and the value when it is missing, has no
    time zone or does not parse: such a conversation can be placed neither in nor out of a window, and
    dropping it would lose it silently.
    """
    if not isinstance(conversation, dict):
        raise CreatedAtError(
            f"The API listed {conversation!r:.100} where a conversation object was expected: the answer "
            "cannot be exported exactly; report it to Auralytik."
        )
    value = conversation.get("createdAt")
    try:
        return parse_instant(value, name="createdAt")  # type: ignore[arg-type]  # checked by parse_instant
    except (TypeError, ValueError):
        raise CreatedAtError(
            f"Conversation {conversation.get('id')!r} has createdAt={value!r}, which is not an ISO 8601 "
            "date-time with a time zone: it cannot be placed in or out of the window, so the task stops "
            "rather than drop it; report the value to Auralytik."
        ) from None


@dataclass(frozen=True)
class DateWindow:
    """A half-open window ``[start, end)`` on a conversation's ``createdAt``, in UTC."""

    start: datetime
    end: datetime
    #: The resolution of the bounds sent to the server (see :meth:`server_bounds`): a second, unless
    #: the listing cut a crowded second finer.
    unit: timedelta = field(default=_SECOND, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(
                f"date_to ({format_instant(self.end)}) is before date_from ({format_instant(self.start)}): swap them."
            )

    @classmethod
    def resolve(cls, date_from: datetime | str | None, date_to: datetime | str | None) -> DateWindow:
        """
        Build the window for a task from its rendered ``date_from``/``date_to``.

        Refuses an empty window: Airflow 3's default timetable gives a run a zero-length data
        interval, and exporting "nothing" successfully would hide a day of missing data.
        """
        # The default templates render empty without a data interval; "None" is a None rendered.
        if date_from in (None, "", "None") or date_to in (None, "", "None"):
            raise ValueError(NO_DATA_INTERVAL)
        assert date_from is not None
        assert date_to is not None
        window = cls(parse_instant(date_from, name="date_from"), parse_instant(date_to, name="date_to"))
        if window.start == window.end:
            raise EmptyWindowError(
                f"The window [{format_instant(window.start)}, {format_instant(window.end)}) is empty: "
                "Airflow 3's default timetable gives runs a zero-length data interval. Schedule the DAG "
                "with CronDataIntervalTimetable(...) or pass date_from and date_to explicitly."
            )
        return window

    # -- membership ------------------------------------------------------------------------

    def contains(self, instant: datetime | str) -> bool:
        """
        Whether an instant (a ``createdAt``) lies in ``[start, end)``.

        A value that cannot be placed (no time zone, not a date-time) raises ``ValueError``: answering
        "outside" would drop a conversation silently. Use :func:`created_at` to read a conversation's.
        """
        return self.start <= parse_instant(instant, name="createdAt") < self.end

    # -- what to ask the server ------------------------------------------------------------

    def server_bounds(self) -> tuple[str, str]:
        """
        ``dateFrom``/``dateTo`` to send: on :attr:`unit` boundaries, widened by one unit on each side.

        Whether the server's bounds are inclusive or exclusive is not published; asking for a little
        more and keeping only ``[start, end)`` on our side is exact under every rule. Whole seconds
        unless the listing cut a crowded second: exact on a server that ignores fractions too.
        """
        unit = self.unit
        return (
            format_instant(floor_to(self.start, unit) - unit),
            format_instant(_ceil(self.end, unit) + unit),
        )

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def split(self, parts: int, *, finest: timedelta = _SECOND) -> list[DateWindow]:
        """
        Cut into up to ``parts`` adjacent windows covering it exactly, on boundaries of the coarsest
        unit (second, millisecond, microsecond, no finer than ``finest``) that cuts it at all.

        A window that cannot be cut at ``finest`` (one second or less, by default) comes back whole.
        """
        if parts < 1:
            raise ValueError(f"parts must be at least 1, not {parts}.")
        for unit in UNITS:
            if unit < finest:
                break
            base = floor_to(self.start, unit)
            span = math.ceil((_plain(self.end) - base) / unit)
            if parts > 1 and span > 1:
                step = math.ceil(span / parts)
                cuts = (base + unit * (step * k) for k in range(1, parts))
                bounds = [self.start, *(cut for cut in cuts if self.start < cut < self.end), self.end]
                return [DateWindow(a, b, unit) for a, b in itertools.pairwise(bounds)]
        return [self]

    def finer(self) -> timedelta | None:
        """The next finer unit than this window's, or ``None`` at a microsecond."""
        return next((unit for unit in UNITS if unit < self.unit), None)

    def as_dict(self) -> dict[str, str]:
        return {"date_from": format_instant(self.start), "date_to": format_instant(self.end)}

    def __str__(self) -> str:
        return f"[{format_instant(self.start)}, {format_instant(self.end)})"


def window_slices(
    date_from: datetime | str, date_to: datetime | str, slices: int, destination: str | None = None
) -> list[dict[str, str]]:
    """
    Cut a window into ``slices`` adjacent half-open windows, for ``.expand_kwargs(...)``.

    Each item is ``{"date_from": ..., "date_to": ...}`` in ISO 8601, plus ``"destination":
    "<destination>/slice-000"`` … when ``destination`` is given. Together the slices cover the window
    exactly once, so mapped exports of them never share or miss a conversation. A window shorter
    than ``slices`` seconds gives fewer slices.
    """
    parts = DateWindow.resolve(date_from, date_to).split(slices)
    items = [part.as_dict() for part in parts]
    if destination is not None:
        base = destination.rstrip("/")
        for index, item in enumerate(items):
            item["destination"] = f"{base}/{SLICE_PREFIX}{index:03d}"
    return items


#: Sub-directory names of a sliced export's slices.
SLICE_PREFIX = "slice-"
