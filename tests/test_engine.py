"""The sending engine end to end: a real Redis broker, real `celery worker` processes, aiosmtpd.

Volume (10,000 messages through one issue), a worker killed with SIGKILL mid-send and
recovered by the sweep, a relay that defers, refuses and drops the connection, an
unsubscribe that lands while the issue is going out, every batch enqueued twice, and an
issue whose last waiting row an unsubscribe skips. Nothing leaves loopback; every wait
is bounded.
"""

from __future__ import annotations

import asyncio
import csv
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select, update
from waitress import wasyncore
from waitress.server import create_server

from gazette.articles import ArticleInput, upsert_article
from gazette.config import load_settings
from gazette.digests import pending_batches, plan_issue
from gazette.imports import import_csv
from gazette.newsletters import create_newsletter
from gazette.runtime import Runtime, build_runtime, use_runtime
from gazette.store import migrate
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
from gazette.subscribers import Origin
from gazette.tokens import Purpose
from gazette.web import create_app
from tests.conftest import make_env
from tests.figures import record
from tests.smtp import Received, RecordingHandler, SMTPServer, by_recipient, message_ids
from tests.workers import Worker, require_redis, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
BACKEND = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

SLUG = "weekly"
LANGUAGES = ("en", "uk", "ja")


# -- the relay ---------------------------------------------------------------------------


@dataclass
class EngineHandler(RecordingHandler):
    """RecordingHandler that can take ``delay`` seconds per DATA and keeps headers only.

    Ten thousand whole digests would hold a few hundred megabytes for nothing: the
    header block carries what these tests check (recipient, Message-ID). The delay is
    awaited, so slowing the relay never blocks its other sessions.
    """

    delay: float = 0.0
    arrivals: list[float] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.data_count += 1
            count = self.data_count
        if self.data_script is not None:
            reply = self.data_script(envelope.rcpt_tos[0], count)
            if reply is not None:
                return reply
        content: bytes = envelope.original_content
        head = re.split(rb"\r?\n\r?\n", content, maxsplit=1)[0]
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), head))
            self.arrivals.append(time.monotonic())
        return "250 Message accepted"


@pytest.fixture
def relay() -> EngineHandler:
    return EngineHandler()


@pytest.fixture
def smtp(relay: EngineHandler) -> Iterator[SMTPServer]:
    server = SMTPServer(relay)
    server.start()
    yield server
    server.stop()


# -- the installation --------------------------------------------------------------------


@contextmanager
def installed(
    tmp_path: Path, database_url: str, smtp: SMTPServer, **extra: str
) -> Iterator[tuple[dict[str, str], Runtime]]:
    """GAZETTE_* for the workers, and the same installation migrated and used in-process."""
    from worker.app import configure

    env = make_env(tmp_path, database_url, broker_url=require_redis(), smtp_url=smtp.url, **extra)
    settings = load_settings(env, cwd=tmp_path)
    built = build_runtime(settings)
    migrate.upgrade(built.engine)
    use_runtime(built)
    configure(settings)
    try:
        yield env, built
    finally:
        use_runtime(None)


def address(n: int) -> str:
    return f"reader{n}@example.org"


def seed(runtime: Runtime, tmp_path: Path, readers: int) -> int:
    """A newsletter, three articles and ``readers`` confirmed readers (one CSV import).

    Returns the id of the planned issue, whose ledger holds one pending row per reader.
    """
    now = utcnow()
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, SLUG, "The Weekly")
        for n in range(3):
            upsert_article(
                session,
                ArticleInput(
                    title=f"Article {n}",
                    url=f"https://example.org/a/{n}",
                    published_at=now - timedelta(hours=n + 1),
                    summary="<p>Summary.</p>",
                ),
            )
    path = tmp_path / "readers.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "language"])
        writer.writerows(
            [address(n), f"Reader {n}", LANGUAGES[n % len(LANGUAGES)]] for n in range(readers)
        )
    report = import_csv(runtime.sessions, path, SLUG, Origin("import"), confirmed=True)
    assert (report.added, report.rejected) == (readers, [])
    with transaction(runtime.sessions) as session:
        plan = plan_issue(session, newsletter_id, now + timedelta(seconds=1))
    assert (plan.status, plan.deliveries) == (IssueStatus.PLANNED, readers)
    return plan.issue_id


