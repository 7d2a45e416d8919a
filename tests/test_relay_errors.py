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

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from gazette.mail.outcomes import Fault, classify
from gazette.store.db import transaction
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Event,
    Subscriber,
    SubscriptionStatus,
    utcnow,
)
from tests.support.relays import (
    PASSWORD,
    READERS,
    USER,
    AuthRelay,
    Installation,
    Relay,
    bounce_events,
    make_installation,
    one_sentence,
    readers,
)
from tests.support.smtp import SMTPServer, by_recipient, free_port

# --- a relay on loopback that can ask for a login and refuse a sender -------------------


# --- an installation, its readers, and the command line -------------------------------


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Installation:
    """A migrated database with a newsletter, two fresh articles and three readers."""
    return make_installation(tmp_path, database_url, READERS)


# --- the relay refuses the session: nobody's fault but the relay's --------------------


def test_a_refused_login_leaves_every_reader_active_and_the_send_exits_non_zero(
    site: Installation,
) -> None:
    relay = Relay()
    with AuthRelay(relay) as server:
        wrong = f"smtp://{USER}:wrongpass@127.0.0.1:{server.port}"
        result = site.send(wrong)
        line = one_sentence(result)
        assert line == (
            f"gazette: The relay smtp://{USER}:***@127.0.0.1:{server.port} refused to send "
            "issue 1 (login refused: 535 5.7.8 Authentication credentials invalid); its 3 "
            "pending deliveries are kept and retried later, and `gazette digest retry 1` "
            "sends them now."
        )
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
    with SMTPServer(relay) as server:
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
    with SMTPServer(relay) as server:
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
    with SMTPServer(relay) as server:
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


def test_a_policy_refusal_of_every_reader_exits_non_zero_with_the_relays_words(
    site: Installation,
) -> None:
    """Nobody bounced, but nothing went out either: a quiet exit 0 would hide it."""
    reply = "550 5.7.1 Recipient address rejected: Access denied"
    relay = Relay(rcpt_script=lambda _recipient, _count: reply)
    with SMTPServer(relay) as server:
        result = site.send(server.url)
    line = one_sentence(result)
    assert line == (
        f"gazette: The relay smtp://127.0.0.1:{server.port} refused every reader of issue 1 "
        f"for its own reasons ({reply}); nobody was counted as bounced."
    )
    assert "0 sent, 3 failed, 0 skipped, 0 pending" in result.stdout
    for email, reader in readers(site).items():
        assert (reader.subscription, reader.bounce_count) == (SubscriptionStatus.ACTIVE, 0), email
        assert (reader.delivery, reader.last_error) == (DeliveryStatus.FAILED, reply), email
    assert bounce_events(site) == 0
    assert relay.messages == []


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
    with SMTPServer(relay) as server:
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
