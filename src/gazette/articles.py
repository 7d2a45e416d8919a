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
    """The stored article's id, whether this call added it, and whether anything changed."""

    article_id: int
    created: bool
    changed: bool


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


def topic_for(session: Session, name: str) -> Topic:
    """Return the topic called ``name`` (matched by slug), created on first sight."""
    label = clean_line(name, 200)
    slug = slugify(label)
    if not slug:
        raise GazetteError(f"Topic {name!r} has no letters or digits to name it by.")
    topic = session.scalar(select(Topic).where(Topic.slug == slug))
    if topic is None:
        topic = Topic(slug=slug, name=label)
        session.add(topic)
        session.flush()
    return topic


def _topics(session: Session, names: list[str]) -> list[Topic]:
    found: dict[str, Topic] = {}
    for name in names:
        if slugify(clean_line(name, 200)):  # a category of punctuation alone is dropped
            topic = topic_for(session, name)
            found.setdefault(topic.slug, topic)
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
    # Topics first: looking them up flushes, and a new article must not be flushed
    # before its fields are set.
    topics = _topics(session, item.topics)
    created = article is None
    if article is None:
        article = Article(guid=guid, feed_id=feed_id)
        session.add(article)
    values = {
        "url": url,
        "title": title,
        "summary": clean_html(item.summary),
        "author": clean_line(item.author, 300),
        "language": (item.language or "").split("-")[0].lower() or None,
        "fingerprint": digest,
        "published_at": published,
    }
    changed = created or any(getattr(article, k) != v for k, v in values.items())
    changed = changed or {t.slug for t in article.topics} != {t.slug for t in topics}
    if changed:
        for key, value in values.items():
            setattr(article, key, value)
        article.topics = topics
        session.flush()
    return UpsertResult(article.id, created, changed)


def parse_date(value: str, field_name: str = "published") -> datetime:
    """Read an ISO 8601 date or time; one without a zone is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise GazetteError(
            f"The article's {field_name} {value!r} is not an ISO 8601 date (2026-11-28T09:00:00Z)."
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def article_from_record(record: object, where: str) -> ArticleInput:
    """Check one JSON record (title, url, and optional summary, published, topics, guid...).

    ``where`` names its place in the file for the error sentence ("item 3", "line 7").
    """
    if not isinstance(record, dict):
        raise GazetteError(f"{where}: an article must be a JSON object, not {record!r:.60}.")
    for name in ("title", "url"):
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            raise GazetteError(f"{where}: the article has no {name} (got {value!r:.60}).")
    published_raw = record.get("published")
    if published_raw is None:
        published = datetime.now(UTC)
    elif isinstance(published_raw, str):
        try:
            published = parse_date(published_raw)
        except GazetteError as exc:
            raise GazetteError(f"{where}: {exc}") from None
    else:
        raise GazetteError(f"{where}: published {published_raw!r:.60} is not a date string.")
    topics = record.get("topics", [])
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise GazetteError(f"{where}: topics must be a list of names, not {topics!r:.60}.")
    item = ArticleInput(
        title=record["title"],
        url=record["url"],
        published_at=published,
        summary=str(record.get("summary") or ""),
        guid=str(record.get("guid") or ""),
        author=str(record.get("author") or ""),
        language=str(record["language"]) if record.get("language") else None,
        topics=topics,
    )
    try:
        check_url(item.url)
    except GazetteError as exc:
        raise GazetteError(f"{where}: {exc}") from None
    if not clean_line(item.title):
        raise GazetteError(
            f"{where}: the article's title {item.title!r:.60} is empty once cleaned."
        )
    return item
