"""Pausing a newsletter whose issue's complaint or hard-bounce rate passed its limit.

``check_pause`` runs in the transaction that applies a report or records a chunk of
results, so the figures it reads are the ones just written. Once an issue has at least
GAZETTE_PAUSE_MIN_SETTLED settled messages, a complaint rate above
GAZETTE_PAUSE_COMPLAINT_RATE or a hard-bounce rate above GAZETTE_PAUSE_BOUNCE_RATE
pauses its newsletter: planning skips it (digests/planning.plans_at) and no batch claims
a row of it (digests/sending.claim). `gazette digest resume SLUG` lifts it; an issue
planned before that resume pauses again only through a new hard bounce or complaint
(its old figures were seen by the operator who resumed).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gazette.deliverability_settings import Deliverability
from gazette.digests.deliverability import IssueRates, issue_rates
from gazette.errors import GazetteError
from gazette.store.models import Issue, Newsletter

logger = logging.getLogger(__name__)


def pause_cause(rates: IssueRates, rules: Deliverability) -> str | None:
    """Why the figures pause the newsletter, in words; None when they do not."""
    if rates.settled < rules.pause_min_settled:
        return None
    for name, rate, limit in (
        ("complaint rate", rates.complaint_rate, rules.pause_complaint_rate),
        ("hard-bounce rate", rates.hard_rate, rules.pause_bounce_rate),
    ):
        if rate > limit:
            return (
                f"issue {rates.issue_id}'s {name} {rate:.2%} passed {limit:.2%} "
                f"over {rates.settled:,} settled messages"
            )
    return None


def check_pause(
    session: Session,
    issue_id: int,
    rules: Deliverability,
    now: datetime,
    *,
    fresh: bool,
    rates: IssueRates | None = None,
) -> str | None:
    """Pause the issue's newsletter if its figures say so; return the reason when it paused.

    ``fresh``: this transaction applied a new hard bounce or complaint of the issue.
    Without one, an issue planned before the newsletter's last resume does not pause it.
    ``rates``: the issue's figures as this transaction just wrote them, when the caller
    has them (recording a chunk does), so that nothing is read while nothing is wrong.
    """
    cause = pause_cause(rates or issue_rates(session, issue_id), rules)
    if cause is None:
        return None
    row = session.execute(
        select(Issue.newsletter_id, Issue.planned_at, Newsletter.slug, Newsletter.resumed_at)
        .join(Newsletter, Newsletter.id == Issue.newsletter_id)
        .where(Issue.id == issue_id)
    ).first()
    if row is None:
        return None
    if not fresh and row.resumed_at is not None and row.planned_at <= row.resumed_at:
        return None
    paused = session.execute(
        update(Newsletter)
        .where(Newsletter.id == row.newsletter_id, Newsletter.paused_at.is_(None))
        .values(paused_at=now, pause_reason=cause)
    )
    if not paused.rowcount:  # type: ignore[attr-defined]
        return None  # already paused
    logger.warning("%s", pause_sentence(row.slug, cause))
    return cause


def pause_sentence(slug: str, reason: str) -> str:
    """The one sentence `digest status`, `newsletters show` and the logs say of a pause."""
    return (
        f"Sending of {slug} is paused: {reason}. Nothing is planned or sent until "
        f"`gazette digest resume {slug}`."
    )


def resume(session: Session, newsletter_id: int, now: datetime) -> str:
    """Lift the newsletter's pause; return the reason it had. GazetteError if not paused."""
    newsletter = session.get_one(Newsletter, newsletter_id, with_for_update=True)
    if newsletter.paused_at is None:
        raise GazetteError(f"{newsletter.slug} is not paused; there is nothing to resume.")
    reason = newsletter.pause_reason or ""
    newsletter.paused_at = None
    newsletter.pause_reason = None
    newsletter.resumed_at = now
    session.flush()
    logger.info("sending of %s resumed (it was paused: %s)", newsletter.slug, reason)
    return reason
