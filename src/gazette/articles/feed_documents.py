"""Reading one RSS or Atom document: its items as article inputs, or why it is no feed.

Parsing only: nothing here touches the database or the network, so polling, the
`feeds add` check and the demo all read a document the same way.
"""

from __future__ import annotations

import calendar
import html
import re
import xml.sax
from datetime import UTC, datetime
from html.entities import name2codepoint
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.sax import SAXParseException

import feedparser
import nh3

from gazette.articles.service import ArticleInput, check_url
from gazette.errors import GazetteError
from gazette.text import clean_line

FEED_TYPES = ("application/rss+xml", "application/atom+xml")
DEFAULT_PORTS = {"http": 80, "https": 443}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif")
_ONLY_MARKUP = re.compile(r"(?:\s*<[^<>]*>)+\s*")
_NAMED_ENTITY = re.compile(rb"&([A-Za-z][A-Za-z0-9]{0,31});")
_XML_ENTITIES = {"amp", "lt", "gt", "quot", "apos"}
_HTML_START = re.compile(rb"<!doctype\s+html|<html[\s>]", re.IGNORECASE)


def _when(entry: Any) -> datetime | None:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    if parsed is None:
        return None
    # feedparser normalises every date to a UTC struct_time.
    return datetime.fromtimestamp(calendar.timegm(parsed), UTC)


def _cut_short(problem: SAXParseException) -> bool:
    message = problem.getMessage()
    return any(sign in message for sign in ("no element found", "unclosed", "unexpected end"))


def _where(problem: object) -> str:
    """Where and why the XML parser stopped, as a person reads it (line, 1-based column)."""
    if isinstance(problem, SAXParseException):
        # expat counts columns from 0; editors and people count them from 1.
        line, column = problem.getLineNumber(), (problem.getColumnNumber() or 0) + 1
        return f"line {line}, column {column}: {problem.getMessage()}"
    return str(problem) if problem else "no RSS or Atom root element"


def _spelled(match: re.Match[bytes]) -> bytes:
    """An HTML named entity (&nbsp;) as the character reference XML knows (&#160;)."""
    name = match.group(1).decode("ascii")
    code = name2codepoint.get(name)
    return b"&#%d;" % code if code and name not in _XML_ENTITIES else match.group(0)


def _fault_beyond_entities(problem: object, document: bytes) -> object:
    """The fault of a document with no items, or None when its only fault is HTML entities.

    An RSS feed may use &nbsp; and the like, which the lenient parser mends: with no
    items, it is an empty feed. The strict parser reports the first fault alone, so such
    a document is read again with its HTML entities spelt as character references; what
    that finds (a cut, a broken tag) is the fault, on the same line.
    """
    if not isinstance(problem, SAXParseException) or "undefined entity" not in problem.getMessage():
        return problem
    # With no entity declared there is nothing to expand (no "billion laughs"), and
    # xml.sax fetches no external entity by default: the parse below is safe.
    if b"<!ENTITY" in document:
        return problem
    spelt = _NAMED_ENTITY.sub(_spelled, document)
    try:
        xml.sax.parseString(spelt, xml.sax.ContentHandler())  # noqa: S317 - see above
    except SAXParseException as later:
        return later
    except (xml.sax.SAXException, ValueError, LookupError):
        return problem
    return None


class _FeedLinks(HTMLParser):
    """Collects the feeds an HTML page advertises with <link rel="alternate" type=...>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Keep the href of each alternate link whose type is RSS or Atom."""
        if tag != "link":
            return
        values = {name: value or "" for name, value in attrs}
        kind = values.get("type", "").split(";")[0].strip().lower()
        href = values.get("href", "").strip()
        if "alternate" in values.get("rel", "").lower().split() and kind in FEED_TYPES and href:
            self.hrefs.append(href)


def _advertised_feed(document: bytes, source: str) -> str | None:
    """The first RSS or Atom feed an HTML page links, as an absolute http(s) URL."""
    finder = _FeedLinks()
    finder.feed(document.decode("utf-8", errors="replace"))
    finder.close()
    for href in finder.hrefs:
        url = urljoin(source, href)
        if urlsplit(url).scheme in ("http", "https"):
            return url
    return None


def _not_a_feed(document: bytes, source: str, problem: object, content_type: str | None) -> str:
    """One sentence saying what the document is instead of a feed (JSON, HTML, other)."""
    start = document.lstrip(b"\xef\xbb\xbf \t\r\n")
    if start[:1] in (b"{", b"[") or content_type in ("application/json", "application/feed+json"):
        return f"{source} is a JSON document, not RSS or Atom (JSON Feed is not supported)."
    if content_type in ("text/html", "application/xhtml+xml") or _HTML_START.search(start[:4096]):
        linked = _advertised_feed(document, source)
        if linked:
            return f"{source} is an HTML page, not a feed; the page links the feed {linked}."
        return f"{source} is an HTML page, not a feed."
    return f"{source} is not a readable RSS or Atom feed ({_where(problem)})."


def _check_readable(parsed: Any, document: bytes, source: str, content_type: str | None) -> None:
    """Raise GazetteError naming ``source`` when the parsed document is not a usable feed."""
    # feedparser flags only malformed XML; a well-formed page that is not a feed (an
    # HTML page where the feed used to be) comes back with no version and no entries.
    problem = parsed.get("bozo_exception")
    if not parsed.get("version"):
        raise GazetteError(_not_a_feed(document, source, problem, content_type))
    if parsed.get("bozo") and not parsed.entries:
        fault = _fault_beyond_entities(problem, document)
        if fault is not None:
            raise GazetteError(f"{source} is not a readable RSS or Atom feed ({_where(fault)}).")
    # Feeds in the wild often have a stray "&" that the lenient parser repairs; a
    # document that stops early is different: what it lacks cannot be repaired.
    if isinstance(problem, SAXParseException) and _cut_short(problem):
        raise GazetteError(f"{source} ends before the feed does ({_where(problem)}).")


