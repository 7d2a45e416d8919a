"""Whose fault a refusal is: the reader's mailbox, or the relay's and the operator's.

A real SMTP server on loopback (aiosmtpd, with AUTH where a test needs it) and the real
command line (`gazette digest send --now --wait` as a subprocess, the send running
in-process without a broker), on SQLite and PostgreSQL. Only a reply to the reader's
own RCPT TO or to the message's DATA may count against the reader, and then by its
enhanced status code; a refused login, a refused sender or an unreachable relay leaves
every reader subscribed, every delivery pending, and the send exits 1 with the relay's
words.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import func, select, update

from gazette.articles import ArticleInput, upsert_article
from gazette.config import load_settings
from gazette.mailer import Fault, classify
from gazette.newsletters import create_newsletter
from gazette.runtime import Runtime, build_runtime, use_runtime
from gazette.store import migrate
from gazette.store.db import transaction
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Event,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from gazette.subscribers import Origin, subscribe
from tests.conftest import make_env
from tests.smtp import RecordingHandler, SMTPServer, by_recipient, free_port

SLUG = "relay-news"
READERS = ("ada@example.org", "grace@example.org", "linus@example.org")
USER, PASSWORD = "gazette", "right-password"


# --- a relay on loopback that can ask for a login and refuse a sender -------------------


@dataclass
class Relay(RecordingHandler):
    """RecordingHandler that logs every login attempt and MAIL FROM, and can refuse MAIL."""

    mail_reply: str | None = None
    mails: int = 0
    # One entry per AUTH the relay answered: (id of the SMTP session, accepted).
    logins: list[tuple[int, bool]] = field(default_factory=list)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            self.mails += 1
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    def authenticate(
        self, _server: Any, session: Any, _envelope: Any, _mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data == (USER.encode(), PASSWORD.encode())
        with self.lock:
            self.logins.append((id(session), ok))
        return AuthResult(success=ok, handled=False)

    @property
    def login_sessions(self) -> int:
        """How many SMTP sessions tried to log in."""
        return len({session for session, _ok in self.logins})


class AuthRelay(SMTPServer):
    """aiosmtpd offering AUTH over plain loopback (no TLS to set up in a test)."""

    def __init__(self, handler: Relay) -> None:
        super().__init__(handler)
        self._controller.loop.close()  # the plain controller it replaces never ran
        self._controller = Controller(
            handler, hostname="127.0.0.1", port=self.port,
            authenticator=handler.authenticate, auth_require_tls=False,
        )  # fmt: skip


@contextmanager
def running(server: SMTPServer) -> Iterator[SMTPServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- an installation, its readers, and the command line -------------------------------


@dataclass
class Installation:
    folder: Path
    database_url: str

    def env(self, smtp_url: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
        return base | make_env(self.folder, self.database_url, smtp_url=smtp_url)

    def gazette(self, smtp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gazette", *args], cwd=self.folder,
            env=self.env(smtp_url), capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def send(self, smtp_url: str) -> subprocess.CompletedProcess[str]:
        return self.gazette(smtp_url, "digest", "send", SLUG, "--now", "--wait")

    @contextmanager
    def runtime(self, smtp_url: str) -> Iterator[Runtime]:
        """This installation's runtime in the test process, installed for the tasks."""
        from worker.app import configure

        settings = load_settings(make_env(self.folder, self.database_url, smtp_url=smtp_url))
        built = build_runtime(settings)
        use_runtime(built)
        configure(settings)
        try:
            yield built
        finally:
            use_runtime(None)
            built.engine.dispose()


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Installation:
    """A migrated database with a newsletter, two fresh articles and three readers."""
    settings = load_settings(make_env(tmp_path, database_url), cwd=tmp_path)
    built = build_runtime(settings)
    migrate.upgrade(built.engine)
    with transaction(built.sessions) as session:
        create_newsletter(session, SLUG, "Relay News")
        for n in range(2):
            upsert_article(
                session,
                ArticleInput(
                    title=f"Article {n}", url=f"https://blog.example.com/{n}",
                    published_at=utcnow() - timedelta(hours=n + 1),
                ),
            )  # fmt: skip
        for email in READERS:
            subscribe(session, email, SLUG, Origin("import"), confirmed=True)
    built.engine.dispose()
    return Installation(tmp_path, database_url)


@dataclass(frozen=True)
class ReaderState:
    subscription: SubscriptionStatus
    bounce_count: int
    delivery: DeliveryStatus
    last_error: str | None
    retry_later: bool


