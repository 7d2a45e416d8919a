"""Mailgun's webhooks: the HMAC signature, its freshness and its token, then the event.

Mailgun signs ``timestamp + token`` with the account's HTTP webhook signing key
(HMAC-SHA256, hex). A signature older than MAX_AGE is refused, and so is a token seen
before for another event (the signature does not cover the body, so a captured one
must not carry a forged event); the caller keeps the tokens seen. The event's ``id``
keys it, ``user-variables.gazette`` carries the VERP token (``X-Mailgun-Variables``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Any

from gazette.bounces.formats import Field
from gazette.bounces.providers.events import (
    TAG,
    CallRefusedError,
    event_key,
    part,
    text,
    token_delivery,
    with_class,
)
from gazette.bounces.reports import Kind, Report

# Mailgun's own advice: refuse a signature whose timestamp is further off than this.
MAX_AGE = 5 * 60
_HEX = re.compile(r"[0-9a-f]{64}")


def verify(payload: dict[str, Any], signing_key: str, now: float) -> str:
    """The signature's token, once it verifies and is fresh; CallRefusedError(403) otherwise."""
    signature = payload.get("signature")
    if not isinstance(signature, dict):
        raise CallRefusedError(403, "The call carries no Mailgun signature.")
    timestamp, token = text(signature, "timestamp", 20), text(signature, "token", 100)
    given = text(signature, "signature", 100).lower()
    if not timestamp.isdigit() or not token or not _HEX.fullmatch(given):
        raise CallRefusedError(403, "The Mailgun signature is incomplete.")
    expected = hmac.new(
        signing_key.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(given, expected):
        raise CallRefusedError(403, "The Mailgun signature does not verify.")
    if abs(now - int(timestamp)) > MAX_AGE:
        raise CallRefusedError(
            403, f"The Mailgun signature is more than {MAX_AGE // 60} minutes old."
        )
    return token


def report_of(payload: dict[str, Any], secret_keys: Sequence[str]) -> Report:
    """The Report of a verified call: a failed (permanent or temporary) or complained event."""
    event = part(payload, "event-data")
    event_id = text(event, "id", 200)
    key = event_key("mailgun", event_id)
    if not event_id:  # nothing to key it by, so nothing to apply once
        return Report(key, Kind.UNRECOGNISED, reason="a Mailgun event without an id")
    delivery = token_delivery(part(event, "user-variables").get(TAG), secret_keys)
    name, severity = text(event, "event"), text(event, "severity")
    address = text(event, "recipient")
    if name == "complained":
        field = Field(address, "complaint", None, "Feedback-Type: abuse")
        return Report(key, Kind.COMPLAINT, delivery, (field,), "Mailgun complaint")
    if name != "failed":
        return Report(key, Kind.UNRECOGNISED, delivery, reason=f"a Mailgun {name or '?'} event")
    status = part(event, "delivery-status")
    words = text(status, "message") or text(status, "description") or text(event, "reason")
    code = text(status, "enhanced-code", 20)
    why = f"Mailgun {severity or 'unknown'} failure ({text(event, 'reason') or 'no reason'})"
    if severity == "permanent":
        field = Field(address, "failed", with_class(code, words, "5"), words)
        return Report(key, Kind.FAILED, delivery, (field,), why)
    # Temporary: Mailgun retries on its own, and reports a permanent failure when it
    # gives up; each attempt is a delay, not a bounce to count.
    field = Field(address, "delayed", with_class(code, words, "4"), words)
    return Report(key, Kind.DELAYED, delivery, (field,), why)
