"""Sending: claim a batch of the ledger, render, hand to the transport, record each result.

A batch is a range of delivery ids. Claiming is one conditional UPDATE (pending ->
sending, with a lease), so two workers given the same range never send the same row;
a worker that dies leaves rows in "sending" that the sweep returns to "pending" once
their lease expires. Results are recorded in short transactions, a chunk at a time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from gazette.bounces import record_bounce
from gazette.mailer import Connection, DeliveryError, Transport
from gazette.mime import Envelope, build_message
from gazette.ratelimit import Throttle
from gazette.rendering import ArticleView, IssueView, RenderedMessage, Renderer
from gazette.store.models import (
    Article,
    Delivery,
    DeliveryStatus,
    Issue,
    IssueArticle,
    IssueStatus,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from gazette.text import html_to_text
from gazette.tokens import Purpose, Tokens

# Results are written back this many messages at a time: one short transaction per
# chunk instead of one per message, and at most this many rows to re-send after a crash.
RECORD_CHUNK = 50
RETRY_BASE = timedelta(minutes=5)
RETRY_PERIOD = timedelta(days=3)


@dataclass(frozen=True)
class SendContext:
    """What sending needs besides the database: links, keys, templates, transport."""

    base_url: str
    default_from: str
    tokens: Tokens
    renderer: Renderer
    transport: Transport
    lease: timedelta
    throttle: Throttle
    # Issues already loaded and rendered in this process: every batch of an issue
    # shares them, so the body is rendered once per issue and language, not per batch.
    cache: dict[int, _Composer] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class BatchResult:
    """Counts of one batch: claimed rows and what became of them."""

    claimed: int
    sent: int
    retry: int
    failed: int
    skipped: int


@dataclass(frozen=True)
class _Recipient:
    delivery_id: int
    subscriber_id: int
    subscriber_public_id: str
    email: str
    name: str
    language: str
    attempts: int


@dataclass(frozen=True)
class PreparedIssue:
    """The per-issue part of every message, loaded and rendered once per language."""

    issue_public_id: str
    newsletter_slug: str
    list_id: str
    from_name: str
    from_address: str
    planned_at: datetime
    view: IssueView


def _domain(address: str) -> str:
    return address.rpartition("@")[2]


def prepare_issue(session: Session, issue_id: int, ctx: SendContext) -> PreparedIssue:
    """Load an issue's newsletter and frozen articles into a template-ready view."""
    issue = session.get_one(Issue, issue_id)
    newsletter = session.get_one(Newsletter, issue.newsletter_id)
    rows = session.scalars(
        select(Article)
        .join(IssueArticle, IssueArticle.article_id == Article.id)
        .where(IssueArticle.issue_id == issue_id)
        .order_by(IssueArticle.position)
    )
    articles = tuple(
        ArticleView(
            title=a.title,
            url=a.url,
            summary_html=a.summary,
            summary_text=html_to_text(a.summary),
            author=a.author,
            published_at=a.published_at,
        )
        for a in rows
    )
    from_address = newsletter.from_address or ctx.default_from
    list_id = newsletter.list_id or f"{newsletter.name} <{newsletter.slug}.{_domain(from_address)}>"
    return PreparedIssue(
        issue_public_id=issue.public_id,
        newsletter_slug=newsletter.slug,
        list_id=list_id,
        from_name=newsletter.name,
        from_address=from_address,
        planned_at=issue.planned_at,
        view=IssueView(
            newsletter_name=newsletter.name,
            date=issue.cutoff_at,
            articles=articles,
            archive_url=f"{ctx.base_url}/archive/{issue.public_id}",
        ),
    )


def claim(session: Session, issue_id: int, low: int, high: int, lease: timedelta) -> list[int]:
    """Atomically move due pending rows in [low, high] to "sending"; return their ids.

    One conditional UPDATE: a row another worker already claimed no longer matches
    ``status = 'pending'``, so it is never returned twice.
    """
    now = utcnow()
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.issue_id == issue_id,
            Delivery.id.between(low, high),
            Delivery.status == DeliveryStatus.PENDING,
            (Delivery.next_attempt_at.is_(None)) | (Delivery.next_attempt_at <= now),
        )
        .values(
            status=DeliveryStatus.SENDING,
            lease_until=now + lease,
            attempts=Delivery.attempts + 1,
        )
        .returning(Delivery.id)
    )
    return sorted(result.scalars())


