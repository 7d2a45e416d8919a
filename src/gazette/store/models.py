"""SQLAlchemy models: the data model of docs/design.md, with the unique keys it names.

Statuses are short strings checked by the database (non-native enums), so a migration
never has to alter a PostgreSQL enum type, and SQLite enforces the same set.
"""

from __future__ import annotations

import enum
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from gazette.addresses import identity_key

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime, the only kind the store keeps."""
    return datetime.now(UTC)


def new_public_id() -> str:
    """Return an opaque identifier for links, so tokens never carry a row id or an address."""
    return secrets.token_urlsafe(12)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that always comes back timezone-aware.

    SQLite has no time zone type and returns naive values; without this, comparisons
    between loaded and fresh timestamps would raise or silently compare wrong.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(  # noqa: D102 - TypeDecorator hook
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the store; use aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(  # noqa: D102 - TypeDecorator hook
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with constraint names fixed, so migrations can refer to them."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it as a class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class SubscriptionStatus(enum.StrEnum):
    """Where a reader stands with one newsletter."""

    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class IssueStatus(enum.StrEnum):
    """Where an issue is between planning and the last message."""

    PLANNED = "planned"
    SENDING = "sending"
    SENT = "sent"
    SKIPPED = "skipped"


class Edition(enum.StrEnum):
    """Which readers an issue is for: every scheduled issue, or the weekly summary.

    Readers of a newsletter that offers a choice of frequency pick one; the weekly
    edition has its own article window, so it repeats what the week's issues carried.
    """

    REGULAR = "regular"
    WEEKLY = "weekly"


class DeliveryStatus(enum.StrEnum):
    """Where one message of an issue is: the ledger's states."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


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

subscription_topic = Table(
    "subscription_topic",
    Base.metadata,
    Column("subscription_id", ForeignKey("subscription.id", ondelete="CASCADE"), primary_key=True),
    Column("topic_id", ForeignKey("topic.id", ondelete="CASCADE"), primary_key=True),
)


class Topic(Base):
    """A subject articles carry and readers and newsletters can filter on."""

    __tablename__ = "topic"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(200))


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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    topics: Mapped[list[Topic]] = relationship(secondary=newsletter_topic)


def _email_key(context: DefaultExecutionContext) -> str:
    """The identity key of the row's address, for an insert that does not give one."""
    # SQLAlchemy leaves get_current_parameters unannotated.
    parameters: dict[str, Any] = context.get_current_parameters()  # type: ignore[no-untyped-call]
    return identity_key(parameters["email"])


class Subscriber(Base):
    """One reader: one mailbox (``email_key``), its spelling as given, its consent record."""

    __tablename__ = "subscriber"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    # The address as the reader first spelt it (normalised), shown and written to. Not a
    # key of its own: ``email_key`` is unique, and so, through it, is this.
    email: Mapped[str] = mapped_column(String(320))
    # The reader's identity: the whole address compared case-insensitively (identity_key).
    email_key: Mapped[str] = mapped_column(String(320), unique=True, default=_email_key)
    name: Mapped[str] = mapped_column(String(200), default="")
    language: Mapped[str] = mapped_column(String(16), default="en")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    consent_source: Mapped[str] = mapped_column(String(32), default="")
    consent_at: Mapped[datetime | None]
    consent_ip: Mapped[str | None] = mapped_column(String(64))
    bounce_count: Mapped[int] = mapped_column(Integer, default=0)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Languages read besides ``language``, chosen on the preferences page.
    extra_languages: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")

    subscriptions: Mapped[list[Subscription]] = relationship(back_populates="subscriber")


class SubscriberAlias(Base):
    """The public id of a reader merged into another, so links already sent still work."""

    __tablename__ = "subscriber_alias"

    public_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscriber.id", ondelete="CASCADE"), index=True
    )


class Subscription(Base):
    """A reader's standing with one newsletter."""

    __tablename__ = "subscription"
    __table_args__ = (UniqueConstraint("subscriber_id", "newsletter_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscriber.id", ondelete="CASCADE"))
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletter.id", ondelete="CASCADE"))
    status: Mapped[SubscriptionStatus] = mapped_column(
        _enum(SubscriptionStatus, "subscription_status"), default=SubscriptionStatus.PENDING
    )
    frequency: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")
    newsletter: Mapped[Newsletter] = relationship()
    topics: Mapped[list[Topic]] = relationship(secondary=subscription_topic)


Index("ix_subscription_newsletter_status", Subscription.newsletter_id, Subscription.status)


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
    summary: Mapped[str] = mapped_column(Text, default="")
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


class Issue(Base):
    """One edition of one newsletter for one period; its key makes planning idempotent."""

    __tablename__ = "issue"
    __table_args__ = (UniqueConstraint("newsletter_id", "period_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletter.id", ondelete="CASCADE"))
    period_key: Mapped[str] = mapped_column(String(64))
    edition: Mapped[Edition] = mapped_column(
        _enum(Edition, "issue_edition"), default=Edition.REGULAR, server_default="regular"
    )
    status: Mapped[IssueStatus] = mapped_column(
        _enum(IssueStatus, "issue_status"), default=IssueStatus.PLANNED
    )
    # The look-back window: articles published in (since_at, cutoff_at] that the
    # edition has not carried yet were due for this issue.
    since_at: Mapped[datetime | None]
    cutoff_at: Mapped[datetime]
    # "carried": chosen by what the edition has carried. "cutoff": planned before
    # migration 0006 by the old rule; the newest such issue's cutoff is a floor below
    # which nothing is carried again, so the upgrade flushes nothing old out.
    selection: Mapped[str] = mapped_column(String(16), default="carried", server_default="carried")
    skip_reason: Mapped[str | None] = mapped_column(String(200))
    planned_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    sent_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    skipped_count: Mapped[int] = mapped_column(Integer, default=0)

    newsletter: Mapped[Newsletter] = relationship()


class IssueArticle(Base):
    """The frozen article set of an issue, in the order the digest shows them."""

    __tablename__ = "issue_article"

    issue_id: Mapped[int] = mapped_column(
        ForeignKey("issue.id", ondelete="CASCADE"), primary_key=True
    )
    article_id: Mapped[int] = mapped_column(
        ForeignKey("article.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer)


class Delivery(Base):
    """The ledger: one row per (issue, subscriber), the truth about what was sent."""

    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("issue_id", "subscriber_id"),
        Index("ix_delivery_issue_status", "issue_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issue.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscriber.id", ondelete="CASCADE"))
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]


class Event(Base):
    """Append-only audit of every subscription change: what, when, how, from where."""

    __tablename__ = "event"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscriber.id", ondelete="SET NULL"), index=True
    )
    newsletter_id: Mapped[int | None] = mapped_column(
        ForeignKey("newsletter.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32))
    ip: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Suppression(Base):
    """An address that must never be imported again: forgotten or hard-bounced readers.

    Only a hash is kept, so a forgotten reader's address is gone from the database yet
    a later CSV import that still lists it does not resubscribe them.
    """

    __tablename__ = "suppression"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RateLimit(Base):
    """A fixed-window counter, for rate limits when no Redis is configured."""

    __tablename__ = "rate_limit"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    window_start: Mapped[datetime]
    count: Mapped[int] = mapped_column(Integer, default=0)
