"""exceptions.py ends the upward import: imports point only down, and the published error names still work.

Layers, top to bottom: operators/sensors/triggers -> hooks -> the domain (conversations/, output/) and
helpers (utils/); exceptions.py sits below the hooks and beside the domain. The sandbox is a stand-alone
server: it may use the domain's rules, never Airflow's side of the package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_provider_auralytik
from airflow_provider_auralytik import exceptions

PACKAGE = Path(airflow_provider_auralytik.__file__).parent
NAME = "airflow_provider_auralytik"
UPPER = ("hooks", "operators", "sensors", "triggers")
#: Sub-packages (or modules) and what they may never import, at run time or under TYPE_CHECKING.
FORBIDDEN = {
    "conversations": UPPER,
    "output": UPPER,
    "utils": UPPER,
    "exceptions": UPPER,
    "hooks": ("operators", "sensors", "triggers"),
    "sandbox": (*UPPER, "exceptions", "_compat"),
}


def imported_modules(source: str, module: str) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, anywhere in it: top level, functions,
    ``if TYPE_CHECKING:`` blocks; relative imports resolved."""
    found: set[str] = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def upward_imports() -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(path)
        if layer not in FORBIDDEN:
            continue
        module = ".".join((NAME, *path.relative_to(PACKAGE).with_suffix("").parts))
        for target in sorted(imported_modules(path.read_text(encoding="utf-8"), module)):
            parts = target.split(".")
            if parts[0] == NAME and len(parts) > 1 and parts[1] in FORBIDDEN[layer]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target}")
    return wrong


def test_imports_point_only_down() -> None:
    assert upward_imports() == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from airflow_provider_auralytik.hooks.auralytik import AuralytikHook", True),
        ("if TYPE_CHECKING:\n    from airflow_provider_auralytik.hooks.auralytik import AuralytikHook", True),
        ("def f():\n    import airflow_provider_auralytik.operators.export", True),
        ("from ..hooks import auralytik", True),
        ("from airflow_provider_auralytik.exceptions import AuralytikNotFoundError", False),
        ("from .window import DateWindow", False),
    ],
)
def test_the_scan_sees_every_kind_of_import(source: str, expected: bool) -> None:
    """The guard itself can fail: it finds an upward import however it is written."""
    found = imported_modules(source, f"{NAME}.conversations.listing")
    assert any(t.split(".")[:2] in ([NAME, "hooks"], [NAME, "operators"]) for t in found) is expected


def test_the_scan_covers_the_domain() -> None:
    layers = {layer_of(p) for p in PACKAGE.rglob("*.py")}
    assert {"conversations", "output", "utils", "hooks", "sandbox", "exceptions"} <= layers


def test_importing_the_domain_does_not_import_the_hook() -> None:
    code = (
        "import sys\n"
        "import airflow_provider_auralytik.conversations.completed_check\n"
        "import airflow_provider_auralytik.conversations.listing\n"
        "import airflow_provider_auralytik.output.schemas\n"
        "print('hooks:', sorted(m for m in sys.modules if m.startswith('airflow_provider_auralytik.hooks')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "hooks: []"


@pytest.mark.parametrize(
    "name", ["AuralytikApiError", "AuralytikAuthError", "AuralytikNotFoundError", "AuralytikUnavailableError"]
)
def test_the_api_errors_keep_their_published_path(name: str) -> None:
    from airflow_provider_auralytik.hooks import auralytik

    assert getattr(auralytik, name) is getattr(exceptions, name)
    assert getattr(exceptions, name).__module__ == exceptions.__name__
    assert issubclass(getattr(exceptions, name), exceptions.AuralytikApiError)


def test_the_domain_errors_are_the_domain_modules_own() -> None:
    from airflow_provider_auralytik.conversations import listing, pii, window

    assert exceptions.ListingError is listing.ListingError
    assert exceptions.CrowdedInstantError is listing.CrowdedInstantError
    assert exceptions.CreatedAtError is window.CreatedAtError
    assert exceptions.EmptyWindowError is window.EmptyWindowError
    assert exceptions.PiiLeakError is pii.PiiLeakError
    assert set(exceptions.__all__) == {n for n in dir(exceptions) if n.endswith("Error")}
