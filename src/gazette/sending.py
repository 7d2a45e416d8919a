"""Sending: claim a batch of the ledger, render, hand to the transport, record each result.

A batch is a range of delivery ids. Claiming is one conditional UPDATE (pending ->
sending, with a lease), so two workers given the same range never send the same row;
a worker that dies leaves rows in "sending" that the sweep returns to "pending" once
their lease expires. Results are recorded in short transactions, a chunk at a time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from itertools import groupby
from operator import itemgetter
from typing import cast

from sqlalchemy import Table, Text, Update, and_, bindparam, func, or_, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session, sessionmaker

from gazette.bounces import record_bounce
from gazette.composer import Composer, Reader, SendContext, composer_for, message_id
from gazette.languages import extra_languages_from_json
from gazette.mailer import RELAY_STEPS, Connection, DeliveryError, Fault
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Issue,
    IssueStatus,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Topic,
    subscription_topic,
    utcnow,
)

__all__ = ["BatchResult", "SendContext", "message_id", "send_batch"]

# Results are written back this many messages at a time: one short transaction per
# chunk instead of one per message, and at most this many rows to re-send after a crash.
RECORD_CHUNK = 50
RETRY_BASE = timedelta(minutes=5)
RETRY_PERIOD = timedelta(days=3)


@dataclass(frozen=True)
class BatchResult:
    """Counts of one batch: claimed rows and what became of them."""

    claimed: int
    sent: int
    retry: int
    failed: int
    skipped: int
    # The relay's words when it refused the session (login, MAIL FROM, TLS, connection)
    # and the batch stopped; the rows it did not send wait for a retry.
    relay_error: str | None = None


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


@dataclass(frozen=True)
class _Recipient:
    delivery_id: int
    subscriber_id: int
    attempts: int
    reader: Reader


def _recipients(session: Session, delivery_ids: Sequence[int]) -> list[_Recipient]:
    """Load the claimed rows whose subscription is still active, in id order.

    One query per chunk whatever its size: the rows joined to the topics their readers
    chose (a reader with several topics comes back once per topic, and is folded here),
    with the further languages each reader reads, for routing by language.
    """
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.subscriber_id,
            Delivery.attempts,
            Subscriber.public_id,
            Subscriber.email,
            Subscriber.name,
            Subscriber.language,
            # As text: decoded once per distinct list (languages.py), not once per row.
            sql_cast(Subscriber.extra_languages, Text),
            Topic.slug,
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
        .outerjoin(subscription_topic, subscription_topic.c.subscription_id == Subscription.id)
        .outerjoin(Topic, Topic.id == subscription_topic.c.topic_id)
        .where(
            Delivery.id.in_(delivery_ids),
            Delivery.status == DeliveryStatus.SENDING,
            Subscription.status == SubscriptionStatus.ACTIVE,
        )
        .order_by(Delivery.id)
    ).all()
    recipients = []
    # Ordered by delivery id, so a reader's rows (one per chosen topic) are adjacent.
    for delivery_id, group in groupby(rows, key=itemgetter(0)):
        same = list(group)
        _, subscriber_id, attempts, public_id, email, name, language, extra, _slug = same[0]
        topics = frozenset(row[-1] for row in same if row[-1] is not None)
        reader = Reader(public_id, email, name, language, topics, extra_languages_from_json(extra))
        recipients.append(_Recipient(delivery_id, subscriber_id, attempts, reader))
    return recipients


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
    lease = _Lease(claimed, ctx.lease)
    with factory() as session:
        composer = composer_for(session, ctx, issue_id)
    counts: Counter[str] = Counter()
    outcome: _ChunkOutcome | None = None
    halted: DeliveryError | None = None
    with ctx.transport.connect() as connection:
        for start in range(0, len(claimed), RECORD_CHUNK):
            chunk = claimed[start : start + RECORD_CHUNK]
            # The chunk just sent is recorded (and committed) before the next one's
            # readers are re-read, so an unsubscribe that lands mid-send is honoured and
            # a failed read cannot take recorded results with it.
            with factory() as session:
                if outcome is not None:
                    with session.begin():
                        _record(session, outcome, lease, start)
                with session.begin():
                    recipients = _recipients(session, chunk)
            outcome = _send_chunk(connection, composer, ctx, chunk, recipients)
            counts.update(outcome.counts)
            if outcome.halted is not None:
                # The relay refused the session: every later message would meet the
                # same refusal, so the rest of the batch waits with the same backoff.
                halted = outcome.halted
                rest = _left_waiting(
                    claimed[start + RECORD_CHUNK :], halted, outcome.halted_attempts,
                    utcnow(), composer.prepared.planned_at,
                )  # fmt: skip
                outcome.updates.extend(rest)
                counts.update(_counted(row) for row in rest)
                break
        if outcome is not None:
            with factory() as session, session.begin():
                _record(session, outcome, lease, len(claimed))
    return BatchResult(
        len(claimed), counts["sent"], counts["retry"], counts["failed"], counts["skipped"],
        halted.detail if halted is not None else None,
    )  # fmt: skip


@dataclass
class _ChunkOutcome:
    # One dict per row: "row_id" and the columns to set, as _ledger_update binds them.
    updates: list[dict[str, object]] = field(default_factory=list)
    bounces: list[tuple[int, bool, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    # The session-level refusal that stopped the batch, and its row's attempt count.
    halted: DeliveryError | None = None
    halted_attempts: int = 1


class _Lease:
    """When a batch's claimed rows last had their lease set, to renew it in time."""

    def __init__(self, claimed: list[int], length: timedelta) -> None:
        self.claimed = claimed
        self.length = length
        self.set_at = utcnow()

    def renew_if_due(self, session: Session, sent_up_to: int) -> None:
        """Extend the lease of the rows not sent yet once half of it has gone.

        A slow batch (a low send rate, a slow relay) must not outlive its lease, or the
        sweep would hand rows still being sent to another task; renewing at half-time
        keeps that to a few updates per batch.
        """
        rest = self.claimed[sent_up_to:]
        if not rest or utcnow() - self.set_at <= self.length / 2:
            return
        self.set_at = utcnow()
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(rest), Delivery.status == DeliveryStatus.SENDING)
            .values(lease_until=self.set_at + self.length)
        )


