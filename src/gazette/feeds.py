"""Feeds: turn an RSS or Atom document into clean articles and store them once."""

from __future__ import annotations

import calendar
import html
import re
import xml.sax
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.entities import name2codepoint
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit
from xml.sax import SAXParseException

import feedparser
import nh3
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gazette.articles import (
    ArticleInput,
    check_url,
    item_key,
    normalise_language,
    topic_for,
    upsert_article,
)
from gazette.errors import GazetteError
from gazette.fetch import Fetched, FetchError, fetch
from gazette.newsletters import newsletter_by_slug
from gazette.store.models import Article, Feed, Topic, utcnow
from gazette.text import clean_line

FEED_TYPES = ("application/rss+xml", "application/atom+xml")
DEFAULT_PORTS = {"http": 80, "https": 443}
# How many rejection reasons a feed keeps for `feeds list`; the rest are counted.
MAX_REASONS = 20
_ONLY_MARKUP = re.compile(r"(?:\s*<[^<>]*>)+\s*")
_NAMED_ENTITY = re.compile(rb"&([A-Za-z][A-Za-z0-9]{0,31});")
_XML_ENTITIES = {"amp", "lt", "gt", "quot", "apos"}
_HTML_START = re.compile(rb"<!doctype\s+html|<html[\s>]", re.IGNORECASE)


@dataclass(frozen=True)
class IngestResult:
    """Counts of one ingest: articles added, updated, seen unchanged, and items rejected."""

    added: int
    updated: int
    unchanged: int
    rejected: int


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
) -> list[ArticleInput]:
    """Parse RSS 0.9x/1.0/2.0 or Atom bytes, in any declared encoding, into article inputs.

    ``source`` names the document in errors. Items that cannot be articles (no link, an
    unusable link, no date, no title) are skipped, each with a reason appended to
    ``rejections``; a document that is not a feed at all raises GazetteError.
    """
    parsed = feedparser.parse(document)
    _check_readable(parsed, document, source, content_type)
    feed_language = parsed.feed.get("language")
    items: list[ArticleInput] = []
    for number, entry in enumerate(parsed.entries, start=1):
        published = _when(entry)
        link = entry.get("link")
        reason = _rejection(entry, published, link)
        # A reason is given whenever the date or the link is missing; testing them
        # again only tells the type checker so.
        if reason is not None or published is None or not link:
            if rejections is not None and reason is not None:
                rejections.append(_rejected(number, entry, reason))
            continue
        content = entry.get("content")
        summary = content[0].get("value", "") if content else entry.get("summary", "")
        items.append(
            ArticleInput(
                title=_plain_title(entry),
                url=link,
                published_at=published,
                summary=summary,
                guid=entry.get("id", ""),
                # feedparser's "author" is "Name (email)" for Atom; readers get the name.
                author=(entry.get("author_detail") or {}).get("name") or entry.get("author", ""),
                language=_entry_language(entry, feed_language),
                topics=[tag.get("term", "") for tag in entry.get("tags", [])],
                feed_language=feed_language,
            )
        )
    return items


def ingest_document(
    session: Session, document: bytes, source: str, feed_id: int | None = None
) -> IngestResult:
    """Parse a feed document and store its articles once each; return what changed."""
    return store_items(session, parse_feed(document, source), feed_id)


def store_items(
    session: Session, items: list[ArticleInput], feed_id: int | None = None
) -> IngestResult:
    """Store parsed items once each (an item that cannot be stored is counted, not raised).

    Items of one document are never merged into one article; a document that repeats
    a guid keeps its first occurrence. The feed's --language, when set, replaces the
    language the document declares (an entry's own language still wins).
    """
    added = updated = unchanged = rejected = 0
    feed = session.get(Feed, feed_id) if feed_id is not None else None
    override = feed.language if feed is not None else None
    matched: set[int] = set()
    keys: set[str] = set()
    for item in items:
        key = item_key(item, feed_id)
        if key in keys:
            unchanged += 1
            continue
        keys.add(key)
        try:
            with session.begin_nested():
                result = upsert_article(
                    session, item, feed_id=feed_id, exclude=matched,
                    feed_language=override or item.feed_language,
                )  # fmt: skip
        except GazetteError:
            rejected += 1
            continue
        matched.add(result.article_id)
        if result.created:
            added += 1
        elif result.changed:
            updated += 1
        else:
            unchanged += 1
    return IngestResult(added, updated, unchanged, rejected)


