"""Raw MIME messages built as bytes, with every list header added in one place.

Python's EmailMessage with the SMTP policy costs milliseconds per message, RFC 2047-
encodes a long List-Unsubscribe (which breaks one-click), and can lose a space when it
folds a non-ASCII Subject. A digest's structure is fixed, so it is written directly:
headers encoded here, bodies quoted-printable with CRLF line ends.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from functools import lru_cache
from typing import NewType

from gazette.text import clean_line

CRLF = "\r\n"
# RFC 2047: an encoded word is at most 75 characters; 45 bytes of UTF-8 encode to 60.
_CHUNK_BYTES = 45
_QP_LINE = 76
# Header lines are folded at spaces to stay near 78 characters (RFC 5322 2.1.1).
_FOLD_AT = 76
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')

QuotedPrintable = NewType("QuotedPrintable", bytes)
"""A body already encoded by quoted_printable (CRLF lines, none starting with ".")."""


class DotSafe(bytes):
    """A whole message in which no line starts with ".", as build_message writes them.

    SMTP's DATA would otherwise need a "." doubled at each line start (RFC 5321 4.5.2);
    proving there is none costs a scan of every message (about 50 us for a digest), so
    messages built here carry the proof in their type and the SMTP client skips it.
    """


def _encoded_words(text: str) -> list[str]:
    """Split ``text`` into B-encoded words without cutting a character in two."""
    words: list[str] = []
    chunk = b""
    for char in text:
        data = char.encode("utf-8")
        if len(chunk) + len(data) > _CHUNK_BYTES:
            words.append(chunk.decode("utf-8"))
            chunk = b""
        chunk += data
    if chunk:
        words.append(chunk.decode("utf-8"))
    return [f"=?utf-8?b?{base64.b64encode(w.encode('utf-8')).decode('ascii')}?=" for w in words]


def _fold(value: str) -> str:
    """Fold plain ASCII text at spaces; unfolding (removing each CRLF) restores it.

    ``value`` comes from clean_line, so it has no runs of spaces that folding could lose.
    """
    lines: list[str] = []
    current = ""
    for word in value.split(" "):
        candidate = f"{current} {word}" if current else word
        if current and len(candidate) > _FOLD_AT:
            lines.append(current)
            current = word
        else:
            current = candidate
    lines.append(current)
    return (CRLF + " ").join(lines)


def _needs_encoding(value: str) -> bool:
    # Literal "=?" in ASCII would be decoded by readers as an encoded word, letting a
    # title or name display text other than its own; a word too long to fold would
    # break the 998-octet line limit.
    return (
        not value.isascii()
        or "=?" in value
        or any(len(word) > _FOLD_AT for word in value.split(" "))
    )


# Every message of an issue repeats its subject and list name: encoded once, not per reader.
@lru_cache(maxsize=1024)
def encode_text(value: str) -> str:
    """Return a header value for free text: ASCII folded, anything else RFC 2047-encoded.

    Control characters and line breaks are folded away first, so no value can start a
    header of its own.
    """
    value = clean_line(value, 2000)
    if not _needs_encoding(value):
        return _fold(value)
    # Encoded words are separated by folding white space, which decoders drop between
    # adjacent encoded words: splitting never loses or adds a space.
    return (CRLF + " ").join(_encoded_words(value))


def format_address(name: str, address: str) -> str:
    """Return ``Name <address>`` with the name quoted or encoded as RFC 5322 requires."""
    name = clean_line(name, 200)
    address = clean_line(address, 320)
    if not name:
        return address
    if _needs_encoding(name):
        return f"{encode_text(name)} <{address}>"
    if _SPECIALS.search(name):
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{address}>'
    return f"{name} <{address}>"


def quoted_printable(text: str) -> QuotedPrintable:
    """Encode a body as quoted-printable UTF-8 with CRLF lines of at most 76 octets.

    CPython's encoder has two flaws fixed here: its soft line breaks are bare LF when
    the input has no CRLF, and a blank it must escape at the wrap column makes a
    77-octet line. No line starts with "." either (it is written "=2E"), so SMTP never
    needs to dot-stuff a message built here. C-speed string methods only: a digest's
    shared lines are encoded once per render, but each reader's own lines every time.
    """
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", CRLF)
    data = normalised.encode("utf-8")
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True)
    if b"\r\n" not in data:
        # No line break in the input: the encoder chose LF for its soft breaks.
        encoded = encoded.replace(b"=\n", b"=\r\n")
    # The encoder escapes a "." only when it is alone on its line; "=2E" anywhere at a
    # line start means the SMTP client can send the bytes as they are.
    if encoded.startswith(b"."):
        encoded = b"=2E" + encoded[1:]
    if b"\n." in encoded:
        encoded = encoded.replace(b"\n.", b"\n=2E")
    lines = encoded.split(b"\r\n")
    if max(map(len, lines)) <= _QP_LINE:
        return QuotedPrintable(encoded)
    return QuotedPrintable(b"\r\n".join(_rewrap(line) for line in lines))


def _rewrap(line: bytes) -> bytes:
    """Split an over-long encoded line with soft breaks that do not cut an escape."""
    pieces: list[bytes] = []
    while len(line) > _QP_LINE:
        cut = _QP_LINE - 1  # room for the "=" of the soft break
        while b"=" in line[cut - 2 : cut]:
            cut -= 1
        pieces.append(line[:cut] + b"=")
        line = line[cut:]
        if line.startswith(b"."):
            # The rest starts a line now, and no line may start with "." (see above).
            line = b"=2E" + line[1:]
    pieces.append(line)
    return b"\r\n".join(pieces)


@dataclass(frozen=True)
class BodyTemplate:
    """A body with per-reader markers whose other lines are encoded once, for every reader.

    Quoted-printable's hard line breaks are CRLF and its soft breaks never cross one, so a
    run of whole lines encodes to the same bytes alone as inside the body: a digest's
    shared lines (nearly all of it) are encoded once per render, and per reader only the
    few lines holding a marker, after substitution.
    """

    # Encoded runs of shared lines, and raw runs of lines holding a marker, in order.
    pieces: tuple[QuotedPrintable | str, ...]

    @classmethod
    def split(cls, text: str, markers: Iterable[str]) -> BodyTemplate:
        """Split ``text`` at its LFs into shared runs (encoded now) and marker runs (kept)."""
        markers = tuple(markers)
        lines = text.split("\n")
        # Every piece but the last ends with its LF, so normalising line ends cannot
        # join a CR at the end of one piece with an LF at the start of the next.
        ended = [line + "\n" for line in lines[:-1]]
        if lines[-1]:
            ended.append(lines[-1])
        pieces: list[QuotedPrintable | str] = []
        run: list[str] = []
        run_personal = False
        for line in ended:
            personal = any(marker in line for marker in markers)
            if run and personal != run_personal:
                pieces.append(_piece(run, run_personal))
                run = []
            run.append(line)
            run_personal = personal
        if run:
            pieces.append(_piece(run, run_personal))
        return cls(tuple(pieces))

    def fill(self, substitute: Callable[[str], str]) -> QuotedPrintable:
        """The encoded body with ``substitute`` applied to the lines holding markers.

        The same bytes as ``quoted_printable`` of the whole body after ``substitute``,
        as long as ``substitute`` changes nothing outside the markers.
        """
        return QuotedPrintable(
            b"".join(
                piece if isinstance(piece, bytes) else quoted_printable(substitute(piece))
                for piece in self.pieces
            )
        )


def _piece(lines: list[str], personal: bool) -> QuotedPrintable | str:
    joined = "".join(lines)
    return joined if personal else quoted_printable(joined)


@dataclass(frozen=True)
class Envelope:
    """Per-message header values of a digest or a confirmation."""

    from_name: str
    from_address: str
    to_name: str
    to_address: str
    subject: str
    message_id: str
    date: datetime
    list_id: str | None = None  # the identifier, e.g. weekly.example.org
    list_name: str = ""
    unsubscribe_url: str | None = None
    # A provider's metadata header line carrying the VERP token (mail/provider_headers).
    provider_header: str | None = None
    # Google Postmaster Tools' feedback loop: ``issue:newsletter:gazette:SenderId``, the
    # same for every reader of an issue (see gazette.digests.composer.feedback_id).
    feedback_id: str | None = None


def build_message(
    envelope: Envelope,
    text: str | QuotedPrintable,
    html: str | QuotedPrintable,
    boundary: str,
) -> DotSafe:
    """Return a multipart/alternative message (text, then HTML) as CRLF bytes.

    Each body is a string, or already quoted_printable-encoded (a digest encodes its
    shared lines once per render, not per reader). ``boundary`` must not occur in either
    body; a digest uses a fixed random string chosen once per issue and language.
    Header values are cleaned to one line and folded with a leading blank, and bodies
    never start a line with ".", so the result is DotSafe.
    """
    headers = [
        _from_line(envelope.from_name, envelope.from_address),
        f"To: {format_address(envelope.to_name, envelope.to_address)}",
        f"Subject: {encode_text(envelope.subject)}",
        _date_line(envelope.date),
        f"Message-ID: <{clean_line(envelope.message_id, 250)}>",
        "MIME-Version: 1.0",
    ]
    if envelope.list_id:
        headers.append(_list_id_line(envelope.list_id, envelope.list_name))
    if envelope.unsubscribe_url:
        # One URL in angle brackets, never encoded: RFC 8058 one-click needs it verbatim.
        headers.append(f"List-Unsubscribe: <{clean_line(envelope.unsubscribe_url, 900)}>")
        headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    if envelope.provider_header:
        # Built whole by mail/provider_headers (ASCII, one short line): added as it is.
        headers.append(envelope.provider_header)
    if envelope.feedback_id:
        # Gmail reports complaints only per Feedback-ID, and only when it is DKIM-signed.
        headers.append(f"Feedback-ID: {clean_line(envelope.feedback_id, 200)}")
    headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    head = (CRLF.join(headers) + CRLF + CRLF).encode("utf-8")
    text_head, html_head, tail = _part_heads(boundary)
    return DotSafe(b"".join((head, text_head, _encoded(text), html_head, _encoded(html), tail)))


# The lines below are the same for every reader of an issue (one date per batch): each
# is built once, not per message.
@lru_cache(maxsize=64)
def _from_line(name: str, address: str) -> str:
    return f"From: {format_address(name, address)}"


def _date_line(date: datetime) -> str:
    # Keyed with the offset too: equal instants in two zones are equal datetimes.
    return _date_text(date, date.utcoffset())


@lru_cache(maxsize=64)
def _date_text(date: datetime, _offset: timedelta | None) -> str:
    return f"Date: {format_datetime(date)}"


@lru_cache(maxsize=64)
def _list_id_line(list_id: str, list_name: str) -> str:
    identifier = clean_line(list_id, 255)
    name = encode_text(list_name) if list_name else ""
    return f"List-Id: {name} <{identifier}>" if name else f"List-Id: <{identifier}>"


@lru_cache(maxsize=64)
def _part_heads(boundary: str) -> tuple[bytes, bytes, bytes]:
    """The text part's head, the HTML part's head (after the text's line end), the close."""
    part_head = (
        f"--{boundary}{CRLF}Content-Type: text/%s; charset=utf-8{CRLF}"
        f"Content-Transfer-Encoding: quoted-printable{CRLF}{CRLF}"
    )
    return (
        (part_head % "plain").encode("ascii"),
        (CRLF + part_head % "html").encode("ascii"),
        f"{CRLF}--{boundary}--{CRLF}".encode("ascii"),
    )


def _encoded(body: str | QuotedPrintable) -> bytes:
    return body if isinstance(body, bytes) else quoted_printable(body)