def readers(site: Installation) -> dict[str, ReaderState]:
    """Each reader's subscription, bounce count and ledger row of the latest issue."""
    with site.runtime("maildir:///nowhere") as runtime, runtime.sessions() as session:
        rows = session.execute(
            select(
                Subscriber.email, Subscription.status, Subscriber.bounce_count, Delivery.status,
                Delivery.last_error, Delivery.next_attempt_at,
            )
            .join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
        ).all()  # fmt: skip
    return {
        email: ReaderState(sub, count, status, error, at is not None and at > utcnow())
        for email, sub, count, status, error, at in rows
    }


def bounce_events(site: Installation) -> int:
    with site.runtime("maildir:///nowhere") as runtime, runtime.sessions() as session:
        return session.scalar(
            select(func.count()).select_from(Event).where(Event.kind.in_(["bounce", "suppressed"]))
        ) or 0  # fmt: skip


def one_sentence(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr, with no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- the relay refuses the session: nobody's fault but the relay's --------------------


def test_a_refused_login_leaves_every_reader_active_and_the_send_exits_non_zero(
    site: Installation,
) -> None:
    relay = Relay()
    with running(AuthRelay(relay)) as server:
        wrong = f"smtp://{USER}:wrongpass@127.0.0.1:{server.port}"
        result = site.send(wrong)
        line = one_sentence(result)
        assert "535 5.7.8 Authentication credentials invalid" in line
        assert "wrongpass" not in result.stdout + result.stderr
        assert "0 sent, 0 failed, 0 skipped, 3 pending" in result.stdout
        state = readers(site)
        assert set(state) == set(READERS)
        for email, reader in state.items():
            assert reader.subscription == SubscriptionStatus.ACTIVE, email
            assert reader.bounce_count == 0, email
            assert reader.delivery == DeliveryStatus.PENDING, email
            assert (reader.last_error or "").startswith("login refused: 535 5.7.8"), reader
            assert reader.retry_later, email
        assert bounce_events(site) == 0
        # One refused login stopped the batch: no new session, no login, per reader.
        assert relay.login_sessions == 1
        assert relay.messages == []

        # The operator fixes the password; once the backoff has run out, the sweep sends
        # each reader the issue once.
        right = f"smtp://{USER}:{PASSWORD}@127.0.0.1:{server.port}"
        with site.runtime(right) as runtime:
            from worker import tasks

            with transaction(runtime.sessions) as session:
                session.execute(
                    update(Delivery).values(next_attempt_at=utcnow() - timedelta(seconds=1))
                )
            tasks.sweep()
    assert by_recipient(relay.messages) == dict.fromkeys(READERS, 1)
    assert {r.delivery for r in readers(site).values()} == {DeliveryStatus.SENT}


def test_a_refused_sender_bounces_nobody_and_leaves_the_rows_pending(
    site: Installation,
) -> None:
    relay = Relay(mail_reply="554 5.7.1 <digest@news.example.org>: Sender address rejected")
    with running(SMTPServer(relay)) as server:
        result = site.send(server.url)
    line = one_sentence(result)
    assert "554 5.7.1 <digest@news.example.org>: Sender address rejected" in line
    for email, reader in readers(site).items():
        assert (reader.subscription, reader.bounce_count) == (SubscriptionStatus.ACTIVE, 0), email
        assert reader.delivery == DeliveryStatus.PENDING, email
        assert (reader.last_error or "").startswith("sender refused: 554"), reader
        assert reader.retry_later, email
    assert bounce_events(site) == 0
    assert relay.mails == 1  # the batch stopped at the first refusal


def test_an_unreachable_relay_leaves_the_rows_pending_and_says_why(site: Installation) -> None:
    result = site.send(f"smtp://127.0.0.1:{free_port()}")
    line = one_sentence(result)
    assert "connection failed" in line
    assert "Connection refused" in line
    for email, reader in readers(site).items():
        assert (reader.subscription, reader.bounce_count) == (SubscriptionStatus.ACTIVE, 0), email
        assert (reader.delivery, reader.retry_later) == (DeliveryStatus.PENDING, True), email
    assert bounce_events(site) == 0


# --- replies about one reader: the enhanced status code decides -----------------------


def refuse_at_rcpt(address: str, reply: str) -> Callable[[str, int], str | None]:
    return lambda recipient, _count: reply if recipient == address else None


def test_550_5_1_1_bounces_that_reader_and_the_others_are_sent(site: Installation) -> None:
    relay = Relay(
        rcpt_script=refuse_at_rcpt(READERS[1], "550 5.1.1 <grace@example.org>: no such user")
    )
    with running(SMTPServer(relay)) as server:
        result = site.send(server.url)
    assert result.returncode == 0, result.stderr
    assert "2 sent, 1 failed, 0 skipped, 0 pending" in result.stdout
    state = readers(site)
    assert state[READERS[1]].subscription == SubscriptionStatus.BOUNCED
    assert state[READERS[1]].bounce_count == 1
    assert state[READERS[1]].delivery == DeliveryStatus.FAILED
    for email in (READERS[0], READERS[2]):
        assert (state[email].subscription, state[email].delivery) == (
            SubscriptionStatus.ACTIVE, DeliveryStatus.SENT,
        )  # fmt: skip
    assert set(by_recipient(relay.messages)) == {READERS[0], READERS[2]}


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        ("rcpt", "550 5.7.1 <grace@example.org>: Recipient address rejected: Access denied"),
        ("data", "554 5.7.1 Message rejected as spam"),
    ],
)
def test_a_policy_refusal_fails_the_message_without_a_bounce(
    site: Installation, stage: str, reply: str
) -> None:
    script = refuse_at_rcpt(READERS[1], reply)
    relay = Relay(rcpt_script=script) if stage == "rcpt" else Relay(data_script=script)
    with running(SMTPServer(relay)) as server:
        result = site.send(server.url)
    assert result.returncode == 0, result.stderr
    state = readers(site)
    refused = state[READERS[1]]
    assert refused.subscription == SubscriptionStatus.ACTIVE
    assert refused.bounce_count == 0
    # Failed for good: the same message would be refused again.
    assert (refused.delivery, refused.retry_later) == (DeliveryStatus.FAILED, False)
    assert refused.last_error == reply
    assert bounce_events(site) == 0
    assert set(by_recipient(relay.messages)) == {READERS[0], READERS[2]}


