"""OpenLineage: the export operators report the API endpoints in and the destination out, by OL's naming.

The names themselves: tests/utils/test_lineage.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow_provider_auralytik.operators.export import (
    AuralytikExportConversationsOperator,
    AuralytikExportMessagesOperator,
)
from tests.conftest import sandbox_connection

DAY = datetime(2026, 3, 2, tzinfo=timezone.utc)


def test_lineage_after_a_local_messages_export(make_sandbox, monkeypatch, tmp_path):
    sandbox = make_sandbox(start="2026-03-01", days=3, per_day=30)
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox))
    operator = AuralytikExportMessagesOperator(
        task_id="m", destination=str(tmp_path), date_from=DAY, date_to=DAY + timedelta(days=1)
    )
    summary = operator.execute(context={})

    lineage = operator.get_openlineage_facets_on_complete(task_instance=None)
    host = sandbox.url.split("/v1")[0]
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        (host, "/v1/conversations"),
        (host, "/v1/conversations/{id}/messages"),
    ]
    [output] = lineage.outputs
    assert (output.namespace, output.name) == ("file", str(tmp_path))
    statistics = output.outputFacets["outputStatistics"]
    assert statistics.rowCount == summary["messages"]
    assert statistics.size == sum(p.stat().st_size for p in tmp_path.glob("part-*"))


def test_lineage_of_an_s3_conversations_export(make_sandbox, monkeypatch, s3_server):
    sandbox = make_sandbox(start="2026-03-01", days=3, per_day=30)
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox))
    operator = AuralytikExportConversationsOperator(
        task_id="c",
        destination=s3_server.url("lake/conversations/date=2026-03-02"),
        destination_conn_id=s3_server.conn_id,
        date_from=DAY,
        date_to=DAY + timedelta(days=1),
    )
    operator.execute(context={})
    lineage = operator.get_openlineage_facets_on_complete(task_instance=None)
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        (f"s3://{s3_server.bucket}", "lake/conversations/date=2026-03-02")
    ]
    assert [d.name for d in lineage.inputs] == ["/v1/conversations"]


def test_no_lineage_before_the_export_ran(tmp_path):
    operator = AuralytikExportConversationsOperator(task_id="c", destination=str(tmp_path))
    lineage = operator.get_openlineage_facets_on_complete(task_instance=None)
    assert lineage.inputs == []
    assert lineage.outputs == []
