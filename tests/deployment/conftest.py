"""The ``deployment`` fixture: one real Airflow deployment (see ``cluster.py``) shared by the session's
deployment tests (each test takes its own days of data, so they do not see each other's output).

Deselected by default (``-m "not deployment"`` in pyproject's pytest options); run with::

    .venv/bin/python -m pytest -m deployment tests/deployment --durations=0
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deployment.cluster import Deployment
from tests.deployment.lake import Lake

_STAGES: list[str] = []


@pytest.fixture(scope="session")
def deployment() -> Iterator[Deployment]:
    """PostgreSQL, Redis, the api-server, scheduler, dag-processor, triggerer, two Celery workers, the
    sandbox and moto S3, all on 127.0.0.1; stopped and removed at teardown, whatever happened."""
    pytest.importorskip("airflow.providers.celery", reason="the deployment suite runs on the newest Airflow lock")
    started = time.monotonic()
    running = Deployment.up(log=_STAGES.append)
    try:
        yield running
    finally:
        stop = time.monotonic()
        running.down()
        _STAGES.append(f"deployment: down ({time.monotonic() - stop:.1f} s; up for {stop - started:.0f} s)")


@pytest.fixture
def lake(deployment: Deployment) -> Lake:
    from tests.deployment.cluster import BUCKET

    return Lake(deployment.s3_client(), BUCKET)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Each stage's time (start-up, shut-down) at the end of the run, beside ``--durations``."""
    if _STAGES:
        terminalreporter.section("deployment stages")
        for line in _STAGES:
            terminalreporter.write_line(line)
