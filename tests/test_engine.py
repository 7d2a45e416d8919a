"""The sending engine end to end: a real Redis broker, real `celery worker` processes, aiosmtpd.

Volume (10,000 messages through one issue), a worker killed with SIGKILL mid-send and
recovered by the sweep, a relay that defers, refuses and drops the connection, an
unsubscribe that lands while the issue is going out, every batch enqueued twice, and an
issue whose last waiting row an unsubscribe skips. Nothing leaves loopback; every wait
is bounded.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import select, update

from gazette.digests.ledger import pending_batches
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Issue,
    IssueStatus,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from gazette.subscribers.service import Origin
from gazette.tokens import Purpose
from gazette.web import create_app
from tests.support import reliability
from tests.support.env import installed_env
from tests.support.figures import record
from tests.support.http import serve
from tests.support.smtp import Received, SMTPServer, by_recipient, header_block, message_ids
from tests.support.workers import Worker, require_redis, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
BACKEND = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


# -- the relay ---------------------------------------------------------------------------


@dataclass
class EngineHandler(reliability.SlowHandler):
    """SlowHandler (``delay`` per DATA, headers only) that notes when each message arrived.

    Ten thousand whole digests would hold a few hundred megabytes for nothing: the
    header block carries what these tests check (recipient, Message-ID).
    """

    arrivals: list[float] = field(default_factory=list)

    def keep(self, received: Received) -> None:
        """Keep the header block and the moment it arrived, together."""
        with self.lock:
            self.messages.append(header_block(received))
            self.arrivals.append(time.monotonic())


@pytest.fixture
def smtp_handler() -> EngineHandler:
    """The relay of these tests (conftest's smtp_server serves it)."""
    return EngineHandler()


@pytest.fixture
def relay(smtp_handler: EngineHandler) -> EngineHandler:
    return smtp_handler


# -- the installation --------------------------------------------------------------------


@contextmanager
def installed(
    tmp_path: Path, database_url: str, smtp_server: SMTPServer, **extra: str
) -> Iterator[tuple[dict[str, str], Runtime]]:
    """GAZETTE_* for the workers, and the same installation migrated and used in-process."""
    with installed_env(
        tmp_path, database_url, broker_url=require_redis(), smtp_url=smtp_server.url, **extra
    ) as pair:
        yield pair


def outcome(runtime: Runtime, issue_id: int) -> tuple[Counter[DeliveryStatus], Issue]:
    """The issue's rows counted by status, and the issue itself."""
    return reliability.ledger(runtime, issue_id), reliability.load_issue(runtime, issue_id)


def first_pass(
    runtime: Runtime, issue_id: int, batches: int, timeout: float
) -> Counter[DeliveryStatus]:
    """Send the issue in ``batches`` batches; once no row is in flight, count its rows."""
    from gazette.digests.ledger import in_flight
    from worker.tasks import enqueue_issue

    assert enqueue_issue(issue_id) == batches

    def settled() -> bool:
        with runtime.sessions() as session:
            return not in_flight(session, issue_id, utcnow())

    wait_for(settled, timeout, "the first pass to settle")
    return reliability.ledger(runtime, issue_id)


def start_worker(env: dict[str, str], log: Path, concurrency: int = 2) -> Worker:
    """A `celery worker` that has said it is ready, so timings leave its start-up out."""
    worker = Worker(env, log, concurrency=concurrency)
    try:
        reliability.wait_ready(log)
    except BaseException:
        worker.stop()
        raise
    return worker


# -- 1. volume ---------------------------------------------------------------------------


def test_ten_thousand_messages_each_sent_once(
    tmp_path: Path, database_url: str, smtp_server: SMTPServer, relay: EngineHandler
) -> None:
    from worker.tasks import enqueue_issue

    readers = 10_000
    with installed(tmp_path, database_url, smtp_server, batch_size="500") as (env, runtime):
        # The worker starts while the readers are seeded; the timing starts when both are.
        worker = Worker(env, tmp_path / "worker.log")
        try:
            seeding = time.monotonic()
            issue_id = reliability.seed(runtime, tmp_path, readers)
            seeded = time.monotonic() - seeding
            reliability.wait_ready(tmp_path / "worker.log")
            started = time.monotonic()
            assert enqueue_issue(issue_id) == 20
            wait_for(
                lambda: reliability.issue_sent(runtime, issue_id),
                240,
                "the issue to be marked sent",
            )
            elapsed = time.monotonic() - started
        finally:
            worker.stop()
        print(
            f"\n[{runtime.engine.dialect.name}] seeded {readers} readers in {seeded:.1f} s; "
            f"sent {readers} messages in {elapsed:.1f} s ({readers / elapsed:.0f}/s)"
        )
        counts, issue = outcome(runtime, issue_id)
        with runtime.sessions() as session:
            recorded_ids = set(
                session.scalars(select(Delivery.message_id).where(Delivery.issue_id == issue_id))
            )
    assert counts == {DeliveryStatus.SENT: readers}
    assert (issue.sent_count, issue.failed_count, issue.skipped_count) == (readers, 0, 0)
    assert len(relay.messages) == readers
    ids = message_ids(relay.messages)
    assert len(ids) == readers
    assert set(ids) == recorded_ids
    assert by_recipient(relay.messages) == Counter(reliability.address(n) for n in range(readers))
    record(
        f"10,000 messages ({BACKEND[runtime.engine.dialect.name]})",
        "one issue of 10,000 sent by a real worker (2 processes) over Redis to an SMTP server",
        f"{readers:,} received, {len(ids):,} distinct Message-IDs, in {elapsed:.1f} s",
        "every reader exactly once",
    )


# -- 2. a worker killed mid-send -----------------------------------------------------------


def sweep_until_sent(
    runtime: Runtime, issue_id: int, timeout: float, what: str = "the sweep to settle the issue"
) -> None:
    """Enqueue the sweep, as beat does every minute, until the issue is marked sent.

    At most every two seconds, and only once the broker's queue has drained: each
    sweep re-enqueues every pending range, so sweeping into a full queue would only pile
    up copies of tasks that are already waiting there.
    """
    from worker.tasks import sweep

    assert runtime.settings.broker_url is not None
    last = -1.0
    with redis.Redis.from_url(runtime.settings.broker_url) as broker:

        def settled() -> bool:
            nonlocal last
            if reliability.issue_sent(runtime, issue_id):
                return True
            if time.monotonic() - last >= 2 and broker.llen(runtime.settings.queue) == 0:
                sweep.delay()
                last = time.monotonic()
            return False

        wait_for(settled, timeout, what)


def test_sigkill_mid_send_loses_nothing_and_resends_only_unrecorded_rows(
    tmp_path: Path, database_url: str, smtp_server: SMTPServer, relay: EngineHandler
) -> None:
    from worker.tasks import enqueue_issue

    readers = 6000
    relay.delay = 0.003  # a few milliseconds per message: the send lasts several seconds
    # A lease is written by the worker that claims the row, so the killed worker takes
    # its rows with the short lease too; with the default ten minutes nothing could be
    # reclaimed within the test.
    with installed(tmp_path, database_url, smtp_server, batch_size="200", lease_seconds="10") as (
        env,
        runtime,
    ):
        issue_id = reliability.seed(runtime, tmp_path, readers)
        first = start_worker(env, tmp_path / "first.log")
        second: Worker | None = None
        try:
            assert enqueue_issue(issue_id) == readers // 200
            reliability.wait_a_third_sent(runtime, issue_id, readers, 120)
            first.kill()
            at_kill = reliability.ledger(runtime, issue_id)
            in_flight_at_kill = reliability.being_sent(runtime, issue_id)
            restarted = time.monotonic()
            second = start_worker(env, tmp_path / "second.log")
            sweep_until_sent(runtime, issue_id, 180)
            recovery = time.monotonic() - restarted
        finally:
            first.stop()
            if second is not None:
                second.stop()
        counts, issue = outcome(runtime, issue_id)
        with runtime.sessions() as session:
            recorded_ids = set(
                session.scalars(select(Delivery.message_id).where(Delivery.issue_id == issue_id))
            )
    ids = message_ids(relay.messages)
    duplicates = sum(n - 1 for n in ids.values())
    per_reader = by_recipient(relay.messages)
    print(
        f"\n[{runtime.engine.dialect.name}] killed at {at_kill[DeliveryStatus.SENT]} sent, "
        f"{at_kill[DeliveryStatus.SENDING]} sending; {duplicates} duplicate(s); "
        f"recovered in {recovery:.1f} s"
    )
    # The kill landed mid-send and mid-batch, or this test would prove nothing.
    assert readers // 3 <= at_kill[DeliveryStatus.SENT] < readers
    assert at_kill[DeliveryStatus.SENDING] == len(in_flight_at_kill) > 0
    # Nothing lost: every reader got the issue, and the ledger says so.
    assert set(per_reader) == {reliability.address(n) for n in range(readers)}
    assert counts == {DeliveryStatus.SENT: readers}
    assert (issue.sent_count, issue.failed_count, issue.skipped_count) == (readers, 0, 0)
    assert set(ids) == recorded_ids
    # Only rows claimed but not yet recorded when the worker died can have gone out twice.
    assert duplicates <= at_kill[DeliveryStatus.SENDING]
    assert {a for a, n in per_reader.items() if n > 1} <= in_flight_at_kill
    assert max(per_reader.values()) <= 2
    record(
        f"worker SIGKILL mid-issue ({BACKEND[runtime.engine.dialect.name]})",
        f"{readers:,} deliveries; the worker and its pool killed with SIGKILL a third of the "
        "way, a new worker started, the sweep reclaims expired leases",
        f"0 lost, {duplicates} duplicates ({at_kill[DeliveryStatus.SENDING]} rows in flight), "
        f"recovered in {recovery:.1f} s",
        "0 lost; duplicates at most the rows in flight",
    )


# -- 3. a relay that defers, refuses and drops the connection ----------------------------


def test_deferrals_refusals_and_421_each_end_right(
    tmp_path: Path, database_url: str, smtp_server: SMTPServer, relay: EngineHandler
) -> None:
    from worker.tasks import sweep

    readers = 1000
    deferred = {reliability.address(n) for n in range(readers) if n % 20 == 7}  # 5 %: 451 once
    refused = {reliability.address(n) for n in range(readers) if n % 50 == 13}  # 2 %: 550 always
    assert (len(deferred), len(refused), deferred & refused) == (50, 20, set())
    deferred_once: set[str] = set()

    def rcpt(recipient: str, _data_count: int) -> str | None:
        if recipient in refused:
            return f"550 5.1.1 <{recipient}>: Recipient address rejected: User unknown"
        if recipient in deferred and recipient not in deferred_once:
            deferred_once.add(recipient)
            return "451 4.7.1 Greylisted, please try again later"
        return None

    def data(_recipient: str, count: int) -> str | None:
        return "421 4.3.2 Service shutting down" if count % 100 == 0 else None

    relay.rcpt_script, relay.data_script = rcpt, data
    with installed(tmp_path, database_url, smtp_server, batch_size="100") as (env, runtime):
        issue_id = reliability.seed(runtime, tmp_path, readers)
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            after_first = first_pass(runtime, issue_id, 10, 120)
            status_after_first = reliability.load_issue(runtime, issue_id).status
            with transaction(runtime.sessions) as session:
                waiting = session.execute(
                    select(Subscriber.email, Delivery.next_attempt_at, Delivery.last_error)
                    .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                    .where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.PENDING)
                ).all()
                # The backoff has run out: make it so, and let the sweep find the rows.
                session.execute(
                    update(Delivery)
                    .where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.PENDING)
                    .values(next_attempt_at=utcnow() - timedelta(seconds=1))
                )
            received_after_first = by_recipient(relay.messages)
            sweep.delay()
            reliability.wait_sent(runtime, issue_id, 60, "the retries to be sent")
        finally:
            worker.stop()
        counts, issue = outcome(runtime, issue_id)
        with runtime.sessions() as session:
            rows = {
                email: (status, attempts, last_error)
                for email, status, attempts, last_error in session.execute(
                    select(
                        Subscriber.email, Delivery.status, Delivery.attempts, Delivery.last_error
                    )
                    .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                    .where(Delivery.issue_id == issue_id)
                )
            }
            subscriptions = dict(
                session.execute(
                    select(Subscriber.email, Subscription.status).join(
                        Subscription, Subscription.subscriber_id == Subscriber.id
                    )
                ).all()
            )
            bounce_counts = dict(
                session.execute(
                    select(Subscriber.email, Subscriber.bounce_count).where(
                        Subscriber.email.in_(refused)
                    )
                ).all()
            )
    # The first pass: 451 left rows waiting on a backoff, 550 failed them, the issue waits.
    assert after_first == {
        DeliveryStatus.SENT: readers - 70,
        DeliveryStatus.FAILED: 20,
        DeliveryStatus.PENDING: 50,
    }
    assert status_after_first == IssueStatus.SENDING
    assert {email for email, _at, _error in waiting} == deferred
    now = utcnow()
    for _email, at, error in waiting:
        assert at is not None
        assert at > now + timedelta(minutes=4)
        assert (error or "").startswith("451")
    assert not set(received_after_first) & (deferred | refused)
    # The relay really said all that: 50 first-time 451s, and a 421 on every 100th DATA.
    assert deferred_once == deferred
    assert relay.data_count // 100 >= 9
    # In the end: every deferred reader got it once, refused ones never, nobody twice.
    received = by_recipient(relay.messages)
    assert received == Counter(
        a for n in range(readers) if (a := reliability.address(n)) not in refused
    )
    assert max(message_ids(relay.messages).values()) == 1
    for email in deferred:
        assert rows[email][:2] == (DeliveryStatus.SENT, 2)
    for email in refused:
        status, attempts, error = rows[email]
        assert (status, attempts) == (DeliveryStatus.FAILED, 1)
        assert (error or "").startswith("550 5.1.1")
        assert subscriptions[email] == SubscriptionStatus.BOUNCED
    assert bounce_counts == dict.fromkeys(refused, 1)
    assert {e for e, s in subscriptions.items() if s != SubscriptionStatus.ACTIVE} == refused
    assert counts == {DeliveryStatus.SENT: readers - 20, DeliveryStatus.FAILED: 20}
    assert (issue.sent_count, issue.failed_count, issue.skipped_count) == (readers - 20, 20, 0)
    record(
        f"421/451/550 mix ({BACKEND[runtime.engine.dialect.name]})",
        f"{readers:,} readers: 451 once for 5%, 550 for 2%, 421 on every 100th DATA",
        f"{readers - 20:,} delivered (the 451s after backoff), 20 failed without retry, "
        "0 sent twice",
        "451 delivered, 550 failed once, nothing twice",
    )


