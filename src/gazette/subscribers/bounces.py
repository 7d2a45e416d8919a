"""Bounces: a reader whose address keeps failing stops being sent to.

A hard bounce (a permanent refusal about the reader's mailbox, see
gazette.mail.status_policy) ends every subscription at once; soft bounces (transient
refusals about the reader that outlived the retry period, or a full mailbox) end them
after GAZETTE_SOFT_BOUNCE_LIMIT within GAZETTE_SOFT_BOUNCE_DAYS of each other, so one
full mailbox a month does not lose a reader but a dead one is not mailed forever. Refusals of the
relay's or the operator's making (a login, the sender, TLS, a policy reply) never reach
this module. ``unbounce`` undoes a suppression made by mistake. A complaint (the reader
marked a message as spam) ends every subscription and suppresses the address for good.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gazette.deliverability_settings import Deliverability
from gazette.errors import GazetteError
from gazette.store.models import (
    Event,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from gazette.subscribers.service import Origin, email_hash, record_event, subscriber_by_email

DEFAULT_RULES = Deliverability()
SOFT_BOUNCE_LIMIT = DEFAULT_RULES.soft_bounce_limit


def record_bounce(
    session: Session,
    subscriber_id: int,
    *,
    hard: bool,
    detail: str,
    rules: Deliverability = DEFAULT_RULES,
    now: datetime | None = None,
) -> bool:
    """Count a bounce; return True when it suppressed the reader (subscriptions bounced).

    A soft bounce more than ``rules.soft_bounce_window`` after the reader's last one
    starts the count again (Mailman 3's stale bounce information); ``now`` is the clock.
    """
    subscriber = session.scalar(
        select(Subscriber).where(Subscriber.id == subscriber_id).with_for_update()
    )
    if subscriber is None:
        return False
    now = now or utcnow()
    last = subscriber.soft_bounced_at
    if not hard and (last is None or now - last > rules.soft_bounce_window):
        subscriber.bounce_count = 0  # stale: the earlier soft bounces no longer count
    subscriber.bounce_count += 1
    if not hard:
        subscriber.soft_bounced_at = now
    origin = Origin("system")
    severity = "hard" if hard else "soft"
    record_event(
        session, "bounce", origin, subscriber_id=subscriber_id, severity=severity,
        reply=detail[:300],
    )  # fmt: skip
    if not hard and subscriber.bounce_count < rules.soft_bounce_limit:
        return False
    subscriptions = session.scalars(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id,
            Subscription.status.in_([SubscriptionStatus.ACTIVE, SubscriptionStatus.PENDING]),
        )
    ).all()
    for subscription in subscriptions:
        # One event per newsletter, naming the status it had, so that unbounce can
        # give back exactly that (a pending reader never becomes active by it).
        record_event(
            session, "suppressed", origin, subscriber_id=subscriber_id,
            newsletter_id=subscription.newsletter_id, reason=f"{severity} bounce",
            previous=subscription.status.value,
        )  # fmt: skip
        subscription.status = SubscriptionStatus.BOUNCED
    session.flush()
    return True


def record_complaint(session: Session, subscriber_id: int, *, detail: str) -> bool:
    """The reader called a message spam: end every subscription, suppress them for good.

    Each subscription not already ended becomes ``complained`` (one event per
    newsletter, naming the status it had); the address's suppression (reason
    "complaint") keeps an import or an operator's add from bringing them back, and only
    the reader's own confirmed sign-up lifts it. Returns False for a reader who is gone.
    """
    subscriber = session.scalar(
        select(Subscriber).where(Subscriber.id == subscriber_id).with_for_update()
    )
    if subscriber is None:
        return False
    origin = Origin("system")
    record_event(session, "complaint", origin, subscriber_id=subscriber_id, report=detail[:300])
    subscriptions = session.scalars(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id,
            Subscription.status != SubscriptionStatus.COMPLAINED,
        )
    ).all()
    for subscription in subscriptions:
        record_event(
            session, "complained", origin, subscriber_id=subscriber_id,
            newsletter_id=subscription.newsletter_id, previous=subscription.status.value,
        )  # fmt: skip
        subscription.status = SubscriptionStatus.COMPLAINED
    digest = email_hash(subscriber.email)
    kept = session.scalar(select(Suppression).where(Suppression.email_hash == digest))
    if kept is None:
        session.add(Suppression(email_hash=digest, reason="complaint"))
    else:
        kept.reason = "complaint"  # a bounce's suppression becomes one unbounce keeps
    session.flush()
    return True


@dataclass(frozen=True)
class Unbounced:
    """What unbounce did: the reader's address and the subscriptions it gave back."""

    email: str
    reactivated: int
    pending: int


def unbounce(session: Session, email: str, origin: Origin) -> Unbounced:
    """Give a reader suppressed by bounces their subscriptions back, for mistakes.

    Each bounced subscription returns to the status it had (active, or pending when the
    reader had not confirmed yet; active when that is not recorded and the reader once
    confirmed); the bounce count starts again from zero and a suppression kept for a
    bounce is removed. Raises GazetteError for an unknown address or a reader with no
    bounced subscription.
    """
    subscriber = subscriber_by_email(session, email)
    bounced = _bounced_subscriptions(session, subscriber.id)
    if not bounced:
        raise GazetteError(f"{subscriber.email} is not bounced; there is nothing to undo.")
    previous = _status_before_bounce(session, subscriber.id)
    fallback = (
        SubscriptionStatus.ACTIVE if subscriber.confirmed_at is not None
        else SubscriptionStatus.PENDING
    )  # fmt: skip
    reactivated = pending = 0
    for subscription in bounced:
        status = previous.get(subscription.newsletter_id, fallback)
        subscription.status = status
        if status is SubscriptionStatus.ACTIVE:
            reactivated += 1
        else:
            pending += 1
        record_event(
            session, "unbounced", origin, subscriber_id=subscriber.id,
            newsletter_id=subscription.newsletter_id, status=status.value,
            bounce_count=str(subscriber.bounce_count),
        )  # fmt: skip
    subscriber.bounce_count = 0
    subscriber.soft_bounced_at = None
    session.execute(
        delete(Suppression).where(
            Suppression.email_hash == email_hash(subscriber.email),
            Suppression.reason.contains("bounce"),
        )
    )
    session.flush()
    return Unbounced(subscriber.email, reactivated, pending)


def _bounced_subscriptions(session: Session, subscriber_id: int) -> list[Subscription]:
    """The reader's bounced subscriptions, locked for the change, oldest first."""
    query = (
        select(Subscription)
        .where(
            Subscription.subscriber_id == subscriber_id,
            Subscription.status == SubscriptionStatus.BOUNCED,
        )
        .order_by(Subscription.id)
        .with_for_update()
    )
    return list(session.scalars(query))


def _status_before_bounce(session: Session, subscriber_id: int) -> dict[int, SubscriptionStatus]:
    """Per newsletter, the status the latest bounce suppression recorded as the one before."""
    events = session.execute(
        select(Event.newsletter_id, Event.detail)
        .where(Event.subscriber_id == subscriber_id, Event.kind == "suppressed")
        .order_by(Event.id)
    ).all()
    found: dict[int, SubscriptionStatus] = {}
    for newsletter_id, detail in events:
        status = (detail or {}).get("previous")
        if newsletter_id is not None and status in {s.value for s in SubscriptionStatus}:
            found[newsletter_id] = SubscriptionStatus(status)
    return found
