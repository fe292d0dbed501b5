"""The one place that imports Airflow names whose home moved between Airflow 3 releases.

``airflow.sdk`` gained ``BaseHook`` only in 3.1; on 3.0 it lives in ``airflow.hooks.base``.
Everything else in the package imports Airflow through this module.
"""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.sdk import (
    BaseOperator,
    BaseSensorOperator,
    Context,
    ObjectStoragePath,
    conf,
)
from airflow.sdk.exceptions import AirflowException, AirflowSkipException
from airflow.triggers.base import BaseTrigger, TriggerEvent

try:
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 3.0
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined,unused-ignore]

__all__ = [
    "AirflowException",
    "AirflowSkipException",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "BaseTrigger",
    "Context",
    "ObjectStoragePath",
    "TriggerEvent",
    "aget_connection",
    "conf",
]


async def aget_connection(conn_id: str) -> Any:
    """
    Fetch a connection from async code (the triggerer) without blocking its event loop.

    ``BaseHook.aget_connection`` exists from Airflow 3.1, but before 3.3.2 it masks secrets with a
    synchronous supervisor call that can deadlock; there, and on 3.0, a worker thread does the work.
    """
    from airflow.sdk import Connection

    if hasattr(BaseHook, "aget_connection") and hasattr(Connection, "aextra_dejson"):
        return await BaseHook.aget_connection(conn_id)
    return await asyncio.to_thread(BaseHook.get_connection, conn_id)
