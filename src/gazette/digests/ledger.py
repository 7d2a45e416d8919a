"""The delivery ledger read back: what is left to send, what is due, how an issue went.

Each issue's deliveries are its ledger: one row per reader, pending, sending, sent,
failed or skipped. Sending writes the rows (gazette.digests.sending); these are the
questions asked of them, by the dispatcher, the sweep, the CLI, and at a batch's end
to finish the issue.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from gazette.mail.outcomes import RELAY_STEPS, relay_fault
from gazette.newsletters.pausing import pause_sentence
from gazette.store.models import (
    OPEN_ISSUES,
    Delivery,
    DeliveryStatus,
    Edition,
    Issue,
    IssueStatus,
    Newsletter,
    utcnow,
)

# A row in one of these is still to be sent: an issue with none left is finished.
OPEN_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)


def due_now(now: datetime) -> ColumnElement[bool]:
    """Pending rows that may be tried at ``now``: never tried, or their backoff has passed."""
    return (Delivery.status == DeliveryStatus.PENDING) & (
        Delivery.next_attempt_at.is_(None) | (Delivery.next_attempt_at <= now)
    )


def pending_batches(session: Session, issue_id: int, batch_size: int) -> list[tuple[int, int]]:
    """Split the issue's pending deliveries into id ranges of at most ``batch_size`` rows.

    The audience is inserted by one statement, so its ids are (nearly) contiguous and
    fixed-width ranges are about ``batch_size`` rows each; the ranges are cheap to
    compute and to hand to tasks as plain numbers.
    """
    low, high = session.execute(
        select(func.min(Delivery.id), func.max(Delivery.id)).where(
            Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.PENDING
        )
    ).one()
    if low is None:
        return []
    return [
        (start, min(start + batch_size - 1, high)) for start in range(low, high + 1, batch_size)
    ]


def resumable_issues(
    session: Session, now: datetime, newsletter_id: int | None = None
) -> list[int]:
    """Return issues with pending rows that are due now: retries, or batches whose task was lost.

    ``newsletter_id``: only that newsletter's. A paused newsletter's issues are not.
    """
    only = () if newsletter_id is None else (Issue.newsletter_id == newsletter_id,)
    return list(
        session.scalars(
            select(Delivery.issue_id)
            .join(Issue, Issue.id == Delivery.issue_id)
            .join(Newsletter, Newsletter.id == Issue.newsletter_id)
            .where(
                Issue.status.in_(OPEN_ISSUES),
                Newsletter.paused_at.is_(None),  # a paused newsletter's rows wait for resume
                due_now(now),
                *only,
            )
            .distinct()
        )
    )


@dataclass(frozen=True)
class IssueStats:
    """An issue's progress from the ledger, for `gazette digest status` and --wait."""

    issue_id: int
    newsletter: str
    edition: Edition
    period_key: str
    status: IssueStatus
    planned: int
    sent: int
    failed: int
    skipped: int
    pending: int
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def done(self) -> bool:
        """True when nothing is left to send."""
        return self.pending == 0 and self.status in (IssueStatus.SENT, IssueStatus.SKIPPED)

    def rate(self, now: datetime) -> float | None:
        """Messages per second since the first batch started, or None before it did."""
        if self.started_at is None:
            return None
        elapsed = ((self.finished_at or now) - self.started_at).total_seconds()
        return self.sent / elapsed if elapsed > 0 else None


