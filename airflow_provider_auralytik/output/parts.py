"""Part files: their names, and encoding records into them (JSON Lines or Parquet) while hashing the bytes.

A part is named ``part-<run token>-<index>.<suffix>`` (see :mod:`airflow_provider_auralytik.output.snapshot`
for the token): ``.jsonl.gz`` (gzip JSON Lines), ``.jsonl`` (plain JSON Lines) or ``.parquet``. Every byte on
its way to the store goes through one counting/hashing layer, so the manifest's ``bytes`` and ``sha256``
describe the stored object exactly.

pyarrow is imported only when a Parquet part is written or read (the ``[parquet]`` extra).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from itertools import chain
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_auralytik.output.schemas import check_format

if TYPE_CHECKING:
    from types import ModuleType

    from airflow_provider_auralytik.output.schemas import RecordSchema, RowBuffer

log = logging.getLogger(__name__)

PART_PREFIX = "part-"
FORMAT = "jsonl"
PARQUET = "parquet"
#: ``compression`` values accepted with ``file_format="parquet"``, and the Parquet codec each one selects.
PARQUET_COMPRESSIONS: dict[str | None, str] = {"gzip": "gzip", None: "none", "snappy": "snappy", "zstd": "zstd"}
#: Records per part file before a new part is started (the writer's and the export operators' default).
DEFAULT_MAX_RECORDS_PER_PART = 100_000
#: Rows per Parquet row group: the most a Parquet part buffers in memory before encoding and writing it.
DEFAULT_ROW_GROUP_SIZE = 10_000
PARQUET_SUFFIX = ".parquet"
PARQUET_INSTALL_HINT = 'pip install "airflow-provider-auralytik[parquet]"'
#: zlib level 6 (zlib's own default) is several times faster than gzip's 9 on JSON, for ~1-3 % more bytes.
GZIP_LEVEL = 6
#: Serialised lines are batched into chunks of about this size before compression / upload.
WRITE_CHUNK = 1 << 20
# Reused encoders (stateless, thread-safe): ~30 % faster than json.dumps(..., separators=...) per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
#: A run token (see :func:`airflow_provider_auralytik.output.snapshot.new_run_token`).
RUN_TOKEN_PATTERN = r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}"
#: ``part-<run token>-<5 digits>.<suffix>``; the token group is what cleanup orders runs by.
_PART_NAME_RE = re.compile(rf"^part-(?P<token>{RUN_TOKEN_PATTERN})-\d{{5,}}\.")


def part_suffix(file_format: str, compression: str | None) -> str:
    """``.parquet``, ``.jsonl.gz`` or ``.jsonl``."""
    if file_format == PARQUET:
        return PARQUET_SUFFIX
    return ".jsonl.gz" if compression == "gzip" else ".jsonl"


def part_name(run_token: str, index: int, suffix: str) -> str:
    """The name of a run's ``index``-th part: unique to the run, so no other run ever writes it."""
    return f"{PART_PREFIX}{run_token}-{index:05d}{suffix}"


def part_run_token(name: str) -> str | None:
    """The run token in a part's name; ``""`` for a ``part-*`` file without one (e.g. version 0.1's
    ``part-00000.jsonl.gz``: older than every token); ``None`` if ``name`` is not a part at all."""
    if not name.startswith(PART_PREFIX):
        return None
    match = _PART_NAME_RE.match(name)
    return match.group("token") if match else ""


def check_output_options(file_format: str, compression: str | None, max_records_per_part: Any) -> None:
    """Refuse a bad format/codec, a ``max_records_per_part`` that is not a positive int, or Parquet without
    pyarrow (found without importing it, so this is cheap enough for an operator's constructor)."""
    check_format(file_format, compression)
    check_positive_int("max_records_per_part", max_records_per_part)
    if file_format == PARQUET and importlib.util.find_spec("pyarrow") is None:
        raise ImportError(f"file_format='parquet' needs pyarrow, which is not installed: {PARQUET_INSTALL_HINT}")


