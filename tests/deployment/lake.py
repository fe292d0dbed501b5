"""Reading the lake (moto S3) and the sandbox's truth, for the deployment tests.

The exports are read here with plain boto3, as any reader would: the manifest first, then exactly the
files it lists, each checked against the manifest (bytes, SHA-256, rows).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MANIFEST = "_manifest.json"


class Lake:
    """One bucket of the moto S3 server."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(keys)

    def get(self, key: str) -> bytes | None:
        try:
            data: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        return data

    def manifest(self, prefix: str) -> dict[str, Any] | None:
        data = self.get(f"{prefix}/{MANIFEST}")
        return None if data is None else dict(json.loads(data))

    def read_snapshot(self, prefix: str) -> Snapshot:
        """The committed snapshot under ``prefix``: its manifest and the records of the files it lists."""
        manifest = self.manifest(prefix)
        assert manifest is not None, f"no {MANIFEST} under s3://{self.bucket}/{prefix}"
        records: list[dict[str, Any]] = []
        for entry in manifest["files"]:
            key = f"{prefix}/{entry['path']}"
            data = self.get(key)
            assert data is not None, f"{key} is listed by the manifest but missing"
            problem = check_part(entry, data)
            assert problem is None, f"{key}: {problem}"
            records.extend(parse_part(entry["path"], data))
        return Snapshot(prefix, manifest, records)

    def check_readable(self, prefix: str) -> str | None:
        """What a reader arriving now would find wrong under ``prefix`` (None: nothing). A manifest
        replaced while it is read (its old parts then removed) is not a fault: read again."""
        for _ in range(5):
            manifest = self.manifest(prefix)
            if manifest is None:
                return None  # no snapshot (yet, or withdrawn): nothing to read, nothing half-written
            for entry in manifest["files"]:
                data = self.get(f"{prefix}/{entry['path']}")
                if data is None:
                    break  # listed but gone: fault only if the manifest did not change meanwhile
                problem = check_part(entry, data)
                if problem is not None:
                    return f"{prefix}/{entry['path']}: {problem}"
            else:
                return None
            if self.manifest(prefix) == manifest:
                return f"{prefix}/{entry['path']}: listed by the current manifest but missing"
        return f"{prefix}: the manifest kept changing while it was read"


@dataclass
class Snapshot:
    prefix: str
    manifest: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def listed_keys(self) -> set[str]:
        return {f"{self.prefix}/{entry['path']}" for entry in self.manifest["files"]}


def check_part(entry: dict[str, Any], data: bytes) -> str | None:
    if len(data) != entry["bytes"]:
        return f"{len(data)} bytes stored, manifest says {entry['bytes']}"
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        return "sha256 differs from the manifest"
    if len(parse_part(entry["path"], data)) != entry["rows"]:
        return "row count differs from the manifest"
    return None


def parse_part(name: str, data: bytes) -> list[dict[str, Any]]:
    text = gzip.decompress(data) if name.endswith(".gz") else data
    return [json.loads(line) for line in text.splitlines() if line]


def day_prefix(root_key: str, kind: str, day: datetime) -> str:
    """``auralytik/conversations/date=YYYY-MM-DD`` (the example DAGs' layout under the export root)."""
    return f"{root_key}/{kind}/date={day:%Y-%m-%d}"


def truth_conversations(truth: Any, start: datetime, end: datetime) -> dict[str, dict[str, Any]]:
    """The conversations created in ``[start, end)`` as the API serves them once completed, by id."""
    return {cid: truth.get_conversation(cid) for cid in truth.conversations_in(start, end)}


def truth_messages(truth: Any, start: datetime, end: datetime) -> dict[str, list[dict[str, Any]]]:
    """The export's lines for ``[start, end)``: per conversation, its masked messages plus ``conversationId``."""
    return {
        cid: [{**message, "conversationId": cid} for message in truth.messages(cid, exclude_pii=True)]
        for cid in truth.conversations_in(start, end)
    }


def by_conversation(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Message lines grouped by ``conversationId``, each conversation's lines in file order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        grouped.setdefault(record["conversationId"], []).append(record)
    return grouped
