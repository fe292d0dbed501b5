"""The example DAG: parses cleanly and cheaply, and runs end to end with dag.test() on the sandbox."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.conftest import sandbox_connection

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def dag(airflow_db):
    from airflow_provider_auralytik._compat import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.get_dag("auralytik_daily_export")


def test_dag_shape(dag):
    assert dag is not None
    assert set(dag.task_dict) == {"wait_for_completed", "export_conversations", "export_messages", "catch_up"}
    assert dag.task_dict["catch_up"].upstream_task_ids == set()  # earlier days: it does not wait for today's
    assert dag.task_dict["wait_for_completed"].downstream_task_ids == {"export_conversations", "export_messages"}
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"


def test_importing_the_provider_stays_cheap():
    # A DAG file is parsed every few seconds: importing the operators must not pull in the HTTP
    # clients, the storage stack or anything heavy beyond Airflow's own task SDK.
    code = (
        "import sys, airflow.sdk;"
        "before = set(sys.modules);"
        "import airflow_provider_auralytik.operators.export, airflow_provider_auralytik.sensors.conversations;"
        "new = set(sys.modules) - before;"
        "heavy = sorted(m for m in new if m.split('.')[0] in "
        "{'requests', 'httpx', 'urllib3', 'fsspec', 's3fs', 'boto3', 'botocore', 'pyarrow', 'gzip', 'openlineage'});"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_dag_runs_end_to_end_on_the_sandbox(dag, make_sandbox, monkeypatch, tmp_path):
    sandbox = make_sandbox(start="2026-03-01", days=3, per_day=150)
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox))
    monkeypatch.setenv("AIRFLOW_VAR_AURALYTIK_EXPORT_ROOT", str(tmp_path))

    run = dag.test(logical_date=datetime(2026, 3, 3, tzinfo=timezone.utc))
    assert run.state == "success"

    # The run of 2026-03-03 covers [2026-03-02, 2026-03-03).
    expected = set(sandbox.conversations_in("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z"))
    for kind, id_field in (("conversations", "id"), ("messages", "conversationId")):
        directory = tmp_path / kind / "date=2026-03-02"
        manifest = json.loads((directory / "_manifest.json").read_text())
        assert manifest["window"] == {"date_from": "2026-03-02T00:00:00Z", "date_to": "2026-03-03T00:00:00Z"}
        rows = [
            json.loads(line)
            for part in manifest["files"]
            for line in gzip.decompress((directory / part["path"]).read_bytes()).splitlines()
        ]
        assert {r[id_field] for r in rows} == expected
