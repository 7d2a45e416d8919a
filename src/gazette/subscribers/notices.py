"""Transactional messages to one reader: the double-opt-in confirmation and the welcome."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gazette.digests.composer import SendContext
from gazette.digests.envelopes import domain_of, list_id_for, reader_links, sealed
from gazette.mail.mime import Envelope
from gazette.mail.outcomes import DeliveryError
from gazette.mail.senders import split_sender
from gazette.mail.verp import envelope_sender
from gazette.newsletters.brand import brand_for
from gazette.newsletters.service import Schedule
from gazette.ratelimit import RateLimiter
from gazette.rendering import RenderedMessage
from gazette.store.models import (
    Edition,
    Event,
    Issue,
    IssueStatus,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from gazette.subscribers.service import Origin, record_event
from gazette.text import clean_line
from gazette.tokens import Purpose

# A reader who asks again and again still gets one confirmation an hour at most, so the
# form cannot be used to flood someone else's inbox.
CONFIRMATION_INTERVAL = timedelta(hours=1)
# The name on the sign-up form is typed by whoever fills it in, not necessarily the
# mailbox's owner, and the confirmation goes out from the publisher's domain: it quotes
# at most this much of it, and nothing that reads as a link or an address.
GREETING_MAX = 40
_NOT_A_NAME = re.compile(r"[<>@/\\:]|www\.|\w\.\w{2,}", re.IGNORECASE)


def send_confirmation(
    sessions: sessionmaker[Session],
    ctx: SendContext,
    limiter: RateLimiter,
    subscriber_id: int,
    newsletter_id: int,
) -> bool:
    """Email the reader a link to confirm; False when one went out within the hour.

    No transaction stays open while the relay is talked to: SQLite would hold its
    write lock for the whole SMTP exchange.
    """
    with sessions() as session:
        subscriber = session.get_one(Subscriber, subscriber_id)
        newsletter = session.get_one(Newsletter, newsletter_id)
    limit_key = f"confirm-mail:{subscriber.email}"
    if not limiter.hit(limit_key, 1, CONFIRMATION_INTERVAL):
        return False
    token = ctx.tokens.mint(Purpose.CONFIRM, subscriber.public_id, newsletter.slug)
    rendered = ctx.renderer.render(
        "confirm",
        subscriber.language,
        newsletter_name=newsletter.name,
        confirm_url=f"{ctx.base_url}/confirm/{token}",
        brand=brand_for(newsletter, ctx.brand),
    )
    try:
        _send_one(ctx, rendered, newsletter, subscriber, "confirm", utcnow())
    except DeliveryError:
        # Not sent, so it must not count against the reader's one-an-hour allowance.
        limiter.release(limit_key)
        raise
    _record_sent(sessions, "confirmation_sent", subscriber.id, newsletter.id)
    return True


def _record_sent(
    sessions: sessionmaker[Session], kind: str, subscriber_id: int, newsletter_id: int
) -> None:
    """Record that a notice went out, in a transaction of its own once the relay took it."""
    with sessions() as session, session.begin():
        record_event(
            session, kind, Origin("system"), subscriber_id=subscriber_id,
            newsletter_id=newsletter_id,
        )  # fmt: skip


def _send_one(
    ctx: SendContext,
    rendered: RenderedMessage,
    newsletter: Newsletter,
    subscriber: Subscriber,
    kind: str,
    now: datetime,
    links: tuple[str, str] | None = None,
) -> None:
    """Personalise, sign and send one transactional message to the reader.

    ``links``: the reader's (unsubscribe, preferences) URLs; a message that has them
    carries the List-Id and one-click List-Unsubscribe headers a digest carries.
    """
    name = greeting_name(subscriber.name)
    unsubscribe_url, preferences_url = links or ("", "")
    text, html = rendered.personalise(name, unsubscribe_url, preferences_url)  # HTML escaped
    sender = split_sender(newsletter.from_address or ctx.default_from)
    envelope = Envelope(
        from_name=sender.name or newsletter.name,
        from_address=sender.address,
        to_name=name,
        to_address=subscriber.email,
        subject=rendered.subject,
        message_id=f"{kind}.{secrets.token_hex(12)}@{domain_of(sender.address)}",
        date=now,
        list_id=list_id_for(newsletter, sender.address) if links else None,
        list_name=sender.name or newsletter.name if links else "",
        unsubscribe_url=unsubscribe_url or None,
    )
    message = sealed(ctx, envelope, text, html, rendered.boundary)
    # No ledger row to name: the plain bounce address (when set), its reports matched
    # to the reader by address.
    mail_from = envelope_sender(ctx.verp, sender.address, None)
    with ctx.transport.connect() as connection:
        connection.send(mail_from, subscriber.email, message)


def greeting_name(name: str) -> str:
    """The part of a sign-up name the confirmation may quote, or "" to greet without one.

    One line, its leading words up to GREETING_MAX characters (never a word cut in
    two), with at least one letter; none at all when it holds anything a mail client
    could make a link of or an address: "<", ">", "@", "/", "\\", ":", "www." or a
    domain-like "word.word".
    """
    line = clean_line(name, 200)
    if _NOT_A_NAME.search(line) or not any(ch.isalpha() for ch in line):
        return ""
    if len(line) > GREETING_MAX:
        head = line[: GREETING_MAX + 1]
        line = head.rsplit(" ", 1)[0] if " " in head else ""
    return line


def welcome_due(session: Session, public_id: str, newsletter_slug: str) -> int | None:
    """The id of the reader's subscription when its newsletter sends a welcome, else None.

    Asked right after a confirmation that changed something, in the same transaction.
    """
    row = session.execute(
        select(Subscription.id, Newsletter.welcome)
        .join(Newsletter, Newsletter.id == Subscription.newsletter_id)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(Subscriber.public_id == public_id, Newsletter.slug == newsletter_slug)
    ).first()
    return row[0] if row is not None and row[1] else None


def next_issue_at(newsletter: Newsletter, now: datetime) -> datetime:
    """When the newsletter's schedule next fires after ``now``, in its own zone."""
    return Schedule(newsletter.schedule_cron, newsletter.timezone).next_fire(now)


