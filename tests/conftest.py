"""Test-wide set-up: an isolated AIRFLOW_HOME with its own SQLite metadata DB, and shared fixtures."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import pytest

# Airflow reads its configuration at import time: isolate it before anything imports airflow.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="auralytik-airflow-home-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", os.path.join(os.path.dirname(__file__), "..", "dags"))

pytest_plugins = ["tests.fixtures.sandbox", "tests.fixtures.s3"]


def sandbox_connection(sandbox: Any, **extra: Any) -> str:
    """The ``AIRFLOW_CONN_...`` JSON for a connection to a running sandbox (extras: timeouts, retries)."""
    import json

    return json.dumps({"conn_type": "auralytik", "host": sandbox.url, "password": sandbox.api_key, "extra": extra})


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated SQLite metadata DB in the test AIRFLOW_HOME (built once per session), for dag.test()."""
    from airflow.utils import db

    db.resetdb()
