"""A local, standard-library-only sandbox of the Auralytik Conversations API.

It never imports Airflow. Start it from Python::

    from airflow_provider_auralytik.sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(seed=42, days=7, per_day=300)) as sandbox:
        print(sandbox.url, sandbox.api_key)

or from a shell: ``python -m airflow_provider_auralytik.sandbox --port 7431`` (the default port).
"""

from __future__ import annotations

from airflow_provider_auralytik.sandbox.data import MASK, SandboxConfig
from airflow_provider_auralytik.sandbox.server import Sandbox, SandboxStats

__all__ = ["MASK", "Sandbox", "SandboxConfig", "SandboxStats"]
