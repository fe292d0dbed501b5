"""Which window does a run export? One test per way of starting a run (docs/recipes.md's table).

The window defaults to the run's data interval, so each row checks the interval Airflow itself gives
the run, through the function Airflow uses for that path (on the test's SQLite metadata DB), and
``dag.test()`` rows run the export end to end on the sandbox. The example DAG
(``CronDataIntervalTimetable("0 0 * * *")``, start 2026-01-01) is the DAG under test. No row reads
the wall clock: the trigger time (``run_after``) is passed in where Airflow would take "now".
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pendulum
import pytest

from tests.conftest import sandbox_connection

UTC = timezone.utc
DAG_ID = "auralytik_daily_export"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> pendulum.DateTime:
    return pendulum.datetime(year, month, day, hour, minute, tz="UTC")


def interval(run: Any) -> tuple[datetime, datetime]:
    return run.data_interval_start, run.data_interval_end


@pytest.fixture(scope="module")
def serialized_dag(airflow_db: None) -> Any:
    """The example DAG as the scheduler and the API server see it (serialized into the metadata DB)."""
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "reserialize"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    from airflow.models.serialized_dag import SerializedDagModel

    dag = SerializedDagModel.get_dag(DAG_ID)
    assert dag is not None
    return dag


DAG_FILE = """
from datetime import datetime, timezone

from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_auralytik.operators.export import AuralytikExportConversationsOperator

OUT = "{OUT}"

# A daily interval DAG with one export on its defaults (no retries: a failure ends the run).
with DAG(
    dag_id="auralytik_window_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
) as daily:
    AuralytikExportConversationsOperator(
        task_id="conversations", destination=OUT + "/daily/date={{ data_interval_start | ds }}"
    )

# No schedule, no data interval needed: the window comes from params.
with DAG(dag_id="auralytik_window_explicit", schedule=None, params={"day": "2026-11-26"}) as explicit:
    AuralytikExportConversationsOperator(
        task_id="conversations",
        destination=OUT + "/explicit/date={{ params.day }}",
        date_from="{{ params.day }}T00:00:00Z",
        date_to="{{ macros.ds_add(params.day, 1) }}T00:00:00Z",
    )
"""


@pytest.fixture(scope="module")
def window_dags(tmp_path_factory: pytest.TempPathFactory, airflow_db: None) -> Iterator[Any]:
    """The DAGs of ``DAG_FILE`` in a DAG bundle of their own (``dag.test()`` wants them parsed)."""
    folder = tmp_path_factory.mktemp("auralytik_window_dags")
    out = tmp_path_factory.mktemp("auralytik_window_out")
    (folder / "auralytik_window_dags.py").write_text(DAG_FILE.replace("{OUT}", str(out)))
    bundles = [
        {
            "name": "auralytik-window-tests",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(folder)},
        }
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
        spec = importlib.util.spec_from_file_location("auralytik_window_dags", folder / "auralytik_window_dags.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.OUT = out  # type: ignore[attr-defined]  # a DAG module loaded at runtime
        yield module


# -- how Airflow sets the data interval ---------------------------------------------------------------


def test_cli_trigger_with_a_logical_date_covers_the_day_before_the_trigger_time(serialized_dag: Any) -> None:
    """``airflow dags trigger --logical-date D``: the interval ignores D; it ends at the last midnight
    before the moment of the trigger (Airflow calls ``infer_manual_data_interval(run_after=now)``)."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.types import DagRunTriggeredByType

    triggered_at = utc(2026, 12, 2, 9, 30)  # what the CLI takes from the clock
    run = trigger_dag(
        DAG_ID,
        triggered_by=DagRunTriggeredByType.CLI,
        logical_date=utc(2026, 11, 29),
        run_after=triggered_at,
        run_id="cli_logical_date",
    )
    assert run is not None
    assert run.logical_date == utc(2026, 11, 29)
    assert interval(run) == (utc(2026, 12, 1), utc(2026, 12, 2))


def test_cli_trigger_without_a_logical_date_has_no_data_interval(serialized_dag: Any) -> None:
    """``airflow dags trigger <dag>`` (Airflow 3's default): no logical date, no data interval."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.types import DagRunTriggeredByType

    run = trigger_dag(
        DAG_ID, triggered_by=DagRunTriggeredByType.CLI, run_after=utc(2026, 12, 2, 9, 30), run_id="cli_no_date"
    )
    assert run is not None
    assert run.logical_date is None
    assert interval(run) == (None, None)


def test_rest_api_with_a_logical_date_covers_the_day_before_it(serialized_dag: Any) -> None:
    """``POST /api/v2/dags/{dag_id}/dagRuns`` with ``logical_date`` D: [D - 1 day, D)."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody

    body = TriggerDAGRunPostBody(logical_date=utc(2026, 11, 27), run_after=utc(2026, 12, 2, 9, 30))
    params = body.validate_context(serialized_dag)  # what the route hands to create_dagrun
    assert params["logical_date"] == utc(2026, 11, 27)
    data_interval = params["data_interval"]
    assert (data_interval.start, data_interval.end) == (utc(2026, 11, 26), utc(2026, 11, 27))


