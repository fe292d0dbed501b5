"""Apache Airflow provider for the Auralytik Conversations API."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_PKG = "airflow_provider_auralytik"

#: The user documentation (the ``docs/`` folder of the repository): linked from Airflow's providers
#: page and from errors that need more than one line of explanation.
DOCS_URL = "https://github.com/auralytik/airflow-provider-auralytik/blob/main/docs"

#: The connection form, declared the Airflow 3.2+ way (``ui-field-behaviour`` in the provider info,
#: read by the API server without importing the hook). Airflow 3.0/3.1 read the same thing from
#: ``AuralytikHook.get_ui_field_behaviour()`` (snake_case keys); tests keep the two identical.
_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {
        "host": "https://api.auralytik.com/v1",
        "password": "Auralytik API key with the conversations:read scope",
        "extra": '{"timeout": 30, "max_retries": 6, "max_concurrency": 16}',
    },
}


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-provider-auralytik",
        "name": "Auralytik",
        "description": "Export Auralytik conversations and PII-masked messages; wait for completion.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "auralytik",
                "hook-class-name": f"{_PKG}.hooks.auralytik.AuralytikHook",
                "hook-name": "Auralytik",
                "ui-field-behaviour": {
                    "hidden-fields": list(_UI_FIELD_BEHAVIOUR["hidden-fields"]),
                    "relabeling": dict(_UI_FIELD_BEHAVIOUR["relabeling"]),
                    "placeholders": dict(_UI_FIELD_BEHAVIOUR["placeholders"]),
                },
            }
        ],
        "hooks": [{"integration-name": "Auralytik", "python-modules": [f"{_PKG}.hooks.auralytik"]}],
        "operators": [
            {
                "integration-name": "Auralytik",
                "python-modules": [
                    f"{_PKG}.operators.export",
                    f"{_PKG}.operators.slices",
                    f"{_PKG}.operators.catch_up",
                ],
            }
        ],
        "sensors": [{"integration-name": "Auralytik", "python-modules": [f"{_PKG}.sensors.conversations"]}],
        "triggers": [{"integration-name": "Auralytik", "python-modules": [f"{_PKG}.triggers.conversations"]}],
        "integrations": [
            {
                "integration-name": "Auralytik",
                "external-doc-url": f"{DOCS_URL}/index.md",
                "tags": ["service"],
            }
        ],
    }
