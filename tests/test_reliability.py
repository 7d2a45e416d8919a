"""Reliability and security scenarios, each with a bound it must meet and a figure it records.

Broker outages (a Redis restarted or flushed mid-issue, with real `celery worker`
processes on a private `redis-server`), two schedulers racing for ten ticks, a relay that
hangs up after the final dot or is down for a while, a mix of soft and hard bounces,
100,000 forged tokens, 200 XSS payloads through the web form and the digest, subscribe
floods, CSRF, open redirects, a fuzzed CSV import and a spreadsheet-safe export.

Every scenario asserts its bound and calls tests.figures.record once with what it
measured. Everything stays on loopback and every wait is bounded. The engine scenarios
of test_engine.py (volume, SIGKILL, 421/451/550, unsubscribe mid-send, every batch
enqueued twice) are not repeated here.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import itertools
import json
import multiprocessing
import random
import re
import string
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import func, select, update

from gazette.articles import ALLOWED_TAGS, ArticleInput, upsert_article
from gazette.digests import plan_issue
from gazette.errors import GazetteError
from gazette.imports import FORMULA_LEAD, check_file, export_csv, import_csv
from gazette.newsletters import create_newsletter
from gazette.notices import greeting_name
from gazette.rendering import ArticleView, IssueView
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Event,
    Issue,
    IssueArticle,
    IssueStatus,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from gazette.subscribers import Origin, subscribe
from gazette.text import clean_line
from gazette.tokens import Purpose, TokenClaims, TokenError, Tokens
from gazette.web import create_app, server_options
from gazette.web.csrf import FIELD, SECURE_COOKIE
from tests.figures import record
from tests.http import Browser, LiveServer, Page, serve
from tests.reliability_helpers import (
    SLUG,
    DropAfterDotHandler,
    SlowHandler,
    add_articles,
    address,
    duplicates,
    injected,
    installed,
    issue_sent,
    ledger,
    load_issue,
    parse_html,
    plan_ticks,
    private_redis,
    seed,
    sweep_until,
    wait_ready,
    xss_payloads,
)
from tests.smtp import Received, RecordingHandler, SMTPServer, by_recipient, message_ids
from tests.workers import Worker, wait_for

# The fault and hostile-input suite: `make reliability` runs it and writes its report.
pytestmark = pytest.mark.reliability

BASE_URL = "https://news.example.org"
SUMMARY_TAGS = frozenset(ALLOWED_TAGS)  # what sanitised summary HTML may hold
MARKER = "@@GAZETTE:"  # how gazette.rendering marks the per-reader values in a render


def scenario(name: str, database_url: str) -> str:
    """The scenario's name in the report, with the database it ran on."""
    return f"{name} ({'PostgreSQL' if database_url.startswith('postgresql') else 'SQLite'})"


@pytest.fixture
def relay() -> RecordingHandler:
    return RecordingHandler()


