"""Postmark's bounce and spam complaint webhooks: basic auth, then the record read.

Postmark calls the webhook URL with the credentials written into it
(``https://USER:PASSWORD@news.example.org/webhooks/postmark``), compared here in constant
time. Each record's ``ID`` keys it, and ``Metadata.gazette`` carries the VERP token
(the ``X-PM-Metadata-gazette`` header each digest sent through Postmark carries).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from typing import Any

from gazette.bounces.formats import Field
from gazette.bounces.providers.events import TAG, event_key, part, text, token_delivery, with_class
from gazette.bounces.reports import Kind, Report

# Bounce types (Postmark's "Type") by what they are; any other type is not acted on.
HARD = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
SOFT = frozenset({"SoftBounce", "DnsError"})
# Refusals that are the sender's reputation or authentication, never the reader's.
POLICY = frozenset({"Blocked", "DMARCPolicy", "SpamNotification", "VirusNotification"})
DELAYED = frozenset({"Transient"})
AUTO_REPLY = frozenset({"AutoResponder"})
COMPLAINT = frozenset({"SpamComplaint"})


def authorised(header: str | None, credentials: tuple[str, str]) -> bool:
    """Whether an Authorization header carries these basic-auth credentials (constant time)."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = f"{credentials[0]}:{credentials[1]}".encode()
    return hmac.compare_digest(given, expected)


def report_of(record: dict[str, Any], secret_keys: Sequence[str]) -> Report:
    """The Report of one Postmark webhook record (a Bounce or a SpamComplaint)."""
    event_id = text(record, "ID", 100)
    key = event_key("postmark", event_id)
    if not event_id:  # nothing to key it by, so nothing to apply once
        return Report(key, Kind.UNRECOGNISED, reason="a Postmark record without an ID")
    delivery = token_delivery(part(record, "Metadata").get(TAG), secret_keys)
    record_type = text(record, "RecordType")
    bounce_type = text(record, "Type")
    address = text(record, "Email")
    words = text(record, "Details") or text(record, "Description")
    why = f"Postmark {record_type or 'record'} ({bounce_type or 'no type'})"
    if record_type == "SpamComplaint" or bounce_type in COMPLAINT:
        field = Field(address, "complaint", None, "Feedback-Type: abuse")
        return Report(key, Kind.COMPLAINT, delivery, (field,), why)
    if record_type != "Bounce":
        return Report(key, Kind.UNRECOGNISED, delivery, reason=why)
    if bounce_type in AUTO_REPLY:
        field = Field(address, "auto-replied", None, words)
        return Report(key, Kind.AUTO_REPLY, delivery, (field,), why)
    if bounce_type in DELAYED:
        field = Field(address, "delayed", with_class(None, words, "4"), words)
        return Report(key, Kind.DELAYED, delivery, (field,), why)
    if bounce_type in HARD or bounce_type in SOFT:
        status = with_class(None, words, "5" if bounce_type in HARD else "4")
        return Report(key, Kind.FAILED, delivery, (Field(address, "failed", status, words),), why)
    if bounce_type in POLICY:
        field = Field(address, "failed", "5.7.1", words)
        return Report(key, Kind.FAILED, delivery, (field,), why)
    return Report(key, Kind.UNRECOGNISED, delivery, reason=why)
