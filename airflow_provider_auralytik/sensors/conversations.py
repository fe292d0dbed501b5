"""Wait until conversations reach status ``completed``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_auralytik._compat import AirflowException, BaseSensorOperator, conf
from airflow_provider_auralytik.conversations.completed_check import (
    TARGET_FIELDS,
    CheckTarget,
    check_conversation_ids,
    check_max_pending,
)
from airflow_provider_auralytik.conversations.listing import check_filter
from airflow_provider_auralytik.conversations.window import (
    DEFAULT_DATE_FROM,
    DEFAULT_DATE_TO,
)
from airflow_provider_auralytik.exceptions import AuralytikUnavailableError
from airflow_provider_auralytik.hooks.auralytik import AuralytikHook
from airflow_provider_auralytik.operators.common import AuralytikTaskMixin
from airflow_provider_auralytik.triggers.conversations import AuralytikConversationsCompletedTrigger

if TYPE_CHECKING:
    from airflow_provider_auralytik._compat import Context
    from airflow_provider_auralytik.conversations.completed_check import Check, CheckMemory


class AuralytikConversationsCompletedSensor(AuralytikTaskMixin, BaseSensorOperator):
    """
    Wait until every conversation named, or every conversation of a window, has status ``completed``.

    Name what to wait for with ``conversation_ids``, or with a window: ``date_from``/``date_to``
    (half-open on ``createdAt``, default the run's data interval, same rule as the exports) and the
    ``channel_id``/``campaign_id`` filters. A poke over a window costs a few requests whatever the
    number of conversations in it. An unknown conversation id fails at once.

    :param conversation_ids: Conversation ids (templated). When given, the window is not used.
    :param date_from: Start of the window, included (templated; default: the run's data interval start).
    :param date_to: End of the window, excluded (templated; default: the run's data interval end).
    :param channel_id: Filter of the window (templated).
    :param campaign_id: Filter of the window (templated).
    :param max_pending: Done when at most this many conversations are not completed yet (default 0: all
        must be). The pending count and a few ids are logged; the exports then list those conversations
        as pending, and ``AuralytikCatchUpOperator`` brings them in once they complete.
    :param auralytik_conn_id: Connection of type ``auralytik``.
    :param deferrable: Wait in the triggerer (``AuralytikConversationsCompletedTrigger``) instead
        of a worker slot. Default: ``[operators] default_deferrable``.

    ``mode``, ``poke_interval``, ``timeout`` and ``soft_fail`` behave as in every Airflow sensor,
    in every mode.
    """

    template_fields: Sequence[str] = ("conversation_ids", "date_from", "date_to", "channel_id", "campaign_id")
    ui_color = "#f0eee4"

    def __init__(
        self,
        *,
        conversation_ids: Sequence[str] | None = None,
        date_from: datetime | str | None = DEFAULT_DATE_FROM,
        date_to: datetime | str | None = DEFAULT_DATE_TO,
        channel_id: str | None = None,
        campaign_id: str | None = None,
        max_pending: int = 0,
        auralytik_conn_id: str = AuralytikHook.default_conn_name,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_pending = check_max_pending(max_pending)
        check_conversation_ids(conversation_ids, resolved=False)  # templates and XComArgs: once rendered
        for name, value in (("channel_id", channel_id), ("campaign_id", campaign_id)):
            check_filter(name, value, resolved=False)
        self.conversation_ids = conversation_ids
        self.date_from = date_from
        self.date_to = date_to
        self.channel_id = channel_id
        self.campaign_id = campaign_id
        self.auralytik_conn_id = auralytik_conn_id
        if deferrable is None:
            deferrable = conf.getboolean("operators", "default_deferrable", fallback=False)
        self.deferrable = deferrable

    @cached_property
    def _memory(self) -> CheckMemory:
        from airflow_provider_auralytik.conversations.completed_check import CheckMemory

        return CheckMemory()

    def _target(self) -> CheckTarget:
        """What to wait for (shared by the poke and the trigger), checked before any request."""
        return CheckTarget.resolve({name: getattr(self, name) for name in TARGET_FIELDS})

    def _check(self) -> Check:
        return self._target().check(self._memory)

    def poke(self, context: Context) -> bool:
        from airflow_provider_auralytik.conversations.completed_check import run_sync

        try:
            result = run_sync(self._check(), self.hook)
        except AuralytikUnavailableError as exc:
            # Still failing after the hook's retries (an outage): poke again later, as the trigger
            # does. Anything refused (a key, an id, a request) raises: asking again will not help.
            self.log.warning("%s Poking again later.", exc)
            return False
        self.log.info("%s", result.describe(ids=True))
        return result.done

    def execute(self, context: Context) -> Any:
        self._target()  # rendered values checked before the first request, in every mode
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return None
        self.defer(
            trigger=AuralytikConversationsCompletedTrigger(
                auralytik_conn_id=self.auralytik_conn_id,
                poll_interval=self.poke_interval,
                **self._target().as_dict(),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> None:
        """Resume after the trigger fired: succeed, or fail with its message."""
        if event.get("status") != "success":
            raise AirflowException(event.get("message") or "The Auralytik trigger ended without success.")
        self.log.info("%s", event.get("message"))
