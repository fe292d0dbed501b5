"""PartWriter on local disk and on S3 (moto server through an Airflow connection)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_auralytik.output import parts as parts_mod
from airflow_provider_auralytik.output import snapshot as snapshot_mod
from airflow_provider_auralytik.output.destination import resolve_destination
from airflow_provider_auralytik.output.parts import PartInfo
from airflow_provider_auralytik.output.reader import iter_records, read_manifest
from airflow_provider_auralytik.output.writer import PartWriter

MANIFEST = "_manifest.json"
#: Run tokens in start order, so tests know every part name in advance.
T1, T2, T3 = (f"20260315T0{h}0000.000000Z-0000000{h}" for h in (1, 2, 3))


def pname(token: str, index: int, suffix: str = ".jsonl.gz") -> str:
    return f"part-{token}-{index:05d}{suffix}"


class Store:
    """A destination plus backend-independent views of what is really stored there."""

    def __init__(self, kind: str, url: str, conn_id: str | None, tmp_path: Path, s3: Any = None) -> None:
        self.kind = kind
        self.url = url
        self.conn_id = conn_id
        self._tmp_path = tmp_path
        self._s3 = s3
        self.dest = resolve_destination(url, conn_id)

    @property
    def _prefix(self) -> str:
        return self.url.split("/", 3)[3].rstrip("/") + "/"

    def names(self) -> set[str]:
        """Everything under the destination, as paths relative to it."""
        if self.kind == "local":
            root = Path(self.url)
            return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
        return {key[len(self._prefix) :] for key in self._s3.keys(self._prefix)}

    def read(self, name: str) -> bytes:
        if self.kind == "local":
            return (Path(self.url) / name).read_bytes()
        data: bytes = self._s3.get(self._prefix + name)
        return data

    def put(self, name: str, data: bytes) -> None:
        """Write behind the writer's back (not through s3fs, so its listing cache does not see it)."""
        if self.kind == "local":
            path = Path(self.url) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            self._s3.put(self._prefix + name, data)


def records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"c{i:06d}", "n": i, "status": "completed", "tags": ["a", "b"]} for i in range(start, start + n)]


def run(store: Store, recs: list[dict[str, Any]], token: str = T1, **kwargs: Any) -> dict[str, Any]:
    with PartWriter(store.dest, run_token=token, **kwargs) as w:
        for r in recs:
            w.write(r)
        return w.commit({"kind": "test"})


