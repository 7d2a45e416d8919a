"""Sending an issue's waiting deliveries now instead of at the end of their backoff.

A refused message stays pending with a next_attempt_at (gazette.digests.sending), and
the sweep sends it once that time has passed. An operator who has fixed the relay need
not wait: `gazette digest retry ISSUE` makes the waiting rows due now, here, and then
hands the issue to the Runtime's dispatcher like any send.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from gazette.errors import GazetteError
from gazette.store.models import Delivery, DeliveryStatus, Issue, IssueStatus

FINISHED = (IssueStatus.SENT, IssueStatus.SKIPPED)


def make_waiting_due(session: Session, issue_id: int, now: datetime) -> int:
    """Make the issue's deliveries waiting for a retry due at ``now``; return how many wait.

    A waiting delivery is pending and was tried before (it has a next_attempt_at);
    those whose backoff has already run out count too, as they are sent with the rest.
    An unknown issue, a finished one, or one with nothing waiting is a GazetteError,
    raised before anything is written.
    """
    status = session.scalar(select(Issue.status).where(Issue.id == issue_id))
    if status is None:
        raise GazetteError(f"There is no issue {issue_id}; `gazette digest status` lists them.")
    if status in FINISHED:
        raise GazetteError(
            f"Issue {issue_id} is finished ({status.value}); nothing of it is left to retry."
        )
    waiting = Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.PENDING
    count = session.scalar(
        select(func.count())
        .select_from(Delivery)
        .where(*waiting, Delivery.next_attempt_at.is_not(None))
    )
    if not count:
        raise GazetteError(
            f"Issue {issue_id} has no delivery waiting for a retry; "
            f"`gazette digest status {issue_id}` shows where it is."
        )
    session.execute(
        update(Delivery).where(*waiting, Delivery.next_attempt_at > now).values(next_attempt_at=now)
    )
    return count
