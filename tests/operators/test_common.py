"""What the operators share (operators/common.py): the base of the API operators, summaries, asset events."""

from __future__ import annotations

import ast
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import pytest

from airflow_provider_auralytik._compat import AssetAlias, ObjectStoragePath
from airflow_provider_auralytik.hooks.auralytik import AuralytikHook
from airflow_provider_auralytik.operators.catch_up import AuralytikCatchUpOperator
from airflow_provider_auralytik.operators.common import (
    AuralytikBaseOperator,
    emit_asset_event,
    export_summary,
    register_asset_alias,
    storage_url,
)
from airflow_provider_auralytik.operators.export import (
    AuralytikExportConversationsOperator,
    AuralytikExportMessagesOperator,
)
from airflow_provider_auralytik.operators.slices import AuralytikCombineSlicesOperator
from tests.operators.test_export_pending import OutletEvents, task_context

OPERATORS = Path(__file__).parents[2] / "airflow_provider_auralytik" / "operators"
DAY = {"date_from": "2026-03-02T00:00:00Z", "date_to": "2026-03-03T00:00:00Z"}
MANIFEST: dict[str, Any] = {
    "window": DAY,
    "files": [{"path": "part-a.jsonl.gz"}, {"path": "part-b.jsonl.gz"}],
    "counts": {"conversations": 120, "messages": 1_400},
}


# -- the base of the operators that call the API --------------------------------------------------


@pytest.mark.parametrize(
    ("make", "conn_id"),
    [
        (lambda: AuralytikExportConversationsOperator(task_id="c", destination="/tmp/x"), "auralytik_default"),
        (
            lambda: AuralytikCatchUpOperator(task_id="u", conversations_destination="/x", auralytik_conn_id="eu"),
            "eu",
        ),
    ],
)
def test_the_hook_is_built_once_on_first_use_for_the_operators_connection(make, conn_id):
    operator = make()
    assert isinstance(operator, AuralytikBaseOperator)
    assert "hook" not in vars(operator)  # constructing the operator built no hook
    hook = operator.hook
    assert isinstance(hook, AuralytikHook)
    assert hook.auralytik_conn_id == conn_id
    assert operator.hook is hook


def test_the_messages_export_builds_its_hook_with_its_concurrency(monkeypatch):
    connection = {"conn_type": "auralytik", "host": "http://127.0.0.1:9/v1", "password": "k", "extra": {}}
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", json.dumps(connection))  # read, never called
    operator = AuralytikExportMessagesOperator(task_id="m", destination="/tmp/x", max_concurrency=48)
    assert operator.hook.settings.max_concurrency == 48
    assert AuralytikExportConversationsOperator(task_id="c", destination="/tmp/x").hook.settings.max_concurrency == 16


def _in_a_dag(make: Any) -> Any:
    from airflow.sdk import DAG

    with DAG("auralytik_test_common_render", schedule=None, start_date=datetime(2026, 3, 1, tzinfo=timezone.utc)):
        return make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: AuralytikExportConversationsOperator(
            task_id="c", destination="/lake/date={{ data_interval_start | ds }}"
        ),
        lambda: AuralytikCatchUpOperator(
            task_id="u", conversations_destination="/x", destination_conn_id="aws_{{ data_interval_start.year }}"
        ),
    ],
)
def test_templates_naming_the_data_interval_in_a_run_without_one_say_what_to_do(make):
    operator = _in_a_dag(make)
    with pytest.raises(ValueError, match="has no data interval") as info:
        operator.render_template_fields(context={})  # a run without an interval
    assert "pass date_from and date_to" in str(info.value)


def test_any_other_undefined_name_is_left_to_jinja():
    operator = _in_a_dag(lambda: AuralytikExportConversationsOperator(task_id="c", destination="/lake/{{ my_typo }}"))
    with pytest.raises(jinja2.UndefinedError, match="'my_typo' is undefined"):
        operator.render_template_fields(context={"data_interval_start": 1, "data_interval_end": 2})


def test_templates_render_as_airflow_renders_them():
    operator = _in_a_dag(
        lambda: AuralytikExportConversationsOperator(task_id="c", destination="/lake/date={{ data_interval_start }}")
    )
    operator.render_template_fields(context={"data_interval_start": "2026-03-02", "data_interval_end": "x"})
    assert operator.destination == "/lake/date=2026-03-02"
    assert operator.date_from == "2026-03-02"


