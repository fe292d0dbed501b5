"""Parquet output: PartWriter(file_format="parquet") parts, reruns, failures, reading back, and the operators."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_auralytik.operators.export import (
    AuralytikExportConversationsOperator,
    AuralytikExportMessagesOperator,
)
from airflow_provider_auralytik.output import parts as parts_mod
from airflow_provider_auralytik.output.destination import resolve_destination
from airflow_provider_auralytik.output.reader import iter_records, read_manifest
from airflow_provider_auralytik.output.schemas import (
    CONVERSATIONS,
    MESSAGES,
    format_timestamp,
)
from airflow_provider_auralytik.output.writer import PartWriter
from tests.conftest import sandbox_connection
from tests.output.test_writer import T1, T2, Store, pname

MANIFEST = "_manifest.json"
FIXED_CONVERSATION_FIELDS = [c.name for c in CONVERSATIONS.columns]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return Store("local", str(tmp_path / "out"), None, tmp_path)
    s3 = request.getfixturevalue("s3_server")
    return Store("s3", s3.url(f"parquet/{uuid.uuid4().hex}/day=2024-01-15"), s3.conn_id, tmp_path, s3)


def conversation(i: int, day: str = "2024-01-15", **extra: Any) -> dict[str, Any]:
    """An API conversation object (fixed fields in the API's order, then any unknown ones)."""
    started_us = int(datetime.fromisoformat(f"{day}T00:00:00+00:00").timestamp()) * 10**6 + 37 * i * 10**6
    return {
        "id": f"conv_{i:06d}",
        "channelId": ("web", "voice", "whatsapp")[i % 3],
        "campaignId": None if i % 4 == 0 else f"camp_{i % 5}",
        "status": "completed" if i % 7 else "active",
        "participantCount": 2 + i % 3,
        "messageCount": 1 + i % 40,
        "startedAt": format_timestamp(started_us),
        "endedAt": None if i % 7 == 0 else format_timestamp(started_us + 754_321),
        "createdAt": format_timestamp(started_us),
        **extra,
    }


def conversations(n: int, start: int = 0, day: str = "2024-01-15") -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + n):
        extra: dict[str, Any] = {}
        if i % 10 == 3:
            extra["language"] = "en"
        elif i % 10 == 6:
            extra["metadata"] = {"source": "api", "sentiment": None, "scores": [0.5, 1, None]}
        out.append(conversation(i, day, **extra))
    return out


def message(i: int) -> dict[str, Any]:
    return {
        "id": f"msg_{i // 10:06d}_{i % 10:03d}",
        "role": "agent" if i % 2 else "customer",
        "content": f"Hello #{i}, how can I help? Grüße 🙂",
        "timestamp": format_timestamp(1_705_276_800_000_000 + i * 1_000_000),
        "conversationId": f"conv_{i // 10:06d}",
    }


def run(store: Store, recs: list[dict[str, Any]], token: str = T1, **kwargs: Any) -> dict[str, Any]:
    kwargs = {"file_format": "parquet", "schema": CONVERSATIONS, **kwargs}
    with PartWriter(store.dest, run_token=token, **kwargs) as w:
        for r in recs:
            w.write(r)
        return w.commit({"kind": "test"})


