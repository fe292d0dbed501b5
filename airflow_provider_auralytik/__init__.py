"""Apache Airflow provider for the Auralytik Conversations API."""

from __future__ import annotations

import copy
from typing import Any

__version__ = "0.1.0"

_PKG = "airflow_provider_auralytik"

#: The user documentation (the ``docs/`` folder of the repository): linked from Airflow's providers
#: page and from errors that need more than one line of explanation.
DOCS_URL = "https://github.com/auralytik/airflow-provider-auralytik/blob/main/docs"

#: The defaults of the connection's extras that the form shows, defined once: the hook applies them
#: (``HookSettings``), the form's descriptions state them, and the messages export's ``max_concurrency``
#: starts from the same 16. Here, where reading them imports nothing.
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 6
DEFAULT_MAX_CONCURRENCY = 16
DEFAULT_RATE_LIMIT_MAX_WAIT = 600.0

#: The connection form, defined once. Airflow 3.2+ reads it from the provider info without importing
#: the hook (``ui-field-behaviour`` and ``conn-fields``); Airflow 3.0/3.1 ask the hook, whose
#: ``get_ui_field_behaviour()`` and ``get_connection_form_widgets()`` are derived from these.
#: ``port`` stays hidden: showing it would not help the UI's Test button (see docs/connection.md).
_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {
        "host": "https://api.auralytik.com/v1",
        "password": "Auralytik API key with the conversations:read scope",
        "extra": f'{{"timeout": {DEFAULT_TIMEOUT:g}, "max_retries": {DEFAULT_MAX_RETRIES}, '
        f'"max_concurrency": {DEFAULT_MAX_CONCURRENCY}}}',
    },
}

#: The connection's optional extras, as form fields (stored in ``extra`` under these names; empty
#: means the hook's default, which each description states).
_CONN_FIELDS: dict[str, dict[str, Any]] = {
    "timeout": {
        "label": "Timeout (seconds)",
        "description": f"Seconds a request may take, connecting and reading. Default {DEFAULT_TIMEOUT:g}.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of a transient fault (408, 5xx, dropped connection, timeout) per request. "
        f"Default {DEFAULT_MAX_RETRIES}; 0 disables them. A 429 spends none: see the rate limit wait.",
        "schema": {"type": ["integer", "null"], "minimum": 0},
    },
    "max_concurrency": {
        "label": "Max concurrency",
        "description": f"Requests in flight at once (the HTTP pool). Default {DEFAULT_MAX_CONCURRENCY}.",
        "schema": {"type": ["integer", "null"], "minimum": 1},
    },
    "rate_limit_max_wait": {
        "label": "Rate limit max wait (seconds)",
        "description": "Seconds a request may be held back by 429 answers before the task fails. "
        f"Default {DEFAULT_RATE_LIMIT_MAX_WAIT:g}.",
        "schema": {"type": ["number", "null"], "minimum": 0},
    },
    "max_requests_per_second": {
        "label": "Max requests per second",
        "description": "A client-side limit for a key whose quota you know. Empty: learned from the 429s.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
}


def ui_field_behaviour() -> dict[str, Any]:
    """The form's standard fields the way a hook's ``get_ui_field_behaviour()`` returns them (snake_case)."""
    return {key.replace("-", "_"): copy.deepcopy(value) for key, value in _UI_FIELD_BEHAVIOUR.items()}


def connection_form_widgets() -> dict[str, Any]:
    """
    The extras as WTForms fields, for Airflow 3.0/3.1's ``get_connection_form_widgets()``.

    WTForms is imported here, at call time: Airflow's API server substitutes its own field classes
    for WTForms' while it calls this, and has no WTForms at all without the FAB provider.
    """
    from wtforms import IntegerField, StringField
    from wtforms.validators import Optional

    fields: dict[str, Any] = {}
    for name, field in _CONN_FIELDS.items():
        # No float field among the ones Airflow substitutes: a number is typed as text (the hook parses it).
        kind = IntegerField if "integer" in field["schema"]["type"] else StringField
        fields[name] = kind(field["label"], validators=[Optional()], description=field["description"])
    return fields


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
                "ui-field-behaviour": copy.deepcopy(_UI_FIELD_BEHAVIOUR),
                "conn-fields": copy.deepcopy(_CONN_FIELDS),
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