def check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (e.g. 100000), not {value!r}.")


def import_pyarrow() -> tuple[ModuleType, ModuleType]:
    """``(pyarrow, pyarrow.parquet)``, or an ImportError that says which extra to install."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ImportError(
            f"Parquet output needs pyarrow, which is not installed: {PARQUET_INSTALL_HINT} ({exc})"
        ) from exc
    return pyarrow, pyarrow.parquet


#: msgspec writes the bytes ``_ENCODER`` writes, ~8x faster, except floats below 1e-4 or from 1e16 on
#: (``0.00001``, ``1e16`` for ``1e-05``, ``1e+16``) and NaN/Infinity (``null``): a line where one of
#: these patterns appears, even inside a string, is encoded by ``json`` instead.
_NOT_AS_JSON = re.compile(rb"[0-9]e|0\.0000|null")
#: Values both encoders write the same: a record of these alone (with string keys), the usual message or
#: conversation, skips the pattern search (a regex over the whole line: most of a line's encoding time).
_PLAIN_VALUES = frozenset((str, int, bool, type(None)))
_STR = frozenset((str,))
_fast_encode: Any = None
_fast_encode_lines: Any = None


def _load_encoder() -> None:
    global _fast_encode, _fast_encode_lines
    import msgspec  # an Airflow dependency; imported on first use, not when a DAG is parsed

    encoder = msgspec.json.Encoder()
    _fast_encode, _fast_encode_lines = encoder.encode, encoder.encode_lines


def encode_json_lines(records: list[dict[str, Any]]) -> bytes | None:
    """
    The JSON lines of ``records``, each followed by a newline, as :func:`encode_json_line` writes them;
    ``None`` unless every record holds plain values (strings, integers, booleans, nulls) under string keys.

    One call for a whole conversation's messages: the value types are gathered in C, not record by
    record, and msgspec writes the lines in one go. A record with any other value (a float, a list, an
    object) may be written differently by msgspec: the caller encodes those one by one.
    """
    if _fast_encode_lines is None:
        _load_encoder()
    if not (
        _PLAIN_VALUES.issuperset(set(map(type, chain.from_iterable(map(dict.values, records)))))
        and _STR.issuperset(set(map(type, chain.from_iterable(records))))
    ):
        return None
    try:
        block: bytes = _fast_encode_lines(records)
    except (TypeError, UnicodeEncodeError):  # a lone surrogate: json's own way, one by one
        return None
    return block


def encode_json_line(record: dict[str, Any]) -> bytes:
    """One compact JSON line (without its newline), UTF-8, non-ASCII kept as is: ``json.dumps``'s bytes."""
    if _fast_encode is None:
        _load_encoder()
    try:
        line: bytes | None = _fast_encode(record)
    except (TypeError, UnicodeEncodeError):  # e.g. a bool or None key, a lone surrogate: json's own way
        line = None
    if line is not None and (
        (_PLAIN_VALUES.issuperset(map(type, record.values())) and _STR.issuperset(map(type, record)))
        or not _NOT_AS_JSON.search(line)
    ):
        return line
    try:
        return _ENCODER.encode(record).encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (legal in JSON text, not in UTF-8): keep them as \\uXXXX escapes.
        return _ASCII_ENCODER.encode(record).encode("ascii")


@dataclass(frozen=True)
class PartInfo:
    """One written part file, as listed in the manifest."""

    path: str
    """File name relative to the destination, e.g. ``part-20261202T020000.123456Z-1a2b3c4d-00000.jsonl.gz``."""
    rows: int
    bytes: int
    """Size of the stored object (compressed size for gzip)."""
    sha256: str
    """Hex SHA-256 of the stored bytes."""

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "bytes": self.bytes, "sha256": self.sha256}


