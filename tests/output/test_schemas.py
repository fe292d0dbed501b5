"""
The fixed record schemas of Parquet output (``output/schemas.py``): the same Arrow schema every day,
values that do not fit kept in ``extra``, timestamps, the round trip back to the API's objects, and
JSON Lines ignoring the schema.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from airflow_provider_auralytik.output.destination import resolve_destination
from airflow_provider_auralytik.output.reader import iter_records
from airflow_provider_auralytik.output.schemas import (
    CONVERSATIONS,
    MESSAGES,
    Column,
    RecordSchema,
    format_timestamp,
    get_schema,
    records_from_batch,
)
from tests.output.test_parquet import (
    FIXED_CONVERSATION_FIELDS,
    conversation,
    conversations,
    local_run,
    message,
    run,
)
from tests.output.test_writer import T1, Store, pname


def test_schema_is_the_same_whatever_the_days_data(tmp_path: Path) -> None:
    """Yesterday without the new field, today with it (and with a bad value): same Arrow schema, tables union."""
    day1 = conversations(20, day="2024-01-14")
    day2 = [
        conversation(100, "2024-01-15", sentiment={"score": 0.9}),
        conversation(101, "2024-01-15", newFlag=True, language="fr"),
        conversation(102, "2024-01-15") | {"participantCount": "3x", "startedAt": None},
        *conversations(10, start=200, day="2024-01-15"),
    ]
    m1 = local_run(tmp_path / "day=2024-01-14", day1)
    m2 = local_run(tmp_path / "day=2024-01-15", day2)
    assert m1["schema"] == m2["schema"]
    f1, f2 = (tmp_path / day / m["files"][0]["path"] for day, m in (("day=2024-01-14", m1), ("day=2024-01-15", m2)))
    s1, s2 = pq.read_schema(f1), pq.read_schema(f2)
    assert s1.equals(s2, check_metadata=True)
    assert s1.equals(CONVERSATIONS.arrow_schema(), check_metadata=True)
    assert [(f.name, str(f.type)) for f in s1] == [(c["name"], c["type"]) for c in m1["schema"]["columns"]]

    table = pa.concat_tables([pq.read_table(f1), pq.read_table(f2)])  # needs identical schemas
    assert table.num_rows == 33
    dataset = ds.dataset([str(f1), str(f2)], format="parquet")
    assert dataset.schema.equals(s1)
    assert dataset.to_table().num_rows == 33
    both = ds.dataset(str(tmp_path), format="parquet", partitioning="hive")
    assert both.count_rows() == 33
    assert both.to_table(filter=ds.field("participantCount").is_null()).column("id").to_pylist() == ["conv_000102"]


def test_arrow_schemas_exactly() -> None:
    utc = pa.timestamp("us", tz="UTC")
    assert CONVERSATIONS.arrow_schema().remove_metadata() == pa.schema(
        [
            ("id", pa.string()),
            ("channelId", pa.string()),
            ("campaignId", pa.string()),
            ("status", pa.string()),
            ("participantCount", pa.int64()),
            ("messageCount", pa.int64()),
            ("startedAt", utc),
            ("endedAt", utc),
            ("createdAt", utc),
            ("extra", pa.string()),
        ]
    )
    assert MESSAGES.arrow_schema().remove_metadata() == pa.schema(
        [
            ("id", pa.string()),
            ("role", pa.string()),
            ("content", pa.string()),
            ("conversationId", pa.string()),
            ("timestamp", utc),
            ("extra", pa.string()),
        ]
    )
    assert all(f.nullable for f in CONVERSATIONS.arrow_schema())
    assert CONVERSATIONS.arrow_schema().metadata == {
        b"auralytik.schema": b"conversations",
        b"auralytik.extra_column": b"extra",
    }
    assert get_schema("messages") is MESSAGES
    with pytest.raises(ValueError, match="no record schema"):
        get_schema("calls")
    with pytest.raises(ValueError, match="reserved"):
        RecordSchema("x", (Column("extra", "string"),))
    with pytest.raises(ValueError, match="type must be one of"):
        Column("x", "float64")


BAD = {
    "id": 12345,  # not a string
    "channelId": "web\ud800",  # lone surrogate: not valid UTF-8
    "campaignId": ["a", "b"],
    "status": "completed",
    "participantCount": "3x",
    "messageCount": 2.0,  # a float, even a whole one, is not an int64
    "startedAt": "yesterday",
    "endedAt": "2024-01-15T10:00:00",  # no zone
    "createdAt": "2024-02-30T10:00:00Z",  # no such day
    "language": "de",
}


def test_values_that_do_not_fit_their_column_are_kept_in_extra(tmp_path: Path) -> None:
    odd = [
        BAD,
        conversation(1) | {"participantCount": True, "messageCount": 2**63},  # bool; beyond int64
        conversation(2) | {"participantCount": -(2**63), "messageCount": 2**63 - 1},  # the int64 bounds fit
        conversation(3) | {"startedAt": "2024-01-15T10:00:00+02:00", "endedAt": "2024-01-15T08:00:00.5Z"},
        conversation(4) | {"startedAt": "2024-01-15T08:00:00.123456789Z", "endedAt": "2024-01-15T08:00:00.000000Z"},
        conversation(5) | {"startedAt": "2024-01-15T25:00:00Z", "endedAt": 1705305600, "createdAt": ""},
        conversation(6) | {"extra": {"a": 1}, "": "empty key", "nested": {"z": 1, "a": [None, True]}},
    ]
    local_run(tmp_path / "c", odd)
    rows = pq.read_table(tmp_path / "c" / pname(T1, 0, ".parquet")).to_pylist()

    bad = rows[0]
    assert {k: v for k, v in bad.items() if v is not None} == {"status": "completed", "extra": bad["extra"]}
    assert bad["extra"] == (
        '{"campaignId":["a","b"],"channelId":"web\\ud800","createdAt":"2024-02-30T10:00:00Z",'
        '"endedAt":"2024-01-15T10:00:00","id":12345,"language":"de","messageCount":2.0,'
        '"participantCount":"3x","startedAt":"yesterday"}'
    )
    assert (rows[1]["participantCount"], rows[1]["messageCount"]) == (None, None)
    assert json.loads(rows[1]["extra"]) == {"participantCount": True, "messageCount": 2**63}
    assert (rows[2]["participantCount"], rows[2]["messageCount"], rows[2]["extra"]) == (-(2**63), 2**63 - 1, None)
    # Valid instants not written the API's way: the column has the instant, extra the exact text.
    assert rows[3]["startedAt"] == datetime(2024, 1, 15, 8, tzinfo=timezone.utc)
    assert rows[3]["endedAt"] == datetime(2024, 1, 15, 8, 0, 0, 500_000, tzinfo=timezone.utc)
    assert json.loads(rows[3]["extra"]) == {
        "startedAt": "2024-01-15T10:00:00+02:00",
        "endedAt": "2024-01-15T08:00:00.5Z",
    }
    assert rows[4]["startedAt"] == datetime(2024, 1, 15, 8, 0, 0, 123456, tzinfo=timezone.utc)  # truncated to µs
    assert rows[4]["endedAt"] == datetime(2024, 1, 15, 8, tzinfo=timezone.utc)
    assert set(json.loads(rows[4]["extra"])) == {"startedAt", "endedAt"}
    assert (rows[5]["startedAt"], rows[5]["endedAt"], rows[5]["createdAt"]) == (None, None, None)
    assert rows[6]["extra"] == '{"":"empty key","extra":{"a":1},"nested":{"a":[null,true],"z":1}}'

    # Nothing lost: a round trip gives the original objects back.
    assert list(iter_records(resolve_destination(str(tmp_path / "c"), None))) == odd


@pytest.mark.parametrize(
    ("text", "stored", "raw_kept"),
    [
        ("2024-01-15T10:00:00Z", "2024-01-15T10:00:00Z", False),
        ("2024-01-15T10:00:00.000001Z", "2024-01-15T10:00:00.000001Z", False),
        ("2024-01-15T10:00:00.000000Z", "2024-01-15T10:00:00Z", True),
        ("2024-01-15T10:00:00.5Z", "2024-01-15T10:00:00.500000Z", True),
        ("2024-01-15t10:00:00z", "2024-01-15T10:00:00Z", True),
        ("2024-01-15 10:00Z", "2024-01-15T10:00:00Z", True),
        ("2024-01-15T10:00:00,25+0100", "2024-01-15T09:00:00.250000Z", True),
        ("2024-01-15T00:30:00-01:00", "2024-01-15T01:30:00Z", True),
        ("2024-01-15T10:00:00", None, True),  # no zone
        ("2024-01-15", None, True),  # a date, not an instant
        ("2024-W03-1T10:00:00Z", None, True),
        ("\uff12024-01-15T10:00:00Z", None, True),  # a fullwidth digit
        ("2024-01-15T10:00:60Z", None, True),
        ("2024-01-15T10:00:00+24:00", None, True),
        ("", None, True),
    ],
)
def test_timestamp_parsing(text: str, stored: str | None, raw_kept: bool) -> None:
    buffer = MESSAGES.buffer()
    buffer.append({"id": "m", "timestamp": text})
    batch = buffer.to_batch()
    micros = batch.column("timestamp").cast(pa.int64())[0].as_py()
    assert (None if micros is None else format_timestamp(micros)) == stored
    extra = batch.column("extra")[0].as_py()
    assert extra == (json.dumps({"timestamp": text}, ensure_ascii=False, separators=(",", ":")) if raw_kept else None)
    back = next(iter(records_from_batch(buffer.to_batch())))
    assert back["timestamp"] == text


def test_round_trip_gives_the_api_objects_back(store: Store) -> None:
    recs = [
        *conversations(30),
        conversation(40) | {"content": "Grüße aus Köln — ça va? 你好 🙂👍🏽", "emoji_key_🙂": "✓"},
        conversation(41) | {"campaignId": 'line\nbreak\ttab "quoted" back\\slash \u2028 \u0000'},
        conversation(42) | {"weird": "lone surrogate \ud800", "big": 10**30, "float": 1.5e-7, "none": None},
        conversation(43) | {"startedAt": "2024-01-15T10:00:00.000001Z", "endedAt": "9999-12-31T23:59:59.999999Z"},
        conversation(44) | {"createdAt": "0001-01-01T00:00:00Z", "list": [], "obj": {}},
    ]
    manifest = run(store, recs, max_records_per_part=11, row_group_size=5)
    got = list(iter_records(store.dest))
    assert got == recs
    # Key order: the fixed columns in schema order first, then the other fields (sorted).
    assert list(got[33])[: len(FIXED_CONVERSATION_FIELDS)] == FIXED_CONVERSATION_FIELDS
    assert len(manifest["files"]) == 4


def test_round_trip_of_messages(tmp_path: Path) -> None:
    recs = [message(i) for i in range(40)]
    recs[3] = recs[3] | {"attachments": [{"type": "image"}]}
    recs[4] = recs[4] | {"timestamp": None}
    manifest = local_run(tmp_path / "m", recs, schema=MESSAGES, max_records_per_part=15)
    assert manifest["schema"]["name"] == "messages"
    table = pq.read_table(tmp_path / "m" / pname(T1, 0, ".parquet"))
    assert table.schema.equals(MESSAGES.arrow_schema(), check_metadata=True)
    assert table.column("extra").to_pylist()[3] == '{"attachments":[{"type":"image"}]}'
    assert list(iter_records(resolve_destination(str(tmp_path / "m"), None))) == recs


def test_an_absent_fixed_field_reads_back_as_null(tmp_path: Path) -> None:
    rec = conversation(1)
    del rec["endedAt"]
    local_run(tmp_path / "c", [rec])
    assert list(iter_records(resolve_destination(str(tmp_path / "c"), None))) == [rec | {"endedAt": None}]


def test_format_timestamp() -> None:
    assert format_timestamp(0) == "1970-01-01T00:00:00Z"
    assert format_timestamp(1) == "1970-01-01T00:00:00.000001Z"
    assert format_timestamp(-1) == "1969-12-31T23:59:59.999999Z"


def test_jsonl_ignores_the_schema(tmp_path: Path) -> None:
    manifest = local_run(tmp_path / "j", [BAD], file_format="jsonl")
    assert "schema" not in manifest
    assert manifest["format"] == "jsonl"
    assert list(iter_records(resolve_destination(str(tmp_path / "j"), None))) == [BAD]
