"""The example DAGs on a real deployment: scheduler, two Celery workers, triggerer, api-server, PostgreSQL,
Redis, the sandbox API and an S3 lake (moto), each a process of its own (``cluster.py``).

Every export is read back from S3 as a reader would (manifest, then the files it lists, checksums
verified) and compared with the sandbox's truth for its window. Each test takes its own days of the
sandbox's fixed past data (March 2026), so nothing depends on today's date.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.deployment.cluster import BUCKET, WORKERS, Deployment, wait_for
from tests.deployment.lake import (
    MANIFEST,
    Lake,
    Snapshot,
    by_conversation,
    day_prefix,
    truth_conversations,
    truth_messages,
)

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]

DAILY = "auralytik_daily_export"
SLICED = "auralytik_sliced_export"
ROOT_KEY = "auralytik"  # the deployment's export root is s3://auralytik-lake/auralytik
ONE_DAY = timedelta(days=1)
TRIGGER = "airflow_provider_auralytik.triggers.conversations.AuralytikConversationsCompletedTrigger"
SLICES = 4  # dags/auralytik_sliced_export.py


def day(n: int) -> datetime:
    return datetime(2026, 3, n, tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def moment(text: str) -> datetime:
    """A timestamp of the REST API (``...Z``, microseconds when not zero)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_alone(lake: Lake, snapshot: Snapshot, *also: str) -> None:
    """Under the snapshot's prefix: its manifest, the files it lists (and ``also``), nothing else."""
    expected = snapshot.listed_keys | {f"{snapshot.prefix}/{MANIFEST}", *also}
    assert set(lake.keys(f"{snapshot.prefix}/")) == expected


def expected_messages(deployment: Deployment, start: datetime) -> dict[str, list[dict[str, Any]]]:
    lines = truth_messages(deployment.sandbox_truth(), start, start + ONE_DAY)
    return {cid: messages for cid, messages in lines.items() if messages}


def assert_daily_exports_exact(deployment: Deployment, lake: Lake, start: datetime) -> None:
    """Both exports of the day ``[start, start + 1 day)``: every conversation once, exactly as served."""
    window = {"date_from": iso(start), "date_to": iso(start + ONE_DAY)}
    conversations = lake.read_snapshot(day_prefix(ROOT_KEY, "conversations", start))
    expected = truth_conversations(deployment.sandbox_truth(), start, start + ONE_DAY)
    assert expected, "the sandbox has data on that day"
    assert len(conversations.records) == len(expected)
    assert {record["id"]: record for record in conversations.records} == expected
    assert conversations.manifest["window"] == window
    messages = lake.read_snapshot(day_prefix(ROOT_KEY, "messages", start))
    assert by_conversation(messages.records) == expected_messages(deployment, start)
    assert messages.manifest["window"] == window
    for snapshot in (conversations, messages):
        assert_alone(lake, snapshot)


def deferred_sensor(deployment: Deployment, run_id: str, not_on_job: int | None = None) -> dict[str, Any] | None:
    """The run's sensor once it is deferred and its trigger runs in a live triggerer (other than ``not_on_job``)."""
    sensor = deployment.task_instance(DAILY, run_id, "wait_for_completed")
    job = sensor.get("triggerer_job") or {}
    if sensor["state"] != "deferred" or job.get("state") != "running" or job.get("id") == not_on_job:
        return None
    return sensor


def assert_handed_to_the_triggerer(sensor: dict[str, Any]) -> None:
    assert sensor["trigger"]["classpath"] == TRIGGER
    assert sensor["triggerer_job"]["job_type"] == "TriggererJob"
    assert sensor["hostname"] in WORKERS  # the first poke ran on a worker, then it deferred


def test_daily_dag_runs_through_the_scheduler_with_the_sensor_deferred_to_the_triggerer(
    deployment: Deployment, lake: Lake
) -> None:
    start, run_id = day(1), "daily-deferred"
    deployment.start_sandbox(complete_within=3600)  # the day's conversations stay active until we say
    deployment.trigger(DAILY, run_id, start, start + ONE_DAY)

    sensor = wait_for("the sensor to wait in the triggerer", lambda: deferred_sensor(deployment, run_id), 300, 1)
    assert_handed_to_the_triggerer(sensor)
    exports = [ti for ti in deployment.task_instances(DAILY, run_id) if ti["task_id"].startswith("export_")]
    assert [ti["state"] for ti in exports] == [None, None]  # nothing exported while the day is not complete

    deployment.start_sandbox()  # now every conversation of the day is completed
    deployment.wait_run(DAILY, run_id)
    sensor = deployment.task_instance(DAILY, run_id, "wait_for_completed")
    assert (sensor["state"], sensor["try_number"]) == ("success", 1)  # resumed from the trigger, no retry
    assert any(".trigger." in path.name for path in deployment.task_log_paths(DAILY, run_id, "wait_for_completed"))
    assert_daily_exports_exact(deployment, lake, start)


