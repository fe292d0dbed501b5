"""OpenLineage dataset names for the API and for export destinations, by OpenLineage's naming rules."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


def api_dataset_names(api_host: str, kind: str) -> tuple[str, list[str]]:
    """``(namespace, [names])`` of the API endpoints an export reads: ``https://host`` and URL paths."""
    parts = urlsplit(api_host)
    namespace = f"{parts.scheme}://{parts.netloc}"
    base = parts.path.rstrip("/")
    names = [f"{base}/conversations"]
    if kind == "messages":
        names.append(f"{base}/conversations/{{id}}/messages")
    return namespace, names


def storage_dataset_name(path: Any) -> tuple[str, str]:
    """
    ``(namespace, name)`` of a destination ``ObjectStoragePath``.

    S3 and GCS: ``s3://bucket`` / ``gs://bucket`` and the key; Azure: ``abfss://container@account.dfs.core.windows.net``
    when the account is known; local files: ``file`` and the absolute path.
    """
    protocol = (path.protocol or "file").split("::")[0]
    full = str(path.path).lstrip("/") if protocol != "file" else str(path.path)
    if protocol in ("file", "local"):
        return "file", full
    bucket, _, key = full.partition("/")
    if protocol in ("s3", "s3a", "s3n"):
        return f"s3://{bucket}", key
    if protocol in ("gs", "gcs"):
        return f"gs://{bucket}", key
    if protocol in ("abfs", "abfss", "az", "adl"):
        account = getattr(getattr(path, "fs", None), "account_name", None)
        if account:
            return f"abfss://{bucket}@{account}.dfs.core.windows.net", key
        return f"abfss://{bucket}", key
    return f"{protocol}://{bucket}", key