def local_run(path: Path, recs: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    return run(Store("local", str(path), None, path.parent), recs, **kwargs)


def parquet_file(store: Store, name: str) -> Any:
    return pq.ParquetFile(pa.BufferReader(store.read(name)))


# --------------------------------------------------------------------------------------------------- writing


def test_parquet_parts_roll_and_match_the_manifest(store: Store) -> None:
    recs = conversations(25)
    with PartWriter(
        store.dest, file_format="parquet", schema=CONVERSATIONS, max_records_per_part=10, row_group_size=4, run_token=T1
    ) as w:
        for r in recs:
            w.write(r)
        assert MANIFEST not in store.names()
        manifest = w.commit({"window": {"from": "a", "to": "b"}})
        assert w.records_written == 25
        assert w.bytes_written == sum(f["bytes"] for f in manifest["files"])

    names = [pname(T1, i, ".parquet") for i in range(3)]
    assert store.names() == {*names, MANIFEST}
    assert [f["path"] for f in manifest["files"]] == names
    assert [f["rows"] for f in manifest["files"]] == [10, 10, 5]
    assert manifest["format"] == "parquet"
    assert manifest["compression"] == "gzip"
    assert manifest["window"] == {"from": "a", "to": "b"}
    assert manifest["schema"] == CONVERSATIONS.describe()
    assert manifest["schema"]["columns"][-1] == {"name": "extra", "type": "string"}
    assert json.loads(store.read(MANIFEST)) == manifest == read_manifest(store.dest)

    for f in manifest["files"]:
        data = store.read(f["path"])
        assert len(data) == f["bytes"]
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        assert data[:4] == data[-4:] == b"PAR1"
        meta = parquet_file(store, f["path"]).metadata
        assert meta.num_rows == f["rows"]
        # One row group per `row_group_size` records: that is all a part buffers.
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == (
            [4, 4, 2] if f["rows"] == 10 else [4, 1]
        )
        assert meta.row_group(0).column(0).compression == "GZIP"
        assert "parquet-cpp-arrow" in meta.created_by  # a version, no clock

    table = pa.concat_tables([parquet_file(store, n).read() for n in names])
    assert table.schema.equals(CONVERSATIONS.arrow_schema(), check_metadata=True)
    assert table.column("id").to_pylist() == [r["id"] for r in recs]
    assert table.column("participantCount").to_pylist() == [r["participantCount"] for r in recs]
    assert table.column("startedAt").to_pylist()[1] == datetime(2024, 1, 15, 0, 0, 37, tzinfo=timezone.utc)
    metadata = '{"metadata":{"scores":[0.5,1,null],"sentiment":null,"source":"api"}}'
    assert table.column("extra").to_pylist()[:7] == [None, None, None, '{"language":"en"}', None, None, metadata]
    assert list(iter_records(store.dest)) == recs


@pytest.mark.parametrize(
    ("compression", "codec"), [("gzip", "GZIP"), (None, "UNCOMPRESSED"), ("snappy", "SNAPPY"), ("zstd", "ZSTD")]
)
def test_compression_selects_the_parquet_codec(tmp_path: Path, compression: str | None, codec: str) -> None:
    manifest = local_run(tmp_path / "c", conversations(30), compression=compression)
    assert manifest["compression"] == compression
    assert [f["path"] for f in manifest["files"]] == [pname(T1, 0, ".parquet")]  # no .gz suffix for parquet
    meta = pq.ParquetFile(tmp_path / "c" / pname(T1, 0, ".parquet")).metadata
    assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {codec}
    assert list(iter_records(resolve_destination(str(tmp_path / "c"), None))) == conversations(30)


def test_exact_multiple_of_cap_gives_no_empty_trailing_part(store: Store) -> None:
    manifest = run(store, conversations(20), max_records_per_part=10)
    assert [f["rows"] for f in manifest["files"]] == [10, 10]
    assert store.names() == {pname(T1, 0, ".parquet"), pname(T1, 1, ".parquet"), MANIFEST}


def test_empty_run_writes_no_parts_and_an_empty_manifest(store: Store) -> None:
    run(store, conversations(12), max_records_per_part=5)
    manifest = run(store, [], T2)
    assert manifest["files"] == []
    assert manifest["format"] == "parquet"
    assert manifest["schema"] == CONVERSATIONS.describe()
    assert store.names() == {MANIFEST}
    assert list(iter_records(store.dest)) == []


@pytest.mark.parametrize(("first", "second"), [("jsonl", "parquet"), ("parquet", "jsonl")])
def test_rerun_in_the_other_format_replaces_every_part(store: Store, first: str, second: str) -> None:
    run(store, conversations(30), file_format=first, max_records_per_part=10)
    assert len(store.names()) == 4
    store.put("README.txt", b"keep me")
    manifest = run(store, conversations(5, start=100), T2, file_format=second)
    part = pname(T2, 0, ".parquet" if second == "parquet" else ".jsonl.gz")
    assert store.names() == {part, MANIFEST, "README.txt"}
    assert manifest["format"] == second
    assert ("schema" in manifest) is (second == "parquet")
    assert list(iter_records(store.dest)) == conversations(5, start=100)


def test_stale_parts_of_either_suffix_and_version_0_1_names_are_collected(tmp_path: Path) -> None:
    names = ["part-00000.parquet", "part-00001.jsonl", "part-00002.jsonl.gz", pname(T1, 0, ".parquet")]
    for name in [*names, "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    manifest = local_run(tmp_path, conversations(2), token=T2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MANIFEST, "notes.txt", manifest["files"][0]["path"]])


class Boom(Exception):
    pass


def test_failure_leaves_the_committed_snapshot_and_no_parts_of_its_own(store: Store) -> None:
    run(store, conversations(30), file_format="jsonl", max_records_per_part=10)  # an earlier, committed run
    store.put("README.txt", b"keep me")
    before = {name: store.read(name) for name in store.names()}
    seen: list[set[str]] = []

    def failing_run() -> None:
        with PartWriter(
            store.dest,
            file_format="parquet",
            schema=CONVERSATIONS,
            max_records_per_part=10,
            row_group_size=3,
            run_token=T2,
        ) as w:
            seen.append(store.names())
            for r in conversations(25):
                w.write(r)
            seen.append(store.names())
            raise Boom("api down")

    with pytest.raises(Boom, match="api down"):
        failing_run()
    assert seen[0] == set(before)  # nothing deleted on __enter__
    assert {pname(T2, 0, ".parquet"), pname(T2, 1, ".parquet")} <= seen[1]
    assert {name: store.read(name) for name in store.names()} == before
    assert list(iter_records(store.dest)) == conversations(30)


def test_failure_while_closing_a_parquet_part_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = parts_mod.ParquetPart.close
    calls: list[str] = []

    def flaky_close(self: Any) -> Any:
        calls.append(self.name)
        if len(calls) == 2:
            raise OSError("upload failed")
        return original(self)

    monkeypatch.setattr(parts_mod.ParquetPart, "close", flaky_close)
    with pytest.raises(OSError, match="upload failed"):
        local_run(tmp_path / "c", conversations(25), max_records_per_part=10)
    assert calls == [pname(T1, 0, ".parquet"), pname(T1, 1, ".parquet")]
    assert list((tmp_path / "c").iterdir()) == []


def test_a_record_that_is_not_a_dict_fails_the_run_cleanly(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="must be a dict"):
        local_run(tmp_path / "c", [*conversations(3), ["not", "a", "dict"]])  # type: ignore[list-item]  # wrong on purpose
    assert list((tmp_path / "c").iterdir()) == []


def test_a_value_json_cannot_encode_fails_like_json_lines_and_leaves_the_buffer_intact() -> None:
    buffer = CONVERSATIONS.buffer()
    buffer.append(conversation(1))
    with pytest.raises(TypeError, match="not JSON serializable"):
        buffer.append(conversation(2) | {"when": datetime(2024, 1, 15, tzinfo=timezone.utc)})
    buffer.append(conversation(3))
    batch = buffer.to_batch()
    assert batch.num_rows == len(buffer) == 2
    assert batch.column("id").to_pylist() == ["conv_000001", "conv_000003"]


def test_reruns_are_byte_identical_and_the_same_on_local_and_s3(tmp_path: Path, s3_server: Any) -> None:
    recs = conversations(50)
    local = Store("local", str(tmp_path / "a"), None, tmp_path)
    remote = Store("s3", s3_server.url(f"same/{uuid.uuid4().hex}"), s3_server.conn_id, tmp_path, s3_server)
    first = run(local, recs, max_records_per_part=20, row_group_size=7)
    stored = [local.read(f["path"]) for f in first["files"]]
    second = run(local, recs, T2, max_records_per_part=20, row_group_size=7)
    assert [f["path"] for f in second["files"]] == [
        pname(T2, 0, ".parquet"),
        pname(T2, 1, ".parquet"),
        pname(T2, 2, ".parquet"),
    ]
    assert [local.read(f["path"]) for f in second["files"]] == stored
    assert run(remote, recs, max_records_per_part=20, row_group_size=7)["files"] == first["files"]


def test_iter_records_verifies_parquet_parts_before_yielding(tmp_path: Path) -> None:
    dest = tmp_path / "c"
    local_run(dest, conversations(5))
    local_run(tmp_path / "other", conversations(3, start=50))
    name = pname(T1, 0, ".parquet")
    (dest / name).write_bytes((tmp_path / "other" / name).read_bytes())
    got: list[dict[str, Any]] = []
    with pytest.raises(ValueError, match="sha256"):
        got.extend(iter_records(resolve_destination(str(dest), None)))
    assert got == []  # checked before any record of the part is yielded
    assert list(iter_records(resolve_destination(str(dest), None), verify=False)) == conversations(3, start=50)


# ------------------------------------------------------------------------------------------ arguments, extras


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"file_format": "csv"}, "file_format"),
        ({"file_format": "parquet"}, "needs schema"),
        ({"file_format": "parquet", "schema": "conversations"}, "needs schema"),
        ({"file_format": "parquet", "schema": CONVERSATIONS, "compression": "brotli"}, "compression"),
        (
            {"file_format": "parquet", "schema": CONVERSATIONS, "row_group_size": 0},
            "row_group_size must be a positive integer",
        ),
        (
            {"file_format": "parquet", "schema": CONVERSATIONS, "row_group_size": 1.5},
            "row_group_size must be a positive integer",
        ),
        ({"compression": "snappy"}, "compression for jsonl"),
        ({"compression": "zstd", "schema": CONVERSATIONS}, "compression for jsonl"),
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PartWriter(resolve_destination(str(tmp_path), None), **kwargs)