def test_sliced_dag_runs_its_slices_on_both_workers_and_combines_them_exactly(
    deployment: Deployment, lake: Lake
) -> None:
    start, run_id = day(7), "sliced-both-workers"
    deployment.start_sandbox()
    deployment.trigger(SLICED, run_id, start, start + ONE_DAY)
    deployment.wait_run(SLICED, run_id, 600)

    slices = [ti for ti in deployment.task_instances(SLICED, run_id) if ti["task_id"] == "export_slice"]
    assert sorted(ti["map_index"] for ti in slices) == list(range(SLICES))
    assert {ti["state"] for ti in slices} == {"success"}
    assert {ti["hostname"] for ti in slices} == set(WORKERS)

    prefix = day_prefix(ROOT_KEY, "messages-sliced", start)
    combined = lake.read_snapshot(prefix)
    assert by_conversation(combined.records) == expected_messages(deployment, start)
    assert combined.manifest["window"] == {"date_from": iso(start), "date_to": iso(start + ONE_DAY)}
    assert combined.manifest["counts"]["messages"] == len(combined.records)
    assert_alone(lake, combined, *(f"{prefix}/slice-{i:03d}/{MANIFEST}" for i in range(SLICES)))


def test_backfill_of_three_days_exports_each_day_once_into_its_partition(deployment: Deployment, lake: Lake) -> None:
    days = [day(3), day(4), day(5)]
    deployment.start_sandbox()
    deployment.airflow(
        "backfill", "create", "--dag-id", DAILY, "--from-date", "2026-03-03", "--to-date", "2026-03-05",
        "--max-active-runs", "3",
    )  # fmt: skip
    (backfill,) = deployment.api("GET", f"backfills?dag_id={DAILY}")["backfills"]
    assert backfill["max_active_runs"] == 3

    def backfill_runs() -> list[dict[str, Any]]:
        runs = deployment.api("GET", f"dags/{DAILY}/dagRuns?limit=100")["dag_runs"]
        return [run for run in runs if run["run_type"] == "backfill"]

    def ended() -> list[dict[str, Any]] | None:
        runs = backfill_runs()
        return runs if len(runs) == 3 and all(run["state"] in ("success", "failed") for run in runs) else None

    runs = sorted(wait_for("the backfill's 3 runs to end", ended, 600, 2), key=lambda run: run["data_interval_start"])
    for run in runs:
        assert run["state"] == "success", deployment.task_logs(DAILY, run["dag_run_id"])
    intervals = [(run["data_interval_start"], run["data_interval_end"]) for run in runs]
    assert intervals == [(iso(d), iso(d + ONE_DAY)) for d in days]
    # max_active_runs > 1 at work: the runs were in flight together.
    assert max(moment(run["start_date"]) for run in runs) < min(moment(run["end_date"]) for run in runs)

    for run, start in zip(runs, days, strict=True):
        exports = [
            ti for ti in deployment.task_instances(DAILY, run["dag_run_id"]) if ti["task_id"].startswith("export_")
        ]
        assert sorted((ti["task_id"], ti["state"], ti["try_number"]) for ti in exports) == [
            ("export_conversations", "success", 1),
            ("export_messages", "success", 1),
        ]
        assert_daily_exports_exact(deployment, lake, start)


@pytest.mark.parametrize(
    ("stop", "day_of_march"),
    [pytest.param("SIGTERM", 2, id="clean-restart"), pytest.param("SIGKILL", 8, id="after-a-crash")],
)
def test_deferred_sensor_survives_a_triggerer_restart(
    deployment: Deployment, lake: Lake, stop: str, day_of_march: int
) -> None:
    start, run_id = day(day_of_march), f"triggerer-restart-{stop}"
    deployment.start_sandbox(complete_within=3600)
    deployment.trigger(DAILY, run_id, start, start + ONE_DAY)
    before = wait_for("the sensor to wait in the triggerer", lambda: deferred_sensor(deployment, run_id), 300, 1)
    assert_handed_to_the_triggerer(before)

    deployment.restart("triggerer", kill=stop == "SIGKILL")  # killed: taken over once its heartbeat is stale
    after = wait_for(
        "the new triggerer to take the trigger over",
        lambda: deferred_sensor(deployment, run_id, not_on_job=before["triggerer_job"]["id"]),
        300,
        1,
    )
    assert after["trigger"]["id"] == before["trigger"]["id"]  # the same trigger, resumed, not a new poke

    deployment.start_sandbox()
    deployment.wait_run(DAILY, run_id)
    sensor = deployment.task_instance(DAILY, run_id, "wait_for_completed")
    assert (sensor["state"], sensor["try_number"]) == ("success", 1)
    assert_daily_exports_exact(deployment, lake, start)


