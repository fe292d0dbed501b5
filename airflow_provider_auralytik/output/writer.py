"""Stream records into a run's part files and commit them as a snapshot.

Typical use::

    destination = resolve_destination("s3://bucket/exports/2024-01-15", conn_id="aws_default")
    with PartWriter(destination, run_token=new_run_token(started)) as writer:
        for record in records:
            writer.write(record)
        manifest = writer.commit({**manifest_header(...), "counts": {...}})

Importing this module is cheap: Airflow is imported only when a destination is resolved, pyarrow only when
Parquet is written.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_provider_auralytik.output.destination import is_local
from airflow_provider_auralytik.output.parts import (
    DEFAULT_MAX_RECORDS_PER_PART,
    DEFAULT_ROW_GROUP_SIZE,
    FORMAT,
    PARQUET,
    PARQUET_COMPRESSIONS,
    WRITE_CHUNK,
    JsonLinesPart,
    ParquetPart,
    PartInfo,
    check_positive_int,
    close_quietly,
    encode_json_line,
    encode_json_lines,
    import_pyarrow,
    part_name,
    part_suffix,
)
from airflow_provider_auralytik.output.schemas import check_format
from airflow_provider_auralytik.output.snapshot import (
    RUN_TOKEN_RE,
    SnapshotConflictError,
    collect_garbage,
    commit_manifest,
    discard_parts,
    new_run_token,
)

if TYPE_CHECKING:
    from types import ModuleType

    from airflow_provider_auralytik._compat import ObjectStoragePath
    from airflow_provider_auralytik.output.schemas import RecordSchema

log = logging.getLogger(__name__)


class PartWriter:
    """Stream records into ``part-<run token>-NNNNN.jsonl[.gz]`` / ``.parquet`` files; commit them as a snapshot.

    Use as a context manager:

    * ``__enter__`` creates a local directory if missing. It deletes nothing: the destination's committed
      snapshot (manifest and listed parts) stays readable and valid until :meth:`commit` replaces it.
    * :meth:`write` serialises one record as a JSON line (UTF-8, ``ensure_ascii=False``, compact). A new
      part starts every ``max_records_per_part`` records. Nothing larger than ~1 MiB of pending lines (plus
      the store's own upload buffer: s3fs buffers up to its 50 MiB block size) is held in memory. Part names
      carry this run's token, so no other run ever writes them.
    * :meth:`commit` closes the current part and publishes the manifest atomically (see
      :mod:`airflow_provider_auralytik.output.snapshot`); only then are ``part-*`` files that no committed
      manifest lists deleted. If another run committed a newer snapshot meanwhile, this run's parts are deleted
      and :class:`~airflow_provider_auralytik.output.snapshot.SnapshotConflictError` is raised.
    * ``__exit__`` without a successful commit (an exception escaped, or commit was never called): the parts
      this run wrote are deleted (best effort), no manifest is written, the earlier snapshot is untouched, and
      the exception propagates.

    A run with zero records writes **no** part files and a manifest with ``"files": []``.

    Gzip output uses ``mtime=0`` and no embedded file name, so identical reruns give byte-identical parts.
    A writer is single-use and not thread-safe: call it from one thread.

    **Parquet** (``file_format="parquet"``, needs the ``[parquet]`` extra and a ``schema``): parts are
    ``part-<token>-NNNNN.parquet``, rolled at ``max_records_per_part`` exactly as JSON Lines, in the fixed
    Arrow schema of ``schema`` (typed columns plus the JSON catch-all ``extra``; see
    :mod:`airflow_provider_auralytik.output.schemas`), so every day's files have the same schema. Records are
    buffered ``row_group_size`` at a time (one row group), then encoded and streamed through
    ``pyarrow.parquet.ParquetWriter`` to the store via the same counting/hashing layer, so the manifest's
    bytes and sha256 describe the stored object. ``compression`` selects the Parquet codec: ``"gzip"``
    (default), ``"snappy"``, ``"zstd"`` or ``None`` (uncompressed). The manifest adds ``"schema"`` (name,
    columns with their Arrow types, catch-all column). Parts hold no timestamps, so identical reruns give
    byte-identical parts with the same pyarrow version. A rerun in either format replaces parts of the other.

    :param destination: Directory to write to (see
        :func:`~airflow_provider_auralytik.output.destination.resolve_destination`).
    :param compression: ``"gzip"`` or ``None`` for JSON Lines; for Parquet also ``"snappy"`` or ``"zstd"``.
    :param max_records_per_part: Records per part file.
    :param file_format: ``"jsonl"`` (default) or ``"parquet"``.
    :param schema: The :class:`~airflow_provider_auralytik.output.schemas.RecordSchema` of the records;
        required for Parquet, ignored for JSON Lines (which stores every record as it is).
    :param row_group_size: Parquet rows per row group (the most buffered in memory); ignored for JSON Lines.
    :param run_token: This run's token (see :func:`~airflow_provider_auralytik.output.snapshot.new_run_token`);
        a new one from the current time if omitted.
    :raises ImportError: for Parquet without pyarrow (naming the ``[parquet]`` extra), before anything at the
        destination is touched.
    """

    def __init__(
        self,
        destination: ObjectStoragePath,
        *,
        compression: str | None = "gzip",
        max_records_per_part: int = DEFAULT_MAX_RECORDS_PER_PART,
        file_format: str = FORMAT,
        schema: RecordSchema | None = None,
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
        run_token: str | None = None,
    ) -> None:
        check_format(file_format, compression)
        check_positive_int("max_records_per_part", max_records_per_part)
        check_positive_int("row_group_size", row_group_size)
        if run_token is not None and not RUN_TOKEN_RE.match(run_token):
            raise ValueError(f"run_token must look like 20261202T020000.123456Z-1a2b3c4d, not {run_token!r}")
        self.destination = destination
        self.compression = compression
        self.max_records_per_part = max_records_per_part
        self.file_format = file_format
        self.schema = schema
        self.row_group_size = row_group_size
        self.run_token = run_token or new_run_token()
        self._pq: ModuleType | None = None
        if file_format == PARQUET:
            from airflow_provider_auralytik.output.schemas import RecordSchema

            if not isinstance(schema, RecordSchema):
                raise ValueError(
                    f"file_format='parquet' needs schema=<RecordSchema> (e.g. schemas.CONVERSATIONS), got {schema!r}"
                )
            self._pq = import_pyarrow()[1]  # fail here, before anything is written
        self._suffix = part_suffix(file_format, compression)
        self._state = "new"  # new -> open -> committed | closed
        self._written: list[str] = []
        self._files: list[PartInfo] = []
        self._current: JsonLinesPart | ParquetPart | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._records = 0

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> PartWriter:
        if self._state != "new":
            raise RuntimeError("PartWriter is single-use: create a new one for each run")
        if is_local(self.destination):
            self.destination.mkdir(parents=True, exist_ok=True)
        self._state = "open"
        log.debug("Writing run %s to %s", self.run_token, self.destination)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
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
            current.append(record)  # type: ignore[union-attr]  # always a ParquetPart here
            self._records += 1
            if current.rows >= self.max_records_per_part:
                self._close_part()
            return
        line = encode_json_line(record)
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
        elif self._pending_bytes >= WRITE_CHUNK:
            self._flush_pending()

    def write_all(self, records: list[dict[str, Any]]) -> None:
        """
        Append ``records`` in order: the same bytes and parts as :meth:`write` one by one, in fewer steps.

        A conversation's messages, the usual JSON Lines records (plain values only), are encoded in one
        call and appended as one block; anything else (Parquet, a record msgspec may write differently,
        a batch that ends the part) goes record by record.
        """
        if self._state != "open":
            raise RuntimeError(f"PartWriter is {self._state}: write_all() only inside the `with` block")
        part = self._current
        rows = part.rows if part is not None else 0
        block = (
            encode_json_lines(records)
            if self._pq is None and records and rows + len(records) < self.max_records_per_part
            else None
        )
        if block is None:
            for record in records:
                self.write(record)
            return
        if part is None:
            part = self._current = self._open_part()
        self._pending.append(block)
        self._pending_bytes += len(block)
        part.rows += len(records)
        self._records += len(records)
        if self._pending_bytes >= WRITE_CHUNK:
            self._flush_pending()

    def commit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Close the last part, publish ``_manifest.json``, then delete parts no committed manifest lists.

        The manifest is ``manifest`` plus ``"format"``, ``"compression"``, ``"run_token"`` and ``"files"``
        (always set by the writer), and for Parquet ``"schema"`` (see :meth:`RecordSchema.describe`).
        Values must be JSON-serialisable; datetimes/dates become ISO strings. Returns the full manifest.

        :raises SnapshotConflictError: a run with a newer token committed meanwhile; this run's parts are gone.
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
        try:
            committed = commit_manifest(self.destination, full, self.run_token)
        except SnapshotConflictError:
            self._state = "closed"
            self._discard_run()
            raise
        self._state = "committed"
        log.info(
            "Committed %d record(s) in %d part(s), %d bytes to %s (run %s)",
            self._records,
            len(self._files),
            self.bytes_written,
            self.destination,
            self.run_token,
        )
        collect_garbage(self.destination)
        return committed

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

    def _open_part(self) -> JsonLinesPart | ParquetPart:
        name = part_name(self.run_token, len(self._files), self._suffix)
        self._written.append(name)  # before opening: a failed open is still cleaned up
        raw = self.destination.joinpath(name).open("wb")
        if self._pq is None:
            return JsonLinesPart(name, raw, self.compression)
        assert self.schema is not None
        try:
            return ParquetPart(
                name, raw, self.schema, PARQUET_COMPRESSIONS[self.compression], self.row_group_size, self._pq
            )
        except BaseException:
            close_quietly(raw, name)
            raise

    def _flush_pending(self) -> None:
        if self._pending and isinstance(self._current, JsonLinesPart):
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

    def _discard_run(self) -> None:
        part, self._current = self._current, None
        self._pending.clear()
        self._pending_bytes = 0
        if part is not None:
            part.abort()
        # Only this run's own parts: the committed snapshot (another run's token) is not ours to touch.
        discard_parts(self.destination, self._written)
