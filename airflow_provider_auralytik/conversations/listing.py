"""
Exact listing of a window: every conversation with ``createdAt`` in ``[start, end)``, once.

Two things on this API cannot be trusted, so neither is relied on:

* **Page-number paging.** Its sort order is not published, and a conversation created or deleted
  while the pages are read shifts the later pages, which duplicates or drops records. Only the first
  page of a query is ever asked for: a single answer is a consistent snapshot.
* **``totalCount``.** Back ends cap, cache and estimate counts. Completeness follows from the pages
  alone: a page with fewer items than asked for holds *every* match of its query, a full page means
  "maybe more". The count only guides how finely a full piece is cut.

So the window is cut in time until each piece's first page is short; the pieces tile the window
exactly, and since a conversation's ``createdAt`` never changes it falls in exactly one piece. Each
piece is asked for with its bounds widened by one unit and trimmed on our side, exact whatever the
server's boundary rule. A second holding more than a page is cut into milliseconds, then
microseconds; more than a page at one single instant cannot be listed exactly without paging, and
fails with a clear error instead (see :class:`CrowdedInstantError`).

**How finely to cut a full piece.** Two estimates of its size: the server's count, and what the page
itself shows (on a server that sorts by ``createdAt``, the page's items span a share of the piece
proportional to their number). A count above what the page shows is believed up to
:data:`COUNT_TRUST` times the page's estimate, and fully once the short pages read so far agreed with
their counts; so a count of 0, of the page, of half the truth costs a few more cuts, and one that
overstates (triple, +1,000) a bounded fan-out (at most :data:`MAX_FAN_OUT` pieces per full page),
never a runaway. ``benchmarks/bench_listing.py`` measures each lie.

**Verification.** A piece's items that its parent's page showed must come back in the piece's own
answer; one that does not is looked up: gone (404) or no longer matching the filters is fine, still
there means the server did not honour the bounds (e.g. fractions of a second), and the listing
fails rather than skip it. Items outside the bounds asked for fail the same way.

The listing is written once, sans I/O (the protocol: :mod:`~airflow_provider_auralytik.conversations.sansio`),
one piece at a time (:func:`_list_piece` yields the calls a piece needs and returns what it holds or
how it is cut). :func:`list_window` lists the pieces one after the other: :class:`WindowListing`
drives it with the hook's sync methods, the completed check
(:mod:`~airflow_provider_auralytik.conversations.completed_check`) inside its own generator.
:func:`alist_window` lists them concurrently on an event loop once the first answer has cut the
window, in the same order (:meth:`WindowListing.alist`, the export's way).

The API's page-size rule is here, once: :data:`MAX_PAGE_SIZE` and :func:`check_page_size`.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import itertools
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from airflow_provider_auralytik.conversations.sansio import (
    Call,
    ConversationCall,
    ConversationsApi,
    PageCall,
    answered,
    arun,
    make_call,
    relay,
)
from airflow_provider_auralytik.conversations.window import (
    DateWindow,
    created_at,
    floor_to,
    format_instant,
    parse_instant,
)

#: The API's largest page: ``page_size`` runs from 1 to this.
MAX_PAGE_SIZE = 100
#: Aim each piece at this share of a page, so random variation rarely overflows it.
FILL = 0.75
#: The most pieces one full page is cut into, whatever the count says.
MAX_FAN_OUT = 64
#: Half a full page's items gathered this many times denser than an even cut assumes: cut around them.
BURST = 4
#: A count above the page's own estimate is believed up to this factor until counts have proved honest.
COUNT_TRUST = 1.5
#: Counts prove honest when the short pages read so far hold this share of what they announced, +/-.
_HONEST = 0.1

FILTERS = ("channel_id", "campaign_id", "status")
#: Values that are what they are when a DAG is parsed (not resolved later by Airflow, as an XComArg is).
PLAIN_VALUES = (int, float, bool, bytes, dict)
_MICROSECOND = timedelta(microseconds=1)


class ListingError(ValueError):
    """The API's answers cannot give an exact listing (bounds not honoured, a crowded instant)."""


class CrowdedInstantError(ListingError):
    """More conversations than a page share one ``createdAt`` instant."""