class Watcher(threading.Thread):
    """A reader that keeps reading the snapshots under ``prefixes`` and notes anything half-written."""

    def __init__(self, lake: Lake, prefixes: list[str]) -> None:
        super().__init__(name="lake-watcher", daemon=True)
        self.lake = lake
        self.prefixes = prefixes
        self.faults: list[str] = []
        self.snapshots_seen = 0  # reads that found a committed snapshot to check
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.2):
            for prefix in self.prefixes:
                fault = self.lake.check_readable(prefix)
                if fault is not None:
                    self.faults.append(fault)
                elif self.lake.manifest(prefix) is not None:
                    self.snapshots_seen += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=60)


def exporting_slice(deployment: Deployment, run_id: str) -> dict[str, Any] | None:
    """A slice whose first attempt is exporting on a worker (its log says so), or None."""
    for ti in deployment.task_instances(SLICED, run_id):
        if ti["task_id"] != "export_slice" or ti["state"] != "running" or ti["try_number"] != 1:
            continue
        logs = deployment.task_log_paths(SLICED, run_id, "export_slice")
        mine = [p for p in logs if f"map_index={ti['map_index']}" in str(p) and p.name == "attempt=1.log"]
        if ti["hostname"] in WORKERS and any("Exporting Auralytik" in p.read_text(errors="replace") for p in mine):
            return ti
    return None


def test_worker_killed_during_a_slice_the_retry_on_the_other_worker_commits_exact_output(
    deployment: Deployment, lake: Lake
) -> None:
    start, end = day(6), day(7)
    prefix = day_prefix(ROOT_KEY, "messages-sliced", start)
    slice_prefixes = [f"{prefix}/slice-{i:03d}" for i in range(SLICES)]
    deployment.start_sandbox()
    deployment.trigger(SLICED, "before-the-kill", start, end)
    deployment.wait_run(SLICED, "before-the-kill", 600)
    earlier = lake.read_snapshot(prefix)  # the committed output the rerun must never expose half-written

    deployment.start_sandbox(latency_ms=1500)  # each request 1.5 s: a slice takes several seconds
    watcher = Watcher(Lake(deployment.s3_client(), BUCKET), [prefix, *slice_prefixes])
    watcher.start()
    victim: dict[str, Any] | None = None
    try:
        # The same day again, as a new run (another logical date, the same data interval).
        deployment.trigger(SLICED, "worker-killed", start, end, logical_date=start + timedelta(hours=12))
        victim = wait_for(
            "a slice exporting on a worker", lambda: exporting_slice(deployment, "worker-killed"), 300, 0.5
        )
        deployment.stop_service(victim["hostname"], kill=True)  # SIGKILL to the worker's whole process group
        with pytest.raises(ProcessLookupError):
            os.kill(victim["pid"], 0)  # the task process died with its worker
        deployment.wait_run(SLICED, "worker-killed", 600)
    finally:
        watcher.stop()
        if victim is not None and not deployment.services[victim["hostname"]].alive():
            deployment.start_airflow(victim["hostname"])
            deployment.wait_worker_ready(victim["hostname"])
        deployment.start_sandbox()

    tries = deployment.tries(SLICED, "worker-killed", "export_slice", victim["map_index"])
    assert len(tries) >= 2
    assert (tries[0]["hostname"], tries[0]["try_number"]) == (victim["hostname"], 1)
    assert tries[0]["state"] in ("failed", "up_for_retry")
    (survivor,) = set(WORKERS) - {victim["hostname"]}
    assert (tries[-1]["state"], tries[-1]["hostname"]) == ("success", survivor)

    combined = lake.read_snapshot(prefix)
    assert by_conversation(combined.records) == expected_messages(deployment, start)
    assert combined.manifest["run_token"] != earlier.manifest["run_token"]  # the rerun's own snapshot
    # Nothing of the killed attempt (nor of the earlier run) is listed or left: each slice directory
    # holds its manifest and the parts the combined manifest lists, and nothing else.
    assert_alone(lake, combined, *(f"{p}/{MANIFEST}" for p in slice_prefixes))
    for slice_prefix in slice_prefixes:
        slice_snapshot = lake.read_snapshot(slice_prefix)
        token = slice_snapshot.manifest["run_token"]
        assert all(token in key for key in slice_snapshot.listed_keys)
    assert watcher.snapshots_seen > 0
    assert watcher.faults == []