def issue_stats(
    session: Session, issue_ids: list[int] | None = None, limit: int = 20
) -> list[IssueStats]:
    """Return the ledger counts of the given issues, or of the newest ``limit`` issues."""
    query = select(Issue, Newsletter.slug).join(Newsletter, Newsletter.id == Issue.newsletter_id)
    if issue_ids is not None:
        query = query.where(Issue.id.in_(issue_ids))
    rows = session.execute(query.order_by(Issue.id.desc()).limit(limit)).all()
    ids = [issue.id for issue, _slug in rows]
    counts: dict[tuple[int, DeliveryStatus], int] = {
        (issue_id, status): count
        for issue_id, status, count in session.execute(
            select(Delivery.issue_id, Delivery.status, func.count())
            .where(Delivery.issue_id.in_(ids))
            .group_by(Delivery.issue_id, Delivery.status)
        )
    }
    stats = []
    for issue, slug in rows:
        by = {status: counts.get((issue.id, status), 0) for status in DeliveryStatus}
        stats.append(
            IssueStats(
                issue_id=issue.id,
                newsletter=slug,
                edition=issue.edition,
                period_key=issue.period_key,
                status=issue.status,
                planned=sum(by.values()),
                sent=by[DeliveryStatus.SENT],
                failed=by[DeliveryStatus.FAILED],
                skipped=by[DeliveryStatus.SKIPPED],
                pending=by[DeliveryStatus.PENDING] + by[DeliveryStatus.SENDING],
                started_at=issue.started_at,
                finished_at=issue.finished_at,
            )
        )
    return stats


def in_flight(session: Session, issue_id: int, now: datetime) -> bool:
    """True while rows are being sent or are due now; rows waiting on a backoff are not.

    Nor are the pending rows of a paused newsletter: no batch claims them until resumed.
    """
    if paused_reason(session, issue_id) is not None:
        return _has_row(session, issue_id, Delivery.status == DeliveryStatus.SENDING)
    return _has_row(session, issue_id, (Delivery.status == DeliveryStatus.SENDING) | due_now(now))


def paused_reason(session: Session, issue_id: int) -> str | None:
    """The pause sentence of the issue's newsletter when its sending is paused, else None."""
    row = session.execute(
        select(Newsletter.slug, Newsletter.pause_reason)
        .join(Issue, Issue.newsletter_id == Newsletter.id)
        .where(Issue.id == issue_id, Newsletter.paused_at.is_not(None))
    ).first()
    return None if row is None else pause_sentence(row.slug, row.pause_reason or "paused")


def _has_row(session: Session, issue_id: int, condition: ColumnElement[bool]) -> bool:
    """Whether any of the issue's rows meets ``condition``: one (issue, status) index probe."""
    found = session.scalar(
        select(Delivery.id).where(Delivery.issue_id == issue_id, condition).limit(1)
    )
    return found is not None


def settled_unfinished(session: Session) -> list[int]:
    """Issues still planned or sending that have no pending or sending row left.

    An issue is usually finished by its last batch; one whose last waiting row was
    skipped instead (the reader unsubscribed during a retry backoff) has no batch left
    to do it, so the sweep finishes it.
    """
    open_rows = select(Delivery.id).where(
        Delivery.issue_id == Issue.id,
        Delivery.status.in_(OPEN_STATUSES),
    )
    return list(
        session.scalars(
            select(Issue.id).where(
                Issue.status.in_(OPEN_ISSUES),
                ~open_rows.exists(),
            )
        )
    )


# An address in a reply (a reader's, "<grace@example.org>: Recipient address rejected"),
# with or without its angle brackets.
_ADDRESS = re.compile(r"<?[^\s<>@:;,]+@[^\s<>;,:]*[^\s<>;,:.]>?")
# How the ledger words a status in a grouped reason: a pending row with an error waits.
_ERROR_STATES = {DeliveryStatus.PENDING: "waiting to retry", DeliveryStatus.FAILED: "failed"}


@dataclass(frozen=True)
class ErrorGroup:
    """One reason some of an issue's rows failed or wait, and how many rows it holds."""

    reason: str
    status: DeliveryStatus
    count: int

    def describe(self) -> str:
        """The group as one line: "3 waiting to retry: connection failed: ..."."""
        return f"{self.count} {_ERROR_STATES[self.status]}: {self.reason}"

    def as_json(self) -> dict[str, object]:
        """The group for `gazette digest status --json`."""
        return {"reason": self.reason, "status": self.status.value, "count": self.count}


