"""Exports say what is not final: the manifest's "pending" list and count, include_pending, XCom and asset extra."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_auralytik.operators.export import (
    AuralytikExportConversationsOperator,
    AuralytikExportMessagesOperator,
)
from airflow_provider_auralytik.output.reader import iter_records, read_manifest
from tests.conftest import sandbox_connection

DAY = ("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z")


class Added:
    """What an operator added for one alias."""

    def __init__(self) -> None:
        self.added: list[tuple[Any, dict[str, Any]]] = []

    def add(self, asset: Any, extra: dict[str, Any]) -> None:
        self.added.append((asset, extra))


class OutletEvents:
    """``context["outlet_events"]``: records what an operator adds for each alias (by name: Airflow 3.0's
    ``AssetAlias`` is not hashable)."""

    def __init__(self) -> None:
        self.by_name: dict[str, Added] = {}

    def __getitem__(self, alias: Any) -> Added:
        return self.by_name.setdefault(alias.name, Added())


def task_context(events: OutletEvents) -> Any:
    """The part of a task's context an export uses."""
    return {"outlet_events": events}


@pytest.fixture
def held(make_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A sandbox whose day 2026-03-02 has 3 conversations still active (the last three created)."""
    sandbox = make_sandbox(start="2026-03-01", days=3, per_day=60)
    sandbox.hold(*sandbox.conversations_in(*DAY)[:3])
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox, backoff_base=0.01))
    return sandbox


def local(path: Path) -> Any:
    from airflow_provider_auralytik._compat import ObjectStoragePath

    return ObjectStoragePath(f"file://{path}")


def export(cls: type, tmp_path: Path, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    op = cls(task_id="export", destination=str(tmp_path), date_from=DAY[0], date_to=DAY[1], **kwargs)
    summary = op.execute(task_context(OutletEvents()))
    manifest = read_manifest(local(tmp_path))
    assert manifest is not None
    return summary, manifest, list(iter_records(local(tmp_path)))


def test_the_conversations_manifest_lists_exactly_the_conversations_not_completed(held, tmp_path):
    summary, manifest, records = export(AuralytikExportConversationsOperator, tmp_path)

    late = set(held.held_ids)
    assert {p["conversation_id"] for p in manifest["pending"]} == late
    assert {p["status"] for p in manifest["pending"]} == {"active"}
    assert manifest["counts"] == {"conversations": 60, "conversations_pending": 3}
    assert summary["conversations_pending"] == 3
    assert {r["id"] for r in records if r["status"] != "completed"} == late  # written as they are now


@pytest.mark.parametrize("include_pending", [True, False])
def test_the_messages_export_lists_pending_and_writes_their_messages_only_if_asked(held, tmp_path, include_pending):
    requests_before = held.stats.by_kind["messages"]
    summary, manifest, records = export(AuralytikExportMessagesOperator, tmp_path, include_pending=include_pending)

    late = set(held.held_ids)
    everyone = set(held.conversations_in(*DAY))
    written = {r["conversationId"] for r in records}
    assert {p["conversation_id"] for p in manifest["pending"]} == late
    assert manifest["counts"]["conversations"] == 60
    assert manifest["counts"]["conversations_pending"] == 3
    assert manifest["include_pending"] is include_pending
    assert summary["conversations_pending"] == 3
    if include_pending:
        assert written == everyone
        for cid in late:  # so far as they go: what the API serves while they are active
            assert [r["id"] for r in records if r["conversationId"] == cid] == [
                m["id"] for m in held.messages(cid, exclude_pii=True)
            ]
    else:
        assert written == everyone - late
        # Not fetched at all: one request per completed conversation only.
        assert held.stats.by_kind["messages"] - requests_before == 57


def test_the_asset_event_extra_carries_the_pending_count(held, tmp_path):
    from airflow_provider_auralytik._compat import AssetAlias

    op = AuralytikExportMessagesOperator(
        task_id="export", destination=str(tmp_path), date_from=DAY[0], date_to=DAY[1], asset_alias="auralytik"
    )
    events = OutletEvents()
    op.execute(task_context(events))

    [(asset, extra)] = events[AssetAlias(name="auralytik")].added
    assert asset.uri == f"file://{tmp_path}"
    assert extra["conversations_pending"] == 3
    assert extra["date_from"] == DAY[0]


def test_nothing_pending_gives_an_empty_list_and_a_zero_count(make_sandbox, monkeypatch, tmp_path):
    sandbox = make_sandbox(start="2026-03-01", days=3, per_day=20)
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox))
    _, manifest, _ = export(AuralytikExportMessagesOperator, tmp_path)
    assert manifest["pending"] == []
    assert manifest["counts"]["conversations_pending"] == 0


@pytest.mark.parametrize("value", ["no", 1, None])
def test_include_pending_must_be_a_bool(value):
    with pytest.raises(ValueError, match="include_pending must be True or False"):
        AuralytikExportMessagesOperator(task_id="x", destination="/tmp/x", include_pending=value)


def test_a_sliced_exports_combined_manifest_lists_every_slices_pending():
    from airflow_provider_auralytik.operators.slices import combine_slice_manifests

    def piece(date_from: str, date_to: str, pending: list[str]) -> dict[str, Any]:
        return {
            "kind": "messages",
            "format": "jsonl",
            "compression": "gzip",
            "filters": {},
            "api_host": "http://x/v1",
            "window": {"date_from": date_from, "date_to": date_to},
            "started_at": date_from,
            "finished_at": date_to,
            "counts": {"conversations": 5, "conversations_pending": len(pending)},
            "pending": [{"conversation_id": cid, "status": "active"} for cid in pending],
            "include_pending": False,
            "files": [],
        }

    combined = combine_slice_manifests(
        [
            {"path": "slice-001", "manifest": piece("2026-03-02T12:00:00Z", "2026-03-03T00:00:00Z", ["c"])},
            {"path": "slice-000", "manifest": piece("2026-03-02T00:00:00Z", "2026-03-02T12:00:00Z", ["a", "b"])},
        ]
    )
    assert [p["conversation_id"] for p in combined["pending"]] == ["a", "b", "c"]
    assert combined["counts"]["conversations_pending"] == 3
    assert combined["include_pending"] is False
