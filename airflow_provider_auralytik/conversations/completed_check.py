"""
"Are these conversations completed yet?": the check behind the sensor and the trigger.

The check is written once, as a generator that *yields* the API calls it needs
(:class:`PageCall` / :class:`ConversationCall`) and is *sent* their answers; :func:`run_sync`
drives it with the hook's sync methods (sensor), :func:`run_async` with its async ones (trigger).

A window is never declared done on counts: ``totalCount`` may be 0, stale or the size of a page
(see :mod:`~airflow_provider_auralytik.conversations.listing`). "Not done" is proven from data, cheaply:

1. the window's first page (every status): a conversation inside it that is not ``completed``
   proves "not done" (1 request); a short page holds the whole window and decides either way;
2. else one page per status other than ``completed`` seen so far (``active`` to begin with): one
   such conversation inside the window proves "not done" (a waiting check: 2 requests);
3. else the window is listed exactly (the listing's own requests, a page per ~75 conversations):
   done only if every conversation in it is ``completed``; a status not seen before is learned, so
   the next waiting check stops at step 2.

With ``max_pending=N`` a check is done when at most N conversations are not completed: steps 1 and 2
prove "not done" only once they have seen more than N distinct ones; "done" still needs step 3 (or a
short first page), which counts them exactly.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_provider_auralytik.conversations.listing import (
    PLAIN_VALUES,
    Call,
    ConversationCall,
    ConversationFilters,
    Found,
    ListingStats,
    PageCall,
    Steps,
    answer_async,
    answer_sync,
    list_window,
)
from airflow_provider_auralytik.conversations.window import DateWindow, created_at
from airflow_provider_auralytik.hooks.auralytik import AuralytikNotFoundError

COMPLETED = "completed"
#: The status other than ``completed`` a check asks for before it has seen any (others are learned).
FIRST_GUESS_PENDING = "active"
PAGE_SIZE = 100

__all__ = [
    "COMPLETED",
    "Call",
    "Check",
    "Completion",
    "CompletionMemory",
    "ConversationCall",
    "PageCall",
    "build_check",
    "check_conversation_ids",
    "check_ids",
    "check_max_pending",
    "check_window",
    "pending_entry",
    "run_async",
    "run_sync",
]


@dataclass(frozen=True)
class Completion:
    """The outcome of one check. ``total`` is ``None`` when only a bound is known."""

    pending: int
    total: int | None
    requests: int
    #: Up to a few ids still pending, for logs (ids only: never content).
    examples: tuple[str, ...] = ()
    #: ``pending`` is a lower bound: what was seen before the check stopped looking.
    at_least: bool = False
    #: Done when at most this many conversations are not completed (the sensor's ``max_pending``).
    max_pending: int = 0

    @property
    def done(self) -> bool:
        return self.pending <= self.max_pending and not self.at_least

    def describe(self, *, ids: bool = False) -> str:
        """One line for logs and trigger events: the pending count, and with ``ids`` a few of their ids
        (ids only, never content)."""
        of = f" of {self.total}" if self.total is not None else ""
        if self.pending == 0 and not self.at_least:
            return f"All{of.replace(' of', '')} conversations are completed."
        about = "At least " if self.at_least else ""
        text = f"{about}{self.pending}{of} conversations not completed yet"
        if self.done:
            text += f": done, max_pending={self.max_pending} allows them"
        elif self.max_pending:
            text += f", more than max_pending={self.max_pending}"
        listed = f" Not completed: {', '.join(self.examples)}{', …' if self.pending > len(self.examples) else ''}."
        return f"{text}.{listed if ids and self.examples else ''}"


@dataclass
class CompletionMemory:
    """What a long-lived waiter (poke mode, the trigger) remembers between checks."""

    #: Conversation ids already seen ``completed`` (a terminal status).
    completed_ids: set[str] = field(default_factory=set)
    #: Statuses other than ``completed`` seen in answers: each is one cheap "not done" probe.
    pending_statuses: set[str] = field(default_factory=lambda: {FIRST_GUESS_PENDING})


Check = Generator[Call, Any, Completion]


def check_max_pending(value: Any) -> int:
    """``max_pending`` as an int >= 0; anything else raises before any request."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"max_pending must be an integer >= 0 (how many conversations may still be not completed), not {value!r}."
        )
    return value


def pending_entry(conversation: dict[str, Any]) -> dict[str, Any] | None:
    """A manifest's ``"pending"`` entry for a conversation that is not ``completed`` (its id and status), else
    ``None``: what an export records so that a later catch-up knows what to look at again."""
    status = conversation.get("status")
    if status == COMPLETED:
        return None
    return {"conversation_id": str(conversation.get("id")), "status": status}


def check_ids(conversation_ids: Sequence[str], memory: CompletionMemory, max_pending: int = 0) -> Check:
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
        max_pending=max_pending,
    )


