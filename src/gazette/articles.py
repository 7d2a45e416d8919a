"""Articles: clean what arrives, and store each article exactly once."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import nh3
from sqlalchemy import select
from sqlalchemy.orm import Session

from gazette.errors import GazetteError
from gazette.store.models import Article, Topic
from gazette.text import clean_line

# What a digest summary may keep: text structure and links, nothing that runs or styles.
ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "cite", "code", "em", "i", "li", "ol", "p",
    "pre", "q", "s", "small", "strong", "sub", "sup", "u", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "abbr": {"title"}}
URL_SCHEMES = {"http", "https", "mailto"}


@dataclass
class ArticleInput:
    """An article as it arrived, before cleaning: from a feed, JSON, or the CLI."""

    title: str
    url: str
    published_at: datetime
    summary: str = ""
    guid: str = ""
    author: str = ""
    language: str | None = None
    topics: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UpsertResult:
    """The stored article's id and whether this call added it (False: seen before)."""

    article_id: int
    created: bool


def clean_html(html: str) -> str:
    """Sanitise feed HTML against the allow-list: no script, style, handlers or bad URLs."""
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
    ).strip()


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
    """Hash of title and date: the last resort for recognising an article seen before."""
    key = f"{title.casefold()}\x00{published_at.astimezone(UTC).isoformat()}"
    return hashlib.sha256(key.encode()).hexdigest()


def _topics(session: Session, names: list[str]) -> list[Topic]:
    found: dict[str, Topic] = {}
    for name in names:
        label = clean_line(name, 200)
        slug = slugify(label)
        if not slug or slug in found:
            continue
        topic = session.scalar(select(Topic).where(Topic.slug == slug))
        if topic is None:
            topic = Topic(slug=slug, name=label)
            session.add(topic)
        found[slug] = topic
    return list(found.values())


def upsert_article(
    session: Session, item: ArticleInput, feed_id: int | None = None
) -> UpsertResult:
    """Store ``item`` once: match by guid, then link, then title and date; update in place.

    An article seen again keeps its id, so an issue that already carried it never
    carries it again.
    """
    title = clean_line(item.title)
    if not title:
        raise GazetteError(f"The article at {item.url!r} has no title.")
    url = check_url(item.url)
    if item.published_at.tzinfo is None:
        raise GazetteError(f"The article {title!r} has a date without a time zone.")
    published = item.published_at.astimezone(UTC)
    guid = clean_line(item.guid, 2000) or url
    digest = fingerprint(title, published)
    article = (
        session.scalar(select(Article).where(Article.guid == guid))
        or session.scalar(select(Article).where(Article.url == url).limit(1))
        or session.scalar(select(Article).where(Article.fingerprint == digest).limit(1))
    )
    created = article is None
    if article is None:
        article = Article(guid=guid, feed_id=feed_id)
        session.add(article)
    article.url = url
    article.title = title
    article.summary = clean_html(item.summary)
    article.author = clean_line(item.author, 300)
    article.language = (item.language or "").split("-")[0].lower() or None
    article.fingerprint = digest
    article.published_at = published
    article.topics = _topics(session, item.topics)
    session.flush()
    return UpsertResult(article.id, created)