def decode(data: bytes, gz: bool) -> list[dict[str, Any]]:
    text = (gzip.decompress(data) if gz else data).decode("utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("compression", "suffix"), [("gzip", ".jsonl.gz"), (None, ".jsonl")])
def test_parts_roll_at_cap_and_match_manifest(store: Store, compression: str | None, suffix: str) -> None:
    recs = records(25)
    with PartWriter(store.dest, compression=compression, max_records_per_part=10, run_token=T1) as w:
        for r in recs:
            w.write(r)
        assert MANIFEST not in store.names()  # not before commit
        manifest = w.commit({"window": {"from": "a", "to": "b"}})
        assert w.records_written == 25
        assert w.files == [PartInfo(**f) for f in manifest["files"]]
        assert w.bytes_written == sum(f["bytes"] for f in manifest["files"])

    names = [pname(T1, i, suffix) for i in range(3)]
    assert store.names() == {*names, MANIFEST}
    assert [f["path"] for f in manifest["files"]] == names
    assert [f["rows"] for f in manifest["files"]] == [10, 10, 5]
    assert manifest["format"] == "jsonl"
    assert manifest["compression"] == compression
    assert manifest["window"] == {"from": "a", "to": "b"}
    assert manifest["run_token"] == T1

    got: list[dict[str, Any]] = []
    for f in manifest["files"]:
        data = store.read(f["path"])
        assert len(data) == f["bytes"]
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        if compression == "gzip":
            assert data[:2] == b"\x1f\x8b"
        part = decode(data, gz=compression == "gzip")
        assert len(part) == f["rows"]
        got.extend(part)
    assert got == recs

    stored = json.loads(store.read(MANIFEST))
    assert stored == manifest == read_manifest(store.dest)
    assert store.read(MANIFEST).startswith(b'{\n  "')  # pretty-printed
    assert list(iter_records(store.dest)) == recs


def test_exact_multiple_of_cap_gives_no_empty_trailing_part(store: Store) -> None:
    manifest = run(store, records(20), max_records_per_part=10)
    assert [f["rows"] for f in manifest["files"]] == [10, 10]
    assert store.names() == {pname(T1, 0), pname(T1, 1), MANIFEST}


def test_manifest_is_the_commit_point_and_cleanup_comes_after(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    first = run(store, records(30), max_records_per_part=10)  # an earlier snapshot with 3 parts
    seen: list[tuple[set[str], bytes]] = []
    original = snapshot_mod.commit_manifest

    def spy(destination: Any, manifest: dict[str, Any], run_token: str) -> dict[str, Any]:
        seen.append((store.names(), store.read(MANIFEST)))
        return original(destination, manifest, run_token)

    monkeypatch.setattr("airflow_provider_auralytik.output.writer.commit_manifest", spy)
    run(store, records(5), T2, max_records_per_part=10)
    # When the manifest is written: the earlier snapshot complete and untouched, this run's part complete.
    names, manifest_then = seen[0]
    assert names == {*(f["path"] for f in first["files"]), pname(T2, 0), MANIFEST}
    assert json.loads(manifest_then)["run_token"] == T1
    assert store.names() == {pname(T2, 0), MANIFEST}


class Boom(Exception):
    pass


def failing_run(store: Store, n: int, seen: list[set[str]] | None = None, **kwargs: Any) -> None:
    """Write ``n`` records, note what is stored (before and after writing), then fail inside the block."""
    with PartWriter(store.dest, **kwargs) as w:
        if seen is not None:
            seen.append(store.names())
        for r in records(n):
            w.write(r)
        if seen is not None:
            seen.append(store.names())
        raise Boom("api down")


def test_exception_leaves_no_manifest_and_no_parts_of_this_run(store: Store) -> None:
    store.put("README.txt", b"keep me")
    seen: list[set[str]] = []
    with pytest.raises(Boom, match="api down"):
        failing_run(store, 25, seen, max_records_per_part=10, run_token=T1)
    assert {pname(T1, 0), pname(T1, 1)} <= seen[-1]  # closed parts were stored
    assert store.names() == {"README.txt"}
    with pytest.raises(FileNotFoundError, match=r"_manifest\.json"):
        list(iter_records(store.dest))


def test_failed_rerun_leaves_the_committed_snapshot_intact(store: Store) -> None:
    first = run(store, records(25), max_records_per_part=10)
    before = {name: store.read(name) for name in store.names()}
    seen: list[set[str]] = []
    with pytest.raises(Boom):
        failing_run(store, 25, seen, max_records_per_part=10, run_token=T2)
    assert seen[0] == set(before)  # nothing deleted on __enter__
    assert {pname(T2, 0), pname(T2, 1)} <= seen[-1]
    assert {name: store.read(name) for name in store.names()} == before  # byte for byte
    assert read_manifest(store.dest) == first
    assert list(iter_records(store.dest)) == records(25)


def test_no_commit_means_no_output(store: Store) -> None:
    with PartWriter(store.dest, max_records_per_part=2) as w:
        for r in records(5):
            w.write(r)
    assert store.names() == set()


def test_rerun_replaces_and_keeps_unrelated_files(store: Store) -> None:
    first = run(store, records(30), max_records_per_part=10)
    assert len(first["files"]) == 3
    store.put("README.txt", b"keep me")
    store.put("sub/part-00009.jsonl.gz", b"nested, not ours")
    store.put("part-00007.jsonl", b"version 0.1 leftover written behind s3fs's back")
    store.put(pname(T1, 7), b"a killed run's stray")

    second = run(store, records(4, start=100), T2, max_records_per_part=10)
    assert [f["path"] for f in second["files"]] == [pname(T2, 0)]
    assert store.names() == {pname(T2, 0), MANIFEST, "README.txt", "sub/part-00009.jsonl.gz"}
    assert store.read("README.txt") == b"keep me"
    assert list(iter_records(store.dest)) == records(4, start=100)


def test_rerun_with_other_compression_replaces(store: Store) -> None:
    run(store, records(3), compression="gzip")
    manifest = run(store, records(3), T2, compression=None)
    assert store.names() == {pname(T2, 0, ".jsonl"), MANIFEST}
    assert manifest["compression"] is None
    assert list(iter_records(store.dest)) == records(3)


def test_empty_run_writes_no_parts_and_an_empty_manifest(store: Store) -> None:
    run(store, records(12), max_records_per_part=5)
    with PartWriter(store.dest, run_token=T2) as w:
        manifest = w.commit({"counts": {"conversations": 0}})
        assert w.records_written == 0
        assert w.bytes_written == 0
    assert manifest["files"] == []
    assert store.names() == {MANIFEST}
    assert read_manifest(store.dest) == manifest
    assert list(iter_records(store.dest)) == []


def test_reruns_are_byte_identical(store: Store) -> None:
    recs = records(50)
    first = run(store, recs, max_records_per_part=20)
    bytes_first = [store.read(f["path"]) for f in first["files"]]
    second = run(store, recs, T2, max_records_per_part=20)

    def strip(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in f.items() if k != "path"} for f in files]

    assert strip(second["files"]) == strip(first["files"])
    assert [store.read(f["path"]) for f in second["files"]] == bytes_first


@pytest.mark.parametrize("compression", ["gzip", None])
def test_a_batch_writes_the_bytes_and_parts_its_records_write_one_by_one(tmp_path: Path, compression: str | None):
    # Batches of plain records (one block), of records with floats, lists or a lone surrogate (one by one),
    # batches that end a part exactly or run past its end, an empty batch: the same parts, byte for byte.
    plain: list[dict[str, Any]] = [
        {"id": f"m{i}", "role": "agent", "content": f"hé {i}", "n": i, "ok": i % 2 == 0, "x": None} for i in range(30)
    ]
    odd: list[dict[str, Any]] = [{"id": "f", "x": 0.5}, {"id": "l", "tags": ["a"]}, {"id": "s", "content": "x\ud800y"}]
    batches = [plain[:4], [], plain[4:10], odd, plain[10:11], plain[11:23], plain[23:], plain[:9]]
    flat = [record for batch in batches for record in batch]

    def stored(token: str, batched: bool) -> tuple[list[dict[str, Any]], list[bytes]]:
        dest = resolve_destination(str(tmp_path / token), None)
        with PartWriter(dest, run_token=token, compression=compression, max_records_per_part=10) as w:
            for batch in batches:
                if batched:
                    w.write_all(batch)
                else:
                    for record in batch:
                        w.write(record)
            assert w.records_written == len(flat)
            manifest = w.commit({"kind": "test"})
        files = [{k: v for k, v in f.items() if k != "path"} for f in manifest["files"]]
        return files, [(tmp_path / token / f["path"]).read_bytes() for f in manifest["files"]]

    one_by_one, batched = stored(T1, batched=False), stored(T2, batched=True)
    assert [f["rows"] for f in batched[0]] == [10, 10, 10, 10, 2]
    assert batched == one_by_one
    assert list(iter_records(resolve_destination(str(tmp_path / T2), None))) == flat


def test_a_batch_outside_the_with_block_is_refused(store: Store) -> None:
    writer = PartWriter(store.dest, run_token=T1)
    with pytest.raises(RuntimeError, match=r"write_all\(\) only inside the `with` block"):
        writer.write_all([{"id": "x"}])


def test_unicode_round_trip(store: Store) -> None:
    recs: list[dict[str, Any]] = [
        {"id": "u1", "content": "Grüße aus Köln — ça va? 你好, 世界 🙂👍🏽", "emoji_key_🙂": "✓"},
        {"id": "u2", "content": 'line\nbreak\ttab "quoted" back\\slash \u2028 \u0000'},
        {"id": "u3", "content": "lone surrogate \ud800 from a lenient JSON source"},
        {"id": "u4", "nested": {"list": [1, 2.5, None, True, {"k": "v"}]}, "empty": ""},
    ]
    manifest = run(store, recs, compression=None)
    raw = store.read(manifest["files"][0]["path"])
    assert "Grüße aus Köln".encode() in raw  # real UTF-8, not \\u escapes
    assert "你好".encode() in raw
    assert b"\\ud800" in raw  # the only record that needs escaping
    raw.decode("utf-8")  # valid UTF-8 throughout
    assert raw.count(b"\n") == len(recs)
    assert list(iter_records(store.dest)) == recs


def test_writer_is_single_use_and_needs_the_with_block(store: Store) -> None:
    w = PartWriter(store.dest, run_token=T1)
    with pytest.raises(RuntimeError, match="inside the `with` block"):
        w.write({"a": 1})
    with w:
        w.write({"a": 1})
        w.commit({})
        with pytest.raises(RuntimeError, match="committed"):
            w.write({"a": 2})
        with pytest.raises(RuntimeError, match="committed"):
            w.commit({})
    with pytest.raises(RuntimeError, match="single-use"), w:
        pass
    assert list(iter_records(store.dest)) == [{"a": 1}]


def test_objects_written_behind_a_cached_listing_are_seen(s3_server: Any, tmp_path: Path) -> None:
    """s3fs answers exists()/iterdir()/open() from a listing cache: the writer must not trust it."""
    store = Store("s3", s3_server.url(f"cache/{uuid.uuid4().hex}"), s3_server.conn_id, tmp_path, s3_server)
    store.put("README.txt", b"keep")

    def fill_cache() -> set[str]:
        return {p.name for p in store.dest.iterdir()}

    # Another process commits behind a cached listing: read_manifest must see it.
    assert fill_cache() == {"README.txt"}
    store.put(MANIFEST, json.dumps({"files": [], "by": "other"}).encode())
    assert read_manifest(store.dest) == {"files": [], "by": "other"}

    # A commit must replace a manifest the cache does not know about (a conditional PUT on its ETag) ...
    s3_server.client.delete_object(Bucket=s3_server.bucket, Key=store._prefix + MANIFEST)
    assert fill_cache() == {"README.txt"}
    store.put(MANIFEST, json.dumps({"files": [], "by": "other"}).encode())
    # ... and delete stale parts the cache does not know about.
    store.put(pname(T1, 2), b"stale")
    run(store, records(1), T2)
    assert store.names() == {"README.txt", pname(T2, 0), MANIFEST}
    assert read_manifest(store.dest)["run_token"] == T2  # type: ignore[index]  # committed just above


def test_same_bytes_on_local_and_s3(tmp_path: Path, s3_server: Any) -> None:
    recs = records(40)
    local = Store("local", str(tmp_path / "a"), None, tmp_path)
    remote = Store("s3", s3_server.url(f"same/{uuid.uuid4().hex}"), s3_server.conn_id, tmp_path, s3_server)
    assert run(local, recs, max_records_per_part=15)["files"] == run(remote, recs, max_records_per_part=15)["files"]


# ---------------------------------------------------------------------------------------------------------


def test_manifest_keeps_caller_keys_and_serialises_datetimes(tmp_path: Path) -> None:
    dest = resolve_destination(str(tmp_path / "m"), None)
    start = datetime(2024, 1, 15, tzinfo=timezone.utc)
    with PartWriter(dest, run_token=T1) as w:
        w.write({"id": 1})
        manifest = w.commit({"started_at": start, "files": "ignored", "api_host": "https://x/v1"})
    assert manifest["started_at"] == start  # returned as given
    stored = read_manifest(dest)
    assert stored is not None
    assert stored["started_at"] == "2024-01-15T00:00:00+00:00"
    assert stored["files"] == manifest["files"] != "ignored"
    assert stored["api_host"] == "https://x/v1"
    assert sorted(os.listdir(tmp_path / "m")) == [MANIFEST, pname(T1, 0)]  # no temporary file left


def test_unserialisable_manifest_fails_before_publishing(tmp_path: Path) -> None:
    dest = resolve_destination(str(tmp_path / "m"), None)

    def attempt() -> None:
        with PartWriter(dest) as w:
            w.write({"id": 1})
            w.commit({"bad": object()})

    with pytest.raises(TypeError, match="not JSON serializable"):
        attempt()
    assert os.listdir(tmp_path / "m") == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"compression": "zstd"}, "compression"),
        ({"max_records_per_part": 0}, "max_records_per_part must be a positive integer"),
        ({"max_records_per_part": 1.5}, "max_records_per_part must be a positive integer"),
        ({"max_records_per_part": True}, "max_records_per_part must be a positive integer"),
        ({"row_group_size": 0}, "row_group_size must be a positive integer"),
        ({"run_token": "today"}, "run_token must look like"),
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PartWriter(resolve_destination(str(tmp_path), None), **kwargs)


