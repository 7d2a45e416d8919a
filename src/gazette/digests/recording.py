"""Writing a batch's results to the ledger: one row update per message, a chunk at a time.

Every message's outcome becomes one dict of the columns its delivery row takes (see
``ledger_row``); a chunk's rows go out as a few executemany UPDATEs, grouped by the
columns they set, in one short transaction with the bounces they count and the
issue's running totals (``count_outcomes``), which /metrics reads.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import cast

from sqlalchemy import Table, Update, bindparam, text, update
from sqlalchemy.orm import Session

from gazette.deliverability_settings import Deliverability
from gazette.digests.deliverability import IssueRates
from gazette.newsletters.pausing import check_pause
from gazette.store.models import Delivery, DeliveryStatus, Issue, utcnow
from gazette.subscribers.bounces import DEFAULT_RULES, record_bounce


def ledger_row(
    delivery_id: int, status: DeliveryStatus, last_error: str | None, **columns: object
) -> dict[str, object]:
    """The update that settles one claimed row: its status, its reason, and other columns.

    Every settled row gives up its lease; ``columns`` adds what that outcome records
    (the Message-ID and time of a sent message, the next attempt of a deferred one).
    """
    return {
        "row_id": delivery_id,
        "status": status,
        "last_error": last_error,
        "lease_until": None,
        **columns,
    }


@dataclass
class ChunkOutcome:
    """One chunk's results, gathered as its messages are answered, until it is written."""

    # One dict per row: "row_id" and the columns to set, as _ledger_update binds them.
    updates: list[dict[str, object]] = field(default_factory=list)
    bounces: list[tuple[int, bool, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    skipped: set[int] = field(default_factory=set)
    # Messages handed to the transport and not yet answered; whether all were handed.
    in_flight: int = 0
    all_given: bool = False

    def add_row(self, row: dict[str, object], counted_as: str) -> None:
        """A row's update, counted in the batch's result as ``counted_as``."""
        self.updates.append(row)
        self.counts[counted_as] += 1

    def add_skip(self, delivery_id: int, reason: str) -> None:
        """A row not sent: its reader left, or has nothing due in this issue."""
        self.add_row(ledger_row(delivery_id, DeliveryStatus.SKIPPED, reason), "skipped")
        self.skipped.add(delivery_id)

    def add_sent(self, delivery_id: int, message_id: str) -> None:
        """A row whose message the relay accepted."""
        row = ledger_row(
            delivery_id, DeliveryStatus.SENT, None, message_id=message_id, sent_at=utcnow()
        )
        self.add_row(row, "sent")

    def write(self, session: Session, issue_id: int, rules: Deliverability = DEFAULT_RULES) -> None:
        """Write the chunk's rows (one executemany per set of columns), its bounces, its counts.

        The issue's running totals are updated last, so the issue's row, which every
        worker sending the issue updates, is locked for as short a time as can be; then,
        in the same transaction, the issue's figures may pause its newsletter.
        """
        now = utcnow()
        grouped: dict[frozenset[str], list[dict[str, object]]] = {}
        for row in self.updates:
            grouped.setdefault(frozenset(row), []).append(row)
        postgres = session.get_bind().dialect.name == "postgresql"
        for columns, rows in grouped.items():
            if postgres and columns == _SENT_COLUMNS:
                session.execute(_SENT_ON_POSTGRES, _sent_arrays(rows))
            else:
                session.execute(_ledger_update(columns), rows)
        for subscriber_id, hard, detail in self.bounces:
            record_bounce(session, subscriber_id, hard=hard, detail=detail, rules=rules, now=now)
        hard_bounces = sum(1 for _, hard, _ in self.bounces if hard)
        rates = count_outcomes(
            session, issue_id, sent=self.counts["sent"], failed=self.counts["failed"],
            bounced=len(self.bounces), hard=hard_bounces,
        )  # fmt: skip
        if rates is not None and (self.counts["sent"] or self.counts["failed"]):
            check_pause(session, issue_id, rules, now, fresh=hard_bounces > 0, rates=rates)


def count_outcomes(
    session: Session, issue_id: int, *, sent: int = 0, failed: int = 0, bounced: int = 0,
    hard: int = 0,
) -> IssueRates | None:  # fmt: skip
    """Add settled messages to the issue's running totals, in the transaction that settles them.

    /metrics reads these columns instead of counting the ledger. A row settled twice (a
    lease that ran out under a slow worker) is counted twice here until the issue
    finishes, when ledger.finish_issue sets sent, failed and skipped from the ledger.
    Skipped rows are not added here: an unsubscribe skips rows without touching the
    issue's row, so /metrics counts an open issue's skipped rows from the ledger.
    Returns the issue's figures as they now stand (None when there was nothing to add),
    read back by the same statement, for pausing to judge.
    """
    if not (sent or failed or bounced):
        return None
    row = session.execute(
        _COUNT_OUTCOMES,
        {
            "issue_id": issue_id, "sent": sent, "failed": failed, "bounced": bounced,
            "hard": hard,
        },
    ).one()  # fmt: skip
    settled, hard_total, soft, complaints = (int(value or 0) for value in row)
    return IssueRates(issue_id, settled, hard_total, max(soft, 0), complaints)


_issue = cast(Table, Issue.__table__)
# Built once: a Core statement over the table, without the ORM's bulk-update bookkeeping
# (it runs once per chunk of every batch).
_COUNT_OUTCOMES = (
    update(_issue)
    .where(_issue.c.id == bindparam("issue_id"))
    .values(
        sent_count=_issue.c.sent_count + bindparam("sent"),
        failed_count=_issue.c.failed_count + bindparam("failed"),
        bounced_count=_issue.c.bounced_count + bindparam("bounced"),
        hard_bounced_count=_issue.c.hard_bounced_count + bindparam("hard"),
    )
    .returning(
        _issue.c.sent_count + _issue.c.failed_count,
        _issue.c.hard_bounced_count,
        _issue.c.bounced_count - _issue.c.hard_bounced_count,
        _issue.c.complained_count,
    )
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


# The columns of a sent row (add_sent); most rows of every chunk are sent ones.
_SENT_COLUMNS = frozenset(
    ledger_row(0, DeliveryStatus.SENT, None, message_id="", sent_at=None).keys()
)
# On PostgreSQL a chunk's sent rows are one statement over arrays, not one UPDATE per
# row through executemany: the server joins them, the client binds three parameters.
_SENT_ON_POSTGRES = text(
    "UPDATE delivery SET status = :status, last_error = NULL, lease_until = NULL, "
    "message_id = u.message_id, sent_at = u.sent_at "
    "FROM unnest(CAST(:ids AS integer[]), CAST(:message_ids AS text[]), "
    "CAST(:sent_ats AS timestamptz[])) AS u(id, message_id, sent_at) "
    "WHERE delivery.id = u.id"
).bindparams(bindparam("status", type_=_delivery.c.status.type))


def _sent_arrays(rows: list[dict[str, object]]) -> dict[str, object]:
    """The parameters of _SENT_ON_POSTGRES for sent rows: one array per column."""
    return {
        "status": DeliveryStatus.SENT,
        "ids": [row["row_id"] for row in rows],
        "message_ids": [row["message_id"] for row in rows],
        "sent_ats": [row["sent_at"] for row in rows],
    }
