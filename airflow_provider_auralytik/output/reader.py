"""Read a committed snapshot back: its manifest, then exactly the parts it lists, verified."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from airflow_provider_auralytik.output.destination import invalidate
from airflow_provider_auralytik.output.manifest import MANIFEST_NAME, manifest_run_token, parse_manifest
from airflow_provider_auralytik.output.parts import PARQUET_SUFFIX, import_pyarrow

if TYPE_CHECKING:
    from airflow_provider_auralytik._compat import ObjectStoragePath

_READ_CHUNK = 1 << 18


class SnapshotChangedError(RuntimeError):
    """A newer snapshot was committed while an older one was being read; its parts were cleaned up."""


def read_manifest(destination: ObjectStoragePath) -> dict[str, Any] | None:
    """Return the parsed ``_manifest.json`` under ``destination``, or ``None`` if there is none."""
    path = destination.joinpath(MANIFEST_NAME)
    invalidate(path)  # also drops the cached listing of the destination
    try:
        with path.open("rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return parse_manifest(data, path)


def iter_records(destination: ObjectStoragePath, *, verify: bool = True) -> Iterator[dict[str, Any]]:
    """Yield every record of the committed snapshot, part by part, in the order the manifest lists them.

    Reads only the parts listed in ``_manifest.json`` (gzip or not, JSON Lines or Parquet, decided by the file
    name). With ``verify`` (default) each part's stored bytes, SHA-256 and row count are checked against the
    manifest; a mismatch raises ``ValueError``: for JSON Lines once the part has been read (after its records
    were yielded), for Parquet before any of its records are yielded.

    A part listed by the manifest that is gone means a newer run committed while this one read and cleaned up
    the older snapshot: :class:`SnapshotChangedError` then says to read again (records already yielded belong
    to the older snapshot). Parts are never rewritten in place, so a part that is there is the one listed.

    Parquet rows come back as the original API objects: the catch-all ``extra`` column is merged back into the
    record, timestamps are ``...Z`` strings again (see :mod:`airflow_provider_auralytik.output.schemas`). A
    Parquet part is read into memory whole (its stored, compressed size) since Parquet keeps its index at the
    end; records are then decoded one row group at a time.

    :raises FileNotFoundError: if the destination has no manifest (nothing committed there yet).
    """
    manifest = read_manifest(destination)
    if manifest is None:
        raise FileNotFoundError(f"No {MANIFEST_NAME} under {destination}: nothing committed there yet")
    for entry in manifest.get("files", []):
        try:
            yield from _iter_part(destination, entry, verify=verify)
        except FileNotFoundError:
            now = read_manifest(destination)
            if manifest_run_token(now) != manifest_run_token(manifest):
                raise SnapshotChangedError(
                    f"{destination}: a newer snapshot (run {manifest_run_token(now) or 'unknown'}) was committed "
                    f"while run {manifest_run_token(manifest) or 'unknown'} was being read: read it again."
                ) from None
            raise


def _iter_part(destination: ObjectStoragePath, entry: dict[str, Any], *, verify: bool) -> Iterator[dict[str, Any]]:
    import json

    name = entry["path"]
    if name.endswith(PARQUET_SUFFIX):
        yield from _iter_parquet_part(destination, entry, verify=verify)
        return
    decoder = json.JSONDecoder()
    reader = _PartReader(compressed=name.endswith(".gz"))
    with destination.joinpath(name).open("rb") as f:
        for line in reader.lines(f):
            yield decoder.decode(line.decode("utf-8"))
    if verify:
        _check_part(destination, entry, size=reader.size, sha256=reader.sha256.hexdigest(), rows=reader.rows)


def _iter_parquet_part(
    destination: ObjectStoragePath, entry: dict[str, Any], *, verify: bool
) -> Iterator[dict[str, Any]]:
    pa, pq = import_pyarrow()
    from airflow_provider_auralytik.output.schemas import EXTRA_COLUMN, METADATA_EXTRA, records_from_batch

    name = entry["path"]
    sha = hashlib.sha256()
    data = bytearray()
    with destination.joinpath(name).open("rb") as f:
        while chunk := f.read(_READ_CHUNK):
            sha.update(chunk)
            data += chunk
    if verify:  # the stored bytes first: a damaged part is not handed to the Parquet reader
        _check_part(destination, entry, size=len(data), sha256=sha.hexdigest())
    parquet = pq.ParquetFile(pa.BufferReader(pa.py_buffer(data)))  # no copy of the part
    if verify:
        _check_part(destination, entry, rows=parquet.metadata.num_rows)
    extra_column = (parquet.schema_arrow.metadata or {}).get(METADATA_EXTRA, EXTRA_COLUMN.encode()).decode()
    for i in range(parquet.metadata.num_row_groups):
        yield from records_from_batch(parquet.read_row_group(i, use_threads=False), extra_column=extra_column)


def _check_part(
    destination: ObjectStoragePath,
    entry: dict[str, Any],
    *,
    size: int | None = None,
    sha256: str | None = None,
    rows: int | None = None,
) -> None:
    """Raise ``ValueError`` naming the part and every way it differs from its manifest entry.

    :param destination: The snapshot's directory.
    :param entry: The part's entry in the manifest (``path`` and, when recorded, ``bytes``/``sha256``/``rows``).
    :param size: Stored bytes read (``None``: not checked here).
    :param sha256: Hex SHA-256 of the stored bytes (``None``: not checked here).
    :param rows: Records read (``None``: not checked here).
    """
    problems = []
    if size is not None and "bytes" in entry and size != entry["bytes"]:
        problems.append(f"{size} bytes stored, manifest says {entry['bytes']}")
    if sha256 is not None and "sha256" in entry and sha256 != entry["sha256"]:
        problems.append("sha256 differs from the manifest")
    if rows is not None and "rows" in entry and rows != entry["rows"]:
        problems.append(f"{rows} rows, manifest says {entry['rows']}")
    if problems:
        raise ValueError(f"{destination}/{entry['path']}: " + "; ".join(problems))


class _PartReader:
    """Split a (gzip) JSON Lines stream into lines, hashing and counting the stored bytes as it goes."""

    def __init__(self, *, compressed: bool) -> None:
        self.compressed = compressed
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.rows = 0

    def lines(self, f: Any) -> Iterator[bytes]:
        decomp = zlib.decompressobj(wbits=31) if self.compressed else None
        carry = b""
        while True:
            chunk = f.read(_READ_CHUNK)
            if not chunk:
                break
            self.sha256.update(chunk)
            self.size += len(chunk)
            data = chunk
            if decomp is not None:
                data = decomp.decompress(chunk)
                while decomp.eof and decomp.unused_data:  # concatenated gzip members
                    rest = decomp.unused_data
                    decomp = zlib.decompressobj(wbits=31)
                    data += decomp.decompress(rest)
            lines = (carry + data).split(b"\n")
            carry = lines.pop()
            for line in lines:
                if line.strip():
                    self.rows += 1
                    yield line
        if decomp is not None:
            carry += decomp.flush()
            if self.size and not decomp.eof:
                raise EOFError("Truncated gzip part: the stream ended before the end-of-stream marker")
        if carry.strip():
            self.rows += 1
            yield carry