@dataclass(frozen=True)
class PollResult:
    """What polling one feed did: its counts and rejected items, or the reason it failed."""

    feed_id: int
    url: str
    not_modified: bool = False
    ingest: IngestResult | None = None
    error: str | None = None
    rejections: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """One line for the operator: what changed, or why nothing could.

        A failure is the error's own sentence, which names the URL already.
        """
        if self.error:
            return f"Feed {self.feed_id} failed: {self.error}"
        if self.not_modified or self.ingest is None:
            return f"{self.url}: not modified"
        i = self.ingest
        return (
            f"{self.url}: {i.added} added, {i.updated} updated, {i.unchanged} unchanged, "
            f"{i.rejected + len(self.rejections)} rejected"
        )


def normalise_feed_url(url: str) -> str:
    """The one spelling of a feed URL, so that two spellings of one feed compare equal.

    Scheme and host in lower case, no default port, "/" for an empty path, no fragment;
    path and query are kept as they are (servers may tell their case apart).
    """
    given = url.strip()
    parts = urlsplit(given)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise GazetteError(f"The feed URL {given!r} is not an http(s) URL.")
    try:
        port = parts.port
    except ValueError:
        raise GazetteError(f"The feed URL {given!r} has an invalid port.") from None
    host = parts.hostname  # urlsplit lower-cases it and drops IPv6 brackets
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def _same_feed(session: Session, url: str) -> Feed | None:
    """The registered feed (removed or not) whose URL normalises to ``url``, if any."""
    # Rows stored before URLs were normalised are compared by their normal form too;
    # an installation has tens of feeds, not millions.
    for feed in list_feeds(session):
        try:
            if normalise_feed_url(feed.url) == url:
                return feed
        except GazetteError:
            continue
    return None


def prepare_feed_url(session: Session, url: str) -> tuple[str, int | None]:
    """Normalise ``url`` and refuse a second copy of an active feed.

    Returns the normal URL and the id of the removed feed that adding it restores (or
    None), so a caller can check the feed over the network before writing anything.
    """
    normal = normalise_feed_url(url)
    existing = _same_feed(session, normal)
    if existing is None:
        return normal, None
    if existing.removed_at is None:
        spelt = "" if existing.url == normal else f" as {existing.url}"
        raise GazetteError(f"The feed {normal} is already registered{spelt} (feed {existing.id}).")
    return normal, existing.id


def check_feed(url: str, fetcher: Callable[[str, str | None, str | None], Fetched] = fetch) -> int:
    """Fetch ``url`` once and parse it; return its item count or raise GazetteError why not.

    Run before a feed is added, so a dead port, a 404 or an HTML page is refused then
    rather than failing every poll afterwards.
    """
    try:
        fetched = fetcher(url, None, None)
    except FetchError as exc:
        raise GazetteError(str(exc)) from None
    return len(parse_feed(fetched.content or b"", url, content_type=fetched.content_type))


def add_feed(
    session: Session,
    url: str,
    *,
    topic: str | None = None,
    newsletter_slug: str | None = None,
    interval_minutes: int | None = None,
    language: str | None = None,
) -> int:
    """Register a feed to poll; its items get ``topic`` as well as their own categories.

    The URL is stored normalised; a second spelling of an active feed is refused, and a
    removed feed's URL restores it (its articles were kept) with the options given.
    ``interval_minutes`` defaults to 15 for a new feed and keeps a restored one's.
    ``language`` replaces the language the feed declares (an entry's own still wins).
    """
    url, restoring = prepare_feed_url(session, url)
    if interval_minutes is not None and interval_minutes < 1:
        raise GazetteError(
            f"The poll interval must be at least one minute, not {interval_minutes}."
        )
    feed_language = normalise_language(language)
    if language is not None and feed_language is None:
        raise GazetteError(f"--language {language!r} is not a language tag (uk, en, ja-JP).")
    if restoring is not None:
        feed = session.get_one(Feed, restoring)
        feed.url, feed.removed_at = url, None
    else:
        feed = Feed(url=url, poll_interval_seconds=15 * 60)
        session.add(feed)
    if interval_minutes is not None:
        feed.poll_interval_seconds = interval_minutes * 60
    if language is not None:
        feed.language = feed_language
    if topic:
        feed.topic_id = topic_for(session, topic).id
    if newsletter_slug:
        feed.newsletter_id = newsletter_by_slug(session, newsletter_slug).id
    session.flush()
    return feed.id


def feed_by_id(session: Session, feed_id: int) -> Feed:
    """Return feed ``feed_id`` or raise GazetteError naming the id."""
    feed = session.get(Feed, feed_id)
    if feed is None:
        raise GazetteError(f"There is no feed {feed_id}.")
    return feed


def find_feed(session: Session, reference: str) -> Feed:
    """Return the feed an operator named by its id or its URL (any spelling of it)."""
    reference = reference.strip()
    if reference.isdigit():
        return feed_by_id(session, int(reference))
    try:
        feed = _same_feed(session, normalise_feed_url(reference))
    except GazetteError:
        feed = None
    if feed is None:
        raise GazetteError(f"There is no feed {reference!r} (give its id or its URL).")
    return feed