def check_conversation_ids(value: Any, *, resolved: bool = True) -> list[str] | None:
    """
    ``conversation_ids`` as a list of ids; anything but ``None`` or a list of non-empty strings raises.

    ``resolved=False`` (the sensor's constructor): a template string or a value Airflow resolves later
    (an ``XComArg``) passes, and is checked once rendered; plain bad values are refused at once.
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(c, str) and c.strip() for c in value):
        return list(value)
    later = (isinstance(value, str) and "{{" in value) or not isinstance(
        value, (str, list, tuple, set, frozenset, *PLAIN_VALUES)
    )
    if not resolved and later:
        return None
    raise ValueError(
        f"conversation_ids must be a list of non-empty strings (conversation ids), not {value!r:.100}: pass "
        "e.g. ['conv_123', 'conv_456'] (a template must render to such a list), or leave it out to wait "
        "for the window."
    )


def _inside(window: DateWindow, items: list[Any], memory: CompletionMemory) -> dict[str, dict[str, Any]]:
    """The conversations of ``items`` inside the window (a ``createdAt`` that cannot be placed raises);
    learns the statuses other than ``completed``."""
    kept: dict[str, dict[str, Any]] = {}
    for item in items:
        if window.start <= created_at(item) < window.end:
            kept[str(item.get("id"))] = item
        status = item.get("status")
        if isinstance(status, str) and status and status != COMPLETED:
            memory.pending_statuses.add(status)
    return kept


def _waiting(conversations: dict[str, dict[str, Any]]) -> list[str]:
    return [cid for cid, c in conversations.items() if c.get("status") != COMPLETED]


def _relay(steps: Steps, found: dict[str, dict[str, Any]]) -> Generator[Call, Any, None]:
    """Run a sans-I/O listing inside a check: its calls go to the driver, its pieces into ``found``."""
    answer: Any = None
    error: Exception | None = None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(answer)
        except StopIteration:
            return
        answer, error = None, None
        if isinstance(step, Found):
            found.update((str(c.get("id")), c) for c in step.conversations)
            continue
        try:
            answer = yield step
        except Exception as exc:  # the driver's error goes back to the listing (a 404 it expects)
            error = exc


def check_window(
    window: DateWindow, filters: ConversationFilters, memory: CompletionMemory, max_pending: int = 0
) -> Check:
    """Whether at most ``max_pending`` conversations of ``window`` (half-open, on ``createdAt``) are not completed."""
    low, high = window.server_bounds()
    base = {**filters.query(), "status": None, "date_from": low, "date_to": high, "page": 1}

    first = yield PageCall({**base, "page_size": PAGE_SIZE})
    requests = 1
    inside = _inside(window, first["data"], memory)
    waiting = _waiting(inside)
    if len(first["data"]) < PAGE_SIZE:  # the whole window in one answer: decided from the data
        return Completion(len(waiting), len(inside), requests, tuple(waiting[:5]), max_pending=max_pending)
    seen = dict.fromkeys(waiting)  # distinct ids seen not completed, in order
    for status in sorted(memory.pending_statuses):
        if len(seen) > max_pending:
            break
        answer = yield PageCall({**base, "status": status, "page_size": PAGE_SIZE})
        requests += 1
        seen.update(dict.fromkeys(_waiting(_inside(window, answer["data"], memory))))
    if len(seen) > max_pending:  # proven from data: more than allowed are not completed
        return Completion(len(seen), None, requests, tuple(list(seen)[:5]), at_least=True, max_pending=max_pending)

    # At most max_pending seen: count them from an exact listing before saying "done".
    stats = ListingStats()
    listed: dict[str, dict[str, Any]] = {}
    unfiltered = ConversationFilters(channel_id=filters.channel_id, campaign_id=filters.campaign_id)
    yield from _relay(list_window(window, unfiltered, page_size=PAGE_SIZE, stats=stats), listed)
    _inside(window, list(listed.values()), memory)  # learn their statuses
    waiting = _waiting(listed)
    return Completion(len(waiting), len(listed), requests + stats.requests, tuple(waiting[:5]), max_pending=max_pending)


def build_check(
    memory: CompletionMemory,
    *,
    conversation_ids: Sequence[str] | None = None,
    date_from: datetime | str | None = None,
    date_to: datetime | str | None = None,
    channel_id: str | None = None,
    campaign_id: str | None = None,
    max_pending: int = 0,
) -> Check:
    """The check for what a sensor names: its ``conversation_ids`` if given, else its window; done when at
    most ``max_pending`` of them are not completed."""
    max_pending = check_max_pending(max_pending)
    ids = check_conversation_ids(conversation_ids)
    if ids is not None:  # an empty list names nothing to wait for: done at once
        return check_ids(ids, memory, max_pending)
    window = DateWindow.resolve(date_from, date_to)
    filters = ConversationFilters(channel_id=channel_id, campaign_id=campaign_id)
    return check_window(window, filters, memory, max_pending)


def run_sync(check: Check, hook: Any) -> Completion:
    """Drive a check with ``AuralytikHook``'s sync methods (sensor)."""
    step: Call | Completion = _send(check, None)  # a check may have nothing to ask (ids known completed)
    while not isinstance(step, Completion):
        try:
            answer = answer_sync(hook, step)
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
            answer = await answer_async(hook, step)
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
