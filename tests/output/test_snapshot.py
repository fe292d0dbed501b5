"""The commit protocol: run tokens, the compare-and-swap commit, cleanup after it, concurrent runs and readers."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_auralytik.output.parts import part_run_token
from airflow_provider_auralytik.output.reader import SnapshotChangedError, iter_records, read_manifest
from airflow_provider_auralytik.output.snapshot import (
    RUN_TOKEN_RE,
    SnapshotConflictError,
    collect_garbage,
    commit_manifest,
    commit_point,
    listed_by_parent,
    new_run_token,
)
from airflow_provider_auralytik.output.writer import PartWriter
from tests.output.checks import careful_read
from tests.output.test_writer import MANIFEST, T1, T2, T3, Boom, Store, failing_run, pname, records

START = datetime(2026, 12, 2, 2, 0, tzinfo=timezone.utc)


def test_run_tokens_are_unique_and_ordered_by_start_time() -> None:
    token = new_run_token(START)
    assert RUN_TOKEN_RE.match(token)
    assert token.startswith("20261202T020000.000000Z-")
    assert new_run_token(START) != token  # two runs started at the same instant still differ
    later = [new_run_token(START + timedelta(microseconds=n)) for n in (1, 1000, 10**6, 86400 * 10**6)]
    assert sorted([token, *later]) == [token, *later]
    assert new_run_token(datetime(2026, 12, 2, 3, 0, tzinfo=timezone(timedelta(hours=1)))) < new_run_token(
        START + timedelta(seconds=1)
    )  # UTC, whatever the zone given
    assert part_run_token(pname(T1, 3)) == T1
    assert part_run_token("part-00000.jsonl.gz") == ""  # version 0.1: older than every run
    assert part_run_token("_manifest.json") is None


def test_a_run_never_commits_over_a_newer_snapshot(store: Store) -> None:
    newer = run_writer(store, records(7), T2)
    store.put("README.txt", b"keep")
    before = {name: store.read(name) for name in store.names()}
    with pytest.raises(SnapshotConflictError, match=f"Another run \\(token {T2}\\) committed") as info:
        run_writer(store, records(3), T1)
    assert "retry the task" in str(info.value)
    assert "\n" not in str(info.value)
    assert {name: store.read(name) for name in store.names()} == before  # its own parts are gone too
    assert read_manifest(store.dest) == newer


def test_s3_commit_is_a_conditional_put(s3_server: Any, tmp_path: Path) -> None:
    store = Store("s3", s3_server.url(f"cas/{uuid.uuid4().hex}"), s3_server.conn_id, tmp_path, s3_server)
    point = commit_point(store.dest)
    assert point.read() == (None, None)
    assert point.write(b'{"run_token": "a"}\n', None, T1)
    assert not point.write(b'{"run_token": "b"}\n', None, T1)  # If-None-Match: * and there is one now
    manifest, etag = point.read()
    assert manifest == {"run_token": "a"}
    assert etag
    store.put(MANIFEST, b'{"run_token": "c"}\n')  # another writer, behind our back
    assert not point.write(b'{"run_token": "d"}\n', etag, T1)  # If-Match the ETag we read: refused
    assert json.loads(store.read(MANIFEST)) == {"run_token": "c"}
    assert point.write(b'{"run_token": "e"}\n', point.read()[1], T1)
    assert json.loads(store.read(MANIFEST)) == {"run_token": "e"}


def test_an_s3_commit_that_loses_the_compare_and_swap_reads_again_and_refuses_a_newer_snapshot(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store("s3", s3_server.url(f"cas/{uuid.uuid4().hex}"), s3_server.conn_id, tmp_path, s3_server)
    run_writer(store, records(2), T1)
    point_cls = type(commit_point(store.dest))
    original = point_cls.write
    calls: list[str] = []

    def write_after_a_rival(self: Any, payload: bytes, version: str | None, run_token: str) -> bool:
        calls.append(run_token)
        if len(calls) == 1:  # a rival with a newer token commits between our read and our write
            store.put(MANIFEST, json.dumps({"run_token": T3, "files": []}).encode())
        return original(self, payload, version, run_token)  # on the ETag read before the rival: refused

    monkeypatch.setattr(point_cls, "write", write_after_a_rival)
    with pytest.raises(SnapshotConflictError, match=T3):
        run_writer(store, records(2), T2)
    assert calls == [T2]  # refused by S3, read again, found the newer token, gave up
    assert json.loads(store.read(MANIFEST))["run_token"] == T3
    assert not any(name.startswith(f"part-{T2}") for name in store.names())


def test_cleanup_keeps_what_a_newer_run_is_writing_and_removes_older_strays(store: Store) -> None:
    store.put(pname(T1, 0), b"stray of a killed older run")
    store.put(pname(T3, 0), b"a newer run, still writing")
    store.put("part-00004.jsonl.gz", b"version 0.1")
    committed = run_writer(store, records(3), T2)
    assert store.names() == {MANIFEST, pname(T2, 0), pname(T3, 0)}
    assert collect_garbage(store.dest) == []
    assert read_manifest(store.dest) == committed


def test_cleanup_without_a_manifest_deletes_nothing(tmp_path: Path) -> None:
    store = Store("local", str(tmp_path / "x"), None, tmp_path)
    store.put(pname(T1, 0), b"?")
    assert collect_garbage(store.dest) == []
    assert store.names() == {pname(T1, 0)}


def test_a_slice_keeps_what_the_combined_manifest_lists(tmp_path: Path) -> None:
    parent = Store("local", str(tmp_path / "day"), None, tmp_path)
    child = Store("local", str(tmp_path / "day" / "slice-001"), None, tmp_path)
    first = run_writer(child, records(3), T1)
    commit_manifest(
        parent.dest, {"files": [{**f, "path": f"slice-001/{f['path']}"} for f in first["files"]]}, new_run_token()
    )
    assert listed_by_parent(child.dest) == {pname(T1, 0)}
    run_writer(child, records(4), T2)
    assert child.names() == {MANIFEST, pname(T1, 0), pname(T2, 0)}  # the combined snapshot's part stays
    commit_manifest(parent.dest, {"files": []}, new_run_token())
    assert collect_garbage(child.dest) == [pname(T1, 0)]


def test_a_manifest_commits_even_if_the_store_reports_an_error_after_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store("local", str(tmp_path / "x"), None, tmp_path)
    point_cls = type(commit_point(store.dest))
    original = point_cls.write

    def lost_response(self: Any, payload: bytes, version: str | None, run_token: str) -> bool:
        original(self, payload, version, run_token)
        raise OSError("connection reset after the upload")

    monkeypatch.setattr(point_cls, "write", lost_response)
    manifest = run_writer(store, records(3), T1)
    assert read_manifest(store.dest) == manifest
    assert list(iter_records(store.dest)) == records(3)  # the parts were not discarded


def test_iter_records_says_when_a_newer_snapshot_replaced_the_one_being_read(tmp_path: Path) -> None:
    store = Store("local", str(tmp_path / "x"), None, tmp_path)
    run_writer(store, records(30), T1, max_records_per_part=10)
    reader = iter_records(store.dest)
    first = [next(reader) for _ in range(10)]
    assert first == records(10)
    run_writer(store, records(5), T2)  # commits and cleans up the parts the reader has not opened yet
    with pytest.raises(SnapshotChangedError, match=f"newer snapshot \\(run {T2}\\).*read it again"):
        list(reader)
    assert list(iter_records(store.dest)) == records(5)


# ---------------------------------------------------------------------- races, with real threads


def run_writer(store: Store, recs: list[dict[str, Any]], token: str, **kwargs: Any) -> dict[str, Any]:
    with PartWriter(store.dest, run_token=token, **kwargs) as w:
        for r in recs:
            w.write(r)
        return w.commit({"kind": "test", "n": len(recs)})


def verified(store: Store) -> dict[str, Any] | None:
    return careful_read(store.read)


def one_run(store: Store, token: str, n: int, barrier: threading.Barrier, outcomes: dict[str, Any]) -> None:
    """A run that writes its parts, waits until its rival has too, then commits (or loses, clearly)."""
    try:
        with PartWriter(store.dest, run_token=token, max_records_per_part=5) as w:
            for r in records(n, start=n):
                w.write(r)
            barrier.wait(timeout=60)
            outcomes[token] = w.commit({"n": n})
    except SnapshotConflictError as exc:
        outcomes[token] = exc


def test_two_runs_of_one_window_at_once_never_publish_a_broken_manifest(store: Store) -> None:
    for round_ in range(4):
        barrier = threading.Barrier(2)
        outcomes: dict[str, Any] = {}
        tokens = [new_run_token(), new_run_token()]
        threads = [
            threading.Thread(target=one_run, args=(store, t, 12 + i, barrier, outcomes)) for i, t in enumerate(tokens)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        manifest = verified(store)
        assert manifest is not None
        committed = [t for t in tokens if isinstance(outcomes[t], dict)]
        assert manifest["run_token"] in committed, round_
        assert max(tokens) in committed  # the newer run always wins; the older one may have lost the race
        for token in tokens:
            if isinstance(outcomes[token], Exception):
                assert "retry the task" in str(outcomes[token])
        assert list(iter_records(store.dest)) == records(manifest["n"], start=manifest["n"])
        assert {n for n in store.names() if n.startswith("part-")} == {f["path"] for f in manifest["files"]}


def test_a_reader_polling_through_reruns_never_sees_an_inconsistent_snapshot(store: Store) -> None:
    run_writer(store, records(40), new_run_token(), max_records_per_part=7)
    stop = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                manifest = verified(store)
                assert manifest is not None  # a committed destination never loses its manifest
                seen.append(manifest["run_token"])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(6):
            if n % 2:
                with pytest.raises(Boom):
                    failing_run(store, 30, max_records_per_part=7, run_token=new_run_token())
            else:
                committed = run_writer(store, records(40 + n), new_run_token(), max_records_per_part=7)
                # Let the reader see this snapshot before the next run starts, however the threads are scheduled.
                deadline = time.monotonic() + 60
                while committed["run_token"] not in seen and not errors and time.monotonic() < deadline:
                    time.sleep(0.005)
    finally:
        stop.set()
        thread.join(timeout=120)
    assert errors == []
    assert len(set(seen)) >= 2  # it really saw snapshots change under it


def test_an_s3_store_without_conditional_writes_still_commits(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    store = Store("s3", s3_server.url(f"plain/{uuid.uuid4().hex}"), s3_server.conn_id, tmp_path, s3_server)
    fs = store.dest.fs
    real = fs.pipe_file
    conditions: list[dict[str, Any]] = []

    def pipe_file(path: str, value: bytes, **kwargs: Any) -> Any:
        conditions.append(kwargs)
        if kwargs:  # an S3-compatible store that answers 501 to If-Match / If-None-Match
            error = OSError("A header you provided implies functionality that is not implemented")
            error.__cause__ = ClientError({"Error": {"Code": "NotImplemented"}}, "PutObject")
            raise error
        return real(path, value)

    monkeypatch.setattr(fs, "pipe_file", pipe_file)
    first = run_writer(store, records(2), T1)
    second = run_writer(store, records(3), T2)
    assert conditions == [{"IfNoneMatch": "*"}, {}, {"IfMatch": conditions[2]["IfMatch"]}, {}]
    assert read_manifest(store.dest) == second != first
    assert list(iter_records(store.dest)) == records(3)
