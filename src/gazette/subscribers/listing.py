"""The operator's view of readers: who is subscribed, filtered, and one reader's history."""

from __future__ import annotations

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from gazette.newsletters.service import newsletter_by_slug
from gazette.store.models import Event, Subscriber, Subscription


def list_subscribers(
    session: Session, newsletter_slug: str | None, status: str | None, limit: int
) -> tuple[int, list[Subscriber]]:
    """How many readers match, and the newest ``limit`` of them.

    ``newsletter_slug`` and ``status`` narrow the list to readers with such a
    subscription; a reader on two newsletters is listed once.
    """
    # Filter by a subquery of ids: a reader on two newsletters is one row, and no
    # DISTINCT over a JSON column (PostgreSQL cannot compare json values).
    matching = select(Subscription.subscriber_id)
    if newsletter_slug:
        newsletter_id = newsletter_by_slug(session, newsletter_slug).id
        matching = matching.where(Subscription.newsletter_id == newsletter_id)
    if status:
        matching = matching.where(Subscription.status == status)
    condition = Subscriber.id.in_(matching) if newsletter_slug or status else true()
    total = session.scalar(select(func.count()).select_from(Subscriber).where(condition)) or 0
    query = select(Subscriber).where(condition).order_by(Subscriber.id.desc()).limit(limit)
    return total, list(session.scalars(query))


def reader_events(session: Session, subscriber_id: int) -> list[Event]:
    """Every event recorded about the reader, oldest first."""
    query = select(Event).where(Event.subscriber_id == subscriber_id).order_by(Event.id)
    return list(session.scalars(query))
