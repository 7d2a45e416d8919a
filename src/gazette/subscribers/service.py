"""What every reader module shares: finding a reader, checking input, the audit log.

Subscribing, preferences and unsubscribing (subscribing.py, preferences.py,
unsubscribing.py) build on these. Every change is recorded as an event (what, when,
how, from where). Readers are named in links by an opaque public id, never by address
or row id; a forgotten address survives only as the hash suppression keeps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from gazette.addresses import AddressError, address_and_key, identity_key, normalise_address
from gazette.errors import GazetteError
from gazette.store.db import Executor
from gazette.store.models import (
    Base,
    Subscriber,
    SubscriberAlias,
    Subscription,
    Suppression,
)

LANGUAGES = ("en", "uk", "ja")
FREQUENCIES = ("daily", "weekly")


@dataclass(frozen=True)
class Origin:
    """How a change arrived, for the event log: the channel and, for the web, the IP."""

    source: str  # "web", "cli", "import", "demo", "system"
    ip: str | None = None


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
    session: Executor,
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
