"""Export operators against the sandbox over real HTTP, to local disk and to S3 (moto server)."""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_auralytik.conversations.listing import WindowListing
from airflow_provider_auralytik.conversations.pii import PiiLeakError
from airflow_provider_auralytik.conversations.window import EmptyWindowError
from airflow_provider_auralytik.exceptions import AuralytikUnavailableError
from airflow_provider_auralytik.operators.export import (
    AuralytikExportConversationsOperator,
    AuralytikExportMessagesOperator,
)
from airflow_provider_auralytik.sandbox.data import CONVERSATION_FIELDS
from tests.conftest import sandbox_connection

DAY = datetime(2026, 3, 2, tzinfo=timezone.utc)
NEXT = DAY + timedelta(days=1)


@pytest.fixture
def api(make_sandbox, monkeypatch):
    """A sandbox with 3 days of 120 conversations, and the default connection pointing at it."""

    def start(**config):
        sandbox = make_sandbox(**{"start": "2026-03-01", "days": 3, "per_day": 120, **config})
        monkeypatch.setenv(
            "AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox, backoff_base=0.01, max_retries=2)
        )
        return sandbox

    return start


def read_parts(directory: Path) -> list[dict]:
    manifest = json.loads((directory / "_manifest.json").read_text())
    rows = []
    for part in manifest["files"]:
        raw = (directory / part["path"]).read_bytes()
        text = gzip.decompress(raw) if part["path"].endswith(".gz") else raw
        rows += [json.loads(line) for line in text.decode().splitlines()]
    return rows


def conversations_op(tmp_path, **kwargs):
    defaults = {"task_id": "conversations", "destination": str(tmp_path), "date_from": DAY, "date_to": NEXT}
    return AuralytikExportConversationsOperator(**{**defaults, **kwargs})


def messages_op(tmp_path, **kwargs):
    defaults = {"task_id": "messages", "destination": str(tmp_path), "date_from": DAY, "date_to": NEXT}
    return AuralytikExportMessagesOperator(**{**defaults, **kwargs})


def test_conversations_export_is_exact_and_described_by_its_manifest(api, tmp_path):
    sandbox = api()
    summary = conversations_op(tmp_path).execute(context={})

    expected = sandbox.conversations_in(DAY, NEXT)
    rows = read_parts(tmp_path)
    assert sorted(r["id"] for r in rows) == sorted(expected)
    assert len(rows) == 120
    # Every field as the API returned it, unknown ones included.
    assert rows == [sandbox.get_conversation(r["id"]) | {"status": r["status"]} for r in rows]
    assert any(set(r) - set(CONVERSATION_FIELDS) for r in rows)

    manifest = json.loads((tmp_path / "_manifest.json").read_text())
    assert manifest["kind"] == "conversations"
    assert manifest["window"] == {"date_from": "2026-03-02T00:00:00Z", "date_to": "2026-03-03T00:00:00Z"}
    assert manifest["counts"] == {"conversations": 120, "conversations_pending": 0}
    assert manifest["pending"] == []
    assert manifest["api_host"] == sandbox.url
    assert [f["path"] for f in manifest["files"]] == [f"part-{manifest['run_token']}-00000.jsonl.gz"]
    assert manifest["files"][0]["rows"] == 120
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_manifest.json", manifest["files"][0]["path"]]
    assert summary == {
        "destination": f"file://{tmp_path}",
        "manifest": f"file://{tmp_path}/_manifest.json",
        "files": 1,
        "throttled_requests": 0,
        "rate_limit_wait_seconds": 0.0,
        "conversations": 120,
        "conversations_pending": 0,
    }
    assert len(json.dumps(summary)) < 500


def test_output_never_contains_the_api_key(api, tmp_path):
    sandbox = api()
    conversations_op(tmp_path / "c").execute(context={})
    messages_op(tmp_path / "m").execute(context={})
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert sandbox.api_key.encode() not in (gzip.decompress(data) if path.suffix == ".gz" else data)


