"""Transactional messages to one reader: the double-opt-in confirmation."""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from gazette.composer import SendContext
from gazette.mailer import DeliveryError
from gazette.mime import Envelope, build_message
from gazette.ratelimit import RateLimiter
from gazette.senders import split_sender
from gazette.store.models import Newsletter, Subscriber, utcnow
from gazette.subscribers import Origin, record_event
from gazette.tokens import Purpose

# A reader who asks again and again still gets one confirmation an hour at most, so the
# form cannot be used to flood someone else's inbox.
CONFIRMATION_INTERVAL = timedelta(hours=1)


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
    confirm_url = f"{ctx.base_url}/confirm/{token}"
    rendered = ctx.renderer.render(
        "confirm",
        subscriber.language,
        newsletter_name=newsletter.name,
        confirm_url=confirm_url,
    )
    text, html = rendered.personalise(subscriber.name, "", "")
    sender = split_sender(newsletter.from_address or ctx.default_from)
    from_address = sender.address
    domain = from_address.rpartition("@")[2]
    envelope = Envelope(
        from_name=sender.name or newsletter.name,
        from_address=from_address,
        to_name=subscriber.name,
        to_address=subscriber.email,
        subject=rendered.subject,
        message_id=f"confirm.{secrets.token_hex(12)}@{domain}",
        date=utcnow(),
    )
    message: bytes = build_message(envelope, text, html, rendered.boundary)
    if ctx.signer is not None:
        message = ctx.signer.sign(message)
    try:
        with ctx.transport.connect() as connection:
            connection.send(from_address, subscriber.email, message)
    except DeliveryError:
        # Not sent, so it must not count against the reader's one-an-hour allowance.
        limiter.release(limit_key)
        raise
    with sessions() as session, session.begin():
        record_event(
            session, "confirmation_sent", Origin("system"), subscriber_id=subscriber.id,
            newsletter_id=newsletter.id,
        )  # fmt: skip
    return True
