"""Soft bounces that decay, and the pause an issue's figures cause (issue 18), on both backends.

The decay with an injected clock: soft bounces count towards the limit only while each
comes within the window of the one before (Mailman 3's stale bounce information).
The pause with an issue of 1,000 settled deliveries seeded directly (sending a
thousand is the CLI test's job with a lowered minimum): complaints applied as real
ARF reports through process_message, the newsletter paused in the transaction that
applies the one that passes 0.3%, no batch claimed and no issue planned while paused,
and a resume that the old figures alone do not undo.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from gazette.bounces.processing import process_message
from gazette.deliverability_settings import Deliverability
from gazette.digests.deliverability import IssueRates, describe, issue_rates, policy_refusals
from gazette.digests.planning import plan_issue, plans_at
from gazette.digests.sending import claim
from gazette.errors import GazetteError
from gazette.mail.verp import Verp
from gazette.newsletters.pausing import check_pause, pause_cause, resume
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Issue,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from gazette.subscribers.bounces import record_bounce
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.bounces.helpers import BOUNCE, sample
from tests.support.env import TEST_KEY

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
RULES = Deliverability()
SETTLED = 1000


# --- soft bounces decay ------------------------------------------------------------------


def _reader(runtime: Runtime, email: str = "grace@example.org") -> int:
    with transaction(runtime.sessions) as session:
        create_newsletter(session, "weekly", "Weekly")
        return subscribe(session, email, "weekly", Origin("import"), confirmed=True).subscriber_id


def _soft(runtime: Runtime, reader: int, at: datetime, rules: Deliverability = RULES) -> bool:
    with transaction(runtime.sessions) as session:
        return record_bounce(session, reader, hard=False, detail="452 4.2.2", rules=rules, now=at)


def _status(runtime: Runtime, reader: int) -> tuple[SubscriptionStatus, int]:
    with runtime.sessions() as session:
        status = session.scalar(
            select(Subscription.status).where(Subscription.subscriber_id == reader)
        )
        count = session.scalar(select(Subscriber.bounce_count).where(Subscriber.id == reader))
    assert status is not None
    assert count is not None
    return status, count


def test_three_soft_bounces_each_within_seven_days_of_the_last_bounce_the_reader(
    runtime: Runtime,
) -> None:
    reader = _reader(runtime)
    assert not _soft(runtime, reader, T0)
    assert not _soft(runtime, reader, T0 + timedelta(days=6))
    assert _soft(runtime, reader, T0 + timedelta(days=12))  # 6 days after the second
    assert _status(runtime, reader) == (SubscriptionStatus.BOUNCED, 3)


def test_a_soft_bounce_after_the_window_starts_the_count_again(runtime: Runtime) -> None:
    reader = _reader(runtime)
    _soft(runtime, reader, T0)
    _soft(runtime, reader, T0 + timedelta(days=1))
    assert not _soft(runtime, reader, T0 + timedelta(days=9))  # 8 days of silence: stale
    assert _status(runtime, reader) == (SubscriptionStatus.ACTIVE, 1)
    assert not _soft(runtime, reader, T0 + timedelta(days=10))
    assert _soft(runtime, reader, T0 + timedelta(days=11))
    assert _status(runtime, reader) == (SubscriptionStatus.BOUNCED, 3)


def test_the_limit_and_the_window_are_settings(runtime: Runtime) -> None:
    reader = _reader(runtime)
    quick = Deliverability(soft_bounce_limit=2, soft_bounce_days=1)
    _soft(runtime, reader, T0, quick)
    assert not _soft(runtime, reader, T0 + timedelta(days=2), quick)  # stale after one day
    assert _soft(runtime, reader, T0 + timedelta(days=2, hours=12), quick)


def test_a_hard_bounce_still_suppresses_at_once(runtime: Runtime) -> None:
    reader = _reader(runtime)
    with transaction(runtime.sessions) as session:
        assert record_bounce(session, reader, hard=True, detail="550 5.1.1", now=T0)
    assert _status(runtime, reader)[0] is SubscriptionStatus.BOUNCED


def test_soft_dsns_decay_through_process_message_too(runtime: Runtime) -> None:
    reader = _reader(runtime)
    with transaction(runtime.sessions) as session:
        for n, day in enumerate((0, 8, 16), 1):
            raw = sample("dsn_expired_447.eml", recipient="grace@example.org", n=n)
            process_message(
                session, raw, secret_keys=[TEST_KEY], require_verp=False,
                now=T0 + timedelta(days=day),
            )  # fmt: skip
    assert _status(runtime, reader) == (SubscriptionStatus.ACTIVE, 1)


# --- the figures that pause a newsletter -------------------------------------------------


@pytest.mark.parametrize(
    ("settled", "hard", "complaints", "paused"),
    [
        (999, 100, 10, False),  # too few settled to judge
        (1000, 50, 3, False),  # exactly 5% and 0.3%: not passed
        (1000, 51, 0, True),
        (1000, 0, 4, True),
        (5000, 200, 15, False),
    ],
)
def test_pause_cause_by_the_rates_once_enough_is_settled(
    settled: int, hard: int, complaints: int, paused: bool
) -> None:
    cause = pause_cause(IssueRates(7, settled, hard, 0, complaints), RULES)
    assert (cause is not None) is paused
    if cause:
        assert cause.startswith("issue 7's ")
        assert f"over {settled:,} settled messages" in cause


@dataclass
class Sent:
    """An issue of "weekly" with SETTLED sent deliveries, five of them to real readers."""

    runtime: Runtime
    newsletter_id: int
    issue_id: int
    verp: list[str]
    ids: list[int]

    def complain(self, n: int, at: datetime = T0) -> None:
        raw = sample("arf_complaint.eml", verp=self.verp[n], recipient=f"r{n}@example.org", n=n + 1)
        with transaction(self.runtime.sessions) as session:
            process_message(session, raw, secret_keys=[TEST_KEY], require_verp=True, now=at)

    def newsletter(self) -> Newsletter:
        with self.runtime.sessions() as session:
            found = session.get_one(Newsletter, self.newsletter_id)
            session.expunge(found)
            return found


@pytest.fixture
def sent(runtime: Runtime) -> Sent:
    with transaction(runtime.sessions) as session:
        weekly = create_newsletter(session, "weekly", "Weekly")
        readers = [
            subscribe(session, f"r{n}@example.org", "weekly", Origin("import"), confirmed=True)
            for n in range(5)
        ]
        issue = Issue(
            newsletter_id=weekly, period_key="2026-12-01", cutoff_at=T0, planned_at=T0,
            sent_count=SETTLED,
        )  # fmt: skip
        session.add(issue)
        session.flush()
        rows = [
            Delivery(issue_id=issue.id, subscriber_id=r.subscriber_id,
                     status=DeliveryStatus.SENT, attempts=1)
            for r in readers
        ]  # fmt: skip
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
        # The other settled deliveries: ledger rows of readers who never complain.
        session.execute(
            insert(Delivery),
            [{"issue_id": issue.id, "subscriber_id": 100_000 + n, "status": DeliveryStatus.SENT,
              "attempts": 1} for n in range(SETTLED - len(readers))],
        )  # fmt: skip
        session.add(Delivery(issue_id=issue.id, subscriber_id=99, status=DeliveryStatus.PENDING))
    verp = [Verp(BOUNCE, [TEST_KEY]).address(row_id) for row_id in ids]
    return Sent(runtime, weekly, issue.id, verp, ids)


def _claimable(sent: Sent) -> list[int]:
    with transaction(sent.runtime.sessions) as session:
        return claim(session, sent.issue_id, 0, 10**9, timedelta(minutes=5))


def _plans(session: Session, sent: Sent) -> bool:
    newsletter = session.get_one(Newsletter, sent.newsletter_id)
    return plans_at(session, newsletter, Edition.REGULAR, T0 + timedelta(days=30))


def test_the_complaint_that_passes_0_3_percent_pauses_the_newsletter(sent: Sent) -> None:
    for n in range(3):
        sent.complain(n)
    assert sent.newsletter().paused_at is None  # 0.3%: reached, not passed
    with sent.runtime.sessions() as session:
        assert issue_rates(session, sent.issue_id).complaint_rate == pytest.approx(0.003)
    sent.complain(3)
    paused = sent.newsletter()
    assert paused.paused_at == T0
    assert paused.pause_reason == (
        f"issue {sent.issue_id}'s complaint rate 0.40% passed 0.30% over 1,000 settled messages"
    )
    assert _claimable(sent) == []  # the pending row waits
    with sent.runtime.sessions() as session:
        assert not _plans(session, sent)
    with transaction(sent.runtime.sessions) as session, pytest.raises(GazetteError) as raised:
        plan_issue(session, sent.newsletter_id, T0 + timedelta(days=30))
    assert str(raised.value).startswith("Sending of weekly is paused: issue ")


def test_a_resumed_newsletter_is_paused_again_only_by_new_reports(sent: Sent) -> None:
    for n in range(4):
        sent.complain(n)
    later = T0 + timedelta(hours=1)
    with transaction(sent.runtime.sessions) as session:
        assert resume(session, sent.newsletter_id, later).startswith(f"issue {sent.issue_id}'s")
        # The same figures, read again without a new report: not paused again.
        assert check_pause(session, sent.issue_id, RULES, later, fresh=False) is None
    assert sent.newsletter().paused_at is None
    sent.complain(3)  # a copy of a report already applied: nothing new
    assert sent.newsletter().paused_at is None
    assert len(_claimable(sent)) == 1
    sent.complain(4, later)  # a new complaint, the rate still above the limit
    assert sent.newsletter().paused_at == later


def test_resuming_a_newsletter_that_is_not_paused_is_one_sentence(sent: Sent) -> None:
    with transaction(sent.runtime.sessions) as session, pytest.raises(GazetteError) as raised:
        resume(session, sent.newsletter_id, T0)
    assert str(raised.value) == "weekly is not paused; there is nothing to resume."


def test_policy_refusals_are_counted_per_receiving_domain(sent: Sent) -> None:
    raw = sample("dsn_policy_571.eml", verp=sent.verp[0], recipient="r0@mx.example.net")
    with transaction(sent.runtime.sessions) as session:
        process_message(session, raw, secret_keys=[TEST_KEY], require_verp=True, now=T0)
        # A refusal during sending, as the ledger keeps it (mail/outcomes' detail).
        refused = session.get_one(Delivery, sent.ids[1])
        refused.status, refused.last_error = DeliveryStatus.FAILED, "554 5.7.1 rejected as spam"
    with sent.runtime.sessions() as session:
        assert policy_refusals(session, sent.issue_id) == {"mx.example.net": 1, "example.org": 1}
        rates = issue_rates(session, sent.issue_id)
    assert (rates.hard, rates.soft, rates.complaints) == (0, 0, 0)
    assert describe(rates, {"mx.example.net": 1}) == (
        f"Issue {sent.issue_id}: hard bounces 0.00%, soft bounces 0.00%, complaints 0.00% of "
        "1,000 settled; policy refusals: mx.example.net 1"
    )
