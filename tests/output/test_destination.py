"""Checking and opening a destination: every bad one refused in one line that names the parameter and the fix."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_auralytik.output import destination as destination_mod
from airflow_provider_auralytik.output.destination import (
    DestinationError,
    check_destination,
    resolve_destination,
)


def conn_id_of(path: Any) -> str | None:
    """The connection of an ObjectStoragePath (Airflow 3.0 keeps it only in storage_options)."""
    return getattr(path, "conn_id", None) or path.storage_options.get("conn_id")


def test_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    home = resolve_destination("~/exports/day 1", None)
    assert (tmp_path / "exports" / "day 1").is_dir()
    assert home.protocol == "file"
    assert home.path == str(tmp_path / "exports" / "day 1")
    assert conn_id_of(home) is None

    absolute = resolve_destination(f"  {tmp_path / 'abs'}\n", None)
    assert absolute.path == str(tmp_path / "abs")
    assert (tmp_path / "abs").is_dir()

    url = resolve_destination(f"file://{tmp_path / 'url'}", None)
    assert url.protocol == "file"
    assert (tmp_path / "url").is_dir()


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("", "destination must be an absolute local path or an object-storage URL"),
        ("   ", "destination must be an absolute local path or an object-storage URL"),
        ("\n\t", "destination must be an absolute local path or an object-storage URL"),
        (None, "destination must be an absolute local path or an object-storage URL"),
        ("exports/day", "relative path: a worker's current directory is no place for data"),
        ("./out", "relative path"),
        ("file://relative/dir", "absolute file:// URL"),
        ("s3://", "names no bucket: write s3://<bucket>/<prefix>"),
        ("s3:///prefix/only", "names no bucket"),
        ("gs://", "names no bucket"),
    ],
)
def test_bad_destinations_are_refused_in_one_line(bad: Any, match: str, tmp_path: Path) -> None:
    with pytest.raises(DestinationError, match=match) as info:
        check_destination(bad, None)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)  # what callers caught before


def test_relative_destination_is_refused_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DestinationError, match="relative"):
        resolve_destination("exports", None)
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.parametrize(
    ("url", "extra"),
    [("s3://bucket/x", "amazon"), ("gs://bucket/x", "google"), ("abfs://container/x", "azure")],
)
def test_a_store_without_its_provider_names_the_extra(url: str, extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        if name.startswith(("airflow.providers.amazon", "airflow.providers.google", "airflow.providers.microsoft")):
            return None
        return real(name, *args)

    monkeypatch.setattr(destination_mod.importlib.util, "find_spec", find_spec)
    with pytest.raises(DestinationError, match=rf'pip install "airflow-provider-auralytik\[{extra}\]"') as info:
        check_destination(url, None)
    assert "s3fs" not in str(info.value).split("(")[0]  # names the extra, not a bare library
    assert f"[{extra}] extra" in str(info.value)


def test_an_unknown_destination_conn_id_is_an_error_naming_it(s3_server: Any, tmp_path: Path) -> None:
    with pytest.raises(DestinationError, match="destination_conn_id 'no_such_aws' is not a defined Airflow connection"):
        check_destination(s3_server.url("x"), "no_such_aws")
    with pytest.raises(DestinationError, match="destination_conn_id 'typo' is not a defined"):
        check_destination(str(tmp_path), "typo")  # unused for a local path, but a typo all the same
    assert check_destination(s3_server.url("x"), s3_server.conn_id).conn_id == s3_server.conn_id
    assert check_destination(str(tmp_path), s3_server.conn_id).conn_id is None  # defined: accepted, unused


def test_s3_uses_the_connection(s3_server: Any) -> None:
    dest = resolve_destination(s3_server.url("resolve/x"), s3_server.conn_id)
    assert dest.protocol == "s3"
    assert conn_id_of(dest) == s3_server.conn_id
    assert dest.fs.s3.meta.endpoint_url == s3_server.endpoint_url  # moto, via the Airflow connection
    dest.joinpath("probe.txt").write_bytes(b"hi")
    assert s3_server.get("resolve/x/probe.txt") == b"hi"
