"""
Export operators: a window of conversations, or of their PII-masked messages, to object storage.

Each operator composes the hook (HTTP), the exact window listing, and the part writer; the output
layout, the manifest and the snapshot commit are described in :mod:`airflow_provider_auralytik.output`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_auralytik import DEFAULT_MAX_CONCURRENCY
from airflow_provider_auralytik.conversations.completed_check import pending_entry
from airflow_provider_auralytik.conversations.listing import MAX_PAGE_SIZE, check_filter, check_page_size
from airflow_provider_auralytik.conversations.pii import MODES as PII_MODES
from airflow_provider_auralytik.conversations.window import DEFAULT_DATE_FROM, DEFAULT_DATE_TO, UTC, DateWindow
from airflow_provider_auralytik.hooks.auralytik import AuralytikHook, AuralytikNotFoundError
from airflow_provider_auralytik.operators.common import (
    MAX_CONCURRENCY,
    AuralytikBaseOperator,
    emit_asset_event,
    export_summary,
    storage_url,
)
from airflow_provider_auralytik.output.parts import DEFAULT_MAX_RECORDS_PER_PART, check_output_options

if TYPE_CHECKING:
    import asyncio

    from airflow_provider_auralytik._compat import Context
    from airflow_provider_auralytik.conversations.listing import ConversationFilters, WindowListing
    from airflow_provider_auralytik.output.writer import PartWriter
    from airflow_provider_auralytik.utils.concurrency import AsyncOrderedMap
    from airflow_provider_auralytik.utils.progress import Progress

#: A messages export fails, naming the connection's base URL, when its first ``NOT_FOUND_FIRST``
#: fetches all answer 404, or when more than half of its fetches (at least ``NOT_FOUND_FIRST``) did:
#: a wrong base path or an outage page, not conversations deleted since they were listed.
NOT_FOUND_FIRST = 5

#: What a messages export fetches per conversation: its id, its ``"pending"`` entry if it is not completed,
#: and its messages (``None``: gone, 404).
Fetched = tuple[str, dict[str, Any] | None, list[dict[str, Any]] | None]


def _unread(task: asyncio.Future[Any]) -> None:
    """Done callback of a fetch whose outcome may never be read: its error is not "never retrieved"."""
    if not task.cancelled():
        task.exception()


def listing_ahead(max_concurrency: int, page_size: int) -> int:
    """Pieces of the window listed at once: enough to keep ``max_concurrency`` fetches fed twice over."""
    return max(2, -(-2 * max_concurrency // page_size) + 1)


class _AuralytikExportOperator(AuralytikBaseOperator):
    """
    Shared parameters and flow of the export operators.

    :meth:`export` lists the window, writes what :meth:`_stream` yields through :meth:`_write` into parts,
    and commits them with the manifest; a subclass says what it exports by overriding those two steps and
    setting :attr:`kind`.

    :param destination: Directory to write to (templated): a local path or an object-storage URL
        (``file://``, ``s3://``, ``gs://``, ``abfs://`` …). A rerun of the same window replaces
        what an earlier run wrote there.
    :param destination_conn_id: Airflow connection for that store (e.g. an ``aws`` connection).
    :param date_from: Start of the window, inclusive (templated; default the run's
        ``data_interval_start``). Aware datetime or ISO 8601 string.
    :param date_to: End of the window, exclusive (templated; default ``data_interval_end``).
    :param channel_id: Only conversations of this channel (templated).
    :param campaign_id: Only conversations of this campaign (templated).
    :param status: Only conversations with this status as of the listing (templated).
    :param page_size: Listing page size, 1 to 100.
    :param compression: ``"gzip"`` (default) or ``None`` for plain ``.jsonl`` parts.
    :param max_records_per_part: Records per part file before a new one is started.
    :param file_format: ``"jsonl"`` (default): JSON Lines parts, each record as the API returned it.
        ``"parquet"``: ``part-NNNNN.parquet`` parts in a fixed schema that is the same every day (typed
        columns for the documented fields, every other field kept as a JSON object in the string column
        ``extra``; see :mod:`airflow_provider_auralytik.output.schemas`), needs the ``[parquet]`` extra
        (``pip install "airflow-provider-auralytik[parquet]"``). With Parquet, ``compression`` picks the
        Parquet codec: ``"gzip"`` (the default), ``"snappy"``, ``"zstd"`` or ``None``. Parts, manifest
        (plus its ``"schema"``) and rerun/failure behaviour are the same as for JSON Lines.
    :param auralytik_conn_id: Connection of type ``auralytik``.
    :param asset_alias: Name of an ``AssetAlias`` this task emits to: on success it records an
        asset event for the rendered destination (``s3://bucket/prefix``), with the manifest's
        counts as the event's extra, so DAGs scheduled on the alias run after each export.
    """

    template_fields: Sequence[str] = (
        "destination",
        "destination_conn_id",
        "date_from",
        "date_to",
        "channel_id",
        "campaign_id",
        "status",
    )
    ui_color = "#e8f4f8"
    #: What the manifest calls a record of this export.
    kind: str = ""

    def __init__(
        self,
        *,
        destination: str,
        destination_conn_id: str | None = None,
        date_from: datetime | str | None = DEFAULT_DATE_FROM,
        date_to: datetime | str | None = DEFAULT_DATE_TO,
        channel_id: str | None = None,
        campaign_id: str | None = None,
        status: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        compression: str | None = "gzip",
        max_records_per_part: int = DEFAULT_MAX_RECORDS_PER_PART,
        file_format: str = "jsonl",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_page_size(page_size)
        for name, value in (("channel_id", channel_id), ("campaign_id", campaign_id), ("status", status)):
            check_filter(name, value, resolved=False)  # checked again once rendered, when execute() starts
        check_output_options(file_format, compression, max_records_per_part)
        self.destination = destination
        self.destination_conn_id = destination_conn_id
        self.date_from = date_from
        self.date_to = date_to
        self.channel_id = channel_id
        self.campaign_id = campaign_id
        self.status = status
        self.page_size = page_size
        self.compression = compression
        self.max_records_per_part = max_records_per_part
        self.file_format = file_format

    # -- the two steps each export defines --------------------------------------------------

    @abstractmethod
    def _stream(self, listing: WindowListing) -> AsyncOrderedMap[Any, Any]:
        """What this export reads, in listing order: an :class:`AsyncOrderedMap` over the listing.

        Reading (and fetching) starts as soon as the stream exists, before :meth:`_write` consumes it; the
        stream is a context manager that stops it on exit.

        :param listing: The window's exact listing (not started yet).
        """

    @abstractmethod
    def _write(
        self, stream: Iterable[Any], listing: WindowListing, writer: PartWriter, progress: Progress
    ) -> dict[str, Any]:
        """Write the stream's records with ``writer`` and return the manifest's own fields (at least ``counts``).

        :param stream: The items of :meth:`_stream`, in listing order.
        :param listing: The window's listing (its ``requests`` so far, for ``api_requests``).
        :param writer: The open part writer; :meth:`export` commits it afterwards.
        :param progress: Counts one item per :meth:`Progress.add`.
        """

    # -- the flow both exports share -------------------------------------------------------

    def _filters(self) -> ConversationFilters:
        from airflow_provider_auralytik.conversations.listing import ConversationFilters

        return ConversationFilters(channel_id=self.channel_id, campaign_id=self.campaign_id, status=self.status)

    def execute(self, context: Context) -> dict[str, Any]:
        return self.export(context)

    def export(self, context: Context) -> dict[str, Any]:
        """Export the window, commit it as a snapshot, emit the asset event; return the summary.

        ``execute`` does this; :class:`~airflow_provider_auralytik.operators.catch_up.AuralytikCatchUpOperator`
        calls it on an export built for an earlier window.
        """
        from airflow_provider_auralytik.conversations.listing import WindowListing
        from airflow_provider_auralytik.output.destination import check_destination, open_destination
        from airflow_provider_auralytik.output.manifest import manifest_header
        from airflow_provider_auralytik.output.schemas import get_schema
        from airflow_provider_auralytik.output.snapshot import new_run_token
        from airflow_provider_auralytik.output.writer import PartWriter
        from airflow_provider_auralytik.utils.progress import Progress

        # Everything about the destination that can be wrong is found before the first request.
        target = check_destination(self.destination, self.destination_conn_id)
        window, filters = DateWindow.resolve(self.date_from, self.date_to), self._filters()
        _ = self.hook.settings  # a missing connection or key fails here: before "Exporting", before any request
        started = datetime.now(UTC)
        listing = WindowListing(self.hook, window, filters, page_size=self.page_size)
        progress = Progress(self.log, self.kind, total=lambda: listing.estimated_total, pace=self.hook.pace)
        try:
            # The destination is opened, and its filesystem built (its first use costs Airflow a few
            # hundred milliseconds of imports, a remote store its connection), before the first request:
            # work that would otherwise take the CPU from the requests in flight.
            destination = open_destination(target)
            _ = destination.fs
            self.log.info(
                "Exporting Auralytik %s for %s%s to %s",
                self.kind,
                window,
                f" (filters {filters.as_dict()})" if filters.as_dict() else "",
                storage_url(destination),
            )
            writer = PartWriter(
                destination,
                compression=self.compression,
                max_records_per_part=self.max_records_per_part,
                file_format=self.file_format,
                schema=get_schema(self.kind),
                run_token=new_run_token(started),
            )
            with self._stream(listing) as stream, writer:
                details = self._write(stream, listing, writer, progress)
                # 429s answered to this export, and seconds the key's requests were paused by them.
                details["rate_limit"] = self.hook.throttle_counts()
                header = manifest_header(
                    kind=self.kind,
                    api_host=self.hook.base_url,
                    window=window.as_dict(),
                    filters=filters.as_dict(),
                    started_at=started,
                    finished_at=datetime.now(UTC),
                )
                manifest = writer.commit({**header, **details})
        finally:
            self.hook.close()
        self.destination_path = destination
        self.manifest = manifest
        summary = export_summary(storage_url(destination), manifest, **manifest["rate_limit"])
        self.log.info("Done: %s. %s", progress.summary(), summary)
        emit_asset_event(context, self.asset_alias, summary, manifest["window"])
        return summary

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Lineage for OpenLineage: the Auralytik API endpoints in, the destination out (with counts)."""
        from airflow.providers.common.compat.openlineage.facet import (
            InputDataset,
            OutputDataset,
            OutputStatisticsOutputDatasetFacet,
        )
        from airflow.providers.openlineage.extractors import OperatorLineage

        from airflow_provider_auralytik.utils.lineage import api_dataset_names, storage_dataset_name

        manifest = getattr(self, "manifest", None)
        destination = getattr(self, "destination_path", None)
        if manifest is None or destination is None:
            return OperatorLineage()
        namespace, names = api_dataset_names(manifest["api_host"], self.kind)
        out_namespace, out_name = storage_dataset_name(destination)
        statistics = OutputStatisticsOutputDatasetFacet(
            rowCount=sum(f["rows"] for f in manifest["files"]),
            size=sum(f["bytes"] for f in manifest["files"]),
        )
        return OperatorLineage(
            inputs=[InputDataset(namespace=namespace, name=name) for name in names],
            outputs=[
                OutputDataset(namespace=out_namespace, name=out_name, outputFacets={"outputStatistics": statistics})
            ],
        )


class AuralytikExportConversationsOperator(_AuralytikExportOperator):
    """
    Export every conversation created in ``[date_from, date_to)`` as JSON Lines, once each.

    Each line is the conversation object as the API returned it, unknown fields included.
    Returns a small summary (destination, files, counts) to XCom.

    .. seealso:: parameters in :class:`_AuralytikExportOperator`.
    """

    kind = "conversations"

    def _stream(self, listing: WindowListing) -> AsyncOrderedMap[dict[str, Any], dict[str, Any]]:
        """The listing on an event-loop thread (the hook's async pool), its pieces listed in parallel
        (``max_concurrency`` of the connection at most), in ``createdAt`` order."""
        from airflow_provider_auralytik.utils.concurrency import AsyncOrderedMap

        hook = self.hook
        hook.use_async_pool()
        ahead = max(2, hook.settings.max_concurrency)

        async def same(conversation: dict[str, Any]) -> dict[str, Any]:
            return conversation

        def conversations() -> AsyncIterator[dict[str, Any]]:
            return listing.alist(ahead=ahead)

        return AsyncOrderedMap(same, conversations, lookahead=2 * self.page_size, cleanup=hook.aclose)

    def _write(
        self, stream: Iterable[dict[str, Any]], listing: WindowListing, writer: PartWriter, progress: Progress
    ) -> dict[str, Any]:
        pending: list[dict[str, Any]] = []
        for conversation in stream:
            writer.write(conversation)
            if (entry := pending_entry(conversation)) is not None:
                pending.append(entry)
            progress.add()
        # Nothing is fetched per conversation here, so nothing can be skipped: listed for the schema.
        return {
            "counts": {"conversations": writer.records_written, "conversations_pending": len(pending)},
            "skipped": [],
            "pending": pending,
            "api_requests": listing.requests,
        }


class AuralytikExportMessagesOperator(_AuralytikExportOperator):
    """
    Export the PII-masked messages of every conversation created in ``[date_from, date_to)``.

    One JSON line per message: the message object as returned, plus ``conversationId``. Messages
    are fetched ``max_concurrency`` conversations at a time, and written in listing order.

    :param max_concurrency: Conversations fetched at once (default 16, at most 256).
    :param pii_guard: Second line of defence on message text after the API's own masking:
        ``"mask"`` (default) masks phone numbers and e-mail addresses that slipped through,
        ``"fail"`` fails the task on the first one, ``"off"`` does not scan. Findings are counted
        in the manifest (never logged).
    :param include_pending: Write the messages of conversations not ``completed`` yet (default), so far
        as they go; with ``False`` only completed conversations' messages are written (the others are not
        fetched). Either way the manifest lists them under ``"pending"``.

    A conversation whose messages answer 404 (deleted since it was listed) is skipped and listed in
    the manifest. When the first ``NOT_FOUND_FIRST`` (5) fetches all answer 404, or more than half of
    the fetches (at least 5) did, the task fails naming the connection's base URL, committing nothing.

    .. seealso:: the other parameters in :class:`_AuralytikExportOperator`.
    """

    kind = "messages"
    #: Messages of conversations already ``completed`` in an earlier snapshot of this window, by id: written
    #: again instead of fetched (a completed conversation's messages do not change). Set by
    #: :class:`~airflow_provider_auralytik.operators.catch_up.AuralytikCatchUpOperator`; ``None``: fetch all.
    reuse_messages: dict[str, list[dict[str, Any]]] | None = None
    reused_conversations = 0
    #: Messages being fetched ahead of the listing, by conversation id (:meth:`_fetch_early`), and how many
    #: of those fetches were not taken up after all (the rest of the dict, once the listing is done).
    _early: dict[str, asyncio.Future[list[dict[str, Any]] | None]]
    _early_unused = 0

    def __init__(
        self,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        pii_guard: str = "mask",
        include_pending: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(include_pending, bool):
            raise ValueError(f"include_pending must be True or False, not {include_pending!r}.")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a positive integer, not {max_concurrency!r}.")
        if max_concurrency > MAX_CONCURRENCY:
            raise ValueError(
                f"max_concurrency={max_concurrency} is more than {MAX_CONCURRENCY}: more requests in flight "
                f"only trip the API's rate limit; use at most {MAX_CONCURRENCY} "
                f"(the default {DEFAULT_MAX_CONCURRENCY} is usually enough)."
            )
        if pii_guard not in PII_MODES:
            raise ValueError(f"pii_guard must be 'mask', 'fail' or 'off', not {pii_guard!r}.")
        self.max_concurrency = max_concurrency
        self.pii_guard = pii_guard
        self.include_pending = include_pending

    @cached_property
    def hook(self) -> AuralytikHook:
        return AuralytikHook(self.auralytik_conn_id, max_concurrency=self.max_concurrency)

    def _reused(self, conversation_id: str, pending: dict[str, Any] | None) -> list[dict[str, Any]] | None:
        """The messages written again from an earlier snapshot (``reuse_messages``: completed then and now)."""
        if pending is None and self.reuse_messages is not None:
            return self.reuse_messages.get(conversation_id)
        return None

    def _fetches(self, conversation_id: str, pending: dict[str, Any] | None) -> bool:
        """Whether a conversation's messages are fetched: not if they are left out (not completed, and
        ``include_pending=False``) or written again from an earlier snapshot."""
        return (pending is None or self.include_pending) and self._reused(conversation_id, pending) is None

    async def _messages(self, conversation_id: str) -> list[dict[str, Any]] | None:
        try:
            return await self.hook.aget_messages(conversation_id)
        except AuralytikNotFoundError:
            return None

    async def _fetch(self, conversation: dict[str, Any]) -> Fetched:
        """The conversation's id, its pending entry (if not completed) and its messages (``None``: 404)."""
        conversation_id = str(conversation["id"])
        pending = pending_entry(conversation)
        early = self._early.pop(conversation_id, None)
        if self._fetches(conversation_id, pending):
            return conversation_id, pending, await (early if early is not None else self._messages(conversation_id))
        if early is not None:
            early.cancel()  # fetched on the first page's view of it, not needed after all
            self._early_unused += 1
        reused = self._reused(conversation_id, pending)
        if reused is None:
            return conversation_id, pending, []  # not fetched: not completed, its messages left out
        self.reused_conversations += 1  # one event loop: no lock needed
        return conversation_id, pending, reused

    def _early_not_taken_up(self) -> int:
        """Early fetches not taken up, sent all the same: once the listing is done, all that are left."""
        return self._early_unused + len(self._early)

    def _fetch_early(self, conversations: list[dict[str, Any]]) -> None:
        """Start fetching the messages of the conversations the window's first page showed (the listing's
        ``on_cut``): the round trip that lists the window's pieces carries them too, instead of leaving
        the in-flight limit (and slow start, which grows with answers) idle; :meth:`_fetch` takes them up
        when the pieces list them. At most a page of them; those listed no more (deleted since) are
        dropped at the end, their outcome unread.

        Only those already ``completed`` on that page: their messages are final. One still active could
        complete before its piece lists it, and be written as completed with the messages of before."""
        import asyncio

        for conversation in conversations:
            conversation_id = str(conversation["id"])
            if pending_entry(conversation) is None and self._fetches(conversation_id, None):
                task = asyncio.ensure_future(self._messages(conversation_id))
                task.add_done_callback(_unread)
                self._early[conversation_id] = task

    def _not_found(self, missing: int, fetched: int) -> AuralytikNotFoundError:
        """Most fetches answered 404: the base URL is likely wrong; nothing is committed."""
        return AuralytikNotFoundError(
            f"GET /conversations/{{id}}/messages answered HTTP 404 for {missing} of {fetched} listed conversations: "
            f"the base URL of connection {self.auralytik_conn_id!r} ({self.hook.base_url}) likely points at the "
            "wrong path or an outage page; fix its host (e.g. https://api.auralytik.com/v1). Nothing was committed.",
            status=404,
        )

    def _stream(self, listing: WindowListing) -> AsyncOrderedMap[dict[str, Any], Fetched]:
        """Listing and fetches on one event-loop thread (the hook's async pool): up to
        ``max_concurrency`` requests in flight, the window's pieces listed ahead in parallel."""
        from airflow_provider_auralytik.utils.concurrency import AsyncOrderedMap

        hook = self.hook
        hook.use_async_pool()
        ahead = listing_ahead(self.max_concurrency, self.page_size)
        self._early, self._early_unused = {}, 0

        async def cleanup() -> None:
            # The early fetches of conversations listed no more (sent: counted; the loop cancelled the rest).
            self._early_unused += len(self._early)
            self._early.clear()
            await hook.aclose()

        return AsyncOrderedMap(
            self._fetch,
            lambda: listing.alist(ahead=ahead, on_cut=self._fetch_early),
            lookahead=4 * self.max_concurrency,
            cleanup=cleanup,
        )

    def _write(
        self,
        stream: Iterable[Fetched],
        listing: WindowListing,
        writer: PartWriter,
        progress: Progress,
    ) -> dict[str, Any]:
        from airflow_provider_auralytik.conversations.pii import PiiGuard

        progress.noun = "conversations"
        guard = PiiGuard(self.pii_guard)
        skipped: list[dict[str, str]] = []
        pending: list[dict[str, Any]] = []
        conversations = fetched = 0
        for conversation_id, entry, messages in stream:
            conversations += 1
            if entry is not None and not self.include_pending:
                pending.append(entry)  # listed, its messages left out
                progress.add()
                continue
            fetched += 1
            if messages is None and len(skipped) + 1 == fetched == NOT_FOUND_FIRST:
                raise self._not_found(NOT_FOUND_FIRST, NOT_FOUND_FIRST)
            if messages is None:
                self.log.warning("Conversation %s is gone (404) since it was listed: skipped.", conversation_id)
                skipped.append({"conversation_id": conversation_id, "reason": "not found (404) after listing"})
            else:
                if entry is not None:
                    pending.append(entry)
                writer.write_all([{**guard.check_message(m), "conversationId": conversation_id} for m in messages])
            progress.add()
        if fetched >= NOT_FOUND_FIRST and 2 * len(skipped) > fetched:
            raise self._not_found(len(skipped), fetched)
        return {
            "counts": {
                "conversations": conversations,
                "messages": writer.records_written,
                "skipped_conversations": len(skipped),
                "conversations_pending": len(pending),
            },
            "skipped": skipped,
            "pending": pending,
            "include_pending": self.include_pending,
            "pii_guard": {"mode": self.pii_guard, "findings": dict(guard.findings)},
            "api_requests": listing.requests + fetched - self.reused_conversations + self._early_not_taken_up(),
            **({"reused_conversations": self.reused_conversations} if self.reuse_messages is not None else {}),
        }
