"""Per-issue deliverability: bounce and complaint rates over settled messages, refusals by domain.

Settled messages are the issue's sent and failed ones (its running totals). The
numerators count what was learnt during sending and what reports said later: a hard
bounce refused at RCPT and one a DSN brought a day after both land in
issue.hard_bounced_count (bounces/processing, digests/recording). Policy refusals
(5.7.x) are never the reader's: they are counted per receiving domain, from
bounce_report and from the ledger's refusals during sending.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gazette.mail.status_policy import Effect
from gazette.store.models import BounceReport, Delivery, Issue, Subscriber


@dataclass(frozen=True)
class IssueRates:
    """An issue's settled messages and its hard-bounce, soft-bounce and complaint counts."""

    issue_id: int
    settled: int
    hard: int
    soft: int
    complaints: int

    def rate(self, count: int) -> float:
        """``count`` over the settled messages (0 before any is settled)."""
        return count / self.settled if self.settled else 0.0

    @property
    def hard_rate(self) -> float:
        """Hard bounces over settled messages."""
        return self.rate(self.hard)

    @property
    def soft_rate(self) -> float:
        """Soft bounces over settled messages."""
        return self.rate(self.soft)

    @property
    def complaint_rate(self) -> float:
        """Complaints over settled messages."""
        return self.rate(self.complaints)

    def as_json(self) -> dict[str, float | int]:
        """The figures as `digest status --json` prints them (rates as fractions)."""
        return {
            "settled": self.settled, "hard_bounces": self.hard, "soft_bounces": self.soft,
            "complaints": self.complaints, "hard_bounce_rate": round(self.hard_rate, 6),
            "soft_bounce_rate": round(self.soft_rate, 6),
            "complaint_rate": round(self.complaint_rate, 6),
        }  # fmt: skip


def issue_rates(session: Session, issue_id: int) -> IssueRates:
    """The issue's figures from its running totals (one row read)."""
    row = session.execute(
        select(
            Issue.sent_count + Issue.failed_count, Issue.hard_bounced_count,
            Issue.bounced_count - Issue.hard_bounced_count, Issue.complained_count,
        ).where(Issue.id == issue_id)
    ).one()  # fmt: skip
    settled, hard, soft, complaints = (int(value or 0) for value in row)
    return IssueRates(issue_id, settled, hard, max(soft, 0), complaints)


# How the ledger keeps a policy refusal during sending: "550 5.7.1 ..." (mail/outcomes).
_POLICY_REFUSAL = "5__ 5.7.%"


def policy_refusals(session: Session, issue_id: int) -> dict[str, int]:
    """Policy refusals (5.7.x) of the issue per receiving domain, most first.

    Reports that came later (bounce_report rows that were not the reader's, 5.7.x)
    and refusals during sending (ledger rows whose last error is a 5xx 5.7.x reply).
    """
    counts: Counter[str] = Counter()
    reported = session.execute(
        select(BounceReport.domain, func.count())
        .where(
            BounceReport.issue_id == issue_id,
            BounceReport.effect == Effect.NOT_THE_READER.value,
            BounceReport.status.like("5.7.%"),
        )
        .group_by(BounceReport.domain)
    ).all()
    for domain, count in reported:
        counts[domain or "?"] += count
    refused = session.scalars(
        select(Subscriber.email)
        .join(Delivery, Delivery.subscriber_id == Subscriber.id)
        .where(Delivery.issue_id == issue_id, Delivery.last_error.like(_POLICY_REFUSAL))
    )
    for email in refused:
        counts[email.rpartition("@")[2].lower()] += 1
    return dict(counts.most_common())


def describe(rates: IssueRates, refusals: dict[str, int]) -> str:
    """The figures in one line of `digest status`: the three rates, then refusals by domain."""
    line = (
        f"Issue {rates.issue_id}: hard bounces {rates.hard_rate:.2%}, soft bounces "
        f"{rates.soft_rate:.2%}, complaints {rates.complaint_rate:.2%} of "
        f"{rates.settled:,} settled"
    )
    if refusals:
        line += "; policy refusals: " + ", ".join(f"{d} {n}" for d, n in refusals.items())
    return line