def test_missing_pyarrow_names_the_extra_and_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = resolve_destination(str(tmp_path / "c"), None)
    local_run(tmp_path / "c", conversations(3), file_format="jsonl")
    before = sorted(p.name for p in (tmp_path / "c").iterdir())
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r'pip install "airflow-provider-auralytik\[parquet\]"'):
        PartWriter(dest, file_format="parquet", schema=CONVERSATIONS)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == before  # earlier output intact
    assert list(iter_records(dest)) == conversations(3)  # JSON Lines needs no pyarrow


def test_an_export_operator_refuses_parquet_without_pyarrow_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(
        ImportError, match=r'needs pyarrow, which is not installed: pip install "airflow-provider-auralytik\[parquet\]"'
    ):
        AuralytikExportMessagesOperator(task_id="m", destination=str(tmp_path), file_format="parquet")


def test_importing_the_writer_schemas_and_operators_does_not_import_pyarrow() -> None:
    code = (
        "import sys\n"
        "import airflow_provider_auralytik.utils.writer, airflow_provider_auralytik.output.schemas\n"
        "import airflow_provider_auralytik.output.writer, airflow_provider_auralytik.output.reader\n"
        "import airflow_provider_auralytik.operators.export\n"
        "airflow_provider_auralytik.operators.export.AuralytikExportConversationsOperator(\n"
        "    task_id='c', destination='/tmp/x', file_format='parquet')\n"
        "from airflow_provider_auralytik.output.schemas import CONVERSATIONS\n"
        "CONVERSATIONS.describe(); b = CONVERSATIONS.buffer(); b.append({'id': 'x', 'createdAt': 'now'})\n"
        "assert 'pyarrow' not in sys.modules, 'pyarrow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2], timeout=120)


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_memory_stays_bounded_for_300k_records(tmp_path: Path) -> None:
    """One row group (plus the store's buffer) in memory, whatever the number of records: RSS stays flat."""
    dest = resolve_destination(str(tmp_path / "big"), None)
    template = message(0)
    samples: list[tuple[int, int]] = []

    def messages() -> Iterator[dict[str, Any]]:
        for i in range(300_000):
            if i % 5_000 == 0:
                samples.append((_rss(), pa.total_allocated_bytes()))
            yield {**template, "id": f"msg_{i:07d}", "timestamp": format_timestamp(1_705_276_800_000_000 + i * 10**6)}

    with PartWriter(dest, file_format="parquet", schema=MESSAGES, max_records_per_part=100_000) as w:
        for i, rec in enumerate(messages()):
            w.write(rec)
            if i == 20_000:  # past two row groups: pyarrow, the allocators and the buffers are warm
                base_rss, base_arrow = _rss(), pa.total_allocated_bytes()
        manifest = w.commit({})
    samples.append((_rss(), pa.total_allocated_bytes()))
    assert [f["rows"] for f in manifest["files"]] == [100_000] * 3
    rss_growth = max(rss for rss, _ in samples[5:]) - base_rss
    arrow_growth = max(arrow for _, arrow in samples[5:]) - base_arrow
    assert rss_growth < 60 * 2**20, f"RSS grew {rss_growth / 2**20:.1f} MiB while writing 300k records"
    assert arrow_growth < 32 * 2**20, f"Arrow memory grew {arrow_growth / 2**20:.1f} MiB"
    assert pq.ParquetFile(tmp_path / "big" / manifest["files"][2]["path"]).metadata.num_row_groups == 10


# ----------------------------------------------------------------------------------------------- operators

DAY = datetime(2026, 3, 2, tzinfo=timezone.utc)
NEXT = DAY + timedelta(days=1)


@pytest.fixture
def api(make_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    sandbox = make_sandbox(start="2026-03-01", days=3, per_day=120)
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox, backoff_base=0.01, max_retries=2))
    return sandbox


