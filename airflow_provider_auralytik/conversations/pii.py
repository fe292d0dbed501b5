"""PII guard: the second line of defence for exported message text.

Messages are requested with ``X-Exclude-PII: true``, so the API should already have masked personal data.
:class:`PiiGuard` scans each message's ``content`` for phone numbers and e-mail addresses that slipped
through anyway, and masks them (default), fails the task, or does nothing.

Detection is heuristic and tuned for recall on real contact data with few false positives:

* e-mail: ``local@domain.tld`` (RFC 5322 "dot-atom" local part, letters/digits/hyphens per label,
  internationalised letters allowed, a TLD of 2+ letters);
* phone: 8 to 15 digits, written as ``+CC`` or ``00CC`` international numbers (``+44 7700 900123``,
  ``+1-202-555-0143``, ``+44 (0)20 7946 0958``, ``0033 1 42 68 53 00``), ``(555) 010-0199``, groups of 2+
  digits separated by one space, dot, dash or slash (``555.010.0199``, ``020 7946 0958``,
  ``0151/23456789``, ``089 / 1234 5678``: with a slash, national numbers start with ``0``) or a plain
  run (``07700900123``);
* not phone: dates and times (``2024-01-15``, ``15.01.2024``, ``15/01/2024``, references such as
  ``2024/123456``, ``2024-01-15T10:30:00Z``, ``20240115``),
  amounts (``1,299.00``, ``12345678.90``), IPv4 addresses, numbers glued to words, ``#``, currency signs
  or other numbers (``ORD-12345678``, ``msg_12345678``, ``#12345678``), fewer than 8 digits, and the mask
  token ``****`` itself.

The regular expressions are compiled once at import (cheap, no I/O).
"""

from __future__ import annotations

import re
from typing import Any

from airflow_provider_auralytik._compat import AirflowException

MASK = "****"
MODES = ("mask", "fail", "off")
KINDS = ("phone", "email")

_MIN_DIGITS = 8
_MAX_DIGITS = 15

_ATOM = r"[\w!#$%&'*+/=?^`{|}~\-]+"
_LABEL = r"[^\W_](?:[\w\-]{0,61}[^\W_])?"
_EMAIL_RE = re.compile(
    rf"(?<![\w!#$%&'*+/=?^`{{|}}~.\-])"  # start of the local part, not mid-token
    rf"{_ATOM}(?:\.{_ATOM})*"
    rf"@(?:{_LABEL}\.)+[^\W\d_]{{2,63}}"
    r"(?![\w\-]|\.[^\W_])"  # do not stop in the middle of a longer domain
)

#: One separator between digit groups: a space, dot or dash, or a slash with optional spaces around it.
_SEP = r"(?:[ \u00a0]?/[ \u00a0]?|[ .\-\u00a0])"
_PHONE_RE = re.compile(
    r"(?<![\w+#$\u20ac\u00a3\u00a5@/.,\-])"  # not glued to a word, another number, '#', currency, ...
    r"(?:"
    rf"\+\d{{1,4}}(?:{_SEP}?\(\d{{1,4}}\))?{_SEP}?\d+(?:{_SEP}\d+){{0,6}}"  # +44 (0)20 7946 0958
    rf"|00[1-9]\d{{0,2}}(?:{_SEP}?\(\d{{1,4}}\))?{_SEP}\d+(?:{_SEP}\d+){{0,6}}"  # 0033 1 42 68 53 00
    rf"|\(\d{{2,5}}\){_SEP}?\d{{2,}}(?:{_SEP}\d{{2,}}){{0,4}}"  # (555) 010-0199
    rf"|\d+(?:{_SEP}\d{{2,}}){{1,5}}"  # 555.010.0199, 020 7946 0958, 1-800-555-0199
    r"|\d{8,15}"  # 07700900123
    r")"
    r"(?![\w@%]|[.,:/\-]\d)"  # not followed by more of a word, an e-mail, '%' or a number
)
_DIGITS_RE = re.compile(r"\d")
_ANY_DIGIT_RUN_RE = re.compile(rf"\d(?:\D*\d){{{_MIN_DIGITS - 1}}}")
_DATE_RE = re.compile(
    r"\d{4}([-./])\d{1,2}\1\d{1,2}"  # 2024-01-15, 2024.01.15
    r"|\d{1,2}([-./])\d{1,2}\2\d{4}"  # 15.01.2024, 01-15-2024
    r"|(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"  # 20240115
    r"|(?:19|20)\d\d[-/ ](?:19|20)\d\d"  # 2023-2024
)
_IPV4_RE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_DECIMAL_RE = re.compile(r"\d+\.\d{1,2}|\d{1,3}(?:\.\d{3})+")  # 12345678.90, 10.000.000


