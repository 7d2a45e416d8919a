"""Sending: claim a batch of the ledger, render, hand to the transport, record each result.

A batch is a range of delivery ids. Claiming is one conditional UPDATE (pending ->
sending, with a lease), so two workers given the same range never send the same row;
a worker that dies leaves rows in "sending" that the sweep returns to "pending" once
their lease expires. Results are recorded in short transactions, a chunk at a time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, update
from sqlalchemy.orm import Session, sessionmaker

from gazette.digests.composer import Composer, SendContext, composer_for
from gazette.digests.envelopes import message_id
from gazette.digests.ledger import due_now
from gazette.digests.recipients import Recipient, chunk_recipients
from gazette.digests.recording import ChunkOutcome, ledger_row
from gazette.mail.outcomes import DeliveryError, Fault
from gazette.mail.status_policy import Effect
from gazette.mail.verp import envelope_sender
from gazette.store.db import one_connection
from gazette.store.models import Delivery, DeliveryStatus, Issue, IssueStatus, Newsletter, utcnow

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
    ``status = 'pending'``, so it is never returned twice; nor does a row of a
    newsletter whose sending is paused (newsletters/pausing), checked in the same
    statement so a pause committed a moment before is never missed.
    """
    now = utcnow()
    paused = exists().where(
        Issue.id == issue_id,
        Newsletter.id == Issue.newsletter_id,
        Newsletter.paused_at.is_not(None),
    )
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.issue_id == issue_id,
            Delivery.id.between(low, high),
            due_now(now),
            ~paused,
        )
        .values(
            status=DeliveryStatus.SENDING,
            lease_until=now + lease,
            attempts=Delivery.attempts + 1,
        )
        .returning(Delivery.id)
    )
    return sorted(result.scalars())


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
    with one_connection(factory) as sessions:
        return _send_batch(sessions, ctx, issue_id, low, high)


def _send_batch(
    factory: sessionmaker[Session], ctx: SendContext, issue_id: int, low: int, high: int
) -> BatchResult:
    """send_batch's work, its sessions sharing one connection."""
    with factory() as session:
        composer = composer_for(session, ctx, issue_id)
    if ctx.signer is not None:
        # Before any row is claimed: without a DKIM key for its From domain the whole
        # issue waits, untouched, for the key (MissingDkimKeyError says which).
        ctx.signer.key_for(composer.prepared.from_address)
    with factory() as session, session.begin():
        claimed = claim(session, issue_id, low, high, ctx.lease)
        if not claimed:
            return BatchResult(0, 0, 0, 0, 0)
        session.execute(
            update(Issue)
            .where(Issue.id == issue_id, Issue.status == IssueStatus.PLANNED)
            .values(status=IssueStatus.SENDING, started_at=utcnow())
        )
    lease = _Lease(issue_id, claimed, ctx.lease)
    batch = _Batch(factory, composer, ctx, claimed, lease)
    with ctx.transport.connect() as connection:
        for (chunk, recipient, mid), failure in connection.send_each(batch.messages()):
            batch.settle(chunk, recipient, mid, failure)
    batch.finish()
    counts, halted = batch.counts, batch.halted
    return BatchResult(
        len(claimed), counts["sent"], counts["retry"], counts["failed"], counts["skipped"],
        halted.detail if halted is not None else None,
    )  # fmt: skip


class _Lease:
    """When the claimed rows of a batch of ``issue_id`` last had their lease set, to renew it."""

    def __init__(self, issue_id: int, claimed: list[int], length: timedelta) -> None:
        self.issue_id = issue_id
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


def _record(
    session: Session, outcome: ChunkOutcome, lease: _Lease, sent_up_to: int, ctx: SendContext
) -> None:
    """Renew the lease, then write one chunk's results to the ledger and count them.

    The write ends with the issue's running totals, so the issue's row, which every
    worker sending the issue updates, is locked only from there to the commit.
    """
    lease.renew_if_due(session, sent_up_to)
    outcome.write(session, lease.issue_id, ctx.deliverability)


