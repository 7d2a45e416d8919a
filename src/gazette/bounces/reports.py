"""One message that came back to the bounce address, read into a Report.

A Report says what the message is (a failure, a delay, a complaint, an auto-reply, or
not understood), which delivery its VERP token names when it was addressed to one
(the exact issue and reader, whatever address the report names), and the recipients it
reports with their status codes and words. Reading never raises: a message that cannot
be read is an unrecognised report with the reason.
"""

from __future__ import annotations

import email
import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email import policy
from email.message import Message

from gazette.bounces.formats import (
    COMPLAINT_TYPES,
    Field,
    addresses_in,
    delivery_status,
    feedback_report,
    header_text,
    is_auto_reply,
    other_bounce,
)
from gazette.mail.verp import delivery_for

# Where the address a message was delivered to shows, most trustworthy first: the
# headers the receiving server writes from the envelope, then To.
ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "To")


class Kind(enum.StrEnum):
    """What a message that came back is."""

    FAILED = "failed"
    DELAYED = "delayed"
    COMPLAINT = "complaint"
    AUTO_REPLY = "auto-reply"
    UNRECOGNISED = "unrecognised"


@dataclass(frozen=True)
class Report:
    """One message read: its kind, its key, the delivery its token names, the recipients."""

    # Identifies the message, so a copy of it is never acted on twice: a hash of its
    # Message-ID, or of its bytes when it has none.
    key: str
    kind: Kind
    # The ledger row a valid VERP token names; None without one.
    delivery_id: int | None = None
    recipients: tuple[Field, ...] = ()
    # What format it was read as ("RFC 3464", ...), or why it was not understood.
    reason: str = ""


def read_report(raw: bytes, secret_keys: Sequence[str]) -> Report:
    """Read the message ``raw``; a message that cannot be read is UNRECOGNISED, with why."""
    key = _digest(b"bytes:" + raw)
    try:
        message = email.message_from_bytes(raw, policy=policy.default)
        key = message_key(message, raw)
        return _read(message, raw, key, secret_keys)
    except Exception as exc:  # any message at all: a broken one is kept aside, never raised
        words = " ".join(str(exc).split())[:200]
        return Report(
            key, Kind.UNRECOGNISED, reason=f"cannot be read ({type(exc).__name__}: {words})"
        )


def message_key(message: Message, raw: bytes) -> str:
    """A hash of the message's Message-ID, or of its bytes when it has none."""
    for value in header_text(message, "Message-ID"):
        if value.strip():
            return _digest(b"message-id:" + value.strip().encode("utf-8", "replace"))
    return _digest(b"bytes:" + raw)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(message: Message, raw: bytes, key: str, secret_keys: Sequence[str]) -> Report:
    """The report ``message`` is, trying each format from the most exact to the loosest."""
    envelope = [
        a for name in ENVELOPE_HEADERS for v in header_text(message, name) for a in addresses_in(v)
    ]
    delivery = verp_delivery(envelope, secret_keys)
    fields = delivery_status(message)
    if fields is not None:
        return _bounce(key, delivery, fields, "RFC 3464 delivery status notification")
    feedback = feedback_report(message)
    if feedback is not None:
        if feedback.feedback_type not in COMPLAINT_TYPES:
            named = feedback.feedback_type or "none"
            why = f"a feedback report of type {named!r}, not a complaint"
            return Report(key, Kind.UNRECOGNISED, delivery, reason=why)
        delivery = delivery or verp_delivery(feedback.senders, secret_keys)
        recipients = tuple(
            Field(address, "complaint", None, f"Feedback-Type: {feedback.feedback_type}")
            for address in feedback.recipients
        )
        return Report(key, Kind.COMPLAINT, delivery, recipients, "RFC 5965 feedback report")
    if is_auto_reply(message):
        senders = [a for v in header_text(message, "From") for a in addresses_in(v)]
        subject = " ".join(" ".join(header_text(message, "Subject")).split())[:200]
        recipients = tuple(Field(a, "auto-replied", None, subject) for a in senders[:1])
        return Report(key, Kind.AUTO_REPLY, delivery, recipients, "RFC 3834 auto-reply")
    found = other_bounce(raw)
    if found:
        return _bounce(key, delivery, found, "non-standard bounce (flufl.bounce)")
    return Report(
        key, Kind.UNRECOGNISED, delivery,
        reason="not a bounce, a complaint or an auto-reply Gazette recognises",
    )  # fmt: skip


def _bounce(key: str, delivery: int | None, fields: list[Field], fmt: str) -> Report:
    """A failure when any recipient failed, a delay when some were only delayed."""
    actions = {field.action for field in fields}
    if "failed" in actions:
        kind = Kind.FAILED
    elif "delayed" in actions:
        kind = Kind.DELAYED
    else:
        named = ", ".join(sorted(actions)) or "no recipient"
        return Report(
            key, Kind.UNRECOGNISED, delivery, reason=f"a {fmt} reporting no failure ({named})"
        )
    wanted = kind.value
    # The failed recipients first: with a VERP token the report is about one delivery,
    # and the first failure is what it says about it.
    ordered = sorted(fields, key=lambda field: field.action != wanted)
    return Report(key, kind, delivery, tuple(ordered), fmt)


def verp_delivery(addresses: Iterable[str], secret_keys: Sequence[str]) -> int | None:
    """The delivery the first address with a valid VERP token names, or None.

    The token is signed, so it is trusted wherever it appears; an address with a
    forged, foreign or damaged token names nothing.
    """
    for address in addresses:
        if "+" not in address:
            continue
        found = delivery_for(address, secret_keys)
        if found is not None:
            return found
    return None
