"""Issues and the delivery ledger: what each issue carries and what was sent to whom."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gazette.store.models.base import (
    Base,
    DeliveryStatus,
    Edition,
    IssueStatus,
    new_public_id,
    status_column,
    utcnow,
)
from gazette.store.models.content import Newsletter


class Issue(Base):
    """One edition of one newsletter for one period; its key makes planning idempotent."""

    __tablename__ = "issue"
    __table_args__ = (UniqueConstraint("newsletter_id", "period_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletter.id", ondelete="CASCADE"))
    period_key: Mapped[str] = mapped_column(String(64))
    edition: Mapped[Edition] = mapped_column(
        status_column(Edition, "issue_edition"), default=Edition.REGULAR, server_default="regular"
    )
    status: Mapped[IssueStatus] = mapped_column(
        status_column(IssueStatus, "issue_status"), default=IssueStatus.PLANNED
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
    # The editor's note per language ("" key: every language), in Markdown, frozen at
    # planning from the newsletter's standing note or given with `digest send
    # --intro-file`. NULL (issues planned before migration 0009): no note.
    intro: Mapped[dict[str, str] | None] = mapped_column(JSON)
    planned_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Running totals of the ledger's outcomes, added to as each chunk of results is
    # written (gazette.digests.recording) and set exactly from the ledger when the issue
    # finishes (ledger.finish_issue): /metrics reads them instead of counting rows.
    sent_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    # Set only when the issue finishes: unsubscribes skip rows of open issues without
    # touching this row, which every click would queue on, so /metrics counts them.
    skipped_count: Mapped[int] = mapped_column(Integer, default=0)
    # Messages refused about the reader's mailbox and counted against them (a hard or a
    # soft bounce, gazette.subscribers.bounces); a hard-bounced message is also failed.
    bounced_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Of those, the hard bounces; and the complaints about this issue (the deliverability
    # rates over settled messages, gazette.digests.deliverability, read them).
    hard_bounced_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    complained_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

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
    # No foreign keys, on purpose: PostgreSQL checks one per inserted row, locking the
    # issue and the subscriber row each time, which was 14 of the 21 s that planning
    # 1,000,000 deliveries took. Planning inserts only ids it has just read in the same
    # transaction; forgetting a reader deletes their rows itself (subscribers/unsubscribing.py),
    # and issues are never deleted.
    issue_id: Mapped[int] = mapped_column(Integer)
    subscriber_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[DeliveryStatus] = mapped_column(
        status_column(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
