"""Feeds: turn an RSS or Atom document into clean articles and store them once."""

from __future__ import annotations

import calendar
import html
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.sax import SAXParseException

import feedparser
import nh3
from sqlalchemy import select
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
from gazette.store.models import Feed, Topic, utcnow


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


def parse_feed(document: bytes, source: str) -> list[ArticleInput]:
    """Parse RSS 0.9x/1.0/2.0 or Atom bytes, in any declared encoding, into article inputs.

    ``source`` names the document in errors. Items without a link or a date are skipped;
    a document that is not a feed at all raises GazetteError.
    """
    parsed = feedparser.parse(document)
    # feedparser flags only malformed XML; a well-formed page that is not a feed (an
    # HTML page where the feed used to be) comes back with no version and no entries.
    problem = parsed.get("bozo_exception")
    if not parsed.get("version") or (parsed.get("bozo") and not parsed.entries):
        reason = problem or "no RSS or Atom root element"
        raise GazetteError(f"{source} is not a readable RSS or Atom feed ({reason}).")
    # Feeds in the wild often have a stray "&" that the lenient parser repairs; a
    # document that stops early is different: what it lacks cannot be repaired.
    if isinstance(problem, SAXParseException) and _cut_short(problem):
        raise GazetteError(f"{source} ends before the feed does ({problem.getMessage()}).")
    feed_language = parsed.feed.get("language")
    items: list[ArticleInput] = []
    for entry in parsed.entries:
        published = _when(entry)
        link = entry.get("link")
        if published is None or not link:
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
    """What polling one feed did: its counts, or the reason it failed."""

    feed_id: int
    url: str
    not_modified: bool = False
    ingest: IngestResult | None = None
    error: str | None = None

    def summary(self) -> str:
        """One line for the operator: what changed, or why nothing could."""
        if self.error:
            return f"{self.url}: failed: {self.error}"
        if self.not_modified or self.ingest is None:
            return f"{self.url}: not modified"
        i = self.ingest
        return (
            f"{self.url}: {i.added} added, {i.updated} updated, {i.unchanged} unchanged, "
            f"{i.rejected} rejected"
        )


def add_feed(
    session: Session,
    url: str,
    *,
    topic: str | None = None,
    newsletter_slug: str | None = None,
    interval_minutes: int = 15,
    language: str | None = None,
) -> int:
    """Register a feed to poll; its items get ``topic`` as well as their own categories.

    ``language`` replaces the language the feed declares (an entry's own still wins).
    """
    url = check_url(url, "feed URL")
    if session.scalar(select(Feed.id).where(Feed.url == url)) is not None:
        raise GazetteError(f"The feed {url!r} is already registered.")
    if interval_minutes < 1:
        raise GazetteError(
            f"The poll interval must be at least one minute, not {interval_minutes}."
        )
    feed_language = normalise_language(language)
    if language is not None and feed_language is None:
        raise GazetteError(f"--language {language!r} is not a language tag (uk, en, ja-JP).")
    feed = Feed(url=url, poll_interval_seconds=interval_minutes * 60, language=feed_language)
    if topic:
        feed.topic_id = topic_for(session, topic).id
    if newsletter_slug:
        feed.newsletter_id = newsletter_by_slug(session, newsletter_slug).id
    session.add(feed)
    session.flush()
    return feed.id


def list_feeds(session: Session) -> list[Feed]:
    """Return every registered feed, oldest first."""
    return list(session.scalars(select(Feed).order_by(Feed.id)))


def due_feeds(session: Session, now: datetime) -> list[int]:
    """Return the feeds whose poll interval has passed since they were last polled."""
    due = []
    for feed in list_feeds(session):
        last = feed.last_polled_at
        if last is None or (now - last).total_seconds() >= feed.poll_interval_seconds:
            due.append(feed.id)
    return due


def poll_feed(
    sessions: sessionmaker[Session],
    feed_id: int,
    fetcher: Callable[[str, str | None, str | None], Fetched] = fetch,
) -> PollResult:
    """Fetch one feed and store its new and changed articles, recording any failure.

    The fetch happens outside any transaction; a failure (network, HTTP, not a feed) is
    written on the feed for `feeds list` and never raised, so one bad feed cannot stop
    the others.
    """
    with sessions() as session:
        feed = session.get_one(Feed, feed_id)
        url, etag, modified, topic_id = feed.url, feed.etag, feed.last_modified, feed.topic_id
    now = utcnow()
    try:
        fetched = fetcher(url, etag, modified)
        items = None if fetched.content is None else parse_feed(fetched.content, url)
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
        topic = session.get(Topic, topic_id) if topic_id else None
        if topic is not None:
            for item in items:
                item.topics.append(topic.name)
        result = store_items(session, items, feed_id)
    return PollResult(feed_id, url, ingest=result)
