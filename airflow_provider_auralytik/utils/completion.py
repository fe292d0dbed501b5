"""
"Are these conversations completed yet?": the check behind the sensor and the trigger.

The check is written once, as a generator that *yields* the API calls it needs
(:class:`PageCall` / :class:`ConversationCall`) and is *sent* their answers; :func:`run_sync`
drives it with the hook's sync methods (sensor), :func:`run_async` with its async ones (trigger).

A window costs a few requests whatever its size: one listing page (100 items: a small window is
answered from the data itself), one count of the ``completed`` ones, and, to be exact at the
edges, a look at the one-second margins the widened query adds; that look is remembered between
pokes once the margins lie in the past, so a waiting poke costs 2 requests.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from airflow_provider_auralytik.hooks.auralytik import AuralytikNotFoundError
from airflow_provider_auralytik.utils.listing import ConversationFilters
from airflow_provider_auralytik.utils.window import UTC, DateWindow, format_instant, parse_instant

COMPLETED = "completed"


@dataclass(frozen=True)
class PageCall:
    """Ask for one listing page (keyword arguments of ``AuralytikHook.get_conversations_page``)."""

    query: dict[str, Any]


@dataclass(frozen=True)
class ConversationCall:
    """Ask for one conversation by id."""

    conversation_id: str


Call = PageCall | ConversationCall


@dataclass(frozen=True)
class Completion:
    """The outcome of one check. ``total`` is ``None`` when only a bound is known."""

    pending: int
    total: int | None
    requests: int
    #: Up to a few ids still pending, for logs (ids only: never content).
    examples: tuple[str, ...] = ()
    #: Counts include the second on each side of the window (the answer itself is exact).
    approximate: bool = False

    @property
    def done(self) -> bool:
        return self.pending == 0

    def describe(self) -> str:
        about = "~" if self.approximate else ""
        of = f" of {about}{self.total}" if self.total is not None else ""
        if self.done:
            return f"All{of.replace(' of', '')} conversations are completed."
        return f"{about}{self.pending}{of} conversations not completed yet."


@dataclass
class CompletionMemory:
    """What a long-lived waiter (poke mode, the trigger) remembers between checks."""

    #: Conversation ids already seen ``completed`` (a terminal status).
    completed_ids: set[str] = field(default_factory=set)
    #: Just-outside-the-window conversations found by the last margin look, once margins are past.
    margin_pending: int | None = None
    margin_total: int | None = None
    #: False when nothing survives until the next check (a sensor in ``reschedule`` mode): a margin
    #: look could never be reused, so a waiting check skips it when it can and reports ``~`` counts.
    lasting: bool = True


Check = Generator[Call, Any, Completion]


def check_ids(conversation_ids: Sequence[str], memory: CompletionMemory) -> Check:
    """Fetch each named conversation not yet seen completed. An unknown id raises (404) at once."""
    pending: list[str] = []
    requests = 0
    for conversation_id in dict.fromkeys(conversation_ids):
        if conversation_id in memory.completed_ids:
            continue
        try:
            conversation = yield ConversationCall(conversation_id)
        except AuralytikNotFoundError:
            raise AuralytikNotFoundError(
                f"Conversation {conversation_id!r} does not exist (HTTP 404): check conversation_ids.",
                status=404,
            ) from None
        requests += 1
        if conversation.get("status") == COMPLETED:
            memory.completed_ids.add(conversation_id)
        else:
            pending.append(conversation_id)
    return Completion(
        pending=len(pending),
        total=len(dict.fromkeys(conversation_ids)),
        requests=requests,
        examples=tuple(pending[:5]),
    )


def _inside(window: DateWindow, items: list[Any]) -> dict[str, Any]:
    return {str(c.get("id")): c for c in items if isinstance(c, dict) and window.contains(c.get("createdAt"))}


def check_window(
    window: DateWindow,
    filters: ConversationFilters,
    memory: CompletionMemory,
    *,
    now: datetime | None = None,
) -> Check:
    """Whether every conversation of ``window`` (half-open, on ``createdAt``) is completed."""
    now = now or datetime.now(UTC)
    low, high = window.server_bounds()
    base = {**filters.query(), "status": None, "date_from": low, "date_to": high, "page": 1}

    first = yield PageCall({**base, "page_size": 100})
    total_wide, data = first["totalCount"], first["data"]
    if total_wide <= len(data):  # the widened window fits one answer: decide from the data
        inside = _inside(window, data)
        waiting = [cid for cid, c in inside.items() if c.get("status") != COMPLETED]
        return Completion(len(waiting), len(inside), 1, tuple(waiting[:5]))

    counted = yield PageCall({**base, "status": COMPLETED, "page_size": 1})
    requests = 2
    gap = total_wide - counted["totalCount"]  # not completed, margins included
    total: int | None
    if gap <= 0:
        total = total_wide - memory.margin_total if memory.margin_total is not None else None
        return Completion(0, total, requests)

    if not memory.lasting and any(c.get("status") != COMPLETED for c in _inside(window, data).values()):
        # A conversation inside the window is not completed: not done, whatever the margins hold.
        # Skipping the margins keeps a waiting poke at 2 requests when nothing would remember
        # them; the counts then include the margins.
        return Completion(gap, total_wide, requests, approximate=True)

    if memory.margin_pending is None or gap - memory.margin_pending <= 0:
        # Is what is not completed only in the margins? Look at them (a second or two each).
        outside: dict[str, Any] = {}
        # The end margin starts a second early: with an exclusive ``dateFrom``, starting at
        # ``window.end`` would miss a conversation created exactly then (inside ones are dropped).
        end_margin_from = format_instant(window.end - timedelta(seconds=1))
        for date_from, date_to in ((low, format_instant(window.start)), (end_margin_from, high)):
            page = 1
            while True:
                answer = yield PageCall(
                    {**base, "date_from": date_from, "date_to": date_to, "page": page, "page_size": 100}
                )
                requests += 1
                for c in answer["data"]:
                    if isinstance(c, dict) and not window.contains(c.get("createdAt")):
                        outside[str(c.get("id"))] = c
                if not answer["data"] or page * 100 >= answer["totalCount"] or page >= 20:
                    break
                page += 1
        margin_pending = sum(1 for c in outside.values() if c.get("status") != COMPLETED)
        if parse_instant(high) < now:  # nothing new can appear in past margins: remember them
            memory.margin_pending, memory.margin_total = margin_pending, len(outside)
        else:
            memory.margin_pending = memory.margin_total = None
        pending = gap - margin_pending
        total = total_wide - len(outside)
    else:
        pending = gap - memory.margin_pending
        total = total_wide - memory.margin_total if memory.margin_total is not None else None
    return Completion(max(pending, 0), total, requests)


def build_check(
    memory: CompletionMemory,
    *,
    conversation_ids: Sequence[str] | None = None,
    date_from: datetime | str | None = None,
    date_to: datetime | str | None = None,
    channel_id: str | None = None,
    campaign_id: str | None = None,
) -> Check:
    """The check for what a sensor names: its ``conversation_ids`` if given, else its window."""
    if conversation_ids is not None:  # an empty list names nothing to wait for: done at once
        return check_ids(list(conversation_ids), memory)
    window = DateWindow.resolve(date_from, date_to)
    return check_window(window, ConversationFilters(channel_id=channel_id, campaign_id=campaign_id), memory)


def run_sync(check: Check, hook: Any) -> Completion:
    """Drive a check with ``AuralytikHook``'s sync methods (sensor)."""
    step: Call | Completion = _send(check, None)  # a check may have nothing to ask (ids known completed)
    while not isinstance(step, Completion):
        try:
            if isinstance(step, PageCall):
                answer = hook.get_conversations_page(**step.query)
            else:
                answer = hook.get_conversation(step.conversation_id)
        except Exception as exc:
            step = _throw(check, exc)
        else:
            step = _send(check, answer)
    return step


async def run_async(check: Check, hook: Any) -> Completion:
    """Drive a check with ``AuralytikHook``'s async methods (trigger)."""
    step: Call | Completion = _send(check, None)
    while not isinstance(step, Completion):
        try:
            if isinstance(step, PageCall):
                answer = await hook.aget_conversations_page(**step.query)
            else:
                answer = await hook.aget_conversation(step.conversation_id)
        except Exception as exc:
            step = _throw(check, exc)
        else:
            step = _send(check, answer)
    return step


def _send(check: Check, answer: Any) -> Call | Completion:
    try:
        return check.send(answer)
    except StopIteration as stop:
        return stop.value


def _throw(check: Check, exc: Exception) -> Call | Completion:
    """Hand a failed call to the check, which may explain it better (an unknown id)."""
    try:
        return check.throw(exc)
    except StopIteration as stop:
        return stop.value