def test_parts_roll_and_uncompressed_output(api, tmp_path):
    api()
    conversations_op(tmp_path, compression=None, max_records_per_part=50).execute(context={})
    names = sorted(p.name for p in tmp_path.iterdir())
    token = json.loads((tmp_path / "_manifest.json").read_text())["run_token"]
    assert names == ["_manifest.json", *(f"part-{token}-0000{i}.jsonl" for i in range(3))]
    assert [len((tmp_path / n).read_text().splitlines()) for n in names[1:]] == [50, 50, 20]


def test_rerun_replaces_the_earlier_output(api, tmp_path):
    api()
    conversations_op(tmp_path, max_records_per_part=25).execute(context={})
    assert len(list(tmp_path.glob("part-*"))) == 5
    (tmp_path / "notes.txt").write_text("not ours")
    conversations_op(tmp_path).execute(context={})
    token = json.loads((tmp_path / "_manifest.json").read_text())["run_token"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_manifest.json", "notes.txt", f"part-{token}-00000.jsonl.gz"]
    assert len(read_parts(tmp_path)) == 120


def test_failed_rerun_keeps_the_earlier_snapshot_and_a_rerun_recovers(api, tmp_path):
    sandbox = api()
    conversations_op(tmp_path).execute(context={})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    sandbox.config.rate_5xx = 1.0  # every request fails, beyond the retry budget
    with pytest.raises(Exception, match="still failing after 3 attempts"):
        messages_op(tmp_path).execute(context={})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # the earlier snapshot, untouched

    sandbox.config.rate_5xx = 0.0
    messages_op(tmp_path).execute(context={})
    assert json.loads((tmp_path / "_manifest.json").read_text())["kind"] == "messages"


def test_messages_export_lines_are_the_masked_messages_plus_conversation_id(api, tmp_path):
    sandbox = api()
    summary = messages_op(tmp_path).execute(context={})
    rows = read_parts(tmp_path)
    expected = [
        {**message, "conversationId": cid}
        for cid in sorted(
            sandbox.conversations_in(DAY, NEXT), key=lambda c: (sandbox.get_conversation(c)["createdAt"], c)
        )
        for message in sandbox.messages(cid, exclude_pii=True)
    ]
    assert rows == expected
    assert summary["messages"] == len(expected)
    assert summary["conversations"] == 120
    manifest = json.loads((tmp_path / "_manifest.json").read_text())
    assert manifest["pii_guard"] == {"mode": "mask", "findings": {"phone": 0, "email": 0}}
    assert manifest["skipped"] == []


def test_pii_that_slips_through_the_api_is_masked_and_counted(api, tmp_path):
    sandbox = api(pii_leak_rate=0.5)
    messages_op(tmp_path).execute(context={})
    rows = read_parts(tmp_path)
    raw = {m["id"]: m["content"] for cid in sandbox.conversations_in(DAY, NEXT) for m in sandbox.messages(cid)}
    leaked = [r for r in rows if r["content"] != raw[r["id"]] or "@" in raw[r["id"]]]
    assert leaked
    assert not any("@example" in r["content"] for r in rows)
    findings = json.loads((tmp_path / "_manifest.json").read_text())["pii_guard"]["findings"]
    assert findings["email"] > 0
    assert findings["phone"] > 0


def test_pii_guard_fail_fails_the_task_without_content(api, tmp_path, caplog):
    api(pii_leak_rate=1.0)
    with pytest.raises(PiiLeakError) as raised:
        messages_op(tmp_path, pii_guard="fail").execute(context={})
    assert "@" not in str(raised.value)
    assert not (tmp_path / "_manifest.json").exists()


def test_pii_guard_off_keeps_what_the_api_returned(api, tmp_path):
    api(pii_leak_rate=1.0)
    messages_op(tmp_path, pii_guard="off").execute(context={})
    assert any("@" in r["content"] for r in read_parts(tmp_path))
    assert json.loads((tmp_path / "_manifest.json").read_text())["pii_guard"]["findings"] == {
        "phone": 0,
        "email": 0,
    }


def test_conversation_deleted_between_listing_and_fetch_is_skipped_and_listed(api, tmp_path, monkeypatch):
    sandbox = api()
    victim = sorted(sandbox.conversations_in(DAY, NEXT))[7]
    original_alist = WindowListing.alist

    async def alist_then_delete(self, **kwargs):
        async for conversation in original_alist(self, **kwargs):
            if conversation["id"] == victim:
                sandbox.delete_conversation(victim)
            yield conversation

    monkeypatch.setattr(WindowListing, "alist", alist_then_delete)
    summary = messages_op(tmp_path).execute(context={})
    manifest = json.loads((tmp_path / "_manifest.json").read_text())
    assert manifest["skipped"] == [{"conversation_id": victim, "reason": "not found (404) after listing"}]
    assert summary["skipped_conversations"] == 1
    assert summary["conversations"] == 120
    assert victim not in {r["conversationId"] for r in read_parts(tmp_path)}


def test_transient_faults_are_retried_and_the_export_stays_exact(make_sandbox, monkeypatch, tmp_path):
    sandbox = make_sandbox(
        start="2026-03-01",
        days=3,
        per_day=120,
        rate_429=0.1,
        retry_after=0,
        rate_5xx=0.1,
        rate_drop=0.05,
        rate_malformed=0.05,
    )
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox, backoff_base=0.001, max_retries=8))
    messages_op(tmp_path, max_concurrency=8).execute(context={})
    faults = sandbox.stats.faults
    assert sum(faults.values()) > 10
    rows = read_parts(tmp_path)
    assert {r["conversationId"] for r in rows} == set(sandbox.conversations_in(DAY, NEXT))
    assert len(rows) == sum(len(sandbox.messages(c)) for c in sandbox.conversations_in(DAY, NEXT))


