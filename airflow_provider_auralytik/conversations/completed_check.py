"""
"Are these conversations completed yet?": the check behind the sensor and the trigger.

The check is written once, as a sans-I/O generator that *yields* the API calls it needs
(:class:`PageCall` / :class:`ConversationCall`), is *sent* their answers and *returns* a
:class:`CheckResult` (the protocol: :mod:`~airflow_provider_auralytik.conversations.sansio`);
:func:`run_sync` drives it with the hook's sync methods (sensor), :func:`run_async` with its async
ones (trigger). :class:`CheckTarget` says what a sensor or trigger waits for, checked once;
:class:`CheckMemory` is what a long wait remembers between checks.

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

import functools
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_auralytik.conversations.listing import (
    MAX_PAGE_SIZE,
    PLAIN_VALUES,
    ConversationFilters,
    Found,
    ListingStats,
    check_filter,
    list_window,
)
from airflow_provider_auralytik.conversations.sansio import (
    Call,
    ConversationCall,
    ConversationsApi,
    PageCall,
    arun,
    make_call,
    passed_on,
    relay,
    run,
)
from airflow_provider_auralytik.conversations.window import DateWindow, created_at
from airflow_provider_auralytik.exceptions import AuralytikNotFoundError

COMPLETED = "completed"
#: The status other than ``completed`` a check asks for before it has seen any (others are learned).
FIRST_GUESS_PENDING = "active"

__all__ = [
    "COMPLETED",
    "Call",
    "Check",
    "CheckMemory",
    "CheckResult",
    "CheckTarget",
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
class CheckResult:
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
class CheckMemory:
    """What a long-lived waiter (poke mode, the trigger) remembers between checks."""

    #: Conversation ids already seen ``completed`` (a terminal status).
    completed_ids: set[str] = field(default_factory=set)
    #: Statuses other than ``completed`` seen in answers: each is one cheap "not done" probe.
    pending_statuses: set[str] = field(default_factory=lambda: {FIRST_GUESS_PENDING})


Check = Generator[Call, Any, CheckResult]


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


def check_ids(conversation_ids: Sequence[str], memory: CheckMemory, max_pending: int = 0) -> Check:
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
    return CheckResult(
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


def _inside(window: DateWindow, items: list[Any], memory: CheckMemory) -> dict[str, dict[str, Any]]:
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


def check_window(window: DateWindow, filters: ConversationFilters, memory: CheckMemory, max_pending: int = 0) -> Check:
    """Whether at most ``max_pending`` conversations of ``window`` (half-open, on ``createdAt``) are not completed."""
    low, high = window.server_bounds()
    base = {**filters.query(), "status": None, "date_from": low, "date_to": high, "page": 1}

    first = yield PageCall({**base, "page_size": MAX_PAGE_SIZE})
    requests = 1
    inside = _inside(window, first["data"], memory)
    waiting = _waiting(inside)
    if len(first["data"]) < MAX_PAGE_SIZE:  # the whole window in one answer: decided from the data
        return CheckResult(len(waiting), len(inside), requests, tuple(waiting[:5]), max_pending=max_pending)
    seen = dict.fromkeys(waiting)  # distinct ids seen not completed, in order
    for status in sorted(memory.pending_statuses):
        if len(seen) > max_pending:
            break
        answer = yield PageCall({**base, "status": status, "page_size": MAX_PAGE_SIZE})
        requests += 1
        seen.update(dict.fromkeys(_waiting(_inside(window, answer["data"], memory))))
    if len(seen) > max_pending:  # proven from data: more than allowed are not completed
        return CheckResult(len(seen), None, requests, tuple(list(seen)[:5]), at_least=True, max_pending=max_pending)

    # At most max_pending seen: count them from an exact listing before saying "done".
    stats = ListingStats()
    listed: dict[str, dict[str, Any]] = {}
    unfiltered = ConversationFilters(channel_id=filters.channel_id, campaign_id=filters.campaign_id)

    def keep(piece: Found) -> None:
        listed.update((str(c.get("id")), c) for c in piece.conversations)

    yield from relay(list_window(window, unfiltered, page_size=MAX_PAGE_SIZE, stats=stats), passed_on(keep))
    _inside(window, list(listed.values()), memory)  # learn their statuses
    waiting = _waiting(listed)
    return CheckResult(
        len(waiting), len(listed), requests + stats.requests, tuple(waiting[:5]), max_pending=max_pending
    )


#: What a sensor or trigger names to wait for: the arguments of :meth:`CheckTarget.resolve`.
TARGET_FIELDS = ("conversation_ids", "date_from", "date_to", "channel_id", "campaign_id", "max_pending")


@dataclass(frozen=True)
class CheckTarget:
    """
    What a check waits for, checked before any request: the conversations named by id, else those of a
    window (with its filters); done when at most ``max_pending`` of them are not completed.

    The sensor resolves its rendered values once (:meth:`resolve`) and hands the trigger the plain
    values (:meth:`as_dict`), which the trigger resolves again.

    :param conversation_ids: The conversations to wait for, or ``None`` for the window's.
    :param window: The window (when no ids are named).
    :param filters: The window's filters.
    :param max_pending: How many may still be not completed.
    """

    conversation_ids: list[str] | None
    window: DateWindow | None
    filters: ConversationFilters = field(default_factory=ConversationFilters)
    max_pending: int = 0

    @classmethod
    def resolve(cls, values: dict[str, Any]) -> CheckTarget:
        """
        The target named by ``values`` (keys among :data:`TARGET_FIELDS`: ``conversation_ids``, else
        ``date_from``/``date_to`` and the ``channel_id``/``campaign_id`` filters; ``max_pending``);
        a bad value raises ``ValueError`` naming its parameter.

        :param values: Rendered values, as a sensor holds them or :meth:`as_dict` gave them.
        """
        unknown = values.keys() - set(TARGET_FIELDS)
        if unknown:
            raise TypeError(f"unexpected target arguments: {', '.join(sorted(unknown))}")
        max_pending = check_max_pending(values.get("max_pending", 0))
        ids = check_conversation_ids(values.get("conversation_ids"))
        if ids is not None:
            return cls(ids, None, max_pending=max_pending)
        filters = {name: values.get(name) for name in ("channel_id", "campaign_id")}
        for name, value in filters.items():
            check_filter(name, value)
        window = DateWindow.resolve(values.get("date_from"), values.get("date_to"))
        return cls(None, window, ConversationFilters(**{k: v or None for k, v in filters.items()}), max_pending)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (a trigger's arguments) that :meth:`resolve` takes back."""
        if self.window is None:
            return {"conversation_ids": self.conversation_ids, "max_pending": self.max_pending}
        return {
            **self.window.as_dict(),
            "channel_id": self.filters.channel_id or None,
            "campaign_id": self.filters.campaign_id or None,
            "max_pending": self.max_pending,
        }

    def check(self, memory: CheckMemory) -> Check:
        """One check of the target (an empty list of ids names nothing to wait for: done at once).

        :param memory: What the waiter remembers between checks.
        """
        if self.window is None:
            return check_ids(self.conversation_ids or [], memory, self.max_pending)
        return check_window(self.window, self.filters, memory, self.max_pending)


