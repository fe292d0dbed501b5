"""Release: the wheel and sdist build, pass ``twine check``, hold what they should, and the wheel alone
installs into a clean virtualenv where ``airflow providers list`` shows the provider and its version.

The clean install uses uv (installed by ``scripts/bootstrap.sh``) with the lock of the Airflow line
under test (``constraints/airflow-<major>.<minor>.txt``), so it takes seconds from the uv cache.
"""

from __future__ import annotations

import ast
import email
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import tomllib

import airflow_provider_auralytik
from airflow_provider_auralytik import __version__, get_provider_info
from airflow_provider_auralytik._compat import AIRFLOW_VERSION

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "airflow_provider_auralytik"
DIST_NAME = "airflow-provider-auralytik"
NOT_SHIPPED = ("tests/", "dags/", "docs/", "benchmarks/", "scripts/", "constraints/", ".ci/")


def _uv() -> list[str]:
    try:
        import uv  # noqa: F401  (bootstrap.sh installs it into the venv)

        return [sys.executable, "-m", "uv"]
    except ImportError:
        found = shutil.which("uv")
        if found is None:
            pytest.fail("uv is needed for the clean-install check: run scripts/bootstrap.sh")
        return [found]


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    installer = ["--installer", "uv"] if _uv()[0] == sys.executable else []
    _run([sys.executable, "-m", "build", *installer, "--sdist", "--wheel", "--outdir", str(out), str(ROOT)])
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1, wheels
    assert len(sdists) == 1, sdists
    return {"wheel": wheels[0], "sdist": sdists[0]}


def _source_modules() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / PACKAGE).rglob("*.py") if "__pycache__" not in p.parts}


def test_file_names_carry_the_version(dist: dict[str, Path]) -> None:
    assert dist["wheel"].name == f"{PACKAGE}-{__version__}-py3-none-any.whl"
    assert dist["sdist"].name == f"{PACKAGE}-{__version__}.tar.gz"


def test_twine_check_accepts_both(dist: dict[str, Path]) -> None:
    result = _run([sys.executable, "-m", "twine", "check", "--strict", str(dist["wheel"]), str(dist["sdist"])])
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_wheel_contents(dist: dict[str, Path]) -> None:
    with zipfile.ZipFile(dist["wheel"]) as whl:
        names = set(whl.namelist())
        info = f"{PACKAGE}-{__version__}.dist-info"
        metadata = email.message_from_bytes(whl.read(f"{info}/METADATA"))
        entry_points = whl.read(f"{info}/entry_points.txt").decode()

    assert f"{PACKAGE}/py.typed" in names
    assert _source_modules() <= names, sorted(_source_modules() - names)
    assert not [n for n in names if n.startswith(NOT_SHIPPED)], sorted(n for n in names if n.startswith(NOT_SHIPPED))
    assert not [n for n in names if n.endswith((".pyc", ".pyo")) or "__pycache__" in n]
    assert {n.split("/")[0] for n in names} == {PACKAGE, info}
    assert f"{info}/licenses/LICENSE" in names

    assert metadata["Name"] == DIST_NAME
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Requires-Python"] == ">=3.10"
    requires = metadata.get_all("Requires-Dist") or []
    assert any(re.fullmatch(r"apache-airflow<4,>=3\.0\.6|apache-airflow>=3\.0\.6,<4", r) for r in requires), requires
    assert "Framework :: Apache Airflow :: Provider" in (metadata.get_all("Classifier") or [])
    assert metadata["Description-Content-Type"] == "text/markdown"

    assert "[apache_airflow_provider]" in entry_points
    assert f"provider_info = {PACKAGE}:get_provider_info" in entry_points


def test_sdist_contents(dist: dict[str, Path]) -> None:
    top = f"{PACKAGE}-{__version__}"
    with tarfile.open(dist["sdist"]) as sdist:
        names = {n.removeprefix(f"{top}/") for n in sdist.getnames()}
    for required in ("README.md", "LICENSE", "pyproject.toml", "PKG-INFO", f"{PACKAGE}/py.typed"):
        assert required in names, required
    assert _source_modules() <= names, sorted(_source_modules() - names)
    assert not [n for n in names if n.startswith(NOT_SHIPPED)], sorted(n for n in names if n.startswith(NOT_SHIPPED))


def test_the_version_lives_in_one_place() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": f"{PACKAGE}.__version__"}

    # Exactly one assignment of __version__, in the package's __init__, and the literal nowhere else.
    assigned = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if any(isinstance(t, ast.Name) and t.id == "__version__" for t in targets):
                assigned.append(path.relative_to(ROOT).as_posix())
        if path.name != "__init__.py" or path.parent != ROOT / PACKAGE:
            assert f'"{__version__}"' not in path.read_text(), f"{path} hard-codes the version"
    assert assigned == [f"{PACKAGE}/__init__.py"]
    assert Path(airflow_provider_auralytik.__file__).resolve() == (ROOT / PACKAGE / "__init__.py").resolve()
    assert get_provider_info()["versions"] == [__version__]


def _clean_env(venv: Path, home: Path) -> dict[str, str]:
    # Nothing from the test process (AIRFLOW_HOME, its DB, unit-test mode, PYTHONPATH) leaks in.
    return {
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin",
        "HOME": str(home),
        "AIRFLOW_HOME": str(home),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",  # keep stdout to the command's own output
    }


def _airflow_json(venv: Path, home: Path, *args: str) -> Any:
    out = _run([str(venv / "bin" / "airflow"), *args, "--output", "json"], env=_clean_env(venv, home), cwd=home).stdout
    start = out.find("[")  # skip any log line a plugin prints before the table
    assert start >= 0, out
    return json.JSONDecoder().raw_decode(out[start:])[0]


def test_the_wheel_alone_installs_into_a_clean_venv(dist: dict[str, Path], tmp_path: Path) -> None:
    lock = ROOT / "constraints" / f"airflow-{AIRFLOW_VERSION.major}.{AIRFLOW_VERSION.minor}.txt"
    assert lock.is_file(), f"no lock for Airflow {AIRFLOW_VERSION}: expected {lock}"
    venv, home = tmp_path / "venv", tmp_path / "home"
    home.mkdir()
    uv = _uv()
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([*uv, "venv", "--quiet", "--python", base_python, str(venv)])
    _run(
        [
            *uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            str(dist["wheel"]),
            "-c",
            str(lock),
        ]
    )

    # Only the wheel: no editable/source checkout is importable from there.
    where = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"import {PACKAGE}, airflow; print({PACKAGE}.__file__); print(airflow.__version__)",
        ],
        env=_clean_env(venv, home),
        cwd=home,
    ).stdout.split()[-2:]
    assert str(venv) in where[0], where
    assert where[1] == str(AIRFLOW_VERSION) or where[1].startswith(str(AIRFLOW_VERSION)), where

    providers = _airflow_json(venv, home, "providers", "list")
    ours = [p for p in providers if p["package_name"] == DIST_NAME]
    assert len(ours) == 1, providers
    assert ours[0]["version"] == __version__

    hooks = _airflow_json(venv, home, "providers", "hooks")
    auralytik = [h for h in hooks if h.get("connection_type") == "auralytik"]
    assert len(auralytik) == 1, hooks
    assert auralytik[0]["class"] == f"{PACKAGE}.hooks.auralytik.AuralytikHook"
    assert auralytik[0]["package_name"] == DIST_NAME
