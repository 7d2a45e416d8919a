"""What /metrics reports, read from the database so that every worker's sends count.

Each scrape reads running totals, small tables and the rows of the issues still open,
never the sent history of the ledger or the whole subscription table:

- per issue, the messages sent, failed and bounced: the issue's own count columns,
  which each written chunk adds to (gazette.digests.recording.count_outcomes);
- per issue still open, its rows pending, waiting to retry and being sent, and its
  skipped rows, counted through the (issue_id, status) index over those rows only.
  Skipped rows are counted, not added up, because an unsubscribe skips the reader's
  rows without touching the issue's row, which every click would otherwise queue on;
  they grow while the issue sends, and the index alone answers their count. A
  finished issue's skipped_count is exact (ledger.finish_issue);
- subscriptions per newsletter and status: the sum of the tally's shards, which the
  database's triggers keep (store.models.readers.SubscriptionTally);
- the age of the newest feed poll.

The figures are gauges (a forgotten reader takes a subscription away), built afresh
for each scrape on a registry of its own: nothing is kept in the process between two.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from gazette.store.models import (
    OPEN_ISSUES,
    Delivery,
    DeliveryStatus,
    Feed,
    Issue,
    IssueStatus,
    Newsletter,
    SubscriptionStatus,
    SubscriptionTally,
)

# A finished issue is reported for this long after it was planned, so a scrape shortly
# after the last batch still sees its final counts; older ones drop out.
RECENT = timedelta(days=7)
OUTCOMES = ("sent", "failed", "skipped", "bounced")
# How an open row is reported: never tried, waiting for a retry, or claimed by a worker.
OPEN_STATES = ("pending", "waiting_retry", "sending")


@dataclass
class IssueFigures:
    """One issue's messages by outcome and, while it is open, its rows left by state."""

    issue_id: int
    newsletter: str
    period: str
    status: IssueStatus
    outcomes: dict[str, int]
    open_rows: dict[str, int] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """The label values naming the issue, in the order ISSUE_LABELS gives."""
        return [str(self.issue_id), self.newsletter, self.period]


ISSUE_LABELS = ["issue", "newsletter", "period"]


@dataclass(frozen=True)
class Snapshot:
    """Everything one scrape reports, read in one session."""

    issues: list[IssueFigures]
    subscriptions: dict[tuple[str, SubscriptionStatus], int]
    last_feed_poll: datetime | None
    now: datetime


def issue_figures(session: Session, now: datetime) -> list[IssueFigures]:
    """The issues in flight or planned within RECENT, with their counts, newest first.

    The issue table has one row per newsletter and period (thousands, not millions),
    so filtering it is cheap. The open and the skipped rows are counted only for open
    issues, through the (issue_id, status) index (ix_delivery_issue_status), which
    bounds each scan to those rows; the skipped ones apart, from the index alone
    (their state needs no other column). The sent history, the bulk of the ledger, is
    never read.
    """
    rows = session.execute(
        select(Issue, Newsletter.slug)
        .join(Newsletter, Newsletter.id == Issue.newsletter_id)
        .where(or_(Issue.status.in_(OPEN_ISSUES), Issue.planned_at >= now - RECENT))
        .order_by(Issue.id.desc())
    ).all()
    figures = {
        issue.id: IssueFigures(
            issue.id, slug, issue.period_key, issue.status,
            dict(zip(OUTCOMES, (issue.sent_count, issue.failed_count, issue.skipped_count,
                                issue.bounced_count), strict=True)),
        )
        for issue, slug in rows
    }  # fmt: skip
    open_ids = [f.issue_id for f in figures.values() if f.status in OPEN_ISSUES]
    for figure in figures.values():
        if figure.status in OPEN_ISSUES:
            figure.open_rows = dict.fromkeys(OPEN_STATES, 0)
            figure.outcomes["skipped"] = 0  # counted from the ledger below
    if not open_ids:
        return list(figures.values())
    state = case(
        (Delivery.status == DeliveryStatus.SENDING, "sending"),
        (Delivery.next_attempt_at.is_not(None), "waiting_retry"),
        else_="pending",
    )
    counted = session.execute(
        select(Delivery.issue_id, state, func.count())
        .where(
            Delivery.issue_id.in_(open_ids),
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING]),
        )
        .group_by(Delivery.issue_id, state)
    )
    for issue_id, name, count in counted:
        figures[issue_id].open_rows[name] = count
    skipped = session.execute(
        select(Delivery.issue_id, func.count())
        .where(Delivery.issue_id.in_(open_ids), Delivery.status == DeliveryStatus.SKIPPED)
        .group_by(Delivery.issue_id)
    )
    for issue_id, count in skipped:
        figures[issue_id].outcomes["skipped"] = count
    return list(figures.values())