# -- 4. an unsubscribe that lands mid-send -------------------------------------------------


def record_unsubscribe_mid_send(runtime: Runtime) -> None:
    """The report's row for an unsubscribe that lands while the issue is being sent."""
    record(
        f"one-click unsubscribe mid-send ({BACKEND[runtime.engine.dialect.name]})",
        "RFC 8058 POST for a reader late in the order while the issue is being sent",
        "0 messages to that reader, delivery skipped",
        "nothing after the POST",
    )


def test_one_click_unsubscribe_mid_send_skips_the_reader(
    tmp_path: Path, database_url: str, smtp_server: SMTPServer, relay: EngineHandler
) -> None:
    from worker.tasks import enqueue_issue

    readers = 2000
    relay.delay = 0.005
    with installed(tmp_path, database_url, smtp_server, batch_size="100") as (env, runtime):
        issue_id = reliability.seed(runtime, tmp_path, readers)
        with runtime.sessions() as session:
            late_delivery, late_email, late_public_id = session.execute(
                select(Delivery.id, Subscriber.email, Subscriber.public_id)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.issue_id == issue_id)
                .order_by(Delivery.id.desc())
                .limit(1)
            ).one()
        token = runtime.tokens.mint(Purpose.UNSUBSCRIBE, late_public_id, reliability.SLUG)
        with serve(create_app(runtime)) as server:
            worker = start_worker(env, tmp_path / "worker.log")
            try:
                assert enqueue_issue(issue_id) == 20
                wait_for(lambda: len(relay.messages) > 0, 60, "the first message to arrive")
                response = httpx.post(
                    f"{server.url}/unsubscribe/{token}",
                    data={"List-Unsubscribe": "One-Click"},
                    timeout=30,
                )
                answered = time.monotonic()
                sent_when_answered = reliability.ledger(runtime, issue_id)[DeliveryStatus.SENT]
                reliability.wait_sent(runtime, issue_id, 120, "the issue to be sent")
            finally:
                worker.stop()
        counts, issue = outcome(runtime, issue_id)
        with runtime.sessions() as session:
            late_row = session.get_one(Delivery, late_delivery)
            subscription_status = session.scalar(
                select(Subscription.status)
                .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
                .where(Subscriber.email == late_email)
            )
    assert response.status_code == 200, response.text
    # The POST was answered while the issue was still going out.
    assert sent_when_answered < readers - 100
    received = by_recipient(relay.messages)
    late_arrivals = [
        at
        for message, at in zip(relay.messages, relay.arrivals, strict=True)
        if late_email in message.recipients
    ]
    assert not [at for at in late_arrivals if at > answered], "mailed after unsubscribing"
    assert late_arrivals == []
    assert received == Counter(
        a for n in range(readers) if (a := reliability.address(n)) != late_email
    )
    assert (late_row.status, late_row.message_id) == (DeliveryStatus.SKIPPED, None)
    assert subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert counts == {DeliveryStatus.SENT: readers - 1, DeliveryStatus.SKIPPED: 1}
    assert (issue.sent_count, issue.failed_count, issue.skipped_count) == (readers - 1, 0, 1)
    record_unsubscribe_mid_send(runtime)


