"""Synthetic, deterministic data for the Auralytik API sandbox.

Everything here is standard library only and never imports Airflow; time zone and ISO 8601 parsing
are the package's own (:mod:`airflow_provider_auralytik.conversations.window`, standard library only too).

Conversations are generated once (cheap: a few plain objects per conversation) and kept sorted by
``createdAt`` descending, then ``id`` ascending, which is the order the listing returns. Messages
are never stored: they are generated on demand, deterministically from ``(seed, conversation id)``.

Edge cases present in *every* generated day (when ``per_day`` is large enough, in this order of
priority):

* one conversation created exactly at ``00:00:00Z`` of the day (``per_day >= 1``);
* a group of three conversations sharing the same ``createdAt`` second (``per_day >= 4``);
* one conversation created at ``23:59:59Z`` of the day (``per_day >= 5``).
"""

from __future__ import annotations

import random
import re
import threading
import time
from bisect import bisect_left, insort
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from airflow_provider_auralytik.conversations.window import UTC, read_iso8601

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = 1_000_000  # microseconds per second

CHANNELS: tuple[str, ...] = ("ch_whatsapp", "ch_webchat", "ch_sms")
CAMPAIGNS: tuple[str, ...] = ("camp_001", "camp_002", "camp_003", "camp_004", "camp_005")
STATUS_ACTIVE = "active"
STATUS_COMPLETED = "completed"
MASK = "****"

# Order of the documented fields in every conversation object.
CONVERSATION_FIELDS: tuple[str, ...] = (
    "id",
    "channelId",
    "campaignId",
    "status",
    "participantCount",
    "messageCount",
    "startedAt",
    "endedAt",
    "createdAt",
)

SECONDS_PER_DAY = 86_400

#: ``totalCount`` modes: the truth, 0, the number of items on the page, half (rounded down), three
#: times, the truth + 1,000, or stale (the first answer to the same query, whatever changed since).
TOTAL_COUNT_MODES: tuple[str, ...] = ("honest", "zero", "page", "half", "triple", "plus1000", "stale")


def reported_count(mode: str, true_count: int, on_page: int, first_answer: int | None) -> int:
    """The ``totalCount`` a sandbox in ``mode`` reports for a query matching ``true_count``."""
    if mode == "zero":
        return 0
    if mode == "page":
        return on_page
    if mode == "half":
        return true_count // 2
    if mode == "triple":
        return 3 * true_count
    if mode == "plus1000":
        return true_count + 1000
    if mode == "stale" and first_answer is not None:
        return first_answer
    return true_count


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------
#: The least value of each numeric :class:`SandboxConfig` field (checked in ``__post_init__``).
_LEAST_VALUES = (
    ("days", 1),
    ("per_day", 0),
    ("max_messages", 1),
    ("latency_ms", 0),
    ("retry_after", 0),
    ("complete_within", 0),
    ("insert_during_listing", 0),
    ("rate_limit", 0),
    ("trickle_every", 0),
    ("crowded_second", 0),
    ("delete_during_listing", 0),
)