def build_check(memory: CheckMemory, **target: Any) -> Check:
    """
    The check for what a sensor names (its ``conversation_ids`` if given, else its window): done when at
    most ``max_pending`` of them are not completed. Invalid arguments raise before any request.

    :param memory: What the waiter remembers between checks.
    :param target: The keyword arguments :meth:`CheckTarget.resolve` takes (:data:`TARGET_FIELDS`).
    """
    return CheckTarget.resolve(target).check(memory)


def run_sync(check: Check, hook: ConversationsApi) -> CheckResult:
    """
    Drive a check with the hook's sync methods (sensor).

    :param check: A check (see :func:`build_check`).
    :param hook: ``AuralytikHook``, or anything with its :class:`ConversationsApi` methods.
    """
    return run(check, functools.partial(make_call, hook))


async def run_async(check: Check, hook: ConversationsApi) -> CheckResult:
    """
    Drive a check with the hook's async methods (trigger).

    :param check: A check (see :func:`build_check`).
    :param hook: ``AuralytikHook``, or anything with its :class:`ConversationsApi` methods.
    """
    return await arun(check, functools.partial(make_call, hook, asynchronous=True))


#: Names of 0.1, kept working until 1.0: ``Completion`` read as auto-completion.
_RENAMED = {"Completion": "CheckResult", "CompletionMemory": "CheckMemory"}


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(f"{name} is now {__name__}.{new}: import that name.", DeprecationWarning, stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
