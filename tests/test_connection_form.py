"""The connection form and its Test button, against a real ``airflow api-server`` on 127.0.0.1.

The server runs in a subprocess with its own AIRFLOW_HOME (SQLite, migrated), SimpleAuthManager
with every user an admin (so the API needs no login) and ``[core] test_connection = Enabled``.
Airflow 3.2+ reads the form from ``get_provider_info()["connection-types"][...]["ui-field-behaviour"]``;
Airflow 3.0/3.1 from ``AuralytikHook.get_ui_field_behaviour()``: CI runs this on both lines.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from packaging.version import Version

from airflow_provider_auralytik import DOCS_URL, get_provider_info
from airflow_provider_auralytik._compat import AIRFLOW_VERSION
from airflow_provider_auralytik.hooks.auralytik import AuralytikHook, HookSettings

STARTUP_TIMEOUT = 60.0


def _auralytik_connection_type() -> dict[str, Any]:
    (entry,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "auralytik"]
    return entry


# ---------------------------------------------------------------------------------------------
# Declarations, without a server
# ---------------------------------------------------------------------------------------------


def test_provider_info_declares_the_form_the_current_way():
    entry = _auralytik_connection_type()
    assert entry["hook-class-name"] == "airflow_provider_auralytik.hooks.auralytik.AuralytikHook"
    assert entry["hook-name"] == "Auralytik"
    behaviour = entry["ui-field-behaviour"]
    assert sorted(behaviour["hidden-fields"]) == ["login", "port", "schema"]
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
    assert behaviour["placeholders"]["host"] == "https://api.auralytik.com/v1"
    assert json.loads(behaviour["placeholders"]["extra"])  # a JSON example of the extras


EXTRAS = ["timeout", "max_retries", "max_concurrency", "rate_limit_max_wait", "max_requests_per_second"]


def test_provider_info_declares_the_extras_as_form_fields():
    fields = _auralytik_connection_type()["conn-fields"]
    assert list(fields) == EXTRAS
    for name, field in fields.items():
        assert field["label"], name
        assert field["description"], name
        assert "null" in field["schema"]["type"], name  # every extra may stay empty: the hook's default
    assert "integer" in fields["max_retries"]["schema"]["type"]
    assert "number" in fields["timeout"]["schema"]["type"]


def test_the_declared_defaults_are_the_hooks():
    # Each description states the default the hook applies when the field is left empty.
    fields = _auralytik_connection_type()["conn-fields"]
    defaults = HookSettings(base_url="x", api_key="k")
    for name in ("timeout", "max_retries", "max_concurrency", "rate_limit_max_wait"):
        assert f"Default {getattr(defaults, name):g}" in fields[name]["description"], name
    assert defaults.max_requests_per_second is None


def test_the_hook_derives_its_form_from_the_provider_info():
    # Airflow 3.0/3.1 only call the hook's method: it is built from the one definition.
    declared = _auralytik_connection_type()["ui-field-behaviour"]
    from_hook = AuralytikHook.get_ui_field_behaviour()
    assert from_hook == {
        "hidden_fields": declared["hidden-fields"],
        "relabeling": declared["relabeling"],
        "placeholders": declared["placeholders"],
    }
    from_hook["relabeling"]["host"] = "changed"  # a copy: callers cannot alter the definition
    assert AuralytikHook.get_ui_field_behaviour()["relabeling"]["host"] == "Base URL"


@pytest.mark.skipif(importlib.util.find_spec("wtforms") is None, reason="Airflow 3.0/3.1 form widgets need WTForms")
def test_the_hook_derives_its_widgets_from_the_provider_info():
    from wtforms import IntegerField, StringField

    declared = _auralytik_connection_type()["conn-fields"]
    widgets = AuralytikHook.get_connection_form_widgets()
    assert list(widgets) == EXTRAS
    for name, widget in widgets.items():
        assert widget.args[0] == declared[name]["label"]
        assert widget.kwargs["description"] == declared[name]["description"]
    assert widgets["max_retries"].field_class is IntegerField
    assert widgets["timeout"].field_class is StringField  # a float, parsed by the hook


@pytest.mark.parametrize("empty", [None, ""])
def test_extras_left_empty_in_the_form_mean_the_defaults(empty: Any):
    from airflow.models.connection import Connection

    conn = Connection(
        conn_id="auralytik_form",
        conn_type="auralytik",
        password="k",
        extra=json.dumps({name: empty for name in EXTRAS} | {"max_retries": 2}),
    )
    settings = HookSettings.from_connection(conn, "auralytik_form", {})
    defaults = HookSettings(base_url="x", api_key="k")
    assert settings.max_retries == 2
    assert (settings.timeout, settings.max_concurrency, settings.rate_limit_max_wait) == (
        defaults.timeout,
        defaults.max_concurrency,
        defaults.rate_limit_max_wait,
    )
    assert settings.max_requests_per_second is None


def test_external_doc_url_points_at_the_docs():
    (integration,) = get_provider_info()["integrations"]
    assert integration["external-doc-url"] == f"{DOCS_URL}/index.md"
    assert DOCS_URL.startswith("https://github.com/")
    assert DOCS_URL.endswith("/docs")
    assert (Path(__file__).resolve().parents[1] / "docs" / "index.md").exists()


def test_provider_info_is_valid_for_the_installed_airflow():
    import importlib.resources

    import jsonschema

    schema = json.loads((importlib.resources.files("airflow") / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


# ---------------------------------------------------------------------------------------------
# A real API server
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ApiServer:
    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=30)

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=60)


def _server_env(home: Path) -> dict[str, str]:
    # Nothing of the test process's Airflow set-up (its AIRFLOW_HOME, DB, connections) leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its uvicorn workers (its own process group), whatever state it is in."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
    else:  # the leader is gone; its workers may not be
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    home = tmp_path_factory.mktemp("api-server-home")
    (home / "dags").mkdir()
    env = _server_env(home)
    airflow = [sys.executable, "-m", "airflow"]

    migrate = subprocess.run(
        [*airflow, "db", "migrate"], env=env, cwd=home, capture_output=True, text=True, timeout=180
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

    port = _free_port()
    log = home / "api-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown stops the workers too
        )
    server = ApiServer(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"airflow api-server exited with {process.returncode}:\n{server.tail()}")
            try:
                if server.get("/api/v2/monitor/health").status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"airflow api-server not healthy after {STARTUP_TIMEOUT:.0f} s:\n{server.tail()}")
            time.sleep(0.25)
        yield server
    finally:
        _stop(process)


@pytest.mark.skipif(
    Version("3.2") > AIRFLOW_VERSION and importlib.util.find_spec("wtforms") is None,
    reason="Airflow < 3.2 reads a hook's form (get_ui_field_behaviour) only when wtforms is installed",
)
def test_hook_meta_shows_the_auralytik_form(api_server: ApiServer):
    response = api_server.get("/ui/connections/hook_meta")
    assert response.status_code == 200, response.text
    (meta,) = [m for m in response.json() if m["connection_type"] == "auralytik"]

    assert meta["hook_name"] == "Auralytik"
    assert meta["hook_class_name"] == "airflow_provider_auralytik.hooks.auralytik.AuralytikHook"
    # default_conn_name: Airflow 3.2+ no longer imports the hook for this, so it may be None.
    assert meta["default_conn_name"] in (None, "auralytik_default")
    fields = meta["standard_fields"]
    assert fields["host"] == {"hidden": False, "title": "Base URL", "placeholder": "https://api.auralytik.com/v1"}
    assert fields["password"] == {
        "hidden": False,
        "title": "API key",
        "placeholder": "Auralytik API key with the conversations:read scope",
    }
    for hidden in ("url_schema", "port", "login"):
        assert fields[hidden]["hidden"] is True, hidden
    # The extras are form fields, not only a JSON editor showing {}.
    extra_fields = meta["extra_fields"]
    assert list(extra_fields) == EXTRAS
    declared = _auralytik_connection_type()["conn-fields"]
    for name, field in extra_fields.items():
        assert field["schema"]["title"] == declared[name]["label"], name
        assert field["description"] == declared[name]["description"], name
        assert field["value"] is None, name  # empty: the hook's default applies
    assert "integer" in extra_fields["max_retries"]["schema"]["type"]


def _test_body(host: str, key: str) -> dict[str, Any]:
    return {
        "connection_id": f"auralytik_form_test_{secrets.token_hex(4)}",
        "conn_type": "auralytik",
        "host": host,
        "password": key,
        "extra": json.dumps({"max_retries": 0, "timeout": 10}),
    }


def test_test_button_succeeds_against_the_sandbox(api_server: ApiServer, make_sandbox: Any):
    sandbox = make_sandbox()
    response = api_server.post("/api/v2/connections/test", _test_body(sandbox.url, sandbox.api_key))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] is True, result
    assert sandbox.url in result["message"]
    assert "conversations visible" in result["message"]


def test_test_button_reports_a_wrong_key_without_echoing_it(api_server: ApiServer, make_sandbox: Any):
    sandbox = make_sandbox()
    wrong_key = f"wrong-{secrets.token_hex(12)}"
    response = api_server.post("/api/v2/connections/test", _test_body(sandbox.url, wrong_key))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] is False, result
    assert result["message"].strip()
    assert "key" in result["message"].lower()  # says what is wrong
    assert wrong_key not in result["message"]
    assert wrong_key not in api_server.tail(400)


# ---------------------------------------------------------------------------------------------
# The UI's Test button on a stored connection (Airflow 3.3) and what works instead
# ---------------------------------------------------------------------------------------------


def _store(api_server: ApiServer, conn_id: str, host: str, key: str) -> None:
    """Save a connection the way the UI's form does: hidden fields (port, login, schema) left out."""
    body = {"connection_id": conn_id, "conn_type": "auralytik", "host": host, "password": key, "extra": "{}"}
    response = api_server.post("/api/v2/connections", body)
    assert response.status_code == 201, response.text