def test_conversations_operator_writes_parquet(api: Any, tmp_path: Path) -> None:
    summary = AuralytikExportConversationsOperator(
        task_id="c", destination=str(tmp_path), date_from=DAY, date_to=NEXT, file_format="parquet"
    ).execute(context={})
    manifest = json.loads((tmp_path / "_manifest.json").read_text())
    part = manifest["files"][0]["path"]
    assert part == f"part-{manifest['run_token']}-00000.parquet"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_manifest.json", part]
    assert (manifest["format"], manifest["compression"]) == ("parquet", "gzip")  # Parquet's gzip by default
    assert manifest["schema"] == CONVERSATIONS.describe()
    assert manifest["counts"]["conversations"] == 120 == summary["conversations"]

    table = pq.read_table(tmp_path / part)
    assert table.schema.equals(CONVERSATIONS.arrow_schema(), check_metadata=True)
    assert table.column("extra").null_count < 120  # the sandbox sends some unknown fields
    rows = list(iter_records(resolve_destination(str(tmp_path), None)))
    assert sorted(r["id"] for r in rows) == sorted(api.conversations_in(DAY, NEXT))
    assert rows == [api.get_conversation(r["id"]) | {"status": r["status"]} for r in rows]


def test_messages_operator_writes_parquet(api: Any, tmp_path: Path) -> None:
    AuralytikExportMessagesOperator(
        task_id="m",
        destination=str(tmp_path),
        date_from=DAY,
        date_to=NEXT,
        file_format="parquet",
        compression=None,
        max_records_per_part=1000,
    ).execute(context={})
    manifest = json.loads((tmp_path / "_manifest.json").read_text())
    assert manifest["schema"] == MESSAGES.describe()
    assert manifest["compression"] is None
    assert all(f["path"].endswith(".parquet") for f in manifest["files"])
    expected = [
        {**m, "conversationId": cid}
        for cid in sorted(api.conversations_in(DAY, NEXT), key=lambda c: (api.get_conversation(c)["createdAt"], c))
        for m in api.messages(cid, exclude_pii=True)
    ]
    assert len(manifest["files"]) == math.ceil(len(expected) / 1000)
    assert list(iter_records(resolve_destination(str(tmp_path), None))) == expected
    first = tmp_path / manifest["files"][0]["path"]
    assert pq.read_table(first).column("extra").null_count == 1000  # no unknown fields


