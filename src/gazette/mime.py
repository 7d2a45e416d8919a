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
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from gazette.text import clean_line

CRLF = "\r\n"
# RFC 2047: an encoded word is at most 75 characters; 45 bytes of UTF-8 encode to 60.
_CHUNK_BYTES = 45
_QP_LINE = 76
# Header lines are folded at spaces to stay near 78 characters (RFC 5322 2.1.1).
_FOLD_AT = 76
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')


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


def quoted_printable(text: str) -> bytes:
    """Encode a body as quoted-printable UTF-8 with CRLF lines of at most 76 octets.

    CPython's encoder has two flaws fixed here: its soft line breaks are bare LF when
    the input has no CRLF, and a blank it must escape at the wrap column makes a
    77-octet line. This runs twice per message, so it sticks to C-speed string methods.
    """
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", CRLF)
    data = normalised.encode("utf-8")
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True)
    if b"\r\n" not in data:
        # No line break in the input: the encoder chose LF for its soft breaks.
        encoded = encoded.replace(b"=\n", b"=\r\n")
    lines = encoded.split(b"\r\n")
    if max(map(len, lines)) <= _QP_LINE:
        return encoded
    return b"\r\n".join(_rewrap(line) for line in lines)


def _rewrap(line: bytes) -> bytes:
    """Split an over-long encoded line with a soft break that does not cut an escape."""
    if len(line) <= _QP_LINE:
        return line
    cut = _QP_LINE - 1  # room for the "=" of the soft break
    while b"=" in line[cut - 2 : cut]:
        cut -= 1
    return line[:cut] + b"=\r\n" + _rewrap(line[cut:])


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


def build_message(envelope: Envelope, text: str, html: str, boundary: str) -> bytes:
    """Return a multipart/alternative message (text, then HTML) as CRLF bytes.

    ``boundary`` must not occur in either body; a digest uses a fixed random string
    chosen once per issue and language.
    """
    headers = [
        f"From: {format_address(envelope.from_name, envelope.from_address)}",
        f"To: {format_address(envelope.to_name, envelope.to_address)}",
        f"Subject: {encode_text(envelope.subject)}",
        f"Date: {format_datetime(envelope.date)}",
        f"Message-ID: <{clean_line(envelope.message_id, 250)}>",
        "MIME-Version: 1.0",
    ]
    if envelope.list_id:
        identifier = clean_line(envelope.list_id, 255)
        name = encode_text(envelope.list_name) if envelope.list_name else ""
        headers.append(f"List-Id: {name} <{identifier}>" if name else f"List-Id: <{identifier}>")
    if envelope.unsubscribe_url:
        # One URL in angle brackets, never encoded: RFC 8058 one-click needs it verbatim.
        headers.append(f"List-Unsubscribe: <{clean_line(envelope.unsubscribe_url, 900)}>")
        headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    head = (CRLF.join(headers) + CRLF + CRLF).encode("utf-8")
    part_head = (
        f"--{boundary}{CRLF}Content-Type: text/%s; charset=utf-8{CRLF}"
        f"Content-Transfer-Encoding: quoted-printable{CRLF}{CRLF}"
    )
    return b"".join(
        (
            head,
            (part_head % "plain").encode("ascii"),
            quoted_printable(text),
            CRLF.encode(),
            (part_head % "html").encode("ascii"),
            quoted_printable(html),
            f"{CRLF}--{boundary}--{CRLF}".encode("ascii"),
        )
    )