def _is_phone(candidate: str) -> bool:
    digits = len(_DIGITS_RE.findall(candidate))
    if not _MIN_DIGITS <= digits <= _MAX_DIGITS:
        return False
    if candidate[0] == "+" or candidate[0] == "(":
        return True
    if "/" in candidate and candidate[0] != "0":  # 0151/23456789, 0033 1/...; not 2024/123456 (a reference)
        return False
    return not (_DATE_RE.fullmatch(candidate) or _IPV4_RE.fullmatch(candidate) or _DECIMAL_RE.fullmatch(candidate))


def _might_have_phone(text: str) -> bool:
    # Cheap pre-check before the phone regex: at least _MIN_DIGITS digits anywhere.
    return _ANY_DIGIT_RUN_RE.search(text) is not None


class PiiLeakError(AirflowException):
    """Raised in ``fail`` mode when message text still contains PII.

    The message names only the kind of finding and the message id, never the text.
    """

    def __init__(self, kind: str, message_id: Any) -> None:
        self.kind = kind
        self.message_id = message_id
        shown = repr(message_id)
        if len(shown) > 100:
            shown = shown[:97] + "..."
        what = "a phone number" if kind == "phone" else "an e-mail address"
        super().__init__(
            f"PII detected in message {shown}: {what} (kind={kind!r}) survived the API's PII exclusion; "
            f"content not shown. Use pii_guard='mask' to mask such findings instead of failing."
        )


class PiiGuard:
    """Scan ``message["content"]`` for phone numbers and e-mail addresses.

    :param mode: ``"mask"`` (default): replace each finding with ``"****"`` in a copy of the message;
        ``"fail"``: raise :class:`PiiLeakError` on the first finding (its text names the kind and the
        message id only, never the content); ``"off"``: return messages unchanged without scanning.
        Case and surrounding blanks are ignored; anything else raises ``ValueError``.

    ``findings`` counts what was found so far, ``{"phone": n, "email": m}``, for the manifest.

    Not thread-safe, by design: the export calls it (and so updates ``findings``) from the single thread
    that writes the output, so no lock is needed. Use one guard per writer.
    """

    def __init__(self, mode: str = "mask") -> None:
        normalised = mode.strip().lower() if isinstance(mode, str) else mode
        if normalised not in MODES:
            raise ValueError(f"Invalid PII mode {mode!r}: valid values are {', '.join(map(repr, MODES))}")
        self.mode: str = normalised
        self.findings: dict[str, int] = dict.fromkeys(KINDS, 0)

    def check_message(self, message: dict[str, Any]) -> dict[str, Any]:
        """Return the message, masked if needed (a copy) or as-is when nothing was found."""
        if self.mode == "off":
            return message
        content = message.get("content")
        if not isinstance(content, str) or not content:
            return message
        if self.mode == "fail":
            kind = self._first_finding(content)
            if kind is not None:
                self.findings[kind] += 1
                raise PiiLeakError(kind, message.get("id", message.get("messageId")))
            return message
        masked = self.mask_text(content)
        if masked == content:
            return message
        copy = dict(message)
        copy["content"] = masked
        return copy

    def mask_text(self, text: str) -> str:
        """Return ``text`` with every finding replaced by ``"****"``, adding to ``findings``."""
        if "@" in text:
            text, n = _EMAIL_RE.subn(MASK, text)
            self.findings["email"] += n
        if _might_have_phone(text):
            count = 0

            def _replace(match: re.Match[str]) -> str:
                nonlocal count
                candidate = match.group()
                if _is_phone(candidate):
                    count += 1
                    return MASK
                return candidate

            text = _PHONE_RE.sub(_replace, text)
            self.findings["phone"] += count
        return text

    @staticmethod
    def _first_finding(text: str) -> str | None:
        if "@" in text and _EMAIL_RE.search(text):
            return "email"
        if _might_have_phone(text):
            for match in _PHONE_RE.finditer(text):
                if _is_phone(match.group()):
                    return "phone"
        return None
