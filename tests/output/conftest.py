"""The ``store`` fixture: one destination on local disk, one on S3 (moto server through an Airflow connection)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.output.test_writer import Store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return Store("local", str(tmp_path / "out"), None, tmp_path)
    s3 = request.getfixturevalue("s3_server")
    url = s3.url(f"exports/{uuid.uuid4().hex}/day=2024-01-15")
    return Store("s3", url, s3.conn_id, tmp_path, s3)
