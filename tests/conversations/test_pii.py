"""PiiGuard: masking, failing without leaking, false positives, counts."""

from __future__ import annotations

import time
from typing import Any

import pytest

from airflow_provider_auralytik._compat import AirflowException
from airflow_provider_auralytik.conversations.pii import MASK, PiiGuard, PiiLeakError

PHONES = [
    "+44 7700 900123",
    "(555) 010-0199",
    "+1-202-555-0143",
    "07700900123",
    "555.010.0199",
    "+44 (0)20 7946 0958",
    "+1 (555) 010-0199",
    "020 7946 0958",
    "0049 30 1234567",
    "1-800-555-0199",
    "+33 1 23 45 67 89",
    "+447700900123",
    "0777 123 4567",
    # National notations: slashes (DE/AT), spaces, dots, dashes, parentheses, + and 00 prefixes.
    "0151/23456789",
    "030/1234567",
    "089 / 1234 5678",
    "0151 / 2345 6789",
    "+49 89/12345678",
    "+49 30 / 1234 567",
    "(0151) 2345 6789",
    "(030) 1234567",
    "+49 (0)151 23456789",
    "0049 151 23456789",
    "0049-151-2345-6789",
    "0151-23456789",
    "0151.234.567.89",
    "01 42 68 53 00",
    "06.12.34.56.78",
    "+33 1 42 68 53 00",
    "0033 1 42 68 53 00",
    "+39 06 6982 1234",
    "+31 (0)20 123 4567",
    "0800 123 4567",
    "+1 (202) 555-0143",
]
EMAILS = [
    "john.doe@example.com",
    "first.last+tag@sub.example.co.uk",
    "o'brien_99@mail-server.org",
    "JOSÉ@bücher.de",
    "x@y.io",
]
NOT_PII = [
    "2024-01-15",
    "2024-01-15T10:30:00Z",
    "2024-01-15 10:30:00",
    "15.01.2024",
    "20240115",
    "season 2023-2024",
    "order 1234567",
    "ORD-12345678",
    "msg_12345678",
    "ticket #12345678",
    "price 1,299.00 EUR",
    "12345678.90",
    "10.000.000",
    "$12345678",
    "12345678%",
    "192.168.100.200",
    "v1.2.3",
    "call 555-0199",
    "1 2 3 4 5 6 7 8",
    "user@localhost",
    "a@b.c",
    "hello @team, see you at 10:30",
    MASK,
    f"{MASK} and {MASK}",
    # Slashes in dates, fractions, pages and references are not phone numbers.
    "15/01/2024",
    "2024/01/15",
    "01/15/2024 10:30",
    "12/2024",
    "page 12/345",
    "1/2 of the order",
    "invoice 2024/123456",
    "ref 12/34/56/78",
    "path v2/12345678",
    "ISBN 978-3-16-148410-0",
    "1.299,00 EUR",
]


def msg(content: Any, **extra: Any) -> dict[str, Any]:
    return {"id": "msg_1", "role": "customer", "content": content, **extra}


@pytest.mark.parametrize("phone", PHONES)
def test_phone_formats_are_masked(phone: str) -> None:
    guard = PiiGuard()
    out = guard.check_message(msg(f"Hi, call me on {phone} tomorrow."))
    assert out["content"] == f"Hi, call me on {MASK} tomorrow."
    assert guard.findings == {"phone": 1, "email": 0}


@pytest.mark.parametrize("phone", PHONES)
def test_phone_at_text_edges_and_punctuation(phone: str) -> None:
    guard = PiiGuard()
    assert guard.check_message(msg(phone))["content"] == MASK
    assert guard.check_message(msg(f"tel:{phone}."))["content"] == f"tel:{MASK}."
    assert guard.check_message(msg(f"({phone}),"))["content"] in (f"({MASK}),", f"{MASK},")


@pytest.mark.parametrize("email", EMAILS)
def test_emails_are_masked(email: str) -> None:
    guard = PiiGuard()
    out = guard.check_message(msg(f"Mail me at {email}. Thanks!"))
    assert out["content"] == f"Mail me at {MASK}. Thanks!"
    assert guard.findings == {"phone": 0, "email": 1}


@pytest.mark.parametrize("text", NOT_PII)
def test_false_positives_are_left_alone(text: str) -> None:
    guard = PiiGuard()
    message = msg(f"Note: {text} ok")
    assert guard.check_message(message) is message
    assert guard.findings == {"phone": 0, "email": 0}


