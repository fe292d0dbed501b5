"""
Scale-out: export a window too large for one worker as N mapped tasks, then combine their manifests.

::

    slices = plan_slices()                                   # a @task calling plan_window_slices(...)
    exported = AuralytikExportMessagesOperator.partial(task_id="export_slice").expand_kwargs(slices)
    AuralytikCombineSlicesOperator(task_id="combine", slices=exported.output)

Each mapped task writes its own ``<destination>/slice-NNN/`` (parts and a slice manifest, a snapshot
like any export's) and returns a small summary; the combine step checks that the slices tile the window
exactly and commits ``<destination>/_manifest.json`` listing every part. Nothing is shared but object
storage and small XComs, so it runs the same on the Celery or Kubernetes executor.

The combined snapshot stays valid until the next combine commits: a slice rerun keeps the parts the
combined manifest lists (see :func:`~airflow_provider_auralytik.output.snapshot.listed_by_parent`), and
the combine removes them, and earlier runs' extra ``slice-NNN`` directories, only after its own commit.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_auralytik._compat import BaseOperator
from airflow_provider_auralytik.conversations.window import SLICE_PREFIX, format_instant, parse_instant, window_slices
from airflow_provider_auralytik.operators.common import (
    emit_asset_event,
    export_summary,
    register_asset_alias,
    storage_url,
)
from airflow_provider_auralytik.output.manifest import MANIFEST_NAME, manifest_header, manifest_run_token

if TYPE_CHECKING:
    from airflow_provider_auralytik._compat import Context


def plan_window_slices(
    date_from: datetime | str,
    date_to: datetime | str,
    slices: int,
    destination: str,
    destination_conn_id: str | None = None,
) -> list[dict[str, str]]:
    """
    Start a sliced export: the ``.expand_kwargs(...)`` list for the mapped export tasks.

    Returns :func:`~airflow_provider_auralytik.conversations.window.window_slices` with one
    ``<destination>/slice-NNN`` directory per slice, after checking ``destination`` and
    ``destination_conn_id`` (so a bad one fails here, before any slice sends a request). The combined
    snapshot an earlier run committed at ``destination`` stays in place and valid until the combine
    step of this run commits a new one. Call it from a ``@task``.

    :param date_from: Start of the whole window, inclusive (aware datetime or ISO 8601 string).
    :param date_to: End of the whole window, exclusive.
    :param slices: How many slices (mapped export tasks) to cut the window into.
    :param destination: The combined export's directory; each slice writes under ``slice-NNN`` in it.
    :param destination_conn_id: Connection for that store, as the exports will get it.
    """
    from airflow_provider_auralytik.output.destination import check_destination

    check_destination(destination, destination_conn_id)
    return window_slices(date_from, date_to, slices, destination=destination)


def combine_slice_manifests(slices: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """
    One manifest for a sliced export, from the slices' own manifests (in any order).

    Refuses slices that are not of one kind, format and filter set, or that do not tile one window
    exactly (a gap or an overlap would mean a lost or a doubled conversation). File paths become
    relative to the combined destination (``slice-000/part-<run token>-00000.jsonl.gz``); each entry of
    ``"slices"`` records the run token of the slice snapshot it was built from.

    :param slices: ``{"path": "slice-NNN", "manifest": <that slice's committed manifest>}`` per slice.
    """
    if not slices:
        raise ValueError("No slices to combine: the mapped export produced nothing.")
    ordered = sorted(slices, key=lambda s: parse_instant(s["manifest"]["window"]["date_from"]))
    first = ordered[0]["manifest"]
    for key in ("kind", "format", "compression", "filters", "api_host"):
        values = {repr(s["manifest"].get(key)) for s in ordered}
        if len(values) > 1:
            raise ValueError(f"Slices disagree on {key!r} ({', '.join(sorted(values))}): export them alike.")
    for previous, current in itertools.pairwise(ordered):
        end, start = previous["manifest"]["window"]["date_to"], current["manifest"]["window"]["date_from"]
        if parse_instant(end) != parse_instant(start):
            raise ValueError(
                f"Slices {previous['path']} and {current['path']} do not meet ({end} vs {start}): "
                "build them with window_slices() so they tile the window."
            )
    counts: dict[str, int] = {}
    findings: dict[str, int] = {}
    for entry in ordered:
        for key, value in entry["manifest"]["counts"].items():
            counts[key] = counts.get(key, 0) + value
        for key, value in entry["manifest"].get("pii_guard", {}).get("findings", {}).items():
            findings[key] = findings.get(key, 0) + value
    header = manifest_header(
        kind=first["kind"],
        api_host=first["api_host"],
        window={
            "date_from": first["window"]["date_from"],
            "date_to": ordered[-1]["manifest"]["window"]["date_to"],
        },
        filters=first["filters"],
        started_at=min(format_instant(parse_instant(s["manifest"]["started_at"])) for s in ordered),
        finished_at=max(format_instant(parse_instant(s["manifest"]["finished_at"])) for s in ordered),
    )
    combined: dict[str, Any] = {
        **header,
        "counts": counts,
        "skipped": [item for s in ordered for item in s["manifest"].get("skipped", [])],
        "pending": [item for s in ordered for item in s["manifest"].get("pending", [])],
        "api_requests": sum(s["manifest"].get("api_requests", 0) for s in ordered),
        "slices": [
            {"path": s["path"], "window": s["manifest"]["window"], "run_token": manifest_run_token(s["manifest"])}
            for s in ordered
        ],
        "format": first["format"],
        "compression": first["compression"],
        "files": [{**f, "path": f"{s['path']}/{f['path']}"} for s in ordered for f in s["manifest"]["files"]],
    }
    if "include_pending" in first:
        combined["include_pending"] = first["include_pending"]
    if "pii_guard" in first:
        combined["pii_guard"] = {"mode": first["pii_guard"]["mode"], "findings": findings}
    if "schema" in first:
        combined["schema"] = first["schema"]
    return combined


class AuralytikCombineSlicesOperator(BaseOperator):
    """
    Write the combined ``_manifest.json`` of a sliced export (see :func:`plan_window_slices`).

    :param slices: The mapped export tasks' return values (``exported.output``): their
        ``destination`` URLs, all ``<destination>/slice-NNN`` of one destination.
    :param destination_conn_id: Connection for the store, as given to the exports.
    :param asset_alias: As for the export operators: emit an asset event for the combined
        destination, with the combined counts.

    Checks that the slices tile one window exactly, commits the combined manifest as a snapshot (the
    earlier combined snapshot stays valid until then), and only afterwards removes what no committed
    manifest lists any more: parts an earlier combined manifest kept in the slice directories, and
    ``slice-NNN`` directories of an earlier run that this run did not write. Returns a small summary
    like the exports do.
    """

    template_fields: Sequence[str] = ("slices", "destination_conn_id")
    ui_color = "#e8f4f8"

    def __init__(
        self,
        *,
        slices: Any,
        destination_conn_id: str | None = None,
        asset_alias: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.slices = slices
        self.destination_conn_id = destination_conn_id
        self.asset_alias = asset_alias
        register_asset_alias(self, asset_alias)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_auralytik.output.destination import list_names, remove_tree, resolve_destination
        from airflow_provider_auralytik.output.reader import read_manifest
        from airflow_provider_auralytik.output.snapshot import collect_garbage, commit_manifest, new_run_token

        run_token = new_run_token()
        urls = [str(s["destination"]).rstrip("/") for s in self.slices]
        parents = {url.rsplit("/", 1)[0] for url in urls}
        if len(parents) != 1 or not all(url.rsplit("/", 1)[1].startswith(SLICE_PREFIX) for url in urls):
            raise ValueError(
                f"Slices must be {SLICE_PREFIX}NNN directories of one destination, got {sorted(urls)[:3]}…: "
                "plan them with plan_window_slices()."
            )
        destination = resolve_destination(parents.pop(), self.destination_conn_id)
        entries: list[dict[str, Any]] = []
        for url in urls:
            name = url.rsplit("/", 1)[1]
            manifest = read_manifest(destination / name)
            if manifest is None:
                raise FileNotFoundError(f"Slice {url} has no {MANIFEST_NAME}: its export did not finish.")
            entries.append({"path": name, "manifest": manifest})
        combined = commit_manifest(destination, combine_slice_manifests(entries), run_token)
        current = {entry["path"] for entry in entries}
        for child in sorted(list_names(destination)):
            if child.startswith(SLICE_PREFIX) and child not in current:
                self.log.info("Removing %s, a slice of an earlier run", child)
                remove_tree(destination / child)
        for slice_name in sorted(current):
            collect_garbage(destination / slice_name)  # parts only the earlier combined manifest still listed
        summary = export_summary(storage_url(destination), combined, slices=len(entries))
        self.log.info("Combined %d slices of %s: %s", len(entries), combined["window"], summary)
        emit_asset_event(context, self.asset_alias, summary, combined["window"])
        return summary
