"""Articles: clean what arrives, and store each article exactly once."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from gazette.articles.html import ALLOWED_ATTRIBUTES as ALLOWED_ATTRIBUTES
from gazette.articles.html import ALLOWED_TAGS as ALLOWED_TAGS
from gazette.articles.html import (
    LINK_SCHEMES,
    clean_article_html,
    first_image,
    make_excerpt,
)
from gazette.errors import GazetteError
from gazette.store.models import Article, Topic, TopicAlias, article_feed
from gazette.text import clean_line

# What a stored summary or content may keep: see article_html (re-exported here).
URL_SCHEMES = LINK_SCHEMES
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass
class ArticleInput:
    """An article as it arrived, before cleaning: from a feed, JSON, or the CLI."""

    title: str
    url: str
    published_at: datetime
    summary: str = ""
    guid: str = ""
    author: str = ""
    # The entry's own language; None lets the feed's (or the operator's) apply.
    language: str | None = None
    topics: list[str] = field(default_factory=list)
    # Whether topics first seen here start offered to readers: the operator's (CLI, JSON
    # files) do; a feed's categories do not until the operator offers them.
    topics_offered: bool = True
    # The language the feed document declares, used when neither the entry nor the
    # operator's --language for the feed says one.
    feed_language: str | None = None
    # The full post (content:encoded), when the source has more than the excerpt.
    content: str = ""
    # The featured image (media:content, an enclosure, the page's og:image), if known;
    # "" when it was looked for and there is none, None when nobody looked.
    image_url: str | None = None
    image_alt: str = ""


@dataclass(frozen=True)
class UpsertResult:
    """The stored article's id, whether this call added it, and whether anything changed."""

    article_id: int
    created: bool
    changed: bool


def clean_html(html: str, base: str | None = None) -> str:
    """Sanitise feed HTML against the allow-list, links and images made absolute."""
    return clean_article_html(html, base)


def slugify(text: str) -> str:
    """Return a topic slug: lower-case words joined by hyphens, any script kept."""
    words = re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower())
    return "-".join(words)[:80]