# -- 5. every batch enqueued twice -----------------------------------------------------------


def succeeded_tasks(log: Path) -> int:
    """How many send_batch tasks a worker's log says succeeded."""
    return len(re.findall(rb"Task gazette\.send_batch\[[^\]]+\] succeeded", log.read_bytes()))


def test_every_batch_enqueued_twice_sends_each_message_once(
    tmp_path: Path, database_url: str, smtp_server: SMTPServer, relay: EngineHandler
) -> None:
    from worker.tasks import send_batch

    readers = 2000
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]

    with installed(tmp_path, database_url, smtp_server, batch_size="100") as (env, runtime):
        issue_id = reliability.seed(runtime, tmp_path, readers)
        with runtime.sessions() as session:
            ranges = pending_batches(session, issue_id, runtime.settings.batch_size)
        assert len(ranges) == 20
        workers: list[Worker] = []
        try:
            for log in logs:
                workers.append(start_worker(env, log, concurrency=1))
            for low, high in ranges:
                send_batch.delay(issue_id, low, high)
                send_batch.delay(issue_id, low, high)
            wait_for(lambda: reliability.issue_sent(runtime, issue_id), 120, "the issue to be sent")
            wait_for(
                lambda: sum(succeeded_tasks(log) for log in logs) == 2 * len(ranges),
                60,
                "every copy of every task to have run",
            )
        finally:
            for worker in workers:
                worker.stop()
        counts, issue = outcome(runtime, issue_id)
        with runtime.sessions() as session:
            attempts = Counter(
                session.scalars(select(Delivery.attempts).where(Delivery.issue_id == issue_id))
            )
    # Both worker processes took tasks, so copies of one batch really ran side by side.
    assert all(succeeded_tasks(log) > 0 for log in logs)
    assert by_recipient(relay.messages) == Counter(reliability.address(n) for n in range(readers))
    ids = message_ids(relay.messages)
    assert len(ids) == readers
    assert max(ids.values()) == 1
    assert counts == {DeliveryStatus.SENT: readers}
    assert attempts == {1: readers}  # every row claimed once, by one copy of its task
    assert (issue.sent_count, issue.failed_count, issue.skipped_count) == (readers, 0, 0)
    record(
        f"every batch enqueued twice ({BACKEND[runtime.engine.dialect.name]})",
        f"{len(ranges)} batch tasks over {readers:,} deliveries, each enqueued twice; two workers",
        f"{len(ids):,} messages for {readers:,} readers, 0 sent twice",
        "each message once",
    )


