"""Snapshot commits through the export operators, with real processes, the sandbox over HTTP and real stores.

A committed export is rerun and the rerun is killed (SIGKILL of a process running ``dag.test()``), fails (401:
key revoked; 503: API down), or races a second run of the same window; meanwhile the earlier snapshot stays
whole, and the next successful run leaves exactly its own snapshot. Bad inputs fail before any request.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_auralytik.operators.export import (
    AuralytikExportConversationsOperator,
    AuralytikExportMessagesOperator,
)
from airflow_provider_auralytik.output.snapshot import SnapshotConflictError
from tests.conftest import sandbox_connection
from tests.output.checks import careful_read, local_files, local_snapshot, s3_snapshot

DAY = datetime(2026, 3, 2, tzinfo=timezone.utc)
NEXT = DAY + timedelta(days=1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(make_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A sandbox (2 days of 150 conversations) and the default connection to it: one retry, short backoff."""
    sandbox = make_sandbox(start="2026-03-01", days=2, per_day=150)
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox, backoff_base=0.01, max_retries=1))
    return sandbox


class Target:
    """One destination, local or on S3, with the views a test needs (straight from disk / boto3)."""

    def __init__(self, kind: str, tmp_path: Path, s3: Any = None) -> None:
        self.kind = kind
        self._s3 = s3
        if kind == "local":
            self.path = tmp_path / "export"
            self.destination, self.conn_id = str(self.path), None
        else:
            self.prefix = f"exports/{uuid.uuid4().hex}/date=2026-03-02"
            self.destination, self.conn_id = s3.url(self.prefix), s3.conn_id

    def snapshot(self) -> dict[str, Any] | None:
        return local_snapshot(self.path) if self.kind == "local" else s3_snapshot(self._s3, self.prefix)

    def files(self) -> dict[str, bytes]:
        if self.kind == "local":
            return local_files(self.path) if self.path.exists() else {}
        return {key[len(self.prefix) + 1 :]: self._s3.get(key) for key in self._s3.keys(f"{self.prefix}/")}

    def read(self, name: str) -> bytes:
        if self.kind == "local":
            return (self.path / name).read_bytes()
        data: bytes = self._s3.get(f"{self.prefix}/{name}")
        return data

    def parts(self) -> set[str]:
        """The part files' names, listed only (tests poll this while an export runs: no downloads)."""
        if self.kind == "local":
            names = {str(p.relative_to(self.path)) for p in self.path.rglob("*")} if self.path.exists() else set()
        else:
            names = {key[len(self.prefix) + 1 :] for key in self._s3.keys(f"{self.prefix}/")}
        return {name for name in names if name.startswith("part-")}

    def export(self, **kwargs: Any) -> dict[str, Any]:
        return messages_op(self.destination, self.conn_id, **kwargs).execute(context={})


