"""A connection id that does not exist: one error naming it, its type, how to create it and the docs,
before anything else is logged or requested."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from airflow_provider_auralytik import DOCS_URL
from airflow_provider_auralytik._compat import AirflowNotFoundException
from airflow_provider_auralytik.hooks.auralytik import AuralytikHook
from airflow_provider_auralytik.operators.export import AuralytikExportConversationsOperator
from airflow_provider_auralytik.sensors.conversations import AuralytikConversationsCompletedSensor

UTC = timezone.utc
MISSING = "auralytik_nowhere"


@pytest.fixture(autouse=True)
def _no_such_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(f"AIRFLOW_CONN_{MISSING.upper()}", raising=False)


def _assert_explains(error: BaseException) -> None:
    message = str(error)
    assert f"Connection {MISSING!r} (type 'auralytik') is not defined" in message
    assert f"AIRFLOW_CONN_{MISSING.upper()}" in message
    assert "airflow connections add" in message
    assert f"{DOCS_URL}/connection.md" in message
    assert "\n" not in message


def test_hook_names_the_connection_its_type_and_the_docs(airflow_db: None) -> None:
    with pytest.raises(AirflowNotFoundException) as info:  # still the class callers catch
        _ = AuralytikHook(MISSING).settings
    _assert_explains(info.value)


@pytest.mark.asyncio
async def test_async_path_says_the_same(airflow_db: None) -> None:
    with pytest.raises(AirflowNotFoundException) as info:
        await AuralytikHook(MISSING)._asettings()
    _assert_explains(info.value)


def test_export_fails_before_any_exporting_line(
    airflow_db: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    export = AuralytikExportConversationsOperator(
        task_id="conversations",
        destination=str(tmp_path / "out"),
        date_from=datetime(2026, 3, 2, tzinfo=UTC),
        date_to=datetime(2026, 3, 3, tzinfo=UTC),
        auralytik_conn_id=MISSING,
    )
    with caplog.at_level(logging.INFO), pytest.raises(AirflowNotFoundException) as info:
        export.execute(context={})
    _assert_explains(info.value)
    assert "Exporting" not in caplog.text
    assert not (tmp_path / "out" / "_manifest.json").exists()


def test_sensor_fails_at_once(airflow_db: None) -> None:
    sensor = AuralytikConversationsCompletedSensor(
        task_id="wait",
        date_from=datetime(2026, 3, 2, tzinfo=UTC),
        date_to=datetime(2026, 3, 3, tzinfo=UTC),
        auralytik_conn_id=MISSING,
    )
    with pytest.raises(AirflowNotFoundException) as info:
        sensor.poke(context={})
    _assert_explains(info.value)
