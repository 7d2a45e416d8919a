"""Bounces: a reader whose address keeps failing stops being sent to.

A hard bounce (a permanent 5xx refusal) ends every subscription at once; soft bounces
(transient failures that outlived the retry period, or 552 mailbox full) end them after
a few, so one full mailbox does not lose a reader but a dead one is not mailed forever.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gazette.store.models import Subscriber, Subscription, SubscriptionStatus
from gazette.subscribers import Origin, record_event

SOFT_BOUNCE_LIMIT = 3


def record_bounce(session: Session, subscriber_id: int, *, hard: bool, detail: str) -> bool:
    """Count a bounce; return True when it suppressed the reader (subscriptions bounced)."""
    subscriber = session.scalar(
        select(Subscriber).where(Subscriber.id == subscriber_id).with_for_update()
    )
    if subscriber is None:
        return False
    subscriber.bounce_count += 1
    origin = Origin("system")
    severity = "hard" if hard else "soft"
    record_event(
        session, "bounce", origin, subscriber_id=subscriber_id, severity=severity,
        reply=detail[:300],
    )  # fmt: skip
    if not hard and subscriber.bounce_count < SOFT_BOUNCE_LIMIT:
        return False
    session.execute(
        update(Subscription)
        .where(
            Subscription.subscriber_id == subscriber_id,
            Subscription.status.in_([SubscriptionStatus.ACTIVE, SubscriptionStatus.PENDING]),
        )
        .values(status=SubscriptionStatus.BOUNCED)
    )
    record_event(
        session, "suppressed", origin, subscriber_id=subscriber_id, reason=f"{severity} bounce"
    )
    return True
