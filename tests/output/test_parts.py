"""Part files (output/parts.py): names, the options check, JSON Lines encoding, the hashing layer, parts."""

from __future__ import annotations

import enum
import gzip
import hashlib
import io
import json
from typing import Any

import pytest

from airflow_provider_auralytik.output.parts import (
    DEFAULT_MAX_RECORDS_PER_PART,
    HashingWriter,
    JsonLinesPart,
    check_output_options,
    close_quietly,
    discard_quietly,
    encode_json_line,
    encode_json_lines,
    part_name,
    part_run_token,
    part_suffix,
)

TOKEN = "20261202T020000.123456Z-1a2b3c4d"


class Raw(io.BytesIO):
    """A store's stream that remembers each write and what was closed or discarded."""

    def __init__(self, fail_on: str = "") -> None:
        super().__init__()
        self.writes: list[int] = []
        self.stored = b""
        self.discarded = False
        self.fail_on = fail_on

    def write(self, data: Any) -> int:
        self.writes.append(len(data))
        return super().write(data)

    def discard(self) -> None:
        if self.fail_on == "discard":
            raise OSError("discard failed")
        self.discarded = True

    def close(self) -> None:
        if self.fail_on == "close":
            raise OSError("close failed")
        if not self.closed:
            self.stored = self.getvalue()
        super().close()


@pytest.mark.parametrize(
    ("file_format", "compression", "suffix"),
    [("jsonl", "gzip", ".jsonl.gz"), ("jsonl", None, ".jsonl"), ("parquet", "zstd", ".parquet")],
)
def test_a_part_name_carries_the_run_token_and_says_its_format(file_format, compression, suffix):
    name = part_name(TOKEN, 7, part_suffix(file_format, compression))
    assert name == f"part-{TOKEN}-00007{suffix}"
    assert part_run_token(name) == TOKEN


@pytest.mark.parametrize(
    ("file_format", "compression", "max_records", "error", "match"),
    [
        ("csv", None, 10, ValueError, "file_format"),
        ("jsonl", "zstd", 10, ValueError, "compression"),
        ("jsonl", "gzip", 0, ValueError, "max_records_per_part must be a positive integer"),
        ("jsonl", "gzip", "10", ValueError, "max_records_per_part must be a positive integer"),
        ("jsonl", "gzip", False, ValueError, "max_records_per_part must be a positive integer"),
    ],
)
def test_output_options_are_refused_with_the_parameter_named(file_format, compression, max_records, error, match):
    with pytest.raises(error, match=match):
        check_output_options(file_format, compression, max_records)


def test_the_default_options_pass():
    check_output_options("jsonl", "gzip", DEFAULT_MAX_RECORDS_PER_PART)
    check_output_options("parquet", "snappy", 1)


def test_a_json_line_is_compact_utf8_and_keeps_lone_surrogates_as_escapes():
    assert encode_json_line({"a": [1, 2], "t": "Ünï"}) == '{"a":[1,2],"t":"Ünï"}'.encode()
    line = encode_json_line({"t": "x\ud800y"})  # legal JSON, not encodable as UTF-8
    assert line == b'{"t":"x\\ud800y"}'
    assert json.loads(line) == {"t": "x\ud800y"}


class _Status(str, enum.Enum):
    OPEN = "open"


class _Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    "record",
    [
        {"id": "msg_1", "role": "agent", "content": 'Ça va ? \u2028\x1f\x7f \\ " / 😀', "n": 3, "ok": True},
        {"score": 0.83, "tiny": 1e-05, "small": -1.5e-07, "edge": 0.0001, "big": 1e16, "huge": 1.7976931348623157e308},
        {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "zero": -0.0},
        {"int": 2**70, "neg": -(2**63) - 1, "none": None, "nested": {"a": [1, {"b": None}, [2.5e-9]]}},
        {2: "int key", 1.5: "float key", True: "bool key", None: "none key"},
        {"text": "0.00001 and 1e5 and null inside strings", "hex": "5e7a9e0f"},
        {"id": "msg_2", "replyTo": None, "edited": False, "seq": 0, "note": "null"},  # plain: no pattern search
        {"status": _Status.OPEN, "level": _Level.HIGH, "text": "plain-looking, but str and int subclasses"},
    ],
)
def test_a_json_line_has_the_bytes_json_dumps_gives(record: dict[Any, Any]) -> None:
    expected = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert encode_json_line(record) == expected


