"""
Daily Auralytik export: land yesterday's conversations on time, and complete them once the late ones end.

Runs once a day on the interval that just ended, ``[data_interval_start, data_interval_end)``:

1. ``wait_for_completed`` waits (in ``reschedule`` mode, without holding a worker slot) until at most
   ``MAX_PENDING`` conversations created in the window are not ``completed`` yet: a few long ones (a
   customer-service window stays open for 24 hours) do not hold the day back. A timeout (many still
   going on after 6 hours: something is wrong) fails the task for someone to look at and clear; it is
   never a silent skip of the day (no ``soft_fail``).
2. ``export_conversations`` and ``export_messages`` write the window's conversations and their
   PII-masked messages as gzipped JSON Lines plus a ``_manifest.json`` under
   ``<root>/conversations/date=YYYY-MM-DD/`` and ``<root>/messages/date=YYYY-MM-DD/``. The manifests
   list the conversations still going on (``"pending"``); the messages export leaves theirs out.
3. ``catch_up`` brings the ``LOOKBACK`` days before up to date: a day whose export listed pending
   conversations is exported again once any of them completed (a day with nothing pending costs no
   request).

``<root>`` is the Airflow Variable ``auralytik_export_root`` (e.g. ``s3://my-lake/auralytik`` with
``destination_conn_id`` set to an ``aws`` connection), by default a local directory. The API
connection is ``auralytik_default``: host = base URL, password = API key.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_auralytik.operators.catch_up import AuralytikCatchUpOperator
from airflow_provider_auralytik.operators.export import (
    AuralytikExportConversationsOperator,
    AuralytikExportMessagesOperator,
)
from airflow_provider_auralytik.sensors.conversations import AuralytikConversationsCompletedSensor

EXPORT_ROOT = "{{ var.value.get('auralytik_export_root', '/tmp/auralytik-exports') }}"
DAY = "date={{ data_interval_start | ds }}"
CONVERSATIONS = f"{EXPORT_ROOT}/conversations/{DAY}"
MESSAGES = f"{EXPORT_ROOT}/messages/{DAY}"
#: Conversations of the day that may still be going on when it is exported (the catch-up brings them later).
MAX_PENDING = 10
#: Earlier days the catch-up keeps up to date: how long a conversation may stay active and still be landed.
LOOKBACK = 3

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
        max_pending=MAX_PENDING,
    )
    export_conversations = AuralytikExportConversationsOperator(
        task_id="export_conversations",
        destination=CONVERSATIONS,
    )
    export_messages = AuralytikExportMessagesOperator(
        task_id="export_messages",
        destination=MESSAGES,
        max_concurrency=16,
        include_pending=False,
    )
    catch_up = AuralytikCatchUpOperator(
        task_id="catch_up",
        conversations_destination=CONVERSATIONS,
        messages_destination=MESSAGES,
        lookback=LOOKBACK,
    )

    wait_for_completed >> [export_conversations, export_messages]