def _removed_sentence(feed: Feed) -> str:
    """Why a removed feed is not polled, and how to bring it back."""
    when = feed.removed_at.date().isoformat() if feed.removed_at else "earlier"
    return (
        f"Feed {feed.id} ({feed.url}) was removed on {when} and is not polled; "
        f"`gazette feeds add {feed.url}` restores it."
    )


def pollable_feeds(session: Session, feed_ids: list[int]) -> list[int]:
    """Check that each id names a feed that is not removed; return them in order.

    Every id is checked before any feed is polled, so a typo polls nothing.
    """
    for feed_id in feed_ids:
        feed = feed_by_id(session, feed_id)
        if feed.removed_at is not None:
            raise GazetteError(_removed_sentence(feed))
    return feed_ids


@dataclass(frozen=True)
class Removal:
    """What `feeds remove` did: the feed, when it was removed, and how many articles stay."""

    feed_id: int
    url: str
    removed_at: datetime
    articles: int
    already: bool


def remove_feed(session: Session, reference: str, now: datetime) -> Removal:
    """Stop polling a feed (named by id or URL) and keep its articles and their identity.

    Soft: the row stays, so its articles keep their feed and adding the URL again
    restores it. Removing a removed feed changes nothing.
    """
    feed = find_feed(session, reference)
    already = feed.removed_at is not None
    if feed.removed_at is None:
        feed.removed_at = now
        session.flush()
    count = session.scalar(select(func.count()).where(Article.feed_id == feed.id)) or 0
    return Removal(feed.id, feed.url, feed.removed_at or now, count, already)


def list_feeds(session: Session) -> list[Feed]:
    """Return every registered feed, removed ones included, oldest first."""
    return list(session.scalars(select(Feed).order_by(Feed.id)))


def active_feeds(session: Session) -> list[int]:
    """Return the ids of the feeds that are polled (not removed), oldest first."""
    query = select(Feed.id).where(Feed.removed_at.is_(None)).order_by(Feed.id)
    return list(session.scalars(query))


def due_feeds(session: Session, now: datetime) -> list[int]:
    """Return the active feeds whose poll interval has passed since they were last polled."""
    due = []
    for feed in list_feeds(session):
        if feed.removed_at is not None:
            continue
        last = feed.last_polled_at
        if last is None or (now - last).total_seconds() >= feed.poll_interval_seconds:
            due.append(feed.id)
    return due


def _reasons(rejections: list[str]) -> str | None:
    """The rejection lines kept on the feed: the first MAX_REASONS and a count of the rest."""
    if not rejections:
        return None
    kept = rejections[:MAX_REASONS]
    if len(rejections) > MAX_REASONS:
        kept.append(f"and {len(rejections) - MAX_REASONS} more")
    return "\n".join(kept)


def poll_feed(
    sessions: sessionmaker[Session],
    feed_id: int,
    fetcher: Callable[[str, str | None, str | None], Fetched] = fetch,
) -> PollResult:
    """Fetch one feed and store its new and changed articles, recording any failure.

    The fetch happens outside any transaction; a failure (network, HTTP, not a feed) is
    written on the feed for `feeds list` and never raised, so one bad feed cannot stop
    the others. A removed feed is not fetched (a poll queued before its removal).
    """
    with sessions() as session:
        feed = feed_by_id(session, feed_id)
        url, etag, modified, topic_id = feed.url, feed.etag, feed.last_modified, feed.topic_id
        if feed.removed_at is not None:
            return PollResult(feed_id, url, error=_removed_sentence(feed))
    now = utcnow()
    rejections: list[str] = []
    try:
        fetched = fetcher(url, etag, modified)
        items = (
            None
            if fetched.content is None
            else parse_feed(
                fetched.content, url, rejections=rejections, content_type=fetched.content_type
            )
        )
    except (FetchError, GazetteError) as exc:
        with sessions() as session, session.begin():
            feed = session.get_one(Feed, feed_id)
            feed.last_polled_at, feed.last_error = now, str(exc)
        return PollResult(feed_id, url, error=str(exc))
    with sessions() as session, session.begin():
        feed = session.get_one(Feed, feed_id)
        feed.last_polled_at, feed.last_error = now, None
        feed.etag, feed.last_modified = fetched.etag, fetched.last_modified
        if items is None:
            return PollResult(feed_id, url, not_modified=True)
        feed.last_rejections = _reasons(rejections)
        topic = session.get(Topic, topic_id) if topic_id else None
        if topic is not None:
            for item in items:
                item.topics.append(topic.name)
        result = store_items(session, items, feed_id)
    return PollResult(feed_id, url, ingest=result, rejections=tuple(rejections))