def test_mask_returns_a_copy_and_keeps_other_fields() -> None:
    guard = PiiGuard("mask")
    original = msg("write to a@example.com or +1-202-555-0143, order 1234567", meta={"k": 1})
    out = guard.check_message(original)
    assert out is not original
    assert original["content"] == "write to a@example.com or +1-202-555-0143, order 1234567"
    assert out == {**original, "content": f"write to {MASK} or {MASK}, order 1234567"}
    assert out["meta"] is original["meta"]
    assert guard.findings == {"phone": 1, "email": 1}


def test_counts_accumulate_across_messages() -> None:
    guard = PiiGuard()
    guard.check_message(msg("a@example.com b@example.com"))
    guard.check_message(msg("+44 7700 900123 and (555) 010-0199 and c@example.org"))
    guard.check_message(msg("nothing here"))
    assert guard.findings == {"phone": 2, "email": 3}


def test_masked_token_is_stable() -> None:
    guard = PiiGuard()
    once = guard.check_message(msg("call +44 7700 900123 or mail x@example.com"))
    twice = guard.check_message(once)
    assert twice is once
    assert guard.findings == {"phone": 1, "email": 1}


def test_email_with_digits_counts_as_email_only() -> None:
    guard = PiiGuard()
    out = guard.check_message(msg("reach 07700900123@sms.example.com now"))
    assert out["content"] == f"reach {MASK} now"
    assert guard.findings == {"phone": 0, "email": 1}


@pytest.mark.parametrize(
    ("content", "kind", "secret"),
    [
        ("my number is +44 7700 900123, call me", "phone", "7700 900123"),
        ("mail jane.secret@example.com please", "email", "jane.secret@example.com"),
    ],
)
def test_fail_mode_raises_without_leaking(content: str, kind: str, secret: str) -> None:
    guard = PiiGuard("fail")
    message = msg(content, id="msg_42")
    with pytest.raises(PiiLeakError) as info:
        guard.check_message(message)
    err = info.value
    assert isinstance(err, AirflowException)
    assert err.kind == kind
    assert err.message_id == "msg_42"
    text = str(err) + repr(err) + repr(err.args)
    assert "msg_42" in text
    assert repr(kind) in text
    assert secret not in text
    assert content not in text
    assert err.__cause__ is None
    assert err.__context__ is None
    assert guard.findings[kind] == 1


def test_fail_mode_passes_clean_messages_through() -> None:
    guard = PiiGuard("fail")
    message = msg("order 1234567 on 2024-01-15T10:30:00Z, total 1,299.00")
    assert guard.check_message(message) is message
    assert guard.findings == {"phone": 0, "email": 0}


def test_off_mode_does_not_scan() -> None:
    guard = PiiGuard("off")
    message = msg("a@example.com +44 7700 900123")
    assert guard.check_message(message) is message
    assert guard.findings == {"phone": 0, "email": 0}


@pytest.mark.parametrize("content", [None, 42, ["a@example.com"], {"text": "a@example.com"}, ""])
def test_non_string_or_missing_content_is_untouched(content: Any) -> None:
    guard = PiiGuard()
    message = msg(content)
    assert guard.check_message(message) is message
    no_content = {"id": "m", "attachments": []}
    assert guard.check_message(no_content) is no_content


@pytest.mark.parametrize("mode", ["MASK", " fail ", "Off"])
def test_mode_is_case_insensitive(mode: str) -> None:
    assert PiiGuard(mode).mode == mode.strip().lower()


@pytest.mark.parametrize("mode", ["redact", "", None, 1])
def test_invalid_mode(mode: Any) -> None:
    with pytest.raises(ValueError, match="'mask', 'fail', 'off'"):
        PiiGuard(mode)


def test_throughput_and_no_catastrophic_backtracking() -> None:
    guard = PiiGuard()
    texts = [
        "Hello, how can I help you today?",
        "My order 1234567 has not arrived since 2024-01-15.",
        "The total was 1,299.00 EUR, please refund it.",
        "Sure, transferring you to billing now. Anything else?",
        "Reach me at **** or call ****",
    ]
    messages = [msg(texts[i % len(texts)]) for i in range(20_000)]
    start = time.perf_counter()
    for m in messages:
        guard.check_message(m)
    assert time.perf_counter() - start < 2.0  # ~500k msg/s measured; generous for slow CI

    nasty = ["a" * 50_000 + "@", "1-" * 30_000, "+1" * 30_000, "a@" + "b-" * 30_000, "12 " * 30_000]
    start = time.perf_counter()
    for text in nasty:
        guard.check_message(msg(text))
    assert time.perf_counter() - start < 2.0
