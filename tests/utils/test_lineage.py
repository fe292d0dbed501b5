"""OpenLineage dataset names (utils/lineage.py): the API's endpoints and a destination, by OpenLineage's naming."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_auralytik._compat import ObjectStoragePath
from airflow_provider_auralytik.output.destination import resolve_destination
from airflow_provider_auralytik.utils.lineage import api_dataset_names, storage_dataset_name


@pytest.mark.parametrize(
    ("api_host", "kind", "expected"),
    [
        ("https://api.auralytik.com/v1", "conversations", ("https://api.auralytik.com", ["/v1/conversations"])),
        (
            "https://api.auralytik.com/v1/",
            "messages",
            ("https://api.auralytik.com", ["/v1/conversations", "/v1/conversations/{id}/messages"]),
        ),
        ("http://127.0.0.1:8080", "conversations", ("http://127.0.0.1:8080", ["/conversations"])),
    ],
)
def test_the_api_is_a_namespace_per_host_and_a_dataset_per_endpoint(api_host, kind, expected):
    assert api_dataset_names(api_host, kind) == expected


def test_a_local_destination_is_its_absolute_path_in_the_file_namespace(tmp_path: Path) -> None:
    assert storage_dataset_name(resolve_destination(str(tmp_path), None)) == ("file", str(tmp_path))


def test_an_s3_destination_is_its_key_in_the_bucket_namespace() -> None:
    path = ObjectStoragePath("s3://lake/auralytik/date=2026-03-02", conn_id="aws_never_looked_up")
    assert storage_dataset_name(path) == ("s3://lake", "auralytik/date=2026-03-02")


@dataclass
class _Fs:
    account_name: str | None


@dataclass
class _Path:
    """What the naming reads of an ``ObjectStoragePath``: protocol, path, and (Azure) the filesystem's account."""

    protocol: str
    path: str
    fs: Any = None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (_Path("gs", "lake/a/b"), ("gs://lake", "a/b")),
        (_Path("s3a", "lake/a"), ("s3://lake", "a")),
        (_Path("abfs", "container/a", _Fs("acct")), ("abfss://container@acct.dfs.core.windows.net", "a")),
        (_Path("abfss", "container/a", _Fs(None)), ("abfss://container", "a")),
        (_Path("memory", "/bucket/a"), ("memory://bucket", "a")),
    ],
)
def test_other_stores_follow_openlineage_conventions(path, expected):
    assert storage_dataset_name(path) == expected