def ledger(runtime: Runtime, issue_id: int) -> Counter[DeliveryStatus]:
    """The issue's delivery rows counted by status."""
    with runtime.sessions() as session:
        rows = session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.issue_id == issue_id)
            .group_by(Delivery.status)
        )
        return Counter(dict(rows.all()))


def load_issue(runtime: Runtime, issue_id: int) -> Issue:
    with runtime.sessions() as session:
        return session.get_one(Issue, issue_id)


def issue_sent(runtime: Runtime, issue_id: int) -> bool:
    return load_issue(runtime, issue_id).status == IssueStatus.SENT


def wait_ready(log: Path) -> None:
    """Wait until the worker logging to ``log`` says it is ready to take tasks."""
    wait_for(lambda: b" ready." in log.read_bytes(), 60, f"the worker logging to {log.name}")


def start_worker(env: dict[str, str], log: Path, concurrency: int = 2) -> Worker:
    """A `celery worker` that has said it is ready, so timings leave its start-up out."""
    worker = Worker(env, log, concurrency=concurrency)
    try:
        wait_ready(log)
    except BaseException:
        worker.stop()
        raise
    return worker


# -- 1. volume ---------------------------------------------------------------------------


def test_ten_thousand_messages_each_sent_once(
    tmp_path: Path, database_url: str, smtp: SMTPServer, relay: EngineHandler
) -> None:
    from worker.tasks import enqueue_issue

    readers = 10_000
    with installed(tmp_path, database_url, smtp, batch_size="500") as (env, runtime):
        # The worker starts while the readers are seeded; the timing starts when both are.
        worker = Worker(env, tmp_path / "worker.log")
        try:
            seeding = time.monotonic()
            issue_id = seed(runtime, tmp_path, readers)
            seeded = time.monotonic() - seeding
            wait_ready(tmp_path / "worker.log")
            started = time.monotonic()
            assert enqueue_issue(issue_id) == 20
            wait_for(lambda: issue_sent(runtime, issue_id), 240, "the issue to be marked sent")
            elapsed = time.monotonic() - started
        finally:
            worker.stop()
        print(
            f"\n[{runtime.engine.dialect.name}] seeded {readers} readers in {seeded:.1f} s; "
            f"sent {readers} messages in {elapsed:.1f} s ({readers / elapsed:.0f}/s)"
        )
        counts = ledger(runtime, issue_id)
        issue = load_issue(runtime, issue_id)
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
    assert by_recipient(relay.messages) == Counter(address(n) for n in range(readers))
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
            if issue_sent(runtime, issue_id):
                return True
            if time.monotonic() - last >= 2 and broker.llen(runtime.settings.queue) == 0:
                sweep.delay()
                last = time.monotonic()
            return False

        wait_for(settled, timeout, what)


