"""Fixed, day-independent record schemas for columnar (Parquet) exports.

Each export has a :class:`RecordSchema`: typed columns for the fields the API documents, plus one catch-all
string column, ``extra``, that holds every other field as a JSON object. The Arrow schema depends only on the
:class:`RecordSchema`, never on the day's data, so yesterday's and today's files union cleanly even after the
API starts sending a new field.

:data:`CONVERSATIONS`::

    id string, channelId string, campaignId string, status string,
    participantCount int64, messageCount int64,
    startedAt timestamp[us, tz=UTC], endedAt timestamp[us, tz=UTC], createdAt timestamp[us, tz=UTC],
    extra string

:data:`MESSAGES`::

    id string, role string, content string, conversationId string, timestamp timestamp[us, tz=UTC],
    extra string

Rules for turning an API object into a row (:meth:`RecordSchema.buffer`) and back (:func:`records_from_columns`):

* ``extra`` is the JSON object (keys sorted, compact, UTF-8) of every field not in the fixed columns, or null
  when there is none.
* A value that does not fit its column (``participantCount: "3x"``, a float, a bool, an int beyond int64, an
  unparsable or zone-less timestamp, a non-string id, a string that is not valid UTF-8 …) never fails the
  export and is never lost: the column gets null and the raw value goes into ``extra`` under its own name.
* Timestamps are parsed from ISO 8601 with ``Z`` or a ``±HH:MM`` offset (fractions beyond microseconds are
  truncated) by the package's one parser,
  :func:`~airflow_provider_auralytik.conversations.window.read_iso8601`. They read back in the API's own
  format, ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``. A value that is valid but not written that way (an offset, a
  short fraction …) is kept verbatim in ``extra`` as well, so a round trip still gives the original string.
* A fixed field that is missing from the object and one that is ``null`` are both stored as null, and read
  back as ``null``: that is the only difference a round trip can show.

This module imports pyarrow only inside the functions that need it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_auralytik.conversations.window import UTC, in_api_form, read_iso8601

if TYPE_CHECKING:
    import pyarrow as pa
#: Output formats and the compression codecs each accepts (``None``: uncompressed).
CODECS: dict[str, tuple[str | None, ...]] = {
    "jsonl": ("gzip", None),
    "parquet": ("gzip", "snappy", "zstd", None),
}


def check_format(file_format: str, compression: str | None) -> None:
    """Refuse an unknown output format, or a codec the format does not take (before any I/O)."""
    if file_format not in CODECS:
        raise ValueError(f"file_format must be one of {tuple(CODECS)}, not {file_format!r}.")
    if compression not in CODECS[file_format]:
        raise ValueError(f"compression for {file_format} must be one of {CODECS[file_format]}, not {compression!r}.")


STRING = "string"
INT64 = "int64"
TIMESTAMP = "timestamp[us, tz=UTC]"
#: Column types a schema may use (Arrow's own spelling, as in ``str(pa_type)``).
TYPES = (STRING, INT64, TIMESTAMP)
EXTRA_COLUMN = "extra"
#: Parquet/Arrow schema metadata keys written with every file.
METADATA_SCHEMA = b"auralytik.schema"
METADATA_EXTRA = b"auralytik.extra_column"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_MISFIT: Any = object()

_EXTRA_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)
_EXTRA_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), sort_keys=True)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Column:
    """One fixed column: the API field name and its Arrow type (one of :data:`TYPES`)."""

    name: str
    type: str

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"column {self.name!r}: type must be one of {TYPES!r}, got {self.type!r}")


@dataclass(frozen=True)
class RecordSchema:
    """The fixed columns of one export, plus the catch-all JSON column :data:`EXTRA_COLUMN`."""

    name: str
    columns: tuple[Column, ...]
    extra_column: str = EXTRA_COLUMN
    _names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"schema {self.name!r}: duplicate column names")
        if self.extra_column in names:
            raise ValueError(f"schema {self.name!r}: {self.extra_column!r} is reserved for the catch-all column")
        object.__setattr__(self, "_names", frozenset(names))

    @property
    def column_names(self) -> list[str]:
        """Every column of the stored table, the catch-all last."""
        return [*(c.name for c in self.columns), self.extra_column]

    def describe(self) -> dict[str, Any]:
        """JSON description for the manifest: name, columns (name and Arrow type) and the catch-all column."""
        return {
            "name": self.name,
            "columns": [{"name": c.name, "type": c.type} for c in (*self.columns, Column(self.extra_column, STRING))],
            "extra_column": self.extra_column,
        }

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema (all columns nullable); identical for every file of this schema, whatever the data."""
        import pyarrow as pa

        types = {STRING: pa.string(), INT64: pa.int64(), TIMESTAMP: pa.timestamp("us", tz="UTC")}
        return pa.schema(
            [pa.field(c.name, types[c.type]) for c in self.columns] + [pa.field(self.extra_column, pa.string())],
            metadata={METADATA_SCHEMA: self.name.encode(), METADATA_EXTRA: self.extra_column.encode()},
        )

    def buffer(self) -> RowBuffer:
        """An empty column buffer that turns records into rows of this schema."""
        return RowBuffer(self)