def check_page_size(page_size: Any) -> int:
    """``page_size`` itself if it is an integer from 1 to :data:`MAX_PAGE_SIZE`; anything else raises.

    :param page_size: Conversations per listing request, as a caller gave it.
    """
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}, not {page_size!r}.")
    return page_size


def check_filter(name: str, value: Any, *, resolved: bool = True) -> None:
    """
    A listing filter is one value (a string) or ``None``; a list would silently export one of them.

    ``resolved=False`` (an operator's constructor): a value Airflow resolves later (an ``XComArg``)
    passes, and is checked again once resolved; lists and plain non-strings are refused at once.
    """
    if value is None or isinstance(value, str):
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        raise ValueError(
            f"{name} must be one value (a string), not a list ({value!r:.80}): the API filters on one "
            f"{name} per request; for several, map the task over them (.expand({name}=[...])), one "
            "destination each."
        )
    if resolved or isinstance(value, PLAIN_VALUES):
        raise ValueError(f"{name} must be a string or None, not {type(value).__name__} ({value!r:.80}).")


@dataclass(frozen=True)
class ConversationFilters:
    """The listing filters a task passes through to ``GET /conversations``."""

    channel_id: str | None = None
    campaign_id: str | None = None
    status: str | None = None

    def __post_init__(self) -> None:
        for name in FILTERS:
            check_filter(name, getattr(self, name))

    def query(self) -> dict[str, str | None]:
        return {"channel_id": self.channel_id, "campaign_id": self.campaign_id, "status": self.status}

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.query().items() if v}

    def matches(self, conversation: dict[str, Any]) -> bool:
        """Whether a conversation (as ``GET /conversations/{id}`` returns it) matches these filters."""
        fields = {"channel_id": "channelId", "campaign_id": "campaignId", "status": "status"}
        return all(not v or conversation.get(fields[k]) == v for k, v in self.query().items())


# -- the steps of a sans-I/O listing (calls: see conversations.sansio) -------------------------------


@dataclass(frozen=True)
class Found:
    """A step that is not a call: conversations the listing is sure of, one piece, in ``createdAt`` order."""

    conversations: list[dict[str, Any]]


Steps = Generator[Call | Found, Any, None]


# -- the listing -----------------------------------------------------------------------------------


@dataclass
class ListingStats:
    """What a listing sent and learned; progress logs and the manifest read it."""

    requests: int = 0
    #: The server's count for the whole window (a hint only), after the first request.
    estimated_total: int | None = None
    #: Short pages' sizes and the counts they announced: how honest the counts are.
    short_found: int = 0
    short_announced: int = 0

    @property
    def counts_honest(self) -> bool:
        if self.short_announced <= 0 or self.short_found <= 0:
            return False
        return abs(self.short_found / self.short_announced - 1) <= _HONEST


@dataclass
class _Piece:
    window: DateWindow
    #: Conversations an enclosing piece's page showed inside this one: they must come back.
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)


def _placed(data: list[Any]) -> list[tuple[datetime, dict[str, Any]]]:
    return [(created_at(item), item) for item in data]  # raises on what cannot be placed


def _check_bounds(placed: list[tuple[datetime, dict[str, Any]]], low: str, high: str) -> None:
    lo, hi = parse_instant(low), parse_instant(high)
    for instant, item in placed:
        if not lo <= instant <= hi:
            raise ListingError(
                f"GET /conversations?dateFrom={low}&dateTo={high} returned conversation {item.get('id')!r} "
                f"created at {format_instant(instant)}, outside those bounds: the API does not filter at "
                "this precision, so the window cannot be listed exactly; narrow it with filters or report "
                "it to Auralytik."
            )


def _page_estimate(piece: DateWindow, instants: list[datetime], page_size: int) -> float:
    """How many conversations the piece holds, judged from the spread of one full page's items."""
    if len(instants) < 2:
        return float(page_size)
    spread = (max(instants) - min(instants)).total_seconds()
    if spread <= 0:
        return math.inf
    return max((len(instants) - 1) * piece.seconds / spread, float(len(instants)))