@pytest.mark.skipif(Version("3.3") > AIRFLOW_VERSION, reason="the stored-endpoint check of the test route is 3.3's")
def test_ui_test_button_on_a_stored_connection_is_refused_by_airflow(api_server: ApiServer, make_sandbox: Any):
    """What the Test button of Admin > Connections sends for a stored connection: the row as listed,
    ``port: Number(null)`` = 0 and the masked key. Airflow 3.3.2 refuses it whatever the form hides
    (any connection without a port; ``http`` ones too): docs/connection.md names the alternatives."""
    sandbox = make_sandbox()
    conn_id = f"auralytik_stored_{secrets.token_hex(4)}"
    _store(api_server, conn_id, sandbox.url, sandbox.api_key)
    ui_body = {"connection_id": conn_id, "conn_type": "auralytik", "description": "", "extra": "{}",
               "host": sandbox.url, "login": "", "password": "***", "port": 0, "schema": ""}  # fmt: skip
    refused = api_server.post("/api/v2/connections/test", ui_body)
    assert refused.status_code == 400, refused.text
    assert "differs from the stored connection" in refused.text
    # The same request with the port the UI would send if it sent none: the stored key is used.
    fine = api_server.post("/api/v2/connections/test", {k: v for k, v in ui_body.items() if k != "port"})
    assert fine.status_code == 200, fine.text
    assert fine.json()["status"] is True, fine.json()


def test_airflow_connections_test_checks_a_stored_connection(api_server: ApiServer, make_sandbox: Any):
    """The documented alternative: ``airflow connections test <conn_id>`` on any Airflow machine."""
    sandbox = make_sandbox()
    conn_id = f"auralytik_cli_{secrets.token_hex(4)}"
    _store(api_server, conn_id, sandbox.url, sandbox.api_key)
    home = Path(api_server.log).parent
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "connections", "test", conn_id],
        env=_server_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Connection success!" in done.stdout
    assert sandbox.api_key not in done.stdout + done.stderr
