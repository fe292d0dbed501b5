"""Scale-out: window slices, mapped exports, the combined manifest; dag.test() of the sliced example DAG."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from airflow_provider_auralytik.operators.export import AuralytikExportMessagesOperator
from airflow_provider_auralytik.operators.slices import (
    AuralytikCombineSlicesOperator,
    combine_slice_manifests,
    plan_window_slices,
)
from airflow_provider_auralytik.output.destination import resolve_destination
from airflow_provider_auralytik.output.reader import iter_records
from tests.conftest import sandbox_connection
from tests.output.checks import local_files, local_snapshot

DAGS = Path(__file__).resolve().parents[2] / "dags"


def slice_manifest(date_from: str, date_to: str, **overrides):
    manifest = {
        "kind": "messages",
        "format": "jsonl",
        "compression": "gzip",
        "filters": {},
        "api_host": "http://api/v1",
        "window": {"date_from": date_from, "date_to": date_to},
        "started_at": "2026-03-03T01:00:00Z",
        "finished_at": "2026-03-03T01:05:00Z",
        "counts": {"conversations": 2, "messages": 10, "skipped_conversations": 0},
        "pii_guard": {"mode": "mask", "findings": {"phone": 1, "email": 0}},
        "skipped": [],
        "files": [{"path": "part-00000.jsonl.gz", "rows": 10, "bytes": 99, "sha256": "ab"}],
    }
    return manifest | overrides


def test_combined_manifest_sums_and_relocates_in_window_order():
    entries = [
        {"path": "slice-001", "manifest": slice_manifest("2026-03-02T12:00:00Z", "2026-03-03T00:00:00Z")},
        {"path": "slice-000", "manifest": slice_manifest("2026-03-02T00:00:00Z", "2026-03-02T12:00:00Z")},
    ]
    combined = combine_slice_manifests(entries)
    assert combined["window"] == {"date_from": "2026-03-02T00:00:00Z", "date_to": "2026-03-03T00:00:00Z"}
    assert combined["counts"] == {"conversations": 4, "messages": 20, "skipped_conversations": 0}
    assert combined["pii_guard"]["findings"] == {"phone": 2, "email": 0}
    assert [f["path"] for f in combined["files"]] == ["slice-000/part-00000.jsonl.gz", "slice-001/part-00000.jsonl.gz"]
    assert [s["path"] for s in combined["slices"]] == ["slice-000", "slice-001"]


@pytest.mark.parametrize(
    ("second", "match"),
    [
        (slice_manifest("2026-03-02T13:00:00Z", "2026-03-03T00:00:00Z"), "do not meet"),  # a gap
        (slice_manifest("2026-03-02T11:00:00Z", "2026-03-03T00:00:00Z"), "do not meet"),  # an overlap
        (slice_manifest("2026-03-02T12:00:00Z", "2026-03-03T00:00:00Z", kind="conversations"), "kind"),
        (slice_manifest("2026-03-02T12:00:00Z", "2026-03-03T00:00:00Z", filters={"channel_id": "x"}), "filters"),
    ],
)
def test_slices_that_do_not_tile_one_window_are_refused(second, match):
    entries = [
        {"path": "slice-000", "manifest": slice_manifest("2026-03-02T00:00:00Z", "2026-03-02T12:00:00Z")},
        {"path": "slice-001", "manifest": second},
    ]
    with pytest.raises(ValueError, match=match):
        combine_slice_manifests(entries)


def test_plan_keeps_the_previous_combined_snapshot(tmp_path):
    (tmp_path / "_manifest.json").write_text("{}")
    items = plan_window_slices("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z", 3, destination=str(tmp_path))
    assert (tmp_path / "_manifest.json").read_text() == "{}"  # valid until the next combine commits
    assert [i["destination"] for i in items] == [f"{tmp_path}/slice-{n:03d}" for n in range(3)]
    assert items[0]["date_from"] == "2026-03-02T00:00:00Z"
    assert items[-1]["date_to"] == "2026-03-03T00:00:00Z"


@pytest.mark.parametrize(("destination", "match"), [("", "destination must be"), ("out/day", "relative path")])
def test_plan_refuses_a_bad_destination(destination, match):
    with pytest.raises(ValueError, match=match):
        plan_window_slices("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z", 3, destination=destination)


def _slice_export(item, **kwargs):
    return AuralytikExportMessagesOperator(task_id="export_slice", max_records_per_part=100, **item, **kwargs)


def test_a_slice_rerun_keeps_the_combined_snapshot_valid_until_the_new_combine_commits(
    make_sandbox, monkeypatch, tmp_path
):
    sandbox = make_sandbox(start="2026-03-01", days=3, per_day=60)
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox, backoff_base=0.01, max_retries=1))
    day = tmp_path / "day"
    items = plan_window_slices("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z", 3, destination=str(day))
    summaries = [_slice_export(item).execute(context={}) for item in items]
    combine = AuralytikCombineSlicesOperator(task_id="combine", slices=summaries)
    combine.execute(context={})
    first = local_snapshot(day)
    assert first is not None
    before = local_files(day)
    expected = list(iter_records(resolve_destination(str(day), None)))

    # A slice rerun that fails (API down) and one that succeeds: the combined snapshot stays whole meanwhile.
    sandbox.config.rate_5xx = 1.0
    with pytest.raises(Exception, match="still failing"):
        _slice_export(items[1]).execute(context={})
    assert local_files(day) == before
    sandbox.config.rate_5xx = 0.0
    summaries[1] = _slice_export(items[1]).execute(context={})
    assert local_snapshot(day) == first
    assert list(iter_records(resolve_destination(str(day), None))) == expected
    slice_manifest = local_snapshot(day / "slice-001")
    assert slice_manifest is not None
    assert slice_manifest["run_token"] != first["slices"][1]["run_token"]

    # The new combine commits, then removes what only the earlier combined manifest listed.
    AuralytikCombineSlicesOperator(task_id="combine", slices=summaries).execute(context={})
    second = local_snapshot(day)
    assert second is not None
    assert second["slices"][1]["run_token"] == slice_manifest["run_token"]
    assert list(iter_records(resolve_destination(str(day), None))) == expected
    for n in range(3):
        listed = {f["path"] for f in second["files"] if f["path"].startswith(f"slice-{n:03d}/")}
        on_disk = {f"slice-{n:03d}/{p.name}" for p in (day / f"slice-{n:03d}").glob("part-*")}
        assert on_disk == listed


def test_combine_refuses_a_slice_without_manifest(tmp_path):
    (tmp_path / "slice-000").mkdir()
    operator = AuralytikCombineSlicesOperator(
        task_id="combine", slices=[{"destination": f"file://{tmp_path}/slice-000"}]
    )
    with pytest.raises(FileNotFoundError, match="did not finish"):
        operator.execute(context={})


def test_sliced_dag_exports_every_message_once_and_emits_the_asset_event(
    airflow_db, make_sandbox, monkeypatch, tmp_path
):
    from airflow_provider_auralytik._compat import DagBag

    sandbox = make_sandbox(start="2026-03-01", days=3, per_day=200)
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox))
    monkeypatch.setenv("AIRFLOW_VAR_AURALYTIK_EXPORT_ROOT", str(tmp_path))
    # Slices of an earlier run with more slices must not survive the combine.
    (tmp_path / "messages-sliced" / "date=2026-03-02" / "slice-007").mkdir(parents=True)

    bag = DagBag(dag_folder=str(DAGS / "auralytik_sliced_export.py"))
    assert bag.import_errors == {}
    run = bag.get_dag("auralytik_sliced_export").test(logical_date=datetime(2026, 3, 3, tzinfo=timezone.utc))
    assert run.state == "success"

    day = tmp_path / "messages-sliced" / "date=2026-03-02"
    assert sorted(p.name for p in day.iterdir()) == ["_manifest.json", *[f"slice-{n:03d}" for n in range(4)]]
    manifest = json.loads((day / "_manifest.json").read_text())
    assert manifest["window"] == {"date_from": "2026-03-02T00:00:00Z", "date_to": "2026-03-03T00:00:00Z"}
    assert len(manifest["slices"]) == 4

    expected = sandbox.conversations_in("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z")
    rows = list(iter_records(resolve_destination(str(day), None)))
    per_conversation = Counter(r["conversationId"] for r in rows)
    assert set(per_conversation) == set(expected)
    assert per_conversation == {cid: len(sandbox.messages(cid)) for cid in expected}
    assert len({r["id"] for r in rows}) == len(rows) == manifest["counts"]["messages"]

    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.query(AssetEvent).all()
        uris = {event.asset.uri for event in events}
        extras = [event.extra for event in events if event.asset.uri == f"file://{day}"]
    assert f"file://{day}" in uris
    assert extras[-1]["messages"] == manifest["counts"]["messages"]
    assert {k: extras[-1][k] for k in ("date_from", "date_to")} == manifest["window"]
