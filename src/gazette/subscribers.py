"""Subscribers and their subscriptions: add, confirm, change, unsubscribe, forget.

Every change is recorded as an event (what, when, how, from where). Readers are named
in links by an opaque public id, never by address or row id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Select, bindparam, delete, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gazette.addresses import AddressError, address_and_key, identity_key, normalise_address
from gazette.errors import GazetteError, InvalidChoiceError
from gazette.newsletters import SLUG, newsletter_by_slug
from gazette.store.models import (
    Base,
    Delivery,
    DeliveryStatus,
    Event,
    Newsletter,
    Subscriber,
    SubscriberAlias,
    Subscription,
    SubscriptionStatus,
    Suppression,
    Topic,
    utcnow,
)
from gazette.text import clean_line

LANGUAGES = ("en", "uk", "ja")
T = TypeVar("T")
FREQUENCIES = ("daily", "weekly")


@dataclass(frozen=True)
class Origin:
    """How a change arrived, for the event log: the channel and, for the web, the IP."""

    source: str  # "web", "cli", "import", "demo", "system"
    ip: str | None = None


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


def email_hash(address: str) -> str:
    """Hash of a normalised address's identity, what suppression keeps instead of it.

    Every spelling of one mailbox has the same hash, so forgetting one blocks them all.
    """
    return hashlib.sha256(identity_key(address).encode("utf-8")).hexdigest()


def suppression_hashes(address: str) -> list[str]:
    """The hashes that suppress ``address``: its identity's, and the one kept before it.

    Until migration 0005 the hash was of the casefolded address; that equals the
    identity's for an ASCII address, so only other addresses have a second hash.
    """
    current = email_hash(address)
    if address.isascii():
        return [current]
    legacy = hashlib.sha256(address.casefold().encode("utf-8")).hexdigest()
    return [current, legacy]


def check_language(language: str, also: Collection[str] = ()) -> str:
    """Return the language code, or raise GazetteError naming it.

    ``also``: further codes accepted, such as those a newsletter publishes articles in
    (its messages are then worded in English).
    """
    code = language.strip().lower()
    if code not in LANGUAGES and code not in also:
        raise GazetteError(
            f"Language {language!r} is not one Gazette has templates for ({', '.join(LANGUAGES)})."
        )
    return code


def check_address(email: str, *, allow_smtputf8: bool) -> str:
    """Return the normalised address, or raise GazetteError with the reason."""
    try:
        return normalise_address(email, allow_smtputf8=allow_smtputf8)
    except AddressError as exc:
        raise GazetteError(str(exc)[0].upper() + str(exc)[1:]) from None


_INSERT_EVENT = insert(Base.metadata.tables["event"])


def record_event(
    session: Session,
    kind: str,
    origin: Origin,
    *,
    subscriber_id: int | None,
    newsletter_id: int | None = None,
    **detail: str,
) -> None:
    """Append one audit event; every subscription change goes through here.

    Written at once by an INSERT rather than added to the session: an event is never
    read back in the transaction that records it, and the unit of work costs more.
    """
    session.execute(
        _INSERT_EVENT,
        event_row(kind, origin, subscriber_id=subscriber_id, newsletter_id=newsletter_id, **detail),
    )


def event_row(
    kind: str,
    origin: Origin,
    *,
    subscriber_id: int | None,
    newsletter_id: int | None = None,
    **detail: str,
) -> dict[str, object]:
    """The column values of one audit event, for record_event and for bulk imports."""
    return {
        "subscriber_id": subscriber_id,
        "newsletter_id": newsletter_id,
        "kind": kind,
        "source": origin.source,
        "ip": origin.ip,
        "detail": dict(detail),
    }


def is_suppressed(session: Session, address: str) -> bool:
    """True when the address was forgotten or suppressed and must not be re-imported."""
    digests = suppression_hashes(address)
    return (
        session.scalar(select(Suppression.id).where(Suppression.email_hash.in_(digests)))
        is not None
    )


def subscriber_by_email(session: Session, email: str) -> Subscriber:
    """Return the reader of this mailbox, however the address is spelt, or raise GazetteError."""
    try:
        _address, key = address_and_key(email, allow_smtputf8=True)
    except AddressError:
        # Not an address, so not anyone's (and never sent to the database as it is).
        raise GazetteError(f"There is no subscriber {email.strip()!r}.") from None
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == key))
    if subscriber is None:
        raise GazetteError(f"There is no subscriber {email.strip()!r}.")
    return subscriber


def subscriber_by_public_id(session: Session, public_id: str) -> Subscriber:
    """Return the reader a link names, or raise GazetteError (the reader may be forgotten).

    A merged reader's public id (an alias) names the reader they were merged into.
    """
    subscriber = session.scalar(select(Subscriber).where(Subscriber.public_id == public_id))
    if subscriber is None:
        subscriber = session.scalar(
            select(Subscriber)
            .join(SubscriberAlias, SubscriberAlias.subscriber_id == Subscriber.id)
            .where(SubscriberAlias.public_id == public_id)
        )
    if subscriber is None:
        raise GazetteError("This link belongs to a subscription that no longer exists.")
    return subscriber


def subscription_for(session: Session, subscriber_id: int, newsletter_id: int) -> Subscription:
    """Return the subscription of a reader to a newsletter, or raise GazetteError."""
    subscription = session.scalar(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id,
            Subscription.newsletter_id == newsletter_id,
        )
    )
    if subscription is None:
        raise GazetteError("This link belongs to a subscription that no longer exists.")
    return subscription


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
    key = identity_key(address)
    language = check_language(language, languages)
    newsletter = newsletter_by_slug(session, newsletter_slug)
    if newsletter.retired_at is not None:
        raise GazetteError(
            f"The newsletter {newsletter_slug!r} is retired: it takes no new readers."
        )
    # The mailbox decides, not the spelling: a reader keeps the spelling they first gave.
    found = session.scalar(select(Subscriber).where(Subscriber.email_key == key))
    subscriber: Subscriber
    if found is not None:
        subscriber, created = found, False
    else:
        if not reader_request and is_suppressed(session, address):
            raise GazetteError(f"{address!r} was forgotten or suppressed and cannot be re-added.")
        subscriber, created = _insert_once(
            session,
            Subscriber(email=address, email_key=key, name=clean_line(name, 200), language=language),
            select(Subscriber).where(Subscriber.email_key == key),
        )
        if created:
            record_event(session, "created", origin, subscriber_id=subscriber.id)
    existing = session.scalar(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber.id,
            Subscription.newsletter_id == newsletter.id,
        )
    )
    subscription: Subscription
    if existing is None:
        subscription, added = _insert_once(
            session,
            Subscription(
                subscriber_id=subscriber.id,
                newsletter_id=newsletter.id,
                status=SubscriptionStatus.PENDING,
            ),
            select(Subscription).where(
                Subscription.subscriber_id == subscriber.id,
                Subscription.newsletter_id == newsletter.id,
            ),
        )
        if added:
            record_event(
                session, "subscribed", origin, subscriber_id=subscriber.id,
                newsletter_id=newsletter.id,
            )  # fmt: skip
    else:
        subscription = existing
    if reader_request and subscription.status == SubscriptionStatus.UNSUBSCRIBED:
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
    # Fresh consent from the reader outweighs an earlier request to be forgotten.
    session.execute(
        delete(Suppression).where(Suppression.email_hash.in_(suppression_hashes(subscriber.email)))
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


# Unsubscribing is the RFC 8058 one-click target, which mail providers may call in
# bursts: its statements are built once, over the tables, so a request pays neither
# for constructing SQL nor for the ORM's bookkeeping.
_subscriber = Base.metadata.tables["subscriber"]
_subscription = Base.metadata.tables["subscription"]
_delivery = Base.metadata.tables["delivery"]
_issue = Base.metadata.tables["issue"]
_newsletter = Base.metadata.tables["newsletter"]
# The reader and the newsletter a link names, in one round trip.
_READER_AND_NEWSLETTER = select(
    _subscriber.c.id,
    _subscriber.c.language,
    select(_newsletter.c.id).where(_newsletter.c.slug == bindparam("slug")).scalar_subquery(),
).where(_subscriber.c.public_id == bindparam("public_id"))
_alias = Base.metadata.tables["subscriber_alias"]
# The public id a merged reader's id now stands for (links minted before the merge).
_ALIASED = (
    select(_subscriber.c.public_id)
    .join(_alias, _alias.c.subscriber_id == _subscriber.c.id)
    .where(_alias.c.public_id == bindparam("alias"))
)
_END_SUBSCRIPTION = (
    update(_subscription)
    .where(
        _subscription.c.subscriber_id == bindparam("reader"),
        _subscription.c.newsletter_id == bindparam("newsletter"),
        _subscription.c.status != SubscriptionStatus.UNSUBSCRIBED,
    )
    .values(status=SubscriptionStatus.UNSUBSCRIBED, updated_at=bindparam("now"))
)
_SKIP_PENDING = (
    update(_delivery)
    .where(
        _delivery.c.subscriber_id == bindparam("reader"),
        _delivery.c.status == DeliveryStatus.PENDING,
        _delivery.c.issue_id.in_(
            select(_issue.c.id).where(_issue.c.newsletter_id == bindparam("newsletter"))
        ),
    )
    .values(status=DeliveryStatus.SKIPPED, last_error="unsubscribed")
)


def _expire_changed(session: Session, subscriber_id: int, newsletter_id: int) -> None:
    """Expire what the table statements changed behind the session's back.

    Only the reader's subscription and deliveries: the caller may go on using the rest,
    even after the session closes. Reads loaded values only, so nothing is fetched.
    """
    for obj in list(session.identity_map.values()):
        loaded = inspect(obj).dict
        if loaded.get("subscriber_id") != subscriber_id:
            continue
        if isinstance(obj, Delivery) or (
            isinstance(obj, Subscription) and loaded.get("newsletter_id") == newsletter_id
        ):
            session.expire(obj)


def unsubscribe(session: Session, subscriber_id: int, newsletter_id: int, origin: Origin) -> bool:
    """Unsubscribe at once; return False when there was nothing left to undo.

    Idempotent, and immediate: deliveries not yet sent to this reader for this
    newsletter are skipped in the same transaction, so a send in progress honours it.
    The status changes by one conditional UPDATE, so of two clicks at the same moment
    only one changes it and records the event.
    """
    params = {"reader": subscriber_id, "newsletter": newsletter_id, "now": utcnow()}
    changed = session.execute(_END_SUBSCRIPTION, params)
    if not changed.rowcount:  # type: ignore[attr-defined]
        return False
    session.execute(_SKIP_PENDING, params)
    _expire_changed(session, subscriber_id, newsletter_id)
    record_event(
        session, "unsubscribed", origin, subscriber_id=subscriber_id, newsletter_id=newsletter_id
    )
    return True


@dataclass(frozen=True)
class LinkUnsubscribe:
    """What an unsubscribe link did, and the language to answer the reader in."""

    changed: bool
    language: str


def unsubscribe_link(
    session: Session, public_id: str, newsletter_slug: str, origin: Origin
) -> LinkUnsubscribe:
    """Unsubscribe the reader an unsubscribe link names; ``changed`` is False if already.

    The RFC 8058 one-click target, which mail providers may call in bursts: it reads
    plain columns, not whole objects, and so costs a few statements and little CPU.
    """
    row = session.execute(
        _READER_AND_NEWSLETTER, {"public_id": public_id, "slug": newsletter_slug}
    ).first()
    if row is None:
        # Only a link minted before its reader was merged pays for the second look-up.
        current = session.scalar(_ALIASED, {"alias": public_id})
        if current is not None:
            row = session.execute(
                _READER_AND_NEWSLETTER, {"public_id": current, "slug": newsletter_slug}
            ).first()
    if row is None:
        raise GazetteError("This link belongs to a subscription that no longer exists.")
    reader_id, language, newsletter_id = row
    if newsletter_id is None or not SLUG.match(newsletter_slug):
        raise GazetteError(f"There is no newsletter {newsletter_slug!r}.")
    changed = unsubscribe(session, reader_id, newsletter_id, origin)
    return LinkUnsubscribe(changed, language)


def unsubscribe_all(session: Session, subscriber_id: int, origin: Origin) -> int:
    """Unsubscribe the reader from every newsletter; return how many changed."""
    newsletter_ids = list(
        session.scalars(
            select(Subscription.newsletter_id).where(Subscription.subscriber_id == subscriber_id)
        )
    )
    return sum(unsubscribe(session, subscriber_id, nid, origin) for nid in newsletter_ids)


@dataclass(frozen=True)
class Preferences:
    """What a reader can change from their preferences link."""

    email: str
    newsletter_name: str
    language: str
    status: SubscriptionStatus
    topics: tuple[tuple[str, str, bool], ...]  # (slug, name, chosen)
    frequency: str | None
    frequency_allowed: bool


def preferences(session: Session, public_id: str, newsletter_slug: str) -> Preferences:
    """Return a reader's preferences for one newsletter, for the preferences page."""
    subscriber = subscriber_by_public_id(session, public_id)
    newsletter = newsletter_by_slug(session, newsletter_slug)
    subscription = subscription_for(session, subscriber.id, newsletter.id)
    chosen = {t.slug for t in subscription.topics}
    offered = _offered_topics(session, newsletter)
    return Preferences(
        email=subscriber.email,
        newsletter_name=newsletter.name,
        language=subscriber.language,
        status=subscription.status,
        topics=tuple((t.slug, t.name, t.slug in chosen) for t in offered),
        frequency=subscription.frequency,
        frequency_allowed=newsletter.allow_frequency,
    )


