"""What is published: topics, newsletters, the feeds polled and the articles stored once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Column, ForeignKey, Integer, String, Table, Text
from sqlalchemy import false as sa_false
from sqlalchemy import true as sa_true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gazette.store.models.base import Base, utcnow

newsletter_topic = Table(
    "newsletter_topic",
    Base.metadata,
    Column("newsletter_id", ForeignKey("newsletter.id", ondelete="CASCADE"), primary_key=True),
    Column("topic_id", ForeignKey("topic.id", ondelete="CASCADE"), primary_key=True),
)

article_topic = Table(
    "article_topic",
    Base.metadata,
    Column("article_id", ForeignKey("article.id", ondelete="CASCADE"), primary_key=True),
    Column("topic_id", ForeignKey("topic.id", ondelete="CASCADE"), primary_key=True),
)


class Topic(Base):
    """A subject articles carry and readers and newsletters can filter on."""

    __tablename__ = "topic"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # The operator's label per language ("uk" -> "Енергетика"); `name` is the fallback.
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, server_default="{}")
    # Offered to readers on the preferences page (topic curation decides who sets it).
    offered: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())
    # Hidden topics are neither offered nor listed by default; they still filter.
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())


class TopicAlias(Base):
    """A slug merged into another topic: a feed category spelt that way lands on the topic.

    Without it the next poll would bring a merged category back as a topic of its own.
    """

    __tablename__ = "topic_alias"

    slug: Mapped[str] = mapped_column(String(80), primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topic.id", ondelete="CASCADE"), index=True)


class Newsletter(Base):
    """What a publisher sends: a name, a schedule, a topic filter, a sender."""

    __tablename__ = "newsletter"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # Standard five-field cron expression, read in the newsletter's own time zone.
    schedule_cron: Mapped[str] = mapped_column(String(100), default="0 8 * * 1")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    min_articles: Mapped[int] = mapped_column(Integer, default=1)
    max_articles: Mapped[int] = mapped_column(Integer, default=20)
    from_address: Mapped[str | None] = mapped_column(String(320))
    list_id: Mapped[str | None] = mapped_column(String(255))
    allow_frequency: Mapped[bool] = mapped_column(Boolean, default=False)
    template_set: Mapped[str] = mapped_column(String(80), default="digest")
    default_language: Mapped[str] = mapped_column(String(16), default="en")
    # How far back an issue looks for articles its edition has not carried yet.
    max_age_days: Mapped[int] = mapped_column(Integer, default=14, server_default="14")
    # "all": every reader gets every article; "own": each reader gets their languages'.
    article_languages: Mapped[str] = mapped_column(String(8), default="all", server_default="all")
    # Set by `newsletters retire`: no longer offered or scheduled; its history is kept.
    retired_at: Mapped[datetime | None]
    # Paused by an issue's complaint or hard-bounce rate (gazette.newsletters.pausing): no
    # issue planned, no batch claimed, until `gazette digest resume`; the sentence why.
    paused_at: Mapped[datetime | None]
    pause_reason: Mapped[str | None] = mapped_column(String(500))
    resumed_at: Mapped[datetime | None]
    # "excerpt" (default) or "full": what each article in a digest carries.
    content_mode: Mapped[str] = mapped_column(
        String(8), default="excerpt", server_default="excerpt"
    )
    # Near how many words a made-up excerpt is cut, at a sentence or block boundary.
    excerpt_words: Mapped[int] = mapped_column(Integer, default=60, server_default="60")
    images: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())
    # The publisher's brand; None falls back to the installation's GAZETTE_* defaults.
    publisher: Mapped[str | None] = mapped_column(String(200))
    website: Mapped[str | None] = mapped_column(String(2000))
    logo_url: Mapped[str | None] = mapped_column(String(2000))
    accent_colour: Mapped[str | None] = mapped_column(String(7))
    postal_address: Mapped[str | None] = mapped_column(Text)
    privacy_url: Mapped[str | None] = mapped_column(String(2000))
    # Send a welcome message after a reader confirms.
    welcome: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())
    utm_source: Mapped[str | None] = mapped_column(String(100))
    utm_medium: Mapped[str | None] = mapped_column(String(100))
    utm_campaign: Mapped[str | None] = mapped_column(String(100))
    # The standing editor's note per language ("" key: every language), in Markdown.
    intro: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    topics: Mapped[list[Topic]] = relationship(secondary=newsletter_topic)


class Feed(Base):
    """An RSS or Atom feed polled for articles, with its caching validators."""

    __tablename__ = "feed"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    title: Mapped[str] = mapped_column(String(500), default="")
    newsletter_id: Mapped[int | None] = mapped_column(
        ForeignKey("newsletter.id", ondelete="SET NULL")
    )
    topic_id: Mapped[int | None] = mapped_column(ForeignKey("topic.id", ondelete="SET NULL"))
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    poll_interval_seconds: Mapped[int] = mapped_column(Integer, default=900)
    last_polled_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # Overrides the language the feed declares (``feeds add --language``).
    language: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set by `feeds remove`: no longer polled; its articles stay (soft removal).
    removed_at: Mapped[datetime | None]
    # Why the last poll rejected items, one reason a line; None when it rejected none.
    last_rejections: Mapped[str | None] = mapped_column(Text)


article_feed = Table(
    "article_feed",
    Base.metadata,
    Column("article_id", ForeignKey("article.id", ondelete="CASCADE"), primary_key=True),
    Column("feed_id", ForeignKey("feed.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Article(Base):
    """One published article, stored once whatever its sources."""

    __tablename__ = "article"

    id: Mapped[int] = mapped_column(primary_key=True)
    # What makes two sightings one article: a global guid as it is, a bare guid scoped
    # by its feed ("feed:12:123"), or the normalised URL when there is no guid.
    identity_key: Mapped[str] = mapped_column(String(2100), unique=True)
    guid: Mapped[str] = mapped_column(String(2000), index=True)
    url: Mapped[str] = mapped_column(String(2000), index=True)
    title: Mapped[str] = mapped_column(String(1000))
    # The excerpt (sanitised HTML): the feed's description/summary, or made from content.
    summary: Mapped[str] = mapped_column(Text, default="")
    # The full post (sanitised HTML, content:encoded), for newsletters that carry it.
    content: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The featured image (absolute https URL) and its alt text.
    image_url: Mapped[str | None] = mapped_column(String(2000))
    image_alt: Mapped[str] = mapped_column(String(500), default="", server_default="")
    author: Mapped[str] = mapped_column(String(300), default="")
    language: Mapped[str | None] = mapped_column(String(16))
    # Hash of title and date: never used to match, only to flag a likely duplicate.
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    # Frozen at first sight: an update never moves an article back into a window.
    published_at: Mapped[datetime] = mapped_column(index=True)
    # The feed it was first seen in; article_feed holds every feed it was seen in.
    feed_id: Mapped[int | None] = mapped_column(ForeignKey("feed.id", ondelete="SET NULL"))
    # Set by `articles withdraw`: never carried by a future issue.
    withdrawn_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    topics: Mapped[list[Topic]] = relationship(secondary=article_topic)
