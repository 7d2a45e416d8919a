"""Reading a message as a reader's mail client would: parsed with the standard library's
modern policy and checked for MIME defects, its wire format, its parts and its HTML.

Every test that parses a message does it through ``parse`` here, so a defect the
parser notices (a bad boundary, a broken header) fails the test that produced it.
"""

from __future__ import annotations

import re
import unicodedata
from email import message_from_bytes, message_from_string, policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import TypeVar

from gazette.text import display_width

ParserT = TypeVar("ParserT", bound=HTMLParser)

# Tags a text part must never show; "<https://...>" link annotations are not tags.
HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(\s[^<>]*)?/?>")
HTML_ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);")


def fed(parser: ParserT, document: str) -> ParserT:
    """``parser`` after it has read the whole of ``document``."""
    parser.feed(document)
    parser.close()
    return parser


def parse(data: bytes | str | Path) -> EmailMessage:
    """Parse with the modern policy; the message and each part must have no defects.

    ``data`` is the message's bytes, or a file holding them (a Maildir message), or its
    text: a message with raw UTF-8 headers (SMTPUTF8) is read from its decoded text, as
    the bytes parser would keep such headers undecoded.
    """
    if isinstance(data, str):
        message = message_from_string(data, policy=policy.default)
    else:
        raw = data.read_bytes() if isinstance(data, Path) else data
        message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message.defects == [], message.defects
    for part in message.walk():
        assert part.defects == [], part.defects
    return message


def check_wire_format(data: bytes) -> None:
    """CRLF line ends only, and no line longer than 998 octets (RFC 5322 2.1.1)."""
    assert data.endswith(b"\r\n")
    assert data.count(b"\n") == data.count(b"\r\n"), "a bare LF"
    assert data.count(b"\r") == data.count(b"\r\n"), "a bare CR"
    longest = max(len(line) for line in data.split(b"\r\n"))
    assert longest <= 998, f"a line of {longest} octets"


def raw_header_lines(data: bytes) -> list[bytes]:
    """The header section's physical lines, folding kept."""
    head, separator, _body = data.partition(b"\r\n\r\n")
    assert separator, "no blank line after the headers"
    return head.split(b"\r\n")


def raw_header(data: bytes, name: str) -> list[bytes]:
    """Every physical line of every occurrence of header ``name`` (first line first)."""
    lines = raw_header_lines(data)
    found: list[bytes] = []
    prefix = name.lower().encode("ascii") + b":"
    for n, line in enumerate(lines):
        if line.lower().startswith(prefix):
            found.append(line)
            for more in lines[n + 1 :]:
                if not more.startswith((b" ", b"\t")):
                    break
                found.append(more)
    return found


def parts(message: EmailMessage) -> tuple[str, str]:
    """(text, HTML) of a multipart/alternative digest, decoded."""
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None
    assert html is not None
    for part in (plain, html):
        assert part.get_content_charset() == "utf-8"
    # Decoded quoted-printable keeps the canonical CRLF line ends; read them as lines.
    return (
        plain.get_content().replace("\r\n", "\n"),
        html.get_content().replace("\r\n", "\n"),
    )


def listed_titles(text: str) -> list[str]:
    """The article titles of a text part, from its numbered lines ("1. Title").

    A title too long for the 78-column text part goes on in indented lines: a line is
    a continuation when its first word would not have fitted on the line before (the
    wrap is greedy), which tells it from the date line under every title.
    """
    lines = text.split("\n")
    titles = []
    for number, line in enumerate(lines):
        start = re.match(r"^\d+\. (.+)$", line)
        if start is None:
            continue
        title, previous = start.group(1), line
        for more in lines[number + 1 :]:
            piece = more.strip()
            if not more.startswith(" ") or not piece:
                break
            wide = unicodedata.east_asian_width(piece[0]) in "WF"
            first = piece[0] if wide else piece.split(" ")[0]
            joined = wide and unicodedata.east_asian_width(title[-1]) in "WF"
            if display_width(previous) + (0 if joined else 1) + display_width(first) <= 78:
                break  # it would have fitted: not a continuation
            title += piece if joined else f" {piece}"
            previous = more
        titles.append(title)
    return titles


class HtmlDocument(HTMLParser):
    """What a client shows of an HTML part: links with their text, visible and hidden text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.lang: str | None = None
        self.tags: list[str] = []
        self._visible: list[str] = []
        self._hidden: list[str] = []
        self._stack: list[tuple[str, bool]] = []
        self._href: str | None = None
        self._link_text: list[str] = []
        self.feed(html)
        self.close()

    @property
    def text(self) -> str:
        return " ".join(" ".join(self._visible).split())

    @property
    def hidden_text(self) -> str:
        return " ".join(" ".join(self._hidden).split())

    def _is_hidden(self) -> bool:
        return any(hidden for _tag, hidden in self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "html":
            self.lang = a.get("lang")
        if tag == "a":
            self._href, self._link_text = a.get("href", ""), []
        if tag in {"meta", "link", "br", "img", "hr", "input"}:
            return
        style = a.get("style", "").replace(" ", "").lower()
        self._stack.append((tag, "display:none" in style))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, " ".join("".join(self._link_text).split())))
            self._href = None
        while self._stack:
            top, _hidden = self._stack.pop()
            if top == tag:
                break

    def handle_data(self, data: str) -> None:
        if any(tag in ("style", "title", "script") for tag, _hidden in self._stack):
            return
        (self._hidden if self._is_hidden() else self._visible).append(data)
        if self._href is not None:
            self._link_text.append(data)

    def hrefs(self, text: str) -> list[str]:
        """The targets of the links whose text starts with ``text``."""
        return [href for href, label in self.links if label.startswith(text)]


def dkim_tags(message: EmailMessage) -> dict[str, str]:
    """The tags of the message's DKIM-Signature, whitespace removed."""
    values = message.get_all("DKIM-Signature") or []
    assert len(values) == 1, values
    unfolded = "".join(str(values[0]).split())
    return dict(tag.split("=", 1) for tag in unfolded.split(";") if tag)