def test_sigkill_mid_send_loses_nothing_and_resends_only_unrecorded_rows(
    tmp_path: Path, database_url: str, smtp: SMTPServer, relay: EngineHandler
) -> None:
    from worker.tasks import enqueue_issue

    readers = 6000
    relay.delay = 0.003  # a few milliseconds per message: the send lasts several seconds
    # A lease is written by the worker that claims the row, so the killed worker takes
    # its rows with the short lease too; with the default ten minutes nothing could be
    # reclaimed within the test.
    with installed(tmp_path, database_url, smtp, batch_size="200", lease_seconds="10") as (
        env,
        runtime,
    ):
        issue_id = seed(runtime, tmp_path, readers)
        first = start_worker(env, tmp_path / "first.log")
        second: Worker | None = None
        try:
            assert enqueue_issue(issue_id) == readers // 200
            wait_for(
                lambda: ledger(runtime, issue_id)[DeliveryStatus.SENT] >= readers // 3,
                120,
                "a third of the issue to be sent",
            )
            first.kill()
            at_kill = ledger(runtime, issue_id)
            with runtime.sessions() as session:
                in_flight_at_kill = set(
                    session.scalars(
                        select(Subscriber.email)
                        .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                        .where(
                            Delivery.issue_id == issue_id,
                            Delivery.status == DeliveryStatus.SENDING,
                        )
                    )
                )
            restarted = time.monotonic()
            second = start_worker(env, tmp_path / "second.log")
            sweep_until_sent(runtime, issue_id, 180)
            recovery = time.monotonic() - restarted
        finally:
            first.stop()
            if second is not None:
                second.stop()
        counts = ledger(runtime, issue_id)
        issue = load_issue(runtime, issue_id)
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
    assert set(per_reader) == {address(n) for n in range(readers)}
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
    tmp_path: Path, database_url: str, smtp: SMTPServer, relay: EngineHandler
) -> None:
    from gazette.digests import in_flight
    from worker.tasks import enqueue_issue, sweep

    readers = 1000
    deferred = {address(n) for n in range(readers) if n % 20 == 7}  # 5 %: 451 once
    refused = {address(n) for n in range(readers) if n % 50 == 13}  # 2 %: 550 always
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
    with installed(tmp_path, database_url, smtp, batch_size="100") as (env, runtime):
        issue_id = seed(runtime, tmp_path, readers)
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            assert enqueue_issue(issue_id) == 10

            def first_pass_done() -> bool:
                with runtime.sessions() as session:
                    return not in_flight(session, issue_id, utcnow())

            wait_for(first_pass_done, 120, "the first pass to settle")
            after_first = ledger(runtime, issue_id)
            status_after_first = load_issue(runtime, issue_id).status
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
            wait_for(lambda: issue_sent(runtime, issue_id), 60, "the retries to be sent")
        finally:
            worker.stop()
        counts = ledger(runtime, issue_id)
        issue = load_issue(runtime, issue_id)
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
    assert received == Counter(a for n in range(readers) if (a := address(n)) not in refused)
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


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve a WSGI app with waitress on 127.0.0.1 in a daemon thread; yield its URL."""
    server = create_server(app, host="127.0.0.1", port=0)
    stop = threading.Event()

    def run() -> None:
        # waitress's run() loops until its socket map is empty, and emptying the map from
        # another thread races with its poll, so this loop stops and cleans up itself.
        while not stop.is_set():
            wasyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)
        server.task_dispatcher.shutdown()
        wasyncore.close_all(server._map)

    thread = threading.Thread(target=run, name="waitress", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{int(server.effective_port)}"
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive(), "waitress did not stop"


def test_one_click_unsubscribe_mid_send_skips_the_reader(
    tmp_path: Path, database_url: str, smtp: SMTPServer, relay: EngineHandler
) -> None:
    from worker.tasks import enqueue_issue

    readers = 2000
    relay.delay = 0.005
    with installed(tmp_path, database_url, smtp, batch_size="100") as (env, runtime):
        issue_id = seed(runtime, tmp_path, readers)
        with runtime.sessions() as session:
            late_delivery, late_email, late_public_id = session.execute(
                select(Delivery.id, Subscriber.email, Subscriber.public_id)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.issue_id == issue_id)
                .order_by(Delivery.id.desc())
                .limit(1)
            ).one()
        token = runtime.tokens.mint(Purpose.UNSUBSCRIBE, late_public_id, SLUG)
        with serving(create_app(runtime)) as base_url:
            worker = start_worker(env, tmp_path / "worker.log")
            try:
                assert enqueue_issue(issue_id) == 20
                wait_for(lambda: len(relay.messages) > 0, 60, "the first message to arrive")
                response = httpx.post(
                    f"{base_url}/unsubscribe/{token}",
                    data={"List-Unsubscribe": "One-Click"},
                    timeout=30,
                )
                answered = time.monotonic()
                sent_when_answered = ledger(runtime, issue_id)[DeliveryStatus.SENT]
                wait_for(lambda: issue_sent(runtime, issue_id), 120, "the issue to be sent")
            finally:
                worker.stop()
        counts = ledger(runtime, issue_id)
        issue = load_issue(runtime, issue_id)
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
    assert received == Counter(a for n in range(readers) if (a := address(n)) != late_email)
    assert (late_row.status, late_row.message_id) == (DeliveryStatus.SKIPPED, None)
    assert subscription_status == SubscriptionStatus.UNSUBSCRIBED
    assert counts == {DeliveryStatus.SENT: readers - 1, DeliveryStatus.SKIPPED: 1}
    assert (issue.sent_count, issue.failed_count, issue.skipped_count) == (readers - 1, 0, 1)
    record(
        f"one-click unsubscribe mid-send ({BACKEND[runtime.engine.dialect.name]})",
        "RFC 8058 POST for a reader late in the order while the issue is being sent",
        "0 messages to that reader, delivery skipped",
        "nothing after the POST",
    )


# -- 5. every batch enqueued twice -----------------------------------------------------------


def succeeded_tasks(log: Path) -> int:
    """How many send_batch tasks a worker's log says succeeded."""
    return len(re.findall(rb"Task gazette\.send_batch\[[^\]]+\] succeeded", log.read_bytes()))


