"""
Exact listing of a window: every conversation with ``createdAt`` in ``[start, end)``, once.

Page-number paging is not safe on this API: its sort order is not published and a conversation
created (or changing status) while the pages are read shifts the later pages, which duplicates or
drops records. So the window is never paged. It is cut in time until each piece fits in a single
page; a single answer is a consistent snapshot, and since a conversation's ``createdAt`` never
changes, it falls in exactly one piece. Each piece is asked for with its bounds widened by a
second and trimmed on our side, which is exact whatever the server's boundary rule is.

A day of 2,000 conversations costs about 30 one-page requests, read in time order; memory holds
one page at a time however long the window is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_auralytik.utils.window import DateWindow, parse_instant

if TYPE_CHECKING:
    from airflow_provider_auralytik.hooks.auralytik import AuralytikHook

#: Aim each piece at this share of a page, so random variation rarely overflows it.
_FILL = 0.75
_MAX_SPLIT = 64


@dataclass(frozen=True)
class ConversationFilters:
    """The listing filters a task passes through to ``GET /conversations``."""

    channel_id: str | None = None
    campaign_id: str | None = None
    status: str | None = None

    def query(self) -> dict[str, str | None]:
        return {"channel_id": self.channel_id, "campaign_id": self.campaign_id, "status": self.status}

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.query().items() if v}


def _created_key(conversation: dict[str, Any]) -> tuple[Any, str]:
    return (parse_instant(conversation["createdAt"]), str(conversation.get("id")))


class WindowListing:
    """
    Iterate the conversations of ``window`` matching ``filters``, in ``createdAt`` order.

    ``estimated_total`` is known after the first request (the server's count for the window,
    its one-second margins included) and ``requests`` counts what was sent: progress logs use both.
    """

    def __init__(
        self,
        hook: AuralytikHook,
        window: DateWindow,
        filters: ConversationFilters | None = None,
        *,
        page_size: int = 100,
    ) -> None:
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 100:
            raise ValueError(f"page_size must be an integer from 1 to 100, not {page_size!r}.")
        self.hook = hook
        self.window = window
        self.filters = filters or ConversationFilters()
        self.page_size = page_size
        self.estimated_total: int | None = None
        self.requests = 0

    def _first_page(self, piece: DateWindow) -> dict[str, Any]:
        date_from, date_to = piece.server_bounds()
        self.requests += 1
        return self.hook.get_conversations_page(
            page=1, page_size=self.page_size, date_from=date_from, date_to=date_to, **self.filters.query()
        )

    def _inside(self, piece: DateWindow, items: list[Any]) -> list[dict[str, Any]]:
        kept: dict[str, dict[str, Any]] = {}
        for item in items:
            if isinstance(item, dict) and piece.contains(item.get("createdAt")):
                kept.setdefault(str(item.get("id")), item)
        return sorted(kept.values(), key=_created_key)

    def _paged(self, piece: DateWindow) -> list[dict[str, Any]]:
        """More conversations in one second than a page holds: page that second (deduplicated)."""
        date_from, date_to = piece.server_bounds()
        pages = self.hook.list_conversations(
            date_from=date_from, date_to=date_to, page_size=self.page_size, **self.filters.query()
        )
        items = list(pages)
        self.requests += max(1, math.ceil(len(items) / self.page_size))
        return self._inside(piece, items)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        stack = [self.window]
        while stack:
            piece = stack.pop()
            page = self._first_page(piece)
            total, data = page["totalCount"], page["data"]
            if self.estimated_total is None:
                self.estimated_total = total
            if total <= self.page_size and len(data) >= total:
                yield from self._inside(piece, data)
                continue
            parts = piece.split(min(_MAX_SPLIT, max(2, math.ceil(total / (self.page_size * _FILL)))))
            if len(parts) == 1:
                yield from self._paged(piece)
                continue
            stack.extend(reversed(parts))
