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

from airflow_provider_auralytik import get_provider_info
from airflow_provider_auralytik._compat import AIRFLOW_VERSION
from airflow_provider_auralytik.hooks.auralytik import AuralytikHook

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


def test_provider_info_and_hook_describe_the_same_form():
    # Airflow 3.0/3.1 only call the hook's method: the two must never drift apart.
    declared = _auralytik_connection_type()["ui-field-behaviour"]
    from_hook = AuralytikHook.get_ui_field_behaviour()
    assert from_hook == {
        "hidden_fields": declared["hidden-fields"],
        "relabeling": declared["relabeling"],
        "placeholders": declared["placeholders"],
    }


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
