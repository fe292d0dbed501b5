"""The one place that imports Airflow names whose home moved between Airflow 3 releases.

Supported: Airflow 3.0.6 and newer 3.x (CI runs the whole suite on 3.0.6 and on the newest 3.x).
What differs on 3.0 (Task SDK 1.0):

* ``airflow.sdk`` has no ``BaseHook`` (3.1+): it lives in ``airflow.hooks.base``.
* ``airflow.sdk`` has no ``conf`` (3.1+): ``airflow.configuration.conf``.
* ``airflow.sdk.exceptions`` has none of ``AirflowException``, ``AirflowSkipException``,
  ``AirflowSensorTimeout``, ``AirflowRescheduleException``, ``TaskDeferred`` (3.1+): they are in
  ``airflow.exceptions`` (the same classes on 3.1+, re-exported there with a deprecation warning).
* ``BaseHook.aget_connection`` (3.1+) is missing: see :func:`aget_connection`.
* ``DagBag`` is ``airflow.models.dagbag.DagBag`` (``airflow.dag_processing.dagbag`` from 3.1).

Everything else in the package (and the tests) imports these names from this module.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow import __version__ as _airflow_version
from airflow.sdk import (
    Asset,
    AssetAlias,
    BaseOperator,
    BaseSensorOperator,
    Context,
    ObjectStoragePath,
)
from airflow.triggers.base import BaseTrigger, TriggerEvent
from packaging.version import Version

#: The installed Airflow release (``base_version``: ``3.1.0rc1`` compares as ``3.1.0``).
AIRFLOW_VERSION = Version(Version(_airflow_version).base_version)
AIRFLOW_V_3_1_PLUS = Version("3.1.0") <= AIRFLOW_VERSION

if TYPE_CHECKING or AIRFLOW_V_3_1_PLUS:
    from airflow.sdk import BaseHook, conf
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowNotFoundException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
else:  # Airflow 3.0
    from airflow.configuration import conf
    from airflow.exceptions import (
        AirflowException,
        AirflowNotFoundException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
    from airflow.hooks.base import BaseHook

if TYPE_CHECKING:
    from airflow.dag_processing.dagbag import DagBag


def __getattr__(name: str) -> Any:
    # ``DagBag`` (tests only) is resolved lazily: importing it pulls in the scheduler-side models.
    if name == "DagBag":
        try:
            from airflow.dag_processing.dagbag import DagBag
        except ImportError:  # Airflow 3.0
            from airflow.models.dagbag import DagBag  # type: ignore[no-redef,unused-ignore]  # its 3.0 home
        return DagBag
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_1_PLUS",
    "AirflowException",
    "AirflowNotFoundException",
    "AirflowRescheduleException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "Asset",
    "AssetAlias",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "BaseTrigger",
    "Context",
    "DagBag",
    "ObjectStoragePath",
    "TaskDeferred",
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
