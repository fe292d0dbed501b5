"""Reading a committed snapshot back (output/reader.py): the manifest, then exactly its parts, verified."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_auralytik.output.destination import resolve_destination
from airflow_provider_auralytik.output.manifest import manifest_bytes
from airflow_provider_auralytik.output.reader import iter_records, read_manifest
from airflow_provider_auralytik.output.writer import PartWriter
from tests.output.test_writer import T1, Store, pname, records, run

MANIFEST = "_manifest.json"


def rewrite_manifest(store: Store, **changes: Any) -> None:
    """Change the first file entry of the committed manifest behind the writer's back."""
    manifest = json.loads(store.read(MANIFEST))
    manifest["files"][0].update(changes)
    store.put(MANIFEST, manifest_bytes(manifest))


def test_nothing_committed_reads_as_none_and_iterating_it_says_so(tmp_path: Path) -> None:
    dest = resolve_destination(str(tmp_path / "empty"), None)
    assert read_manifest(dest) is None
    with pytest.raises(FileNotFoundError, match=r"No _manifest\.json under .*nothing committed there yet"):
        list(iter_records(dest))


def test_only_the_parts_the_manifest_lists_are_read_in_its_order(store: Store) -> None:
    run(store, records(7), max_records_per_part=3)
    store.put(pname("20260315T090000.000000Z-00000009", 0), gzip.compress(b'{"id":"stray"}\n'))
    assert list(iter_records(store.dest)) == records(7)


def test_iter_records_verifies_checksums(store: Store) -> None:
    run(store, records(5), compression=None)
    store.put(pname(T1, 0, ".jsonl"), b'{"id":"tampered"}\n')
    with pytest.raises(ValueError, match="sha256"):
        list(iter_records(store.dest))
    assert list(iter_records(store.dest, verify=False)) == [{"id": "tampered"}]


def test_every_difference_from_the_manifest_is_named_at_once(store: Store) -> None:
    manifest = run(store, records(5))
    entry = manifest["files"][0]
    rewrite_manifest(store, bytes=entry["bytes"] + 1, rows=4)
    got: list[dict[str, Any]] = []
    with pytest.raises(ValueError, match="manifest says") as info:
        got.extend(iter_records(store.dest))
    message = str(info.value)
    assert message.startswith(f"{store.dest}/{entry['path']}: ")
    assert f"{entry['bytes']} bytes stored, manifest says {entry['bytes'] + 1}" in message
    assert "5 rows, manifest says 4" in message
    assert "sha256" not in message  # the bytes themselves are the ones listed
    assert got == records(5)  # JSON Lines: checked once the part is read


def test_an_entry_without_sizes_is_read_unchecked(store: Store) -> None:
    run(store, records(3))
    manifest = json.loads(store.read(MANIFEST))
    manifest["files"] = [{"path": f["path"]} for f in manifest["files"]]
    store.put(MANIFEST, manifest_bytes(manifest))
    assert list(iter_records(store.dest)) == records(3)


def test_a_truncated_gzip_part_is_an_error_not_fewer_records(tmp_path: Path) -> None:
    out = tmp_path / "t"
    dest = resolve_destination(str(out), None)
    with PartWriter(dest, run_token=T1) as writer:
        for record in records(200):
            writer.write(record)
        writer.commit({"kind": "test"})
    part = out / pname(T1, 0)
    part.write_bytes(part.read_bytes()[:-12])
    with pytest.raises(EOFError, match="Truncated gzip part"):
        list(iter_records(dest, verify=False))


def test_concatenated_gzip_members_read_as_one_part(tmp_path: Path) -> None:
    out = tmp_path / "c"
    out.mkdir()
    data = gzip.compress(b'{"id":1}\n') + gzip.compress(b'{"id":2}\n{"id":3}')  # no final newline either
    (out / "part-a.jsonl.gz").write_bytes(data)
    (out / MANIFEST).write_bytes(manifest_bytes({"files": [{"path": "part-a.jsonl.gz", "rows": 3}]}))
    assert list(iter_records(resolve_destination(str(out), None))) == [{"id": 1}, {"id": 2}, {"id": 3}]
