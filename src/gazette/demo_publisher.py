"""The demo publisher: example articles, newsletter and readers in three languages."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gazette.articles.feed_documents import parse_feed
from gazette.articles.feeds import IngestResult, store_items
from gazette.newsletters.service import ensure_newsletter
from gazette.resources import shipped_dir
from gazette.store.models import Delivery, DeliveryStatus, Subscriber, utcnow
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe

NEWSLETTER = "meridian-weekly"
NEWSLETTER_NAME = "Meridian Weekly"
READERS = (
    ("olivia.bennett@example.org", "Olivia Bennett", "en"),
    ("reader@example.com", "", "en"),
    ("oksana.kovalenko@example.org", "Оксана Коваленко", "uk"),
    ("hanako.sato@example.net", "佐藤 花子", "ja"),
)
# The reader whose message the demo shows: in Ukrainian, so the operator sees text in
# another script arrive whole, not as the quoted-printable the file holds.
SHOWN_READER = "oksana.kovalenko@example.org"


@dataclass(frozen=True)
class DemoSeed:
    """What seeding did: the newsletter's id, the ingest counts and the readers added."""

    newsletter_id: int
    ingest: IngestResult
    readers_added: int


def example_feed() -> Path:
    """Return the path of the example feed shipped with Gazette."""
    return shipped_dir("examples") / "feed.xml"


def seed(session: Session, now: datetime | None = None) -> DemoSeed:
    """Load the example feed, the demo newsletter and its readers; idempotent.

    The example posts are moved forward in time so the newest is a day old: an issue
    carries only what was published within the newsletter's look-back window, so a
    demo run weeks after the example was written would otherwise find nothing to send.
    Publication dates are frozen at first sight, so a second run keeps them.
    """
    feed = example_feed()
    items = parse_feed(feed.read_bytes(), str(feed))
    if items:
        # Whole days, so runs on the same day give the same dates (nothing "updated").
        newest = max(i.published_at for i in items)
        shift = timedelta(days=((now or utcnow()).date() - newest.date()).days - 1)
        items = [replace(i, published_at=i.published_at + shift) for i in items]
    ingest = store_items(session, items)
    newsletter_id = ensure_newsletter(session, NEWSLETTER, NEWSLETTER_NAME)
    origin = Origin(source="demo")
    added = 0
    for email, name, language in READERS:
        result = subscribe(
            session, email, NEWSLETTER, origin, name=name, language=language, confirmed=True
        )
        added += result.created
    return DemoSeed(newsletter_id, ingest, added)


def sent_count(session: Session, issue_id: int) -> int:
    """Return how many deliveries of the issue the ledger records as sent."""
    return (
        session.scalar(
            select(func.count()).where(
                Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.SENT
            )
        )
        or 0
    )


@dataclass(frozen=True)
class SentSample:
    """One message the demo sent: its Message-ID and the reader it went to."""

    message_id: str | None
    public_id: str
    email: str


def first_sent(session: Session, issue_id: int) -> SentSample | None:
    """A delivery of the issue the ledger records as sent, to show the operator.

    SHOWN_READER's when it went out, else the first sent.
    """
    row = session.execute(
        select(Delivery.message_id, Subscriber.public_id, Subscriber.email)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.SENT)
        .order_by(Subscriber.email != SHOWN_READER, Delivery.id)
        .limit(1)
    ).first()
    return SentSample(*row) if row is not None else None


def find_in_maildir(root: Path, message_id: str) -> Path | None:
    """Return the Maildir file carrying ``message_id``, or None when there is none."""
    needle = f"Message-ID: <{message_id}>".encode()
    for sub in ("new", "cur"):
        folder = root / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir(), reverse=True):
            with path.open("rb") as handle:
                head = handle.read(4096)
            if needle in head:
                return path
    return None


@dataclass(frozen=True)
class Glimpse:
    """A message as a mail client shows it: its subject and its text part's first lines."""

    subject: str
    lines: list[str]


def glimpse(path: Path, lines: int = 6) -> Glimpse:
    """The decoded subject and first non-blank lines of the text part of the message at ``path``.

    Parsed with the email package's modern policy, so encoded words and
    quoted-printable come back as the UTF-8 text a reader sees.
    """
    with path.open("rb") as handle:
        message = BytesParser(_class=EmailMessage, policy=policy.default).parse(handle)
    body = message.get_body(("plain",))
    text = body.get_content() if body is not None else ""
    shown = [line.rstrip() for line in text.splitlines() if line.strip()]
    return Glimpse(str(message["Subject"] or ""), shown[:lines])