# -- 6. the last waiting row skipped by an unsubscribe -------------------------------------


def test_issue_finishes_when_its_last_waiting_row_is_unsubscribed(
    tmp_path: Path, database_url: str, smtp_server: SMTPServer, relay: EngineHandler
) -> None:
    """docs/operations.md: the issue is marked sent when no row is pending or sending.

    A row waiting on a retry backoff that its reader's unsubscribe skips leaves no
    pending row behind; nothing but the sweep runs for the issue after that.
    """
    from gazette.subscribers.unsubscribing import unsubscribe_link

    readers = 20
    greylisted = reliability.address(7)

    def rcpt(recipient: str, _data_count: int) -> str | None:
        return "451 4.7.1 Greylisted, please try again later" if recipient == greylisted else None

    relay.rcpt_script = rcpt
    with installed(tmp_path, database_url, smtp_server, batch_size="100") as (env, runtime):
        issue_id = reliability.seed(runtime, tmp_path, readers)
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            after_first = first_pass(runtime, issue_id, 1, 60)
            with transaction(runtime.sessions) as session:
                public_id = session.scalar(
                    select(Subscriber.public_id).where(Subscriber.email == greylisted)
                )
                assert public_id is not None
                assert unsubscribe_link(session, public_id, reliability.SLUG, Origin("web")).changed
            after_unsubscribe = reliability.ledger(runtime, issue_id)
            status_after_unsubscribe = reliability.load_issue(runtime, issue_id).status
            # Beat would run the sweep every minute; a few runs are as good as a week of them.
            sweep_until_sent(
                runtime, issue_id, 20, "the sweep to mark sent an issue with no pending row left"
            )
        finally:
            worker.stop()
        issue = reliability.load_issue(runtime, issue_id)
    assert after_first == {DeliveryStatus.SENT: readers - 1, DeliveryStatus.PENDING: 1}
    assert after_unsubscribe == {DeliveryStatus.SENT: readers - 1, DeliveryStatus.SKIPPED: 1}
    assert status_after_unsubscribe == IssueStatus.SENDING
    assert greylisted not in by_recipient(relay.messages)
    assert issue.finished_at is not None
    assert (issue.sent_count, issue.failed_count, issue.skipped_count) == (readers - 1, 0, 1)
    record_unsubscribe_mid_send(runtime)
