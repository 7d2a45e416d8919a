"""Scenario 6: a relay down for a while, and a mix of bounces."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gazette.digests.planning import plan_issue
from gazette.newsletters.service import create_newsletter
from gazette.store.db import transaction
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    IssueStatus,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.support.env import installed_env
from tests.support.figures import record
from tests.support.reliability import (
    SLUG,
    add_articles,
    address,
    backoff_over,
    duplicates,
    ledger,
    load_issue,
    scenario,
    seed,
)
from tests.support.smtp import RecordingHandler, SMTPServer, by_recipient

# The fault and hostile-input suite: `make reliability` runs it and writes its report.
pytestmark = pytest.mark.reliability


def test_reliability_relay_down_then_back(
    tmp_path: Path, database_url: str, relay: RecordingHandler
) -> None:
    from worker.tasks import enqueue_issue, sweep

    readers = 100
    smtp = SMTPServer(relay)  # its port is chosen, nothing listens there yet
    with installed_env(tmp_path, database_url, smtp_url=smtp.url, batch_size="50") as (
        _env,
        runtime,
    ):
        issue_id = seed(runtime, tmp_path, readers)
        started = utcnow()
        enqueue_issue(issue_id)
        with runtime.sessions() as session:
            rows = session.execute(
                select(
                    Delivery.status, Delivery.attempts, Delivery.next_attempt_at,
                    Delivery.last_error,
                ).where(Delivery.issue_id == issue_id)
            ).all()  # fmt: skip
            statuses = Counter(session.scalars(select(Subscription.status)))
            bounced = session.scalar(select(func.sum(Subscriber.bounce_count)))
        status_while_down = load_issue(runtime, issue_id).status
        # Beat's sweep while the backoff runs changes nothing.
        sweep()
        with runtime.sessions() as session:
            attempts_after_early_sweep = Counter(session.scalars(select(Delivery.attempts)))
        smtp.start()
        try:
            back = time.monotonic()
            moved = backoff_over(runtime)
            sweep()
            recovery = time.monotonic() - back
        finally:
            smtp.stop()
        final = ledger(runtime, issue_id)
        issue = load_issue(runtime, issue_id)
    received = by_recipient(relay.messages)
    assert len(rows) == readers
    for status, attempts, next_attempt_at, last_error in rows:
        assert (status, attempts) == (DeliveryStatus.PENDING, 1)
        assert next_attempt_at is not None
        assert next_attempt_at >= started + timedelta(minutes=5) - timedelta(seconds=5)
        assert (last_error or "").startswith("connection failed"), last_error
    assert statuses == {SubscriptionStatus.ACTIVE: readers}
    assert not bounced
    assert status_while_down == IssueStatus.SENDING
    assert attempts_after_early_sweep == {1: readers}
    assert moved == readers
    assert received == Counter(address(n) for n in range(readers))
    assert final == {DeliveryStatus.SENT: readers}
    assert (issue.status, issue.sent_count, issue.failed_count) == (IssueStatus.SENT, readers, 0)
    record(
        scenario("Relay down", database_url),
        f"{readers} deliveries while the SMTP port refused connections; then the relay came "
        "back, the backoff was moved into the past and the sweep ran",
        f"while down: {sum(1 for r in rows if r[0] == DeliveryStatus.PENDING)} pending, "
        f"{sum(1 for r in rows if r[0] == DeliveryStatus.FAILED)} failed; after: "
        f"{final[DeliveryStatus.SENT]} sent, {duplicates(received)} duplicate(s), "
        f"in {recovery:.1f} s",
        "all pending with a backoff and none failed while down; all delivered once after",
    )


def test_reliability_soft_and_hard_bounces(
    tmp_path: Path, database_url: str, relay: RecordingHandler
) -> None:
    """552 three times suppresses a reader, one 550 at once; a 451 is retried and delivered.

    The 552s come one per issue (three weekly issues to a full mailbox), so the bound
    holds whether a soft bounce is counted per reply or per issue.
    """
    from worker.tasks import enqueue_issue, sweep

    full, dead, grey = "full@example.org", "dead@example.org", "grey@example.org"
    others = [address(n) for n in range(10)]
    rcpts: Counter[str] = Counter()

    def rcpt(recipient: str, _count: int) -> str | None:
        rcpts[recipient] += 1
        if recipient == full:
            return "552 5.2.2 Mailbox full"
        if recipient == dead:
            return "550 5.1.1 User unknown"
        if recipient == grey and rcpts[recipient] == 1:
            return "451 4.7.1 Greylisted, try again later"
        return None

    relay.rcpt_script = rcpt
    with (
        SMTPServer(relay) as smtp,
        installed_env(tmp_path, database_url, smtp_url=smtp.url) as (_env, runtime),
    ):
        with transaction(runtime.sessions) as session:
            newsletter_id = create_newsletter(session, SLUG, "The Weekly")
            for email in [*others, full, dead, grey]:
                subscribe(session, email, SLUG, Origin("cli"), confirmed=True)

        def state(email: str) -> tuple[SubscriptionStatus, int]:
            with runtime.sessions() as session:
                row = session.execute(
                    select(Subscription.status, Subscriber.bounce_count)
                    .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
                    .where(Subscriber.email == email)
                ).one()
                return row[0], row[1]

        def send_issue(n: int) -> tuple[int, int]:
            # Published since the previous issue's cutoff, so this issue carries it.
            add_articles(runtime, 1, start=n, age=timedelta(0))
            with transaction(runtime.sessions) as session:
                plan = plan_issue(session, newsletter_id, utcnow(), key=f"issue-{n}")
            enqueue_issue(plan.issue_id)
            return plan.issue_id, plan.deliveries

        issue_ids: list[int] = []
        after_552: list[tuple[SubscriptionStatus, int]] = []
        first, _ = send_issue(1)
        issue_ids.append(first)
        after_552.append(state(full))
        dead_after_one = state(dead)
        # The greylisted reader's backoff runs out; the full mailbox's does not yet.
        backoff_over(runtime, lambda: Delivery.subscriber_id.in_(
            select(Subscriber.id).where(Subscriber.email == grey)
        ))  # fmt: skip
        sweep()
        grey_after_retry = state(grey)
        for n in (2, 3):
            issue_id, _ = send_issue(n)
            issue_ids.append(issue_id)
            after_552.append(state(full))
        fourth, fourth_deliveries = send_issue(4)
        issue_ids.append(fourth)
        backoff_over(runtime)
        sweep()
        with runtime.sessions() as session:
            rows = {
                (issue_id, email): status
                for issue_id, email, status in session.execute(
                    select(Delivery.issue_id, Subscriber.email, Delivery.status).join(
                        Subscriber, Subscriber.id == Delivery.subscriber_id
                    )
                )
            }
        issues = {issue_id: load_issue(runtime, issue_id).status for issue_id in issue_ids}
    received = by_recipient(relay.messages)
    # A hard bounce suppresses at once, and is never retried.
    assert dead_after_one == (SubscriptionStatus.BOUNCED, 1)
    assert rcpts[dead] == 1
    # A 451 is retried once its backoff ran out, and delivered once; no bounce counted.
    assert grey_after_retry == (SubscriptionStatus.ACTIVE, 0)
    assert received[grey] == 4
    assert received == Counter({**dict.fromkeys(others, 4), grey: 4})
    # One or two full-mailbox replies do not lose a reader...
    assert [status for status, _count in after_552[:2]] == [SubscriptionStatus.ACTIVE] * 2
    # ...the third suppresses them.
    assert after_552[2][0] == SubscriptionStatus.BOUNCED, after_552
    assert after_552[2][1] >= 3
    # Once suppressed they are not planned again, nor sent what was still waiting.
    assert fourth_deliveries == len(others) + 1
    assert (fourth, full) not in rows
    assert rcpts[full] == 3
    assert all(rows[(i, full)] != DeliveryStatus.PENDING for i in issue_ids[:3])
    assert set(issues.values()) == {IssueStatus.SENT}
    record(
        scenario("Soft and hard bounces", database_url),
        "three issues to a reader whose relay answers 552 (mailbox full), one 550 (user "
        "unknown), one 451 once (greylisting), ten healthy readers",
        f"552 reader after each 552: {[f'{s.value}/{c}' for s, c in after_552]}; 550 reader "
        f"after one: {dead_after_one[0].value}/{dead_after_one[1]}; 451 reader after the "
        f"retry: {grey_after_retry[0].value}/{grey_after_retry[1]}, {received[grey]} "
        f"message(s) for {len(issue_ids)} issues",
        "bounced after the third 552 (not before); bounced at the first 550; 451 delivered once",
    )
