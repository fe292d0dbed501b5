"""
Sliced Auralytik export: a day too large for one worker, exported by N mapped tasks.

1. ``plan`` cuts the run's data interval into ``SLICES`` adjacent windows
   (``plan_window_slices``), one ``slice-NNN/`` directory each under the day's destination, and
   withdraws the previous run's combined manifest.
2. ``export_slice`` is mapped over them (``.expand_kwargs``): each task exports its slice's
   messages to its own directory and returns a small summary (XCom never carries data).
3. ``combine`` checks the slices tile the day exactly and writes the day's ``_manifest.json``,
   then emits an asset event for the day's destination on the ``auralytik_messages`` alias.
4. ``report`` shows the pattern downstream DAGs use: ``schedule=[AssetAlias("auralytik_messages")]``
   runs them after each completed export, with the counts in the triggering event's extra.

Object storage and small XComs are all the tasks share, so this runs unchanged on the Celery or
Kubernetes executor. Set the Airflow Variable ``auralytik_export_root`` to e.g. ``s3://lake/auralytik``
and pass ``destination_conn_id`` for a remote store.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk import DAG, AssetAlias, Variable, task
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_auralytik.operators.export import AuralytikExportMessagesOperator
from airflow_provider_auralytik.operators.slices import AuralytikCombineSlicesOperator, plan_window_slices

SLICES = 4
ALIAS = "auralytik_messages"

with DAG(
    dag_id="auralytik_sliced_export",
    description="Export a large day of Auralytik messages in parallel slices, then combine them.",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["auralytik", "export", "scale-out"],
):

    @task
    def plan(data_interval_start: Any = None, data_interval_end: Any = None) -> list[dict[str, str]]:
        root = Variable.get("auralytik_export_root", default="/tmp/auralytik-exports")
        day = data_interval_start.strftime("%Y-%m-%d")
        return plan_window_slices(
            data_interval_start, data_interval_end, SLICES, destination=f"{root}/messages-sliced/date={day}"
        )

    exported = AuralytikExportMessagesOperator.partial(task_id="export_slice", max_concurrency=16).expand_kwargs(plan())
    AuralytikCombineSlicesOperator(task_id="combine", slices=exported.output, asset_alias=ALIAS)


with DAG(
    dag_id="auralytik_after_export",
    description="Runs after each combined Auralytik export (scheduled on the asset alias).",
    schedule=[AssetAlias(ALIAS)],
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["auralytik"],
):

    @task
    def report(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """Read what was exported from the event (destination and counts), not from storage."""
        events = [
            {"uri": event.asset.uri, **event.extra}
            for asset_events in (triggering_asset_events or {}).values()
            for event in asset_events
        ]
        for event in events:
            print(f"Export landed at {event['uri']}: {event.get('messages', 0):,} messages")
        return events

    report()
