"""Deferrable wait: poll in the triggerer until the conversations are completed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow_provider_auralytik._compat import AirflowException, BaseTrigger, TriggerEvent
from airflow_provider_auralytik.exceptions import AuralytikUnavailableError
from airflow_provider_auralytik.hooks.auralytik import AuralytikHook


class AuralytikConversationsCompletedTrigger(BaseTrigger):
    """
    Fire once every conversation named, or every conversation of a window, is ``completed``.

    Serialises to plain values (the connection id, never the key). A transient fault that outlives
    the hook's retries is logged and polled again; a permanent one (a refused key, an unknown id,
    a refused request) ends the wait with an ``error`` event. The task's ``timeout`` is enforced by
    Airflow through ``defer(timeout=...)``.

    Events: ``{"status": "success" | "error", "message": str, "pending": int, "total": int | None}``.

    :param auralytik_conn_id: Connection of type ``auralytik``.
    :param conversation_ids: The conversations to wait for; or else the window below.
    :param date_from: Start of the half-open window on ``createdAt``, included (ISO 8601).
    :param date_to: End of the window, excluded (ISO 8601).
    :param channel_id: Filter of the window.
    :param campaign_id: Filter of the window.
    :param max_pending: Fire when at most this many conversations are not completed (default 0).
    :param poll_interval: Seconds between checks.
    """

    def __init__(
        self,
        *,
        auralytik_conn_id: str = AuralytikHook.default_conn_name,
        conversation_ids: list[str] | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        channel_id: str | None = None,
        campaign_id: str | None = None,
        max_pending: int = 0,
        poll_interval: float = 60.0,
    ) -> None:
        super().__init__()
        self.auralytik_conn_id = auralytik_conn_id
        self.conversation_ids = list(conversation_ids) if conversation_ids is not None else None
        self.date_from = date_from
        self.date_to = date_to
        self.channel_id = channel_id
        self.campaign_id = campaign_id
        self.max_pending = max_pending
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "auralytik_conn_id": self.auralytik_conn_id,
                "conversation_ids": self.conversation_ids,
                "date_from": self.date_from,
                "date_to": self.date_to,
                "channel_id": self.channel_id,
                "campaign_id": self.campaign_id,
                "max_pending": self.max_pending,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_auralytik.conversations.completed_check import (
            TARGET_FIELDS,
            CheckMemory,
            CheckTarget,
            run_async,
        )

        hook = AuralytikHook(self.auralytik_conn_id)
        memory = CheckMemory()
        try:
            while True:
                try:
                    target = CheckTarget.resolve({name: getattr(self, name) for name in TARGET_FIELDS})
                    result = await run_async(target.check(memory), hook)
                except AuralytikUnavailableError as exc:  # an outage past the retries: poll again
                    self.log.warning("%s Polling again in %g s.", exc, self.poll_interval)
                except (AirflowException, ValueError) as exc:
                    # Refused (a key, an id, a request), a missing connection, a bad window: permanent.
                    yield TriggerEvent({"status": "error", "message": str(exc), "pending": None, "total": None})
                    return
                else:
                    event = {"message": result.describe(ids=True), "pending": result.pending}
                    if result.done:
                        yield TriggerEvent({"status": "success", **event, "total": result.total})
                        return
                    self.log.info("%s Checking again in %g s.", result.describe(ids=True), self.poll_interval)
                await asyncio.sleep(self.poll_interval)
        finally:
            await hook.aclose()