def send_welcome(
    sessions: sessionmaker[Session],
    ctx: SendContext,
    subscription_id: int,
    now: datetime | None = None,
) -> bool:
    """Welcome a reader who just confirmed; False when it is not due or was already sent.

    Says what the newsletter brings and when its next issue is due, links the latest
    issue in the archive and the reader's preferences. Sent once per confirmation
    (a redelivered task finds the "welcome_sent" event), only to an active
    subscription of a newsletter that has the welcome on; no transaction stays open
    while the relay is talked to.
    """
    now = now or utcnow()
    with sessions() as session:
        due = _welcome_to_send(session, subscription_id)
    if due is None:
        return False
    subscriber, newsletter, latest = due
    links = reader_links(ctx, subscriber.public_id, newsletter.slug)
    rendered = _render_welcome(ctx, newsletter, subscriber.language, latest, now)
    _send_one(ctx, rendered, newsletter, subscriber, "welcome", now, links)
    _record_sent(sessions, "welcome_sent", subscriber.id, newsletter.id)
    return True


# The latest regular issue that went out: (public id, cutoff).
_Latest = tuple[str, datetime]


def _welcome_to_send(
    session: Session, subscription_id: int
) -> tuple[Subscriber, Newsletter, _Latest | None] | None:
    """The reader, newsletter and latest issue of a welcome still due; None when none is."""
    subscription = session.get(Subscription, subscription_id)
    if subscription is None or subscription.status != SubscriptionStatus.ACTIVE:
        return None
    subscriber = session.get_one(Subscriber, subscription.subscriber_id)
    newsletter = session.get_one(Newsletter, subscription.newsletter_id)
    if not newsletter.welcome or _welcomed(session, subscriber, newsletter.id):
        return None
    latest = session.execute(
        select(Issue.public_id, Issue.cutoff_at)
        .where(
            Issue.newsletter_id == newsletter.id,
            Issue.status.in_((IssueStatus.SENDING, IssueStatus.SENT)),
            Issue.edition == Edition.REGULAR,
        )
        .order_by(Issue.cutoff_at.desc(), Issue.id.desc())
        .limit(1)
    ).first()
    return subscriber, newsletter, (latest[0], latest[1]) if latest else None


def _render_welcome(
    ctx: SendContext, newsletter: Newsletter, language: str, latest: _Latest | None, now: datetime
) -> RenderedMessage:
    """The welcome in the reader's language: what comes when, the latest issue, the archive."""
    return ctx.renderer.render(
        "welcome",
        language,
        newsletter_name=newsletter.name,
        description=newsletter.description or "",
        next_issue=next_issue_at(newsletter, now),
        latest_url=f"{ctx.base_url}/archive/{latest[0]}" if latest else "",
        latest_date=latest[1] if latest else None,
        archive_url=f"{ctx.base_url}/archive?newsletter={newsletter.slug}",
        brand=brand_for(newsletter, ctx.brand),
    )


def _welcomed(session: Session, subscriber: Subscriber, newsletter_id: int) -> bool:
    """True when a welcome went out since the reader's latest consent."""
    query = select(Event.id).where(
        Event.subscriber_id == subscriber.id,
        Event.newsletter_id == newsletter_id,
        Event.kind == "welcome_sent",
    )
    if subscriber.consent_at is not None:
        query = query.where(Event.created_at >= subscriber.consent_at)
    return session.scalar(query.limit(1)) is not None