def test_every_batch_enqueued_twice_sends_each_message_once(
    tmp_path: Path, database_url: str, smtp: SMTPServer, relay: EngineHandler
) -> None:
    from worker.tasks import send_batch

    readers = 2000
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]

    with installed(tmp_path, database_url, smtp, batch_size="100") as (env, runtime):
        issue_id = seed(runtime, tmp_path, readers)
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
            wait_for(lambda: issue_sent(runtime, issue_id), 120, "the issue to be sent")
            wait_for(
                lambda: sum(succeeded_tasks(log) for log in logs) == 2 * len(ranges),
                60,
                "every copy of every task to have run",
            )
        finally:
            for worker in workers:
                worker.stop()
        counts = ledger(runtime, issue_id)
        issue = load_issue(runtime, issue_id)
        with runtime.sessions() as session:
            attempts = Counter(
                session.scalars(select(Delivery.attempts).where(Delivery.issue_id == issue_id))
            )
    # Both worker processes took tasks, so copies of one batch really ran side by side.
    assert all(succeeded_tasks(log) > 0 for log in logs)
    assert by_recipient(relay.messages) == Counter(address(n) for n in range(readers))
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
    tmp_path: Path, database_url: str, smtp: SMTPServer, relay: EngineHandler
) -> None:
    """docs/operations.md: the issue is marked sent when no row is pending or sending.

    A row waiting on a retry backoff that its reader's unsubscribe skips leaves no
    pending row behind; nothing but the sweep runs for the issue after that.
    """
    from gazette.digests import in_flight
    from gazette.subscribers import unsubscribe_link
    from worker.tasks import enqueue_issue

    readers = 20
    greylisted = address(7)

    def rcpt(recipient: str, _data_count: int) -> str | None:
        return "451 4.7.1 Greylisted, please try again later" if recipient == greylisted else None

    relay.rcpt_script = rcpt
    with installed(tmp_path, database_url, smtp, batch_size="100") as (env, runtime):
        issue_id = seed(runtime, tmp_path, readers)
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            assert enqueue_issue(issue_id) == 1

            def first_pass_done() -> bool:
                with runtime.sessions() as session:
                    return not in_flight(session, issue_id, utcnow())

            wait_for(first_pass_done, 60, "the first pass to settle")
            after_first = ledger(runtime, issue_id)
            with transaction(runtime.sessions) as session:
                public_id = session.scalar(
                    select(Subscriber.public_id).where(Subscriber.email == greylisted)
                )
                assert public_id is not None
                assert unsubscribe_link(session, public_id, SLUG, Origin("web")).changed
            after_unsubscribe = ledger(runtime, issue_id)
            status_after_unsubscribe = load_issue(runtime, issue_id).status
            # Beat would run the sweep every minute; a few runs are as good as a week of them.
            sweep_until_sent(
                runtime, issue_id, 20, "the sweep to mark sent an issue with no pending row left"
            )
        finally:
            worker.stop()
        issue = load_issue(runtime, issue_id)
    assert after_first == {DeliveryStatus.SENT: readers - 1, DeliveryStatus.PENDING: 1}
    assert after_unsubscribe == {DeliveryStatus.SENT: readers - 1, DeliveryStatus.SKIPPED: 1}
    assert status_after_unsubscribe == IssueStatus.SENDING
    assert greylisted not in by_recipient(relay.messages)
    assert issue.finished_at is not None
    assert (issue.sent_count, issue.failed_count, issue.skipped_count) == (readers - 1, 0, 1)
    record(
        f"one-click unsubscribe mid-send ({BACKEND[runtime.engine.dialect.name]})",
        "RFC 8058 POST for a reader late in the order while the issue is being sent",
        "0 messages to that reader, delivery skipped",
        "nothing after the POST",
    )