def _recipients(session: Session, delivery_ids: Sequence[int]) -> list[_Recipient]:
    """Load the claimed rows whose subscription is still active, in id order."""
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.subscriber_id,
            Subscriber.public_id,
            Subscriber.email,
            Subscriber.name,
            Subscriber.language,
            Delivery.attempts,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .join(Issue, Issue.id == Delivery.issue_id)
        .join(
            Subscription,
            and_(
                Subscription.subscriber_id == Delivery.subscriber_id,
                Subscription.newsletter_id == Issue.newsletter_id,
            ),
        )
        .where(
            Delivery.id.in_(delivery_ids),
            Delivery.status == DeliveryStatus.SENDING,
            Subscription.status == SubscriptionStatus.ACTIVE,
        )
        .order_by(Delivery.id)
    )
    return [_Recipient(*row) for row in rows]


def message_id(issue_public_id: str, subscriber_public_id: str, domain: str) -> str:
    """Deterministic per (issue, subscriber), so a resend is recognisably the same message."""
    return f"{issue_public_id}.{subscriber_public_id}@{domain}"


class _Composer:
    """Builds one reader's message from the issue's pre-rendered parts."""

    def __init__(self, prepared: PreparedIssue, ctx: SendContext) -> None:
        self.prepared = prepared
        self._ctx = ctx
        self._rendered: dict[str, RenderedMessage] = {}

    def _parts(self, language: str) -> RenderedMessage:
        rendered = self._rendered.get(language)
        if rendered is None:
            rendered = self._ctx.renderer.render_issue(self.prepared.view, language)
            self._rendered[language] = rendered
        return rendered

    def compose(self, recipient: _Recipient, date: datetime) -> tuple[str, bytes]:
        """Return (Message-ID, message bytes) for one reader."""
        prepared, ctx = self.prepared, self._ctx
        unsubscribe = ctx.tokens.mint(
            Purpose.UNSUBSCRIBE, recipient.subscriber_public_id, prepared.newsletter_slug
        )
        preferences = ctx.tokens.mint(
            Purpose.PREFERENCES, recipient.subscriber_public_id, prepared.newsletter_slug
        )
        unsubscribe_url = f"{ctx.base_url}/unsubscribe/{unsubscribe}"
        parts = self._parts(recipient.language)
        text, html = parts.personalise(
            recipient.name, unsubscribe_url, f"{ctx.base_url}/preferences/{preferences}"
        )
        mid = message_id(
            prepared.issue_public_id,
            recipient.subscriber_public_id,
            _domain(prepared.from_address),
        )
        envelope = Envelope(
            from_name=prepared.from_name,
            from_address=prepared.from_address,
            to_name=recipient.name,
            to_address=recipient.email,
            subject=parts.subject,
            message_id=mid,
            date=date,
            list_id=prepared.list_id,
            unsubscribe_url=unsubscribe_url,
        )
        return mid, build_message(envelope, text, html, parts.boundary)


def _retry_at(attempts: int, now: datetime) -> datetime:
    """Exponential backoff from five minutes, doubling per attempt, capped at six hours."""
    delay: timedelta = min(RETRY_BASE * (2 ** max(attempts - 1, 0)), timedelta(hours=6))
    return now + delay


def send_batch(
    factory: sessionmaker[Session], ctx: SendContext, issue_id: int, low: int, high: int
) -> BatchResult:
    """Send the pending deliveries of ``issue_id`` with ids in [low, high].

    Safe to run twice or concurrently for the same range: only rows this call claims
    are sent. Every result is recorded; one failing address never fails the batch.
    """
    with factory() as session, session.begin():
        claimed = claim(session, issue_id, low, high, ctx.lease)
        if not claimed:
            return BatchResult(0, 0, 0, 0, 0)
        session.execute(
            update(Issue)
            .where(Issue.id == issue_id, Issue.status == IssueStatus.PLANNED)
            .values(status=IssueStatus.SENDING, started_at=utcnow())
        )
    composer = _composer(factory, ctx, issue_id)
    counts: Counter[str] = Counter()
    with ctx.transport.connect() as connection:
        for start in range(0, len(claimed), RECORD_CHUNK):
            chunk = claimed[start : start + RECORD_CHUNK]
            # Re-read per chunk so an unsubscribe that lands mid-send is honoured.
            with factory() as session:
                recipients = _recipients(session, chunk)
            outcome = _send_chunk(connection, composer, ctx, chunk, recipients)
            with factory() as session, session.begin():
                session.execute(update(Delivery), outcome.updates)
                for subscriber_id, hard, detail in outcome.bounces:
                    record_bounce(session, subscriber_id, hard=hard, detail=detail)
            counts.update(outcome.counts)
    return BatchResult(
        len(claimed), counts["sent"], counts["retry"], counts["failed"], counts["skipped"]
    )


