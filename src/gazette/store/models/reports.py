"""Reports about sent mail that were acted on: each message once, and what it did."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gazette.store.models.base import Base, utcnow


class BounceReport(Base):
    """One recipient of one processed report (a bounce, a delay, a complaint, an auto-reply).

    ``message_key`` (a hash of the message's Message-ID, or of its bytes) makes
    processing idempotent: a copy of a message already processed finds its rows and
    changes nothing. No foreign keys, as on the ledger: ids are kept for the operator's
    counts per issue and per receiving domain (a policy refusal is counted here and
    nowhere against the reader), and a row may outlive the reader it names.
    """

    __tablename__ = "bounce_report"
    __table_args__ = (
        UniqueConstraint("message_key", "position"),
        Index("ix_bounce_report_issue_effect", "issue_id", "effect"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    message_key: Mapped[str] = mapped_column(String(64))
    # The recipient's place in the report (0 for a report that named nobody we know).
    position: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(16))
    # What it did (gazette.bounces.policy.Effect), or "unmatched" when it named nobody.
    effect: Mapped[str] = mapped_column(String(32))
    status: Mapped[str | None] = mapped_column(String(16))
    issue_id: Mapped[int | None] = mapped_column(Integer)
    delivery_id: Mapped[int | None] = mapped_column(Integer)
    subscriber_id: Mapped[int | None] = mapped_column(Integer)
    # The receiving domain the report is about (lower case), for per-domain counts.
    domain: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
