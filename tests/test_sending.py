"""Sending an issue end to end through a real SMTP server, and the ledger's guarantees.

Every test plans a real issue in a real database (SQLite, and PostgreSQL when configured)
and sends it with the Celery tasks running in-process, to an aiosmtpd server on loopback
whose replies each test scripts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select, update

from gazette.articles.service import ArticleInput, upsert_article
from gazette.digests import sending
from gazette.digests.ledger import pending_batches, resumable_issues
from gazette.digests.planning import plan_issue
from gazette.digests.sending import BatchResult
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Delivery, DeliveryStatus, Issue, IssueStatus, Subscriber, utcnow
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from gazette.subscribers.unsubscribing import unsubscribe
from gazette.tokens import Purpose
from tests.support.concurrency import at_once
from tests.support.digests import deliveries
from tests.support.messages import parse
from tests.support.smtp import RecordingHandler, SMTPServer
from worker import tasks

SLUG = "test-weekly"
NAME = "Test Weekly"
DOMAIN = "news.example.org"
BASE_URL = f"https://{DOMAIN}"
LANGUAGES = ("en", "uk", "ja")
GREETINGS = {"en": "Hello, {}!", "uk": "Вітаємо, {}!", "ja": "{} 様"}


@dataclass
class TrackingHandler(RecordingHandler):
    """Also records which client connection (its source port) carried each DATA."""

    peers: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.peers.append(session.peer)
        return await super().handle_DATA(server, session, envelope)


@dataclass(frozen=True)
class Reader:
    subscriber_id: int
    public_id: str
    email: str
    name: str
    language: str


@dataclass(frozen=True)
class Seeded:
    newsletter_id: int
    readers: list[Reader]

    def by_email(self) -> dict[str, Reader]:
        return {reader.email: reader for reader in self.readers}


@pytest.fixture
def smtp_handler() -> TrackingHandler:
    """The relay of these tests (conftest's smtp_server serves it)."""
    return TrackingHandler()


def numbered_articles(count: int) -> list[ArticleInput]:
    """``count`` articles published an hour apart, the newest an hour ago."""
    return [
        ArticleInput(
            title=f"Article number {n}",
            url=f"https://blog.example.com/articles/{n}",
            published_at=utcnow() - timedelta(hours=n + 1),
            summary=f"<p>Summary of article {n} &amp; more.</p>",
        )
        for n in range(count)
    ]


def seed(runtime: Runtime, readers: int, articles: int = 2) -> Seeded:
    """A newsletter, a few recent articles and ``readers`` confirmed readers in en/uk/ja."""
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, SLUG, NAME)
        for article in numbered_articles(articles):
            upsert_article(session, article)
        added: list[tuple[int, str, str, str]] = []
        for n in range(readers):
            email = f"reader{n:04d}@example.com"
            name = f"Reader {n:04d}"
            language = LANGUAGES[n % len(LANGUAGES)]
            result = subscribe(
                session,
                email,
                SLUG,
                Origin("import"),
                name=name,
                language=language,
                confirmed=True,
            )
            added.append((result.subscriber_id, email, name, language))
        session.flush()
        public_ids = dict(session.execute(select(Subscriber.id, Subscriber.public_id)).all())
    return Seeded(
        newsletter_id,
        [Reader(sid, public_ids[sid], email, name, lang) for sid, email, name, lang in added],
    )


def plan(runtime: Runtime, newsletter_id: int) -> int:
    with transaction(runtime.sessions) as session:
        result = plan_issue(session, newsletter_id, utcnow())
    assert result.created
    assert result.status == IssueStatus.PLANNED
    return result.issue_id


def load_issue(runtime: Runtime, issue_id: int) -> Issue:
    with runtime.sessions() as session:
        return session.get_one(Issue, issue_id)


def delivery_ids(runtime: Runtime, issue_id: int) -> list[int]:
    with runtime.sessions() as session:
        return sorted(session.scalars(select(Delivery.id).where(Delivery.issue_id == issue_id)))


def planned(runtime: Runtime, readers: int) -> tuple[Seeded, int, list[int]]:
    """Seed ``readers`` readers and plan their issue: the seed, its id, its delivery ids."""
    seeded = seed(runtime, readers)
    issue_id = plan(runtime, seeded.newsletter_id)
    return seeded, issue_id, delivery_ids(runtime, issue_id)


