"""
The sans-I/O protocol of the domain: logic that needs the API says which call to make, a driver makes it.

The window's listing (:func:`~airflow_provider_auralytik.conversations.listing.list_window`) and the
completed check (:mod:`~airflow_provider_auralytik.conversations.completed_check`) are generators
written once, without I/O; the hook's sync methods (operators, the sensor) or its async ones (the
trigger, the export's concurrent listing) answer them.

**The protocol.** A sans-I/O generator (its *steps*):

- *yields* a :data:`Call` (:class:`PageCall` or :class:`ConversationCall`) and is *sent* the call's
  answer (the parsed JSON, as the hook's method returns it);
- or, when the call failed, has the error *thrown in* at that ``yield`` (a 404 may be an answer:
  "deleted since"); the generator handles it or lets it propagate, which ends the drive. Only an
  ``Exception`` is thrown in: a cancellation or an interrupt ends the drive at once;
- may yield other steps that are not calls (the listing's
  :class:`~airflow_provider_auralytik.conversations.listing.Found` pieces): the driver hands them to
  whoever consumes it and sends ``None`` back;
- *ends* by returning its result (``StopIteration.value``): a check's outcome, a piece's cut; the
  first send is ``None``, as for every generator.

**The drivers**, written once here: :func:`relay` is the sync loop (a generator itself, so that steps
can be passed on: a check relays its listing's calls to its own driver), told what to do with each
step by a handler, :func:`answered` (make the call now) or :func:`passed_on` (yield it to the driver
above); :func:`run` drives a relay to the end. :func:`arun` is the loop's async twin: the same
send/throw step (:func:`_resume`), the answer awaited instead. :func:`make_call` is the one place that
maps a call to the hook's method, sync or async.

The domain never imports the hook: :class:`ConversationsApi` says what it needs from one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

S = TypeVar("S")
R = TypeVar("R")


@dataclass(frozen=True)
class PageCall:
    """Ask for one listing page (keyword arguments of ``AuralytikHook.get_conversations_page``)."""

    query: dict[str, Any]


@dataclass(frozen=True)
class ConversationCall:
    """Ask for one conversation by id (``AuralytikHook.get_conversation``)."""

    conversation_id: str


Call = PageCall | ConversationCall
_CALLS = (PageCall, ConversationCall)


class ConversationsApi(Protocol):
    """What the domain needs from a hook (``AuralytikHook`` is one): a page, a conversation, sync or async."""

    def get_conversations_page(self, **query: Any) -> dict[str, Any]: ...

    def get_conversation(self, conversation_id: str) -> dict[str, Any]: ...

    async def aget_conversations_page(self, **query: Any) -> dict[str, Any]: ...

    async def aget_conversation(self, conversation_id: str) -> dict[str, Any]: ...


def make_call(api: ConversationsApi, call: Call, *, asynchronous: bool = False) -> Any:
    """
    Make ``call`` with ``api``'s sync method (its answer), or start it with the async one (an awaitable).

    :param api: The hook (or anything with its four methods).
    :param call: The call a sans-I/O step yielded.
    :param asynchronous: Use ``aget_*`` and return the awaitable.
    """
    if isinstance(call, PageCall):
        page = api.aget_conversations_page if asynchronous else api.get_conversations_page
        return page(**call.query)
    conversation = api.aget_conversation if asynchronous else api.get_conversation
    return conversation(call.conversation_id)


def _resume(steps: Generator[S, Any, R], answer: Any = None, error: Exception | None = None) -> tuple[bool, Any]:
    """Send ``answer`` (or throw ``error``) into ``steps``: ``(False, next step)`` or ``(True, result)``."""
    try:
        return False, (steps.throw(error) if error is not None else steps.send(answer))
    except StopIteration as stop:
        return True, stop.value


#: How a :func:`relay` treats one step: a generator that may yield steps out to the relay's own
#: driver and returns the answer to send back (raising: the error to throw in).
Handler = Callable[[Any], Generator[Any, Any, Any]]


def relay(steps: Generator[S, Any, R], handle: Handler) -> Generator[Any, Any, R]:
    """
    Drive ``steps`` (see the protocol above): each step goes to ``handle``, what it returns is sent
    back, what it raises is thrown in; what ``handle`` yields is yielded out of the relay.

    :param steps: A sans-I/O generator.
    :param handle: :func:`answered` or :func:`passed_on`.
    :return: What ``steps`` returns.
    """
    done, step = _resume(steps)
    while not done:
        try:
            answer = yield from handle(step)
        except Exception as exc:  # thrown into the steps, which may know better (a 404)
            done, step = _resume(steps, error=exc)
        else:
            done, step = _resume(steps, answer)
    return step


def answered(answer: Callable[[Call], Any]) -> Handler:
    """A handler that makes each call at once with ``answer`` (sync), and yields the other steps out."""

    def handle(step: Any) -> Generator[Any, Any, Any]:
        if isinstance(step, _CALLS):
            return answer(step)
        yield step
        return None

    return handle


def passed_on(keep: Callable[[Any], None]) -> Handler:
    """A handler that yields each call out (to the relay's driver, whose answer it returns) and gives
    the other steps to ``keep``."""

    def handle(step: Any) -> Generator[Any, Any, Any]:
        if isinstance(step, _CALLS):
            return (yield step)
        keep(step)
        return None

    return handle


def run(steps: Generator[Call, Any, R], answer: Callable[[Call], Any]) -> R:
    """
    Drive ``steps`` that yield only calls to the end, answering each with ``answer`` (sync).

    :param steps: A sans-I/O generator yielding calls only (a check).
    :param answer: Makes one call, e.g. ``functools.partial(make_call, hook)``.
    :return: What ``steps`` returns.
    """
    driven = relay(steps, answered(answer))
    try:
        step = next(driven)
    except StopIteration as stop:
        return stop.value
    raise TypeError(f"run() answers calls only; {step!r} is not one: iterate relay() instead.")


async def arun(steps: Generator[Call, Any, R], answer: Callable[[Call], Awaitable[Any]]) -> R:
    """
    Async :func:`run`: each call awaited with ``answer``.

    :param steps: A sans-I/O generator yielding calls only (a check, one piece of a listing).
    :param answer: Makes one call, e.g. ``functools.partial(make_call, hook, asynchronous=True)``.
    :return: What ``steps`` returns.
    """
    done, step = _resume(steps)
    while not done:
        try:
            answer_ = await answer(step)
        except Exception as exc:  # thrown into the steps, which may know better (a 404)
            done, step = _resume(steps, error=exc)
        else:
            done, step = _resume(steps, answer_)
    return step
