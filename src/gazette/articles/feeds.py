"""Polling feeds and storing what they hold: which feeds are due, one poll, one ingest.

A poll fetches outside any transaction and records a failure on the feed rather than
raising it, so one bad feed never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from gazette.articles.feed_documents import parse_feed
from gazette.articles.feed_registry import feed_by_id, list_feeds
from gazette.articles.fetch import Fetched, FetchError, fetch, fetch_page
from gazette.articles.page_images import look_up_page_images
from gazette.articles.service import ArticleInput, item_key, upsert_article
from gazette.errors import GazetteError
from gazette.store.models import Feed, Topic, utcnow

# How many rejection reasons a feed keeps for `feeds list`; the rest are counted.
MAX_REASONS = 20


@dataclass(frozen=True)
class IngestResult:
    """Counts of one ingest: articles added, updated, seen unchanged, and items rejected."""

    added: int
    updated: int
    unchanged: int
    rejected: int


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


@dataclass(frozen=True)
class _PollTarget:
    """What a poll needs to know about its feed, read before the fetch."""

    url: str
    etag: str | None
    modified: str | None
    topic_id: int | None


def poll_feed(
    sessions: sessionmaker[Session],
    feed_id: int,
    fetcher: Callable[[str, str | None, str | None], Fetched] = fetch,
    page_fetcher: Callable[[str], Fetched] = fetch_page,
) -> PollResult:
    """Fetch one feed and store its new and changed articles, recording any failure.

    The fetch happens outside any transaction; a failure (network, HTTP, not a feed) is
    written on the feed for `feeds list` and never raised, so one bad feed cannot stop
    the others. A removed feed is not fetched (a poll queued before its removal).
    """
    with sessions() as session:
        feed = feed_by_id(session, feed_id)
        if feed.removed_at is not None:
            return PollResult(feed_id, feed.url, error=_removed_sentence(feed))
        target = _PollTarget(feed.url, feed.etag, feed.last_modified, feed.topic_id)
    now = utcnow()
    rejections: list[str] = []
    try:
        fetched, items = _fetch_items(target, fetcher, rejections)
    except (FetchError, GazetteError) as exc:
        with sessions() as session, session.begin():
            feed = session.get_one(Feed, feed_id)
            feed.last_polled_at, feed.last_error = now, str(exc)
        return PollResult(feed_id, target.url, error=str(exc))
    if items:
        # Pages are read between transactions: a slow site holds no lock.
        with sessions() as session:
            look_up_page_images(session, items, feed_id, fetched.url or target.url, page_fetcher)
    with sessions() as session, session.begin():
        return _record_poll(session, feed_id, target, fetched, items, rejections, now)


def _fetch_items(
    target: _PollTarget,
    fetcher: Callable[[str, str | None, str | None], Fetched],
    rejections: list[str],
) -> tuple[Fetched, list[ArticleInput] | None]:
    """Fetch the feed with its validators and parse it; None for items when not modified."""
    url = target.url
    fetched = fetcher(url, target.etag, target.modified)
    if fetched.content is None:
        return fetched, None
    items = parse_feed(
        fetched.content, url, rejections=rejections, content_type=fetched.content_type,
        base=fetched.content_location or fetched.url or url,
    )  # fmt: skip
    return fetched, items


def _record_poll(
    session: Session,
    feed_id: int,
    target: _PollTarget,
    fetched: Fetched,
    items: list[ArticleInput] | None,
    rejections: list[str],
    now: datetime,
) -> PollResult:
    """Write a successful poll on the feed and store its items (in the caller's transaction)."""
    feed = session.get_one(Feed, feed_id)
    feed.last_polled_at, feed.last_error = now, None
    feed.etag, feed.last_modified = fetched.etag, fetched.last_modified
    if items is None:
        return PollResult(feed_id, target.url, not_modified=True)
    feed.last_rejections = _reasons(rejections)
    topic = session.get(Topic, target.topic_id) if target.topic_id else None
    if topic is not None:
        for item in items:
            # By slug: the operator may have renamed it since (the name is a label).
            item.topics.append(topic.slug)
    result = store_items(session, items, feed_id)
    return PollResult(feed_id, target.url, ingest=result, rejections=tuple(rejections))
