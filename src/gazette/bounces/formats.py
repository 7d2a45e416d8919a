"""The formats a report about sent mail comes in, each read into plain values.

RFC 3464 delivery status notifications and RFC 5965 feedback reports are read with the
standard library; RFC 3834 auto-replies are recognised by their headers; whatever else
a mail server writes is left to flufl.bounce (GNU Mailman's detectors), which finds
the failed addresses but rarely a status code, so the code is looked for in the text.
"""

from __future__ import annotations

import contextlib
import email
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

from flufl.bounce import all_failures

# RFC 3463: class.subject.detail, e.g. 5.1.1.
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# An address in free text (a header, a line of a bounce): enough to find a VERP token
# or a recipient; never used to send.
_ADDRESS = re.compile(r"[^\s<>()\[\]@,;:\"']+@[^\s<>()\[\]@,;:\"']+")
# RFC 5965 feedback types that say the reader called the message unwanted.
COMPLAINT_TYPES = frozenset({"abuse", "fraud"})
# Subjects of out-of-office and vacation replies that carry no RFC 3834 header.
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|vacation|"
    r"abwesenheit|absence|r[ée]ponse automatique|away from)",
    re.IGNORECASE,
)
# Who sends bounces: such a message is not an auto-reply even when marked as one
# (Postfix and Exim mark their bounces "Auto-Submitted: auto-replied").
_DAEMON = re.compile(r"mailer-daemon|postmaster|mail delivery|mail system", re.IGNORECASE)


@dataclass(frozen=True)
class Field:
    """One reported recipient: the address, the action, the status and the words."""

    address: str
    action: str  # RFC 3464: failed, delayed, delivered, relayed, expanded
    status: str | None  # "5.1.1", or None when the report gives none
    diagnostic: str


def status_code(text: str) -> str | None:
    """The first RFC 3463 status code in ``text`` ("5.1.1"), or None."""
    match = _STATUS.search(text)
    return ".".join(match.groups()) if match else None


def addresses_in(text: str) -> list[str]:
    """Every address-shaped word in ``text``, in order (angle brackets dropped)."""
    return _ADDRESS.findall(text)


def header_text(message: Message, name: str) -> list[str]:
    """Every value of header ``name`` as plain text; a value that cannot be read is skipped."""
    values = []
    for value in message.get_all(name) or []:
        with contextlib.suppress(Exception):  # a header the parser could not make sense of
            values.append(str(value))
    return values


def report_parts(message: Message, report_type: str) -> list[Message]:
    """The parts of a ``multipart/report; report-type=...`` message, or [] when it is not."""
    if message.get_content_type() != "multipart/report":
        return []
    if str(message.get_param("report-type") or "").lower() != report_type:
        return []
    payload = message.get_payload()
    return (
        [part for part in payload if isinstance(part, Message)] if isinstance(payload, list) else []
    )


