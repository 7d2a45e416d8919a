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

from sqlalchemy import Table, Update, bindparam, update
from sqlalchemy.orm import Session

from gazette.deliverability_settings import Deliverability
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
        for columns, rows in grouped.items():
            session.execute(_ledger_update(columns), rows)
        for subscriber_id, hard, detail in self.bounces:
            record_bounce(session, subscriber_id, hard=hard, detail=detail, rules=rules, now=now)
        hard_bounces = sum(1 for _, hard, _ in self.bounces if hard)
        count_outcomes(
            session, issue_id, sent=self.counts["sent"], failed=self.counts["failed"],
            skipped=self.counts["skipped"], bounced=len(self.bounces), hard=hard_bounces,
        )  # fmt: skip
        if self.counts["sent"] or self.counts["failed"]:
            check_pause(session, issue_id, rules, now, fresh=hard_bounces > 0)


def count_outcomes(
    session: Session, issue_id: int, *, sent: int = 0, failed: int = 0, skipped: int = 0,
    bounced: int = 0, hard: int = 0,
) -> None:  # fmt: skip
    """Add settled messages to the issue's running totals, in the transaction that settles them.

    /metrics reads these columns instead of counting the ledger. A row settled twice (a
    lease that ran out under a slow worker) is counted twice here until the issue
    finishes, when ledger.finish_issue sets sent, failed and skipped from the ledger.
    """
    if not (sent or failed or skipped or bounced):
        return
    session.execute(
        update(Issue)
        .where(Issue.id == issue_id)
        .values(
            sent_count=Issue.sent_count + sent,
            failed_count=Issue.failed_count + failed,
            skipped_count=Issue.skipped_count + skipped,
            bounced_count=Issue.bounced_count + bounced,
            hard_bounced_count=Issue.hard_bounced_count + hard,
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
