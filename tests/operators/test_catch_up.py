"""AuralytikCatchUpOperator: late conversations brought in later, on the sandbox over real HTTP.

The story runs through the example daily DAG with ``dag.test()`` on consecutive logical dates (no wall
clock: the dates are given, the sandbox's data is in 2026-03): day D is exported while 3 of its
conversations are active, two complete, the next day's catch-up re-exports D, the day after nothing
changed and nothing is written.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pendulum
import pytest

from airflow_provider_auralytik.operators.catch_up import AuralytikCatchUpOperator, compare, window_context
from airflow_provider_auralytik.output.reader import iter_records, read_manifest
from tests.conftest import sandbox_connection
from tests.operators.test_export_pending import OutletEvents, task_context

UTC = timezone.utc
DAGS = Path(__file__).resolve().parents[2] / "dags"
D = ("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z")
TEMPLATE = "{ROOT}/{kind}/date={{{{ data_interval_start | ds }}}}"


def utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def local(path: Path) -> Any:
    from airflow_provider_auralytik._compat import ObjectStoragePath

    return ObjectStoragePath(f"file://{path}")


def snapshot(root: Path, kind: str, day: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    manifest = read_manifest(local(root / kind / f"date={day}"))
    assert manifest is not None, f"no {kind} snapshot for {day}"
    return manifest, list(iter_records(local(root / kind / f"date={day}")))


def pending_ids(manifest: dict[str, Any]) -> set[str]:
    return {p["conversation_id"] for p in manifest["pending"]}


# ---------------------------------------------------------------------------------------------
# The story, through the example daily DAG
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def daily(airflow_db: None) -> Any:
    from airflow_provider_auralytik._compat import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.get_dag("auralytik_daily_export")


def test_late_conversations_are_listed_then_brought_in_by_the_next_days_catch_up(
    daily, make_sandbox, monkeypatch, tmp_path
):
    sandbox = make_sandbox(start="2026-02-27", days=7, per_day=40)
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox))
    monkeypatch.setenv("AIRFLOW_VAR_AURALYTIK_EXPORT_ROOT", str(tmp_path))
    day = sandbox.conversations_in(*D)
    late = day[:3]  # the last three created that day are still going on at midnight
    sandbox.hold(*late)

    # Day D, exported on time while 3 of its conversations are active.
    assert daily.test(logical_date=utc(2026, 3, 3)).state == "success"
    conversations, rows = snapshot(tmp_path, "conversations", "2026-03-02")
    messages, lines = snapshot(tmp_path, "messages", "2026-03-02")
    for manifest in (conversations, messages):
        assert pending_ids(manifest) == set(late)
        assert manifest["counts"]["conversations_pending"] == 3
    assert {r["id"] for r in rows} == set(day)
    assert {m["conversationId"] for m in lines} == set(day) - set(late)  # include_pending=False in the DAG

    # Two of them complete; the next day's catch-up re-exports D.
    sandbox.complete(late[0], late[1])
    assert daily.test(logical_date=utc(2026, 3, 4)).state == "success"
    conversations_2, rows = snapshot(tmp_path, "conversations", "2026-03-02")
    messages_2, lines = snapshot(tmp_path, "messages", "2026-03-02")
    for before, after in ((conversations, conversations_2), (messages, messages_2)):
        assert after["run_token"] > before["run_token"]  # a new snapshot
        assert pending_ids(after) == {late[2]}
        assert after["window"] == before["window"]
    assert {r["id"]: r["status"] for r in rows if r["id"] in late} == {
        late[0]: "completed",
        late[1]: "completed",
        late[2]: "active",
    }
    assert {m["conversationId"] for m in lines} == set(day) - {late[2]}
    for cid in late[:2]:  # their full messages now
        assert [m["id"] for m in lines if m["conversationId"] == cid] == [
            m["id"] for m in sandbox.messages(cid, exclude_pii=True)
        ]

    # The day after: nothing changed for D. Its check is one listing page; no fetch, no new snapshot; the
    # day exported by the previous run, with nothing pending, costs no request at all.
    sandbox.reset_stats()
    assert daily.test(logical_date=utc(2026, 3, 5)).state == "success"
    about_d = sandbox.requests_for(*D)
    assert len(about_d) == 1
    assert "/conversations?" in about_d[0]
    assert sandbox.requests_for("2026-03-03T00:00:00Z", "2026-03-04T00:00:00Z") == []
    for kind, before in (("conversations", conversations_2), ("messages", messages_2)):
        assert snapshot(tmp_path, kind, "2026-03-02")[0]["run_token"] == before["run_token"]


# ---------------------------------------------------------------------------------------------
# The operator on its own
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def lake(make_sandbox: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    sandbox = make_sandbox(start="2026-02-27", days=7, per_day=30)
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox, backoff_base=0.01))
    return sandbox


def run_context(day: datetime) -> Any:
    """What a daily run for ``[day, day + 1)`` renders templates with (as Airflow 3 gives it)."""
    start = pendulum.instance(day)
    end = start + timedelta(days=1)
    return {
        **window_context({"data_interval_start": start, "data_interval_end": end, "logical_date": end}, timedelta()),
        "outlet_events": OutletEvents(),
    }


def export_day(tmp_path: Path, day: datetime) -> None:
    from airflow_provider_auralytik.operators.export import (
        AuralytikExportConversationsOperator,
        AuralytikExportMessagesOperator,
    )

    window: dict[str, Any] = {"date_from": day.isoformat(), "date_to": (day + timedelta(days=1)).isoformat()}
    for kind, cls in (
        ("conversations", AuralytikExportConversationsOperator),
        ("messages", AuralytikExportMessagesOperator),
    ):
        cls(task_id=kind, destination=str(tmp_path / kind / f"date={day:%Y-%m-%d}"), **window).execute(
            task_context(OutletEvents())
        )


def catch_up(tmp_path: Path, **kwargs: Any) -> AuralytikCatchUpOperator:
    destinations = {
        f"{kind}_destination": TEMPLATE.format(ROOT=tmp_path, kind=kind) for kind in ("conversations", "messages")
    }
    return AuralytikCatchUpOperator(task_id="catch_up", **{**destinations, **kwargs})


def render(op: AuralytikCatchUpOperator, context: Any) -> AuralytikCatchUpOperator:
    op.render_template_fields(context)
    return op


def test_windows_with_nothing_pending_cost_no_request_and_missing_ones_are_reported(lake, tmp_path, caplog, capfd):
    export_day(tmp_path, utc(2026, 3, 2))  # nothing pending: the sandbox's data is all completed
    lake.reset_stats()
    context = run_context(utc(2026, 3, 4))  # looks back at 03-01, 03-02, 03-03
    summary = render(catch_up(tmp_path, lookback=3), context).execute(context)

    assert lake.stats.requests == 0
    actions = {(w["kind"], w["date_from"][:10]): w["action"] for w in summary["windows"]}
    assert actions == {
        ("conversations", "2026-03-01"): "missing",
        ("messages", "2026-03-01"): "missing",
        ("conversations", "2026-03-02"): "nothing pending",
        ("messages", "2026-03-02"): "nothing pending",
        ("conversations", "2026-03-03"): "missing",
        ("messages", "2026-03-03"): "missing",
    }
    assert (summary["reexported"], summary["api_requests"]) == (0, 0)
    out, err = capfd.readouterr()
    logs = caplog.text + out + err
    assert "No committed messages export for [2026-03-03T00:00:00Z, 2026-03-04T00:00:00Z)" in logs


def test_a_completed_conversation_re_exports_its_window_once_with_an_asset_event(lake, tmp_path):
    from airflow_provider_auralytik._compat import AssetAlias

    late = lake.conversations_in(*D)[:2]
    lake.hold(*late)
    export_day(tmp_path, utc(2026, 3, 2))
    lake.complete(late[0])

    context = run_context(utc(2026, 3, 3))
    lake.reset_stats()
    summary = render(catch_up(tmp_path, lookback=1, asset_alias="auralytik"), context).execute(context)
    assert summary["reexported"] == 2
    assert summary["api_requests"] == lake.stats.requests  # the check's listing and both re-exports
    [(_, extra)] = [
        event
        for event in context["outlet_events"][AssetAlias(name="auralytik")].added
        if event[0].uri.endswith("/messages/date=2026-03-02")
    ]
    assert extra["conversations_pending"] == 1
    assert (extra["date_from"], extra["date_to"]) == D
    manifest, lines = snapshot(tmp_path, "messages", "2026-03-02")
    assert pending_ids(manifest) == {late[1]}
    # Only what changed is fetched: the one that completed, and the one still going on (include_pending).
    # The 28 completed before keep their messages from the earlier snapshot, as the API serves them.
    assert lake.stats.by_kind["messages"] == 2
    assert manifest["reused_conversations"] == 28
    assert sorted(m["id"] for m in lines) == sorted(
        m["id"] for cid in lake.conversations_in(*D) for m in lake.messages(cid, exclude_pii=True)
    )

    # Idempotent: run again, nothing changed since, nothing written (one listing, shared by both kinds).
    lake.reset_stats()
    context = run_context(utc(2026, 3, 3))
    again = render(catch_up(tmp_path, lookback=1), context).execute(context)
    assert again["reexported"] == 0
    assert [w["action"] for w in again["windows"]] == ["unchanged", "unchanged"]
    assert lake.stats.by_kind == {"list": 1, "get": 0, "messages": 0, "other": 0}
    assert snapshot(tmp_path, "messages", "2026-03-02")[0]["run_token"] == manifest["run_token"]


def test_new_conversations_in_a_window_with_pending_ones_re_export_it(lake, tmp_path):
    lake.hold(lake.conversations_in(*D)[0])
    export_day(tmp_path, utc(2026, 3, 2))
    added = lake.add_conversation(createdAt="2026-03-02T12:00:00.5Z", status="completed")

    context = run_context(utc(2026, 3, 3))
    summary = render(catch_up(tmp_path, lookback=1, messages_destination=None), context).execute(context)
    assert summary["reexported"] == 1
    _, rows = snapshot(tmp_path, "conversations", "2026-03-02")
    assert added["id"] in {r["id"] for r in rows}


def test_the_re_export_keeps_the_manifests_format_filters_and_include_pending(lake, tmp_path):
    in_d = set(lake.conversations_in(*D))
    whatsapp = [c["id"] for c in lake.all_conversations() if c["channelId"] == "ch_whatsapp" and c["id"] in in_d]
    late = whatsapp[:2]
    lake.hold(*late)
    destination = tmp_path / "messages" / "date=2026-03-02"
    from airflow_provider_auralytik.operators.export import AuralytikExportMessagesOperator

    AuralytikExportMessagesOperator(
        task_id="m",
        destination=str(destination),
        date_from=D[0],
        date_to=D[1],
        channel_id="ch_whatsapp",
        compression=None,
        include_pending=False,
    ).execute(task_context(OutletEvents()))
    before = read_manifest(local(destination))
    assert before is not None
    lake.complete(*late)

    context = run_context(utc(2026, 3, 3))
    op = catch_up(tmp_path, lookback=1, conversations_destination=None)
    render(op, context).execute(context)
    after = read_manifest(local(destination))
    assert after is not None
    assert {p["conversation_id"] for p in before["pending"]} == set(late)
    assert after["run_token"] > before["run_token"]
    assert (after["filters"], after["compression"], after["include_pending"]) == (
        {"channel_id": "ch_whatsapp"},
        None,
        False,
    )
    assert after["pending"] == []
    assert {m["conversationId"] for m in iter_records(local(destination))} == set(whatsapp)  # late ones now too


def test_destinations_render_with_each_earlier_windows_dates():
    start = pendulum.datetime(2026, 3, 10, tz="UTC")
    context: Any = {
        "data_interval_start": start,
        "data_interval_end": start.add(days=1),
        "logical_date": start.add(days=1),
    }
    shifted = window_context(context, timedelta(days=2))
    assert shifted["data_interval_start"] == pendulum.datetime(2026, 3, 8, tz="UTC")
    assert (shifted["ds"], shifted["ds_nodash"], shifted["ts_nodash"]) == ("2026-03-09", "20260309", "20260309T000000")
    assert context["data_interval_start"] == start  # the run's own context is left alone


def test_compare_says_what_changed():
    manifest: dict[str, Any] = {
        "counts": {"conversations": 4},
        "pending": [
            {"conversation_id": "a", "status": "active"},
            {"conversation_id": "b", "status": "active"},
            {"conversation_id": "c", "status": "active"},
            {"conversation_id": "d", "status": "waiting"},
        ],
    }
    now = {
        "a": {"id": "a", "status": "completed"},
        "b": {"id": "b", "status": "active"},
        "d": {"id": "d", "status": "active"},
        "e": {"id": "e", "status": "active"},
    }
    changes = compare(manifest, now)
    assert (changes.completed, changes.changed, changes.new_pending, changes.still_pending) == (
        ["a"],
        ["c", "d"],
        ["e"],
        ["b"],
    )
    assert changes.appeared == 0
    assert changes.any
    same = compare(manifest | {"pending": manifest["pending"][1:2]}, {"b": {"id": "b", "status": "active"}})
    assert not same.any
    assert compare({"counts": {"conversations": 1}, "pending": []}, {"x": {}, "y": {}}).appeared == 2 - 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "Give conversations_destination and/or messages_destination"),
        ({"messages_destination": "  "}, "messages_destination must be"),
        ({"messages_destination": "/x", "lookback": 0}, "lookback must be an integer from 1 to 366"),
        ({"messages_destination": "/x", "lookback": True}, "lookback must be"),
        ({"messages_destination": "/x", "lookback": "3"}, "lookback must be"),
    ],
)
def test_bad_parameters_fail_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AuralytikCatchUpOperator(task_id="catch_up", **kwargs)


def test_a_relative_destination_fails_before_any_request(lake, tmp_path):
    context = run_context(utc(2026, 3, 3))
    op = AuralytikCatchUpOperator(task_id="catch_up", messages_destination="relative/{{ ds }}", lookback=2)
    with pytest.raises(ValueError, match="relative path"):
        render(op, context).execute(context)
    assert lake.stats.requests == 0


def test_a_destination_that_does_not_depend_on_the_window_is_refused_before_any_request(lake, tmp_path):
    context = run_context(utc(2026, 3, 3))
    op = AuralytikCatchUpOperator(task_id="catch_up", messages_destination=str(tmp_path / "messages"), lookback=2)
    with pytest.raises(ValueError, match=r"messages_destination renders to .* for both"):
        render(op, context).execute(context)
    assert lake.stats.requests == 0


def test_a_manifest_of_another_window_is_left_alone(lake, tmp_path):
    lake.hold(lake.conversations_in(*D)[0])
    export_day(tmp_path, utc(2026, 3, 2))
    # A template keyed on the month: the day 03-01 finds the snapshot of 03-02 there.
    op = AuralytikCatchUpOperator(
        task_id="catch_up",
        messages_destination=str(tmp_path / "messages" / "date=2026-03-0{{ data_interval_start.day + 1 }}"),
        lookback=1,
    )
    lake.reset_stats()
    context = run_context(utc(2026, 3, 2))  # looks back at [03-01, 03-02)
    summary = render(op, context).execute(context)
    assert [w["action"] for w in summary["windows"]] == ["other window"]
    assert lake.stats.requests == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"page_size": 0}, "page_size must be an integer from 1 to 100"),
        ({"max_concurrency": 1000}, "max_concurrency=1000 is more than 256"),
        ({"pii_guard": "nope"}, "pii_guard must be"),
        ({"max_records_per_part": 0}, "max_records_per_part"),
    ],
)
def test_export_options_are_checked_by_the_exports_own_rules_before_any_request(lake, tmp_path, kwargs, message):
    context = run_context(utc(2026, 3, 3))
    with pytest.raises(ValueError, match=message):
        render(catch_up(tmp_path, lookback=2, **kwargs), context).execute(context)
    assert lake.stats.requests == 0


def test_a_newer_snapshot_committed_meanwhile_is_taken_as_the_catch_up(lake, tmp_path, monkeypatch):
    import airflow_provider_auralytik.output.snapshot as snapshot_module

    late = lake.conversations_in(*D)[0]
    lake.hold(late)
    export_day(tmp_path, utc(2026, 3, 2))
    lake.complete(late)
    # The re-export starts "before" the committed snapshot's run: as if another run committed while it wrote.
    monkeypatch.setattr(snapshot_module, "new_run_token", lambda started=None: "20000101T000000.000000Z-00000000")

    context = run_context(utc(2026, 3, 3))
    summary = render(catch_up(tmp_path, lookback=1), context).execute(context)
    assert [w["action"] for w in summary["windows"]] == ["re-exported by another run"] * 2
    assert summary["reexported"] == 0


def test_catch_up_on_s3(lake, s3_server):
    """The same on object storage (moto's S3 server): manifests read from S3, the re-export a conditional PUT."""
    import uuid

    from airflow_provider_auralytik._compat import ObjectStoragePath
    from airflow_provider_auralytik.operators.export import AuralytikExportMessagesOperator

    late = lake.conversations_in(*D)[:2]
    lake.hold(*late)
    root = s3_server.url(f"catch-up/{uuid.uuid4().hex}")
    AuralytikExportMessagesOperator(
        task_id="m",
        destination=f"{root}/messages/date=2026-03-02",
        destination_conn_id=s3_server.conn_id,
        date_from=D[0],
        date_to=D[1],
    ).execute(task_context(OutletEvents()))
    lake.complete(late[0])

    context = run_context(utc(2026, 3, 3))
    op = AuralytikCatchUpOperator(
        task_id="catch_up",
        messages_destination=root + "/messages/date={{ data_interval_start | ds }}",
        destination_conn_id=s3_server.conn_id,
        lookback=2,
    )
    summary = render(op, context).execute(context)
    assert [(w["date_from"][:10], w["action"]) for w in summary["windows"]] == [
        ("2026-03-01", "missing"),
        ("2026-03-02", "re-exported"),
    ]
    path = ObjectStoragePath(f"{root}/messages/date=2026-03-02", conn_id=s3_server.conn_id)
    manifest = read_manifest(path)
    assert manifest is not None
    assert pending_ids(manifest) == {late[1]}
    assert {m["conversationId"] for m in iter_records(path)} == set(lake.conversations_in(*D))