def field_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part.

    The standard library splits a delivery-status body into its blocks itself; other
    report bodies come as text, read here block by block.
    """
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, str):
        text = payload
        raw = part.get_payload(decode=True)
        if isinstance(raw, bytes):
            text = raw.decode("utf-8", "replace")
        text = text.replace("\r\n", "\n")
        return [
            HeaderParser(policy=compat32).parsestr(b)
            for b in re.split(r"\n\s*\n", text)
            if b.strip()
        ]
    return []


def _typed_address(value: str) -> str:
    """``rfc822; ada@example.org`` (or with angle brackets) as ``ada@example.org``."""
    _kind, _, address = value.partition(";")
    address = (address or value).strip()
    found = addresses_in(address)
    return found[0] if found else address


def delivery_status(message: Message) -> list[Field] | None:
    """The recipients an RFC 3464 report names, or None when the message is not one."""
    parts = report_parts(message, "delivery-status")
    status_parts = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    if not status_parts:
        return None
    fields = []
    for block in field_blocks(status_parts[0])[1:]:  # the first block is about the message
        final = header_text(block, "Final-Recipient") or header_text(block, "Original-Recipient")
        action = (header_text(block, "Action") or [""])[0].strip().lower()
        if not final or not action:
            continue
        diagnostic = " ".join(" ".join(header_text(block, "Diagnostic-Code")).split())
        diagnostic = diagnostic.partition(";")[2].strip() or diagnostic
        status = status_code((header_text(block, "Status") or [""])[0])
        fields.append(Field(_typed_address(final[0]), action, status, diagnostic[:500]))
    return fields


@dataclass(frozen=True)
class Feedback:
    """An RFC 5965 feedback report: its type, the reader it names, the addresses in it."""

    feedback_type: str
    recipients: list[str]
    # Where a VERP token may be: the original envelope sender and Return-Path.
    senders: list[str]


def feedback_report(message: Message) -> Feedback | None:
    """The feedback report (ARF) this message is, or None when it is not one."""
    parts = report_parts(message, "feedback-report")
    reports = [p for p in parts if p.get_content_type() == "message/feedback-report"]
    if not reports:
        return None
    fields = Message()
    for block in field_blocks(reports[0]):
        for name, value in block.items():
            fields[name] = value
    recipients = [_typed_address(v) for v in header_text(fields, "Original-Rcpt-To")]
    senders = [_typed_address(v) for v in header_text(fields, "Original-Mail-From")]
    original = _original_headers(parts)
    if original is not None:
        senders += [a for v in header_text(original, "Return-Path") for a in addresses_in(v)]
        if not recipients:
            recipients = [a for v in header_text(original, "To") for a in addresses_in(v)]
    kind = (header_text(fields, "Feedback-Type") or [""])[0].strip().lower()
    return Feedback(kind, recipients, senders)


def _original_headers(parts: list[Message]) -> Message | None:
    """The headers of the original message a report quotes (its third part), if any."""
    for part in parts:
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind == "text/rfc822-headers":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return HeaderParser(policy=compat32).parsestr(raw.decode("utf-8", "replace"))
    return None


def is_auto_reply(message: Message) -> bool:
    """True for an RFC 3834 auto-reply (or a vacation reply without its headers).

    A bounce from a mail server may carry the same headers; one from a mailer daemon
    is not taken for an auto-reply.
    """
    sender = " ".join(header_text(message, "From"))
    if _DAEMON.search(sender):
        return False
    submitted = " ".join(header_text(message, "Auto-Submitted")).strip().lower()
    if submitted and submitted != "no":
        return True
    if header_text(message, "X-Autoreply") or header_text(message, "X-Autorespond"):
        return True
    precedence = " ".join(header_text(message, "Precedence")).strip().lower()
    if precedence == "auto_reply":
        return True
    return any(_AUTO_SUBJECT.match(subject) for subject in header_text(message, "Subject"))


def other_bounce(raw: bytes) -> list[Field]:
    """The failed recipients flufl.bounce detects in a non-standard bounce, with a status.

    flufl.bounce reads messages parsed the classic way (compat32) and reports failures
    as temporary or permanent; the status code is looked for in the text after the
    address, else anywhere in the notification, and kept only when its class agrees.
    """
    _quiet_flufl()
    message = email.message_from_bytes(raw)
    temporary, permanent = all_failures(message)
    text = notification_text(message)
    fields = []
    for found, action, klass in ((permanent, "failed", "5"), (temporary, "delayed", "4")):
        for item in sorted(found):
            address = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            where = text.lower().find(address.lower())
            start = text.rfind("\n", 0, where) + 1  # from the start of the address's line
            nearby = text[start : where + 600] if where >= 0 else ""
            status = status_code(nearby) or status_code(text)
            words = _line_with(nearby or text, status) if status else ""
            if status is not None and not status.startswith(klass):
                status, words = None, ""
            fields.append(Field(address, action, status, words))
    return fields


def notification_text(message: Message) -> str:
    """The text parts of a bounce, not those of the original message it quotes."""
    return "\n".join(_text_parts(message))[:200_000]


def _text_parts(message: Message) -> Iterator[str]:
    if message.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
        return
    if message.is_multipart():
        payload = message.get_payload()
        for part in payload if isinstance(payload, list) else []:
            if isinstance(part, Message):
                yield from _text_parts(part)
        return
    if message.get_content_maintype() == "text":
        raw = message.get_payload(decode=True)
        if isinstance(raw, bytes):
            try:
                yield raw.decode(message.get_content_charset() or "utf-8", "replace")
            except LookupError:  # a charset Python does not know
                yield raw.decode("utf-8", "replace")


def _line_with(text: str, needle: str) -> str:
    """The line of ``text`` that holds ``needle``, squeezed, for the reader's history."""
    for line in text.splitlines():
        if needle in line:
            return " ".join(line.split())[:300]
    return ""


def _quiet_flufl() -> None:
    """Keep flufl.bounce's logged tracebacks of a failing detector off the terminal.

    Its detectors log with log.exception before re-raising; with no handler configured
    Python's last-resort handler would print the traceback. The caller handles the error.
    """
    logger = logging.getLogger("flufl.bounce")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
