"""What the export operators refuse before the first request, and what they refuse to commit.

Against the sandbox over real HTTP; its request counter proves nothing was sent.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_auralytik.conversations.listing import CrowdedInstantError
from airflow_provider_auralytik.conversations.window import CreatedAtError
from airflow_provider_auralytik.hooks.auralytik import AuralytikNotFoundError
from airflow_provider_auralytik.operators.export import (
    MAX_CONCURRENCY,
    NOT_FOUND_FIRST,
    AuralytikExportConversationsOperator,
    AuralytikExportMessagesOperator,
)
from tests.conftest import sandbox_connection

DAY = datetime(2026, 3, 2, tzinfo=timezone.utc)
NEXT = DAY + timedelta(days=1)


@pytest.fixture
def api(make_sandbox, monkeypatch):
    def start(**config: Any):
        sandbox = make_sandbox(**{"start": "2026-03-01", "days": 3, "per_day": 60, **config})
        monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox, max_retries=0))
        return sandbox

    return start


def conversations_op(tmp_path, **kwargs: Any) -> AuralytikExportConversationsOperator:
    defaults = {"task_id": "conversations", "destination": str(tmp_path), "date_from": DAY, "date_to": NEXT}
    return AuralytikExportConversationsOperator(**{**defaults, **kwargs})


def messages_op(tmp_path, **kwargs: Any) -> AuralytikExportMessagesOperator:
    defaults = {"task_id": "messages", "destination": str(tmp_path), "date_from": DAY, "date_to": NEXT}
    return AuralytikExportMessagesOperator(**{**defaults, **kwargs})


# ---------------------------------------------------------------------------------------------
# Filters are one value each; max_concurrency is capped
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["channel_id", "campaign_id", "status"])
@pytest.mark.parametrize("value", [["ch_sms", "ch_webchat"], ("a",), {"x"}])
def test_list_valued_filter_is_refused_at_construction(tmp_path, name, value):
    with pytest.raises(ValueError, match=rf"{name} must be one value .*expand\({name}=") as caught:
        messages_op(tmp_path, **{name: value})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["channel_id", "campaign_id", "status"])
def test_list_rendered_into_a_filter_is_refused_before_any_request(api, tmp_path, name):
    sandbox = api()
    operator = conversations_op(tmp_path, **{name: "{{ params.value }}"})
    setattr(operator, name, ["ch_sms", "ch_webchat"])  # what render_template_as_native_obj would give
    with pytest.raises(ValueError, match=f"{name} must be one value"):
        operator.execute(context={})
    assert sandbox.stats.requests == 0
    assert not (tmp_path / "_manifest.json").exists()


def test_non_string_filter_is_refused(tmp_path):
    with pytest.raises(ValueError, match="channel_id must be a string or None, not int"):
        conversations_op(tmp_path, channel_id=42)


@pytest.mark.parametrize("value", [MAX_CONCURRENCY + 1, 10_000, 10**9])
def test_absurd_max_concurrency_is_refused_with_the_cap(tmp_path, value):
    with pytest.raises(ValueError, match=r"max_concurrency=\d+ is more than 256.*at most 256"):
        messages_op(tmp_path, max_concurrency=value)


def test_max_concurrency_up_to_the_cap_is_accepted(tmp_path):
    assert messages_op(tmp_path, max_concurrency=MAX_CONCURRENCY).max_concurrency == 256


# ---------------------------------------------------------------------------------------------
# No silent drops
# ---------------------------------------------------------------------------------------------


def answer_404_for_messages(sandbox, monkeypatch, which=lambda conversation_id: True) -> None:
    """The messages endpoint answers 404 (an outage page, a wrong path) for ``which`` conversations."""
    from airflow_provider_auralytik.sandbox import server

    original = sandbox._answer

    def answer(handler, kind, conv_id, query):
        if kind == "messages" and which(conv_id):
            return server._Response(404, b"<html>Not Found</html>", "text/html")
        return original(handler, kind, conv_id, query)

    monkeypatch.setattr(sandbox, "_answer", answer)


def test_messages_all_404_fails_naming_the_base_url_and_commits_nothing(api, tmp_path, monkeypatch):
    sandbox = api()
    answer_404_for_messages(sandbox, monkeypatch)
    with pytest.raises(AuralytikNotFoundError) as caught:
        messages_op(tmp_path, max_concurrency=2).execute(context={})
    message = str(caught.value)
    assert f"{NOT_FOUND_FIRST} of {NOT_FOUND_FIRST}" in message
    assert sandbox.url in message
    assert "'auralytik_default'" in message
    assert "\n" not in message
    assert not (tmp_path / "_manifest.json").exists()
    # Failed early: not a fetch for every one of the 60 conversations.
    assert sandbox.stats.by_kind["messages"] < 30


def test_messages_mostly_404_fails_at_the_end(api, tmp_path, monkeypatch):
    sandbox = api()
    listed = sorted(sandbox.conversations_in(DAY, NEXT))
    found = set(listed[::3])  # a third answer; the first fetches mix both
    answer_404_for_messages(sandbox, monkeypatch, lambda conversation_id: conversation_id not in found)
    with pytest.raises(AuralytikNotFoundError, match=rf"for {60 - len(found)} of 60 listed conversations"):
        messages_op(tmp_path).execute(context={})
    assert not (tmp_path / "_manifest.json").exists()


def test_a_few_gone_conversations_are_skipped_and_listed(api, tmp_path, monkeypatch):
    sandbox = api()
    listed = sorted(sandbox.conversations_in(DAY, NEXT))
    gone = set(listed[10:13])
    answer_404_for_messages(sandbox, monkeypatch, gone.__contains__)
    summary = messages_op(tmp_path).execute(context={})
    assert summary["skipped_conversations"] == 3
    assert summary["conversations"] == 60


def test_created_at_without_time_zone_fails_the_export_naming_it(api, tmp_path):
    sandbox = api()
    bad = sandbox.add_conversation(createdAt="2026-03-02T10:00:00Z")["id"]
    record = sandbox._data.by_id[bad]
    record.fields["createdAt"] = "2026-03-02T10:00:00"  # what a faulty back end sends
    record._json_active = record._json_completed = None
    with pytest.raises(CreatedAtError, match=rf"Conversation '{bad}' has createdAt='2026-03-02T10:00:00'"):
        conversations_op(tmp_path).execute(context={})
    assert not (tmp_path / "_manifest.json").exists()


def test_crowded_instant_fails_the_export_and_commits_nothing(api, tmp_path):
    api(start="2026-03-02", days=1, crowded_second=150)
    with pytest.raises(CrowdedInstantError, match="2026-03-02T12:00:00Z"):
        conversations_op(tmp_path).execute(context={})
    assert not (tmp_path / "_manifest.json").exists()