# -- what an export reports --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file:///data/auralytik/date=2026-03-02", "file:///data/auralytik/date=2026-03-02"),
        ("s3://lake/auralytik/date=2026-03-02", "s3://lake/auralytik/date=2026-03-02"),
    ],
)
def test_storage_url_has_the_scheme_and_path_but_no_connection(url, expected):
    path = ObjectStoragePath(url, conn_id="aws_test_never_looked_up")
    assert storage_url(path) == expected
    assert "aws_test_never_looked_up" not in storage_url(path)


def test_storage_url_of_a_plain_local_path_is_a_file_url(tmp_path):
    assert storage_url(ObjectStoragePath(str(tmp_path), protocol="file")) == f"file://{tmp_path}"


def test_export_summary_says_where_how_many_files_and_the_counts_never_data():
    summary = export_summary("s3://lake/x", MANIFEST, slices=4)
    assert summary == {
        "destination": "s3://lake/x",
        "manifest": "s3://lake/x/_manifest.json",
        "files": 2,
        "slices": 4,
        "conversations": 120,
        "messages": 1_400,
    }
    assert list(summary)[:4] == ["destination", "manifest", "files", "slices"]


# -- the asset_alias parameter ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: AuralytikExportConversationsOperator(task_id="c", destination="/tmp/x", **kw),
        lambda **kw: AuralytikExportMessagesOperator(task_id="m", destination="/tmp/x", **kw),
        lambda **kw: AuralytikCatchUpOperator(task_id="u", conversations_destination="/x", **kw),
    ],
)
def test_the_api_operators_take_their_connection_and_alias_from_the_base(make):
    operator = make(auralytik_conn_id="auralytik_eu", asset_alias="auralytik")
    assert operator.auralytik_conn_id == "auralytik_eu"
    assert operator.asset_alias == "auralytik"
    assert [(type(o), o.name) for o in operator.outlets] == [(AssetAlias, "auralytik")]
    plain = make()
    assert plain.auralytik_conn_id == AuralytikHook.default_conn_name
    assert plain.asset_alias is None
    assert plain.outlets == []


def test_an_asset_alias_is_declared_as_an_outlet_and_none_declares_nothing():
    with_alias = AuralytikCombineSlicesOperator(task_id="with", slices=[], asset_alias="auralytik")
    without = AuralytikCombineSlicesOperator(task_id="without", slices=[])
    assert [(type(o), o.name) for o in with_alias.outlets] == [(AssetAlias, "auralytik")]
    assert without.outlets == []
    register_asset_alias(with_alias, None)
    assert len(with_alias.outlets) == 1


def test_the_asset_event_is_the_destination_with_the_window_and_counts_flat_in_its_extra():
    events = OutletEvents()
    summary = export_summary("s3://lake/x", MANIFEST, rate_limit_seconds=0.5)
    emit_asset_event(task_context(events), "auralytik", summary, DAY)
    [(asset, extra)] = events[AssetAlias(name="auralytik")].added
    assert asset.uri == "s3://lake/x"
    assert extra == {**DAY, "files": 2, "conversations": 120, "messages": 1_400}  # no float, no strings


def test_no_alias_no_event():
    events = OutletEvents()
    emit_asset_event(task_context(events), None, export_summary("s3://lake/x", MANIFEST), DAY)
    assert events.by_name == {}


# -- the layout ------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", sorted(p.name for p in OPERATORS.glob("*.py") if p.name != "__init__.py"))
def test_operator_modules_take_helpers_from_common_not_from_each_other(module):
    """An operator module may build another's operators (the catch-up re-exports with the exports' own
    classes), but takes shared helpers only from ``operators.common``."""
    tree = ast.parse((OPERATORS / module).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("airflow_provider_auralytik.operators."):
            if node.module == "airflow_provider_auralytik.operators.common":
                continue
            names = [alias.name for alias in node.names]
            assert all(name.startswith("Auralytik") and name.endswith("Operator") for name in names), (
                f"{module} imports {names} from {node.module}"
            )
