"""The feed registry: adding (or restoring), finding, listing and removing feeds.

A feed's URL is kept in one normal spelling, so two spellings of one feed are one feed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gazette.articles.feed_documents import DEFAULT_PORTS, parse_feed
from gazette.articles.fetch import Fetched, FetchError, fetch
from gazette.articles.service import normalise_language, topic_for
from gazette.errors import GazetteError
from gazette.newsletters.service import newsletter_by_slug
from gazette.store.models import Article, Feed


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