def subscription_figures(session: Session) -> dict[tuple[str, SubscriptionStatus], int]:
    """Subscriptions per (newsletter slug, status), every status of every newsletter.

    Summed from the tally the triggers keep, up to 64 shards per newsletter and status; a
    status with no row is reported as 0, so a gauge that went to nothing says so.
    """
    figures = {
        (slug, status): 0
        for slug in session.scalars(select(Newsletter.slug))
        for status in SubscriptionStatus
    }
    tallied = session.execute(
        select(Newsletter.slug, SubscriptionTally.status, func.sum(SubscriptionTally.count))
        .join(Newsletter, Newsletter.id == SubscriptionTally.newsletter_id)
        .group_by(Newsletter.slug, SubscriptionTally.status)
    )
    for slug, status, count in tallied:
        figures[(slug, status)] = count
    return figures


def last_feed_poll(session: Session) -> datetime | None:
    """When a feed still polled was last polled, or None when none has been (a few rows)."""
    return session.scalar(select(func.max(Feed.last_polled_at)).where(Feed.removed_at.is_(None)))


def snapshot(session: Session, now: datetime) -> Snapshot:
    """Read everything one scrape reports."""
    return Snapshot(
        issue_figures(session, now), subscription_figures(session), last_feed_poll(session), now
    )


class _SnapshotCollector(Collector):
    """A snapshot as Prometheus gauge families, for one registry and one scrape."""

    def __init__(self, taken: Snapshot) -> None:
        self.taken = taken

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The families, in the order the operations guide lists them."""
        messages = GaugeMetricFamily(
            "gazette_issue_messages",
            "Messages of an issue in flight or recent, by outcome (bounced ones also count "
            "as failed or waiting).",
            labels=[*ISSUE_LABELS, "outcome"],
        )
        left = GaugeMetricFamily(
            "gazette_issue_deliveries_open",
            "Deliveries of an issue in flight not settled yet: pending, waiting to retry, "
            "being sent.",
            labels=[*ISSUE_LABELS, "state"],
        )
        for issue in self.taken.issues:
            for outcome, count in issue.outcomes.items():
                messages.add_metric([*issue.labels, outcome], count)
            for state, count in issue.open_rows.items():
                left.add_metric([*issue.labels, state], count)
        yield messages
        yield left
        subscriptions = GaugeMetricFamily(
            "gazette_subscriptions",
            "Subscriptions per newsletter and status.",
            labels=["newsletter", "status"],
        )
        for (slug, status), count in sorted(self.taken.subscriptions.items()):
            subscriptions.add_metric([slug, status.value], count)
        yield subscriptions
        if self.taken.last_feed_poll is not None:
            age = (self.taken.now - self.taken.last_feed_poll).total_seconds()
            yield GaugeMetricFamily(
                "gazette_feed_last_poll_age_seconds",
                "Seconds since the newest poll of any feed still polled.",
                value=max(age, 0.0),
            )


def exposition(taken: Snapshot) -> bytes:
    """The snapshot in the Prometheus text format, from a registry made for this scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(taken))
    return generate_latest(registry)
