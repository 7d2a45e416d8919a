"""Applying a report to the database (issue 18), on SQLite and PostgreSQL.

The policy end to end at the domain level: a hard bounce suppresses at once, soft ones
only at the limit, a policy refusal never counts against the reader but is counted for
its issue, a complaint ends every subscription for good, and a message applied twice
(or a copy of it) counts once. Deliveries here are ledger rows written directly; the
CLI tests send a real issue for theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gazette.bounces.policy import Effect
from gazette.bounces.processing import UNMATCHED, Outcome, process_message
from gazette.bounces.reports import Kind
from gazette.errors import GazetteError
from gazette.mail.verp import Verp
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import (
    BounceReport,
    Delivery,
    DeliveryStatus,
    Event,
    Issue,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from gazette.subscribers.bounces import SOFT_BOUNCE_LIMIT
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import confirm, subscribe
from gazette.subscribers.unsubscribing import forget
from tests.bounces.helpers import BOUNCE, sample
from tests.support.concurrency import at_once
from tests.support.env import TEST_KEY

KEYS = [TEST_KEY]
READERS = ("ada@example.org", "grace@example.org", "linus@example.org")


@dataclass
class Ledger:
    """One sent issue of "weekly" to READERS, a second newsletter for ada, the VERP of each."""

    runtime: Runtime
    issue_id: int
    verp: dict[str, str]
    ids: dict[str, int]

    def process(self, raw: bytes, *, require_verp: bool = False) -> Outcome:
        with transaction(self.runtime.sessions) as session:
            return process_message(session, raw, secret_keys=KEYS, require_verp=require_verp)

    def session(self) -> Session:
        return self.runtime.sessions()

    def statuses(self, email: str) -> dict[str, str]:
        with self.session() as session:
            rows = session.execute(
                select(Subscription.newsletter_id, Subscription.status)
                .where(Subscription.subscriber_id == self.ids[email])
                .order_by(Subscription.newsletter_id)
            ).all()
        return {str(newsletter): status.value for newsletter, status in rows}

    def bounce_count(self, email: str) -> int:
        with self.session() as session:
            return (
                session.scalar(
                    select(Subscriber.bounce_count).where(Subscriber.id == self.ids[email])
                )
                or 0
            )

    def events(self, email: str) -> list[str]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(Event.kind)
                    .where(Event.subscriber_id == self.ids[email])
                    .order_by(Event.id)
                )
            )

    def bounced_count(self) -> int:
        with self.session() as session:
            return session.scalar(select(Issue.bounced_count).where(Issue.id == self.issue_id)) or 0


@pytest.fixture
def ledger(runtime: Runtime) -> Ledger:
    with transaction(runtime.sessions) as session:
        weekly = create_newsletter(session, "weekly", "Weekly")
        create_newsletter(session, "monthly", "Monthly")
        ids = {}
        for email in READERS:
            ids[email] = subscribe(
                session, email, "weekly", Origin("import"), confirmed=True
            ).subscriber_id
        subscribe(session, READERS[0], "monthly", Origin("import"), confirmed=True)
        issue = Issue(newsletter_id=weekly, period_key="2026-12-06", cutoff_at=utcnow())
        session.add(issue)
        session.flush()
        verp = {}
        for email, subscriber_id in ids.items():
            row = Delivery(
                issue_id=issue.id, subscriber_id=subscriber_id, status=DeliveryStatus.SENT
            )
            session.add(row)
            session.flush()
            verp[email] = Verp(BOUNCE, KEYS).address(row.id)
    return Ledger(runtime, issue.id, verp, ids)


def test_a_hard_bounce_to_the_verp_address_bounces_that_reader_at_once(ledger: Ledger) -> None:
    outcome = ledger.process(
        sample(
            "dsn_failed_511.eml",
            verp=ledger.verp["ada@example.org"],
            recipient="forwarded@elsewhere.example",
        )
    )
    assert outcome.effects == (Effect.HARD,)
    assert set(ledger.statuses("ada@example.org").values()) == {"bounced"}
    assert ledger.bounce_count("ada@example.org") == 1
    assert ledger.events("ada@example.org")[-3:] == ["bounce", "suppressed", "suppressed"]
    assert ledger.bounced_count() == 1
    with ledger.session() as session:
        [row] = session.scalars(select(BounceReport)).all()
    assert (row.kind, row.effect, row.status, row.issue_id, row.domain) == (
        "failed", "hard bounce", "5.1.1", ledger.issue_id, "elsewhere.example",
    )  # fmt: skip


def test_the_same_message_twice_counts_once(ledger: Ledger) -> None:
    raw = sample("dsn_expired_447.eml", verp=ledger.verp["grace@example.org"])
    first = ledger.process(raw)
    again = ledger.process(raw)
    copy = ledger.process(raw.replace(b"\n", b"\r\n"))  # the same Message-ID, refolded
    assert first.effects == (Effect.SOFT,)
    assert again.duplicate
    assert copy.duplicate
    assert ledger.bounce_count("grace@example.org") == 1
    assert ledger.bounced_count() == 1
    assert ledger.events("grace@example.org").count("bounce") == 1


def test_soft_bounces_end_the_subscription_only_at_the_limit(ledger: Ledger) -> None:
    verp = ledger.verp["grace@example.org"]
    for n in range(1, SOFT_BOUNCE_LIMIT):
        ledger.process(sample("dsn_expired_447.eml", verp=verp, n=n))
        assert ledger.statuses("grace@example.org") != {}
        assert set(ledger.statuses("grace@example.org").values()) == {"active"}
    ledger.process(sample("dsn_expired_447.eml", verp=verp, n=SOFT_BOUNCE_LIMIT))
    assert set(ledger.statuses("grace@example.org").values()) == {"bounced"}
    assert ledger.bounce_count("grace@example.org") == SOFT_BOUNCE_LIMIT
    assert ledger.bounced_count() == SOFT_BOUNCE_LIMIT


def test_a_policy_refusal_is_counted_for_the_issue_never_against_the_reader(ledger: Ledger) -> None:
    outcome = ledger.process(sample("dsn_policy_571.eml", verp=ledger.verp["linus@example.org"]))
    assert outcome.effects == (Effect.NOT_THE_READER,)
    assert set(ledger.statuses("linus@example.org").values()) == {"active"}
    assert ledger.bounce_count("linus@example.org") == 0
    assert ledger.bounced_count() == 0
    assert ledger.events("linus@example.org")[-1] == "bounce_not_counted"
    with ledger.session() as session:
        counted = session.execute(
            select(BounceReport.effect, func.count())
            .where(BounceReport.issue_id == ledger.issue_id)
            .group_by(BounceReport.effect)
        ).all()
    assert counted == [("not the reader", 1)]


def test_delays_and_auto_replies_are_events_only(ledger: Ledger) -> None:
    ledger.process(sample("dsn_delayed_441.eml", verp=ledger.verp["ada@example.org"]))
    ledger.process(sample("auto_reply.eml", verp=ledger.verp["ada@example.org"]))
    assert set(ledger.statuses("ada@example.org").values()) == {"active"}
    assert ledger.bounce_count("ada@example.org") == 0
    assert ledger.events("ada@example.org")[-2:] == ["delayed", "auto_reply"]
    assert ledger.bounced_count() == 0


def test_a_complaint_ends_every_subscription_for_good(ledger: Ledger) -> None:
    outcome = ledger.process(sample("arf_complaint.eml", verp=ledger.verp["ada@example.org"]))
    assert outcome.effects == (Effect.COMPLAINT,)
    assert list(ledger.statuses("ada@example.org").values()) == ["complained", "complained"]
    assert ledger.events("ada@example.org")[-3:] == ["complaint", "complained", "complained"]
    with transaction(ledger.runtime.sessions) as session:
        assert session.scalar(select(Suppression.reason)) == "complaint"
        # The operator cannot bring them back, to this newsletter or another.
        create_newsletter(session, "daily", "Daily")
    for slug in ("weekly", "daily"):
        with (
            pytest.raises(GazetteError, match="forgotten or suppressed"),
            transaction(ledger.runtime.sessions) as session,
        ):
            subscribe(session, "ADA@example.org", slug, Origin("cli"), confirmed=True)
    # The reader's own sign-up and confirmation can.
    with transaction(ledger.runtime.sessions) as session:
        again = subscribe(session, "ada@example.org", "weekly", Origin("web"), reader_request=True)
        assert again.status is SubscriptionStatus.PENDING
        reader = session.get(Subscriber, ledger.ids["ada@example.org"])
        assert reader is not None
        public_id = reader.public_id
        assert confirm(session, public_id, "weekly", Origin("web"))
        assert session.scalar(select(func.count()).select_from(Suppression)) == 0


def test_without_a_token_the_recipient_is_matched_by_identity(ledger: Ledger) -> None:
    outcome = ledger.process(
        sample("dsn_failed_511.eml", verp=BOUNCE, recipient="Grace@EXAMPLE.org")
    )
    assert outcome.effects == (Effect.HARD,)
    assert set(ledger.statuses("grace@example.org").values()) == {"bounced"}
    assert ledger.bounced_count() == 0  # no token: which issue is not known


def test_requiring_verp_a_report_without_a_valid_token_changes_nothing(ledger: Ledger) -> None:
    other = Verp(BOUNCE, ["someone-elses-key-0123456789"]).address(1)
    for n, verp in enumerate((BOUNCE, other, "bounces+aaaaaaaaaaaaaaaaaaaa@bounce.example.org"), 1):
        outcome = ledger.process(
            sample("dsn_failed_511.eml", verp=verp, recipient="ada@example.org", n=n),
            require_verp=True,
        )
        assert outcome.unmatched
        assert outcome.effects == ()
        complaint = sample("arf_complaint.eml", verp=verp, recipient="ada@example.org", n=n)
        assert ledger.process(complaint, require_verp=True).unmatched
    assert set(ledger.statuses("ada@example.org").values()) == {"active"}
    assert ledger.bounce_count("ada@example.org") == 0
    with ledger.session() as session:
        assert set(session.scalars(select(BounceReport.effect))) == {UNMATCHED}


def test_a_report_about_a_forgotten_reader_changes_nothing(ledger: Ledger) -> None:
    with transaction(ledger.runtime.sessions) as session:
        forget(session, "linus@example.org", Origin("cli"))
    outcome = ledger.process(sample("dsn_failed_511.eml", verp=ledger.verp["linus@example.org"]))
    assert outcome.unmatched
    assert ledger.bounced_count() == 0


def test_an_unrecognised_message_is_not_recorded(ledger: Ledger) -> None:
    outcome = ledger.process(sample("binary_junk.eml"))
    assert outcome.kind is Kind.UNRECOGNISED
    with ledger.session() as session:
        assert session.scalar(select(func.count()).select_from(BounceReport)) == 0


def test_one_message_processed_by_several_runs_at_once_counts_once(ledger: Ledger) -> None:
    raw = sample("dsn_failed_511.eml", verp=ledger.verp["ada@example.org"])
    outcomes = at_once(4, lambda: ledger.process(raw))
    assert sorted(o.duplicate for o in outcomes) == [False, True, True, True]
    assert ledger.bounce_count("ada@example.org") == 1
    assert ledger.bounced_count() == 1
    assert ledger.events("ada@example.org").count("bounce") == 1
