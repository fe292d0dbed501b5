"""``python -m airflow_provider_auralytik.sandbox`` as a subprocess."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
LINE_RE = re.compile(r"^Auralytik sandbox listening on (http://127\.0\.0\.1:(\d+)/v1) \(API key: (\S+)\)$")


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_auralytik.sandbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_serves_until_signal(sig: signal.Signals) -> None:
    proc = _spawn(
        "--port", "0", "--seed", "5", "--start", "2024-02-01", "--days", "2", "--per-day", "12",
        "--api-key", "cli-key", "--max-messages", "4",
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = LINE_RE.match(line)
        assert match, line
        url, key = match.group(1), match.group(3)
        assert key == "cli-key"
        headers = {"Authorization": f"Bearer {key}"}
        body = requests.get(f"{url}/conversations", headers=headers, params={"pageSize": 100}, timeout=10).json()
        assert body["totalCount"] == 24
        assert all("2024-02-01" <= c["createdAt"] < "2024-02-03" for c in body["data"])
        assert max(c["messageCount"] for c in body["data"]) <= 4
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_cli_help_documents_every_flag() -> None:
    proc = _spawn("--help")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    for flag in (
        "--host", "--port", "--seed", "--start", "--days", "--per-day", "--max-messages", "--api-key",
        "--latency-ms", "--rate-429", "--retry-after", "--rate-5xx", "--rate-drop", "--rate-malformed",
        "--pii-leak-rate", "--complete-within", "--insert-during-listing", "--retry-after-http-date",
    ):  # fmt: skip
        assert flag in out


def test_cli_rejects_bad_values() -> None:
    proc = _spawn("--port", "0", "--rate-429", "0.7", "--rate-5xx", "0.7")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert "fault rates" in err


def test_cli_port_in_use_fails_cleanly() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _spawn("--port", str(port), "--days", "1", "--per-day", "1")
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    (line,) = err.strip().splitlines()  # one line: what is wrong and which flag fixes it
    assert f"port {port} on 127.0.0.1 is already in use" in line
    assert "--port" in line
    assert out == ""


def test_default_port_is_not_a_common_one() -> None:
    from airflow_provider_auralytik.sandbox.__main__ import DEFAULT_PORT, build_parser

    assert build_parser().parse_args([]).port == DEFAULT_PORT
    # Airflow's api-server and log servers, Flower, Marquez/moto, dev servers, Jupyter, Grafana, MinIO, Prometheus.
    assert DEFAULT_PORT not in {8080, 8793, 8794, 5555, 5000, 8000, 8888, 3000, 9000, 9090, 5432, 6379}
    assert 1024 < DEFAULT_PORT < 32768  # unprivileged, below Linux's ephemeral range


def test_cli_binds_its_default_port_unless_taken() -> None:
    from airflow_provider_auralytik.sandbox.__main__ import DEFAULT_PORT

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", DEFAULT_PORT))
        except OSError:
            pytest.skip(f"port {DEFAULT_PORT} is in use on this machine")
    proc = _spawn("--days", "1", "--per-day", "1")
    try:
        assert proc.stdout is not None
        match = LINE_RE.match(proc.stdout.readline().strip())
        assert match, "the sandbox did not start"
        assert int(match.group(2)) == DEFAULT_PORT
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def test_sandbox_does_not_import_airflow() -> None:
    code = "import sys, airflow_provider_auralytik.sandbox as s; s.Sandbox; print('airflow' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=20, check=True)
    assert out.stdout.strip() == "False"