@pytest.fixture(params=["local", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "local":
        return Target("local", tmp_path)
    return Target("s3", tmp_path, request.getfixturevalue("s3_server"))


def messages_op(destination: str, conn_id: str | None, **kwargs: Any) -> AuralytikExportMessagesOperator:
    defaults: dict[str, Any] = {"date_from": DAY, "date_to": NEXT, "max_records_per_part": 100}
    return AuralytikExportMessagesOperator(
        task_id="messages", destination=destination, destination_conn_id=conn_id, **{**defaults, **kwargs}
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Poll until ``condition()``; the bound only stops a hung test, nothing is timed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def assert_only(target: Target, manifest: dict[str, Any]) -> None:
    """The destination holds exactly this snapshot's parts (strays of failed or killed runs are gone)."""
    assert target.parts() == {f["path"] for f in manifest["files"]}


# ---------------------------------------------------------------------- a rerun that dies or fails midway


_KILLED_DAG = textwrap.dedent(
    """
    import os
    from datetime import datetime, timezone

    from airflow.sdk import DAG

    from airflow_provider_auralytik.operators.export import AuralytikExportMessagesOperator

    with DAG("auralytik_killed_rerun", schedule=None, start_date=datetime(2026, 3, 1, tzinfo=timezone.utc)) as dag:
        AuralytikExportMessagesOperator(
            task_id="messages",
            destination=os.environ["KILLED_RERUN_DESTINATION"],
            destination_conn_id=os.environ["KILLED_RERUN_CONN_ID"] or None,
            date_from="2026-03-02T00:00:00Z",
            date_to="2026-03-03T00:00:00Z",
            max_records_per_part=100,
            max_concurrency=2,
        )
    """
)
#: The process that is killed: loads the DAG file like Airflow does and runs it with ``dag.test()``.
_RUNNER = textwrap.dedent(
    """
    import sys

    from airflow_provider_auralytik._compat import DagBag

    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    print("state:", bag.get_dag("auralytik_killed_rerun").test().state, flush=True)
    """
)


def test_sigkill_of_a_dag_test_process_mid_rerun_leaves_the_earlier_snapshot_intact(
    airflow_db: None, api: Any, target: Target, tmp_path: Path
) -> None:
    target.export()
    committed = target.snapshot()
    assert committed is not None
    before = target.files()

    api.config.latency_ms = 30  # a rerun that takes a few seconds, so it can be killed in the middle
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "killed_rerun.py").write_text(_KILLED_DAG)
    (tmp_path / "runner.py").write_text(_RUNNER)
    env = {  # the test AIRFLOW_HOME and DB, the sandbox and S3 connections, and where to write
        **os.environ,
        "KILLED_RERUN_DESTINATION": target.destination,
        "KILLED_RERUN_CONN_ID": target.conn_id or "",
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),  # dag.test() syncs the DAG from its bundle
    }
    process = subprocess.Popen(
        [sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "dags" / "killed_rerun.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: len(target.parts() - set(before)) >= 2 or process.poll() is not None, "the rerun's parts")
        assert process.poll() is None, process.communicate()[0].decode()[-3000:]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL

    strays = target.parts() - set(before)
    assert strays  # the killed run's parts, never listed by any manifest
    assert target.snapshot() == committed  # the earlier manifest, every listed file with its sha256
    assert {name: data for name, data in target.files().items() if name in before} == before

    api.config.latency_ms = 0
    summary = target.export()
    manifest = target.snapshot()
    assert manifest is not None
    assert manifest["run_token"] > committed["run_token"]
    assert summary["files"] == len(manifest["files"])
    assert_only(target, manifest)  # the strays are gone, and so is the earlier snapshot's parts


@pytest.mark.parametrize("failure", ["401 key revoked", "503 API down"])
def test_a_rerun_failing_midway_leaves_the_earlier_snapshot_intact(api: Any, target: Target, failure: str) -> None:
    target.export()
    committed = target.snapshot()
    assert committed is not None
    before = target.files()
    api.config.latency_ms = 50  # 75 round trips at 2 in flight: seconds left when its first part is seen
    errors: list[BaseException] = []

    def rerun() -> None:
        try:
            target.export(max_concurrency=2)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=rerun)
    thread.start()
    wait_for(lambda: bool(target.parts() - set(before)) or not thread.is_alive(), "the rerun's first part")
    assert thread.is_alive()
    if failure.startswith("401"):
        api.config.api_key = "rotated-key"  # the key the connection holds is revoked
    else:
        api.config.rate_5xx = 1.0
    thread.join(timeout=120)
    assert len(errors) == 1
    assert ("401" in str(errors[0])) if failure.startswith("401") else ("still failing" in str(errors[0]))
    assert target.snapshot() == committed
    assert target.files() == before  # and the failed run cleaned up its own parts


def test_a_reader_polling_through_reruns_of_an_export_never_sees_an_inconsistent_snapshot(
    api: Any, target: Target
) -> None:
    target.export()
    stop = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                manifest = careful_read(target.read)
                assert manifest is not None  # a committed destination never loses its manifest
                seen.append(manifest["run_token"])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(4):
            if n == 1:
                api.config.rate_5xx = 1.0  # one rerun fails midway: API down
                with pytest.raises(Exception, match="still failing"):
                    target.export(max_records_per_part=40)
                api.config.rate_5xx = 0.0
            else:
                target.export(max_records_per_part=40 + n)
                # Let the reader see this snapshot before the next run starts, however the threads are scheduled.
                committed = json.loads(target.read("_manifest.json"))["run_token"]
                deadline = time.monotonic() + 60
                while committed not in seen and not errors and time.monotonic() < deadline:
                    time.sleep(0.005)
    finally:
        stop.set()
        thread.join(timeout=120)
    assert errors == []
    assert len(set(seen)) >= 2  # it saw the snapshot replaced under it


def test_two_runs_of_one_window_at_once_leave_a_valid_snapshot_and_a_retry_succeeds(api: Any, target: Target) -> None:
    target.export()
    api.config.latency_ms = 5
    for _ in range(2):
        outcomes: list[Any] = []
        threads = [threading.Thread(target=lambda out=outcomes: out.append(_try(target.export))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        manifest = target.snapshot()  # every listed file present, sizes and sha256 as listed
        assert manifest is not None
        assert any(isinstance(o, dict) for o in outcomes)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                assert isinstance(outcome, SnapshotConflictError)
                assert "retry the task" in str(outcome)
                assert "\n" not in str(outcome)
    api.config.latency_ms = 0
    target.export()  # the retry
    manifest = target.snapshot()
    assert manifest is not None
    assert_only(target, manifest)


def _try(run: Callable[[], dict[str, Any]]) -> dict[str, Any] | BaseException:
    try:
        return run()
    except BaseException as exc:
        return exc


# ---------------------------------------------------------------------- bad inputs: nothing sent


@pytest.mark.parametrize(
    ("destination", "conn_id", "match"),
    [
        ("", None, "destination must be an absolute local path or an object-storage URL"),
        ("   ", None, "destination must be an absolute local path"),
        ("exports/2026-03-02", None, "destination 'exports/2026-03-02' is a relative path"),
        ("s3://", "S3", "destination 's3://' names no bucket"),
        ("s3:///prefix", "S3", "names no bucket"),
        ("s3://bucket/x", "no_such_connection", "destination_conn_id 'no_such_connection' is not a defined"),
    ],
)
def test_bad_destinations_fail_before_any_request(
    api: Any,
    s3_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    destination: str,
    conn_id: Any,
    match: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    operator = messages_op(destination, s3_server.conn_id if conn_id == "S3" else conn_id)
    api.reset_stats()
    with pytest.raises(ValueError, match=match) as info:
        operator.execute(context={})
    assert "\n" not in str(info.value)
    assert api.stats.requests == 0
    assert list(tmp_path.iterdir()) == []


def test_a_store_whose_provider_is_missing_names_the_extra_before_any_request(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_auralytik.output import destination as destination_mod

    real = destination_mod._find_spec
    monkeypatch.setattr(destination_mod, "_find_spec", lambda name: None if "amazon" in name else real(name))
    api.reset_stats()
    with pytest.raises(
        ValueError, match=r'needs the \[amazon\] extra .*pip install "airflow-provider-auralytik\[amazon\]"'
    ):
        messages_op("s3://my-bucket/auralytik", None).execute(context={})
    assert api.stats.requests == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_records_per_part": 0}, ValueError, "max_records_per_part must be a positive integer"),
        ({"max_records_per_part": -5}, ValueError, "max_records_per_part must be a positive integer"),
        ({"max_records_per_part": True}, ValueError, "max_records_per_part must be a positive integer"),
        ({"max_records_per_part": "100"}, ValueError, "max_records_per_part must be a positive integer"),
        ({"max_records_per_part": 2.5}, ValueError, "max_records_per_part must be a positive integer"),
        ({"file_format": "parquet", "PYARROW": None}, ImportError, r"airflow-provider-auralytik\[parquet\]"),
    ],
)
def test_bad_output_options_fail_at_construction(
    api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], error: type, match: str
) -> None:
    if "PYARROW" in kwargs:
        monkeypatch.setitem(sys.modules, "pyarrow", kwargs.pop("PYARROW"))
    api.reset_stats()
    with pytest.raises(error, match=match):
        AuralytikExportConversationsOperator(task_id="c", destination=str(tmp_path), **kwargs)
    assert api.stats.requests == 0
