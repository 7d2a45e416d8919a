"""Subscribing and confirming: a reader signs up (or is added), then consents by link.

Double opt-in: a subscription stays pending until the reader follows the emailed link,
unless the operator already holds their consent.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Select, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gazette.addresses import identity_key
from gazette.errors import GazetteError
from gazette.newsletters.service import newsletter_by_slug
from gazette.store.models import (
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from gazette.subscribers.service import (
    Origin,
    check_address,
    check_language,
    is_suppressed,
    record_event,
    subscriber_by_public_id,
    subscription_for,
    suppression_hashes,
)
from gazette.text import clean_line

T = TypeVar("T")
# Statuses a reader ended themself: an operator's add or import never undoes them.
_LEFT = (SubscriptionStatus.UNSUBSCRIBED, SubscriptionStatus.COMPLAINED)


@dataclass(frozen=True)
class SubscribeResult:
    """What subscribing did: the reader, their subscription, and its status now."""

    subscriber_id: int
    subscription_id: int
    status: SubscriptionStatus
    created: bool
    newsletter_id: int

    @property
    def needs_confirmation(self) -> bool:
        """True when the reader still has to confirm by following the emailed link."""
        return self.status == SubscriptionStatus.PENDING


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
    reader_request: bool = False,
    languages: Collection[str] = (),
) -> SubscribeResult:
    """Add (or find) the reader for ``email`` and subscribe them to a newsletter.

    ``confirmed`` records consent the operator already holds; otherwise the
    subscription stays pending until the reader confirms. ``reader_request`` marks a
    request from the reader themself (the web form): only that may turn an earlier
    unsubscribe back into a pending subscription. An operator's add or import never
    undoes an unsubscribe, and never brings back a forgotten address. ``languages``:
    further languages accepted (those the subscribe form offered).
    """
    address = check_address(email, allow_smtputf8=allow_smtputf8)
    language = check_language(language, languages)
    newsletter = _open_newsletter(session, newsletter_slug)
    subscriber, created = _reader_for(
        session, address, clean_line(name, 200), language, origin, reader_request
    )
    subscription = _subscription_to(session, subscriber.id, newsletter.id, origin)
    # Only the reader may come back after leaving or complaining, and only pending:
    # their confirmation by link is what lifts a complaint's suppression.
    if reader_request and subscription.status in _LEFT:
        subscription.status = SubscriptionStatus.PENDING
        record_event(
            session, "resubscribed", origin, subscriber_id=subscriber.id,
            newsletter_id=newsletter.id,
        )  # fmt: skip
    if confirmed and subscription.status == SubscriptionStatus.PENDING:
        _activate(session, subscriber, subscription, origin, consent="held by operator")
    return SubscribeResult(
        subscriber.id, subscription.id, subscription.status, created, newsletter.id
    )


def _open_newsletter(session: Session, slug: str) -> Newsletter:
    """The newsletter called ``slug``, if it still takes readers (GazetteError if not)."""
    newsletter = newsletter_by_slug(session, slug)
    if newsletter.retired_at is not None:
        raise GazetteError(f"The newsletter {slug!r} is retired: it takes no new readers.")
    return newsletter


def _reader_for(
    session: Session,
    address: str,
    name: str,
    language: str,
    origin: Origin,
    reader_request: bool,
) -> tuple[Subscriber, bool]:
    """The reader of this mailbox, added when new; True when this call added them.

    The mailbox decides, not the spelling: a reader keeps the spelling they first gave.
    Only the reader themself may bring back an address that was forgotten or suppressed.
    """
    key = identity_key(address)
    same_mailbox = select(Subscriber).where(Subscriber.email_key == key)
    found = session.scalar(same_mailbox)
    if not reader_request and is_suppressed(session, address):
        raise GazetteError(f"{address!r} was forgotten or suppressed and cannot be re-added.")
    if found is not None:
        return found, False
    row = Subscriber(email=address, email_key=key, name=name, language=language)
    subscriber, created = _insert_once(session, row, same_mailbox)
    if created:
        record_event(session, "created", origin, subscriber_id=subscriber.id)
    return subscriber, created


def _subscription_to(
    session: Session, subscriber_id: int, newsletter_id: int, origin: Origin
) -> Subscription:
    """The reader's subscription to the newsletter, added pending when there is none."""
    this_pair = select(Subscription).where(
        Subscription.subscriber_id == subscriber_id,
        Subscription.newsletter_id == newsletter_id,
    )
    found = session.scalar(this_pair)
    if found is not None:
        return found
    row = Subscription(
        subscriber_id=subscriber_id, newsletter_id=newsletter_id,
        status=SubscriptionStatus.PENDING,
    )  # fmt: skip
    subscription, added = _insert_once(session, row, this_pair)
    if added:
        record_event(
            session, "subscribed", origin, subscriber_id=subscriber_id,
            newsletter_id=newsletter_id,
        )  # fmt: skip
    return subscription


def _insert_once(session: Session, row: T, existing: Select[T]) -> tuple[T, bool]:
    """Insert ``row``, or return the one a concurrent request inserted first.

    Two readers submitting the same address at the same moment both find nothing and
    both insert; the unique key lets one win, and the other takes the winner's row.
    """
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return session.scalars(existing).one(), False
    return row, True


def _activate(
    session: Session,
    subscriber: Subscriber,
    subscription: Subscription,
    origin: Origin,
    consent: str,
) -> None:
    now = utcnow()
    subscription.status = SubscriptionStatus.ACTIVE
    subscriber.confirmed_at = subscriber.confirmed_at or now
    subscriber.consent_source = origin.source
    subscriber.consent_at = now
    subscriber.consent_ip = origin.ip
    # Fresh consent from the reader outweighs an earlier request to be forgotten, or a
    # complaint; consent the operator says they hold does not.
    if consent == "confirmed by link":
        session.execute(
            delete(Suppression).where(
                Suppression.email_hash.in_(suppression_hashes(subscriber.email))
            )
        )
    record_event(
        session, "confirmed", origin, subscriber_id=subscriber.id,
        newsletter_id=subscription.newsletter_id, consent=consent,
    )  # fmt: skip


def confirm(session: Session, public_id: str, newsletter_slug: str, origin: Origin) -> bool:
    """Confirm a pending subscription from the reader's link; False if already active.

    Raises GazetteError when the subscription was unsubscribed since: an old confirm
    link must not undo a later unsubscribe.
    """
    subscriber = subscriber_by_public_id(session, public_id)
    newsletter = newsletter_by_slug(session, newsletter_slug)
    subscription = subscription_for(session, subscriber.id, newsletter.id)
    if subscription.status == SubscriptionStatus.ACTIVE:
        return False
    if subscription.status != SubscriptionStatus.PENDING:
        raise GazetteError("This subscription was ended; subscribe again to receive it.")
    _activate(session, subscriber, subscription, origin, consent="confirmed by link")
    return True
