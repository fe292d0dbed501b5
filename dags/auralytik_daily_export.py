"""
Daily Auralytik export: wait until yesterday's conversations are completed, then land them.

Runs once a day on the interval that just ended, ``[data_interval_start, data_interval_end)``:

1. ``wait_for_completed`` waits (in ``reschedule`` mode, without holding a worker slot) until every
   conversation created in the window has status ``completed``.
2. ``export_conversations`` and ``export_messages`` write the window's conversations and their
   PII-masked messages as gzipped JSON Lines plus a ``_manifest.json`` under
   ``<root>/conversations/date=YYYY-MM-DD/`` and ``<root>/messages/date=YYYY-MM-DD/``.

``<root>`` is the Airflow Variable ``auralytik_export_root`` (e.g. ``s3://my-lake/auralytik`` with
``destination_conn_id`` set to an ``aws`` connection), by default a local directory. The API
connection is ``auralytik_default``: host = base URL, password = API key.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_auralytik.operators.export import (
    AuralytikExportConversationsOperator,
    AuralytikExportMessagesOperator,
)
from airflow_provider_auralytik.sensors.conversations import AuralytikConversationsCompletedSensor

EXPORT_ROOT = "{{ var.value.get('auralytik_export_root', '/tmp/auralytik-exports') }}"
DAY = "date={{ data_interval_start | ds }}"

with DAG(
    dag_id="auralytik_daily_export",
    description="Export each day's Auralytik conversations and masked messages once they are completed.",
    # An interval timetable: each run covers the day that just ended. (Airflow 3's default cron
    # timetable gives runs a zero-length data interval, which the operators refuse.)
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=3,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["auralytik", "export"],
) as dag:
    wait_for_completed = AuralytikConversationsCompletedSensor(
        task_id="wait_for_completed",
        mode="reschedule",
        poke_interval=300,
        timeout=6 * 3600,
    )
    export_conversations = AuralytikExportConversationsOperator(
        task_id="export_conversations",
        destination=f"{EXPORT_ROOT}/conversations/{DAY}",
    )
    export_messages = AuralytikExportMessagesOperator(
        task_id="export_messages",
        destination=f"{EXPORT_ROOT}/messages/{DAY}",
        max_concurrency=16,
    )

    wait_for_completed >> [export_conversations, export_messages]
