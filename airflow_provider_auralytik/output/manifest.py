"""The manifest: its name, its header, how it is serialised and parsed.

``_manifest.json`` is the commit point of a snapshot (see :mod:`airflow_provider_auralytik.output.snapshot`).
Its keys are documented for readers in ``docs/output.md``; :func:`manifest_header` is the one place that
builds the keys every manifest starts with, for both export operators and the sliced combine.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from airflow_provider_auralytik.conversations.window import format_instant

MANIFEST_NAME = "_manifest.json"
#: Keys may be added within a version; none changes meaning without a new one.
MANIFEST_VERSION = 1
PROVIDER = "airflow-provider-auralytik"


def manifest_header(
    *,
    kind: str,
    api_host: str,
    window: dict[str, str],
    filters: dict[str, Any],
    started_at: datetime | str,
    finished_at: datetime | str,
) -> dict[str, Any]:
    """The keys every manifest starts with, in their documented order.

    :param kind: ``"conversations"`` or ``"messages"``.
    :param api_host: The API base URL (never the key).
    :param window: ``{"date_from": "…Z", "date_to": "…Z"}``.
    :param filters: The listing filters that were set.
    :param started_at: When the export started (a combined manifest: the earliest slice's).
    :param finished_at: When the last record was fetched (combined: the latest slice's).
    """
    from airflow_provider_auralytik import __version__

    return {
        "manifest_version": MANIFEST_VERSION,
        "kind": kind,
        "provider": PROVIDER,
        "provider_version": __version__,
        "api_host": api_host,
        "window": window,
        "filters": filters,
        "started_at": started_at if isinstance(started_at, str) else format_instant(started_at),
        "finished_at": finished_at if isinstance(finished_at, str) else format_instant(finished_at),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """How every ``_manifest.json`` is serialised: pretty JSON, UTF-8, a final newline; datetimes as ISO."""
    return (json.dumps(manifest, indent=2, ensure_ascii=False, default=_json_default) + "\n").encode()


def parse_manifest(data: bytes, where: object) -> dict[str, Any]:
    """The manifest in ``data`` (read from ``where``, named in the error if it is not a JSON object)."""
    manifest = json.loads(data.decode("utf-8"))
    if not isinstance(manifest, dict):
        raise ValueError(f"{where} is not a JSON object")
    return manifest


def manifest_run_token(manifest: dict[str, Any] | None) -> str:
    """The run token of a committed manifest; ``""`` (older than every run) for none or one from version 0.1."""
    if not manifest:
        return ""
    return str(manifest.get("run_token") or "")
