"""Plain-text helpers shared by ingest, rendering and message building."""

from __future__ import annotations

import re
import textwrap
import unicodedata
from html import unescape
from html.parser import HTMLParser

# Line breaks and separators that would split a title or inject a mail header.
_BREAKS = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")
_SPACES = re.compile(r"\s{2,}")
_BLOCKS = {"p", "div", "blockquote", "pre", "ul", "ol", "li", "br", "h1", "h2", "h3", "h4"}


# Anything clean_line would change; most values have none, and are returned at once
# (it runs for every header of every message).
_DIRTY = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]|\s\s|^\s|\s$")


def clean_line(text: str, limit: int = 1000) -> str:
    """Fold ``text`` into one line of plain text: no control characters, no line breaks."""
    if not _DIRTY.search(text):
        return text[:limit]
    text = _BREAKS.sub(" ", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc")
    return _SPACES.sub(" ", text).strip()[:limit]


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[list[str]] = [[]]
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self.paragraphs.append(["- "] if tag == "li" else [])
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href:
            self.paragraphs[-1].append(f" <{self._href}>")
            self._href = None
        elif tag in _BLOCKS:
            self.paragraphs.append([])

    def handle_data(self, data: str) -> None:
        self.paragraphs[-1].append(data)


def html_to_text(html: str, width: int = 72) -> str:
    """Turn sanitised summary HTML into wrapped paragraphs for the text part of a message."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    paragraphs = (
        _SPACES.sub(" ", unescape("".join(p)).replace("\n", " ")).strip() for p in parser.paragraphs
    )
    return "\n\n".join(textwrap.fill(p, width) for p in paragraphs if p)
