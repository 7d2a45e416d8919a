"""Subscribers and their subscriptions: add, confirm, unsubscribe, each change audited."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gazette.addresses import AddressError, normalise_address
from gazette.errors import GazetteError
from gazette.newsletters import newsletter_by_slug
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Event,
    Issue,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)

LANGUAGES = ("en", "uk", "ja")


@dataclass(frozen=True)
class Origin:
    """How a change arrived, for the event log: the channel and, for the web, the IP."""

    source: str  # "web", "cli", "import", "demo", "system"
    ip: str | None = None


@dataclass(frozen=True)
class SubscribeResult:
    """What subscribing did: the subscriber, and whether a confirmation is still needed."""

    subscriber_id: int
    subscription_id: int
    status: SubscriptionStatus
    created: bool


def _check_language(language: str) -> str:
    code = language.strip().lower()
    if code not in LANGUAGES:
        raise GazetteError(
            f"Language {language!r} is not one Gazette has templates for ({', '.join(LANGUAGES)})."
        )
    return code


def record_event(
    session: Session,
    kind: str,
    origin: Origin,
    *,
    subscriber_id: int | None,
    newsletter_id: int | None = None,
    **detail: str,
) -> None:
    """Append one audit event; every subscription change goes through here."""
    session.add(
        Event(
            subscriber_id=subscriber_id,
            newsletter_id=newsletter_id,
            kind=kind,
            source=origin.source,
            ip=origin.ip,
            detail=dict(detail),
        )
    )


def subscribe(
    session: Session,
    email: str,
    newsletter_slug: str,
    origin: Origin,
    *,
    name: str = "",
    language: str = "en",
    confirmed: bool = False,
    allow_smtputf8: bool = False,
) -> SubscribeResult:
    """Add (or find) the subscriber for ``email`` and subscribe them to a newsletter.

    ``confirmed`` is for consent the operator already holds; otherwise the subscription
    stays pending until the reader confirms. An address that unsubscribed is never
    resubscribed here without fresh confirmation.
    """
    try:
        address = normalise_address(email, allow_smtputf8=allow_smtputf8)
    except AddressError as exc:
        raise GazetteError(f"Cannot subscribe: {exc}") from None
    language = _check_language(language)
    newsletter = newsletter_by_slug(session, newsletter_slug)
    now = utcnow()
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
    created = subscriber is None
    if subscriber is None:
        subscriber = Subscriber(email=address, name=name.strip(), language=language)
        session.add(subscriber)
        session.flush()
        record_event(session, "created", origin, subscriber_id=subscriber.id)
    subscription = session.scalar(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber.id,
            Subscription.newsletter_id == newsletter.id,
        )
    )
    if subscription is None:
        subscription = Subscription(
            subscriber_id=subscriber.id,
            newsletter_id=newsletter.id,
            status=SubscriptionStatus.PENDING,
        )
        session.add(subscription)
        session.flush()
        record_event(
            session, "subscribed", origin, subscriber_id=subscriber.id, newsletter_id=newsletter.id
        )
    if confirmed and subscription.status == SubscriptionStatus.PENDING:
        subscription.status = SubscriptionStatus.ACTIVE
        subscriber.confirmed_at = subscriber.confirmed_at or now
        subscriber.consent_source = origin.source
        subscriber.consent_at = now
        subscriber.consent_ip = origin.ip
        record_event(
            session,
            "confirmed",
            origin,
            subscriber_id=subscriber.id,
            newsletter_id=newsletter.id,
            consent="held by operator",
        )
    return SubscribeResult(subscriber.id, subscription.id, subscription.status, created)


def unsubscribe(session: Session, subscriber_id: int, newsletter_id: int, origin: Origin) -> bool:
    """Unsubscribe at once; return False when there was nothing left to undo.

    Idempotent, and immediate: deliveries not yet sent to this reader for this
    newsletter are skipped in the same transaction, so a send in progress honours it.
    """
    subscription = session.scalar(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id,
            Subscription.newsletter_id == newsletter_id,
        )
    )
    if subscription is None or subscription.status == SubscriptionStatus.UNSUBSCRIBED:
        return False
    subscription.status = SubscriptionStatus.UNSUBSCRIBED
    issue_ids = select(Issue.id).where(Issue.newsletter_id == newsletter_id)
    session.execute(
        update(Delivery)
        .where(
            Delivery.subscriber_id == subscriber_id,
            Delivery.status == DeliveryStatus.PENDING,
            Delivery.issue_id.in_(issue_ids),
        )
        .values(status=DeliveryStatus.SKIPPED, last_error="unsubscribed")
    )
    record_event(
        session, "unsubscribed", origin, subscriber_id=subscriber_id, newsletter_id=newsletter_id
    )
    return True
