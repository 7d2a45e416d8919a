"""Readers: subscribers, their subscriptions, the audit of every change and suppressions.

Also the fixed-window counters that rate-limit the subscribe form without Redis.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gazette.addresses import identity_key
from gazette.store.models.base import Base, SubscriptionStatus, new_public_id, status_column, utcnow
from gazette.store.models.content import Newsletter, Topic

subscription_topic = Table(
    "subscription_topic",
    Base.metadata,
    Column("subscription_id", ForeignKey("subscription.id", ondelete="CASCADE"), primary_key=True),
    Column("topic_id", ForeignKey("topic.id", ondelete="CASCADE"), primary_key=True),
)


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
    # The last soft bounce: one older than GAZETTE_SOFT_BOUNCE_DAYS starts the count again.
    soft_bounced_at: Mapped[datetime | None]
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
        status_column(SubscriptionStatus, "subscription_status"), default=SubscriptionStatus.PENDING
    )
    frequency: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")
    newsletter: Mapped[Newsletter] = relationship()
    topics: Mapped[list[Topic]] = relationship(secondary=subscription_topic)


Index("ix_subscription_newsletter_status", Subscription.newsletter_id, Subscription.status)


# How many rows the tally keeps at most per newsletter and status (migration 0015).
TALLY_SHARDS = 64


class SubscriptionTally(Base):
    """How many subscriptions each newsletter has in each status: running totals in shards.

    Kept exact by the database itself: triggers on ``subscription`` (insert, a change of
    status or newsletter, delete, including the deletes a forgotten reader's cascade
    makes) adjust it in the same transaction as the change, whichever process or
    statement made it; migration 0012 created them, 0015 shards them. On PostgreSQL a
    change is added to the shard of the server process making it (its pid modulo
    TALLY_SHARDS), so concurrent unsubscribes seldom wait on one row's lock while one
    transaction's changes all take the same rows; a shard is a partial sum, which may
    be negative, and /metrics sums them. SQLite keeps shard 0. On SQLite a batch
    migration that rebuilds ``subscription`` drops its triggers: such a migration must
    create them again (0015's ``create_triggers``).
    """

    __tablename__ = "subscription_tally"

    newsletter_id: Mapped[int] = mapped_column(
        ForeignKey("newsletter.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[SubscriptionStatus] = mapped_column(
        status_column(SubscriptionStatus, "subscription_status"), primary_key=True
    )
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


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
