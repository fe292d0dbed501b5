"""The one place that writes export output.

Layout under a destination directory (any :class:`ObjectStoragePath`: local, ``file://``, ``s3://``,
``gs://``, ``abfs://`` …)::

    part-00000.jsonl.gz   JSON Lines, UTF-8, gzip (compression=None gives part-00000.jsonl)
    part-00001.jsonl.gz   a new part every ``max_records_per_part`` records, so memory stays flat
    _manifest.json        written last: the commit point

With ``file_format="parquet"`` the parts are ``part-00000.parquet``, ``part-00001.parquet`` … instead (same
rolling, same manifest plus the column ``"schema"``), in the fixed schema of a
:class:`~airflow_provider_auralytik.utils.schemas.RecordSchema`; this needs pyarrow, i.e. the ``[parquet]``
extra. pyarrow is imported only when Parquet is written or read.

Readers must treat a destination without ``_manifest.json`` as incomplete, and read only the parts the
manifest lists (:func:`iter_records` does both).

Typical use::

    destination = resolve_destination("s3://bucket/exports/2024-01-15", conn_id="aws_default")
    with PartWriter(destination) as writer:
        for record in records:
            writer.write(record)
        manifest = writer.commit({"window": {...}, "records": writer.records_written})

Importing this module is cheap: Airflow is imported only when a destination is resolved.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_auralytik.utils.schemas import check_format

if TYPE_CHECKING:
    from types import ModuleType, TracebackType

    from airflow_provider_auralytik._compat import ObjectStoragePath
    from airflow_provider_auralytik.utils.schemas import RecordSchema, RowBuffer

log = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest.json"
PART_PREFIX = "part-"
FORMAT = "jsonl"
PARQUET = "parquet"
#: ``compression`` values accepted with ``file_format="parquet"``, and the Parquet codec each one selects.
PARQUET_COMPRESSIONS: dict[str | None, str] = {"gzip": "gzip", None: "none", "snappy": "snappy", "zstd": "zstd"}
#: Rows per Parquet row group: the most a Parquet part buffers in memory before encoding and writing it.
DEFAULT_ROW_GROUP_SIZE = 10_000
PARQUET_SUFFIX = ".parquet"
PARQUET_INSTALL_HINT = 'pip install "airflow-provider-auralytik[parquet]"'
#: zlib level 6 (zlib's own default) is several times faster than gzip's 9 on JSON, for ~1-3 % more bytes.
GZIP_LEVEL = 6
#: Serialised lines are batched into chunks of about this size before compression / upload.
_WRITE_CHUNK = 1 << 20
_READ_CHUNK = 1 << 18
_LOCAL_PROTOCOLS = frozenset({"", "file", "local"})
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
# Reused encoders (stateless, thread-safe): ~30 % faster than json.dumps(..., separators=...) per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
_DECODER = json.JSONDecoder()


def _is_local(path: ObjectStoragePath) -> bool:
    return (path.protocol or "") in _LOCAL_PROTOCOLS


def _invalidate(path: ObjectStoragePath) -> None:
    """Drop the filesystem's cached listing of ``path``.

    s3fs (and other fsspec object stores) answer ``exists()``/``info()``/``iterdir()`` from a listing cache,
    which does not see objects written by other processes or clients since it was filled; an
    ``unlink(missing_ok=True)`` would then silently skip an object that is really there.
    """
    try:
        path.fs.invalidate_cache(path.path)
    except Exception:
        log.debug("Could not invalidate listing cache for %s", path, exc_info=True)


def _delete(path: ObjectStoragePath) -> None:
    _invalidate(path)
    path.unlink(missing_ok=True)


def _discard_quietly(raw: Any, name: str) -> None:
    """Drop an unfinished object: fsspec's buffered files (s3fs, gcsfs, adlfs) discard their buffer
    and abort a multipart upload; then close, ignoring errors (we are already failing)."""
    discard = getattr(raw, "discard", None)
    if callable(discard):
        try:
            discard()
        except Exception:
            log.debug("Ignoring error while discarding %s", name, exc_info=True)
    try:
        raw.close()
    except Exception:
        log.debug("Ignoring error while closing %s", name, exc_info=True)


def resolve_destination(destination: str, conn_id: str | None) -> ObjectStoragePath:
    """Turn the operator's ``destination`` string into an :class:`ObjectStoragePath`.

    * A plain local path (relative or absolute, ``~`` expanded) becomes an absolute ``file`` path; the
      directory is created if missing. ``conn_id`` is ignored for local paths.
    * A URL with a scheme (``file://``, ``s3://``, ``gs://``, ``abfs://`` …) goes through
      ``ObjectStoragePath(url, conn_id=conn_id)``; ``file://`` directories are created too.
      Note: ``file://`` URLs are not percent-decoded (``file:///a%20b`` is the directory ``a%20b``).

    With a ``conn_id`` Airflow resolves the connection (and builds the filesystem) right here, so call
    this at execution time, not at DAG-parse time or inside a running event loop.

    :raises ValueError: for an empty destination.
    """
    from airflow_provider_auralytik._compat import ObjectStoragePath

    if not isinstance(destination, str) or not destination.strip():
        raise ValueError(
            f"destination must be a non-empty local path or object-storage URL "
            f"(e.g. /data/out or s3://bucket/prefix), got {destination!r}"
        )
    destination = destination.strip()
    if _URL_RE.match(destination):
        path = ObjectStoragePath(destination, conn_id=conn_id)
    else:
        local = os.path.abspath(os.path.expanduser(destination))
        path = ObjectStoragePath(local, protocol="file")
    if _is_local(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class PartInfo:
    """One written part file, as listed in the manifest."""

    path: str
    """File name relative to the destination, e.g. ``part-00000.jsonl.gz``."""
    rows: int
    bytes: int
    """Size of the stored object (compressed size for gzip)."""
    sha256: str
    """Hex SHA-256 of the stored bytes."""

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "bytes": self.bytes, "sha256": self.sha256}


class _HashingWriter:
    """Counts and hashes the bytes on their way to the store and batches them into large writes."""

    __slots__ = ("_buf", "_limit", "_raw", "_sha", "size")

    def __init__(self, raw: IO[bytes], limit: int = _WRITE_CHUNK) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self._buf = bytearray()
        self._limit = limit
        self.size = 0

    def write(self, data: bytes) -> int:
        n = len(data)
        if n:
            self._sha.update(data)
            self.size += n
            self._buf += data
            if len(self._buf) >= self._limit:
                self._drain()
        return n

    def flush(self) -> None:
        self._drain()

    def _drain(self) -> None:
        if self._buf:
            self._raw.write(bytes(self._buf))
            self._buf.clear()

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class _OpenPart:
    """The part currently being written: raw store stream, hashing layer, optional gzip layer."""

    __slots__ = ("gz", "hasher", "name", "raw", "rows")

    def __init__(self, name: str, raw: IO[bytes], compression: str | None) -> None:
        self.name = name
        self.raw = raw
        self.hasher = _HashingWriter(raw)
        # mtime=0 and no file name in the header: identical content gives identical bytes, anywhere.
        self.gz: gzip.GzipFile | None = (
            gzip.GzipFile(filename="", fileobj=self.hasher, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
            if compression == "gzip"
            else None
        )
        self.rows = 0

    def write(self, data: bytes) -> None:
        if self.gz is not None:
            self.gz.write(data)
        else:
            self.hasher.write(data)

    def close(self) -> PartInfo:
        if self.gz is not None:
            self.gz.close()  # writes the gzip trailer into the hasher; does not close the hasher
        self.hasher.flush()
        self.raw.close()  # object stores upload/complete here
        return PartInfo(path=self.name, rows=self.rows, bytes=self.hasher.size, sha256=self.hasher.hexdigest())

    def abort(self) -> None:
        """Best effort: stop writing without publishing (object stores may still leave a partial object)."""
        if self.gz is not None:
            try:
                self.gz.close()
            except Exception:
                log.debug("Ignoring error while closing gzip stream of %s", self.name, exc_info=True)
        _discard_quietly(self.raw, self.name)


def _import_pyarrow() -> tuple[ModuleType, ModuleType]:
    """``(pyarrow, pyarrow.parquet)``, or an ImportError that says which extra to install."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ImportError(
            f"Parquet output needs pyarrow, which is not installed: {PARQUET_INSTALL_HINT} ({exc})"
        ) from exc
    return pyarrow, pyarrow.parquet