_delivery = cast(Table, Delivery.__table__)


@cache
def _ledger_update(columns: frozenset[str]) -> Update:
    """UPDATE delivery SET <columns> WHERE id = :row_id, built once per set of columns.

    A Core statement over the table: executemany without the ORM's per-row bookkeeping,
    which cost more than the database itself on the sending path.
    """
    return (
        update(_delivery)
        .where(_delivery.c.id == bindparam("row_id"))
        .values({name: bindparam(name) for name in sorted(columns - {"row_id"})})
    )


def _record(session: Session, outcome: _ChunkOutcome, lease: _Lease, sent_up_to: int) -> None:
    """Write one chunk's results to the ledger, count its bounces, renew the lease."""
    grouped: dict[frozenset[str], list[dict[str, object]]] = {}
    for row in outcome.updates:
        grouped.setdefault(frozenset(row), []).append(row)
    for columns, rows in grouped.items():
        session.execute(_ledger_update(columns), rows)
    for subscriber_id, hard, detail in outcome.bounces:
        record_bounce(session, subscriber_id, hard=hard, detail=detail)
    lease.renew_if_due(session, sent_up_to)


def _send_chunk(
    connection: Connection,
    composer: Composer,
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
                {"row_id": delivery_id, "status": DeliveryStatus.SKIPPED,
                 "last_error": "no longer subscribed", "lease_until": None}
            )  # fmt: skip
            outcome.counts["skipped"] += 1
    sender = composer.prepared.from_address

    def messages() -> Iterator[tuple[tuple[_Recipient, str], str, str, bytes]]:
        # Read one ahead by send_each: each message is built while the relay answers
        # for the one before.
        for recipient in recipients:
            if outcome.halted is not None:
                return
            composed = composer.compose(recipient.reader, now)
            if composed is None:
                outcome.updates.append(
                    {"row_id": recipient.delivery_id, "status": DeliveryStatus.SKIPPED,
                     "last_error": composer.skip_reason(recipient.reader), "lease_until": None}
                )  # fmt: skip
                outcome.counts["skipped"] += 1
                continue
            mid, message = composed
            ctx.throttle.wait()
            yield (recipient, mid), sender, recipient.reader.email, message

    planned_at = composer.prepared.planned_at
    for (recipient, mid), failure in connection.send_each(messages()):
        if failure is None:
            outcome.updates.append(
                {"row_id": recipient.delivery_id, "status": DeliveryStatus.SENT, "message_id": mid,
                 "sent_at": utcnow(), "lease_until": None, "last_error": None}
            )  # fmt: skip
            outcome.counts["sent"] += 1
            continue
        row = _failure_update(recipient.delivery_id, recipient.attempts, failure, now, planned_at)
        outcome.updates.append(row)
        outcome.counts[_counted(row)] += 1
        if failure.session and outcome.halted is None:
            outcome.halted, outcome.halted_attempts = failure, recipient.attempts
        bounce = _bounce_of(failure, row)
        if bounce is not None:
            outcome.bounces.append((recipient.subscriber_id, bounce, failure.detail))
    if outcome.halted is not None:
        # Readers the halt came before: claimed and loaded, never handed to the relay.
        done = {row["row_id"] for row in outcome.updates}
        untried = [r.delivery_id for r in recipients if r.delivery_id not in done]
        rest = _left_waiting(untried, outcome.halted, outcome.halted_attempts, now, planned_at)
        outcome.updates.extend(rest)
        outcome.counts.update(_counted(row) for row in rest)
    return outcome


