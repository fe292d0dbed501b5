"""AuralytikConversationsCompletedSensor.

* Poke logic and modes with ``requests-mock`` (a fake API whose ``dateTo`` is inclusive).
* Requests per poke over a 5,000-conversation window, and the window's edges, against the sandbox.
* End to end with ``dag.test()`` against the sandbox: deferrable (the trigger runs inline), then an
  export; really deferring while conversations complete; and ``mode="reschedule"``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import textwrap
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pendulum
import pytest
import requests_mock

from airflow_provider_auralytik._compat import (
    AIRFLOW_V_3_1_PLUS,
    AirflowException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)
from airflow_provider_auralytik.conversations.window import EmptyWindowError, format_instant, parse_instant
from airflow_provider_auralytik.hooks.auralytik import AuralytikAuthError, AuralytikNotFoundError
from airflow_provider_auralytik.sensors.conversations import AuralytikConversationsCompletedSensor
from airflow_provider_auralytik.triggers.conversations import AuralytikConversationsCompletedTrigger
from tests.fixtures.sandbox import MakeSandbox

UTC = timezone.utc
BASE = "https://api.test/v1"
KEY = "sensor-test-key-never-logged"
CONTENT = "Call me on +44 7700 900123 about my refund"  # stands for message-like content
START = datetime(2024, 1, 15, tzinfo=UTC)
END = datetime(2024, 1, 16, tzinfo=UTC)
DATE_FROM, DATE_TO = format_instant(START), format_instant(END)
CONN_ENV = "AIRFLOW_CONN_AURALYTIK_DEFAULT"
PENDING_LOG = re.compile(r"At least (\d+) conversations not completed yet\.")


def set_conn(monkeypatch: pytest.MonkeyPatch, url: str, key: str, **extra: Any) -> None:
    fields: dict[str, Any] = {"conn_type": "auralytik", "host": url, "password": key}
    if extra:
        fields["extra"] = extra
    monkeypatch.setenv(CONN_ENV, json.dumps(fields))


def sensor(**kwargs: Any) -> AuralytikConversationsCompletedSensor:
    kwargs.setdefault("task_id", "wait")
    if "conversation_ids" not in kwargs:
        kwargs.setdefault("date_from", DATE_FROM)
        kwargs.setdefault("date_to", DATE_TO)
    return AuralytikConversationsCompletedSensor(**kwargs)


def log_text(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    """What went through stdlib logging plus what Airflow's structlog printed."""
    out, err = capfd.readouterr()
    return caplog.text + out + err


# ---------------------------------------------------------------------------------------------
# A fake API for requests-mock: dateFrom/dateTo both inclusive, newest first, page numbers
# ---------------------------------------------------------------------------------------------


