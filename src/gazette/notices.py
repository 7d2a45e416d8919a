"""Transactional messages to one reader: the double-opt-in confirmation."""

from __future__ import annotations

import re
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
    confirm_url = f"{ctx.base_url}/confirm/{token}"
    rendered = ctx.renderer.render(
        "confirm",
        subscriber.language,
        newsletter_name=newsletter.name,
        confirm_url=confirm_url,
    )
    name = greeting_name(subscriber.name)
    text, html = rendered.personalise(name, "", "")  # escaped in the HTML part
    sender = split_sender(newsletter.from_address or ctx.default_from)
    from_address = sender.address
    domain = from_address.rpartition("@")[2]
    envelope = Envelope(
        from_name=sender.name or newsletter.name,
        from_address=from_address,
        to_name=name,
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