def check_url(url: str, field_name: str = "url") -> str:
    """Return ``url`` stripped, or raise GazetteError when it is not an http(s) URL."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise GazetteError(f"The article's {field_name} {url!r} is not an http(s) URL.")
    return url


def fingerprint(title: str, published_at: datetime) -> str:
    """Hash of title and date: kept to spot likely duplicates, never to merge articles."""
    key = f"{title.casefold()}\x00{published_at.astimezone(UTC).isoformat()}"
    return hashlib.sha256(key.encode()).hexdigest()


def find_topic(session: Session, slug: str) -> Topic | None:
    """The topic with this slug, or the one a topic of this slug was merged into."""
    topic = session.scalar(select(Topic).where(Topic.slug == slug))
    if topic is None:
        topic = session.scalar(
            select(Topic)
            .join(TopicAlias, TopicAlias.topic_id == Topic.id)
            .where(TopicAlias.slug == slug)
        )
    return topic


def topic_for(session: Session, name: str, *, offered: bool = True) -> Topic:
    """Return the topic called ``name`` (by slug, or a slug merged into it), created anew.

    ``offered``: whether a topic created here is offered to readers. The operator's own
    topics are; a feed's categories are not until the operator offers them.
    """
    label = clean_line(name, 200)
    slug = slugify(label)
    if not slug:
        raise GazetteError(f"Topic {name!r} has no letters or digits to name it by.")
    topic = find_topic(session, slug)
    if topic is None:
        topic = Topic(slug=slug, name=label, offered=offered)
        session.add(topic)
        session.flush()
    return topic


def _topics(session: Session, names: list[str], *, offered: bool) -> list[Topic]:
    found: dict[str, Topic] = {}
    for name in names:
        if slugify(clean_line(name, 200)):  # a category of punctuation alone is dropped
            topic = topic_for(session, name, offered=offered)
            found.setdefault(topic.slug, topic)
    return list(found.values())


def normalise_url(url: str) -> str:
    """The URL as an identity: scheme and host in lower case, no default port, no fragment.

    The path and query keep their case: on most servers they name different pages.
    """
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    try:
        port = parts.port if parts.port not in (None, DEFAULT_PORTS.get(scheme)) else None
    except ValueError:  # a port that is not a number: leave the URL as it came
        return url.strip()
    netloc = f"{host}:{port}" if port else host
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def is_global_guid(guid: str) -> bool:
    """True when a guid names itself everywhere: a scheme and a host, or a urn:/tag: URI."""
    parts = urlsplit(guid)
    return bool(parts.scheme and parts.netloc) or parts.scheme.lower() in ("urn", "tag")


def identity_key(guid: str, url: str, feed_id: int | None) -> str:
    """What makes two sightings one article (migration 0006 keeps a frozen copy).

    A global guid is the same post wherever it is seen (a site's main feed and a
    category feed); a bare guid ("123") only within its feed, since two sites may both
    number their posts; with no guid, the normalised URL.
    """
    if not guid:
        return normalise_url(url)
    if is_global_guid(guid):
        return guid
    return f"feed:{feed_id}:{guid}" if feed_id is not None else f"local:{guid}"


def item_key(item: ArticleInput, feed_id: int | None) -> str:
    """The identity key an incoming item would be stored under (see identity_key)."""
    return identity_key(clean_line(item.guid, 2000), item.url, feed_id)


def normalise_language(tag: str | None) -> str | None:
    """A language tag's primary subtag in lower case (en-US and en_GB are en); None if none."""
    primary = re.split(r"[-_]", (tag or "").strip(), maxsplit=1)[0].lower()
    return primary if re.fullmatch(r"[a-z]{2,8}", primary) else None


def _article_for(session: Session, key: str, url: str, exclude: Collection[int]) -> Article | None:
    """The stored article an item is a sighting of: by identity key, else by URL.

    ``exclude`` holds the articles other items of the same document already matched:
    two items of one document are never one article.
    """
    article = session.scalar(select(Article).where(Article.identity_key == key))
    if article is not None:
        return article if article.id not in exclude else None
    for candidate in session.scalars(
        select(Article)
        .where(Article.url.in_({url, normalise_url(url)}), Article.id.not_in(exclude))
        .order_by(Article.id)
        .limit(1)
    ):
        return candidate
    return None


def upsert_article(
    session: Session,
    item: ArticleInput,
    feed_id: int | None = None,
    *,
    exclude: Collection[int] = (),
    feed_language: str | None = None,
) -> UpsertResult:
    """Store ``item`` once: match by identity key (guid), then by URL; update in place.

    An article seen again keeps its id and its first publication date, so an update
    never makes it new again; its topics become the union of every sighting's, and the
    feeds it was seen in are recorded (article_feed). Title and date alone never match.
    ``feed_language`` is the feed's language (the operator's override, else declared),
    used when the entry names none.
    """
    title, url, published = _checked(item)
    guid = clean_line(item.guid, 2000)
    key = identity_key(guid, url, feed_id)
    article = _article_for(session, key, url, exclude)
    # Topics first: looking them up flushes, and a new article must not be flushed
    # before its fields are set.
    topics = _topics(session, item.topics, offered=item.topics_offered)
    language = normalise_language(item.language) or normalise_language(feed_language)
    created = article is None
    if article is None:
        article = Article(
            identity_key=key, guid=guid or url, feed_id=feed_id, published_at=published
        )
        session.add(article)
    values = _values(item, title, url, published, language)
    if item.image_url is None and not created and article.image_url is not None:
        # Nobody looked for an image this time: keep what an earlier look found.
        del values["image_url"], values["image_alt"]
    if language is None and not created:
        del values["language"]  # the entry names none: keep the one stored
    changed = _apply(session, article, values, topics, created)
    if feed_id is not None:
        _record_feed(session, article.id, feed_id)
    return UpsertResult(article.id, created, changed)


