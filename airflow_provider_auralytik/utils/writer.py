"""Former home of the writer, kept so that published import paths keep working.

The code lives in :mod:`airflow_provider_auralytik.output` (one module per job); this module re-exports the
names it used to define.
"""

from __future__ import annotations

from airflow_provider_auralytik.output.destination import (
    DestinationError,
    check_destination,
    remove_tree,
    resolve_destination,
)
from airflow_provider_auralytik.output.manifest import MANIFEST_NAME, manifest_bytes
from airflow_provider_auralytik.output.parts import (
    DEFAULT_ROW_GROUP_SIZE,
    FORMAT,
    GZIP_LEVEL,
    PARQUET,
    PARQUET_COMPRESSIONS,
    PARQUET_INSTALL_HINT,
    PARQUET_SUFFIX,
    PART_PREFIX,
    PartInfo,
)
from airflow_provider_auralytik.output.reader import SnapshotChangedError, iter_records, read_manifest
from airflow_provider_auralytik.output.snapshot import SnapshotConflictError, new_run_token
from airflow_provider_auralytik.output.writer import PartWriter

__all__ = [
    "DEFAULT_ROW_GROUP_SIZE",
    "FORMAT",
    "GZIP_LEVEL",
    "MANIFEST_NAME",
    "PARQUET",
    "PARQUET_COMPRESSIONS",
    "PARQUET_INSTALL_HINT",
    "PARQUET_SUFFIX",
    "PART_PREFIX",
    "DestinationError",
    "PartInfo",
    "PartWriter",
    "SnapshotChangedError",
    "SnapshotConflictError",
    "check_destination",
    "iter_records",
    "manifest_bytes",
    "new_run_token",
    "read_manifest",
    "remove_tree",
    "resolve_destination",
]