def _fan_out(
    piece: DateWindow, count: int, on_page: int, instants: list[datetime], page_size: int, stats: ListingStats
) -> int:
    """
    How many pieces to cut a full piece into. A count that claims no more than the page holds is
    evidently wrong (0, the page's size): the page's own spread decides. Otherwise the larger of the
    two, the count believed up to ``COUNT_TRUST`` times the spread's until counts have proved honest.
    """
    seen = _page_estimate(piece, instants, page_size)
    if count <= on_page:
        estimate = seen
    else:
        estimate = max(seen, float(count) if stats.counts_honest else min(float(count), COUNT_TRUST * seen))
    if math.isinf(estimate):
        return MAX_FAN_OUT
    return min(MAX_FAN_OUT, max(2, math.ceil(estimate / (page_size * FILL))))


def _crowded(instant: datetime, describe: str, page_size: int) -> CrowdedInstantError:
    return CrowdedInstantError(
        f"More than {page_size} conversations{describe} have createdAt {format_instant(instant)} (in the "
        "window or next to it): no listing query can tell them apart, and page-number paging would skip "
        "one whenever another is deleted while the pages are read, so the task stops rather than risk a "
        "silent gap; narrow the listing with filters (e.g. map the task over channel_id values)."
    )


def _burst(instants: list[datetime]) -> tuple[datetime, datetime] | None:
    """The shortest stretch holding half of ``instants`` (at least two)."""
    ordered = sorted(instants)
    half = max(2, (len(ordered) + 1) // 2)
    if len(ordered) < half:
        return None
    start = min(range(len(ordered) - half + 1), key=lambda i: ordered[i + half - 1] - ordered[i])
    return ordered[start], ordered[start + half - 1]


def _around(piece: DateWindow, low: datetime, high: datetime) -> list[DateWindow] | None:
    """
    Cut ``[low, high]`` (where a full page's items gather) out of the piece, on the coarsest unit that
    makes it smaller than the piece; ``None`` if even microseconds cannot.
    """
    unit: timedelta | None = piece.unit
    while unit is not None:
        start = max(piece.start, floor_to(low, unit))
        end = min(piece.end, floor_to(high, unit) + unit)
        if (start, end) != (piece.start, piece.end):
            bounds = sorted({piece.start, start, end, piece.end})
            return [DateWindow(a, b, unit) for a, b in itertools.pairwise(bounds)]
        unit = DateWindow(piece.start, piece.end, unit).finer()
    return None


def _cut(
    piece: DateWindow, parts: int, instants: list[datetime], shown: list[datetime], describe: str, page_size: int
) -> list[DateWindow]:
    """
    The pieces a full piece is cut into: ``parts`` equal ones, or, when half the page's items gather
    :data:`BURST` times denser than that cut assumes and than the page's own spread (a burst, a
    crowded second, one instant), that stretch and what lies either side.

    ``instants`` are the page's items inside the piece, ``shown`` all of them (margins included).
    """
    burst = _burst(instants)
    if (
        burst is not None
        and (burst[1] - burst[0]) * parts * BURST < piece.end - piece.start
        # ... and gathered within the page itself: a server sorting by createdAt shows the newest
        # (or oldest) page of a uniform piece, half of it over about half its spread: no burst.
        and (burst[1] - burst[0]) * BURST <= max(instants) - min(instants)
    ):
        children = _around(piece, *burst)
        if children is not None:
            return children
    children = piece.split(parts, finest=_MICROSECOND)
    if len(children) == 1:  # one microsecond: a single instant holds more than a page
        raise _crowded(max(set(shown), key=shown.count) if shown else piece.start, describe, page_size)
    return children


def list_window(
    window: DateWindow,
    filters: ConversationFilters | None = None,
    *,
    page_size: int = MAX_PAGE_SIZE,
    stats: ListingStats | None = None,
) -> Steps:
    """
    The listing of ``window``, sans I/O: yields :class:`PageCall`/:class:`ConversationCall` (send
    the answer back, or throw the error) and :class:`Found` pieces in time order (send ``None``).

    :param window: The half-open window on ``createdAt``.
    :param filters: The listing filters (none by default).
    :param page_size: Conversations per request.
    :param stats: Where to count requests and learn the server's counts (a new one by default).
    """
    filters = filters or ConversationFilters()
    stats = stats if stats is not None else ListingStats()
    stack = [_Piece(window)]
    while stack:
        outcome = yield from _list_piece(stack.pop(), filters, page_size, stats)
        if isinstance(outcome, Found):
            yield outcome
        else:
            stack.extend(reversed(outcome))


def _list_piece(
    piece: _Piece, filters: ConversationFilters, page_size: int, stats: ListingStats
) -> Generator[Call, Any, Found | list[_Piece]]:
    """
    One piece, sans I/O: its first page (and the look-ups that verify it); returns what the piece
    holds (:class:`Found`, in ``createdAt`` order) or the pieces to list instead, in time order.
    Pieces are independent of each other, so they can be listed one by one or all at once.
    """
    describe = f" (filters {filters.as_dict()})" if filters.as_dict() else ""
    low, high = piece.window.server_bounds()
    query = {**filters.query(), "date_from": low, "date_to": high, "page": 1, "page_size": page_size}
    page = yield PageCall(query)
    stats.requests += 1
    data, count = page["data"], page["totalCount"]
    if stats.estimated_total is None:
        stats.estimated_total = count
    placed = _placed(data)
    _check_bounds(placed, low, high)
    inside = {str(c.get("id")): (t, c) for t, c in placed if piece.window.start <= t < piece.window.end}
    served = page.get("pageSize")
    full = min(page_size, served) if isinstance(served, int) and served > 0 else page_size
    if len(data) < full:
        stats.short_found += len(data)
        stats.short_announced += max(count, 0)
        yield from _verify(piece, inside, filters, query, stats)
        found = sorted(inside.values(), key=lambda tc: (tc[0], str(tc[1].get("id"))))
        return Found([c for _, c in found])
    instants = [t for t, _ in inside.values()]
    margins = [t for t, _ in placed if not piece.window.start <= t < piece.window.end]
    if 2 * len(margins) >= len(data):  # the page is mostly what the margins add
        if len(set(margins)) == 1:
            raise _crowded(margins[0], describe, page_size)
        finer = piece.window.finer()
        if finer is not None:  # ask again with one-unit-finer margins
            return [_Piece(DateWindow(piece.window.start, piece.window.end, finer), piece.expected)]
    parts = _fan_out(piece.window, count, len(data), instants, page_size, stats)
    children = _cut(piece.window, parts, instants, [t for t, _ in placed], describe, page_size)
    return _share(children, {**{cid: (created_at(c), c) for cid, c in piece.expected.items()}, **inside})


def _share(children: list[DateWindow], known: dict[str, tuple[datetime, dict[str, Any]]]) -> list[_Piece]:
    """The pieces of ``children`` (in time order, tiling their parent), each expecting the conversations of
    ``known`` (by id: ``createdAt``, conversation) that lie in it: placed by their instants, read once."""
    starts = [child.start for child in children]
    expected: list[dict[str, dict[str, Any]]] = [{} for _ in children]
    for cid, (instant, conversation) in known.items():
        i = bisect.bisect_right(starts, instant) - 1
        if i >= 0 and instant < children[i].end:
            expected[i][cid] = conversation
    return [_Piece(child, shown) for child, shown in zip(children, expected, strict=True)]


async def alist_window(
    window: DateWindow,
    answer: Callable[[Call], Awaitable[Any]],
    filters: ConversationFilters | None = None,
    *,
    page_size: int = MAX_PAGE_SIZE,
    stats: ListingStats | None = None,
    ahead: int = 1,
    on_cut: Callable[[list[dict[str, Any]]], None] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """
    The conversations of ``window`` in ``createdAt`` order, listing up to ``ahead`` pieces at once.

    The same pieces, requests and checks as :func:`list_window` (each piece one exact, atomic
    answer); only the scheduling differs: once the first answer has cut the window, the earliest
    ``ahead`` pieces not yet listed are asked for concurrently (``answer`` makes one call; how many
    run at once is its business). Conversations come in order, so those of a later piece wait for
    the earlier ones: at most ``ahead`` pieces (``ahead`` x ``page_size`` conversations) are held.

    :param window: The half-open window on ``createdAt``.
    :param answer: Makes one call (awaitable), e.g. ``functools.partial(make_call, hook, asynchronous=True)``.
    :param filters: The listing filters (none by default).
    :param page_size: Conversations per request.
    :param stats: Where to count requests and learn the server's counts (a new one by default).
    :param ahead: How many pieces may be listed at once.
    :param on_cut: Told once, if the window's first page is full (the window is cut), the conversations
        it showed inside the window, in no particular order: a round trip before the pieces list them
        again (those still there, with their status then), a caller may start its own work on them.
    """
    filters = filters or ConversationFilters()
    stats = stats if stats is not None else ListingStats()
    ahead = max(1, ahead)
    # In time order: pieces not asked for yet, and the tasks listing the others.
    queue: deque[_Piece | asyncio.Task[Found | list[_Piece]]] = deque([_Piece(window)])
    # What the window's first full page showed inside it, for ``on_cut`` (empty until then, and when the
    # same bounds are asked again with finer margins first).
    shown: list[dict[str, Any]] = []
    try:
        while queue:
            for i in range(min(ahead, len(queue))):
                head = queue[i]
                if isinstance(head, _Piece):
                    queue[i] = asyncio.ensure_future(arun(_list_piece(head, filters, page_size, stats), answer))
            if on_cut is not None and shown:  # after the pieces' tasks: their requests go out first
                on_cut(shown)
                on_cut = None
            task = queue[0]
            assert isinstance(task, asyncio.Task)
            outcome = await task
            queue.popleft()
            if on_cut is not None and not isinstance(outcome, Found):
                shown = [c for child in outcome for c in child.expected.values()]
            if isinstance(outcome, Found):
                for conversation in outcome.conversations:
                    yield conversation
            else:
                queue.extendleft(reversed(outcome))
    finally:
        for entry in queue:
            if isinstance(entry, asyncio.Task):
                if entry.done() and not entry.cancelled():
                    entry.exception()  # a later piece's error, superseded by the one raised
                entry.cancel()


def _verify(
    piece: _Piece,
    inside: dict[str, Any],
    filters: ConversationFilters,
    query: dict[str, Any],
    stats: ListingStats,
) -> Generator[Call, Any, None]:
    """Every conversation an enclosing page showed in this piece came back, or is really gone."""
    for cid in piece.expected.keys() - inside.keys():
        try:
            conversation = yield ConversationCall(cid)
        except Exception as exc:  # the driver's error, thrown in: 404 means deleted since
            if getattr(exc, "status", None) == 404:
                continue
            raise
        finally:
            stats.requests += 1
        if filters.matches(conversation):
            raise ListingError(
                f"GET /conversations?dateFrom={query['date_from']}&dateTo={query['date_to']} did not list "
                f"conversation {cid!r} (createdAt {conversation.get('createdAt')!r}), which exists and matches "
                "the filters: the API does not honour these bounds, so the window cannot be listed "
                "exactly; report it to Auralytik."
            )


class WindowListing:
    """
    Iterate the conversations of ``window`` matching ``filters``, in ``createdAt`` order, with the
    hook's sync methods.

    ``estimated_total`` is known after the first request (the server's count for the window, its
    margins included: a hint only) and ``requests`` counts what was sent: progress logs use both.

    :param hook: Makes the calls (``AuralytikHook``, or anything with its :class:`ConversationsApi` methods).
    :param window: The half-open window on ``createdAt``.
    :param filters: The listing filters (none by default).
    :param page_size: Conversations per request, 1 to :data:`MAX_PAGE_SIZE`.
    """

    def __init__(
        self,
        hook: ConversationsApi,
        window: DateWindow,
        filters: ConversationFilters | None = None,
        *,
        page_size: int = MAX_PAGE_SIZE,
    ) -> None:
        check_page_size(page_size)
        self.hook = hook
        self.window = window
        self.filters = filters or ConversationFilters()
        self.page_size = page_size
        self.stats = ListingStats()

    @property
    def requests(self) -> int:
        return self.stats.requests

    @property
    def estimated_total(self) -> int | None:
        return self.stats.estimated_total

    def alist(
        self, *, ahead: int, on_cut: Callable[[list[dict[str, Any]]], None] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The same conversations with the hook's async methods, ``ahead`` pieces listed at once
        (``on_cut``: see :func:`alist_window`); iterate it on one event loop."""
        answer = functools.partial(make_call, self.hook, asynchronous=True)
        return alist_window(
            self.window, answer, self.filters, page_size=self.page_size, stats=self.stats, ahead=ahead, on_cut=on_cut
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        steps = list_window(self.window, self.filters, page_size=self.page_size, stats=self.stats)
        for piece in relay(steps, answered(functools.partial(make_call, self.hook))):
            yield from piece.conversations
