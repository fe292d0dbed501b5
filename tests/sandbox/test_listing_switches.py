"""The sandbox's switches for listing tests: totalCount lies, a crowded second, deletions while listed."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from airflow_provider_auralytik.sandbox import SandboxConfig
from airflow_provider_auralytik.sandbox.__main__ import build_parser
from airflow_provider_auralytik.sandbox.data import TOTAL_COUNT_MODES

QUERY = {"dateFrom": "2026-03-01T00:00:00Z", "dateTo": "2026-03-01T23:59:59Z", "pageSize": "10"}


def listing(sandbox: Any, **params: str) -> dict[str, Any]:
    response = requests.get(
        f"{sandbox.url}/conversations",
        params={**QUERY, **params},
        headers={"Authorization": f"Bearer {sandbox.api_key}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("honest", 40), ("zero", 0), ("page", 10), ("half", 20), ("triple", 120), ("plus1000", 1040), ("stale", 40)],
)
def test_total_count_modes(make_sandbox, mode, expected):
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=40, total_count_mode=mode)
    page = listing(sandbox)
    assert len(page["data"]) == 10  # the data itself never lies
    assert page["totalCount"] == expected


def test_stale_count_keeps_its_first_answer_after_inserts_and_deletes(make_sandbox):
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=40, total_count_mode="stale")
    assert listing(sandbox)["totalCount"] == 40
    sandbox.delete_conversation(sandbox.conversations_in("2026-03-01", "2026-03-02")[0])
    sandbox.insert_random_conversations(5)
    assert listing(sandbox)["totalCount"] == 40
    assert listing(sandbox, pageSize="100")["totalCount"] == 40  # the count does not depend on the page size
    assert len(listing(sandbox, pageSize="100")["data"]) == 44


def test_unknown_total_count_mode_is_refused():
    with pytest.raises(ValueError, match="total_count_mode must be one of"):
        SandboxConfig(total_count_mode="sometimes")


def test_crowded_second_puts_conversations_at_one_instant(make_sandbox):
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=10, crowded_second=150)
    at_noon = [c for c in sandbox.all_conversations() if c["createdAt"] == "2026-03-01T12:00:00Z"]
    assert len(at_noon) >= 150
    assert len(sandbox) == 160


def test_delete_during_listing_deletes_from_the_page_just_served(make_sandbox):
    sandbox = make_sandbox(start="2026-03-01", days=1, per_day=40, delete_during_listing=2)
    first = listing(sandbox)
    assert sandbox.deleted_ids == [first["data"][-1]["id"]]
    assert sandbox.get_conversation(first["data"][-1]["id"]) is None
    listing(sandbox)
    listing(sandbox)
    assert len(sandbox.deleted_ids) == 2  # two, then no more
    assert len(sandbox) == 38


def test_cli_exposes_the_switches():
    args = build_parser().parse_args(
        ["--total-count-mode", "plus1000", "--crowded-second", "120", "--delete-during-listing", "3"]
    )
    assert (args.total_count_mode, args.crowded_second, args.delete_during_listing) == ("plus1000", 120, 3)
    assert set(TOTAL_COUNT_MODES) == {"honest", "zero", "page", "half", "triple", "plus1000", "stale"}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--total-count-mode", "sometimes"])
