"""DKIM's relaxed canonicalization (RFC 6376 3.4.2 and 3.4.4) and the choice of signed fields.

Bytes methods and two compiled patterns, run once per message: the body is canonicalized
once (and only scanned when it has whitespace to fold), the few signed header fields are
picked out of the head. Input is a whole message with CRLF line ends (``crlf_message``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_CRLF = b"\r\n"
_WSP_RUN = re.compile(rb"[ \t]+")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")


def crlf_message(message: bytes) -> bytes:
    """``message`` with every line ending in CRLF, the last one included.

    Verifiers differ on bare LF and on a last line without its CRLF (dkimpy keeps that
    line's trailing blanks, RFC 6376 drops them), and SMTP's DATA ends the line anyway:
    signing exactly what every verifier reads the same way avoids the question.
    """
    if message.count(b"\n") != message.count(_CRLF):
        message = _BARE_LF.sub(_CRLF, message)
    if not message.endswith(_CRLF):
        message += _CRLF
    return message


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """The head (every field with its CRLF) and the body, split at the first empty line."""
    if message.startswith(_CRLF):
        return b"", message[2:]
    at = message.find(b"\r\n\r\n")
    if at < 0:
        return message, b""
    return message[: at + 2], message[at + 4 :]


def _fold_runs(body: bytes) -> bytes:
    """Each run of two or more spaces made one space, or dropped before a line end.

    One bytes.find pass (a digest's HTML indentation has a few dozen runs); replacing
    "  " until none is left would scan the whole body once per halving of the longest run.
    """
    at = body.find(b"  ")
    if at < 0:
        return body
    pieces: list[bytes] = []
    start = 0
    while at >= 0:
        pieces.append(body[start:at])
        window = body[at : at + 256]
        stop = at + len(window) - len(window.lstrip(b" "))
        while body.startswith(b" ", stop):  # a run longer than the window
            stop += 1
        if not body.startswith(_CRLF, stop):
            pieces.append(b" ")
        start = stop
        at = body.find(b"  ", start)
    pieces.append(body[start:])
    return b"".join(pieces)


def relaxed_body(body: bytes, *, quoted_printable: bool = False) -> bytes:
    """The body canonicalized "relaxed": blanks folded, trailing blanks and empty lines gone.

    ``body`` ends with CRLF (``crlf_message``). ``quoted_printable``: the body is made of
    quoted-printable parts and their MIME framing, where no line ends in a blank (RFC
    2045 6.7 (3) has them encoded), so that scan is skipped.
    """
    if b"\t" in body:
        body = _WSP_RUN.sub(b" ", _TRAILING_WSP.sub(_CRLF, body))
    else:
        body = _fold_runs(body)
        # One blank at most is left at a line end now: those go in one pass.
        if not quoted_printable and b" \r\n" in body:
            body = body.replace(b" \r\n", _CRLF)
    end = len(body)
    while body.endswith(_CRLF, 0, end):
        end -= 2
    if end == 0:
        return b""  # an empty body hashes as nothing at all (RFC 6376 errata 3192)
    return body[:end] + _CRLF


def relaxed_field(name: bytes, value: bytes) -> bytes:
    """One header field canonicalized "relaxed": ``name:value`` without the CRLF.

    The name lower-cased, the value unfolded, its runs of blanks made one space, and
    the blanks around it dropped.
    """
    unfolded = value.replace(_CRLF, b"")
    return name.strip(b" \t").lower() + b":" + _WSP_RUN.sub(b" ", unfolded).strip(b" \t")


def fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of ``head`` as (name, value), a folded value with its CRLFs."""
    found: list[tuple[bytes, bytes]] = []
    for line in head.split(_CRLF):
        if not line:
            continue
        if line[0] in (0x20, 0x09) and found:
            name, value = found[-1]
            found[-1] = (name, value + _CRLF + line)
        else:
            name, _colon, value = line.partition(b":")
            found.append((name, value))
    return found


def signed_fields(head: bytes, names: Sequence[bytes]) -> bytes:
    """The canonical fields ``names`` (lower-case) picks from ``head``, as they are hashed.

    Each name takes the last instance not yet taken (RFC 6376 5.4.2); a name with none
    left adds nothing, which also keeps a field added in transit from verifying.
    """
    by_name: dict[bytes, list[bytes]] = {}
    wanted = set(names)
    for name, value in fields(head):
        key = name.strip(b" \t").lower()
        if key in wanted:
            by_name.setdefault(key, []).append(relaxed_field(name, value) + _CRLF)
    picked = [found.pop() for name in names if (found := by_name.get(name))]
    return b"".join(picked)
