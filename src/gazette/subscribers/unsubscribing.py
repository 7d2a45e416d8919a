"""A reader leaving: unsubscribe (one newsletter, all of them, or by link) and forget.

Unsubscribing is the RFC 8058 one-click target, which mail providers may call in
bursts: its statements are built once, over the tables, so a request pays neither for
constructing SQL nor for the ORM's bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, inspect, select, true, update
from sqlalchemy.orm import Session

from gazette.errors import GazetteError
from gazette.newsletters.service import SLUG
from gazette.store.db import Executor
from gazette.store.models import (
    OPEN_ISSUES,
    Base,
    BounceReport,
    Delivery,
    DeliveryStatus,
    Event,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from gazette.subscribers import unsubscribe_statement as statement
from gazette.subscribers.service import Origin, email_hash, record_event, subscriber_by_email

# The tables the one-click statements below are built over (see the module's docstring).
_subscriber = Base.metadata.tables["subscriber"]


_subscription = Base.metadata.tables["subscription"]
_delivery = Base.metadata.tables["delivery"]
_issue = Base.metadata.tables["issue"]
_newsletter = Base.metadata.tables["newsletter"]


# The reader and the newsletter a link names, in one round trip: the columns of
# unsubscribe_statement's row but "changed" (the newsletter's NULL when there is none).
_letter = (
    select(*(_newsletter.c[name] for name in statement.LETTER_COLUMNS))
    .where(_newsletter.c.slug == bindparam("slug"))
    .subquery("letter")
)
_READER_AND_NEWSLETTER = (
    select(
        _subscriber.c.id.label("reader_id"),
        _subscriber.c.language,
        _letter.c.id.label("newsletter_id"),
        *(_letter.c[name] for name in statement.LETTER_COLUMNS[1:]),
    )
    .select_from(_subscriber.outerjoin(_letter, true()))
    .where(_subscriber.c.public_id == bindparam("public_id"))
)


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
        # Only an open issue's pending rows can still be sent (ledger.resumable_issues).
        _delivery.c.issue_id.in_(
            select(_issue.c.id).where(
                _issue.c.newsletter_id == bindparam("newsletter"),
                _issue.c.status.in_(OPEN_ISSUES),
            )
        ),
    )
    .values(status=DeliveryStatus.SKIPPED, last_error="unsubscribed")
)


def _expire_changed(db: Executor, subscriber_id: int, newsletter_id: int) -> None:
    """Expire what the table statements changed behind a session's back.

    Only the reader's subscription and deliveries: the caller may go on using the rest,
    even after the session closes. Reads loaded values only, so nothing is fetched. A
    bare connection holds no objects.
    """
    if not isinstance(db, Session):
        return
    for obj in list(db.identity_map.values()):
        loaded = inspect(obj).dict
        if loaded.get("subscriber_id") != subscriber_id:
            continue
        if isinstance(obj, Delivery) or (
            isinstance(obj, Subscription) and loaded.get("newsletter_id") == newsletter_id
        ):
            db.expire(obj)


def unsubscribe(db: Executor, subscriber_id: int, newsletter_id: int, origin: Origin) -> bool:
    """Unsubscribe at once; return False when there was nothing left to undo.

    Idempotent, and immediate: deliveries not yet sent to this reader for this
    newsletter are skipped in the same transaction, so a send in progress honours it.
    The issues' rows are not touched: every click would queue on them, and /metrics
    counts an open issue's skipped rows instead (gazette.metrics). The status changes
    by one conditional UPDATE, so of two clicks at the same moment only one changes it
    and records the event. PostgreSQL does it all in one statement.
    """
    params = {"reader": subscriber_id, "newsletter": newsletter_id, "now": utcnow()}
    if _one_statement(db):
        row = db.execute(
            statement.BY_IDS,
            statement.parameters(
                origin, params["now"], reader=subscriber_id, newsletter=newsletter_id
            ),
        ).first()
        done = row is not None and bool(row.changed)
        if done:
            _expire_changed(db, subscriber_id, newsletter_id)
        return done
    changed = db.execute(_END_SUBSCRIPTION, params)
    if not changed.rowcount:  # type: ignore[attr-defined]
        return False
    db.execute(_SKIP_PENDING, params)
    _expire_changed(db, subscriber_id, newsletter_id)
    record_event(
        db, "unsubscribed", origin, subscriber_id=subscriber_id, newsletter_id=newsletter_id
    )
    return True


@dataclass(frozen=True)
class LinkUnsubscribe:
    """What an unsubscribe link did, and the language to answer the reader in."""

    changed: bool
    language: str
    # The newsletter's name and own brand values (unsubscribe_statement.LETTER_COLUMNS),
    # for the page that answers: brand_for reads it as it reads a Newsletter.
    newsletter: Row[Any]


def unsubscribe_link(
    db: Executor, public_id: str, newsletter_slug: str, origin: Origin
) -> LinkUnsubscribe:
    """Unsubscribe the reader an unsubscribe link names; ``changed`` is False if already.

    The RFC 8058 one-click target, which mail providers may call in bursts: it reads
    plain columns, not whole objects; on PostgreSQL a link of a current reader costs one
    statement, so a caller running it on its own (autocommit) holds no lock past it.
    A bare connection will do (store.db.run_statement's), and costs less than a session.
    """
    if not SLUG.match(newsletter_slug):
        raise GazetteError(f"There is no newsletter {newsletter_slug!r}.")
    done = _link_once(db, public_id, newsletter_slug, origin)
    if done is None:
        # Only a link minted before its reader was merged pays for the second look-up.
        current = db.scalar(_ALIASED, {"alias": public_id})
        if current is not None:
            done = _link_once(db, current, newsletter_slug, origin)
    if done is None:
        raise GazetteError("This link belongs to a subscription that no longer exists.")
    return done


def _link_once(
    db: Executor, public_id: str, newsletter_slug: str, origin: Origin
) -> LinkUnsubscribe | None:
    """Unsubscribe the reader ``public_id`` names, or None when there is no such reader."""
    if _one_statement(db):
        params = statement.parameters(origin, utcnow(), public_id=public_id, slug=newsletter_slug)
        row = db.execute(statement.BY_LINK, params).first()
        if row is None:
            return None
        if row.newsletter_id is None:
            raise GazetteError(f"There is no newsletter {newsletter_slug!r}.")
        if row.changed:
            _expire_changed(db, row.reader_id, row.newsletter_id)
        return LinkUnsubscribe(bool(row.changed), row.language, row)
    found = db.execute(
        _READER_AND_NEWSLETTER, {"public_id": public_id, "slug": newsletter_slug}
    ).first()
    if found is None:
        return None
    if found.newsletter_id is None:
        raise GazetteError(f"There is no newsletter {newsletter_slug!r}.")
    changed = unsubscribe(db, found.reader_id, found.newsletter_id, origin)
    return LinkUnsubscribe(changed, found.language, found)


def _one_statement(db: Executor) -> bool:
    """True on PostgreSQL, where unsubscribing is one statement (unsubscribe_statement)."""
    bind = db if isinstance(db, Connection) else db.get_bind()
    return bind.dialect.name == "postgresql"


def unsubscribe_all(session: Session, subscriber_id: int, origin: Origin) -> int:
    """Unsubscribe the reader from every newsletter; return how many changed."""
    newsletter_ids = list(
        session.scalars(
            select(Subscription.newsletter_id).where(Subscription.subscriber_id == subscriber_id)
        )
    )
    return sum(unsubscribe(session, subscriber_id, nid, origin) for nid in newsletter_ids)


@dataclass(frozen=True)
class Forgotten:
    """Who was forgotten: what finds the bounce messages about them still kept."""

    email: str
    # Their ledger rows' ids, which the VERP tokens of bounces about them name.
    delivery_ids: tuple[int, ...]


def forget(session: Session, email: str, origin: Origin) -> Forgotten:
    """Delete a reader's personal data, keeping only a hash that blocks re-import.

    Their ledger rows go with them; audit events stay, detached from the person, and so
    do the bounce reports about them (their key still marks a message as processed).
    """
    subscriber = subscriber_by_email(session, email)
    delivery_ids = tuple(
        session.scalars(select(Delivery.id).where(Delivery.subscriber_id == subscriber.id))
    )
    session.execute(
        update(BounceReport)
        .where(BounceReport.subscriber_id == subscriber.id)
        .values(subscriber_id=None, delivery_id=None)
    )
    digest = email_hash(subscriber.email)
    if session.scalar(select(Suppression.id).where(Suppression.email_hash == digest)) is None:
        session.add(Suppression(email_hash=digest, reason="forgotten"))
    record_event(session, "forgotten", origin, subscriber_id=None)
    session.execute(update(Event).where(Event.subscriber_id == subscriber.id).values(ip=None))
    # The ledger has no foreign keys (they cost planning most of its time): its rows go
    # first, here; the database cascades the subscriptions and detaches the events.
    session.execute(delete(Delivery).where(Delivery.subscriber_id == subscriber.id))
    session.execute(delete(Subscriber).where(Subscriber.id == subscriber.id))
    session.expunge(subscriber)
    return Forgotten(subscriber.email, delivery_ids)