def test_operator_rerun_switches_format_on_s3(api: Any, s3_server: Any) -> None:
    prefix = f"exports/{uuid.uuid4().hex}/date=2026-03-02"

    def export(**kwargs: Any) -> None:
        AuralytikExportConversationsOperator(
            task_id="s3",
            destination=s3_server.url(prefix),
            destination_conn_id=s3_server.conn_id,
            date_from=DAY,
            date_to=NEXT,
            max_records_per_part=50,
            **kwargs,
        ).execute(context={})

    export()
    assert len(s3_server.keys(prefix)) == 4  # 3 .jsonl.gz parts + manifest
    export(file_format="parquet")
    token = json.loads(s3_server.get(f"{prefix}/_manifest.json"))["run_token"]
    parts = [f"{prefix}/part-{token}-0000{i}.parquet" for i in range(3)]
    assert s3_server.keys(prefix) == [f"{prefix}/_manifest.json", *parts]
    dest = resolve_destination(s3_server.url(prefix), s3_server.conn_id)
    assert sorted(r["id"] for r in iter_records(dest)) == sorted(api.conversations_in(DAY, NEXT))


def test_operator_rejects_an_unknown_file_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file_format must be one of"):
        AuralytikExportMessagesOperator(task_id="m", destination=str(tmp_path), file_format="csv")