def error_reason(last_error: str) -> str:
    """A row's last_error with its per-reader parts taken out, so one problem is one reason.

    A refusal of the session (RELAY_STEPS: login, sender, TLS, the connection) is the
    same for every row and is kept whole; a reply about one reader has the reader's
    address replaced, so a 5.7.1 given to every reader is one group, not one per reader.
    """
    words = " ".join(last_error.split())
    if words.startswith(tuple(f"{step}:" for step in RELAY_STEPS)):
        return words
    return _ADDRESS.sub("<reader>", words)


def error_groups(session: Session, issue_ids: list[int]) -> dict[int, list[ErrorGroup]]:
    """The last errors of the issues' failed and waiting rows, grouped by reason, largest first.

    Reads only those rows, through the (issue_id, status) index, grouped by the database
    on the exact text; the same reason worded for different readers is merged here.
    """
    counts: Counter[tuple[int, DeliveryStatus, str]] = Counter()
    rows = session.execute(
        select(Delivery.issue_id, Delivery.status, Delivery.last_error, func.count())
        .where(
            Delivery.issue_id.in_(issue_ids),
            Delivery.status.in_(list(_ERROR_STATES)),
            Delivery.last_error.is_not(None),
        )
        .group_by(Delivery.issue_id, Delivery.status, Delivery.last_error)
    )
    for issue_id, status, last_error, count in rows:
        counts[(issue_id, status, error_reason(last_error or ""))] += count
    groups: dict[int, list[ErrorGroup]] = {issue_id: [] for issue_id in issue_ids}
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0][1].value, item[0][2]))
    for (issue_id, status, reason), count in ordered:
        groups[issue_id].append(ErrorGroup(reason, status, count))
    return groups


def relay_refusal(session: Session, issue_id: int) -> str | None:
    """The relay's words for why some of the issue's rows wait, if the relay refused them.

    A row held back by a refused login, a refused sender, TLS or an unreachable relay is
    pending with a reason naming that step (gazette.mail.outcomes.RELAY_STEPS); a reader's own
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


def refused_by_relay(session: Session, issue_id: int) -> str | None:
    """The relay's words when it sent none of the issue's readers, each for its own reasons.

    True of an issue with no row sent or waiting and every failed row refused by the
    relay rather than about the reader (a 5.7.x policy reply to each RCPT TO or DATA,
    say): nobody is bounced, but nothing went out either, which the operator must hear
    of. A row still waiting (a reader's 451) was not refused, so then it is not true.
    """
    if _has_row(
        session, issue_id, Delivery.status.in_([DeliveryStatus.SENT, DeliveryStatus.PENDING])
    ):
        return None
    errors = session.scalars(
        select(Delivery.last_error)
        .where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.FAILED)
        .order_by(Delivery.id)
        .execution_options(yield_per=1000)
    )
    first: str | None = None
    for error in errors:
        if not relay_fault(error or ""):
            return None
        first = first or error
    return first


def finish_issue(session: Session, issue_id: int) -> bool:
    """Mark the issue sent with its counts once no row is pending or sending.

    Returns True when the issue is (now or already) finished. Called after every
    batch, so it first asks the (issue, status) index whether any row is still open,
    and counts the whole ledger only once: counting per batch would grow with the
    square of the audience.
    """
    if _has_row(session, issue_id, Delivery.status.in_(OPEN_STATUSES)):
        return False
    counts = dict(
        session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.issue_id == issue_id)
            .group_by(Delivery.status)
        ).all()
    )
    if any(counts.get(status) for status in OPEN_STATUSES):
        return False  # a row was reopened between the probe and the count
    session.execute(
        update(Issue)
        .where(Issue.id == issue_id, Issue.status.in_(OPEN_ISSUES))
        .values(
            status=IssueStatus.SENT,
            finished_at=utcnow(),
            sent_count=counts.get(DeliveryStatus.SENT, 0),
            failed_count=counts.get(DeliveryStatus.FAILED, 0),
            skipped_count=counts.get(DeliveryStatus.SKIPPED, 0),
        )
    )
    return True
