"""Cluster policy of the test deployment (``airflow_local_settings`` on the PYTHONPATH of every
Airflow process): the example DAGs unchanged, with intervals short enough for a test.

* Sensors poke (and their triggers poll) every ``AURALYTIK_DEPLOYMENT_POKE_INTERVAL`` seconds
  instead of the example's 5 minutes.
* Retries wait ``AURALYTIK_DEPLOYMENT_RETRY_DELAY`` seconds instead of 5 minutes.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any


def task_policy(task: Any) -> None:
    from airflow.sdk import BaseSensorOperator

    if isinstance(task, BaseSensorOperator):
        task.poke_interval = float(os.environ.get("AURALYTIK_DEPLOYMENT_POKE_INTERVAL", "2"))
    task.retry_delay = timedelta(seconds=float(os.environ.get("AURALYTIK_DEPLOYMENT_RETRY_DELAY", "3")))