def test_many_small_records_stream(tmp_path: Path) -> None:
    """Memory stays flat: nothing but ~1 MiB of pending lines is buffered; a quick sanity check on speed."""
    dest = resolve_destination(str(tmp_path / "big"), None)
    rec = {"id": "m", "conversationId": "c", "role": "agent", "content": "Hello, how can I help you today?"}
    with PartWriter(dest, max_records_per_part=40_000) as w:
        for _ in range(100_000):
            w.write(rec)
            assert w._pending_bytes < parts_mod.WRITE_CHUNK
        manifest = w.commit({})
    assert [f["rows"] for f in manifest["files"]] == [40_000, 40_000, 20_000]
    assert sum(1 for _ in iter_records(dest)) == 100_000


def test_failure_while_closing_a_part_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = resolve_destination(str(tmp_path / "c"), None)
    original = parts_mod.JsonLinesPart.close
    calls: list[str] = []

    def flaky_close(self: Any) -> PartInfo:
        calls.append(self.name)
        if len(calls) == 2:
            raise OSError("upload failed")
        return original(self)

    monkeypatch.setattr(parts_mod.JsonLinesPart, "close", flaky_close)
    with pytest.raises(OSError, match="upload failed"):
        run(Store("local", str(tmp_path / "c"), None, tmp_path), records(25), max_records_per_part=10)
    assert calls == [pname(T1, 0), pname(T1, 1)]
    assert os.listdir(tmp_path / "c") == []
    assert read_manifest(dest) is None
