"""Scenario 5: a relay that hangs up after the final dot; the duplicates stay bounded."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gazette.store.models import Delivery, DeliveryStatus, IssueStatus, Subscriber
from tests.support import reliability
from tests.support.env import installed_env
from tests.support.figures import record
from tests.support.smtp import SMTPServer, by_recipient, message_ids

# The fault and hostile-input suite: `make reliability` runs it and writes its report.
pytestmark = pytest.mark.reliability


def test_reliability_relay_hangs_up_after_the_final_dot(tmp_path: Path, database_url: str) -> None:
    from worker.tasks import enqueue_issue, sweep

    readers, drops = 200, 50
    relay = reliability.DropAfterDotHandler(drops=drops)
    with (
        SMTPServer(relay) as smtp,
        installed_env(
            tmp_path, database_url, smtp_url=f"{smtp.url}?timeout=10", batch_size="100"
        ) as (
            _env,
            runtime,
        ),
    ):
        issue_id = reliability.seed(runtime, tmp_path, readers)
        enqueue_issue(issue_id)  # no broker: the batches run here, one after the other
        first_pass = reliability.ledger(runtime, issue_id)
        reliability.backoff_over(runtime)
        sweep()
        final = reliability.ledger(runtime, issue_id)
        issue = reliability.load_issue(runtime, issue_id)
        with runtime.sessions() as session:
            bounces = session.scalar(select(func.sum(Subscriber.bounce_count)))
            recorded = dict(
                session.execute(
                    select(Subscriber.email, Delivery.message_id)
                    .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                    .where(Delivery.issue_id == issue_id)
                ).all()
            )
    received = by_recipient(relay.messages)
    dups = reliability.duplicates(received)
    assert len(relay.dropped) == drops
    # A hang-up is never a refusal: nothing failed, nothing bounced.
    assert first_pass[DeliveryStatus.FAILED] == 0
    assert not bounces
    assert first_pass[DeliveryStatus.SENT] + first_pass[DeliveryStatus.PENDING] == readers
    # Nothing lost, every copy of a message is the same message, and few copies.
    assert set(received) == {reliability.address(n) for n in range(readers)}
    assert final == {DeliveryStatus.SENT: readers}
    assert (issue.status, issue.sent_count) == (IssueStatus.SENT, readers)
    assert dups <= drops
    for message in relay.messages:
        (recipient,) = message.recipients
        assert message_ids([message]) == Counter([recorded[recipient]])
    record(
        reliability.scenario("Relay hangs up after the final dot", database_url),
        f"{readers} messages to an SMTP server that stored the first {drops} and closed the "
        "connection instead of replying 250; the sweep retried what was left pending",
        f"{readers - len(received)} lost, {dups} duplicate(s) for {len(relay.dropped)} "
        f"hang-up(s); {first_pass[DeliveryStatus.PENDING]} row(s) pending after the first "
        f"pass, {first_pass[DeliveryStatus.FAILED]} failed, {bounces or 0} bounce(s)",
        f"0 lost; duplicates <= {drops}",
    )