def test_rest_api_with_an_explicit_data_interval_covers_exactly_it(serialized_dag: Any) -> None:
    """The exact way to re-export a past day from outside: give the interval itself."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody

    body = TriggerDAGRunPostBody(
        logical_date=utc(2026, 11, 27),
        data_interval_start=utc(2026, 11, 27),
        data_interval_end=utc(2026, 11, 28),
    )
    data_interval = body.validate_context(serialized_dag)["data_interval"]
    assert (data_interval.start, data_interval.end) == (utc(2026, 11, 27), utc(2026, 11, 28))


def test_backfill_covers_the_day_of_each_logical_date(serialized_dag: Any) -> None:
    """``airflow backfill create --from-date 2026-11-28 --to-date 2026-11-28``: [11-28, 11-29);
    a month, ``--from-date 2026-10-01 --to-date 2026-10-31``: 31 runs, 10-01 … 10-31 exactly."""
    import inspect

    from airflow.models import DagRun
    from airflow.models.backfill import _create_backfill
    from airflow.utils.session import create_session

    def backfill(from_date: datetime, to_date: datetime) -> list[tuple[datetime, datetime]]:
        kwargs: dict[str, Any] = {
            "dag_id": DAG_ID,
            "from_date": from_date,
            "to_date": to_date,
            "max_active_runs": 1,
            "reverse": False,
            "dag_run_conf": None,
        }
        if "triggering_user_name" in inspect.signature(_create_backfill).parameters:  # Airflow 3.1+
            kwargs["triggering_user_name"] = "test"
        created = _create_backfill(**kwargs)
        assert created is not None
        with create_session() as session:
            runs = session.query(DagRun).filter(DagRun.backfill_id == created.id).all()
            # Finish the backfill, so the next one may start (one active backfill per DAG).
            for run in runs:
                run.state = "success"
            from airflow.models.backfill import Backfill

            finished = session.get(Backfill, created.id)
            assert finished is not None
            finished.completed_at = utc(2026, 12, 2)
            return sorted((r.data_interval_start, r.data_interval_end) for r in runs)  # type: ignore[misc]  # both set

    assert backfill(utc(2026, 11, 28), utc(2026, 11, 28)) == [(utc(2026, 11, 28), utc(2026, 11, 29))]
    month = backfill(utc(2026, 10, 1), utc(2026, 10, 31))
    assert month == [(utc(2026, 10, d), utc(2026, 10, d) + timedelta(days=1)) for d in range(1, 32)]


def test_scheduler_run_covers_the_day_it_is_named_after(serialized_dag: Any) -> None:
    """The scheduler names a run after the start of its interval: logical date 12-01 covers
    [12-01, 12-02) and starts after it ends (``run_after`` 12-02)."""
    from airflow.timetables.base import DataInterval, TimeRestriction

    restriction = TimeRestriction(earliest=utc(2026, 1, 1), latest=None, catchup=True)
    info = serialized_dag.timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(utc(2026, 11, 30), utc(2026, 12, 1)), restriction=restriction
    )
    assert info.logical_date == utc(2026, 12, 1)
    assert (info.data_interval.start, info.data_interval.end) == (utc(2026, 12, 1), utc(2026, 12, 2))
    assert info.run_after == utc(2026, 12, 2)


# -- what the tasks do with it -----------------------------------------------------------------------


def test_dag_test_with_a_logical_date_exports_the_day_before_it(
    window_dags: Any, make_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dag.test(logical_date=D)`` / ``airflow dags test <dag> D``: [D - 1 day, D)."""
    sandbox = make_sandbox(start="2026-11-25", days=4, per_day=20)
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox))
    run = window_dags.daily.test(logical_date=utc(2026, 11, 28))
    assert run.state == "success"
    assert interval(run) == (utc(2026, 11, 27), utc(2026, 11, 28))
    manifest = json.loads((window_dags.OUT / "daily" / "date=2026-11-27" / "_manifest.json").read_text())
    assert manifest["window"] == {"date_from": "2026-11-27T00:00:00Z", "date_to": "2026-11-28T00:00:00Z"}
    assert manifest["counts"]["conversations"] == 20


def test_a_run_without_a_data_interval_fails_with_one_clear_error(
    window_dags: Any,
    make_sandbox: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """No logical date (``dag.test(logical_date=None)``, like ``airflow dags trigger <dag>``): the
    first task says to pass a logical date or date_from/date_to, before any request."""
    sandbox = make_sandbox(start="2026-11-25", days=4, per_day=20)
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox))
    # The destination's own template needs the interval too: its Jinja error is the one explained.
    before = sorted((window_dags.OUT / "daily").glob("*/_manifest.json"))
    with caplog.at_level(logging.INFO):
        run = window_dags.daily.test(logical_date=None)
    assert run.state == "failed"
    text = caplog.text + "".join(capfd.readouterr())
    assert "This DAG run has no data interval" in text
    assert "pass date_from and date_to" in text
    # Airflow's templater logs Jinja's error itself; the task then fails with ours.
    assert text.rindex("This DAG run has no data interval") > text.rfind("UndefinedError")
    assert sandbox.stats.requests == 0
    assert sorted((window_dags.OUT / "daily").glob("*/_manifest.json")) == before


def test_explicit_dates_work_without_a_data_interval(
    window_dags: Any, make_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``date_from``/``date_to`` given (templated from params here) need no data interval at all."""
    sandbox = make_sandbox(start="2026-11-25", days=4, per_day=20)
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox))
    run = window_dags.explicit.test(logical_date=None)
    assert run.state == "success"
    manifest = json.loads((window_dags.OUT / "explicit" / "date=2026-11-26" / "_manifest.json").read_text())
    assert manifest["window"] == {"date_from": "2026-11-26T00:00:00Z", "date_to": "2026-11-27T00:00:00Z"}
