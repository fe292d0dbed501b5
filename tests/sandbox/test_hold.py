"""Holding conversations active (SandboxConfig.hold_active / hold_for, Sandbox.hold / complete), over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from airflow_provider_auralytik.sandbox import Sandbox, SandboxConfig

DAY = ("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z")


def get(sandbox: Sandbox, path: str, **params: Any) -> Any:
    answer = requests.get(
        f"{sandbox.url}{path}", params=params, headers={"Authorization": f"Bearer {sandbox.api_key}"}, timeout=10
    )
    answer.raise_for_status()
    return answer.json()


def test_a_count_holds_each_days_last_created_conversations_until_told(make_sandbox):
    sandbox = make_sandbox(start="2026-03-01", days=2, per_day=20, hold_active=2)
    first_day = sandbox.conversations_in(*DAY)  # newest first
    second_day = sandbox.conversations_in("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z")
    assert sandbox.held_ids == sorted(first_day[:2] + second_day[:2])

    active = get(sandbox, "/conversations", dateFrom=DAY[0], dateTo=DAY[1], status="active", pageSize=100)
    assert sorted(c["id"] for c in active["data"]) == sorted(first_day[:2])
    held = get(sandbox, f"/conversations/{first_day[0]}")
    assert (held["status"], held["endedAt"]) == ("active", None)
    served = get(sandbox, f"/conversations/{first_day[0]}/messages")["messages"]
    assert served == sandbox.messages(first_day[0])

    sandbox.complete(first_day[0])
    done = get(sandbox, f"/conversations/{first_day[0]}")
    assert done["status"] == "completed"
    assert done["endedAt"] is not None
    full = get(sandbox, f"/conversations/{first_day[0]}/messages")["messages"]
    assert full == sandbox.messages(first_day[0])
    assert served == full[: max(1, (len(full) + 1) // 2)]  # an active conversation served its first half
    assert first_day[0] not in sandbox.held_ids

    sandbox.hold(first_day[5])
    assert get(sandbox, f"/conversations/{first_day[5]}")["status"] == "active"


def test_ids_held_for_a_time_then_complete(make_sandbox):
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=10, hold_active=["conv_000003"], hold_for=3600)
    assert get(sandbox, "/conversations/conv_000003")["status"] == "active"
    sandbox.hold("conv_000003", seconds=0)  # the time is up
    assert get(sandbox, "/conversations/conv_000003")["status"] == "completed"


def test_the_request_log_names_the_requests_about_a_window(make_sandbox):
    sandbox = make_sandbox(start="2026-03-01", days=2, per_day=10)
    day_two = sandbox.conversations_in("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z")
    get(sandbox, "/conversations", dateFrom="2026-03-02T00:00:00Z", dateTo="2026-03-02T12:00:00Z")
    get(sandbox, f"/conversations/{day_two[0]}/messages")
    assert len(sandbox.requests_for(*DAY)) == 0
    assert len(sandbox.requests_for("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z")) == 2
    sandbox.reset_stats()
    assert sandbox.request_log == []


@pytest.mark.parametrize("hold", [-1, True, "conv_1", [""], 1.5])
def test_a_bad_hold_is_refused(hold):
    with pytest.raises(ValueError, match="hold_active"):
        SandboxConfig(hold_active=hold)


def test_holding_an_unknown_id_raises(sandbox):
    with pytest.raises(KeyError):
        sandbox.hold("conv_nope")


def test_the_cli_holds_conversations_active():
    from airflow_provider_auralytik.sandbox.__main__ import build_parser, main

    args = build_parser().parse_args(["--hold-active", "2", "--hold-for", "60"])
    assert (args.hold_active, args.hold_for) == (2, 60.0)
    assert main(["--hold-active", "-1"]) == 2  # refused with one line, before it listens
