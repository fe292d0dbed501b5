"""docs/getting-started.md followed literally: a fresh AIRFLOW_HOME and HOME, its commands in order.

The blocks are read from the page itself (a changed command is a changed test): the install is
checked (the package is installed here as the guide's ``pip install .`` does), the sandbox is started
with the guide's command line, the connection is the guide's JSON, the DAG file is the guide's, and
``airflow db migrate`` / ``airflow dags test`` run as shell commands. Then the guide's log lines,
output tree and reading samples are checked against what happened.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "getting-started.md"
SANDBOX_LINE = re.compile(r"listening on (http://127\.0\.0\.1:(\d+)/v1) \(API key: (\S+)\)")


def _blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in page order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", PAGE.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)


def _commands(code: str) -> list[str]:
    """Shell command lines of a block, continuations joined, comments dropped."""
    lines = code.replace("\\\n", " ").splitlines()
    return [shlex.join(shlex.split(line, comments=True)) for line in lines if shlex.split(line, comments=True)]


def _block_with(language: str, needle: str) -> str:
    found = [code for lang, code in _blocks() if lang == language and needle in code]
    assert found, f"getting-started.md has no {language} block with {needle!r}"
    return found[0]


def _env(home: Path) -> dict[str, str]:
    """A newcomer's shell: nothing of the test process's Airflow set-up, a fresh HOME and AIRFLOW_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update({"HOME": str(home), "AIRFLOW_HOME": str(home / "airflow"), "NO_PROXY": "127.0.0.1,localhost"})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture
def guide_sandbox(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The guide's sandbox command, run as written (``--port 0`` added only if 7431 is taken here)."""
    (command,) = [c for c in _commands(_block_with("bash", "-m airflow_provider_auralytik.sandbox")) if "--start" in c]
    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "airflow_provider_auralytik.sandbox"]
    process = subprocess.Popen(
        [sys.executable, *args[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:  # the default port is taken on this machine: the guide's own advice
            assert "--port" in (process.stderr.read() if process.stderr else "")
            process.wait(timeout=10)
            process = subprocess.Popen(
                [sys.executable, *args[1:], "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=tmp_path
            )
            assert process.stdout is not None
            line = process.stdout.readline()
        match = SANDBOX_LINE.search(line)
        assert match, line
        yield match.group(1), match.group(3)
    finally:
        process.terminate()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_getting_started_followed_literally(tmp_path: Path, guide_sandbox: tuple[str, str]) -> None:
    url, key = guide_sandbox
    home = tmp_path / "home"
    home.mkdir()
    env = _env(home)

    def shell(command: str, timeout: float = 240) -> str:
        done = subprocess.run(command, shell=True, env=env, cwd=home, capture_output=True, text=True, timeout=timeout)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"`{command}` failed:\n{output[-4000:]}"
        return output

    # Install: the guide installs the checkout with pip; here it is installed the same way (editable).
    install = _commands(_block_with("bash", "pip install"))
    assert "pip install ." in install
    from importlib.metadata import distribution

    assert distribution("airflow-provider-auralytik").metadata["Name"] == "airflow-provider-auralytik"

    # The sandbox printed the line the guide shows (same URL but for a port taken on this machine).
    shown = re.search(r"# (Auralytik sandbox listening on .*)", _block_with("bash", "--per-day 40"))
    assert shown
    assert SANDBOX_LINE.search(shown.group(1))

    # Point a connection at it: the guide's export line, with the sandbox's URL.
    (export,) = _commands(_block_with("bash", "AIRFLOW_CONN_AURALYTIK_DEFAULT"))
    verb, assignment = shlex.split(export)
    assert verb == "export"
    connection = json.loads(assignment.split("=", 1)[1])
    assert connection["password"] == key
    connection["host"] = connection["host"].replace("http://127.0.0.1:7431/v1", url)
    env["AIRFLOW_CONN_AURALYTIK_DEFAULT"] = json.dumps(connection)

    # A first DAG, saved in the DAGs folder of the fresh AIRFLOW_HOME.
    dag_code = _block_with("python", 'dag_id="auralytik_first"')
    dags = home / "airflow" / "dags"
    dags.mkdir(parents=True)
    (dags / "auralytik_first.py").write_text(dag_code)

    # Run it once, without a scheduler: the guide's commands, in order.
    run = [c for c in _commands(_block_with("bash", "airflow dags test")) if c.startswith("airflow")]
    assert run == ["airflow db migrate", "airflow dags test auralytik_first 2026-03-03"]
    logs = "".join(shell(command) for command in run)

    # The log lines the guide shows.
    assert "All 40 conversations are completed." in logs
    assert "Exporting Auralytik conversations for [2026-03-02T00:00:00Z, 2026-03-03T00:00:00Z)" in logs
    # Never in the provider's lines. (Airflow 3.0's `dags test` logs its own MaskSecret requests at debug level.)
    assert [line for line in logs.splitlines() if key in line and "MaskSecret" not in line] == []

    # The output tree the guide draws.
    exports = home / "auralytik-exports"
    for kind in ("conversations", "messages"):
        day = exports / kind / "date=2026-03-02"
        manifest: dict[str, Any] = json.loads((day / "_manifest.json").read_text())
        assert manifest["window"]["date_from"] == "2026-03-02T00:00:00Z"
        assert all((day / part["path"]).exists() for part in manifest["files"])
    assert (
        json.loads((exports / "conversations" / "date=2026-03-02" / "_manifest.json").read_text())["counts"][
            "conversations"
        ]
        == 40
    )

    # Read the output: the guide's two samples, as a newcomer runs them.
    samples = [
        code for lang, code in _blocks() if lang == "python" and "auralytik-exports" in code and "DAG(" not in code
    ]
    assert len(samples) == 2
    for index, code in enumerate(samples):
        script = home / f"read_{index}.py"
        script.write_text(code)
        out = shell(f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}", timeout=120)
        assert "40" in out, out[-2000:]