def recipients(server: SMTPServer) -> Counter[str]:
    counts: Counter[str] = Counter()
    for received in server.messages:
        assert len(received.recipients) == 1
        counts[received.recipients[0]] += 1
    return counts


def test_three_hundred_readers_get_one_correct_message_each(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    seeded = seed(smtp_runtime, 300)
    issue_id = plan(smtp_runtime, seeded.newsletter_id)
    issue_public_id = load_issue(smtp_runtime, issue_id).public_id

    assert tasks.enqueue_issue(issue_id) >= 1

    readers = seeded.by_email()
    rows = deliveries(smtp_runtime, issue_id)
    assert len(smtp_server.messages) == 300
    assert recipients(smtp_server) == Counter(readers.keys())
    assert {row.status for row in rows.values()} == {DeliveryStatus.SENT}
    assert len(rows) == 300

    message_ids: set[str] = set()
    for received in smtp_server.messages:
        message = received.parsed()
        address = received.recipients[0]
        reader = readers[address]
        row = rows[address]
        assert received.sender == f"digest@{DOMAIN}"
        assert message["To"].addresses[0].addr_spec == address
        expected_id = sending.message_id(issue_public_id, reader.public_id, DOMAIN)
        assert row.message_id == expected_id
        assert message["Message-ID"] == f"<{expected_id}>"
        message_ids.add(message["Message-ID"])

        assert message["List-Id"] == f"{NAME} <{SLUG}.{DOMAIN}>"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        unsubscribe_header = message["List-Unsubscribe"]
        prefix = f"<{BASE_URL}/unsubscribe/"
        assert unsubscribe_header.startswith(prefix)
        assert unsubscribe_header.endswith(">")
        token = unsubscribe_header[len(prefix) : -1]
        claims = smtp_runtime.tokens.read(Purpose.UNSUBSCRIBE, token)
        assert (claims.subscriber, claims.newsletter) == (reader.public_id, SLUG)

        assert message.get_content_type() == "multipart/alternative"
        plain = message.get_body(("plain",))
        assert plain is not None
        text = plain.get_content()
        assert GREETINGS[reader.language].format(reader.name) in text
        assert f"{BASE_URL}/unsubscribe/{token}" in text
    assert len(message_ids) == 300

    issue = load_issue(smtp_runtime, issue_id)
    assert issue.status == IssueStatus.SENT
    assert issue.sent_count == 300
    assert (issue.failed_count, issue.skipped_count) == (0, 0)
    assert issue.finished_at is not None

    # Enqueueing the finished issue again finds nothing to send.
    assert tasks.enqueue_issue(issue_id) == 0
    assert len(smtp_server.messages) == 300
    again = load_issue(smtp_runtime, issue_id)
    assert (again.status, again.sent_count) == (IssueStatus.SENT, 300)


def test_message_id_is_deterministic_per_issue_and_subscriber(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    assert sending.message_id("issue1", "sub1", DOMAIN) == sending.message_id(
        "issue1", "sub1", DOMAIN
    )
    assert sending.message_id("issue1", "sub1", DOMAIN) != sending.message_id(
        "issue1", "sub2", DOMAIN
    )
    assert sending.message_id("issue1", "sub1", DOMAIN) != sending.message_id(
        "issue2", "sub1", DOMAIN
    )

    seeded = seed(smtp_runtime, 4)
    issue_id = plan(smtp_runtime, seeded.newsletter_id)
    tasks.enqueue_issue(issue_id)
    assert len(smtp_server.messages) == 4
    first = {m.recipients[0]: m.parsed()["Message-ID"] for m in smtp_server.messages}

    # Resend one reader's message (as after a crash): the same Message-ID goes out again.
    again = seeded.readers[2].email
    with transaction(smtp_runtime.sessions) as session:
        session.execute(
            update(Delivery)
            .where(
                Delivery.id == deliveries(smtp_runtime, issue_id)[again].id,
            )
            .values(status=DeliveryStatus.PENDING, message_id=None)
        )
    tasks.enqueue_issue(issue_id)
    assert len(smtp_server.messages) == 5
    resent = smtp_server.messages[-1]
    assert resent.recipients == [again]
    assert resent.parsed()["Message-ID"] == first[again]
    assert len(set(first.values())) == 4


def test_send_batch_twice_for_the_same_range_sends_once(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    seeded, issue_id, ids = planned(smtp_runtime, 20)
    ctx = smtp_runtime.send_context

    first = sending.send_batch(smtp_runtime.sessions, ctx, issue_id, ids[0], ids[-1])
    second = sending.send_batch(smtp_runtime.sessions, ctx, issue_id, ids[0], ids[-1])

    assert first == BatchResult(claimed=20, sent=20, retry=0, failed=0, skipped=0)
    assert second == BatchResult(0, 0, 0, 0, 0)
    assert recipients(smtp_server) == Counter(r.email for r in seeded.readers)


def test_concurrent_send_batch_for_the_same_range_sends_once(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    seeded, issue_id, ids = planned(smtp_runtime, 60)
    results = at_once(
        2,
        lambda: sending.send_batch(
            smtp_runtime.sessions, smtp_runtime.send_context, issue_id, ids[0], ids[-1]
        ),
        timeout=120,
    )
    assert sum(r.claimed for r in results) == 60
    assert sum(r.sent for r in results) == 60
    assert recipients(smtp_server) == Counter(r.email for r in seeded.readers)


def test_permanent_rcpt_refusal_fails_those_deliveries_without_retry(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    seeded = seed(smtp_runtime, 30)
    rejected = {r.email for r in seeded.readers[::7]}
    asked: Counter[str] = Counter()

    def refuse(address: str, _count: int) -> str | None:
        asked[address] += 1
        return "550 5.1.1 no such user" if address in rejected else None

    smtp_server.handler.rcpt_script = refuse
    issue_id = plan(smtp_runtime, seeded.newsletter_id)
    tasks.enqueue_issue(issue_id)

    rows = deliveries(smtp_runtime, issue_id)
    for email, row in rows.items():
        if email in rejected:
            assert row.status == DeliveryStatus.FAILED
            assert row.last_error is not None
            assert "550 5.1.1 no such user" in row.last_error
            assert row.next_attempt_at is None
            assert row.attempts == 1
        else:
            assert row.status == DeliveryStatus.SENT, email
    assert set(recipients(smtp_server)) == set(rows) - rejected
    issue = load_issue(smtp_runtime, issue_id)
    assert issue.status == IssueStatus.SENT
    assert (issue.sent_count, issue.failed_count) == (30 - len(rejected), len(rejected))

    # Nothing is left to retry: the sweep asks the server nothing more.
    with smtp_runtime.sessions() as session:
        assert resumable_issues(session, utcnow() + timedelta(days=1)) == []
    tasks.sweep()
    assert all(asked[email] == 1 for email in rejected)
    assert len(smtp_server.messages) == 30 - len(rejected)


def test_transient_refusal_is_retried_by_the_sweep_once_due(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    seeded = seed(smtp_runtime, 30)
    deferred = {r.email for r in seeded.readers[::5]}
    smtp_server.handler.rcpt_script = lambda address, _count: (
        "451 4.7.1 try later" if address in deferred else None
    )
    issue_id = plan(smtp_runtime, seeded.newsletter_id)
    before = utcnow()
    tasks.enqueue_issue(issue_id)

    rows = deliveries(smtp_runtime, issue_id)
    for email, row in rows.items():
        if email in deferred:
            assert row.status == DeliveryStatus.PENDING
            assert row.attempts == 1
            assert row.last_error is not None
            assert "451 4.7.1 try later" in row.last_error
            assert row.next_attempt_at is not None
            assert row.next_attempt_at > before + timedelta(minutes=4)
            assert row.lease_until is None
        else:
            assert row.status == DeliveryStatus.SENT
    issue = load_issue(smtp_runtime, issue_id)
    assert issue.status == IssueStatus.SENDING
    assert issue.finished_at is None
    assert set(recipients(smtp_server)) == set(rows) - deferred

    # Not due yet: a sweep now sends nothing.
    tasks.sweep()
    assert len(smtp_server.messages) == 30 - len(deferred)

    smtp_server.handler.rcpt_script = None
    with transaction(smtp_runtime.sessions) as session:
        session.execute(
            update(Delivery)
            .where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.PENDING)
            .values(next_attempt_at=utcnow() - timedelta(minutes=1))
        )
    tasks.sweep()

    rows = deliveries(smtp_runtime, issue_id)
    assert {row.status for row in rows.values()} == {DeliveryStatus.SENT}
    assert {rows[email].attempts for email in deferred} == {2}
    assert recipients(smtp_server) == Counter(r.email for r in seeded.readers)
    issue = load_issue(smtp_runtime, issue_id)
    assert (issue.status, issue.sent_count, issue.failed_count) == (IssueStatus.SENT, 30, 0)


def test_transient_refusal_after_the_retry_period_fails_for_good(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    seeded = seed(smtp_runtime, 3)
    smtp_server.handler.rcpt_script = lambda _address, _count: "451 4.7.1 try later"
    issue_id = plan(smtp_runtime, seeded.newsletter_id)
    with transaction(smtp_runtime.sessions) as session:
        session.execute(
            update(Issue)
            .where(Issue.id == issue_id)
            .values(planned_at=utcnow() - sending.RETRY_PERIOD - timedelta(hours=1))
        )
    tasks.enqueue_issue(issue_id)
    rows = deliveries(smtp_runtime, issue_id)
    assert {row.status for row in rows.values()} == {DeliveryStatus.FAILED}
    issue = load_issue(smtp_runtime, issue_id)
    assert (issue.status, issue.failed_count) == (IssueStatus.SENT, 3)


def test_421_on_data_reconnects_and_delivers_exactly_once(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    seeded = seed(smtp_runtime, 12)
    handler = smtp_server.handler
    assert isinstance(handler, TrackingHandler)
    closed_on: list[str] = []

    def close_fourth(address: str, count: int) -> str | None:
        if count == 4:
            closed_on.append(address)
            return "421 4.3.2 service shutting down"
        return None

    handler.data_script = close_fourth
    issue_id = plan(smtp_runtime, seeded.newsletter_id)
    tasks.enqueue_issue(issue_id)

    assert len(closed_on) == 1
    counts = recipients(smtp_server)
    assert counts == Counter(r.email for r in seeded.readers)
    assert counts[closed_on[0]] == 1
    assert handler.data_count == 13
    # The retried DATA came over a new connection, and sending carried on over it.
    assert handler.peers[4] != handler.peers[3]
    assert handler.peers[0] == handler.peers[3]
    assert len(set(handler.peers[4:])) == 1
    rows = deliveries(smtp_runtime, issue_id)
    assert rows[closed_on[0]].status == DeliveryStatus.SENT
    assert {row.attempts for row in rows.values()} == {1}
    assert load_issue(smtp_runtime, issue_id).sent_count == 12


def test_unsubscribe_between_planning_and_sending_skips_the_delivery(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    seeded = seed(smtp_runtime, 10)
    issue_id = plan(smtp_runtime, seeded.newsletter_id)
    leaving = seeded.readers[3]
    with transaction(smtp_runtime.sessions) as session:
        assert unsubscribe(session, leaving.subscriber_id, seeded.newsletter_id, Origin("web"))

    tasks.enqueue_issue(issue_id)

    counts = recipients(smtp_server)
    assert leaving.email not in counts
    assert counts == Counter(r.email for r in seeded.readers if r is not leaving)
    assert deliveries(smtp_runtime, issue_id)[leaving.email].status == DeliveryStatus.SKIPPED
    issue = load_issue(smtp_runtime, issue_id)
    assert (issue.status, issue.sent_count, issue.skipped_count) == (IssueStatus.SENT, 9, 1)


def test_unsubscribe_while_a_batch_is_sending_is_honoured(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    chunk = sending.RECORD_CHUNK
    seeded = seed(smtp_runtime, chunk * 3 + 10)
    issue_id = plan(smtp_runtime, seeded.newsletter_id)
    ids = delivery_ids(smtp_runtime, issue_id)
    by_delivery = {row.id: email for email, row in deliveries(smtp_runtime, issue_id).items()}
    # A reader two chunks later than the message during which they unsubscribe.
    leaving = seeded.by_email()[by_delivery[ids[chunk * 2 + 5]]]
    fire_at = 5
    assert fire_at < chunk
    unsubscribed: list[bool] = []
    errors: list[BaseException] = []

    def unsubscribe_midway(_address: str, count: int) -> str | None:
        if count == fire_at:
            try:
                with transaction(smtp_runtime.sessions) as session:
                    unsubscribed.append(
                        unsubscribe(
                            session, leaving.subscriber_id, seeded.newsletter_id, Origin("web")
                        )
                    )
            except BaseException as exc:
                errors.append(exc)
                raise
        return None

    smtp_server.handler.data_script = unsubscribe_midway
    assert tasks.enqueue_issue(issue_id) == 1  # one batch: the whole issue

    assert errors == []
    assert unsubscribed == [True]
    counts = recipients(smtp_server)
    assert leaving.email not in counts
    assert counts == Counter(r.email for r in seeded.readers if r is not leaving)
    row = deliveries(smtp_runtime, issue_id)[leaving.email]
    assert row.status == DeliveryStatus.SKIPPED
    assert row.message_id is None
    issue = load_issue(smtp_runtime, issue_id)
    assert issue.status == IssueStatus.SENT
    assert (issue.sent_count, issue.skipped_count) == (len(seeded.readers) - 1, 1)


def test_reclaim_expired_returns_only_expired_leases_to_pending(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    seeded = seed(smtp_runtime, 7)
    issue_id = plan(smtp_runtime, seeded.newsletter_id)
    ids = delivery_ids(smtp_runtime, issue_id)
    expired, live, untouched, done = ids[:3], ids[3:5], ids[5:6], ids[6:]
    now = utcnow()
    with transaction(smtp_runtime.sessions) as session:
        # A finished row that still carries an old lease is not the sweep's business.
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(done))
            .values(status=DeliveryStatus.SENT, attempts=1, lease_until=now - timedelta(1))
        )
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(expired))
            .values(status=DeliveryStatus.SENDING, attempts=1, lease_until=now - timedelta(1))
        )
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(live))
            .values(
                status=DeliveryStatus.SENDING, attempts=1, lease_until=now + timedelta(minutes=9)
            )
        )

    with transaction(smtp_runtime.sessions) as session:
        assert sending.reclaim_expired(session) == 3
    with smtp_runtime.sessions() as session:
        rows = {d.id: d for d in session.scalars(select(Delivery))}
    for delivery_id in expired + untouched:
        assert rows[delivery_id].status == DeliveryStatus.PENDING
        assert rows[delivery_id].lease_until is None
    for delivery_id in live:
        assert rows[delivery_id].status == DeliveryStatus.SENDING
        assert rows[delivery_id].lease_until is not None
    assert rows[done[0]].status == DeliveryStatus.SENT

    # Reclaiming again finds nothing; once the live leases run out, they come back too.
    with transaction(smtp_runtime.sessions) as session:
        assert sending.reclaim_expired(session) == 0
        assert sending.reclaim_expired(session, now + timedelta(minutes=10)) == 2
    assert smtp_server.messages == []


def test_sweep_recovers_rows_a_dead_worker_left_in_sending(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    seeded = seed(smtp_runtime, 5)
    issue_id = plan(smtp_runtime, seeded.newsletter_id)
    with transaction(smtp_runtime.sessions) as session:
        session.execute(
            update(Delivery)
            .where(Delivery.issue_id == issue_id)
            .values(
                status=DeliveryStatus.SENDING,
                attempts=1,
                lease_until=utcnow() - timedelta(seconds=1),
            )
        )
        session.execute(
            update(Issue).where(Issue.id == issue_id).values(status=IssueStatus.SENDING)
        )
    tasks.sweep()
    assert recipients(smtp_server) == Counter(r.email for r in seeded.readers)
    issue = load_issue(smtp_runtime, issue_id)
    assert (issue.status, issue.sent_count) == (IssueStatus.SENT, 5)


def test_maildir_outbox_by_default(runtime: Runtime) -> None:
    assert runtime.settings.smtp.scheme == "maildir"
    seeded = seed(runtime, 6)
    issue_id = plan(runtime, seeded.newsletter_id)
    with runtime.sessions() as session:
        assert len(pending_batches(session, issue_id, runtime.settings.batch_size)) == 1

    tasks.enqueue_issue(issue_id)

    outbox = runtime.settings.var_dir / "outbox"
    files = sorted((outbox / "new").iterdir())
    assert len(files) == 6
    assert list((outbox / "tmp").iterdir()) == []
    addresses = set()
    for path in files:
        message = parse(path)
        assert isinstance(message, EmailMessage)
        assert message.defects == []
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == [
            "text/plain",
            "text/html",
        ]
        for part in message.iter_parts():
            assert part.defects == []
            assert part.get_content_charset() == "utf-8"
        assert message["List-Unsubscribe"].startswith(f"<{BASE_URL}/unsubscribe/")
        addresses.add(message["To"].addresses[0].addr_spec)
    assert addresses == {r.email for r in seeded.readers}
    issue = load_issue(runtime, issue_id)
    assert (issue.status, issue.sent_count) == (IssueStatus.SENT, 6)