@dataclass
class _ChunkOutcome:
    updates: list[dict[str, object]] = field(default_factory=list)
    bounces: list[tuple[int, bool, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


def _send_chunk(
    connection: Connection,
    composer: _Composer,
    ctx: SendContext,
    chunk: list[int],
    recipients: list[_Recipient],
) -> _ChunkOutcome:
    """Send one chunk over the open connection; return the ledger updates it implies."""
    outcome = _ChunkOutcome()
    now = utcnow()
    active = {r.delivery_id for r in recipients}
    for delivery_id in chunk:
        if delivery_id not in active:
            outcome.updates.append(
                {"id": delivery_id, "status": DeliveryStatus.SKIPPED,
                 "last_error": "no longer subscribed", "lease_until": None}
            )  # fmt: skip
            outcome.counts["skipped"] += 1
    sender = composer.prepared.from_address
    for recipient in recipients:
        mid, message = composer.compose(recipient, now)
        ctx.throttle.wait()
        try:
            connection.send(sender, recipient.email, message)
        except DeliveryError as failure:
            row = _failure_update(recipient, failure, now, composer.prepared.planned_at)
            outcome.updates.append(row)
            if row["status"] == DeliveryStatus.FAILED:
                outcome.counts["failed"] += 1
                # 5xx (but 552) is a hard bounce; a retry period run out is a soft one.
                outcome.bounces.append((recipient.subscriber_id, failure.permanent, failure.detail))
            else:
                outcome.counts["retry"] += 1
            continue
        outcome.updates.append(
            {"id": recipient.delivery_id, "status": DeliveryStatus.SENT, "message_id": mid,
             "sent_at": utcnow(), "lease_until": None, "last_error": None}
        )  # fmt: skip
        outcome.counts["sent"] += 1
    return outcome


def _failure_update(
    recipient: _Recipient, failure: DeliveryError, now: datetime, planned_at: datetime
) -> dict[str, object]:
    """Ledger update for a refused message: failed for good, or pending with a backoff."""
    # Transient failures are retried until the retry period, counted from planning, ends.
    permanent = failure.permanent or now - planned_at > RETRY_PERIOD
    if permanent:
        return {
            "id": recipient.delivery_id,
            "status": DeliveryStatus.FAILED,
            "last_error": failure.detail[:1000],
            "lease_until": None,
        }
    return {
        "id": recipient.delivery_id,
        "status": DeliveryStatus.PENDING,
        "last_error": failure.detail[:1000],
        "lease_until": None,
        "next_attempt_at": _retry_at(recipient.attempts, now),
    }


def _composer(factory: sessionmaker[Session], ctx: SendContext, issue_id: int) -> _Composer:
    """Return the issue's composer, loading the issue once per process and context."""
    composer = ctx.cache.get(issue_id)
    if composer is None:
        with factory() as session:
            composer = _Composer(prepare_issue(session, issue_id, ctx), ctx)
        if len(ctx.cache) >= 16:
            ctx.cache.clear()
        ctx.cache[issue_id] = composer
    return composer


def reclaim_expired(session: Session, now: datetime | None = None) -> int:
    """Return rows whose lease ran out (their worker died) to "pending"; count them."""
    now = now or utcnow()
    result = session.execute(
        update(Delivery)
        .where(Delivery.status == DeliveryStatus.SENDING, Delivery.lease_until < now)
        .values(status=DeliveryStatus.PENDING, lease_until=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def finish_issue(session: Session, issue_id: int) -> bool:
    """Mark the issue sent with its counts once no row is pending or sending.

    Returns True when the issue is (now or already) finished.
    """
    counts = dict(
        session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.issue_id == issue_id)
            .group_by(Delivery.status)
        ).all()
    )
    if counts.get(DeliveryStatus.PENDING) or counts.get(DeliveryStatus.SENDING):
        return False
    session.execute(
        update(Issue)
        .where(Issue.id == issue_id, Issue.status.in_([IssueStatus.PLANNED, IssueStatus.SENDING]))
        .values(
            status=IssueStatus.SENT,
            finished_at=utcnow(),
            sent_count=counts.get(DeliveryStatus.SENT, 0),
            failed_count=counts.get(DeliveryStatus.FAILED, 0),
            skipped_count=counts.get(DeliveryStatus.SKIPPED, 0),
        )
    )
    return True