def discard_quietly(raw: Any, name: str) -> None:
    """Drop an unfinished object: fsspec's buffered files (s3fs, gcsfs, adlfs) discard their buffer
    and abort a multipart upload; then close, ignoring errors (we are already failing)."""
    discard = getattr(raw, "discard", None)
    if callable(discard):
        try:
            discard()
        except Exception:
            log.debug("Ignoring error while discarding %s", name, exc_info=True)
    close_quietly(raw, name)


def close_quietly(raw: Any, name: str) -> None:
    """Close a store's stream on a failure path, ignoring (and debug-logging) an error doing so."""
    try:
        raw.close()
    except Exception:
        log.debug("Ignoring error while closing %s", name, exc_info=True)


class HashingWriter:
    """Counts and hashes the bytes on their way to the store and batches them into large writes."""

    __slots__ = ("_buf", "_limit", "_raw", "_sha", "size")

    def __init__(self, raw: IO[bytes], limit: int = WRITE_CHUNK) -> None:
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


class _Part:
    """What a part being written has in either format: its name, the store's stream, the hashing layer, rows."""

    __slots__ = ("hasher", "name", "raw", "rows")

    def __init__(self, name: str, raw: IO[bytes]) -> None:
        self.name = name
        self.raw = raw
        self.hasher = HashingWriter(raw)
        self.rows = 0

    def _publish(self) -> PartInfo:
        """Drain the hashing layer into the store's stream and close it; the part as the manifest lists it."""
        self.hasher.flush()
        self.raw.close()  # object stores upload/complete here
        return PartInfo(path=self.name, rows=self.rows, bytes=self.hasher.size, sha256=self.hasher.hexdigest())


class JsonLinesPart(_Part):
    """The JSON Lines part being written: raw store stream, hashing layer, optional gzip layer."""

    __slots__ = ("gz",)

    def __init__(self, name: str, raw: IO[bytes], compression: str | None) -> None:
        super().__init__(name, raw)
        # mtime=0 and no file name in the header: identical content gives identical bytes, anywhere.
        self.gz: gzip.GzipFile | None = (
            gzip.GzipFile(filename="", fileobj=self.hasher, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
            if compression == "gzip"
            else None
        )

    def write(self, data: bytes) -> None:
        if self.gz is not None:
            self.gz.write(data)
        else:
            self.hasher.write(data)

    def close(self) -> PartInfo:
        if self.gz is not None:
            self.gz.close()  # writes the gzip trailer into the hasher; does not close the hasher
        return self._publish()

    def abort(self) -> None:
        """Best effort: stop writing without publishing (object stores may still leave a partial object)."""
        if self.gz is not None:
            try:
                self.gz.close()
            except Exception:
                log.debug("Ignoring error while closing gzip stream of %s", self.name, exc_info=True)
        discard_quietly(self.raw, self.name)


class _ArrowSink:
    """The file object handed to ``pyarrow.parquet.ParquetWriter``: every byte goes through the hashing layer.

    After :meth:`kill` writes are dropped, so a writer closed (or garbage-collected) after an abort cannot
    touch the store.
    """

    __slots__ = ("_hasher", "closed")

    def __init__(self, hasher: HashingWriter) -> None:
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


class ParquetPart(_Part):
    """The Parquet part being written: at most one row group of records buffered, then encoded and streamed."""

    __slots__ = ("_buffer", "_row_group_size", "_sink", "_writer")

    def __init__(
        self,
        name: str,
        raw: IO[bytes],
        schema: RecordSchema,
        codec: str,
        row_group_size: int,
        pq: ModuleType,
    ) -> None:
        super().__init__(name, raw)
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
        return self._publish()

    def abort(self) -> None:
        """Best effort: stop writing without publishing (object stores may still leave a partial object)."""
        self._sink.kill()
        self._buffer.clear()
        try:
            self._writer.close()
        except Exception:
            log.debug("Ignoring error while closing Parquet writer of %s", self.name, exc_info=True)
        discard_quietly(self.raw, self.name)
