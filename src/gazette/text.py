"""Plain-text helpers shared by ingest, rendering and message building."""

from __future__ import annotations

import re
import unicodedata
from html import unescape
from html.parser import HTMLParser

# Line breaks and separators that would split a title or inject a mail header.
_BREAKS = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")
_SPACES = re.compile(r"\s{2,}")
_BLOCKS = {
    "p", "div", "blockquote", "pre", "ul", "ol", "li", "br", "h1", "h2", "h3", "h4", "table",
}  # fmt: skip


# Anything clean_line would change; most values have none, and are returned at once
# (it runs for every header of every message).
_DIRTY = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]|\s\s|^\s|\s$")


def clean_line(text: str, limit: int = 1000) -> str:
    """Fold ``text`` into one line of plain text: no control characters, no line breaks."""
    # Stripped again after the cut: a cut just after a space would leave it at the end,
    # where a header's parser drops it and the name no longer reads back as written.
    if _is_clean(text):
        return text[:limit].rstrip()
    text = _BREAKS.sub(" ", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc")
    return _SPACES.sub(" ", text).strip()[:limit].rstrip()


def _is_clean(text: str) -> bool:
    """True when ``text`` has nothing _DIRTY finds, decided at C speed for most headers.

    Printable text holds no whitespace but the ASCII space (str.isprintable counts every
    other space and separator out), so only runs of spaces and spaces at either end
    remain to look for. About a fifth of the regular expression's time on a header.
    """
    if text.isprintable():
        return "  " not in text and not text.startswith(" ") and not text.endswith(" ")
    return _DIRTY.search(text) is None


# A text part's lines stay within this many display columns (RFC 5322's 78), except
# where a URL is longer than what is left of the line.
TEXT_WIDTH = 78
# Characters a line may not start with (closing punctuation, small kana) or end with
# (opening brackets): Japanese line breaking rules (kinsoku), which readers expect.
_NO_LINE_START = frozenset(
    "、。，．,.・：；:;!?！？」』）〕］｝〉》】〙〗)]}ー々…‥"
    "ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ"
)
_NO_LINE_END = frozenset("「『（〔［｛〈《【〘〖([{")
_URL = re.compile(r"<?(?:https?|mailto):\S+")
_CELL_TAGS = {"td", "th"}


def char_width(char: str) -> int:
    """Columns a character takes on a terminal: two for East Asian wide, none for combining."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Columns ``text`` takes on screen (East Asian wide characters count two)."""
    if text.isascii():
        return len(text)  # no ASCII character is wide or combining: every reader's greeting
    return sum(char_width(ch) for ch in text)


def _wide(char: str) -> bool:
    """True for an East Asian wide or full-width character."""
    return unicodedata.east_asian_width(char) in ("W", "F")


def _atoms(text: str) -> list[str]:
    """Split a line into pieces between which it may break; spaces are pieces of their own.

    A break may fall at a space, or between two wide (CJK) characters unless the second
    may not start a line or the first may not end one. Numbers ("1,200"), Latin words
    and URLs are never split.
    """
    atoms: list[str] = []
    position = 0
    for match in _URL.finditer(text):
        atoms.extend(_split_plain(text[position : match.start()]))
        atoms.append(match.group(0))
        position = match.end()
    atoms.extend(_split_plain(text[position:]))
    # A URL glued to the text before it (no space) stays with it.
    return [a for a in atoms if a]


def _split_plain(text: str) -> list[str]:
    """Split text without URLs at spaces and between CJK characters (see _atoms)."""
    atoms: list[str] = []
    current = ""
    for char in text:
        if char == " ":
            atoms.extend((current, " "))
            current = ""
            continue
        if (
            current
            and _wide(current[-1])
            and _wide(char)
            and char not in _NO_LINE_START
            and current[-1] not in _NO_LINE_END
        ):
            atoms.append(current)
            current = ""
        current += char
    atoms.append(current)
    return atoms


def wrap_line(line: str, width: int = TEXT_WIDTH) -> list[str]:
    """Wrap one line to ``width`` display columns; continuation lines keep its indent.

    A list item ("- ", "1. ") hangs its continuation under the item's text. A line that
    is long only because of the URLs it holds is left whole: a link is copied whole.
    """
    if display_width(line) <= width:
        return [line]
    if _URL.search(line) and display_width(_URL.sub("", line)) <= width:
        return [line]  # only its URL makes it long ("Unsubscribe: https://..."): kept whole
    stripped = line.lstrip(" ")
    indent = " " * (len(line) - len(stripped))
    bullet = re.match(r"(?:[-*] |\d{1,3}\. )", stripped)
    hang = indent + " " * (len(bullet.group(0)) if bullet else 0)
    lines: list[str] = []
    current, current_width = indent, len(indent)
    for atom in _atoms(stripped):
        atom_width = display_width(atom)
        if atom == " ":
            if current.strip():
                current += " "
                current_width += 1
            continue
        if current.strip() and current_width + atom_width > width:
            lines.append(current.rstrip())
            current, current_width = hang, len(hang)
        current += atom
        current_width += atom_width
    if current.strip():
        lines.append(current.rstrip())
    return lines


def wrap_text(text: str, width: int = TEXT_WIDTH) -> str:
    """Wrap every line of a text part to ``width`` columns (see wrap_line)."""
    return "\n".join(wrapped for line in text.split("\n") for wrapped in wrap_line(line, width))


class _TextExtractor(HTMLParser):
    """Reads sanitised HTML into paragraphs: blocks, list items, table rows, captions."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[list[str]] = [[]]
        self._href: str | None = None
        self._link_text: list[str] = []
        self._cells = 0
        self.rows: set[int] = set()  # paragraphs that are table rows

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Start a paragraph at a block, a list item ("- ") or a table row; mark cells."""
        if tag in _BLOCKS or tag in ("tr", "figcaption", "caption"):
            self.paragraphs.append(["- "] if tag == "li" else [])
            self._cells = 0
            if tag == "tr":
                self.rows.add(len(self.paragraphs) - 1)
        elif tag in _CELL_TAGS:
            if self._cells:
                self.paragraphs[-1].append(" | ")
            self._cells += 1
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._link_text = []

    def handle_endtag(self, tag: str) -> None:
        """Close a link with its URL (unless the text is the URL), or end a paragraph."""
        if tag == "a" and self._href:
            if "".join(self._link_text).strip() != self._href:
                self.paragraphs[-1].append(f" <{self._href}>")
            self._href = None
        elif tag in _BLOCKS or tag in ("tr", "figcaption", "caption"):
            self.paragraphs.append([])

    def handle_data(self, data: str) -> None:
        """Add text to the current paragraph (and to the link text, inside a link)."""
        self.paragraphs[-1].append(data)
        if self._href:
            self._link_text.append(data)


def html_to_text(html: str, width: int = TEXT_WIDTH - 3) -> str:
    """Turn sanitised summary HTML into wrapped paragraphs for the text part of a message.

    Table rows come out one a line with their cells separated by " | "; lines are
    wrapped by display width (East Asian wide characters count two columns).
    """
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    out: list[str] = []
    previous_row = False
    for number, pieces in enumerate(parser.paragraphs):
        paragraph = _SPACES.sub(" ", unescape("".join(pieces)).replace("\n", " ")).strip()
        if not paragraph:
            continue
        row = number in parser.rows
        # Rows of one table stay on consecutive lines; paragraphs are a blank line apart.
        if out:
            out.append("\n" if row and previous_row else "\n\n")
        out.append(wrap_text(paragraph, width))
        previous_row = row
    return "".join(out)