class RowBuffer:
    """Records converted to column lists (plain Python values), ready to become one Arrow record batch."""

    def __init__(self, schema: RecordSchema) -> None:
        self.schema = schema
        self._fixed = schema._names
        self._values: list[list[Any]] = [[] for _ in range(len(schema.columns) + 1)]
        self._plan = [(c.name, c.type, self._values[i].append) for i, c in enumerate(schema.columns)]
        self._extra_append = self._values[-1].append
        self._arrow_schema: pa.Schema | None = None
        self.rows = 0

    def __len__(self) -> int:
        return self.rows

    def append(self, record: dict[str, Any]) -> None:
        """Add one record as a row (see the module docstring for the rules)."""
        if not isinstance(record, dict):
            raise TypeError(f"a record must be a dict, got {type(record).__name__}")
        extra: dict[str, Any] | None = None
        keys = record.keys()
        if not keys <= self._fixed:
            extra = {k: record[k] for k in keys - self._fixed}
        get = record.get
        for name, kind, out in self._plan:
            value = get(name)
            if value is None:
                out(None)
                continue
            if kind == STRING:
                if type(value) is str and (value.isascii() or _is_utf8(value)):
                    out(value)
                    continue
            elif kind == INT64:
                if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
                    out(value)
                    continue
            else:
                micros, canonical = _parse_timestamp(value)
                if micros is not _MISFIT:
                    out(micros)
                    if canonical:
                        continue
                    # Valid but not in the API's own spelling: keep the exact text too.
                    if extra is None:
                        extra = {}
                    extra[name] = value
                    continue
            out(None)  # does not fit the column: null there, the raw value in extra
            if extra is None:
                extra = {}
            extra[name] = value
        try:
            text = _encode_extra(extra) if extra else None
        except BaseException:  # not JSON-serialisable (as for JSON Lines): leave the buffer as it was
            for values in self._values[:-1]:
                values.pop()
            raise
        self._extra_append(text)
        self.rows += 1

    def to_batch(self) -> pa.RecordBatch:
        """The buffered rows as an Arrow record batch of :meth:`RecordSchema.arrow_schema`."""
        import pyarrow as pa

        schema = self._arrow_schema
        if schema is None:
            schema = self._arrow_schema = self.schema.arrow_schema()
        arrays = [pa.array(values, type=f.type) for values, f in zip(self._values, schema, strict=True)]
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def clear(self) -> None:
        for values in self._values:
            values.clear()
        self.rows = 0


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: Arrow strings must be valid UTF-8
        return False
    return True


def _encode_extra(extra: dict[str, Any]) -> str:
    text = _EXTRA_ENCODER.encode(extra)
    if text.isascii() or _is_utf8(text):
        return text
    return _EXTRA_ASCII_ENCODER.encode(extra)  # lone surrogates as \\uXXXX escapes