def _checked(item: ArticleInput) -> tuple[str, str, datetime]:
    """The item's title, normalised URL and UTC date; GazetteError when one is unusable."""
    title = clean_line(item.title)
    if not title:
        raise GazetteError(f"The article at {item.url!r} has no title.")
    url = normalise_url(check_url(item.url))
    if item.published_at.tzinfo is None:
        raise GazetteError(f"The article {title!r} has a date without a time zone.")
    return title, url, item.published_at.astimezone(UTC)


def _values(
    item: ArticleInput, title: str, url: str, published: datetime, language: str | None
) -> dict[str, object]:
    """The fields an item gives its article; the caller drops those an update must keep."""
    return {
        "url": url,
        "title": title,
        "author": clean_line(item.author, 300),
        "fingerprint": fingerprint(title, published),
        **_bodies(item, url),
        "language": language,
    }


def _apply(
    session: Session,
    article: Article,
    values: dict[str, object],
    topics: list[Topic],
    created: bool,
) -> bool:
    """Write the values that differ and the topics not yet carried; True if anything did."""
    changed = created or any(getattr(article, k) != v for k, v in values.items())
    known = {t.slug for t in article.topics} if not created else set()
    added_topics = [t for t in topics if t.slug not in known]
    changed = changed or bool(added_topics)
    if changed:
        for name, value in values.items():
            setattr(article, name, value)
        article.topics = [*article.topics, *added_topics] if not created else topics
        session.flush()
    return changed


def _bodies(item: ArticleInput, url: str) -> dict[str, object]:
    """The stored excerpt, full content and featured image of an item, cleaned.

    The excerpt is the source's own (description/summary) when it has one that is not
    the whole post, else made from the content; relative links resolve against the
    article's URL. The featured image falls back to the first image of the post.
    """
    content = clean_html(item.content, url)
    summary = clean_html(item.summary, url)
    if content and summary == content:
        summary = ""  # feedparser repeats the content as the summary when there is none
    if not summary and content:
        summary = make_excerpt(content)
    image_url, image_alt = item.image_url, clean_line(item.image_alt, 500)
    if not image_url:
        found = first_image(content or summary)
        if found is not None:
            image_url, image_alt = found[0], clean_line(found[1], 500)
    if image_url and urlsplit(image_url).scheme != "https":
        image_url = None if item.image_url is None else ""
    return {
        "summary": summary,
        "content": content,
        "image_url": image_url[:2000] if image_url else image_url,
        "image_alt": image_alt if image_url else "",
    }


def _record_feed(session: Session, article_id: int, feed_id: int) -> None:
    """Remember that the article was seen in the feed (once per pair)."""
    seen = session.scalar(
        select(article_feed.c.article_id).where(
            article_feed.c.article_id == article_id, article_feed.c.feed_id == feed_id
        )
    )
    if seen is None:
        session.execute(insert(article_feed).values(article_id=article_id, feed_id=feed_id))


def article_by_id(session: Session, article_id: int) -> Article:
    """Return the article, or raise GazetteError naming the id."""
    article = session.get(Article, article_id)
    if article is None:
        raise GazetteError(f"There is no article {article_id}.")
    return article


def withdraw_article(session: Session, article_id: int, now: datetime) -> bool:
    """Withdraw an article: no future issue carries it. False when it already was."""
    article = article_by_id(session, article_id)
    if article.withdrawn_at is not None:
        return False
    article.withdrawn_at = now
    session.flush()
    return True


def parse_date(value: str, field_name: str = "published") -> datetime:
    """Read an ISO 8601 date or time; one without a zone is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise GazetteError(
            f"The article's {field_name} {value!r} is not an ISO 8601 date (2026-11-28T09:00:00Z)."
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