@pytest.mark.parametrize(
    ("code", "reply", "fault", "permanent"),
    [
        (550, "5.1.1 no such user", Fault.READER, True),
        (550, "5.2.1 mailbox disabled", Fault.READER, True),
        (550, "no such user here", Fault.READER, True),  # no enhanced code: as relays always said
        (552, "5.2.2 mailbox full", Fault.READER, False),
        (451, "4.7.1 greylisted", Fault.READER, False),
        (550, "5.7.1 relaying denied", Fault.RELAY, True),
        (554, "5.7.1 rejected as spam", Fault.RELAY, True),
        (552, "5.3.4 message too big", Fault.RELAY, False),
        (553, "5.6.7 non-ASCII address", Fault.RELAY, True),
        (421, "4.3.2 closing", Fault.RELAY, False),
    ],
)
def test_classify_reads_the_enhanced_status_code(
    code: int, reply: str, fault: Fault, permanent: bool
) -> None:
    failure = classify(code, reply)
    assert (failure.fault, failure.permanent, failure.code) == (fault, permanent, code)
    assert failure.detail == f"{code} {reply}"
    assert not failure.session
    assert failure.hard_bounce == (fault is Fault.READER and permanent)


# --- undoing a bounce, and an unknown issue --------------------------------------------


def test_unbounce_gives_the_reader_back_and_refuses_what_is_not_bounced(
    site: Installation,
) -> None:
    relay = Relay(rcpt_script=refuse_at_rcpt(READERS[1], "550 5.1.1 no such user"))
    with running(SMTPServer(relay)) as server:
        assert site.send(server.url).returncode == 0
        assert readers(site)[READERS[1]].subscription == SubscriptionStatus.BOUNCED

        done = site.gazette(server.url, "subscribers", "unbounce", READERS[1])
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "grace@example.org: 1 subscription(s) active again."
        grace = readers(site)[READERS[1]]
        assert (grace.subscription, grace.bounce_count) == (SubscriptionStatus.ACTIVE, 0)
        with site.runtime(server.url) as runtime, runtime.sessions() as session:
            kinds = list(
                session.scalars(
                    select(Event.kind)
                    .join(Subscriber, Subscriber.id == Event.subscriber_id)
                    .where(Subscriber.email == READERS[1])
                    .order_by(Event.id)
                )
            )
        assert kinds[-3:] == ["bounce", "suppressed", "unbounced"]

        again = one_sentence(site.gazette(server.url, "subscribers", "unbounce", READERS[1]))
        assert again == "gazette: grace@example.org is not bounced; there is nothing to undo."
        active = one_sentence(site.gazette(server.url, "subscribers", "unbounce", READERS[0]))
        assert "ada@example.org is not bounced" in active
        unknown = one_sentence(site.gazette(server.url, "subscribers", "unbounce", "x@example.org"))
        assert unknown == "gazette: There is no subscriber 'x@example.org'."


def test_status_of_an_unknown_issue_is_an_error(site: Installation) -> None:
    line = one_sentence(site.gazette("maildir:///tmp/unused-outbox", "digest", "status", "999"))
    assert line == "gazette: There is no issue 999; `gazette digest status` lists them."