def test_logs_hold_counts_not_content_nor_key(api, tmp_path, caplog, capfd):
    sandbox = api(pii_leak_rate=0.3)
    with caplog.at_level(logging.DEBUG):
        messages_op(tmp_path).execute(context={})
    out, err = capfd.readouterr()
    text = caplog.text + out + err  # Airflow's task loggers print to stdout
    assert "Exporting Auralytik messages" in text
    assert sandbox.api_key not in text
    some = sandbox.messages(sandbox.conversations_in(DAY, NEXT)[0])
    assert not any(m["content"][:30] in text for m in some)
    assert "@example" not in text


@pytest.mark.parametrize(
    ("date_from", "date_to", "error", "match"),
    [
        (DAY, DAY, EmptyWindowError, "CronDataIntervalTimetable"),
        (NEXT, DAY, ValueError, "before date_from"),
        ("None", "None", ValueError, "no data interval"),
        ("2026-03-02T00:00:00", NEXT, ValueError, "no time zone"),
        ("yesterday", NEXT, ValueError, "ISO 8601"),
    ],
)
def test_bad_windows_fail_before_any_request(api, tmp_path, date_from, date_to, error, match):
    sandbox = api()
    with pytest.raises(error, match=match):
        conversations_op(tmp_path, date_from=date_from, date_to=date_to).execute(context={})
    assert sandbox.stats.requests == 0
    assert not (tmp_path / "_manifest.json").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"page_size": 0}, "page_size"),
        ({"compression": "zstd"}, "compression"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"pii_guard": "maybe"}, "pii_guard"),
    ],
)
def test_invalid_parameters_fail_at_dag_parse_time(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        messages_op(tmp_path, **kwargs)


def test_template_fields_cover_destination_window_and_filters():
    expected = {"destination", "destination_conn_id", "date_from", "date_to", "channel_id", "campaign_id", "status"}
    assert set(AuralytikExportConversationsOperator.template_fields) == expected
    assert set(AuralytikExportMessagesOperator.template_fields) == expected


def test_export_to_s3_through_an_airflow_connection(api, s3_server):
    sandbox = api()
    prefix = "exports/conversations/date=2026-03-02"
    summary = AuralytikExportConversationsOperator(
        task_id="to_s3",
        destination=s3_server.url(prefix),
        destination_conn_id=s3_server.conn_id,
        date_from=DAY,
        date_to=NEXT,
        max_records_per_part=100,
    ).execute(context={})
    manifest = json.loads(s3_server.get(f"{prefix}/_manifest.json"))
    assert s3_server.keys(prefix) == [
        f"{prefix}/_manifest.json",
        f"{prefix}/part-{manifest['run_token']}-00000.jsonl.gz",
        f"{prefix}/part-{manifest['run_token']}-00001.jsonl.gz",
    ]
    rows = [
        json.loads(line)
        for part in manifest["files"]
        for line in gzip.decompress(s3_server.get(f"{prefix}/{part['path']}")).splitlines()
    ]
    assert sorted(r["id"] for r in rows) == sorted(sandbox.conversations_in(DAY, NEXT))
    assert summary["destination"] == f"s3://{s3_server.bucket}/{prefix}"

    # A rerun with one part replaces the two.
    AuralytikExportConversationsOperator(
        task_id="to_s3",
        destination=s3_server.url(prefix),
        destination_conn_id=s3_server.conn_id,
        date_from=DAY,
        date_to=NEXT,
    ).execute(context={})
    token = json.loads(s3_server.get(f"{prefix}/_manifest.json"))["run_token"]
    assert s3_server.keys(prefix) == [f"{prefix}/_manifest.json", f"{prefix}/part-{token}-00000.jsonl.gz"]


def test_parquet_takes_its_own_codecs_and_jsonl_does_not(tmp_path):
    assert conversations_op(tmp_path, file_format="parquet", compression="zstd").compression == "zstd"
    with pytest.raises(ValueError, match="compression for jsonl"):
        conversations_op(tmp_path, compression="zstd")
    with pytest.raises(ValueError, match="file_format"):
        conversations_op(tmp_path, file_format="csv")


def test_the_export_base_has_two_steps_a_subclass_overrides(api, tmp_path):
    from airflow_provider_auralytik.operators.export import _AuralytikExportOperator

    # Without its two steps an export cannot even be built: a missing one is found at DAG-parse time.
    with pytest.raises(TypeError, match="_stream"):
        _AuralytikExportOperator(task_id="half", destination=str(tmp_path))  # type: ignore[abstract]  # what the test shows

    class IdsOnly(AuralytikExportConversationsOperator):
        """Writes the listed ids only: the conversations export's stream, its own writing step."""

        def _write(self, stream, listing, writer, progress):
            for conversation in stream:
                writer.write({"id": conversation["id"]})
                progress.add()
            return {"counts": {"conversations": writer.records_written}, "api_requests": listing.requests}

    sandbox = api()
    summary = IdsOnly(task_id="ids", destination=str(tmp_path), date_from=DAY, date_to=NEXT).execute(context={})
    rows = read_parts(tmp_path)
    assert sorted(r["id"] for r in rows) == sorted(sandbox.conversations_in(DAY, NEXT))
    assert all(set(r) == {"id"} for r in rows)
    assert summary["conversations"] == 120
    manifest = json.loads((tmp_path / "_manifest.json").read_text())
    assert manifest["kind"] == "conversations"
    assert manifest["api_requests"] == sandbox.stats.requests


# ---------------------------------------------------------------------------------------------
# Messages fetched early: those of the window's first page, while its pieces are listed
# ---------------------------------------------------------------------------------------------


def test_the_first_page_s_messages_are_fetched_early_and_once_and_a_deleted_one_is_left_out(api, tmp_path):
    # 120 a day: the window's first page (100, newest first) is full, so the window is cut; the sandbox
    # deletes the last conversation of that page as soon as it is served, before its early fetch.
    sandbox = api(delete_during_listing=1)
    summary = messages_op(tmp_path, max_concurrency=32).execute(context={})
    [deleted] = sandbox.deleted_ids
    kept = sandbox.conversations_in(DAY, NEXT)
    assert deleted not in kept
    assert len(kept) == 119
    rows = read_parts(tmp_path)
    assert {r["conversationId"] for r in rows} == set(kept)
    assert len(rows) == sum(len(sandbox.messages(c, exclude_pii=True)) for c in kept)
    manifest = json.loads((tmp_path / "_manifest.json").read_text())
    assert manifest["skipped"] == []  # never listed by its piece: not a conversation of this export
    assert summary["conversations"] == 119
    fetched = [path.split("/")[-2] for kind, path in sandbox.request_log if kind == "messages"]
    # Each listed conversation's messages once; the deleted one's too, though never listed by its piece:
    # it was on the window's first page, and fetched while the pieces were being listed.
    assert sorted(fetched) == sorted([*kept, deleted])
    assert manifest["api_requests"] == sandbox.stats.requests  # that early fetch counted too


class EarlyFetchHook:
    """The export's async side of the hook, recording which messages were asked for; ``fail``: those
    whose fetch fails (after its retries)."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.asked: list[str] = []
        self.fail = fail

    def use_async_pool(self) -> None:
        pass

    async def aget_messages(self, conversation_id: str) -> list[dict[str, str]]:
        self.asked.append(conversation_id)
        await asyncio.sleep(0.001)
        if conversation_id in self.fail:
            raise AuralytikUnavailableError(f"GET /conversations/{conversation_id}/messages still failing")
        return [{"id": f"{conversation_id}-m1"}]

    async def aclose(self) -> None:
        pass


class CutListing:
    """A window whose first page showed ``first_page``; its pieces then list ``listed`` a round trip later."""

    def __init__(self, first_page: list[dict[str, str]], listed: list[dict[str, str]], log: list[str]) -> None:
        self.first_page, self.listed, self.log = first_page, listed, log

    async def alist(self, *, ahead: int, on_cut: Any) -> Any:
        on_cut(self.first_page)
        await asyncio.sleep(0.02)
        self.log.append("<pieces listed>")
        for conversation in self.listed:
            yield conversation


def conversation(cid: str, status: str = "completed") -> dict[str, str]:
    return {"id": cid, "status": status}


def stream_with(op: AuralytikExportMessagesOperator, hook: EarlyFetchHook, listing: CutListing) -> list[Any]:
    op.__dict__["hook"] = hook  # the cached hook
    with op._stream(listing) as stream:  # type: ignore[arg-type]  # the listing's async side only
        return list(stream)


@pytest.mark.parametrize("include_pending", [True, False])
def test_early_fetches_follow_what_the_pieces_list(tmp_path, include_pending, caplog):
    first_page = [
        conversation("kept"),
        conversation("gone-failing"),  # deleted after the first page; its early fetch fails: nobody reads it
        conversation("was-active", "active"),  # completed by the time its piece lists it: fetched then
        conversation("reused"),  # its messages come from an earlier snapshot
    ]
    listed = [conversation("kept"), conversation("was-active"), conversation("reused"), conversation("later")]
    op = messages_op(tmp_path, include_pending=include_pending)
    op.reuse_messages = {"reused": [{"id": "reused-m0"}]}
    hook = EarlyFetchHook(fail=frozenset({"gone-failing"}))
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        got = stream_with(op, hook, CutListing(first_page, listed, hook.asked))
        gc.collect()  # an unread error would be logged when its task is collected
    assert got == [
        ("kept", None, [{"id": "kept-m1"}]),
        ("was-active", None, [{"id": "was-active-m1"}]),
        ("reused", None, [{"id": "reused-m0"}]),
        ("later", None, [{"id": "later-m1"}]),
    ]
    # Asked for before the pieces listed anything: the completed ones only. "was-active" is fetched once its
    # piece lists it completed, not before: fetched while it was active, its last messages could be missing.
    assert hook.asked[:3] == ["kept", "gone-failing", "<pieces listed>"]
    assert sorted(hook.asked[3:]) == ["later", "was-active"]  # each once
    assert op._early_not_taken_up() == 1  # "gone-failing": sent, never listed again
    assert not caplog.records


def test_a_failed_early_fetch_of_a_listed_conversation_fails_the_export_as_a_late_one_would(tmp_path):
    hook = EarlyFetchHook(fail=frozenset({"kept"}))
    with pytest.raises(AuralytikUnavailableError, match="kept"):
        stream_with(messages_op(tmp_path), hook, CutListing([conversation("kept")], [conversation("kept")], []))
    assert hook.asked == ["kept"]