@contextmanager
def running(server: SMTPServer) -> Iterator[SMTPServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def backoff_over(runtime: Runtime, where: Callable[[], object] | None = None) -> int:
    """Move every pending row's next attempt into the past, as if the backoff ran out."""
    with transaction(runtime.sessions) as session:
        statement = update(Delivery).where(Delivery.status == DeliveryStatus.PENDING)
        if where is not None:
            statement = statement.where(where())  # type: ignore[arg-type]
        result = session.execute(statement.values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        return int(result.rowcount)  # type: ignore[attr-defined]


# == 1, 2. the broker lost mid-issue ======================================================


@dataclass(frozen=True)
class Outage:
    """What a broker outage scenario measured."""

    readers: int
    at_outage: Counter[DeliveryStatus]
    queued_at_outage: int
    queued_after: int
    recovery: float
    received: Counter[str]
    ids: Counter[str]
    recorded_ids: set[str | None]
    final: Counter[DeliveryStatus]
    issue: Issue
    worker_alive: bool
    worker_log: bytes

    @property
    def lost(self) -> int:
        """Readers who never got the issue."""
        return self.readers - len(self.received)


def broker_outage(tmp_path: Path, database_url: str, kind: str) -> Outage:
    """Send an issue through a real worker; restart or flush its Redis a third of the way in."""
    from worker.tasks import enqueue_issue

    readers = 3000
    relay = SlowHandler(delay=0.004)  # a few ms per message: the send lasts several seconds
    log = tmp_path / "worker.log"
    with (
        running(SMTPServer(relay)) as smtp,
        private_redis(tmp_path) as broker,
        installed(
            tmp_path, database_url, broker_url=broker.url, smtp_url=smtp.url,
            batch_size="100", lease_seconds="10",
        ) as (env, runtime),
    ):  # fmt: skip
        queue = runtime.settings.queue
        issue_id = seed(runtime, tmp_path, readers)
        worker = Worker(env, log)
        try:
            wait_ready(log)
            assert enqueue_issue(issue_id) == readers // 100
            wait_for(
                lambda: ledger(runtime, issue_id)[DeliveryStatus.SENT] >= readers // 3,
                120,
                "a third of the issue to be sent",
            )
            with broker.client() as client:
                queued_at_outage = int(client.llen(queue))
                if kind == "restart":
                    broker.kill()
                else:
                    client.flushall()
            at_outage = ledger(runtime, issue_id)
            if kind == "restart":
                time.sleep(1.0)  # down for a moment, as a restart would be
                broker.start()
            with broker.client() as client:
                queued_after = int(client.llen(queue))
            recovering = time.monotonic()
            sweep_until(
                broker.url, queue, lambda: issue_sent(runtime, issue_id), 180,
                f"the sweep to finish the issue after the Redis {kind}",
            )  # fmt: skip
            recovery = time.monotonic() - recovering
            worker_alive = worker.process.poll() is None
        finally:
            worker.stop()
        with runtime.sessions() as session:
            recorded_ids = set(
                session.scalars(select(Delivery.message_id).where(Delivery.issue_id == issue_id))
            )
        return Outage(
            readers=readers,
            at_outage=at_outage,
            queued_at_outage=queued_at_outage,
            queued_after=queued_after,
            recovery=recovery,
            received=by_recipient(relay.messages),
            ids=message_ids(relay.messages),
            recorded_ids=recorded_ids,
            final=ledger(runtime, issue_id),
            issue=load_issue(runtime, issue_id),
            worker_alive=worker_alive,
            worker_log=log.read_bytes(),
        )


def check_outage(outage: Outage) -> None:
    """The bounds every broker outage must meet: nothing lost, few duplicates, all recorded."""
    readers = outage.readers
    # The outage landed mid-issue: rows were still waiting and tasks were queued.
    assert outage.at_outage[DeliveryStatus.PENDING] > 0, outage.at_outage
    assert outage.at_outage[DeliveryStatus.SENT] < readers
    assert outage.queued_at_outage > 0
    assert outage.queued_after == 0  # the queued tasks really were lost
    # Nothing lost: every reader got the issue, and the ledger says so.
    assert set(outage.received) == {address(n) for n in range(readers)}
    assert outage.final == {DeliveryStatus.SENT: readers}
    issue = outage.issue
    assert (issue.status, issue.sent_count, issue.failed_count) == (IssueStatus.SENT, readers, 0)
    assert set(outage.ids) == outage.recorded_ids
    # Only rows claimed when the broker went away could go out twice.
    assert duplicates(outage.received) <= outage.at_outage[DeliveryStatus.SENDING]
    # The same worker process carried on once the broker was back.
    assert outage.worker_alive


@pytest.mark.slow
def test_reliability_redis_restarted_mid_issue(tmp_path: Path, database_url: str) -> None:
    outage = broker_outage(tmp_path, database_url, "restart")
    sending = outage.at_outage[DeliveryStatus.SENDING]
    reconnected = outage.worker_log.count(b"Connected to redis://") >= 2
    check_outage(outage)
    assert reconnected, "the worker did not reconnect to the restarted Redis"
    record(
        scenario("Redis restarted mid-issue", database_url),
        f"{outage.readers:,} deliveries through a real worker; the private Redis was killed "
        "with SIGKILL a third of the way in and started again on the same port a second "
        "later; the sweep was enqueued until the issue was sent",
        f"{outage.lost} lost, {duplicates(outage.received)} duplicate(s); {sending} row(s) "
        f"sending and {outage.queued_at_outage} queued task(s) lost at the restart; the "
        f"worker {'reconnected' if reconnected else 'did not reconnect'}; recovered in "
        f"{outage.recovery:.1f} s",
        f"0 lost; duplicates <= rows sending at the restart ({sending})",
    )


@pytest.mark.slow
def test_reliability_redis_flushed_mid_issue(tmp_path: Path, database_url: str) -> None:
    outage = broker_outage(tmp_path, database_url, "flush")
    sending = outage.at_outage[DeliveryStatus.SENDING]
    check_outage(outage)
    record(
        scenario("Redis flushed mid-issue", database_url),
        f"{outage.readers:,} deliveries through a real worker; FLUSHALL on the private "
        "Redis a third of the way in; the sweep was enqueued until the issue was sent",
        f"{outage.lost} lost, {duplicates(outage.received)} duplicate(s); "
        f"{outage.at_outage[DeliveryStatus.PENDING]:,} pending row(s) and "
        f"{outage.queued_at_outage} queued task(s) flushed away; recovered in "
        f"{outage.recovery:.1f} s",
        f"0 lost; duplicates <= rows sending at the flush ({sending})",
    )


# == 3. two schedulers ====================================================================


def test_reliability_two_schedulers_plan_one_issue_per_period(
    tmp_path: Path, database_url: str
) -> None:
    readers, ticks = 25, 10
    base = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    with installed(tmp_path, database_url) as (_env, runtime):
        with transaction(runtime.sessions) as session:
            newsletter_id = create_newsletter(session, SLUG, "Every Minute", cron="* * * * *")
            for n in range(readers):
                subscribe(session, address(n), SLUG, Origin("cli"), confirmed=True)
            for k in range(ticks):
                upsert_article(
                    session,
                    ArticleInput(
                        title=f"Minute {k}",
                        url=f"https://example.org/minute/{k}",
                        published_at=base + timedelta(minutes=k, seconds=1),
                    ),
                )
        # Two schedulers whose clocks tick at different seconds of the same minutes.
        schedules = [
            [(base + timedelta(minutes=k, seconds=offset)).isoformat() for k in range(ticks)]
            for offset in (5, 35)
        ]
        spawn = multiprocessing.get_context("spawn")
        barrier = spawn.Barrier(2)
        results = spawn.Queue()
        url = runtime.settings.database_url
        processes = [
            spawn.Process(
                target=plan_ticks,
                args=(name, url, newsletter_id, schedule, barrier, results),
            )
            for name, schedule in zip(("at :05", "at :35"), schedules, strict=True)
        ]
        started = time.monotonic()
        for process in processes:
            process.start()
        try:
            reports = dict(results.get(timeout=120) for _ in processes)
        finally:
            for process in processes:
                process.join(timeout=30)
                if process.is_alive():  # pragma: no cover - only when a child hangs
                    process.kill()
                    process.join(timeout=10)
            results.close()
            results.join_thread()
        elapsed = time.monotonic() - started
        with runtime.sessions() as session:
            issues = session.execute(
                select(Issue.id, Issue.period_key, Issue.status).order_by(Issue.id)
            ).all()
            per_issue = dict(
                session.execute(
                    select(Delivery.issue_id, func.count()).group_by(Delivery.issue_id)
                ).all()
            )
            repeated = session.execute(
                select(Delivery.issue_id, Delivery.subscriber_id)
                .group_by(Delivery.issue_id, Delivery.subscriber_id)
                .having(func.count() > 1)
            ).all()
            articles = Counter(session.scalars(select(IssueArticle.issue_id)))
    assert [p.exitcode for p in processes] == [0, 0]
    first, second = reports["at :05"], reports["at :35"]
    assert len(first) == len(second) == ticks
    created = [int(a[1]) + int(b[1]) for a, b in zip(first, second, strict=True)]
    winners = Counter(":05" if a[1] else ":35" for a, _b in zip(first, second, strict=True))
    # Both schedulers got the same issue at every tick, and only one of them created it.
    for (issue_a, _c, deliveries_a, key_a), (issue_b, _d, deliveries_b, key_b) in zip(
        first, second, strict=True
    ):
        assert (issue_a, deliveries_a, key_a) == (issue_b, deliveries_b, key_b)
        assert deliveries_a == readers
    assert created == [1] * ticks
    assert len(issues) == ticks
    assert len({key for _id, key, _status in issues}) == ticks
    assert {status for _id, _key, status in issues} == {IssueStatus.PLANNED}
    assert per_issue == {issue_id: readers for issue_id, _key, _status in issues}
    assert repeated == []
    assert articles == {issue_id: 1 for issue_id, _key, _status in issues}
    record(
        scenario("Two schedulers", database_url),
        f"two OS processes planned the same every-minute newsletter ({readers} readers) at "
        f"{ticks} successive ticks, meeting at a barrier before each",
        f"{len(issues)} issue(s) for {ticks} periods, {sum(created)} created by "
        f"{2 * ticks} plan calls (the :05 scheduler created {winners[':05']}, the :35 one "
        f"{winners[':35']}), {len(repeated)} repeated delivery; {elapsed:.1f} s",
        "exactly one issue per period, one delivery per reader per issue",
    )


# == 5. a relay that hangs up after the final dot ========================================


def test_reliability_relay_hangs_up_after_the_final_dot(tmp_path: Path, database_url: str) -> None:
    from worker.tasks import enqueue_issue, sweep

    readers, drops = 200, 50
    relay = DropAfterDotHandler(drops=drops)
    with (
        running(SMTPServer(relay)) as smtp,
        installed(tmp_path, database_url, smtp_url=f"{smtp.url}?timeout=10", batch_size="100") as (
            _env,
            runtime,
        ),
    ):
        issue_id = seed(runtime, tmp_path, readers)
        enqueue_issue(issue_id)  # no broker: the batches run here, one after the other
        first_pass = ledger(runtime, issue_id)
        backoff_over(runtime)
        sweep()
        final = ledger(runtime, issue_id)
        issue = load_issue(runtime, issue_id)
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
    dups = duplicates(received)
    assert len(relay.dropped) == drops
    # A hang-up is never a refusal: nothing failed, nothing bounced.
    assert first_pass[DeliveryStatus.FAILED] == 0
    assert not bounces
    assert first_pass[DeliveryStatus.SENT] + first_pass[DeliveryStatus.PENDING] == readers
    # Nothing lost, every copy of a message is the same message, and few copies.
    assert set(received) == {address(n) for n in range(readers)}
    assert final == {DeliveryStatus.SENT: readers}
    assert (issue.status, issue.sent_count) == (IssueStatus.SENT, readers)
    assert dups <= drops
    for message in relay.messages:
        (recipient,) = message.recipients
        assert message_ids([message]) == Counter([recorded[recipient]])
    record(
        scenario("Relay hangs up after the final dot", database_url),
        f"{readers} messages to an SMTP server that stored the first {drops} and closed the "
        "connection instead of replying 250; the sweep retried what was left pending",
        f"{readers - len(received)} lost, {dups} duplicate(s) for {len(relay.dropped)} "
        f"hang-up(s); {first_pass[DeliveryStatus.PENDING]} row(s) pending after the first "
        f"pass, {first_pass[DeliveryStatus.FAILED]} failed, {bounces or 0} bounce(s)",
        f"0 lost; duplicates <= {drops}",
    )


# == 6. a relay down for a while, and a bounce mix =======================================


def test_reliability_relay_down_then_back(
    tmp_path: Path, database_url: str, relay: RecordingHandler
) -> None:
    from worker.tasks import enqueue_issue, sweep

    readers = 100
    smtp = SMTPServer(relay)  # its port is chosen, nothing listens there yet
    with installed(tmp_path, database_url, smtp_url=smtp.url, batch_size="50") as (_env, runtime):
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
        running(SMTPServer(relay)) as smtp,
        installed(tmp_path, database_url, smtp_url=smtp.url) as (_env, runtime),
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


# == 7. forged tokens =====================================================================

URL_SAFE = string.ascii_letters + string.digits + "-_"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed_bytes(token: str) -> tuple[str, bytes] | None:
    """A token's signed text and its decoded signature: what verification looks at."""
    head, sep, signature = token.rpartition(".")
    if not sep:
        return None
    try:
        return head, base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except (binascii.Error, ValueError):
        return None


def _mutations(token: str, rng: random.Random) -> str:
    """One random change: a bit flip, a substitution, an insertion, a deletion, a cut."""
    position = rng.randrange(len(token))
    kind = rng.randrange(7)
    if kind == 0:
        return (
            token[:position]
            + chr(ord(token[position]) ^ (1 << rng.randrange(8)))
            + token[position + 1 :]
        )
    if kind == 1:
        return token[:position] + rng.choice(URL_SAFE + ".") + token[position + 1 :]
    if kind == 2:
        return token[:position] + rng.choice(URL_SAFE + ".") + token[position:]
    if kind == 3:
        return token[:position] + token[position + 1 :]
    if kind == 4:
        return token[:position]
    if kind == 5:
        return token + "".join(rng.choices(URL_SAFE, k=rng.randrange(1, 8)))
    segments = token.split(".")
    rng.shuffle(segments)
    return ".".join(segments)


def test_reliability_forged_tokens_are_never_accepted() -> None:
    rng = random.Random(20261128)
    new_key, old_key = "new-key-0123456789abcdef", "old-key-0123456789abcdef"
    retired_key, foreign_key = "retired-key-0123456789ab", "another-installation-key"
    tokens = Tokens([new_key, old_key])  # the newest signs, the older one still verifies
    subscribers = [f"sub{n:03d}{rng.getrandbits(40):010x}" for n in range(40)]
    genuine = [
        (purpose, tokens.mint(purpose, sub, f"news-{n % 3}"), TokenClaims(sub, f"news-{n % 3}"))
        for n, (purpose, sub) in enumerate(itertools.product(Purpose, subscribers))
    ]
    # The control: every genuine token reads back, including one signed by the older key.
    for purpose, token, claims in genuine:
        assert tokens.read(purpose, token) == claims
    older = Tokens([old_key]).mint(Purpose.UNSUBSCRIBE, subscribers[0], "news-0")
    assert tokens.read(Purpose.UNSUBSCRIBE, older).subscriber == subscribers[0]

    retired = Tokens([retired_key])  # a key this installation signed with once, now dropped
    foreign = URLSafeTimedSerializer(foreign_key, salt="gazette.unsubscribe")
    unsigned = URLSafeTimedSerializer(new_key, salt="not-gazette")

    def candidates() -> Iterator[tuple[str, Purpose, str]]:
        purposes = list(Purpose)
        for _ in range(15_000):
            raw = rng.randbytes(rng.randrange(1, 120))
            yield "random bytes", rng.choice(purposes), raw.decode("latin-1")
        for _ in range(10_000):
            yield (
                "random URL-safe",
                rng.choice(purposes),
                "".join(rng.choices(URL_SAFE, k=rng.randrange(1, 140))),
            )
        for _ in range(10_000):
            parts = [rng.randrange(20, 80), rng.randrange(4, 8), 27]
            yield (
                "token-shaped",
                rng.choice(purposes),
                ".".join("".join(rng.choices(URL_SAFE, k=k)) for k in parts),
            )
        for _ in range(5_000):
            text = "".join(chr(rng.randrange(0x20, 0xD7FF)) for _ in range(rng.randrange(1, 60)))
            yield "random Unicode", rng.choice(purposes), text
        mutated = 0
        while mutated < 40_000:
            purpose, token, _claims = rng.choice(genuine)
            candidate = _mutations(token, rng)
            # Changing only the padding bits of the signature's last character leaves the
            # very same signature: that is the genuine token, not a forgery.
            if candidate == token or _signed_bytes(candidate) == _signed_bytes(token):
                continue
            mutated += 1
            yield "mutated", purpose, candidate
        by_purpose = {p: [t for q, t, _c in genuine if q is p] for p in Purpose}
        for _ in range(5_000):
            # Another reader's payload under this reader's timestamp and signature.
            purpose = rng.choice(purposes)
            victim, attacker = rng.sample(by_purpose[purpose], 2)
            yield "spliced", purpose, ".".join([victim.split(".")[0], *attacker.split(".")[1:]])
        forged_payloads = 0
        while forged_payloads < 5_000:
            # A payload written by hand, compact JSON as itsdangerous writes it.
            claims = [rng.choice(subscribers), rng.choice(["news-0", "news-1", "other"])]
            forged = _b64(json.dumps(claims, separators=(",", ":")).encode())
            purpose, real, _c = rng.choice(genuine)
            if forged == real.split(".")[0]:
                continue  # that is the genuine token itself
            forged_payloads += 1
            yield "forged payload", purpose, ".".join([forged, *real.split(".")[1:]])
        for _ in range(5_000):
            minted_for, read_as = rng.sample(list(Purpose), 2)
            token = tokens.mint(minted_for, rng.choice(subscribers), "news-1")
            yield "wrong purpose", read_as, token
        for _ in range(5_000):
            purpose = rng.choice(list(Purpose))
            yield "retired key", purpose, retired.mint(purpose, rng.choice(subscribers), "news-2")
        for _ in range(2_500):
            claims = [rng.choice(subscribers), "news-0"]
            yield "foreign key", Purpose.UNSUBSCRIBE, str(foreign.dumps(claims))
        for _ in range(2_500):
            claims = [rng.choice(subscribers), "news-0"]
            yield "other salt", Purpose.PREFERENCES, str(unsigned.dumps(claims))

    tried: Counter[str] = Counter()
    accepted: list[tuple[str, str]] = []
    crashed: list[tuple[str, str, str]] = []
    started = time.monotonic()
    for category, purpose, token in candidates():
        tried[category] += 1
        try:
            tokens.read(purpose, token)
        except TokenError:
            continue
        except Exception as error:  # anything but TokenError would be a 500 page
            crashed.append((category, token[:80], repr(error)))
            continue
        accepted.append((category, token))
    elapsed = time.monotonic() - started
    total = sum(tried.values())
    assert total >= 100_000
    assert accepted == []
    assert crashed == []
    record(
        "Forged tokens",
        f"{total:,} forged tokens read by Tokens.read: "
        + ", ".join(f"{n:,} {category}" for category, n in tried.items()),
        f"{len(accepted)} accepted, {len(crashed)} other exception(s), {elapsed:.1f} s",
        "0 accepted; every rejection a TokenError",
    )


# == 8. XSS through the web form and the digest ===========================================


@dataclass
class Site:
    runtime: Runtime
    server: LiveServer
    smtp: SMTPServer
    newsletter_id: int

    def browser(self, *, cookies: bool = True) -> Browser:
        return Browser(self.server, cookies=cookies)


@contextmanager
def site(tmp_path: Path, database_url: str, **extra: str) -> Iterator[Site]:
    """The web endpoint on loopback over a fresh database, mailing to aiosmtpd."""
    with (
        running(SMTPServer(RecordingHandler())) as smtp,
        installed(tmp_path, database_url, smtp_url=smtp.url, **extra) as (_env, runtime),
    ):
        with transaction(runtime.sessions) as session:
            newsletter_id = create_newsletter(session, SLUG, "The Weekly", max_articles=200)
        with serve(create_app(runtime), **server_options(runtime.settings)) as server:
            yield Site(runtime, server, smtp, newsletter_id)


def form_token(browser: Browser) -> list[tuple[str, str]]:
    """The subscribe form's fields but the address, CSRF token included, for the cookie."""
    page = browser.get("/subscribe")
    assert page.status == 200, page.text
    return [(k, v) for k, v in page.form("/subscribe").fields if k != "email"]


def html_part(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def text_part(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    assert part.get_content_type() == "text/plain"
    content = part.get_content()
    assert isinstance(content, str)
    return content


def parsed(received: Received) -> EmailMessage:
    message = message_from_bytes(received.data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def visible(document: str) -> str:
    return "".join(parse_html(document).text)


@pytest.mark.slow
def test_reliability_xss_in_names_and_articles_stays_text(
    tmp_path: Path, database_url: str
) -> None:
    from worker.tasks import enqueue_issue

    payloads = xss_payloads()
    # Valid local parts that carry characters HTML cares about: the preferences page shows them.
    hostile_locals = ["o'neil&co", "x=y+z", "{a}|~`!#$%^*", "'-alert-'", "amp&amp&#39"]
    with site(tmp_path, database_url, subscribe_limit_per_ip="100000") as web:
        rt = web.runtime
        browser = web.browser()
        fields = form_token(browser)
        problems: list[str] = []

        def post(**changes: str) -> Page:
            values = dict(fields) | changes
            return browser.post("/subscribe", list(values.items()))

        # Baselines: the same pages and mails for harmless input.
        sent_baseline = post(email="plain.reader@example.org", name="Plain Reader")
        error_baseline = post(email="not-an-address", name="Plain Reader")
        assert (sent_baseline.status, error_baseline.status) == (200, 400)
        confirm_baseline = html_part(parsed(web.smtp.messages[-1]))

        # Every payload as a name (with a good address) and as both name and address.
        emails: dict[str, str] = {}
        for n, payload in enumerate(payloads):
            email = f"{hostile_locals[n % len(hostile_locals)]}.{n}@example.org"
            emails[email] = payload
            sent = post(email=email, name=payload, language=("en", "uk", "ja")[n % 3])
            # (A NUL in the address is test_reliability_hostile_addresses_*'s business.)
            refused = post(email=payload.replace("\x00", ""), name=payload)
            if sent.status != 200 or refused.status != 400:
                problems.append(f"{n}: statuses {sent.status}/{refused.status}")
                continue
            for what, page, baseline in (
                ("sent page", sent, sent_baseline),
                ("error page", refused, error_baseline),
            ):
                problems += [f"{n} {what}: {p}" for p in injected(page.text, baseline.text)]
            # The error page does echo the input, as text: the name and the address.
            form = refused.form("/subscribe")
            echoed = (form.value("name"), form.value("email"))
            if echoed != (payload, payload.replace("\x00", "")):
                problems.append(f"{n}: the error page did not give the input back")
        # Confirmation mails greet each reader by name.
        confirmations = {
            m.recipients[0]: parsed(m) for m in web.smtp.messages if m.recipients[0] in emails
        }
        assert len(confirmations) == len(payloads)
        for email, message in confirmations.items():
            # The greeting quotes a name only when it looks like one (notices.greeting_name);
            # a payload that does not is greeted with no name, which is what must hold.
            name = greeting_name(clean_line(emails[email], 200))
            body = html_part(message)
            problems += [f"{email} confirmation: {p}" for p in injected(body, confirm_baseline)]
            if (
                name
                and MARKER not in name
                and (name not in visible(body) or name not in text_part(message))
            ):
                problems.append(f"{email} confirmation: the name is not shown as text")
            if [a.addr_spec for a in message["To"].addresses] != [email]:
                problems.append(f"{email} confirmation: To is {message['To']!r}")

        # The same payloads as article titles and summaries, in one digest to all of them.
        now = utcnow()
        with transaction(rt.sessions) as session:
            for n, payload in enumerate(payloads):
                upsert_article(
                    session,
                    ArticleInput(
                        title=f"Item {n} {payload}",
                        url=f"https://example.org/item/{n}",
                        summary=payload if n % 2 else f"<p>Body {n}</p>{payload}",
                        published_at=now - timedelta(minutes=n + 1),
                    ),
                )
            for email in emails:
                subscribe(session, email, SLUG, Origin("cli"), confirmed=True)
        with transaction(rt.sessions) as session:
            plan = plan_issue(session, web.newsletter_id, now)
        assert plan.articles == len(payloads)
        mailed = len(web.smtp.messages)
        enqueue_issue(plan.issue_id)
        digests = web.smtp.messages[mailed:]
        assert len(digests) == len(emails)
        baselines = {
            language: rt.renderer.render_issue(
                IssueView(
                    newsletter_name="The Weekly",
                    date=now,
                    archive_url=f"{BASE_URL}/archive/x",
                    articles=tuple(
                        ArticleView(
                            title=f"Item {n}", url=f"https://example.org/item/{n}",
                            summary_html=f"<p>Body {n}</p>", summary_text=f"Body {n}",
                            author="", published_at=now,
                        )
                        for n in range(len(payloads))
                    ),
                ),
                language,
            ).personalise("Plain Reader", f"{BASE_URL}/u", f"{BASE_URL}/p")[1]
            for language in ("en", "uk", "ja")
        }  # fmt: skip
        # Titles that carry a personalisation marker are test_reliability_markers_*'s business.
        article_titles = [
            title
            for n, p in enumerate(payloads)
            if MARKER not in (title := clean_line(f"Item {n} {p}"))
        ]
        for received in digests:
            message = parsed(received)
            email = received.recipients[0]
            # The greeting quotes a name only when it looks like one (notices.greeting_name);
            # a payload that does not is greeted with no name, which is what must hold.
            name = greeting_name(clean_line(emails[email], 200))
            body = html_part(message)
            language = message["Content-Language"] or ""
            expected = baselines.get(language[:2], baselines["en"])
            problems += [f"{email} digest: {p}" for p in injected(body, expected, SUMMARY_TAGS)]
            shown = visible(body)
            text = text_part(message)
            if MARKER not in name and (name not in shown or name not in text):
                problems.append(f"{email} digest: the greeting does not show the name as text")
            missing = [t for t in article_titles if t not in shown]
            if missing:
                problems.append(f"{email} digest: {len(missing)} title(s) not shown as text")

        # The archive shows the issue's articles; the preferences page shows the address.
        issue = load_issue(rt, plan.issue_id)
        not_found = browser.get("/archive/no-such-issue")
        archive_issue = browser.get(f"/archive/{issue.public_id}")
        assert (not_found.status, archive_issue.status) == (404, 200)
        problems += [
            f"archive issue: {p}"
            for p in injected(
                archive_issue.text, not_found.text, SUMMARY_TAGS | {"article", "h2", "div"}
            )
        ]
        missing = [t for t in article_titles if t not in visible(archive_issue.text)]
        if missing:
            problems.append(f"archive issue: {len(missing)} title(s) not shown as text")
        archive = browser.get("/archive")
        problems += [
            f"archive: {p}"
            for p in injected(
                archive.text, not_found.text, frozenset({"link", "ul", "li", "a", "br", "small"})
            )
        ]
        feed = browser.get("/archive.xml")
        entries = ET.fromstring(feed.body).findall("{http://www.w3.org/2005/Atom}entry")
        assert entries
        for entry in entries:
            for child in entry:
                if len(child):
                    problems.append(f"archive.xml: markup inside <{child.tag}>")
        with rt.sessions() as session:
            people = dict(session.execute(select(Subscriber.email, Subscriber.public_id)).all())

        def preferences_page(email: str) -> Page:
            token = rt.tokens.mint(Purpose.PREFERENCES, people[email], SLUG)
            return browser.get(f"/preferences/{token}")

        prefs_baseline = preferences_page("plain.reader@example.org")
        assert prefs_baseline.status == 200
        for email in emails:
            page = preferences_page(email)
            if page.status != 200 or email not in visible(page.text):
                problems.append(f"{email} preferences: {page.status}, address not shown as text")
                continue
            problems += [
                f"{email} preferences: {p}" for p in injected(page.text, prefs_baseline.text)
            ]
    checked = 2 * len(payloads) + len(confirmations) + len(digests) + len(emails) + 3
    assert problems == []
    record(
        scenario("XSS in names and articles", database_url),
        f"{len(payloads)} XSS payloads as reader names through the subscribe form over HTTP "
        "(and as the address, to reach the error page that echoes both) and as article "
        "titles and summaries in one digest to those readers; pages, confirmation mails, "
        "digests (text and HTML), archive pages and preferences parsed with html.parser",
        f"{len(problems)} payload(s) reached markup in {checked} pages and mails",
        "0 script/iframe/svg/object/... elements, on* attributes or javascript: URLs from input",
    )


def test_reliability_xss_in_echoed_parameters(tmp_path: Path, database_url: str) -> None:
    """Error pages that name what was asked for must show it as text, never as markup."""
    payloads = xss_payloads()
    with site(tmp_path, database_url, subscribe_limit_per_ip="100000") as web:
        browser = web.browser()
        fields = form_token(browser)
        baseline = browser.get("/subscribe?newsletter=no-such-list")
        assert baseline.status == 404
        problems: list[str] = []
        statuses: Counter[int] = Counter()
        for n, payload in enumerate(payloads):
            got = browser.get(f"/subscribe?newsletter={quote(payload)}")
            posted = browser.post(
                "/subscribe",
                [*(f for f in fields if f[0] != "newsletter"), ("newsletter", payload),
                 ("email", f"reader{n}@example.org")],
            )  # fmt: skip
            for what, page in (("GET", got), ("POST", posted)):
                statuses[page.status] += 1
                if page.status != 404:
                    problems.append(f"{n} {what}: status {page.status}")
                    continue
                problems += [f"{n} {what}: {p}" for p in injected(page.text, baseline.text)]
                if "There is no newsletter" not in visible(page.text):
                    problems.append(f"{n} {what}: not the page naming the newsletter asked for")
    assert problems == [], f"{len(problems)} problem(s), statuses {dict(statuses)}"
    record(
        scenario("XSS in echoed parameters", database_url),
        f"{len(payloads)} XSS payloads as the newsletter= of GET and POST /subscribe, whose "
        "404 page names the newsletter asked for",
        f"{len(problems)} problem(s) in {2 * len(payloads)} pages; statuses "
        + ", ".join(f"{s}: {c}" for s, c in sorted(statuses.items())),
        "every page 404 with the value shown as text; 0 elements or handlers from input",
    )


def test_reliability_markers_in_names_and_articles_stay_literal(
    tmp_path: Path, database_url: str
) -> None:
    """Text that happens to spell a personalisation marker is shown as typed.

    Rendering leaves markers where each reader's greeting and links go and fills them in
    per message; a name, a title or a summary that contains a marker must not be filled in.
    """
    from worker.tasks import enqueue_issue

    name = "Ann @@GAZETTE:UNSUBSCRIBE_URL@@ @@GAZETTE:GREETING@@"
    title = "Read @@GAZETTE:PREFERENCES_URL@@ now"
    summary = "<p>More: @@GAZETTE:UNSUBSCRIBE_URL@@ and @@GAZETTE:GREETING@@</p>"
    with installed(tmp_path, database_url) as (_env, runtime):  # mail goes to a Maildir
        now = utcnow()
        with transaction(runtime.sessions) as session:
            newsletter_id = create_newsletter(session, SLUG, "The Weekly")
            subscribe(session, "ann@example.org", SLUG, Origin("cli"), name=name, confirmed=True)
            upsert_article(
                session,
                ArticleInput(
                    title=title,
                    url="https://example.org/markers",
                    summary=summary,
                    published_at=now - timedelta(minutes=1),
                ),
            )
            plan = plan_issue(session, newsletter_id, now)
        enqueue_issue(plan.issue_id)
        outbox = runtime.settings.smtp.path
        assert outbox is not None
        files = list((outbox / "new").iterdir())
    assert len(files) == 1
    message = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    text, shown = text_part(message), visible(html_part(message))
    wanted = {"name": name, "title": title, "summary": "More: @@GAZETTE:UNSUBSCRIBE_URL@@"}
    literal = {what: value in text and value in shown for what, value in wanted.items()}
    links = text.count("/unsubscribe/")
    assert literal == dict.fromkeys(wanted, True)
    assert links == 1
    record(
        scenario("Personalisation markers in content", database_url),
        "a reader name, an article title and a summary that contain the markers rendering "
        "uses for each reader's greeting, unsubscribe and preferences links",
        f"shown as typed: {', '.join(k for k, v in literal.items() if v) or 'none'}; "
        f"filled in: {', '.join(k for k, v in literal.items() if not v) or 'none'}; "
        f"{links} unsubscribe link(s) in the text part",
        "every value shown as typed; one unsubscribe link (the footer's)",
    )


# == 9. the subscribe endpoint ============================================================


def flood(
    server: LiveServer, requests: list[tuple[list[tuple[str, str]], dict[str, str]]]
) -> list[Page]:
    """POST /subscribe for each (fields, headers), eight at a time, cookie-less clients."""
    client = Browser(server, cookies=False)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda r: client.post("/subscribe", r[0], r[1]), requests))


@pytest.mark.slow
def test_reliability_one_address_from_fifty_ips_gets_one_confirmation(
    tmp_path: Path, database_url: str
) -> None:
    email = "oksana.kovalenko@example.org"
    variants = [email, email.replace("example.org", "EXAMPLE.org"), f"  {email} "]
    with site(tmp_path, database_url, proxy_hops="1", subscribe_limit_per_ip="100000") as web:
        browser = web.browser()
        fields = form_token(browser)
        cookie = {"Cookie": f"{SECURE_COOKIE}={browser.cookie(SECURE_COOKIE)}"}
        requests = [
            (
                [*fields, ("email", variants[n % 3])],
                cookie | {"X-Forwarded-For": f"198.51.100.{n % 50 + 1}"},
            )
            for n in range(1000)
        ]
        started = time.monotonic()
        pages = flood(web.server, requests)
        elapsed = time.monotonic() - started
        confirmations = [m for m in web.smtp.messages if m.recipients == [email]]
        with web.runtime.sessions() as session:
            subscribers = session.scalar(select(func.count()).select_from(Subscriber))
            kinds = Counter(session.scalars(select(Event.kind)))
            ips = set(session.scalars(select(Event.ip).where(Event.kind == "subscribed")))
    statuses = Counter(page.status for page in pages)
    assert statuses == {200: 1000}
    assert len({page.body for page in pages}) == 1  # the answer never tells
    assert len(confirmations) <= 1
    assert len(web.smtp.messages) == len(confirmations) == 1
    assert subscribers == 1
    assert (kinds["subscribed"], kinds["confirmation_sent"]) == (1, 1)
    assert len(ips) == 1
    assert ips <= {f"198.51.100.{n}" for n in range(1, 51)}
    record(
        scenario("Subscribe flood, one address", database_url),
        "1,000 POST /subscribe for one address (three spellings) from 50 client IPs "
        "(X-Forwarded-For behind one trusted proxy), eight at a time",
        f"{len(confirmations)} confirmation(s) sent; statuses "
        + ", ".join(f"{s}: {c}" for s, c in sorted(statuses.items()))
        + f"; {len({p.body for p in pages})} distinct answer(s); {elapsed:.1f} s",
        "at most one confirmation",
    )


@pytest.mark.slow
def test_reliability_many_addresses_from_one_ip_get_429_after_the_limit(
    tmp_path: Path, database_url: str
) -> None:
    limit = 50
    client_ip = "203.0.113.7"
    with site(tmp_path, database_url, proxy_hops="1", subscribe_limit_per_ip=str(limit)) as web:
        browser = web.browser()
        fields = form_token(browser)
        cookie = {"Cookie": f"{SECURE_COOKIE}={browser.cookie(SECURE_COOKIE)}"}
        # The client forges an X-Forwarded-For of its own; the proxy appends the real IP.
        requests = [
            (
                [*fields, ("email", f"reader{n}@example.org")],
                cookie | {"X-Forwarded-For": f"10.{n // 250}.{n % 250}.1, {client_ip}"},
            )
            for n in range(1000)
        ]
        started = time.monotonic()
        pages = flood(web.server, requests)
        elapsed = time.monotonic() - started
        with web.runtime.sessions() as session:
            subscribers = session.scalar(select(func.count()).select_from(Subscriber))
            ips = Counter(session.scalars(select(Event.ip).where(Event.kind == "subscribed")))
    statuses = Counter(page.status for page in pages)
    assert statuses == {200: limit, 429: 1000 - limit}
    assert subscribers == limit
    assert len(web.smtp.messages) == limit
    assert ips == {client_ip: limit}
    refused = next(page for page in pages if page.status == 429)
    assert "Too many requests" in visible(refused.text)
    record(
        scenario("Subscribe flood, one IP", database_url),
        f"1,000 POST /subscribe for different addresses from one client IP, each with a "
        f"forged X-Forwarded-For entry before the proxy's, eight at a time "
        f"(GAZETTE_SUBSCRIBE_LIMIT_PER_IP={limit})",
        f"{statuses[200]} answered 200, {statuses[429]} answered 429, "
        f"{len(web.smtp.messages)} confirmation(s); {elapsed:.1f} s",
        f"exactly {limit} succeed",
    )


def test_reliability_hostile_addresses_are_refused_not_failed(
    tmp_path: Path, database_url: str
) -> None:
    """Whatever a bot types as the address, the answer is the form again (400), never a 500."""
    hostile = {
        "NUL": "a\x00b@example.org",
        "500-character local part": "x" * 500 + "@example.org",
        "10 kB": "y" * 10_000 + "@example.org",
        "control characters": "a\x01\x1f@example.org",
        "CRLF and a header": "a@example.org\r\nBcc: evil@example.org",
        "right-to-left override": "a\u202eb@example.org",
        "emoji": "\U0001f600@example.org",
        "only spaces": "   ",
        "backslash escape": "a\\udc80@example.org",
    }
    with site(tmp_path, database_url, subscribe_limit_per_ip="1000") as web:
        browser = web.browser()
        fields = form_token(browser)
        pages = {
            what: browser.post("/subscribe", [*fields, ("email", value)])
            for what, value in hostile.items()
        }
        with web.runtime.sessions() as session:
            stored = session.scalar(select(func.count()).select_from(Subscriber))
    statuses = {what: page.status for what, page in pages.items()}
    assert statuses == dict.fromkeys(hostile, 400)
    assert stored == 0
    assert web.smtp.messages == []
    record(
        scenario("Hostile addresses", database_url),
        f"POST /subscribe with {len(hostile)} malformed addresses: " + ", ".join(hostile),
        ", ".join(f"{what}: {status}" for what, status in statuses.items()),
        "400 with the form again for every one; no 500, nothing stored, nothing mailed",
    )


def test_reliability_csrf_is_required_except_for_one_click(
    tmp_path: Path, database_url: str
) -> None:
    with site(tmp_path, database_url) as web:
        rt = web.runtime
        browser = web.browser()
        fields = form_token(browser)
        with_token = [*fields, ("email", "reader@example.org")]
        without = [f for f in with_token if f[0] != FIELD]
        forged = [(k, "x" + v if k == FIELD else v) for k, v in with_token]
        refused = {
            "no token": browser.post("/subscribe", without).status,
            "forged token": browser.post("/subscribe", forged).status,
            "no cookie": web.browser(cookies=False).post("/subscribe", with_token).status,
            "empty body": browser.post("/subscribe", []).status,
        }
        with rt.sessions() as session:
            stored_after_refusals = session.scalar(select(func.count()).select_from(Subscriber))
        mailed_after_refusals = len(web.smtp.messages)
        # A reader, and the one-click POST a mail provider makes without any cookie.
        with transaction(rt.sessions) as session:
            result = subscribe(
                session, "one.click@example.org", SLUG, Origin("cli"), confirmed=True
            )
            public_id = session.get_one(Subscriber, result.subscriber_id).public_id
        token = rt.tokens.mint(Purpose.UNSUBSCRIBE, public_id, SLUG)
        one_click = web.browser(cookies=False).post(
            f"/unsubscribe/{token}", {"List-Unsubscribe": "One-Click"}
        )
        prefs = rt.tokens.mint(Purpose.PREFERENCES, public_id, SLUG)
        prefs_without = browser.post(f"/preferences/{prefs}", {"action": "unsubscribe-all"})
        with rt.sessions() as session:
            status = session.scalar(
                select(Subscription.status).where(
                    Subscription.subscriber_id == result.subscriber_id
                )
            )
        accepted = browser.post("/subscribe", with_token).status
    assert refused == dict.fromkeys(refused, 403)
    assert stored_after_refusals == 0
    assert mailed_after_refusals == 0
    assert [m.recipients for m in web.smtp.messages] == [["reader@example.org"]]
    assert prefs_without.status == 403
    assert one_click.status == 200
    assert status == SubscriptionStatus.UNSUBSCRIBED
    assert accepted == 200  # the same form with its token is fine
    record(
        scenario("CSRF", database_url),
        "POST /subscribe without a token, with a forged one, without the cookie, empty; "
        "the one-click unsubscribe POST without cookies; preferences POST without a token",
        ", ".join(f"{k}: {v}" for k, v in refused.items())
        + f"; one-click: {one_click.status}; preferences without token: {prefs_without.status}",
        "403 without a valid token; the one-click POST needs none",
    )


def test_reliability_no_redirect_leaves_the_site(tmp_path: Path, database_url: str) -> None:
    evil = ["https://evil.example/", "//evil.example/", "/\\evil.example", "https:evil.example",
            "javascript:alert(1)", "%2F%2Fevil.example"]  # fmt: skip
    names = ["next", "redirect", "redirect_uri", "return_to", "returnTo", "url", "continue", "to"]
    with site(tmp_path, database_url, proxy_hops="1") as web:
        rt = web.runtime
        browser = web.browser()
        fields = form_token(browser)
        with transaction(rt.sessions) as session:
            result = subscribe(session, "reader@example.org", SLUG, Origin("cli"))
            public_id = session.get_one(Subscriber, result.subscriber_id).public_id
        links = {
            purpose.value: f"/{purpose.value}/{rt.tokens.mint(purpose, public_id, SLUG)}"
            for purpose in Purpose
        }
        paths = ["/subscribe", "/subscribe/", "/archive", "/archive/", "/healthz", *links.values()]
        pages: list[tuple[str, Page]] = []
        for path, name, target in itertools.product(paths, names, evil):
            query = f"?{name}={quote(target, safe='')}"
            pages.append((f"GET {path}{query}", browser.get(path + query)))
        for path, target in itertools.product(["/subscribe", *links.values()], evil):
            query = f"?next={quote(target, safe='')}"
            body = [*fields, ("email", "reader@example.org"), ("next", target), ("action", "save")]
            if path.startswith("/unsubscribe"):
                body = [("List-Unsubscribe", "One-Click"), ("next", target)]
            pages.append((f"POST {path}{query}", browser.post(path + query, body)))
        headers = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
        for path in ["/subscribe/", "/archive/", "//evil.example/", "/subscribe?next=/"]:
            pages.append((f"GET {path} as evil.example", browser.get(path, headers)))
    off_site: list[str] = []
    locations = 0
    for what, page in pages:
        location = page.headers.get("Location")
        if location is not None:
            locations += 1
            parts = urlsplit(location)
            local = (
                not parts.netloc
                and location.startswith("/")
                and not location.startswith(("//", "/\\"))
            )
            if not local and not location.startswith(BASE_URL + "/"):
                off_site.append(f"{what} -> {location}")
        refresh = re.search(r"<meta[^>]+http-equiv=.?refresh[^>]*>", page.text, re.I)
        if refresh:
            off_site.append(f"{what}: {refresh.group(0)}")
        if page.status >= 500:
            off_site.append(f"{what}: status {page.status}")
    assert off_site == []
    record(
        scenario("Open redirects", database_url),
        f"{len(pages)} requests with next=/redirect=/return_to=... pointing off-site, on every "
        "path, as GET and POST, and with a forged Host and X-Forwarded-Host",
        f"{locations} Location header(s), {len(off_site)} leaving the site or failing",
        "no Location header or meta refresh leaves the site",
    )


# == 10. CSV import fuzzed ================================================================

# Weighted towards files that should import, so both outcomes are well explored.
ENCODINGS = ["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "latin-1", "cp1251"]
EMAILS = [
    "ann@example.org", " Bob@Example.ORG ", "carol+tag@example.org", "=cmd@example.org",
    "dmytro@приклад.укр", "оксана@example.org", "bad@@example.org", "no-at-sign", "",
    '"quoted"@example.org', "x@xn--80ak6aa92e.com", "a@b", "ann@example.org", "e\x00@x.org",
    "taro.yamada@example.jp", "long" + "x" * 300 + "@example.org", "line\nbreak@example.org",
]  # fmt: skip
LANGUAGE_VALUES = ["en", "uk", "ja", "EN", " ja ", "xx", "", "Ємельян", "山田"]
GOOD_HEADERS = [
    ["email"], ["email", "name"], ["email", "name", "language"], [" Email ", "NAME"],
    ["\ufeffemail", "name"], ["email", "email"], ["email", "name", "language", "extra"],
]  # fmt: skip
BAD_HEADERS = [["name", "e-mail"], ["mail", "nom"], [], [""], ["name"]]


@st.composite
def csv_fields(draw: st.DrawFn) -> str:
    roll = draw(st.integers(0, 99))
    if roll < 40:
        return draw(st.sampled_from(EMAILS))
    if roll < 65:
        return draw(st.text(max_size=24))
    if roll < 82:
        return draw(st.text(alphabet=",\"\r\n\t; '=+-@\ufeff\x00", max_size=12))
    if roll < 97:
        return draw(st.sampled_from(LANGUAGE_VALUES))
    return "y" * draw(st.sampled_from([10_000, 10_001, 140_000]))


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """CSV files as people and programs write them, and as they get damaged."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\n\n", b"\x00" * 8]))
    roll = draw(st.integers(0, 9))
    if roll < 7:
        header = draw(st.sampled_from(GOOD_HEADERS))
    elif roll < 9:
        header = draw(st.sampled_from(BAD_HEADERS))
    else:
        header = draw(st.lists(st.text(max_size=10), max_size=4))
    rows = [header]
    for _ in range(draw(st.integers(0, 8))):
        first = draw(st.sampled_from(EMAILS)) if draw(st.booleans()) else draw(csv_fields())
        rows.append([first, *draw(st.lists(csv_fields(), max_size=3))])
    style = draw(st.sampled_from(["minimal", "minimal", "all", "raw"]))
    terminator = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    if style == "raw":  # joined by hand: stray quotes and newlines stay as they are
        text = terminator.join(",".join(row) for row in rows) + draw(st.sampled_from(["", "\n"]))
    else:
        buffer = io.StringIO()
        if style == "all":
            csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator=terminator).writerows(rows)
        else:
            csv.writer(buffer, lineterminator=terminator).writerows(rows)
        text = buffer.getvalue()
    data = text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    if draw(st.integers(0, 7)) == 0:  # binary junk somewhere
        junk = draw(st.binary(min_size=1, max_size=24))
        at = draw(st.integers(0, len(data)))
        data = data[:at] + junk + data[at:]
    if draw(st.integers(0, 9)) == 0 and data:  # cut short, maybe in mid-character
        data = data[: draw(st.integers(0, len(data) - 1))]
    return data


def one_sentence(message: str) -> bool:
    return (
        bool(message)
        and "\n" not in message
        and message.endswith(".")
        and ("Traceback" not in message)
    )


def test_reliability_csv_import_fuzzed(tmp_path: Path, database_url: str) -> None:
    outcomes: Counter[str] = Counter()
    with installed(tmp_path, database_url) as (_env, runtime):
        with transaction(runtime.sessions) as session:
            create_newsletter(session, SLUG, "The Weekly")
        counter = itertools.count()

        def counts() -> tuple[int, int, int]:
            with runtime.sessions() as session:
                return (
                    session.scalar(select(func.count()).select_from(Subscriber)) or 0,
                    session.scalar(select(func.count()).select_from(Subscription)) or 0,
                    session.scalar(select(func.count()).select_from(Event)) or 0,
                )

        def readers() -> set[tuple[str, str, str, SubscriptionStatus]]:
            with runtime.sessions() as session:
                rows = session.execute(
                    select(
                        Subscriber.email, Subscriber.name, Subscriber.language, Subscription.status
                    ).join(Subscription, Subscription.subscriber_id == Subscriber.id)
                ).all()
                return {(e, n, lang, st_) for e, n, lang, st_ in rows}

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(data=csv_files())
        def import_one(data: bytes) -> None:
            path = tmp_path / f"import-{next(counter)}.csv"
            path.write_bytes(data)
            before = counts()
            refusal: str | None = None
            try:
                # Small chunks, so a file that failed after its first rows would show it.
                report = import_csv(runtime.sessions, path, SLUG, Origin("import"), chunk_size=3)
            except GazetteError as error:
                refusal = str(error)
            if refusal is not None:
                outcomes["refused"] += 1
                after = counts()
                assert one_sentence(refusal), refusal
                assert after == before, f"a refused import wrote: {before} -> {after}"
                with pytest.raises(GazetteError):
                    check_file(path)
                return
            outcomes["imported"] += 1
            after = counts()
            assert after[0] == before[0] + report.added
            # A new subscription for each added reader, and for some updated ones.
            assert before[1] + report.added <= after[1] <= before[1] + report.added + report.updated
            handled = (
                report.added + report.updated + report.unchanged + report.skipped_unsubscribed
                + report.skipped_suppressed + len(report.rejected)
            )  # fmt: skip
            assert handled == check_file(path)
            for rejected in report.rejected:
                assert rejected.line >= 2
                assert rejected.reason
            # Importing the same file again adds nothing and leaves every reader as they are.
            imported = readers()
            again = import_csv(runtime.sessions, path, SLUG, Origin("import"), chunk_size=3)
            assert again.added == 0
            assert counts()[:2] == after[:2]
            assert readers() == imported

        started = time.monotonic()
        import_one()
        elapsed = time.monotonic() - started
    assert outcomes["imported"] > 10, outcomes
    assert outcomes["refused"] > 10, outcomes
    record(
        scenario("CSV import fuzzed", database_url),
        f"{sum(outcomes.values())} hypothesis-generated files (utf-8/utf-16/latin-1/cp1251, "
        "BOMs, quotes, embedded newlines, 140,000-character fields, empty files, wrong "
        "columns, binary junk) through import_csv, written three rows per transaction",
        f"{outcomes['imported']} imported, {outcomes['refused']} refused with one sentence "
        f"and nothing written, 0 other outcomes; {elapsed:.1f} s",
        "a GazetteError with nothing written, or a clean import; nothing else",
    )


# == 11. CSV export neutralised ===========================================================


def test_reliability_csv_export_neutralises_formulas(tmp_path: Path, database_url: str) -> None:
    leads = ["=", "+", "-", "@", "\t", "\r"]
    assert set(leads) == set(FORMULA_LEAD)
    dangerous_names = [f'{lead}HYPERLINK("https://evil.example","x")' for lead in leads]
    dangerous_names += ["=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)*cmd|'/C calc'!A0"]
    safe_names = ["Ann = Bob", "O'Brien", "'quoted already", " =leading space", "Ємельян",
                  "山田 太郎", "a+b", "", "x-y", "mail@home"]  # fmt: skip
    # Addresses that pass validation but start with a formula character...
    valid_dangerous = ["=cmd@example.org", "+1@example.org", "-dash@example.org"]
    # ...and values no validator would let in, stored by an older version or by hand.
    raw_dangerous = ["@at@example.org", "\t=tab@example.org", "\r=cr@example.org"]
    with installed(tmp_path, database_url) as (_env, runtime):
        expected: dict[str, tuple[str, str]] = {}
        with transaction(runtime.sessions) as session:
            create_newsletter(session, SLUG, "The Weekly")
            for n, email in enumerate(valid_dangerous):
                subscribe(session, email, SLUG, Origin("cli"), name=safe_names[n])
                expected[email] = ("'" + email, safe_names[n])
            for n, name in enumerate(dangerous_names + safe_names):
                email = f"reader{n}@example.org"
                stored = raw_dangerous[n] if n < len(raw_dangerous) else email
                result = subscribe(session, email, SLUG, Origin("cli"))
                subscriber = session.get_one(Subscriber, result.subscriber_id)
                subscriber.email, subscriber.name = stored, name  # as stored, unvalidated
                lead = stored.startswith(FORMULA_LEAD)
                expected[stored] = (("'" if lead else "") + stored, name)
                if name.startswith(FORMULA_LEAD):
                    expected[stored] = (expected[stored][0], "'" + name)
        out = io.StringIO(newline="")
        with runtime.sessions() as session:
            count = export_csv(session, out)
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    header, body = rows[0], rows[1:]
    exported = {row[0]: (row[0], row[1]) for row in body}
    wanted = {cells[0]: cells for cells in expected.values()}
    neutralised = sum(1 for row in body for cell in row[:2] if cell.startswith("'"))
    unsafe = [cell for row in body for cell in row if cell.startswith(FORMULA_LEAD)]
    assert header[:2] == ["email", "name"]
    assert count == len(body) == len(expected)
    assert unsafe == []
    assert exported == wanted
    record(
        scenario("CSV export", database_url),
        f"{count} readers exported whose names or addresses start with = + - @ tab or CR "
        "(and others that must stay as they are)",
        f"{neutralised} cell(s) neutralised with a leading apostrophe, {len(unsafe)} "
        "exported starting with a formula character",
        "every such cell neutralised; other cells untouched",
    )