@dataclass
class SandboxConfig:
    """Everything that shapes the sandbox's data and behaviour. Same config → same data.

    ``start`` is the first day of data (a ``date``, an aware ``datetime`` or ``"YYYY-MM-DD"``);
    it defaults to UTC midnight ``days`` days before today, so "yesterday" always has data.
    Fault rates are fractions in ``[0, 1]`` of authenticated API requests; their sum must be <= 1.
    """

    seed: int = 42
    start: date | datetime | str | None = None
    days: int = 7
    per_day: int = 300
    max_messages: int = 30
    api_key: str = "sandbox-key"
    latency_ms: float = 0.0
    rate_429: float = 0.0
    retry_after: int = 1
    retry_after_http_date: bool = False
    rate_5xx: float = 0.0
    rate_drop: float = 0.0
    rate_malformed: float = 0.0
    pii_leak_rate: float = 0.0
    complete_within: float = 0.0
    insert_during_listing: int = 0
    #: Per-key rate limit, requests/s (0: none): a token bucket holding one second of requests; over
    #: it, 429 with ``Retry-After`` = whole seconds until a request is allowed again.
    rate_limit: float = 0.0
    #: If > 0, every answer's body is sent one byte every this many seconds (a trickling server).
    trickle_every: float = 0.0
    #: What ``totalCount`` says: ``honest``, or a lie seen in real back ends (see TOTAL_COUNT_MODES).
    total_count_mode: str = "honest"
    #: Conversations added at one single ``createdAt`` (noon of the first day), on top of ``per_day``.
    crowded_second: int = 0
    #: Conversations deleted, one after each of the next listing answers, taken from the page just served.
    delete_during_listing: int = 0
    #: Conversations kept ``active`` (serving only the first half of their messages): a list of ids, or a
    #: count per day (that many of each day's last-created conversations). See ``Sandbox.hold``/``complete``.
    hold_active: int | Sequence[str] = 0
    #: Seconds after the sandbox starts at which ``hold_active`` conversations complete; 0: until
    #: ``Sandbox.complete(id)`` is called.
    hold_for: float = 0.0

    def __post_init__(self) -> None:
        for name, least in _LEAST_VALUES:
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}")
        if self.total_count_mode not in TOTAL_COUNT_MODES:
            raise ValueError(f"total_count_mode must be one of {', '.join(TOTAL_COUNT_MODES)}")
        hold = self.hold_active
        if isinstance(hold, bool) or not (
            (isinstance(hold, int) and hold >= 0)
            or (isinstance(hold, (list, tuple)) and all(isinstance(i, str) and i for i in hold))
        ):
            raise ValueError(f"hold_active must be a count >= 0 or a list of conversation ids, got {hold!r}")
        if self.hold_for < 0:
            raise ValueError("hold_for must be >= 0")
        for name in ("rate_429", "rate_5xx", "rate_drop", "rate_malformed", "pii_leak_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value!r}")
        if self.rate_429 + self.rate_5xx + self.rate_drop + self.rate_malformed > 1.0 + 1e-9:
            raise ValueError("the sum of the fault rates must be <= 1")
        if not self.api_key:
            raise ValueError("api_key must not be empty")

    def start_date(self, today: date | None = None) -> date:
        """The first day of data (UTC)."""
        start = self.start
        if start is None:
            today = today or datetime.now(UTC).date()
            return today - timedelta(days=self.days)
        if isinstance(start, str):
            return date.fromisoformat(start[:10])
        if isinstance(start, datetime):
            if start.tzinfo is not None:
                start = start.astimezone(UTC)
            return start.date()
        return start


# --------------------------------------------------------------------------------------------------
# Time helpers
# --------------------------------------------------------------------------------------------------
#: An offset's ``+`` sent unencoded in a query string, which decodes it to a space: ``...T12:30:00 02:00``.
_UNENCODED_PLUS = re.compile(r"(:\d{2}(?:[.,]\d+)?) (\d{2}(?::?\d{2})?)$")


def parse_iso_us(value: str) -> int:
    """Parse an ISO 8601 timestamp to integer microseconds since the epoch (UTC).

    Read by the package's one parser (``read_iso8601``): ``Z`` or a ``±HH:MM`` / ``±HHMM`` offset,
    optional fractional seconds (truncated to microseconds). A bare date is UTC
    midnight; a date-time without an offset is rejected. A space in place of ``+`` (an unencoded
    ``+`` in a query string) is accepted. Raises ``ValueError``.
    """
    text = _UNENCODED_PLUS.sub(r"\1+\2", value.strip())
    parsed = read_iso8601(text)
    if parsed is None:
        raise ValueError(f"not an ISO 8601 timestamp: {value!r}")
    if parsed.tzinfo is None:
        if len(text) != len("YYYY-MM-DD"):
            raise ValueError(f"timestamp without a timezone: {value!r}")
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - EPOCH) // timedelta(microseconds=1)


