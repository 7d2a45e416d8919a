"""Article HTML for mail: sanitised, absolute, tidied, and cut into excerpts.

Feeds send whole posts with relative links, responsive images, tracking pixels and
WordPress boilerplate. What is stored is sanitised HTML whose every link and image is
an absolute URL; an excerpt is cut from it at a block or sentence boundary, never
inside a tag or a word, so a digest can carry a few lines of each post.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import nh3

# What a stored summary may keep: text structure, links, images, figures and tables.
ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "em", "figcaption",
    "figure", "h2", "h3", "h4", "i", "img", "li", "ol", "p", "pre", "q", "s", "small",
    "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
LINK_SCHEMES = {"http", "https", "mailto"}
DEFAULT_EXCERPT_WORDS = 60
# Blocks an excerpt is cut after; a made excerpt leaves out media and tables.
_BLOCKS = {"p", "li", "blockquote", "pre", "h2", "h3", "h4", "ul", "ol", "figure", "table"}
_SKIPPED_IN_EXCERPT = {"figure", "img", "figcaption"}
_VOID = {"br", "img"}
# Inline styles for mail clients that drop <style>: images shrink to the column, tables
# keep visible cells. Added after sanitising, so no feed can supply a style of its own.
_IMG_STYLE = "display:block;max-width:100%;height:auto;border:0;margin:0 0 8px 0;"
_TABLE_STYLE = "border-collapse:collapse;margin:0 0 8px 0;font-size:14px;"
_CELL_STYLE = "border:1px solid #d1d5db;padding:4px 8px;text-align:left;vertical-align:top;"
# Browsers indent a <figure> by 40 px on each side, which a phone cannot spare.
_FIGURE_STYLE = "margin:0 0 12px 0;"
_CAPTION_STYLE = "font-size:13px;line-height:1.4;color:#6b7280;"

# WordPress boilerplate: "[…]" after an excerpt, the RSS footer, "Continue reading".
_BRACKET_ELLIPSIS = re.compile(r"\s*\[\s*(?:…|&#8230;|&#x2026;|&hellip;|\.\.\.)\s*\]")
_APPEARED_FIRST = re.compile(
    r"<p>(?:(?!</p>).)*?\bappeared first on\b(?:(?!</p>).)*?</p>"
    r"|The post\b(?:(?!<p[\s>]).){0,600}?\bappeared first on\b(?:(?!<p[\s>]).){0,400}?(?:\.|$)",
    re.IGNORECASE | re.DOTALL,
)
_CONTINUE_READING = re.compile(
    r"<a\b[^>]*>\s*(?:Continue reading|Read more)(?:(?!</a>).)*</a>", re.IGNORECASE | re.DOTALL
)
_EMPTY_PARAGRAPH = re.compile(r"<p>(?:\s|&nbsp;|<br>)*</p>")
_IMG_TAG = re.compile(r"<img\b[^>]*>")
_ONE_PIXEL = re.compile(r"""\b(?:width|height)\s*=\s*["']?[01](?:px)?["']?""", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)]*\s+|(?<=[。！？])[」』）]*")
_WIDE = ("W", "F")


def tidy_wordpress(raw: str) -> str:
    """Remove WordPress's "[…]", "The post … appeared first on …" and "Continue reading"."""
    raw = _APPEARED_FIRST.sub("", raw)
    raw = _CONTINUE_READING.sub("", raw)
    # "[…]" after a finished sentence says nothing more: "operator.…" reads as a typo.
    return _BRACKET_ELLIPSIS.sub(_ellipsis, raw)


def _ellipsis(match: re.Match[str]) -> str:
    """An ellipsis for WordPress's "[…]", or nothing when a sentence ends just before it."""
    before = match.string[: match.start()].rstrip()
    return "" if before.endswith((".", "!", "?", "。", "！", "？", "…")) else "…"


def _drop_pixels(raw: str) -> str:
    """Remove images declared 1x1 (or 0): tracking pixels, which show nothing to a reader."""

    def keep(match: re.Match[str]) -> str:
        """The image tag, or nothing when both of its sides are at most one pixel."""
        return "" if len(_ONE_PIXEL.findall(match.group(0))) >= 2 else match.group(0)

    return _IMG_TAG.sub(keep, raw)


def _absolute(base: str | None, value: str, schemes: set[str]) -> str | None:
    """``value`` resolved against ``base``; None when its scheme is not one of ``schemes``."""
    value = value.strip()
    if not value:
        return None
    resolved = urljoin(base, value) if base else value
    parts = urlsplit(resolved)
    if parts.scheme.lower() not in schemes:
        return None
    if parts.scheme.lower() in ("http", "https") and not parts.netloc:
        return None
    return resolved


def clean_article_html(raw: str, base: str | None = None) -> str:
    """Sanitise feed HTML for storage: allow-listed tags, absolute http(s) links and images.

    Relative hrefs and srcs are resolved against ``base`` (the article's URL); srcset,
    tracking pixels, images that are not https and links of other schemes are dropped,
    and WordPress's boilerplate is tidied away.
    """
    if not raw or not raw.strip():
        return ""

    def attribute(tag: str, name: str, value: str) -> str | None:
        """An attribute's value as stored, or None to drop it."""
        if tag == "a" and name == "href":
            return _absolute(base, value, LINK_SCHEMES)
        if tag == "img" and name == "src":
            # Mail clients block plain http images and mixed content; keep https only.
            return _absolute(base, value, {"https"})
        if name in ("width", "height", "colspan", "rowspan"):
            return value if value.strip().isdigit() else None
        return value

    cleaned = nh3.clean(
        _drop_pixels(tidy_wordpress(raw)),
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=attribute,
        url_schemes=LINK_SCHEMES,
        link_rel="noopener noreferrer",
    )
    # An image whose source was dropped would show a broken frame: remove it whole.
    cleaned = _IMG_TAG.sub(lambda m: m.group(0) if " src=" in m.group(0) else "", cleaned)
    cleaned = _drop_pixels(cleaned)
    return _EMPTY_PARAGRAPH.sub("", cleaned).strip()


def styled_for_mail(cleaned: str) -> str:
    """Add the inline styles mail clients need to sanitised HTML (images, tables).

    Width and height attributes go: the column is at most 552 px wide and images
    scale down with ``max-width:100%``; a fixed size would overflow a phone screen.
    """

    def image(match: re.Match[str]) -> str:
        """The image tag without a fixed size, with the column-fitting style."""
        tag = re.sub(r'\s(?:width|height)="[^"]*"', "", match.group(0))
        return tag.replace("<img ", f'<img style="{_IMG_STYLE}" ', 1)

    styled = _IMG_TAG.sub(image, cleaned)
    styled = re.sub(
        r"<table>",
        f'<table cellpadding="0" cellspacing="0" style="{_TABLE_STYLE}">',
        styled,
    )
    styled = styled.replace("<figure>", f'<figure style="{_FIGURE_STYLE}">')
    styled = styled.replace("<figcaption>", f'<figcaption style="{_CAPTION_STYLE}">')
    return re.sub(r"<(td|th)(\s|>)", rf'<\1 style="{_CELL_STYLE}"\2', styled)


def without_images(cleaned: str) -> str:
    """Sanitised HTML with its images taken out (for newsletters sent without images)."""
    return _EMPTY_PARAGRAPH.sub("", _IMG_TAG.sub("", cleaned)).strip()


def first_image(cleaned: str) -> tuple[str, str] | None:
    """The (src, alt) of the first image in sanitised HTML, if any."""
    match = _IMG_TAG.search(cleaned)
    if match is None:
        return None
    src = re.search(r'\ssrc="([^"]*)"', match.group(0))
    alt = re.search(r'\salt="([^"]*)"', match.group(0))
    if src is None:
        return None
    return html.unescape(src.group(1)), html.unescape(alt.group(1)) if alt else ""


def is_wide(char: str) -> bool:
    """True for East Asian wide and full-width characters (two columns, no spaces between)."""
    return unicodedata.east_asian_width(char) in _WIDE


def word_count(text: str) -> float:
    """Words in ``text``, counting two CJK characters as one word (CJK has no spaces)."""
    wide = sum(1 for ch in text if is_wide(ch))
    narrow = "".join(" " if is_wide(ch) else ch for ch in text)
    return len(narrow.split()) + wide / 2


def _cut_text(text: str, budget: float) -> str:
    """The start of ``text`` holding about ``budget`` words, ended at a sentence if one is near.

    Never cuts inside a word: at a sentence end (. ! ? 。 ！ ？) at or before the budget
    when one falls past half of it, else at the last space (or between CJK characters).
    """
    best_sentence = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        if word_count(text[:end]) > budget:
            break
        best_sentence = end
    if best_sentence and word_count(text[:best_sentence]) >= budget / 2:
        return text[:best_sentence].rstrip()
    # No sentence end near: cut at a word boundary and mark the cut.
    cut = 0
    for n, ch in enumerate(text):
        if word_count(text[: n + 1]) > budget:
            break
        if ch.isspace():
            cut = n
        elif is_wide(ch):
            cut = n + 1
    return text[:cut].rstrip() + "…" if cut else ""


@dataclass
class _Node:
    """A parsed piece of sanitised HTML: a start tag, an end tag, or text."""

    kind: str  # "start", "end", "text"
    tag: str = ""
    attrs: tuple[tuple[str, str | None], ...] = ()
    text: str = ""


class _Nodes(HTMLParser):
    """Reads sanitised HTML into a flat list of nodes (well-formed: nh3 wrote it)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.nodes: list[_Node] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Record a start tag (a void element has no end tag)."""
        self.nodes.append(_Node("start", tag, tuple(attrs)))

    def handle_endtag(self, tag: str) -> None:
        """Record an end tag."""
        self.nodes.append(_Node("end", tag))

    def handle_data(self, data: str) -> None:
        """Record text."""
        self.nodes.append(_Node("text", text=data))


def _start(node: _Node) -> str:
    """A start tag written back, its attribute values escaped."""
    attrs = "".join(
        f' {name}="{html.escape(value or "", quote=True)}"' for name, value in node.attrs
    )
    return f"<{node.tag}{attrs}>"


def make_excerpt(cleaned: str, words: int = DEFAULT_EXCERPT_WORDS) -> str:
    """An excerpt of sanitised HTML: whole blocks up to about ``words`` words.

    Blocks are taken while they fit; the block that crosses the limit is taken whole
    when it ends within half as many words again, else cut at a sentence (or a word)
    boundary. Figures and images are left out (the featured image stands for them); a
    table is taken whole when it fits, else left out, never cut. Every open tag is closed.
    """
    parser = _Nodes()
    parser.feed(cleaned)
    parser.close()
    excerpt = _Excerpt(parser.nodes, words)
    for index, node in enumerate(parser.nodes):
        if excerpt.leaves_out(index, node):
            continue
        if not excerpt.take(index, node):
            break
    return excerpt.html()


class _Excerpt:
    """An excerpt being made: the HTML taken so far, the tags still open, the words counted."""

    def __init__(self, nodes: list[_Node], words: int) -> None:
        self.nodes, self.words = nodes, words
        self.out: list[str] = []
        self.open_tags: list[str] = []
        # How deep inside elements left out (figures, images, tables too long) we are.
        self.skipping = 0
        self.count = 0.0

    def leaves_out(self, index: int, node: _Node) -> bool:
        """True when ``node`` is left out: a figure or image, a table too long, or inside one."""
        if node.kind == "start" and node.tag == "table" and not self.skipping:
            if self.count + _table_words(self.nodes, index) > self.words * 1.5:
                self.skipping += 1
                return True
        elif node.kind == "end" and node.tag == "table" and self.skipping:
            self.skipping -= 1
            return True
        if node.kind == "start" and node.tag in _SKIPPED_IN_EXCERPT:
            if node.tag not in _VOID:
                self.skipping += 1
            return True
        if node.kind == "end" and node.tag in _SKIPPED_IN_EXCERPT:
            self.skipping = max(0, self.skipping - 1)
            return True
        return bool(self.skipping)

    def take(self, index: int, node: _Node) -> bool:
        """Add ``node`` to the excerpt; False once the excerpt is long enough."""
        if node.kind == "start":
            self.out.append(_start(node))
            if node.tag not in _VOID:
                self.open_tags.append(node.tag)
            return True
        if node.kind == "end":
            self._close(node.tag)
            return not (node.tag in _BLOCKS and self.count >= self.words and not self.open_tags)
        return self._text(index, node)

    def _close(self, tag: str) -> None:
        """Close ``tag`` and whatever is still open inside it (nothing when it is not open)."""
        if tag not in self.open_tags:
            return
        while self.open_tags:
            last = self.open_tags.pop()
            self.out.append(f"</{last}>")
            if last == tag:
                break

    def _text(self, index: int, node: _Node) -> bool:
        """Take text while its block fits, else cut it; False once the excerpt is full."""
        here = word_count(node.text)
        if self.count + here <= self.words or _block_fits(
            self.nodes, index, self.count, self.words
        ):
            self.out.append(html.escape(node.text, quote=False))
            self.count += here
            return True
        remaining = self.words - self.count
        if self.count and remaining < min(15, self.words / 3):
            return False  # a stub of a few words reads worse than none
        self.out.append(html.escape(_cut_text(node.text, remaining), quote=False))
        self.count = self.words
        return False

    def html(self) -> str:
        """The excerpt with every tag still open closed."""
        while self.open_tags:
            self.out.append(f"</{self.open_tags.pop()}>")
        return _EMPTY_PARAGRAPH.sub("", "".join(self.out)).strip()


def _table_words(nodes: list[_Node], index: int) -> float:
    """Words in the table that starts at ``index`` (nested tables included)."""
    depth, total = 0, 0.0
    for node in nodes[index:]:
        if node.kind == "start" and node.tag == "table":
            depth += 1
        elif node.kind == "end" and node.tag == "table":
            depth -= 1
            if depth == 0:
                break
        elif node.kind == "text":
            total += word_count(node.text)
    return total


def _block_fits(nodes: list[_Node], index: int, count: float, words: int) -> bool:
    """True when the text from ``index`` to the end of its block stays under 1.5x the limit."""
    total = count
    for node in nodes[index:]:
        if node.kind == "text":
            total += word_count(node.text)
        elif node.kind == "end" and node.tag in _BLOCKS:
            break
    return total <= words * 1.5


def html_words(cleaned: str) -> float:
    """How many words the text of sanitised HTML holds (see word_count)."""
    parser = _Nodes()
    parser.feed(cleaned)
    parser.close()
    return sum(word_count(n.text) for n in parser.nodes if n.kind == "text")