def _parse_timestamp(value: Any) -> tuple[Any, bool]:
    """``(microseconds since the epoch, written in the API's form?)``, or ``(_MISFIT, False)`` for anything that
    is not an ISO 8601 date-time with a zone (read by the package's one parser, ``read_iso8601``)."""
    if type(value) is not str:
        return _MISFIT, False
    api_form = in_api_form(value)
    parsed = read_iso8601(value, api_form=api_form)
    if parsed is None or parsed.tzinfo is None:  # not ISO 8601, a bare date, no zone: not an instant
        return _MISFIT, False
    micros = (parsed - _EPOCH) // _ONE_US
    return micros, api_form and (len(value) == 20 or micros % 1_000_000 != 0)  # the API never writes ".000000"


def format_timestamp(micros: int) -> str:
    """Microseconds since the epoch as the API writes instants: ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``."""
    dt = _EPOCH + timedelta(microseconds=micros)
    text = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    return f"{text}.{dt.microsecond:06d}Z" if dt.microsecond else text + "Z"


def records_from_columns(
    names: Sequence[str], columns: Sequence[list[Any]], *, extra_column: str | None = EXTRA_COLUMN
) -> Iterator[dict[str, Any]]:
    """Rebuild records from column lists (timestamps already formatted): the inverse of :class:`RowBuffer`.

    Fixed columns come first, in column order; the fields in ``extra_column`` (a JSON object) are merged in
    over them (a value that did not fit its column goes back to its place), the catch-all itself is dropped.
    """
    names = list(names)
    if extra_column is not None and extra_column in names:
        i = names.index(extra_column)
        fixed_names = names[:i] + names[i + 1 :]
        extras = columns[i]
        fixed_columns = [c for j, c in enumerate(columns) if j != i]
        decode = _DECODER.decode
        for row, extra in zip(zip(*fixed_columns, strict=True), extras, strict=True):
            record = dict(zip(fixed_names, row, strict=True))
            if extra is not None:
                record.update(decode(extra))
            yield record
    else:
        for row in zip(*columns, strict=True):
            yield dict(zip(names, row, strict=True))


def records_from_batch(
    batch: pa.RecordBatch | pa.Table, *, extra_column: str | None = None
) -> Iterator[dict[str, Any]]:
    """Rebuild API objects from an Arrow batch/table of such a schema (see :func:`records_from_columns`).

    ``extra_column`` defaults to the one named in the schema metadata (then ``"extra"``). Timestamp columns come
    back as ``...Z`` strings, whatever their unit.
    """
    import pyarrow as pa

    schema = batch.schema
    if extra_column is None:
        meta = schema.metadata or {}
        extra_column = meta.get(METADATA_EXTRA, EXTRA_COLUMN.encode()).decode()
    columns: list[list[Any]] = []
    for i, f in enumerate(schema):
        array = batch.column(i)
        if pa.types.is_timestamp(f.type):
            micros = array.cast(pa.timestamp("us", tz=f.type.tz)).cast(pa.int64()).to_pylist()
            columns.append([None if v is None else format_timestamp(v) for v in micros])
        else:
            columns.append(array.to_pylist())
    return records_from_columns(schema.names, columns, extra_column=extra_column)


CONVERSATIONS = RecordSchema(
    "conversations",
    (
        Column("id", STRING),
        Column("channelId", STRING),
        Column("campaignId", STRING),
        Column("status", STRING),
        Column("participantCount", INT64),
        Column("messageCount", INT64),
        Column("startedAt", TIMESTAMP),
        Column("endedAt", TIMESTAMP),
        Column("createdAt", TIMESTAMP),
    ),
)
"""A conversation object as the API returns it."""

MESSAGES = RecordSchema(
    "messages",
    (
        Column("id", STRING),
        Column("role", STRING),
        Column("content", STRING),
        Column("conversationId", STRING),
        Column("timestamp", TIMESTAMP),
    ),
)
"""A message object as the API returns it, plus the ``conversationId`` the export adds."""

SCHEMAS: dict[str, RecordSchema] = {s.name: s for s in (CONVERSATIONS, MESSAGES)}


def get_schema(name: str) -> RecordSchema:
    """The schema of an export kind (``"conversations"`` or ``"messages"``)."""
    try:
        return SCHEMAS[name]
    except KeyError:
        raise ValueError(f"no record schema for {name!r}; known: {sorted(SCHEMAS)}") from None