class _ArrowSink:
    """The file object handed to ``pyarrow.parquet.ParquetWriter``: every byte goes through the hashing layer.

    After :meth:`kill` writes are dropped, so a writer closed (or garbage-collected) after an abort cannot
    touch the store.
    """

    __slots__ = ("_hasher", "closed")

    def __init__(self, hasher: _HashingWriter) -> None:
        self._hasher = hasher
        self.closed = False

    def write(self, data: bytes) -> int:
        if self.closed:
            return len(data)
        return self._hasher.write(data)

    def tell(self) -> int:
        return self._hasher.size

    def flush(self) -> None:
        pass  # the hashing layer batches writes; it is drained when the part is closed

    def kill(self) -> None:
        self.closed = True


class _ParquetPart:
    """The Parquet part being written: at most one row group of records buffered, then encoded and streamed."""

    __slots__ = ("_buffer", "_row_group_size", "_sink", "_writer", "hasher", "name", "raw", "rows")

    def __init__(
        self,
        name: str,
        raw: IO[bytes],
        schema: RecordSchema,
        codec: str,
        row_group_size: int,
        pq: ModuleType,
    ) -> None:
        self.name = name
        self.raw = raw
        self.hasher = _HashingWriter(raw)
        self.rows = 0
        self._row_group_size = row_group_size
        self._buffer: RowBuffer = schema.buffer()
        self._sink = _ArrowSink(self.hasher)
        # pyarrow's defaults otherwise; the footer's created_by is "parquet-cpp-arrow version X" (no clock,
        # no host), so identical records give identical bytes with the same pyarrow version.
        self._writer = pq.ParquetWriter(
            self._sink,
            schema.arrow_schema(),
            compression=codec,
            # Arrow's gzip default is level 9: about twice as slow as 6 for no smaller files on this data.
            compression_level=GZIP_LEVEL if codec == "gzip" else None,
        )

    def append(self, record: dict[str, Any]) -> None:
        self._buffer.append(record)
        self.rows += 1
        if len(self._buffer) >= self._row_group_size:
            self._write_row_group()

    def _write_row_group(self) -> None:
        if len(self._buffer):
            batch = self._buffer.to_batch()
            self._buffer.clear()
            self._writer.write_batch(batch, row_group_size=len(batch))

    def close(self) -> PartInfo:
        self._write_row_group()
        self._writer.close()  # footer; leaves the sink (and the store's file) open
        self.hasher.flush()
        self.raw.close()  # object stores upload/complete here
        return PartInfo(path=self.name, rows=self.rows, bytes=self.hasher.size, sha256=self.hasher.hexdigest())

    def abort(self) -> None:
        """Best effort: stop writing without publishing (object stores may still leave a partial object)."""
        self._sink.kill()
        self._buffer.clear()
        try:
            self._writer.close()
        except Exception:
            log.debug("Ignoring error while closing Parquet writer of %s", self.name, exc_info=True)
        _discard_quietly(self.raw, self.name)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class PartWriter:
    """Stream records into ``part-NNNNN.jsonl[.gz]`` / ``.parquet`` files under ``destination``; commit a manifest.

    Use as a context manager:

    * ``__enter__`` prepares the destination: it deletes an existing ``_manifest.json`` *first* (so a
      failed rerun never leaves the previous run's manifest pointing at half-replaced parts) and notes the
      ``part-*`` files already there. Local directories are created if missing.
    * :meth:`write` serialises one record as a JSON line (UTF-8, ``ensure_ascii=False``, compact). A new
      part starts every ``max_records_per_part`` records. Nothing larger than ~1 MiB of pending lines (plus
      the store's own upload buffer: s3fs buffers up to its 50 MiB block size) is held in memory.
    * :meth:`commit` closes the current part, deletes ``part-*`` files from earlier runs that this run did
      not write, then writes ``_manifest.json`` (local: temp file + atomic rename; object stores: one PUT).
      Afterwards the destination holds exactly this run's parts and manifest; other files are left alone.
    * ``__exit__`` without a successful commit (an exception escaped, or commit was never called): the
      parts this run wrote, and the earlier run's parts (orphaned since their manifest went), are deleted
      (best effort), no manifest is written, and the exception propagates.

    A run with zero records writes **no** part files and a manifest with ``"files": []``.

    Gzip output uses ``mtime=0`` and no embedded file name, so identical reruns give byte-identical parts.
    A writer is single-use and not thread-safe: call it from one thread.

    **Parquet** (``file_format="parquet"``, needs the ``[parquet]`` extra and a ``schema``): parts are
    ``part-NNNNN.parquet``, rolled at ``max_records_per_part`` exactly as JSON Lines, in the fixed Arrow
    schema of ``schema`` (typed columns plus the JSON catch-all ``extra``; see
    :mod:`airflow_provider_auralytik.utils.schemas`), so every day's files have the same schema. Records are
    buffered ``row_group_size`` at a time (one row group), then encoded and streamed through
    ``pyarrow.parquet.ParquetWriter`` to the store via the same counting/hashing layer, so the manifest's
    bytes and sha256 describe the stored object. ``compression`` selects the Parquet codec: ``"gzip"``
    (default), ``"snappy"``, ``"zstd"`` or ``None`` (uncompressed). The manifest adds ``"schema"`` (name,
    columns with their Arrow types, catch-all column). Parts hold no timestamps, so identical reruns give
    byte-identical parts with the same pyarrow version. A rerun in either format replaces parts of the other.

    :param destination: directory to write to (see :func:`resolve_destination`).
    :param compression: ``"gzip"`` or ``None`` for JSON Lines; for Parquet also ``"snappy"`` or ``"zstd"``.
    :param max_records_per_part: records per part file.
    :param file_format: ``"jsonl"`` (default) or ``"parquet"``.
    :param schema: the :class:`~airflow_provider_auralytik.utils.schemas.RecordSchema` of the records;
        required for Parquet, ignored for JSON Lines (which stores every record as it is).
    :param row_group_size: Parquet rows per row group (the most buffered in memory); ignored for JSON Lines.
    :raises ImportError: for Parquet without pyarrow (naming the ``[parquet]`` extra), before anything at the
        destination is touched.
    """

    def __init__(
        self,
        destination: ObjectStoragePath,
        *,
        compression: str | None = "gzip",
        max_records_per_part: int = 100_000,
        file_format: str = FORMAT,
        schema: RecordSchema | None = None,
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    ) -> None:
        check_format(file_format, compression)
        for name, value in (("max_records_per_part", max_records_per_part), ("row_group_size", row_group_size)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.destination = destination
        self.compression = compression
        self.max_records_per_part = max_records_per_part
        self.file_format = file_format
        self.schema = schema
        self.row_group_size = row_group_size
        self._pq: ModuleType | None = None
        if file_format == PARQUET:
            from airflow_provider_auralytik.utils.schemas import RecordSchema

            if not isinstance(schema, RecordSchema):
                raise ValueError(
                    f"file_format='parquet' needs schema=<RecordSchema> (e.g. schemas.CONVERSATIONS), got {schema!r}"
                )
            self._pq = _import_pyarrow()[1]  # fail here, before __enter__ deletes the earlier manifest
            self._suffix = PARQUET_SUFFIX
        else:
            self._suffix = ".jsonl.gz" if compression == "gzip" else ".jsonl"
        self._state = "new"  # new -> open -> committed | closed
        self._existing: set[str] = set()
        self._written: list[str] = []
        self._files: list[PartInfo] = []
        self._current: _OpenPart | _ParquetPart | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._records = 0

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> PartWriter:
        if self._state != "new":
            raise RuntimeError("PartWriter is single-use: create a new one for each run")
        if _is_local(self.destination):
            self.destination.mkdir(parents=True, exist_ok=True)
        _delete(self._manifest_path())  # first: a failed rerun must leave no manifest
        if _is_local(self.destination):
            _delete(self.destination.joinpath(MANIFEST_NAME + ".tmp"))  # left by a crash mid-commit
        self._existing = self._list_parts()
        self._state = "open"
        log.debug("Writing to %s; %d existing part file(s)", self.destination, len(self._existing))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state == "committed":
            self._state = "closed"
            return
        if self._state != "open":
            return
        self._state = "closed"
        if exc_type is None:
            log.warning("PartWriter for %s closed without commit(): output discarded", self.destination)
        self._discard_run()

    # ------------------------------------------------------------------ writing

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (a JSON line, or a Parquet row); roll to a new part every ``max_records_per_part``."""
        if self._state != "open":
            raise RuntimeError(f"PartWriter is {self._state}: write() only inside the `with` block")
        if self._pq is not None:
            current = self._current
            if current is None:
                current = self._current = self._open_part()
            current.append(record)  # type: ignore[union-attr]  # always a _ParquetPart here
            self._records += 1
            if current.rows >= self.max_records_per_part:
                self._close_part()
            return
        try:
            line = _ENCODER.encode(record).encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates (legal in JSON text, not in UTF-8): keep them as \\uXXXX escapes.
            line = _ASCII_ENCODER.encode(record).encode("ascii")
        part = self._current
        if part is None:
            part = self._current = self._open_part()
        self._pending.append(line)
        self._pending.append(b"\n")
        self._pending_bytes += len(line) + 1
        part.rows += 1
        self._records += 1
        if part.rows >= self.max_records_per_part:
            self._close_part()
        elif self._pending_bytes >= _WRITE_CHUNK:
            self._flush_pending()

    def commit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Close the last part, delete stale parts, write ``_manifest.json``; return the full manifest.

        The manifest is ``manifest`` plus ``"format"``, ``"compression"`` and ``"files"`` (these three keys
        are always set by the writer), and for Parquet ``"schema"`` (see :meth:`RecordSchema.describe`).
        Values must be JSON-serialisable; datetimes/dates become ISO strings.
        """
        if self._state != "open":
            raise RuntimeError(f"PartWriter is {self._state}: commit() only once, inside the `with` block")
        if self._current is not None:
            self._close_part()
        full = dict(manifest)
        full["format"] = self.file_format
        full["compression"] = self.compression
        if self.file_format == PARQUET and self.schema is not None:
            full["schema"] = self.schema.describe()
        full["files"] = [info.as_dict() for info in self._files]
        payload = (json.dumps(full, indent=2, ensure_ascii=False, default=_json_default) + "\n").encode()

        mine = set(self._written)
        stale = sorted((self._existing | self._list_parts()) - mine)
        for name in stale:
            log.info("Deleting stale part %s from an earlier run", name)
            _delete(self.destination.joinpath(name))

        self._write_manifest(payload)
        self._state = "committed"
        log.info(
            "Committed %d record(s) in %d part(s), %d bytes to %s",
            self._records,
            len(self._files),
            self.bytes_written,
            self.destination,
        )
        return full

    # ------------------------------------------------------------------ introspection

    @property
    def files(self) -> list[PartInfo]:
        """Parts completed so far (all parts after commit)."""
        return list(self._files)

    @property
    def records_written(self) -> int:
        return self._records

    @property
    def bytes_written(self) -> int:
        """Stored bytes of the completed parts plus what the open part has emitted so far."""
        total = sum(info.bytes for info in self._files)
        if self._current is not None:
            total += self._current.hasher.size
        return total

    # ------------------------------------------------------------------ internals

    def _manifest_path(self) -> ObjectStoragePath:
        return self.destination.joinpath(MANIFEST_NAME)

    def _list_parts(self) -> set[str]:
        _invalidate(self.destination)  # files written by others since the listing was cached
        try:
            children = list(self.destination.iterdir())
        except (FileNotFoundError, NotADirectoryError):  # s3fs: NotADirectoryError for a missing prefix
            return set()
        return {child.name for child in children if child.name.startswith(PART_PREFIX)}

    def _open_part(self) -> _OpenPart | _ParquetPart:
        name = f"{PART_PREFIX}{len(self._files):05d}{self._suffix}"
        self._written.append(name)  # before opening: a failed open is still cleaned up
        raw = self.destination.joinpath(name).open("wb")
        if self._pq is None:
            return _OpenPart(name, raw, self.compression)
        assert self.schema is not None
        try:
            return _ParquetPart(
                name, raw, self.schema, PARQUET_COMPRESSIONS[self.compression], self.row_group_size, self._pq
            )
        except BaseException:
            try:
                raw.close()
            except Exception:
                log.debug("Ignoring error while closing %s", name, exc_info=True)
            raise

    def _flush_pending(self) -> None:
        if self._pending and isinstance(self._current, _OpenPart):
            self._current.write(b"".join(self._pending))
        self._pending.clear()
        self._pending_bytes = 0

    def _close_part(self) -> None:
        part = self._current
        if part is None:
            return
        self._flush_pending()
        self._current = None
        try:
            info = part.close()
        except BaseException:
            part.abort()
            raise
        self._files.append(info)

    def _write_manifest(self, payload: bytes) -> None:
        target = self._manifest_path()
        if _is_local(self.destination):
            tmp = self.destination.joinpath(MANIFEST_NAME + ".tmp")
            with tmp.open("wb") as f:
                f.write(payload)
            os.replace(tmp.path, target.path)
        else:
            with target.open("wb") as f:  # a single PUT: atomic on object stores
                f.write(payload)

    def _discard_run(self) -> None:
        part, self._current = self._current, None
        self._pending.clear()
        self._pending_bytes = 0
        if part is not None:
            part.abort()
        # The earlier run's parts lost their manifest on __enter__: orphans now, so they go too,
        # and a failed run leaves the destination with nothing of ours but no manifest either.
        for name in [*self._written, *sorted(self._existing - set(self._written))]:
            try:
                _delete(self.destination.joinpath(name))
            except Exception:
                log.warning("Could not delete %s/%s after a failed run", self.destination, name, exc_info=True)


# ---------------------------------------------------------------------- reading


def read_manifest(destination: ObjectStoragePath) -> dict[str, Any] | None:
    """Return the parsed ``_manifest.json`` under ``destination``, or ``None`` if there is none."""
    path = destination.joinpath(MANIFEST_NAME)
    _invalidate(path)  # also drops the cached listing of the destination
    try:
        with path.open("rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    manifest = json.loads(data.decode("utf-8"))
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a JSON object")
    return manifest


def iter_records(destination: ObjectStoragePath, *, verify: bool = True) -> Iterator[dict[str, Any]]:
    """Yield every record of a committed output, part by part, in the order the manifest lists them.

    Reads only the parts listed in ``_manifest.json`` (gzip or not, JSON Lines or Parquet, decided by the file
    name). With ``verify`` (default) each part's stored bytes, SHA-256 and row count are checked against the
    manifest; a mismatch raises ``ValueError``: for JSON Lines once the part has been read (after its records
    were yielded), for Parquet before any of its records are yielded.

    Parquet rows come back as the original API objects: the catch-all ``extra`` column is merged back into the
    record, timestamps are ``...Z`` strings again (see :mod:`airflow_provider_auralytik.utils.schemas`). A
    Parquet part is read into memory whole (its stored, compressed size) since Parquet keeps its index at the
    end; records are then decoded one row group at a time.

    :raises FileNotFoundError: if the destination has no manifest (missing or incomplete output).
    """
    manifest = read_manifest(destination)
    if manifest is None:
        raise FileNotFoundError(f"No {MANIFEST_NAME} under {destination}: output missing or incomplete")
    for entry in manifest.get("files", []):
        name = entry["path"]
        if name.endswith(PARQUET_SUFFIX):
            yield from _iter_parquet_part(destination, entry, verify=verify)
            continue
        reader = _PartReader(compressed=name.endswith(".gz"))
        with destination.joinpath(name).open("rb") as f:
            for line in reader.lines(f):
                yield _DECODER.decode(line.decode("utf-8"))
        if verify:
            problems = []
            if "bytes" in entry and reader.size != entry["bytes"]:
                problems.append(f"{reader.size} bytes stored, manifest says {entry['bytes']}")
            if "sha256" in entry and reader.sha256.hexdigest() != entry["sha256"]:
                problems.append("sha256 differs from the manifest")
            if "rows" in entry and reader.rows != entry["rows"]:
                problems.append(f"{reader.rows} rows, manifest says {entry['rows']}")
            if problems:
                raise ValueError(f"{destination}/{name}: " + "; ".join(problems))


def _iter_parquet_part(
    destination: ObjectStoragePath, entry: dict[str, Any], *, verify: bool
) -> Iterator[dict[str, Any]]:
    pa, pq = _import_pyarrow()
    from airflow_provider_auralytik.utils.schemas import EXTRA_COLUMN, METADATA_EXTRA, records_from_batch

    name = entry["path"]
    sha = hashlib.sha256()
    data = bytearray()
    with destination.joinpath(name).open("rb") as f:
        while chunk := f.read(_READ_CHUNK):
            sha.update(chunk)
            data += chunk
    problems = []
    if verify:
        if "bytes" in entry and len(data) != entry["bytes"]:
            problems.append(f"{len(data)} bytes stored, manifest says {entry['bytes']}")
        if "sha256" in entry and sha.hexdigest() != entry["sha256"]:
            problems.append("sha256 differs from the manifest")
        if problems:
            raise ValueError(f"{destination}/{name}: " + "; ".join(problems))
    parquet = pq.ParquetFile(pa.BufferReader(pa.py_buffer(data)))  # no copy of the part
    if verify and "rows" in entry and parquet.metadata.num_rows != entry["rows"]:
        raise ValueError(f"{destination}/{name}: {parquet.metadata.num_rows} rows, manifest says {entry['rows']}")
    extra_column = (parquet.schema_arrow.metadata or {}).get(METADATA_EXTRA, EXTRA_COLUMN.encode()).decode()
    for i in range(parquet.metadata.num_row_groups):
        yield from records_from_batch(parquet.read_row_group(i, use_threads=False), extra_column=extra_column)


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


# ---------------------------------------------------------------------- manifests outside a PartWriter


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """How every ``_manifest.json`` is serialised: pretty JSON, UTF-8, a final newline."""
    return (json.dumps(manifest, indent=2, ensure_ascii=False, default=_json_default) + "\n").encode()


def write_manifest(destination: ObjectStoragePath, manifest: dict[str, Any]) -> None:
    """
    Write ``destination/_manifest.json`` as one atomic step (a rename locally, a single PUT on object
    stores). For a manifest that describes parts written elsewhere, e.g. a sliced export's combined one.
    """
    payload = manifest_bytes(manifest)
    target = destination.joinpath(MANIFEST_NAME)
    if _is_local(destination):
        destination.mkdir(parents=True, exist_ok=True)
        tmp = destination.joinpath(MANIFEST_NAME + ".tmp")
        with tmp.open("wb") as f:
            f.write(payload)
        os.replace(tmp.path, target.path)
    else:
        with target.open("wb") as f:
            f.write(payload)
    _invalidate(target)


def withdraw_manifest(destination: ObjectStoragePath) -> None:
    """Delete ``destination/_manifest.json`` if there is one: the destination is being rewritten."""
    _delete(destination.joinpath(MANIFEST_NAME))


def remove_tree(path: ObjectStoragePath) -> None:
    """Delete a directory (or prefix) and everything under it; nothing if it is already gone."""
    _invalidate(path)
    with contextlib.suppress(FileNotFoundError):
        path.fs.rm(path.path, recursive=True)
    _invalidate(path)