def test_json_lines_of_a_batch_are_the_lines_of_its_records_or_none_when_not_all_plain() -> None:
    plain: list[dict[str, Any]] = [
        {"id": "msg_1", "role": "agent", "content": 'Ça va ? \u2028\x1f\x7f \\ " / 😀', "n": 3, "ok": True},
        {"id": "msg_2", "replyTo": None, "edited": False, "seq": 2**70, "note": "null 1e5 0.00001"},
        {},
    ]
    assert encode_json_lines(plain) == b"".join(encode_json_line(r) + b"\n" for r in plain)
    assert encode_json_lines([]) == b""
    # Any value msgspec may write otherwise (str and int subclasses too), any key that is not a string, a
    # lone surrogate: None, so the caller encodes them one by one (as encode_json_line does, with json
    # where needed).
    odds: list[dict[Any, Any]] = [{"score": 1e-05}, {"tags": ["a"]}, {"o": {"k": 1}}, {2: "int key"}]
    for odd in [*odds, {"t": "x\ud800y"}, {"s": _Status.OPEN}]:
        assert encode_json_lines([*plain, odd]) is None


def test_the_hashing_layer_counts_hashes_and_batches_writes():
    raw = Raw()
    hasher = HashingWriter(raw, limit=10)
    for chunk in (b"abcd", b"efgh", b"ijkl", b"m"):
        hasher.write(chunk)
    assert raw.writes == [12]  # one write once 10 bytes were held, not four
    hasher.flush()
    assert raw.writes == [12, 1]
    assert hasher.size == 13
    assert hasher.hexdigest() == hashlib.sha256(b"abcdefghijklm").hexdigest()


@pytest.mark.parametrize("compression", ["gzip", None])
def test_a_json_lines_part_describes_exactly_what_was_stored(compression):
    raw = Raw()
    part = JsonLinesPart("part-x.jsonl", raw, compression)
    part.write(b'{"id":1}\n{"id":2}\n')
    part.rows = 2
    info = part.close()
    assert raw.closed
    stored = raw.stored
    assert (gzip.decompress(stored) if compression else stored) == b'{"id":1}\n{"id":2}\n'
    assert info.as_dict() == {
        "path": "part-x.jsonl",
        "rows": 2,
        "bytes": len(stored),
        "sha256": hashlib.sha256(stored).hexdigest(),
    }


def test_identical_gzip_parts_are_byte_identical():
    stored = []
    for _ in range(2):
        raw = Raw()
        part = JsonLinesPart("p", raw, "gzip")
        part.write(b'{"id":1}\n')
        part.close()
        stored.append(raw.stored)
    assert stored[0] == stored[1]


def test_an_aborted_part_is_discarded_not_published():
    raw = Raw()
    part = JsonLinesPart("part-x.jsonl.gz", raw, "gzip")
    part.write(b'{"id":1}\n')
    part.abort()
    assert raw.discarded
    assert raw.closed


@pytest.mark.parametrize(("fail_on", "logged"), [("discard", "discarding"), ("close", "closing")])
def test_failure_paths_ignore_errors_of_the_store_they_give_up_on(fail_on, logged, caplog):
    raw = Raw(fail_on=fail_on)
    with caplog.at_level("DEBUG", logger="airflow_provider_auralytik.output.parts"):
        discard_quietly(raw, "part-x")  # raises nothing
        close_quietly(Raw(fail_on="close"), "part-y")
    assert raw.closed == (fail_on == "discard")  # a failed discard is still followed by the close
    assert f"Ignoring error while {logged} part-x" in caplog.text
    assert "Ignoring error while closing part-y" in caplog.text
