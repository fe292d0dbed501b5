"""
Late conversations: bring the last few windows' exports up to date once their conversations complete.

A day's export lists, in its manifest, the conversations that were not ``completed`` when it ran
(``"pending"``). :class:`AuralytikCatchUpOperator` runs in the daily DAG and, for each of the ``lookback``
windows before the run's own:

1. reads that window's committed manifest (no API request);
2. nothing pending there: done, **zero** requests;
3. else lists the window once (an exact listing: a page per ~75 conversations, not one request per
   pending conversation) and compares it with the manifest;
4. any pending conversation completed, changed status or is gone, or conversations appeared: re-exports
   the window as a new snapshot with the export operators' own code (same window, filters, format and
   ``include_pending`` as the manifest records), and emits an asset event for it; else does nothing.

Running it again changes nothing that has not changed at the API: it is idempotent and safe to run daily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_auralytik import DEFAULT_MAX_CONCURRENCY
from airflow_provider_auralytik.conversations.listing import MAX_PAGE_SIZE
from airflow_provider_auralytik.conversations.window import (
    DEFAULT_DATE_FROM,
    DEFAULT_DATE_TO,
    DateWindow,
    explain_missing_data_interval,
)
from airflow_provider_auralytik.operators.common import (
    AuralytikBaseOperator,
    storage_url,
)
from airflow_provider_auralytik.operators.export import (
    AuralytikExportConversationsOperator,
    AuralytikExportMessagesOperator,
)
from airflow_provider_auralytik.output.parts import DEFAULT_MAX_RECORDS_PER_PART

if TYPE_CHECKING:
    from airflow_provider_auralytik._compat import Context
    from airflow_provider_auralytik.output.destination import Destination

#: Windows a catch-up may look back over: a year of daily runs.
MAX_LOOKBACK = 366
#: A re-export reuses the earlier snapshot's messages of completed conversations (held in memory meanwhile)
#: when it holds at most this many; a larger one is fetched again whole.
REUSE_MAX_MESSAGES = 500_000
_EXPORTS: dict[str, type[AuralytikExportConversationsOperator] | type[AuralytikExportMessagesOperator]] = {
    "conversations": AuralytikExportConversationsOperator,
    "messages": AuralytikExportMessagesOperator,
}
#: Context keys that carry the run's interval: shifted to each earlier window before a destination is rendered.
_SHIFTED_KEYS = ("data_interval_start", "data_interval_end", "logical_date")


@dataclass(frozen=True)
class Changes:
    """What changed at the API since a window was exported, for the conversations its manifest listed as pending."""

    #: Pending then, ``completed`` now.
    completed: list[str] = field(default_factory=list)
    #: Pending then, now in another status that is not ``completed``, or gone (deleted).
    changed: list[str] = field(default_factory=list)
    #: Not completed now and not listed as pending then (new, or back from ``completed``).
    new_pending: list[str] = field(default_factory=list)
    #: More conversations in the window now than the export wrote.
    appeared: int = 0
    #: Still pending, as they were.
    still_pending: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.completed or self.changed or self.new_pending or self.appeared)

    def describe(self) -> str:
        parts = [
            f"{len(self.completed)} completed" if self.completed else "",
            f"{len(self.changed)} changed status or gone" if self.changed else "",
            f"{len(self.new_pending)} newly not completed" if self.new_pending else "",
            f"{self.appeared} appeared" if self.appeared else "",
            f"{len(self.still_pending)} still pending" if self.still_pending else "",
        ]
        return ", ".join(p for p in parts if p) or "nothing pending"


def compare(manifest: dict[str, Any], listed: dict[str, dict[str, Any]]) -> Changes:
    """
    Compare a committed manifest's ``"pending"`` with the window as listed now (``{id: conversation}``).

    New conversations are seen from the count (the manifest records how many the export listed, not their
    ids): a window that holds more now than ``counts.conversations`` gained some.
    """
    from airflow_provider_auralytik.conversations.completed_check import pending_entry

    then = {str(p["conversation_id"]): p.get("status") for p in manifest.get("pending", [])}
    now = {cid: entry.get("status") for cid, c in listed.items() if (entry := pending_entry(c)) is not None}
    completed, changed, still = [], [], []
    for cid, status in then.items():
        if cid in listed and cid not in now:
            completed.append(cid)
        elif cid not in listed or now[cid] != status:
            changed.append(cid)
        else:
            still.append(cid)
    exported = int(manifest.get("counts", {}).get("conversations", 0))
    return Changes(
        completed=completed,
        changed=changed,
        new_pending=[cid for cid in now if cid not in then],
        appeared=max(0, len(listed) - exported),
        still_pending=still,
    )


def window_context(context: Context, shift: timedelta) -> dict[str, Any]:
    """The run's template context as a run ``shift`` earlier sees it: its interval, logical date and ``ds``/``ts``
    keys moved back by ``shift`` (everything else, ``var``, ``params``, ``macros`` …, as is)."""
    shifted: dict[str, Any] = dict(context)
    for key in _SHIFTED_KEYS:
        if shifted.get(key) is not None:
            shifted[key] = shifted[key] - shift
    logical = shifted.get("logical_date")
    if logical is not None:
        ts = logical.isoformat()
        shifted.update(
            ds=logical.strftime("%Y-%m-%d"),
            ds_nodash=logical.strftime("%Y%m%d"),
            ts=ts,
            ts_nodash=logical.strftime("%Y%m%dT%H%M%S"),
            ts_nodash_with_tz=ts.replace("-", "").replace(":", ""),
        )
    return shifted


class AuralytikCatchUpOperator(AuralytikBaseOperator):
    """
    Bring the exports of the ``lookback`` windows before this run's up to date with late conversations.

    For each earlier window (same length as this run's, e.g. the previous 3 days of a daily DAG) and each
    destination given, it reads the committed manifest. A window whose export had nothing pending costs no
    API request; otherwise the window is listed once and, when a pending conversation completed (or changed,
    or new ones appeared), the window is exported again as a new snapshot, by the export operators' own code,
    with the window, filters, format, compression and ``include_pending`` its manifest records. Nothing changed:
    nothing is written. Idempotent; safe to run every day.

    :param conversations_destination: The ``destination`` template of the daily conversations export, e.g.
        ``".../conversations/date={{ data_interval_start | ds }}"``. Rendered once per earlier window, with
        ``data_interval_start``/``data_interval_end``, ``logical_date``, ``ds``, ``ts`` … of that window.
    :param messages_destination: The same for the daily messages export. Give at least one of the two.
    :param destination_conn_id: Connection for that store (templated), as given to the exports.
    :param lookback: How many windows before this run's to bring up to date (default 3, at most 366).
    :param date_from: Start of this run's window (templated; default its ``data_interval_start``); the
        windows looked at are the ``lookback`` ones of the same length just before it.
    :param date_to: End of this run's window, exclusive (templated; default its ``data_interval_end``).
    :param page_size: Listing page size, 1 to 100, for the checks and the re-exports (as for the exports).
    :param max_records_per_part: Records per part file of a re-export (as for the exports).
    :param max_concurrency: Conversations a messages re-export fetches at once (as for the messages export).
    :param pii_guard: ``"mask"``, ``"fail"`` or ``"off"`` for a messages re-export (as for the messages export).
    :param auralytik_conn_id: Connection of type ``auralytik``.
    :param asset_alias: Name of an ``AssetAlias``: each re-exported window records an asset event for its
        destination, as the exports do.

    Returns (XCom) a small summary: per window and kind what was done, the re-export count and API requests.
    """

    template_fields: Sequence[str] = ("destination_conn_id", "date_from", "date_to")
    ui_color = "#e8f4f8"

    def __init__(
        self,
        *,
        conversations_destination: str | None = None,
        messages_destination: str | None = None,
        destination_conn_id: str | None = None,
        lookback: int = 3,
        date_from: datetime | str | None = DEFAULT_DATE_FROM,
        date_to: datetime | str | None = DEFAULT_DATE_TO,
        page_size: int = MAX_PAGE_SIZE,
        max_records_per_part: int = DEFAULT_MAX_RECORDS_PER_PART,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        pii_guard: str = "mask",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (
            ("conversations_destination", conversations_destination),
            ("messages_destination", messages_destination),
        ):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be the export's destination template (a string), not {value!r}.")
        if not (conversations_destination or messages_destination):
            raise ValueError(
                "Give conversations_destination and/or messages_destination: the destination templates of the "
                "exports to bring up to date (e.g. '/data/auralytik/messages/date={{ data_interval_start | ds }}')."
            )
        if isinstance(lookback, bool) or not isinstance(lookback, int) or not 1 <= lookback <= MAX_LOOKBACK:
            raise ValueError(
                f"lookback must be an integer from 1 to {MAX_LOOKBACK} (earlier windows to bring up to date), "
                f"not {lookback!r}."
            )
        self.conversations_destination = conversations_destination
        self.messages_destination = messages_destination
        self.destination_conn_id = destination_conn_id
        self.lookback = lookback
        self.date_from = date_from
        self.date_to = date_to
        self.page_size = page_size
        self.max_records_per_part = max_records_per_part
        self.max_concurrency = max_concurrency
        self.pii_guard = pii_guard

    # -- the plan: which destinations, of which windows -------------------------------------------

    def _templates(self) -> list[tuple[str, str]]:
        return [
            (kind, template)
            for kind, template in (
                ("conversations", self.conversations_destination),
                ("messages", self.messages_destination),
            )
            if template
        ]

    def _plan(self, context: Context) -> list[tuple[DateWindow, str, Destination]]:
        """Each earlier window (oldest first) and kind, with its destination rendered and checked: no I/O."""
        from airflow_provider_auralytik.output.destination import check_destination

        current = DateWindow.resolve(self.date_from, self.date_to)
        length = current.end - current.start
        jinja_env = self.get_template_env()
        plan = []
        seen: dict[str, DateWindow] = {}
        for back in range(self.lookback, 0, -1):
            window = DateWindow(current.start - back * length, current.end - back * length)
            values = window_context(context, back * length)
            for kind, template in self._templates():
                with explain_missing_data_interval():
                    url = self.render_template(template, values, jinja_env)  # type: ignore[arg-type]  # a plain dict as context
                target = check_destination(url, self.destination_conn_id)
                if target.url in seen:
                    raise ValueError(
                        f"{kind}_destination renders to {target.url} for both {seen[target.url]} and {window}: it "
                        "must name each window's own place, as the export's does (e.g. "
                        "'.../date={{ data_interval_start | ds }}')."
                    )
                seen[target.url] = window
                plan.append((window, kind, target))
        for window, kind, target in plan[: len(self._templates())]:
            # The exports' own checks of page_size, max_concurrency, pii_guard …, before any request.
            self._export_for(kind, {"window": window.as_dict(), "filters": {}}, target)
        return plan

    def _export_for(self, kind: str, manifest: dict[str, Any], target: Destination) -> Any:
        """An export operator (not in any DAG) set up as the manifest's export was: window, filters, format."""
        options: dict[str, Any] = {}
        if kind == "messages":
            options = {
                "max_concurrency": self.max_concurrency,
                "pii_guard": self.pii_guard,
                "include_pending": bool(manifest.get("include_pending", True)),
            }
        window = manifest["window"]
        return _EXPORTS[kind](
            task_id=f"{self.task_id}__{kind}_{window['date_from'][:10]}",
            destination=target.url,
            destination_conn_id=target.conn_id,
            date_from=window["date_from"],
            date_to=window["date_to"],
            page_size=self.page_size,
            compression=manifest.get("compression", "gzip"),
            max_records_per_part=self.max_records_per_part,
            file_format=manifest.get("format", "jsonl"),
            auralytik_conn_id=self.auralytik_conn_id,
            asset_alias=self.asset_alias,
            **{name: manifest.get("filters", {}).get(name) for name in ("channel_id", "campaign_id", "status")},
            **options,
        )

    # -- the run ------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_auralytik.output.destination import open_destination
        from airflow_provider_auralytik.output.reader import read_manifest
        from airflow_provider_auralytik.output.snapshot import SnapshotConflictError

        plan = self._plan(context)  # every destination checked before any request
        _ = self.hook.settings  # a missing connection fails here, before any request
        listings: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
        results: list[dict[str, Any]] = []
        requests = 0
        try:
            for window, kind, target in plan:
                destination = open_destination(target)
                url = storage_url(destination)
                manifest = read_manifest(destination)
                entry: dict[str, Any] = {"kind": kind, **window.as_dict(), "destination": url}
                results.append(entry)
                if manifest is None:
                    self.log.warning(
                        "No committed %s export for %s at %s: nothing to bring up to date (that day's own "
                        "export has not succeeded; run or clear it).",
                        kind,
                        window,
                        url,
                    )
                    entry["action"] = "missing"
                    continue
                exported = DateWindow.resolve(manifest["window"]["date_from"], manifest["window"]["date_to"])
                if not (exported.start < window.end and window.start < exported.end):
                    self.log.warning(
                        "%s at %s holds the window %s, not %s: left alone (check the destination template).",
                        kind,
                        url,
                        exported,
                        window,
                    )
                    entry["action"] = "other window"
                    continue
                pending = manifest.get("pending")
                if not pending:
                    why = "nothing pending" if pending is not None else "manifest does not list pending"
                    self.log.info("%s %s at %s: %s; no request.", window, kind, url, why)
                    entry["action"] = "nothing pending"
                    continue
                key = (
                    manifest["window"]["date_from"],
                    manifest["window"]["date_to"],
                    *sorted(manifest["filters"].items()),
                )
                if key not in listings:
                    listings[key], cost = self._list(manifest)
                    requests += cost
                changes = compare(manifest, listings[key])
                entry.update(pending=len(pending), completed=len(changes.completed))
                if not changes.any:
                    self.log.info(
                        "%s %s at %s: %s (e.g. %s); left as it is.",
                        window,
                        kind,
                        url,
                        changes.describe(),
                        ", ".join(changes.still_pending[:5]),
                    )
                    entry["action"] = "unchanged"
                    continue
                self.log.info("%s %s at %s: %s; exporting it again.", window, kind, url, changes.describe())
                export = self._export_for(kind, manifest, target)
                if kind == "messages":
                    export.reuse_messages = self._reusable(destination, manifest, listings[key])
                try:
                    summary = export.export(context)
                except SnapshotConflictError:
                    # A newer run (another DAG run's catch-up, a rerun of that day) committed meanwhile:
                    # its snapshot is at least as fresh as this one would have been.
                    self.log.info("%s %s at %s: another run committed a newer snapshot meanwhile.", window, kind, url)
                    entry["action"] = "re-exported by another run"
                    continue
                requests += int(export.manifest.get("api_requests", 0))
                entry.update(action="re-exported", pending_now=summary.get("conversations_pending", 0))
        finally:
            self.hook.close()
        reexported = sum(1 for r in results if r.get("action") == "re-exported")
        summary = {"windows": results, "reexported": reexported, "api_requests": requests}
        self.log.info(
            "Caught up the %d window(s) before %s: %d snapshot(s) re-exported, %d API request(s).",
            self.lookback,
            plan[-1][0].end if plan else "this run's",
            reexported,
            requests,
        )
        return summary

    def _reusable(
        self, destination: Any, manifest: dict[str, Any], listed: dict[str, dict[str, Any]]
    ) -> dict[str, list[dict[str, Any]]] | None:
        """The committed snapshot's messages of conversations completed then and now, by id (``None``: too many
        to hold, or the snapshot changed while read): the re-export fetches only the others."""
        from airflow_provider_auralytik.conversations.completed_check import COMPLETED
        from airflow_provider_auralytik.output.reader import SnapshotChangedError, iter_records

        if int(manifest.get("counts", {}).get("messages", 0)) > REUSE_MAX_MESSAGES:
            return None
        earlier = {str(p["conversation_id"]) for p in [*manifest.get("pending", []), *manifest.get("skipped", [])]}
        final = {cid for cid, c in listed.items() if c.get("status") == COMPLETED} - earlier
        reuse: dict[str, list[dict[str, Any]]] = {}
        try:
            for record in iter_records(destination):
                if (cid := str(record.get("conversationId"))) in final:
                    reuse.setdefault(cid, []).append(record)
        except SnapshotChangedError:
            return None
        return reuse

    def _list(self, manifest: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], int]:
        """The manifest's window, with its filters, as listed now: ``{id: conversation}`` and the requests it took."""
        from airflow_provider_auralytik.conversations.listing import ConversationFilters, WindowListing

        window = DateWindow.resolve(manifest["window"]["date_from"], manifest["window"]["date_to"])
        filters = ConversationFilters(**{k: v for k, v in manifest.get("filters", {}).items() if v})
        listing = WindowListing(self.hook, window, filters, page_size=self.page_size)
        listed = {str(c.get("id")): c for c in listing}
        return listed, listing.requests