def _counted(row: dict[str, object]) -> str:
    """The batch count a refused row adds to: failed for good, or left to retry."""
    return "failed" if row["status"] == DeliveryStatus.FAILED else "retry"


def _bounce_of(failure: DeliveryError, row: dict[str, object]) -> bool | None:
    """Whether a refusal counts against the reader: True hard, False soft, None not at all.

    Only a reply about the reader (mailer.classify) counts: a permanent one is a hard
    bounce; a transient one that outlived the retry period, or a 552 (mailbox full,
    retried but counted so that a mailbox that stays full ends the subscription after
    the soft-bounce limit), a soft one. Refusals of the session, policy replies and
    connection failures never count, however long they last.
    """
    if failure.fault is not Fault.READER:
        return None
    if row["status"] == DeliveryStatus.FAILED:
        return failure.permanent
    return False if failure.code == 552 else None


def _failure_update(
    delivery_id: int, attempts: int, failure: DeliveryError, now: datetime, planned_at: datetime
) -> dict[str, object]:
    """Ledger update for a refused message: failed for good, or pending with a backoff.

    Transient failures (the relay's included) are retried until the retry period,
    counted from planning, ends; then the row fails, without a bounce unless the
    refusal was about the reader.
    """
    permanent = failure.permanent or now - planned_at > RETRY_PERIOD
    if permanent:
        return {
            "row_id": delivery_id,
            "status": DeliveryStatus.FAILED,
            "last_error": failure.detail[:1000],
            "lease_until": None,
        }
    return {
        "row_id": delivery_id,
        "status": DeliveryStatus.PENDING,
        "last_error": failure.detail[:1000],
        "lease_until": None,
        "next_attempt_at": _retry_at(attempts, now),
    }


def _left_waiting(
    delivery_ids: Sequence[int],
    failure: DeliveryError,
    attempts: int,
    now: datetime,
    planned_at: datetime,
) -> list[dict[str, object]]:
    """Ledger updates for claimed rows a session-level refusal kept from being tried.

    They wait exactly as the row that met the refusal does (its backoff, its reason);
    they never count against their readers.
    """
    return [_failure_update(row_id, attempts, failure, now, planned_at) for row_id in delivery_ids]


def relay_refusal(session: Session, issue_id: int) -> str | None:
    """The relay's words for why some of the issue's rows wait, if the relay refused them.

    A row held back by a refused login, a refused sender, TLS or an unreachable relay is
    pending with a reason naming that step (mailer.RELAY_STEPS); a reader's own
    deferral (a 451, a full mailbox) is not reported here.
    """
    return session.scalar(
        select(Delivery.last_error)
        .where(
            Delivery.issue_id == issue_id,
            Delivery.status == DeliveryStatus.PENDING,
            or_(*(Delivery.last_error.startswith(f"{step}:") for step in RELAY_STEPS)),
        )
        .order_by(Delivery.id.desc())
        .limit(1)
    )


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

    Returns True when the issue is (now or already) finished. Called after every
    batch, so it first asks the (issue, status) index whether any row is still open,
    and counts the whole ledger only once: counting per batch would grow with the
    square of the audience.
    """
    still_open = session.scalar(
        select(Delivery.id)
        .where(
            Delivery.issue_id == issue_id,
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING]),
        )
        .limit(1)
    )
    if still_open is not None:
        return False
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