def to_us(value: datetime | date | str) -> int:
    """A datetime (aware; naive is taken as UTC), a date (UTC midnight) or an ISO string → µs."""
    if isinstance(value, str):
        return parse_iso_us(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - EPOCH) // timedelta(microseconds=1)
    return (datetime(value.year, value.month, value.day, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)


def format_us(us: int) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` (with ``.ffffff`` only when the microseconds are not zero)."""
    seconds, micros = divmod(us, US)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if micros:
        return f"{text}.{micros:06d}Z"
    return text + "Z"


# --------------------------------------------------------------------------------------------------
# Conversations
# --------------------------------------------------------------------------------------------------
class ConversationRecord:
    """One conversation. ``fields`` holds the full API object; ``status``/``endedAt`` are filled in
    at request time (unless ``fixed`` is set, for conversations added with an explicit status)."""

    __slots__ = (
        "_json_active",
        "_json_completed",
        "completion_u",
        "created_us",
        "fields",
        "fixed",
        "id",
        "message_count",
        "natural_end",
        "sort_key",
        "started_us",
    )

    def __init__(
        self,
        conv_id: str,
        created_us: int,
        started_us: int,
        natural_end_us: int,
        message_count: int,
        completion_u: float,
        fields: dict[str, Any],
        fixed: bool = False,
    ) -> None:
        self.id = conv_id
        self.created_us = created_us
        self.sort_key = (-created_us, conv_id)
        self.started_us = started_us
        self.natural_end = natural_end_us / US  # epoch seconds (float), compared with time.time()
        self.message_count = message_count
        self.completion_u = completion_u  # in [0, 1): position of the completion inside complete_within
        self.fields = fields
        self.fixed = fixed
        self._json_active: str | None = None
        self._json_completed: str | None = None

    def ended_text(self) -> str:
        """``endedAt`` once completed: the natural end (startedAt + duration)."""
        seconds = self.natural_end
        return format_us(round(seconds * US)) if seconds % 1 else format_us(int(seconds) * US)

    def completes_at(self, t0: float, complete_within: float) -> float:
        """Epoch seconds at which the conversation becomes ``completed``."""
        if complete_within > 0:
            return max(self.natural_end, t0 + complete_within * (1.0 - self.completion_u))
        return self.natural_end

    def status_at(self, now: float, t0: float, complete_within: float) -> str:
        if self.fixed:
            return str(self.fields.get("status"))
        return STATUS_COMPLETED if now >= self.completes_at(t0, complete_within) else STATUS_ACTIVE

    def as_dict(self, completed: bool) -> dict[str, Any]:
        out = dict(self.fields)
        if not self.fixed:
            out["status"] = STATUS_COMPLETED if completed else STATUS_ACTIVE
            out["endedAt"] = self.ended_text() if completed else None
        return out

    def json(self, completed: bool, dumps: Callable[[Any], str]) -> str:
        """The JSON text of the object in that state (cached: the fields never change)."""
        if completed:
            if self._json_completed is None:
                self._json_completed = dumps(self.as_dict(True))
            return self._json_completed
        if self._json_active is None:
            self._json_active = dumps(self.as_dict(False))
        return self._json_active


def _conversation_fields(rng: random.Random, max_messages: int) -> dict[str, Any]:
    """Draw the random attributes of one conversation (a fixed number of draws per call)."""
    channel = CHANNELS[int(rng.random() * len(CHANNELS))]
    r_campaign = rng.random()
    campaign = None if r_campaign < 0.3 else CAMPAIGNS[int((r_campaign - 0.3) / 0.7 * len(CAMPAIGNS))]
    r_participants = rng.random()
    participants = 2 if r_participants < 0.8 else (3 if r_participants < 0.95 else 4)
    message_count = 1 + int(rng.random() * max_messages)
    duration_s = 60 + int(rng.random() * (90 * 60 - 60))  # 1 to 90 minutes
    completion_u = rng.random()
    r_extra = rng.random()
    extra: dict[str, Any] = {}
    if r_extra < 0.10:
        extra["language"] = ("en", "es", "fr", "de")[int(r_extra * 40) % 4]
    elif r_extra < 0.15:
        extra["tags"] = None
    elif r_extra < 0.18:
        extra["metadata"] = {"source": "api", "sentiment": None}
    return {
        "channelId": channel,
        "campaignId": campaign,
        "participantCount": participants,
        "messageCount": message_count,
        "_duration_s": duration_s,
        "_completion_u": completion_u,
        "_extra": extra,
    }


def make_record(
    conv_id: str,
    created_us: int,
    rng: random.Random,
    max_messages: int,
    overrides: dict[str, Any] | None = None,
) -> ConversationRecord:
    """Build a conversation created at ``created_us``; ``overrides`` (API field names) win."""
    drawn = _conversation_fields(rng, max_messages)
    overrides = dict(overrides or {})
    started_us = created_us
    if "startedAt" in overrides and overrides["startedAt"] is not None:
        started_us = to_us(overrides["startedAt"])
    natural_end_us = started_us + drawn["_duration_s"] * US
    fixed = "status" in overrides
    if overrides.get("endedAt") is not None:
        natural_end_us = to_us(overrides["endedAt"])
    message_count = int(overrides.get("messageCount", drawn["messageCount"]))
    created_text = format_us(created_us)
    fields: dict[str, Any] = {
        "id": conv_id,
        "channelId": drawn["channelId"],
        "campaignId": drawn["campaignId"],
        "status": STATUS_ACTIVE,
        "participantCount": drawn["participantCount"],
        "messageCount": message_count,
        "startedAt": created_text if started_us == created_us else format_us(started_us),
        "endedAt": None,
        "createdAt": created_text,
    }
    fields.update(drawn["_extra"])
    for key, value in overrides.items():
        if isinstance(value, (datetime, date)):
            value = format_us(to_us(value))
        fields[key] = value
    if fixed and "endedAt" not in overrides:
        fields["endedAt"] = format_us(natural_end_us) if fields["status"] == STATUS_COMPLETED else None
    return ConversationRecord(
        conv_id,
        created_us,
        started_us,
        natural_end_us,
        message_count,
        drawn["_completion_u"],
        fields,
        fixed=fixed,
    )


def _day_offsets(rng: random.Random, per_day: int) -> list[int]:
    """Seconds after midnight for the conversations of one day, edge cases included."""
    offsets: list[int] = []
    if per_day >= 1:
        offsets.append(0)  # exactly at 00:00:00Z
    if per_day >= 4:
        group_at = 1 + int(rng.random() * (SECONDS_PER_DAY - 2))
        offsets.extend([group_at] * 3)  # three conversations sharing one second
    if per_day >= 5:
        offsets.append(SECONDS_PER_DAY - 1)  # 23:59:59Z, the last second of the day
    while len(offsets) < per_day:
        offsets.append(1 + int(rng.random() * (SECONDS_PER_DAY - 2)))
    offsets.sort()
    return offsets


class Dataset:
    """The conversations of one sandbox, sorted by ``(-createdAt, id)``, with an id index.

    ``lock`` guards ``records``/``by_id``; readers take it only to pick their slice.
    """

    def __init__(self, config: SandboxConfig, start: date) -> None:
        self.config = config
        self.start = start
        self.start_us = to_us(start)
        self.end_us = self.start_us + config.days * SECONDS_PER_DAY * US
        self.lock = threading.Lock()
        self.version = 0
        created: list[int] = []
        for day in range(config.days):
            day_rng = random.Random(f"auralytik:{config.seed}:day:{(start + timedelta(days=day)).isoformat()}")
            base = self.start_us // US + day * SECONDS_PER_DAY
            created.extend((base + offset) * US for offset in _day_offsets(day_rng, config.per_day))
        crowded_at = (self.start_us // US + SECONDS_PER_DAY // 2) * US  # noon of the first day
        created.extend([crowded_at] * config.crowded_second)
        attr_rng = random.Random(f"auralytik:{config.seed}:attributes")
        records = [
            make_record(f"conv_{n:06d}", created_us, attr_rng, config.max_messages)
            for n, created_us in enumerate(created, start=1)
        ]
        self._next_number = len(records) + 1
        records.sort(key=lambda r: r.sort_key)
        self.records: list[ConversationRecord] = records
        self.by_id: dict[str, ConversationRecord] = {r.id: r for r in records}
        self._insert_rng = random.Random(f"auralytik:{config.seed}:inserts")

    def __len__(self) -> int:
        return len(self.records)

    # -- queries (call with ``lock`` held) ------------------------------------------------------------
    def range_indices(self, from_us: int | None, to_us_incl: int | None) -> tuple[int, int]:
        """``records[lo:hi]`` are the conversations with ``from_us <= createdAt <= to_us_incl``."""
        records = self.records
        lo = 0 if to_us_incl is None else bisect_left(records, (-to_us_incl, ""), key=_sort_key)
        hi = len(records) if from_us is None else bisect_left(records, (-from_us + 1, ""), key=_sort_key)
        return lo, max(lo, hi)

    def held_ids(self) -> list[str]:
        """The conversations ``config.hold_active`` names: its ids, or each day's last-created ``hold_active``."""
        hold = self.config.hold_active
        if not isinstance(hold, int):
            return list(hold)
        if hold == 0:
            return []
        by_day: dict[int, list[ConversationRecord]] = {}
        with self.lock:
            for record in self.records:  # newest first
                by_day.setdefault(record.created_us // (SECONDS_PER_DAY * US), []).append(record)
        return [r.id for day in sorted(by_day) for r in by_day[day][:hold]]

    # -- mutations ----------------------------------------------------------------------------------------
    def _new_id_locked(self) -> str:
        while True:
            conv_id = f"conv_{self._next_number:06d}"
            self._next_number += 1
            if conv_id not in self.by_id:
                return conv_id

    def _insert_locked(self, record: ConversationRecord) -> None:
        if record.id in self.by_id:
            raise ValueError(f"conversation {record.id!r} already exists")
        insort(self.records, record, key=_sort_key)
        self.by_id[record.id] = record
        self.version += 1

    def add(self, fields: dict[str, Any]) -> ConversationRecord:
        """Insert one conversation; unspecified fields are drawn (deterministically from its id)."""
        fields = dict(fields)
        created = fields.get("createdAt", fields.get("startedAt"))
        if created is None:
            created_us = int(time.time()) * US
            fields["createdAt"] = format_us(created_us)
        else:
            created_us = to_us(created)
        if "startedAt" not in fields:
            fields["startedAt"] = fields.get("createdAt", format_us(created_us))
        with self.lock:
            conv_id = str(fields.pop("id", None) or self._new_id_locked())
            rng = random.Random(f"auralytik:{self.config.seed}:added:{conv_id}")
            record = make_record(conv_id, created_us, rng, self.config.max_messages, fields)
            self._insert_locked(record)
        return record

    def insert_random(self, count: int) -> list[ConversationRecord]:
        """Insert ``count`` conversations created at random seconds inside the data's time range."""
        added: list[ConversationRecord] = []
        with self.lock:
            span_s = (self.end_us - self.start_us) // US
            for _ in range(count):
                created_us = self.start_us + int(self._insert_rng.random() * span_s) * US
                record = make_record(self._new_id_locked(), created_us, self._insert_rng, self.config.max_messages)
                self._insert_locked(record)
                added.append(record)
        return added

    def delete(self, conv_id: str) -> None:
        with self.lock:
            record = self.by_id.pop(conv_id)
            i = bisect_left(self.records, record.sort_key, key=_sort_key)
            if i < len(self.records) and self.records[i] is record:
                del self.records[i]
            else:  # pragma: no cover - defensive
                self.records.remove(record)
            self.version += 1


def _sort_key(record: ConversationRecord) -> tuple[int, str]:
    return record.sort_key


# --------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------
_FIRST = ("jane", "john", "maria", "ahmed", "li", "olivia", "noah", "fatima", "lucas", "emma")
_LAST = ("doe", "smith", "garcia", "khan", "wei", "brown", "martin", "silva", "novak", "jones")
_DOMAINS = ("example.com", "example.org", "mail.example.net")

_CUSTOMER_PLAIN = (
    "Hi, I need help with my account.",
    "My order hasn't arrived yet, it was supposed to come on Monday.",
    "Can you tell me when my subscription renews?",
    "I was charged twice this month.",
    "The app keeps logging me out every few minutes.",
    "Thanks, that fixed it!",
    "Is there a discount for annual plans?",
    "I'd like to change my delivery address.",
    "How do I reset my password?",
    "That's great, thank you \U0001f44d",
    "I tried that already, it didn't work.",
    "Could you escalate this, please?",
    "The voucher for the caf\u00e9 worked, thanks.",
    "Order 48213 still shows as pending.",
)
_CUSTOMER_PII = (
    "You can call me back on {phone}.",
    "My number is {phone} if you need it.",
    "Please send the receipt to {email}.",
    "My email is {email}, it's the one on the account.",
    "I changed my number to {phone}, can you update it?",
    "Reach me at {email} or {phone}, whichever is easier.",
    "The account is registered under {email}.",
)
_AGENT_PLAIN = (
    "Hello! Thanks for reaching out, how can I help today?",
    "I'm sorry to hear that. Let me look into it for you.",
    "Could you confirm the order number, please?",
    "I've refunded the duplicate charge; it should appear in 3-5 business days.",
    "Your subscription renews on the 1st of each month.",
    "Is there anything else I can help you with?",
    "I've escalated this to our technical team.",
    "You can reset your password from the login page.",
    "Thanks for your patience, the issue is now resolved.",
)
_AGENT_PII = (
    "I've sent a confirmation to {email}.",
    "Just to confirm, is {phone} still the best number to reach you?",
    "I've updated your contact number to {phone}.",
    "We'll email the details to {email} shortly.",
)


def _phone(rng: random.Random) -> str:
    kind = int(rng.random() * 3)
    n = int(rng.random() * 1000)
    if kind == 0:
        return f"+44 7700 900{n:03d}"
    if kind == 1:
        return f"(555) 010-{100 + n % 100:04d}"
    return f"+1-202-555-{100 + n % 100:04d}"


def _email(rng: random.Random) -> str:
    first = _FIRST[int(rng.random() * len(_FIRST))]
    last = _LAST[int(rng.random() * len(_LAST))]
    domain = _DOMAINS[int(rng.random() * len(_DOMAINS))]
    return f"{first}.{last}@{domain}"


def generate_messages(
    seed: int,
    record: ConversationRecord,
    *,
    exclude_pii: bool,
    pii_leak_rate: float = 0.0,
) -> list[dict[str, Any]]:
    """The messages of one conversation, deterministic from ``(seed, id)``.

    With ``exclude_pii`` every phone number and e-mail address in ``content`` is replaced by
    ``****``, except in the messages drawn as "leaked" (a ``pii_leak_rate`` share of them).
    """
    rng = random.Random(f"auralytik:{seed}:messages:{record.id}")
    n = record.message_count
    span_s = max(0, int(record.natural_end - record.started_us / US))
    offsets = sorted([0] + [int(rng.random() * (span_s + 1)) for _ in range(max(0, n - 1))])
    suffix = record.id[5:] if record.id.startswith("conv_") else record.id
    messages: list[dict[str, Any]] = []
    role = "customer"
    for i in range(n):
        if i > 0 and rng.random() < 0.75:
            role = "agent" if role == "customer" else "customer"
        r_pii = rng.random()
        r_pick = rng.random()
        leaked = rng.random() < pii_leak_rate
        phone, email = _phone(rng), _email(rng)
        pool: tuple[str, ...]
        if role == "customer":
            pool = _CUSTOMER_PII if r_pii < 0.4 else _CUSTOMER_PLAIN
        else:
            pool = _AGENT_PII if r_pii < 0.2 else _AGENT_PLAIN
        template = pool[int(r_pick * len(pool))]
        if exclude_pii and not leaked:
            content = template.format(phone=MASK, email=MASK)
        else:
            content = template.format(phone=phone, email=email)
        messages.append(
            {
                "id": f"msg_{suffix}_{i + 1:03d}",
                "role": role,
                "content": content,
                "timestamp": format_us(record.started_us + offsets[i] * US),
            }
        )
    return messages
