"""Apache Airflow provider for the Auralytik Conversations API."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_PKG = "airflow_provider_auralytik"


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-provider-auralytik",
        "name": "Auralytik",
        "description": "Export Auralytik conversations and PII-masked messages; wait for completion.",
        "versions": [__version__],
        "connection-types": [
            {"connection-type": "auralytik", "hook-class-name": f"{_PKG}.hooks.auralytik.AuralytikHook"}
        ],
        "hooks": [{"integration-name": "Auralytik", "python-modules": [f"{_PKG}.hooks.auralytik"]}],
        "operators": [{"integration-name": "Auralytik", "python-modules": [f"{_PKG}.operators.export"]}],
        "sensors": [{"integration-name": "Auralytik", "python-modules": [f"{_PKG}.sensors.conversations"]}],
        "triggers": [{"integration-name": "Auralytik", "python-modules": [f"{_PKG}.triggers.conversations"]}],
        "integrations": [
            {
                "integration-name": "Auralytik",
                "external-doc-url": "https://api.auralytik.com/v1",
                "tags": ["service"],
            }
        ],
    }