def conv(cid: str, created: datetime, status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {"id": cid, "status": status, "createdAt": format_instant(created), "channelId": "ch_sms", **extra}


def day_of(count: int, pending: int = 0) -> list[dict[str, Any]]:
    """``count`` conversations inside the window, the first ``pending`` of them active."""
    step = timedelta(seconds=80_000 / max(count, 1))
    return [
        conv(f"conv_{i:05d}", START + timedelta(seconds=1) + step * i, "active" if i < pending else "completed")
        for i in range(count)
    ]


class FakeApi:
    def __init__(self, m: requests_mock.Mocker, conversations: list[dict[str, Any]]) -> None:
        self.conversations = conversations
        m.get(f"{BASE}/conversations", json=self.listing)
        m.get(re.compile(r"/v1/conversations/[^/?]+$"), json=self.one)

    def listing(self, request: Any, context: Any) -> dict[str, Any]:
        q = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        low = parse_instant(q["dateFrom"]) if "dateFrom" in q else None
        high = parse_instant(q["dateTo"]) if "dateTo" in q else None
        matched = [
            c
            for c in self.conversations
            if (low is None or parse_instant(c["createdAt"]) >= low)
            and (high is None or parse_instant(c["createdAt"]) <= high)  # inclusive, like the sandbox
            and ("status" not in q or c["status"] == q["status"])
            and ("channelId" not in q or c.get("channelId") == q["channelId"])
        ]
        matched.sort(key=lambda c: (-parse_instant(c["createdAt"]).timestamp(), c["id"]))
        page, size = int(q.get("page", 1)), int(q.get("pageSize", 25))
        return {
            "data": matched[(page - 1) * size : page * size],
            "page": page,
            "pageSize": size,
            "totalCount": len(matched),
        }

    def one(self, request: Any, context: Any) -> dict[str, Any]:
        cid = unquote(urlsplit(request.url).path.rsplit("/", 1)[1])
        for c in self.conversations:
            if c["id"] == cid:
                return c
        context.status_code = 404
        return {"error": {"code": "not_found", "message": f"conversation {cid!r} not found"}}

    def complete_all(self) -> None:
        for c in self.conversations:
            c["status"] = "completed"


@pytest.fixture
def m(monkeypatch: pytest.MonkeyPatch) -> Iterator[requests_mock.Mocker]:
    set_conn(monkeypatch, BASE, KEY, max_retries=1, backoff_base=0, backoff_max=0)
    with requests_mock.Mocker(case_sensitive=True) as mocker:
        yield mocker


# ---------------------------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------------------------


def test_template_fields() -> None:
    assert set(AuralytikConversationsCompletedSensor.template_fields) == {
        "conversation_ids",
        "date_from",
        "date_to",
        "channel_id",
        "campaign_id",
    }


def test_window_defaults_to_the_data_interval() -> None:
    s = AuralytikConversationsCompletedSensor(task_id="wait", channel_id="{{ params.channel }}")
    s.render_template_fields(
        {
            "data_interval_start": pendulum.datetime(2024, 1, 15, tz="UTC"),
            "data_interval_end": pendulum.datetime(2024, 1, 16, tz="UTC"),
            "params": {"channel": "ch_sms"},
        }
    )
    assert s._target().as_dict() == {
        "date_from": DATE_FROM,
        "date_to": DATE_TO,
        "channel_id": "ch_sms",
        "campaign_id": None,
        "max_pending": 0,
    }


@pytest.mark.parametrize("ids", ["conv_1", ["conv_1", ""], ["conv_1", " "], ["conv_1", None], [1, 2], {"conv_1": 1}, 7])
def test_bad_conversation_ids_are_refused_at_construction(ids: Any) -> None:
    with pytest.raises(ValueError, match="conversation_ids must be a list of non-empty strings") as info:
        AuralytikConversationsCompletedSensor(task_id="wait", conversation_ids=ids)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("rendered", ["conv_1", ["conv_1", ""], [None], "['a', 'b']"])
@pytest.mark.parametrize("deferrable", [False, True])
def test_bad_rendered_conversation_ids_are_refused_before_any_request(
    m: requests_mock.Mocker, rendered: Any, deferrable: bool
) -> None:
    FakeApi(m, [conv("conv_1", START)])
    s = sensor(conversation_ids="{{ params.ids }}", deferrable=deferrable)  # checked once rendered
    s.conversation_ids = rendered
    with pytest.raises(ValueError, match="conversation_ids must be a list of non-empty strings"):
        s.execute({})
    assert m.call_count == 0


@pytest.mark.parametrize("name", ["channel_id", "campaign_id"])
def test_list_valued_filter_is_refused_at_construction_and_once_rendered(m: requests_mock.Mocker, name: str) -> None:
    FakeApi(m, day_of(10))
    with pytest.raises(ValueError, match=rf"{name} must be one value .*expand\({name}="):
        sensor(**{name: ["a", "b"]})
    s = sensor(**{name: "{{ params.x }}"})
    setattr(s, name, ["a", "b"])
    with pytest.raises(ValueError, match=f"{name} must be one value"):
        s.execute({})
    assert m.call_count == 0


@pytest.mark.parametrize(("setting", "expected"), [("true", True), ("false", False)])
def test_deferrable_default_follows_operators_default_deferrable(
    monkeypatch: pytest.MonkeyPatch, setting: str, expected: bool
) -> None:
    from airflow_provider_auralytik._compat import conf

    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", setting)
    assert conf.getboolean("operators", "default_deferrable") is expected
    assert sensor().deferrable is expected
    # An explicit value wins over the configuration.
    assert sensor(deferrable=not expected).deferrable is (not expected)


# ---------------------------------------------------------------------------------------------
# poke() with requests-mock
# ---------------------------------------------------------------------------------------------


def test_poke_small_window_costs_one_request(m: requests_mock.Mocker) -> None:
    api = FakeApi(m, day_of(40, pending=2))
    s = sensor()
    assert s.poke({}) is False
    assert m.call_count == 1
    api.complete_all()
    assert s.poke({}) is True
    assert m.call_count == 2


def test_poke_large_window(
    m: requests_mock.Mocker, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    api = FakeApi(m, day_of(412, pending=37))
    s = sensor()

    # The 37 active ones are the oldest: not on the first page; a page of status=active shows them.
    for _ in range(3):
        m.reset_mock()
        assert s.poke({}) is False
        assert m.call_count == 2, "a waiting poke costs 2 requests"
    assert "At least 37 conversations not completed yet." in log_text(caplog, capfd)

    api.complete_all()
    m.reset_mock()
    assert s.poke({}) is True
    # "Done" is never taken from counts: the window is listed exactly, one page per piece.
    assert 2 + 412 / 100 < m.call_count <= 2 + 2 * (412 / 75 + 1)
    assert all(r.qs["page"] == ["1"] for r in m.request_history)
    assert "All 412 conversations are completed." in log_text(caplog, capfd)


def test_poke_edges_with_an_inclusive_date_to(m: requests_mock.Mocker) -> None:
    api = FakeApi(m, [*day_of(412), conv("at_end", END, "active")])
    assert sensor().poke({}) is True

    api.conversations.append(conv("at_start", START, "active"))
    assert sensor().poke({}) is False


def test_poke_filters(m: requests_mock.Mocker) -> None:
    FakeApi(m, [*day_of(200), conv("web", START + timedelta(hours=2), "active", channelId="ch_web")])
    assert sensor(channel_id="ch_sms").poke({}) is True
    assert all(r.qs.get("channelId") == ["ch_sms"] for r in m.request_history)
    assert sensor(channel_id="ch_web").poke({}) is False
    assert sensor().poke({}) is False


def test_poke_ids(m: requests_mock.Mocker) -> None:
    api = FakeApi(m, [conv("conv_a", START), conv("conv_b", START, "active"), conv("conv_c", START)])
    s = sensor(conversation_ids=["conv_a", "conv_b", "conv_c"])
    assert s.poke({}) is False
    assert [r.path for r in m.request_history] == [
        "/v1/conversations/conv_a",
        "/v1/conversations/conv_b",
        "/v1/conversations/conv_c",
    ]
    m.reset_mock()
    assert s.poke({}) is False
    assert [r.path for r in m.request_history] == ["/v1/conversations/conv_b"]  # completed ones are not asked again
    api.complete_all()
    assert s.poke({}) is True


def test_unknown_id_fails_at_once_instead_of_waiting(m: requests_mock.Mocker) -> None:
    FakeApi(m, [conv("conv_a", START)])
    s = sensor(conversation_ids=["conv_a", "conv_missing"], timeout=600, poke_interval=60)
    started = time.monotonic()
    with pytest.raises(AuralytikNotFoundError, match="'conv_missing'"):
        s.execute({})
    assert time.monotonic() - started < 5


def test_empty_window_is_refused_before_any_request(m: requests_mock.Mocker) -> None:
    FakeApi(m, [])
    s = sensor(date_from=DATE_FROM, date_to=DATE_FROM)
    with pytest.raises(EmptyWindowError, match="CronDataIntervalTimetable"):
        s.poke({})
    with pytest.raises(EmptyWindowError):
        s.execute({})
    assert m.call_count == 0


def test_logs_never_hold_the_key_or_content(
    m: requests_mock.Mocker, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    conversations = [
        conv(f"conv_{i:03d}", START + timedelta(minutes=i + 1), "active" if i < 3 else "completed", summary=CONTENT)
        for i in range(150)
    ]
    FakeApi(m, conversations)
    caplog.set_level("DEBUG")
    assert sensor().poke({}) is False
    assert sensor(conversation_ids=["conv_000", "conv_100"]).poke({}) is False

    # A refused key, echoed back by the server, and a 5xx retried: neither is logged with the key.
    m.get(
        f"{BASE}/conversations",
        [
            {"status_code": 502, "text": "<html>bad gateway</html>"},
            {"status_code": 401, "json": {"message": f"bad key {KEY}"}},
        ],
    )
    with pytest.raises(AuralytikAuthError) as info:
        sensor().poke({})

    text = log_text(caplog, capfd) + str(info.value)
    assert "At least 3 conversations not completed yet." in text
    assert "1 of 2 conversations not completed yet." in text
    assert KEY not in text
    assert CONTENT not in text
    assert "+44 7700" not in text


# ---------------------------------------------------------------------------------------------
# Modes: poke (timeout, soft_fail), reschedule, deferrable
# ---------------------------------------------------------------------------------------------


def test_poke_mode_timeout(m: requests_mock.Mocker) -> None:
    FakeApi(m, day_of(10, pending=1))
    with pytest.raises(AirflowSensorTimeout):
        sensor(timeout=0.3, poke_interval=0.1).execute({})


def test_poke_mode_timeout_with_soft_fail_skips(m: requests_mock.Mocker) -> None:
    FakeApi(m, day_of(10, pending=1))
    started = time.monotonic()
    with pytest.raises(AirflowSkipException):
        sensor(timeout=0.3, poke_interval=0.1, soft_fail=True).execute({})
    assert time.monotonic() - started < 5
    assert m.call_count >= 2


class _RescheduleTi:
    def get_first_reschedule_date(self, context: Any) -> datetime | None:
        return None


def reschedule_context() -> Any:
    """The little of a task context that reschedule mode reads: the first reschedule date (none yet)."""
    return {"ti": _RescheduleTi()}


def test_reschedule_mode_gives_the_slot_back(m: requests_mock.Mocker) -> None:
    api = FakeApi(m, day_of(150, pending=5))
    s = sensor(mode="reschedule", poke_interval=120, timeout=3600)
    with pytest.raises(AirflowRescheduleException) as info:
        s.execute(reschedule_context())
    assert info.value.reschedule_date > datetime.now(UTC) + timedelta(seconds=100)
    api.complete_all()
    assert sensor(mode="reschedule").execute(reschedule_context()) is None


def test_deferrable_execute_defers_with_the_trigger(m: requests_mock.Mocker) -> None:
    FakeApi(m, day_of(150, pending=5))
    s = sensor(
        deferrable=True, poke_interval=42, timeout=3600, channel_id="ch_sms", auralytik_conn_id="auralytik_default"
    )
    with pytest.raises(TaskDeferred) as info:
        s.execute({})
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == timedelta(seconds=s.timeout) == timedelta(hours=1)
    assert not deferred.kwargs  # what execute_complete needs travels in the event payload
    assert isinstance(deferred.trigger, AuralytikConversationsCompletedTrigger)
    classpath, kwargs = deferred.trigger.serialize()
    assert classpath == "airflow_provider_auralytik.triggers.conversations.AuralytikConversationsCompletedTrigger"
    assert kwargs == {
        "auralytik_conn_id": "auralytik_default",
        "conversation_ids": None,
        "date_from": DATE_FROM,
        "date_to": DATE_TO,
        "channel_id": "ch_sms",
        "campaign_id": None,
        "max_pending": 0,
        "poll_interval": 42.0,
    }
    assert KEY not in json.dumps(kwargs)


def test_deferrable_execute_with_ids(m: requests_mock.Mocker) -> None:
    FakeApi(m, [conv("conv_a", START, "active")])
    with pytest.raises(TaskDeferred) as info:
        sensor(conversation_ids=["conv_a"], deferrable=True).execute({})
    _, kwargs = info.value.trigger.serialize()
    assert kwargs["conversation_ids"] == ["conv_a"]
    assert kwargs["date_from"] is None
    assert kwargs["date_to"] is None


def test_deferrable_execute_returns_at_once_when_already_complete(m: requests_mock.Mocker) -> None:
    FakeApi(m, day_of(150))
    assert sensor(deferrable=True).execute({}) is None
    assert m.call_count <= 6  # first page, a status page, the exact listing of 150


def test_execute_complete() -> None:
    s = sensor(deferrable=True)
    event = {"status": "success", "message": "All 412 conversations are completed.", "pending": 0, "total": 412}
    s.execute_complete({}, event)  # returns without raising
    with pytest.raises(AirflowException, match="HTTP 401"):
        s.execute_complete({}, {"status": "error", "message": "GET /conversations failed with HTTP 401"})
    with pytest.raises(AirflowException):
        s.execute_complete({}, {})


@pytest.mark.skipif(
    not AIRFLOW_V_3_1_PLUS,
    reason="Airflow 3.0's BaseSensorOperator.resume_execution ignores soft_fail on a trigger timeout (fixed in 3.1)",
)
def test_deferred_timeout_and_soft_fail() -> None:
    """What Airflow does when the triggerer gives up at ``defer(timeout=...)``, and after an error event."""
    from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason

    timed_out = {"error": TriggerFailureReason.TRIGGER_TIMEOUT}
    with pytest.raises(AirflowSensorTimeout):
        sensor(deferrable=True).resume_execution(TRIGGER_FAIL_REPR, timed_out, {})
    with pytest.raises(AirflowSkipException):
        sensor(deferrable=True, soft_fail=True).resume_execution(TRIGGER_FAIL_REPR, timed_out, {})

    error = {"event": {"status": "error", "message": "refused", "pending": None, "total": None}}
    with pytest.raises(AirflowException, match="refused"):
        sensor(deferrable=True).resume_execution("execute_complete", error, {})
    success = {"event": {"status": "success", "message": "done", "pending": 0, "total": 3}}
    assert sensor(deferrable=True).resume_execution("execute_complete", success, {}) is None


# ---------------------------------------------------------------------------------------------
# Against the sandbox over real HTTP: a 5,000-conversation day
# ---------------------------------------------------------------------------------------------

DAY = date(2024, 1, 15)


def pokes(s: AuralytikConversationsCompletedSensor, sandbox: Any) -> tuple[bool, int]:
    sandbox.reset_stats()
    done = s.poke({})
    return done, sandbox.stats.requests


#: The poke that finds a 5,000-conversation window done lists it exactly: a page per ~75.
DONE_POKE_MAX = 2 + round(1.3 * 5000 / 75)


@pytest.mark.parametrize("count_mode", ["honest", "zero", "half", "plus1000"])
def test_sandbox_completed_window_is_verified_by_one_exact_listing(
    make_sandbox: MakeSandbox, monkeypatch: pytest.MonkeyPatch, count_mode: str
) -> None:
    sandbox = make_sandbox(days=1, per_day=5000, start=DAY, total_count_mode=count_mode)
    set_conn(monkeypatch, sandbox.url, sandbox.api_key)
    assert len(sandbox.conversations_in(DATE_FROM, DATE_TO)) == 5000
    done, requests = pokes(sensor(), sandbox)
    assert done is True
    assert requests <= DONE_POKE_MAX


@pytest.mark.parametrize("count_mode", ["honest", "zero", "page", "half", "triple", "plus1000", "stale"])
def test_sandbox_never_done_with_active_conversations_whatever_the_count(
    make_sandbox: MakeSandbox, monkeypatch: pytest.MonkeyPatch, count_mode: str
) -> None:
    sandbox = make_sandbox(days=1, per_day=600, start=DAY, total_count_mode=count_mode)
    set_conn(monkeypatch, sandbox.url, sandbox.api_key)
    oldest = sorted(sandbox.conversations_in(DATE_FROM, DATE_TO))[:3]
    for conversation_id in oldest:  # three of the oldest, in a status never seen before
        sandbox._data.by_id[conversation_id].fixed = True
        sandbox._data.by_id[conversation_id].fields["status"] = "escalated"
        sandbox._data.by_id[conversation_id]._json_completed = None
    s = sensor()
    for _ in range(2):
        done, _ = pokes(s, sandbox)
        assert done is False


def test_sandbox_waiting_window(
    make_sandbox: MakeSandbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    sandbox = make_sandbox(days=1, per_day=5000, start=DAY, complete_within=3600)
    set_conn(monkeypatch, sandbox.url, sandbox.api_key)
    s = sensor()

    def active() -> int:
        return sum(1 for c in sandbox.all_conversations() if c["status"] != "completed")

    before = active()
    done, first = pokes(s, sandbox)
    assert done is False
    assert first <= 2
    pending, *_ = PENDING_LOG.findall(log_text(caplog, capfd))
    assert 0 < int(pending) <= before

    for _ in range(3):
        done, requests = pokes(s, sandbox)
        assert (done, requests <= 2) == (False, True)


def test_sandbox_not_completed_at_date_to_does_not_block(
    make_sandbox: MakeSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = make_sandbox(days=1, per_day=5000, start=DAY)
    set_conn(monkeypatch, sandbox.url, sandbox.api_key)
    sandbox.add_conversation(createdAt=DATE_TO, status="active")  # the sandbox's dateTo is inclusive
    s = sensor()
    done, requests = pokes(s, sandbox)
    assert done is True
    assert requests <= DONE_POKE_MAX


def test_sandbox_not_completed_at_date_from_blocks(
    make_sandbox: MakeSandbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    sandbox = make_sandbox(days=1, per_day=5000, start=DAY)
    set_conn(monkeypatch, sandbox.url, sandbox.api_key)
    blocker = sandbox.add_conversation(createdAt=DATE_FROM, status="active")
    sandbox.add_conversation(createdAt=DATE_TO, status="active")
    s = sensor()
    done, first = pokes(s, sandbox)
    assert done is False
    assert first == 2  # the first page (newest), then a page of status=active shows it
    assert "At least 1 conversations not completed yet." in log_text(caplog, capfd)
    assert pokes(s, sandbox) == (False, 2)

    sandbox.delete_conversation(blocker["id"])
    sandbox.add_conversation(createdAt=DATE_FROM, status="completed", id=blocker["id"])
    done, _ = pokes(s, sandbox)
    assert done is True


# ---------------------------------------------------------------------------------------------
# End to end with dag.test() against the sandbox
# ---------------------------------------------------------------------------------------------

DAG_FILE = '''
"""DAGs for tests/sensors/test_conversations.py (written there, parsed by dag.test())."""
from datetime import datetime, timezone

from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_auralytik.operators.export import AuralytikExportConversationsOperator
from airflow_provider_auralytik.sensors.conversations import AuralytikConversationsCompletedSensor

KW = dict(
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
)

with DAG("auralytik_test_sensor_then_export", **KW) as sensor_then_export:
    wait = AuralytikConversationsCompletedSensor(task_id="wait", deferrable=True, poke_interval=0.2, timeout=60)
    export = AuralytikExportConversationsOperator(task_id="export", destination="{OUT}/{{ ds }}")
    wait >> export

with DAG("auralytik_test_deferrable", **KW) as deferrable:
    AuralytikConversationsCompletedSensor(task_id="wait", deferrable=True, poke_interval=0.2, timeout=60)

with DAG("auralytik_test_reschedule", **KW) as reschedule:
    AuralytikConversationsCompletedSensor(task_id="wait", mode="reschedule", poke_interval=1, timeout=60)
'''

#: dag.test(logical_date=...) of the daily timetable covers [2024-01-15, 2024-01-16): the sandbox's day.
LOGICAL_DATE = datetime(2024, 1, 16, tzinfo=UTC)


@pytest.fixture(scope="module")
def dags(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An initialised metadata DB, and a DAG bundle holding the test DAGs (dag.test() wants them parsed)."""
    from airflow.utils import db

    folder = tmp_path_factory.mktemp("auralytik_dags")
    out = tmp_path_factory.mktemp("auralytik_out")
    (folder / "auralytik_test_dags.py").write_text(textwrap.dedent(DAG_FILE).replace("{OUT}", str(out)))
    bundles = [
        {
            "name": "auralytik-sensor-tests",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(folder)},
        }
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
        db.initdb()
        spec = importlib.util.spec_from_file_location("auralytik_test_dags", folder / "auralytik_test_dags.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.OUT = out  # type: ignore[attr-defined]  # a DAG module loaded at runtime
        yield module


def task_states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_dag_deferrable_sensor_then_export(
    dags: Any, make_sandbox: MakeSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = make_sandbox(days=1, per_day=300, start=DAY)
    set_conn(monkeypatch, sandbox.url, sandbox.api_key)

    run = dags.sensor_then_export.test(logical_date=LOGICAL_DATE)

    assert str(run.state) == "success"
    assert task_states(run) == {"wait": "success", "export": "success"}
    manifest = json.loads((Path(dags.OUT) / "2024-01-16" / "_manifest.json").read_text())
    assert manifest["window"] == {"date_from": DATE_FROM, "date_to": DATE_TO}
    assert manifest["counts"]["conversations"] == 300


def test_dag_deferrable_really_defers_until_completed(
    dags: Any, make_sandbox: MakeSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[dict[str, Any]] = []
    original = AuralytikConversationsCompletedSensor.execute_complete

    def spy(self: Any, context: Any, event: dict[str, Any]) -> None:
        events.append(event)
        return original(self, context, event)

    monkeypatch.setattr(AuralytikConversationsCompletedSensor, "execute_complete", spy)
    # Long enough that the first poke (after dag.test() starts, slow on a loaded machine) still waits.
    sandbox = make_sandbox(days=1, per_day=300, start=DAY, complete_within=15)
    set_conn(monkeypatch, sandbox.url, sandbox.api_key)
    last_completion = max(sandbox.completion_time(cid) for cid in sandbox.conversations_in(DATE_FROM, DATE_TO))

    run = dags.deferrable.test(logical_date=LOGICAL_DATE)

    assert str(run.state) == "success"
    assert task_states(run) == {"wait": "success"}
    assert events, "the sensor deferred, and resumed in execute_complete"
    assert events[0]["status"] == "success"
    assert events[0]["pending"] == 0
    assert events[0]["total"] == 300
    assert json.loads(json.dumps(events[0])) == events[0]
    assert datetime.now(UTC) >= last_completion


@pytest.mark.skipif(
    not AIRFLOW_V_3_1_PLUS,
    reason="Airflow 3.0's dag.test() hands sensors the first reschedule date as a str: the 2nd false poke "
    "fails with TypeError in BaseSensorOperator.execute (fixed in 3.1)",
)
def test_dag_reschedule_mode(dags: Any, make_sandbox: MakeSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = make_sandbox(days=1, per_day=300, start=DAY, complete_within=2)
    set_conn(monkeypatch, sandbox.url, sandbox.api_key)

    run = dags.reschedule.test(logical_date=LOGICAL_DATE)

    assert str(run.state) == "success"
    (ti,) = run.get_task_instances()
    assert str(ti.state) == "success"
    assert ti.try_number == 1  # rescheduled pokes are not retries
    assert sandbox.stats.by_kind["list"] > 4, "several pokes, each in its own run of the task"


def test_an_outage_past_the_retries_is_a_false_poke_not_a_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    set_conn(monkeypatch, BASE, KEY, max_retries=1, backoff_base=0)
    with requests_mock.Mocker() as m:
        m.get(f"{BASE}/conversations", status_code=503, text="<html>down</html>")
        assert sensor().poke({}) is False
        assert m.call_count == 2
    assert "Poking again later" in log_text(caplog, capfd)


def test_a_refused_key_still_fails_the_poke_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, BASE, KEY, max_retries=3, backoff_base=0)
    with requests_mock.Mocker() as m:
        m.get(f"{BASE}/conversations", status_code=401, json={"message": "bad key"})
        with pytest.raises(AuralytikAuthError):
            sensor().poke({})
        assert m.call_count == 1


def test_an_empty_list_of_ids_is_done_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, BASE, KEY)
    with requests_mock.Mocker() as m:
        assert sensor(conversation_ids=[]).poke({}) is True
        assert m.call_count == 0


def test_a_connection_without_key_fails_the_poke_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONN_ENV, json.dumps({"conn_type": "auralytik", "host": BASE}))
    with requests_mock.Mocker() as m:
        with pytest.raises(AuralytikAuthError, match="no API key"):
            sensor().poke({})
        assert m.call_count == 0
