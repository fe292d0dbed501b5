"""The manifest (output/manifest.py): its name, the header every manifest starts with, how it is stored and read."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest

from airflow_provider_auralytik import __version__
from airflow_provider_auralytik.output.manifest import (
    MANIFEST_NAME,
    MANIFEST_VERSION,
    manifest_bytes,
    manifest_header,
    manifest_run_token,
    parse_manifest,
)

WINDOW = {"date_from": "2026-03-02T00:00:00Z", "date_to": "2026-03-03T00:00:00Z"}


def test_the_header_has_the_documented_keys_in_order_and_never_the_key():
    header = manifest_header(
        kind="messages",
        api_host="https://api.auralytik.com/v1",
        window=WINDOW,
        filters={"channel_id": "ch_whatsapp"},
        started_at=datetime(2026, 3, 3, 2, 0, 1, tzinfo=timezone(timedelta(hours=1))),
        finished_at="2026-03-03T01:05:00Z",
    )
    assert header == {
        "manifest_version": MANIFEST_VERSION,
        "kind": "messages",
        "provider": "airflow-provider-auralytik",
        "provider_version": __version__,
        "api_host": "https://api.auralytik.com/v1",
        "window": WINDOW,
        "filters": {"channel_id": "ch_whatsapp"},
        "started_at": "2026-03-03T01:00:01Z",  # an aware datetime: in UTC with a Z
        "finished_at": "2026-03-03T01:05:00Z",  # a string (a combined manifest's): as given
    }
    assert [*header][:3] == ["manifest_version", "kind", "provider"]


def test_the_name_is_the_one_readers_look_for():
    assert MANIFEST_NAME == "_manifest.json"


def test_stored_as_pretty_utf8_json_with_a_final_newline_and_iso_dates():
    data = manifest_bytes({"kind": "conversations", "note": "Ünïcode", "day": date(2026, 3, 2)})
    assert data.endswith(b"}\n")
    assert "Ünïcode".encode() in data  # not \\u-escaped
    assert b'\n  "kind": "conversations"' in data  # indented
    assert json.loads(data) == {"kind": "conversations", "note": "Ünïcode", "day": "2026-03-02"}
    with pytest.raises(TypeError, match="not JSON serializable"):
        manifest_bytes({"bad": object()})


def test_parsed_back_as_stored_and_a_non_object_names_where_it_was_read():
    manifest = {"kind": "messages", "files": [{"path": "part-x.jsonl.gz", "rows": 3}]}
    assert parse_manifest(manifest_bytes(manifest), "s3://lake/x/_manifest.json") == manifest
    with pytest.raises(ValueError, match=r"s3://lake/x/_manifest\.json is not a JSON object"):
        parse_manifest(b"[1, 2]\n", "s3://lake/x/_manifest.json")


@pytest.mark.parametrize(
    ("manifest", "token"),
    [
        (None, ""),  # nothing committed
        ({"kind": "messages"}, ""),  # version 0.1: no token, older than every run
        ({"run_token": None}, ""),
        ({"run_token": "20261202T020000.123456Z-1a2b3c4d"}, "20261202T020000.123456Z-1a2b3c4d"),
    ],
)
def test_the_run_token_of_a_committed_manifest(manifest, token):
    assert manifest_run_token(manifest) == token