def _rejection(entry: Any, published: datetime | None, link: str | None) -> str | None:
    """Why an entry cannot become an article (its words, for the operator), or None."""
    if not link:
        return "it has no link" if entry.get("id") else "it has no link and no guid"
    try:
        check_url(link)
    except GazetteError:
        return f"its link {clean_line(link, 200)!r} is not an http(s) URL"
    if published is None:
        return "it has no date"
    title = clean_line(_plain_title(entry))
    if not title or _ONLY_MARKUP.fullmatch(title):
        raw = str(entry.get("title", "")).lower()
        return "its title is only an image" if "<img" in raw else "it has no title"
    return None


def _rejected(number: int, entry: Any, reason: str) -> str:
    """One line naming the rejected item (its position and title or link) and why."""
    label = clean_line(str(entry.get("title") or entry.get("link") or entry.get("id") or ""), 80)
    return f"item {number} {label!r}: {reason}" if label else f"item {number}: {reason}"


def _plain_title(entry: Any) -> str:
    """The entry's title as text: Atom allows HTML titles, which must not stay markup."""
    title = str(entry.get("title", ""))
    kind = (entry.get("title_detail") or {}).get("type", "text/plain")
    if kind in ("text/html", "application/xhtml+xml"):
        title = html.unescape(nh3.clean(title, tags=set()))
    return title


def _is_image(url: str, kind: str = "", medium: str = "") -> bool:
    """True when a media element names an image (by medium, type, or file suffix)."""
    if medium:
        return medium == "image"
    if kind:
        return kind.lower().startswith("image/")
    return urlsplit(url).path.lower().endswith(_IMAGE_SUFFIXES)


def _featured_image(entry: Any) -> str | None:
    """The image the feed announces for an entry: media:content, media:thumbnail, enclosure."""
    for media in entry.get("media_content") or ():
        url = str(media.get("url") or "")
        if url and _is_image(url, str(media.get("type") or ""), str(media.get("medium") or "")):
            return url
    for thumbnail in entry.get("media_thumbnail") or ():
        if thumbnail.get("url"):
            return str(thumbnail["url"])
    for enclosure in entry.get("enclosures") or ():
        url = str(enclosure.get("href") or "")
        if url and _is_image(url, str(enclosure.get("type") or "")):
            return url
    return None


def _entry_language(entry: Any, feed_language: str | None) -> str | None:
    """The entry's own language (dc:language, or an xml:lang unlike the feed's), if any."""
    own = entry.get("language") or (entry.get("title_detail") or {}).get("language")
    return own if own and own != feed_language else None


def parse_feed(
    document: bytes,
    source: str,
    *,
    rejections: list[str] | None = None,
    content_type: str | None = None,
    base: str | None = None,
) -> list[ArticleInput]:
    """Parse RSS 0.9x/1.0/2.0 or Atom bytes, in any declared encoding, into article inputs.

    ``source`` names the document in errors and is the base of its relative URLs (the
    URL it was fetched from; ``base`` when the fetch was redirected), as is xml:base
    inside it: an item whose link is relative is stored with an absolute one. Items
    that cannot be articles (no link, an unusable link, no date, no title) are skipped,
    each with a reason appended to ``rejections``; a document that is not a feed at all
    raises GazetteError.
    """
    # No response headers go to feedparser: with them it judges the document by its
    # Content-Type; xml:base it resolves itself, the rest is resolved here.
    base_url = base or source
    parsed = feedparser.parse(document)
    _check_readable(parsed, document, source, content_type)
    feed_language = parsed.feed.get("language")
    items: list[ArticleInput] = []
    for number, entry in enumerate(parsed.entries, start=1):
        published = _when(entry)
        link = entry.get("link")
        if link and urlsplit(base_url).scheme in DEFAULT_PORTS:
            link = urljoin(base_url, link.strip())  # a relative <link> is an address too
        reason = _rejection(entry, published, link)
        # A reason is given whenever the date or the link is missing; testing them
        # again only tells the type checker so.
        if reason is not None or published is None or not link:
            if rejections is not None and reason is not None:
                rejections.append(_rejected(number, entry, reason))
            continue
        items.append(_article_input(entry, link, published, feed_language))
    return items


def _article_input(
    entry: Any, link: str, published: datetime, feed_language: str | None
) -> ArticleInput:
    """An accepted entry as an article input, its link already absolute."""
    content = entry.get("content")
    image = _featured_image(entry)
    return ArticleInput(
        title=_plain_title(entry),
        url=link,
        published_at=published,
        summary=entry.get("summary", ""),
        content=content[0].get("value", "") if content else "",
        image_url=urljoin(link, image) if image else None,
        guid=entry.get("id", ""),
        # feedparser's "author" is "Name (email)" for Atom; readers get the name.
        author=(entry.get("author_detail") or {}).get("name") or entry.get("author", ""),
        language=_entry_language(entry, feed_language),
        topics=[tag.get("term", "") for tag in entry.get("tags", [])],
        topics_offered=False,  # categories filter, but readers see them once offered
        feed_language=feed_language,
    )