class _Batch:
    """One batch streamed to the transport a chunk at a time, each chunk recorded at once.

    The messages of every chunk go to one send_each, so a pool of sessions never waits
    at a chunk's end for its slowest message while the next chunk's readers are read:
    a chunk's readers are re-read when its first message is due (an unsubscribe that
    lands mid-send is honoured), and a chunk's results are written in one short
    transaction as soon as its last outcome is in (at most a chunk plus the messages
    in flight are sent but unrecorded, should the worker die).
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        composer: Composer,
        ctx: SendContext,
        claimed: list[int],
        lease: _Lease,
    ) -> None:
        self.factory = factory
        self.composer = composer
        self.ctx = ctx
        self.claimed = claimed
        self.lease = lease
        self.counts: Counter[str] = Counter()
        self.halted: DeliveryError | None = None
        self.halted_attempts = 1
        self.now = utcnow()
        # Chunks read but not yet recorded, by their first index in ``claimed``.
        self.open: dict[int, ChunkOutcome] = {}
        self.recorded: set[int] = set()

    def messages(self) -> Iterator[tuple[tuple[int, Recipient, str], str, str, bytes]]:
        """Each chunk's messages in turn, composed one at a time as the transport asks."""
        from_address = self.composer.prepared.from_address
        for start in range(0, len(self.claimed), RECORD_CHUNK):
            if self.halted is not None:
                return
            chunk = self.claimed[start : start + RECORD_CHUNK]
            with self.factory() as session, session.begin():
                recipients = chunk_recipients(session, chunk)
            outcome = ChunkOutcome()
            self.open[start] = outcome
            active = {r.delivery_id for r in recipients}
            for delivery_id in chunk:
                if delivery_id not in active:
                    outcome.add_skip(delivery_id, "no longer subscribed")
            for recipient in recipients:
                if self.halted is not None:
                    return  # the chunk stays open: finish() leaves its untried rows waiting
                composed = self.composer.compose(recipient.reader, self.now, recipient.delivery_id)
                if composed is None:
                    reason = self.composer.skip_reason(recipient.reader)
                    outcome.add_skip(recipient.delivery_id, reason)
                    continue
                mid, message = composed
                self.ctx.throttle.wait()
                outcome.in_flight += 1
                # Each message its own envelope sender: with VERP, a bounce names its row.
                sender = envelope_sender(self.ctx.verp, from_address, recipient.delivery_id)
                yield (start, recipient, mid), sender, recipient.reader.email, message
            outcome.all_given = True
            self._record_done()

    def settle(
        self, start: int, recipient: Recipient, mid: str, failure: DeliveryError | None
    ) -> None:
        """Take one message's outcome; record its chunk when it was the last one out."""
        outcome = self.open[start]
        outcome.in_flight -= 1
        if failure is None:
            outcome.add_sent(recipient.delivery_id, mid)
        else:
            self._refused(outcome, recipient, failure)
        if outcome.in_flight == 0 and outcome.all_given:
            self._record_done()

    def _refused(self, outcome: ChunkOutcome, recipient: Recipient, failure: DeliveryError) -> None:
        """A refused message: its row waits or fails, the batch may halt, the reader may bounce."""
        planned_at = self.composer.prepared.planned_at
        row = _failure_update(
            recipient.delivery_id, recipient.attempts, failure, self.now, planned_at
        )
        outcome.add_row(row, _counted(row))
        if failure.session and self.halted is None:
            self.halted, self.halted_attempts = failure, recipient.attempts
        bounce = _bounce_of(failure, row)
        if bounce is not None:
            outcome.bounces.append((recipient.subscriber_id, bounce, failure.detail))

    def _record_done(self) -> None:
        """Write every chunk whose messages were all given and answered, in one transaction."""
        done = [
            start for start, outcome in self.open.items()
            if outcome.all_given and outcome.in_flight == 0
        ]  # fmt: skip
        if not done:
            return
        with self.factory() as session, session.begin():
            for start in done:
                self._write(session, start)

    def _write(self, session: Session, start: int) -> None:
        """Write the open chunk starting at ``start`` and add its counts to the batch's."""
        outcome = self.open.pop(start)
        self.recorded.add(start)
        self.counts.update(outcome.counts)
        _record(session, outcome, self.lease, start + RECORD_CHUNK, self.ctx)

    def finish(self) -> None:
        """Record what is left; after a refusal of the session, the untried rows wait.

        Rows claimed but never handed to the relay (the chunks not reached, and those a
        chunk had not yet given) wait exactly as the row that met the refusal does.
        """
        rest: list[int] = []
        for start in range(0, len(self.claimed), RECORD_CHUNK):
            if start in self.recorded:
                continue
            outcome = self.open.get(start)
            answered = {row["row_id"] for row in outcome.updates} if outcome else set()
            rest.extend(r for r in self.claimed[start : start + RECORD_CHUNK] if r not in answered)
        if not self.open and not rest:
            return
        tail = ChunkOutcome()
        if rest:
            # Only a refusal of the session stops a batch before every row is answered.
            assert self.halted is not None
            planned_at = self.composer.prepared.planned_at
            rows = _left_waiting(rest, self.halted, self.halted_attempts, self.now, planned_at)
            for row in rows:
                tail.add_row(row, _counted(row))
        with self.factory() as session, session.begin():
            for start in sorted(self.open):
                self._write(session, start)
            if tail.updates:
                self.counts.update(tail.counts)
                _record(session, tail, self.lease, len(self.claimed), self.ctx)


def _counted(row: dict[str, object]) -> str:
    """The batch count a refused row adds to: failed for good, or left to retry."""
    return "failed" if row["status"] == DeliveryStatus.FAILED else "retry"


def _bounce_of(failure: DeliveryError, row: dict[str, object]) -> bool | None:
    """Whether a refusal counts against the reader: True hard, False soft, None not at all.

    Only a reply about the reader (gazette.mail.outcomes.classify) counts, as the one
    policy (gazette.mail.status_policy) says: a hard one (5.1.x, 5.2.x, no code) is a
    hard bounce; 5.2.2, a transient one that outlived the retry period, or a 552 (mailbox full,
    retried but counted so that a mailbox that stays full ends the subscription after
    the soft-bounce limit), a soft one. Refusals of the session, policy replies and
    connection failures never count, however long they last.
    """
    if failure.fault is not Fault.READER or not failure.effect.counts_against_reader:
        return None
    if row["status"] == DeliveryStatus.FAILED:
        return failure.effect is Effect.HARD
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
        return ledger_row(delivery_id, DeliveryStatus.FAILED, failure.detail[:1000])
    return ledger_row(
        delivery_id,
        DeliveryStatus.PENDING,
        failure.detail[:1000],
        next_attempt_at=_retry_at(attempts, now),
    )


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


def reclaim_expired(session: Session, now: datetime | None = None) -> int:
    """Return rows whose lease ran out (their worker died) to "pending"; count them."""
    now = now or utcnow()
    result = session.execute(
        update(Delivery)
        .where(Delivery.status == DeliveryStatus.SENDING, Delivery.lease_until < now)
        .values(status=DeliveryStatus.PENDING, lease_until=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