def _offered_topics(session: Session, newsletter: Newsletter) -> list[Topic]:
    if newsletter.topics:
        return sorted(newsletter.topics, key=lambda t: t.name.casefold())
    return list(session.scalars(select(Topic).order_by(Topic.name)))


def update_preferences(
    session: Session,
    public_id: str,
    newsletter_slug: str,
    origin: Origin,
    *,
    language: str,
    topics: list[str],
    frequency: str | None,
    languages: Collection[str] = (),
) -> None:
    """Save a reader's choices: language, topics (none means all), and frequency.

    ``languages``: further languages accepted (those the preferences page offered).
    """
    subscriber = subscriber_by_public_id(session, public_id)
    newsletter = newsletter_by_slug(session, newsletter_slug)
    subscription = subscription_for(session, subscriber.id, newsletter.id)
    try:
        subscriber.language = check_language(language, languages)
    except GazetteError as error:
        raise InvalidChoiceError(str(error)) from None
    offered = {t.slug: t for t in _offered_topics(session, newsletter)}
    unknown = [slug for slug in topics if slug not in offered]
    if unknown:
        raise InvalidChoiceError(f"Topic {unknown[0]!r} is not offered by {newsletter.name}.")
    subscription.topics = [offered[slug] for slug in topics]
    if frequency is not None:
        if not newsletter.allow_frequency:
            raise InvalidChoiceError(f"{newsletter.name} does not offer a choice of frequency.")
        if frequency not in FREQUENCIES:
            raise InvalidChoiceError(
                f"Frequency {frequency!r} is not one of {', '.join(FREQUENCIES)}."
            )
        subscription.frequency = frequency
    record_event(
        session, "preferences", origin, subscriber_id=subscriber.id,
        newsletter_id=newsletter.id, language=subscriber.language,
        topics=",".join(sorted(topics)), frequency=frequency or "",
    )  # fmt: skip


def forget(session: Session, email: str, origin: Origin) -> None:
    """Delete a reader's personal data, keeping only a hash that blocks re-import.

    Their ledger rows go with them; audit events stay, detached from the person.
    """
    subscriber = subscriber_by_email(session, email)
    digest = email_hash(subscriber.email)
    if session.scalar(select(Suppression.id).where(Suppression.email_hash == digest)) is None:
        session.add(Suppression(email_hash=digest, reason="forgotten"))
    record_event(session, "forgotten", origin, subscriber_id=None)
    session.execute(update(Event).where(Event.subscriber_id == subscriber.id).values(ip=None))
    # The database cascades: subscriptions and ledger rows go, events are detached.
    session.execute(delete(Subscriber).where(Subscriber.id == subscriber.id))
    session.expunge(subscriber)
