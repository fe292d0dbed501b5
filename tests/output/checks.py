"""What a careful reader checks: the manifest, and every file it lists there with its size and sha256."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

MANIFEST = "_manifest.json"


def local_snapshot(directory: Path) -> dict[str, Any] | None:
    """The committed manifest under ``directory`` after checking every listed file; ``None`` if none.

    :raises AssertionError: a listed file is missing or differs from the manifest.
    """
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_bytes())
    except FileNotFoundError:
        return None
    for entry in manifest["files"]:
        data = (directory / entry["path"]).read_bytes()
        assert len(data) == entry["bytes"], entry["path"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
    return manifest


def s3_snapshot(s3: Any, prefix: str) -> dict[str, Any] | None:
    """:func:`local_snapshot` for ``s3://<bucket>/<prefix>`` on the moto server (boto3, no s3fs caches)."""
    keys = s3.keys(f"{prefix}/")
    if f"{prefix}/{MANIFEST}" not in keys:
        return None
    manifest: dict[str, Any] = json.loads(s3.get(f"{prefix}/{MANIFEST}"))
    for entry in manifest["files"]:
        data = s3.get(f"{prefix}/{entry['path']}")
        assert len(data) == entry["bytes"], entry["path"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
    return manifest


def local_files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative name -> bytes)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def is_missing(exc: BaseException) -> bool:
    """A file that is not there: ``FileNotFoundError`` locally, ``NoSuchKey`` from boto3."""
    return isinstance(exc, FileNotFoundError) or type(exc).__name__ == "NoSuchKey"


def careful_read(read: Callable[[str], bytes]) -> dict[str, Any] | None:
    """Read the current snapshot as docs/output.md tells a reader to; return its manifest (``None``: none yet).

    Every listed file must be there with its size and sha256, except that one may be missing because a newer
    snapshot replaced the one being read: then the manifest must have changed to a newer run token (and that
    newer manifest is returned). Anything else is an inconsistent snapshot: ``AssertionError``.
    """
    try:
        manifest: dict[str, Any] = json.loads(read(MANIFEST))
    except Exception as exc:
        if is_missing(exc):
            return None
        raise
    for entry in manifest["files"]:
        try:
            data = read(entry["path"])
        except Exception as exc:
            if not is_missing(exc):
                raise
            now: dict[str, Any] = json.loads(read(MANIFEST))
            assert now["run_token"] > manifest["run_token"], f"{entry['path']} missing, manifest unchanged"
            return now
        assert len(data) == entry["bytes"], entry["path"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
    return manifest
