"""Real DSNs from a real Postfix come back to each delivery's VERP address (issue 18).

`gazette digest send` hands an issue to a Postfix of the test's own (tests/support/
postfix.py), with GAZETTE_BOUNCE_ADDRESS on its bounce domain. Postfix relays the
readers' mail to a loopback server that refuses one reader for good (550 5.1.1), one
for now (452 4.2.2) and takes the rest; with maximal_queue_lifetime=0 Postfix tries
once, then mails its own DSN to the message's envelope sender, which its virtual(8)
agent delivers to the bounce Maildir. Each DSN there must name, by its VERP address
alone, exactly the ledger row of the reader it is about.

What Postfix 3.7 really does (checked here, so a change shows): the 550 is bounced at
once (Action: failed, Status: 5.1.1); the 452 is deferred, then expires at once and is
returned as failed too (Action: failed, Status: 4.2.2), never as "delayed" (a delay
notice needs delay_warning_time, hours, which a test cannot wait for); a reader's
server that refuses the connection ends the same way with Status 4.4.1 and no
Remote-MTA. Copies of these DSNs are kept in tests/postfix_samples/.

Then the real `gazette bounces process --maildir` reads that Maildir while the instance
still runs (the Maildir goes with it): the 5.1.1 reader is bounced, the 4.2.2 and 4.4.1
readers get a soft bounce, the others are untouched, and a second run changes nothing.
A reader's vacation responder, answering through Postfix to the envelope sender as
RFC 3834 says, is recorded in the reader's history and changes nothing else.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass, field, replace
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from gazette.mail.verp import delivery_for
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Event,
    Issue,
    Newsletter,
    Subscriber,
    Subscription,
)
from tests.support.env import TEST_KEY
from tests.support.messages import parse
from tests.support.postfix import Postfix, Queued, running_postfix
from tests.support.relays import Installation, make_installation
from tests.support.smtp import Received, RecordingHandler, SMTPServer, free_port

BOUNCE_DOMAIN = "bounce.example.org"
SAMPLES = Path(__file__).parent / "postfix_samples"
# How long Postfix may take to return its DSNs (it takes about a second).
DSN_TIMEOUT = 30.0

ALIVE = ("ada@example.org", "grace@example.org")
DEAD = "dead@example.org"
FULL = "full@example.org"
UNREACHABLE = "linus@unreachable.example.net"
REPLIES = {
    DEAD: "550 5.1.1 <dead@example.org>: Recipient address rejected: User unknown",
    FULL: "452 4.2.2 <full@example.org>: Mailbox full",
}


@dataclass
class ReadersServer(RecordingHandler):
    """The readers' mail server: a scripted reply per recipient; notes each RCPT's sender."""

    rcpts: list[tuple[str, str]] = field(default_factory=list)  # (MAIL FROM, RCPT TO)

    def __post_init__(self) -> None:
        self.rcpt_script = lambda recipient, _count: REPLIES.get(recipient)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            self.rcpts.append((envelope.mail_from, address))
        return await super().handle_RCPT(server, session, envelope, address, options)


@dataclass(frozen=True)
class Report:
    """What a DSN says, read as RFC 3464 lays it out."""

    raw: bytes  # as Postfix wrote it: the Maildir goes when the instance stops
    message: EmailMessage
    per_message: Message
    per_recipient: Message

    def field(self, name: str) -> str | None:
        """A per-recipient field, unfolded: Postfix folds long Diagnostic-Codes."""
        value = self.per_recipient[name]
        return None if value is None else " ".join(str(value).split())

    @property
    def returned(self) -> Message:
        """The headers of the message returned in the report's third part."""
        payload = list(self.message.iter_parts())[2].get_payload()
        assert isinstance(payload, list)
        [returned] = payload
        assert isinstance(returned, Message)
        return returned

    @property
    def final_recipient(self) -> str:
        """The address of Final-Recipient ("rfc822; reader@example.org")."""
        return str(self.field("Final-Recipient")).partition(";")[2].strip()


def read_dsn(raw: bytes) -> Report:
    """The DSN ``raw``: a multipart/report of type delivery-status, about one recipient."""
    message = parse(raw)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    kinds = [part.get_content_type() for part in message.iter_parts()]
    assert kinds == ["text/plain", "message/delivery-status", "message/rfc822"], kinds
    status = list(message.iter_parts())[1].get_payload()
    assert isinstance(status, list)
    per_message, per_recipient = status  # one DSN per message: Gazette sends one per reader
    assert isinstance(per_message, Message)
    assert isinstance(per_recipient, Message)
    return Report(raw, message, per_message, per_recipient)


def ledger(site: Installation) -> dict[str, tuple[int, DeliveryStatus]]:
    """Each reader's delivery row id and status (one issue was sent)."""
    with site.runtime("maildir:///nowhere") as runtime, runtime.sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.id, Delivery.status).join(
                Delivery, Delivery.subscriber_id == Subscriber.id
            )
        ).all()
    return {email: (row_id, status) for email, row_id, status in rows}


def send_through(
    postfix: Postfix, tmp_path: Path, database_url: str, readers: list[str]
) -> tuple[Installation, dict[str, int]]:
    """Send an issue to ``readers`` through ``postfix``; the site, each reader's delivery id."""
    site = replace(
        make_installation(tmp_path, database_url, readers),
        settings={"bounce_address": postfix.bounce_address},
    )
    result = site.send(postfix.url)
    assert result.returncode == 0, result.stderr
    rows = ledger(site)
    # Postfix took every message: to Gazette each one is sent; the bounces come later.
    assert {email: status for email, (_id, status) in rows.items()} == dict.fromkeys(
        readers, DeliveryStatus.SENT
    )
    return site, {email: row_id for email, (row_id, _status) in rows.items()}


@dataclass(frozen=True)
class ReaderState:
    """What a report can change for one reader: subscription, bounce count, bounce events."""

    subscription: str
    bounce_count: int
    # The reader's bounce events: severity and what the report said.
    bounces: tuple[tuple[str, str], ...]


def reader_states(site: Installation) -> tuple[dict[str, ReaderState], int]:
    """Each reader's state, and the issue's bounced_count (one issue, one newsletter)."""
    with site.runtime("maildir:///nowhere") as runtime, runtime.sessions() as session:
        states = {}
        for subscriber in session.scalars(select(Subscriber)):
            [status] = session.scalars(
                select(Subscription.status).where(Subscription.subscriber_id == subscriber.id)
            ).all()
            events = session.scalars(
                select(Event)
                .where(Event.subscriber_id == subscriber.id, Event.kind == "bounce")
                .order_by(Event.id)
            )
            states[subscriber.email] = ReaderState(
                status.value,
                subscriber.bounce_count,
                tuple((e.detail["severity"], e.detail["reply"]) for e in events),
            )
        [bounced_count] = session.scalars(select(Issue.bounced_count)).all()
        assert session.scalar(select(func.count()).select_from(Newsletter)) == 1
    return states, bounced_count


def process(site: Installation, postfix: Postfix) -> str:
    """Run the real `gazette bounces process` on the Maildir the DSNs came to; its summary."""
    result = site.gazette(postfix.url, "bounces", "process", "--maildir", str(postfix.maildir))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout.strip()


def check_processed(postfix: Postfix, count: int) -> None:
    """The Maildir's new/ and cur/ are empty, its ``count`` messages all in .processed."""
    assert postfix.delivered() == []
    processed = postfix.maildir / ".processed"
    assert len([p for sub in ("new", "cur") for p in (processed / sub).iterdir()]) == count
    assert not (postfix.maildir / ".unrecognised").exists()


def process_twice(
    site: Installation, postfix: Postfix, count: int
) -> tuple[dict[str, ReaderState], str, tuple[dict[str, ReaderState], int]]:
    """The readers before, the first run's summary, and what it left, which a second keeps."""
    before, _count = reader_states(site)
    summary = process(site, postfix)
    check_processed(postfix, count)
    after = reader_states(site)
    assert process(site, postfix).startswith("Read 0 messages")
    assert reader_states(site) == after
    return before, summary, after


def forwarded_copy(report: Report, reader: str, other: str) -> bytes:
    """``report`` as if its reader's mail had been forwarded to ``other``: a new message."""
    raw = report.raw.replace(reader.encode(), other.encode())
    message_id = str(report.message["Message-ID"])
    return raw.replace(message_id.encode(), message_id.replace("<", "<forwarded.").encode())


def check_envelopes(queue: dict[str, Queued], rows: dict[str, int]) -> dict[str, Queued]:
    """Postfix got each reader's message from that reader's own VERP address; by reader."""
    by_reader: dict[str, Queued] = {}
    for queued in queue.values():
        if not queued.sender:
            continue  # one of Postfix's own DSNs (null sender)
        [reader] = {attempt.recipient for attempt in queued.attempts}
        assert queued.sender.endswith(f"@{BOUNCE_DOMAIN}")
        assert delivery_for(queued.sender, [TEST_KEY]) == rows[reader], queued
        by_reader[reader] = queued
    assert set(by_reader) == set(rows)
    return by_reader


def dsns_by_reader(postfix: Postfix, count: int, rows: dict[str, int]) -> dict[str, Report]:
    """The Maildir's ``count`` DSNs, each mapped to its reader by its VERP address alone."""
    reader_of = {row_id: email for email, row_id in rows.items()}
    found: dict[str, Report] = {}
    paths = postfix.delivered()
    assert len(paths) == count, [p.name for p in paths]
    for path in paths:
        report = read_dsn(path.read_bytes())
        to, delivered_to = report.message["To"], report.message["Delivered-To"]
        assert to == delivered_to, (to, delivered_to)
        assert str(to).endswith(f"@{BOUNCE_DOMAIN}")
        row_id = delivery_for(str(to), [TEST_KEY])
        assert row_id in reader_of, to
        reader = reader_of[row_id]
        assert reader not in found, f"two DSNs for {reader}"
        # The token names the reader the report is about, and the returned message's.
        assert report.final_recipient == reader
        assert report.returned["To"] == reader
        assert report.message["Return-Path"] == "<>"  # a DSN is never bounced back
        assert report.per_message["X-Postfix-Sender"] == f"rfc822; {to}"
        found[reader] = report
    return found


def shape(report: Report) -> tuple[list[str], ...]:
    """What a DSN of one kind always has: its headers, parts, fields and their outcome."""
    return (
        list(report.message.keys()),
        [part.get_content_type() for part in report.message.iter_parts()],
        list(report.per_message.keys()),
        list(report.per_recipient.keys()),
        [str(report.field("Action")), str(report.field("Status"))],
    )


def keep(report: Report, tmp_path: Path, name: str) -> None:
    """A copy in the test's folder; the committed sample of ``name`` must be of its shape.

    tests/postfix_samples/ keeps DSNs this Postfix produced; when a new Postfix writes
    them otherwise, this fails, and the copy here replaces the sample.
    """
    (tmp_path / "dsn").mkdir(exist_ok=True)
    (tmp_path / "dsn" / name).write_bytes(report.raw)
    assert shape(report) == shape(read_dsn((SAMPLES / name).read_bytes())), name


def test_postfix_returns_each_failure_to_the_verp_address_of_that_reader_s_delivery(
    tmp_path: Path, database_url: str
) -> None:
    readers = [*ALIVE, DEAD, FULL]
    server = ReadersServer()
    with (
        SMTPServer(server) as downstream,
        running_postfix(tmp_path, {"example.org": downstream.port}, BOUNCE_DOMAIN) as postfix,
    ):
        site, rows = send_through(postfix, tmp_path, database_url, readers)
        postfix.wait_for_mail(2, DSN_TIMEOUT)
        queue = postfix.wait_until_settled(len(readers), DSN_TIMEOUT)  # and no more DSNs
        dsns = dsns_by_reader(postfix, 2, rows)
        before, summary, (after, bounced_count) = process_twice(site, postfix, 2)

        # A forward: the same DSN naming another reader; the token's reader is bounced.
        forwarded = forwarded_copy(dsns[DEAD], DEAD, ALIVE[0])
        (postfix.maildir / "new" / "forwarded").write_bytes(forwarded)
        again = process(site, postfix)
        check_processed(postfix, 3)
        forwarded_after, forwarded_count = reader_states(site)

    by_reader = check_envelopes(queue, rows)
    outcomes = {r: [(a.dsn, a.status) for a in q.attempts] for r, q in by_reader.items()}
    assert outcomes == {
        **{reader: [("2.0.0", "sent")] for reader in ALIVE},
        DEAD: [("5.1.1", "bounced")],
        FULL: [("4.2.2", "deferred")],  # tried once: its lifetime of 0 has then run out
    }
    assert [r for r, q in by_reader.items() if q.expired] == [FULL]
    # The readers' server saw each message come from its reader's own VERP address.
    assert sorted(server.rcpts) == sorted((by_reader[reader].sender, reader) for reader in readers)
    assert sorted(m.recipients[0] for m in downstream.messages) == sorted(ALIVE)

    assert set(dsns) == {DEAD, FULL}
    dead, full = dsns[DEAD], dsns[FULL]
    assert dead.field("Action") == "failed"
    assert dead.field("Status") == "5.1.1"
    assert dead.field("Diagnostic-Code") == f"smtp; {REPLIES[DEAD]}"
    assert dead.field("Remote-MTA") == "dns; 127.0.0.1"
    assert full.field("Action") == "failed"  # not "delayed": see the module's note
    assert full.field("Status") == "4.2.2"
    assert full.field("Diagnostic-Code") == f"smtp; {REPLIES[FULL]}"
    keep(dead, tmp_path, "postfix-550-5.1.1-failed.eml")
    keep(full, tmp_path, "postfix-452-4.2.2-expired.eml")

    # What `gazette bounces process` made of them.
    assert summary.startswith(
        f"Read 2 messages from {postfix.maildir}: 1 hard bounce, 1 soft bounce, 0 refused"
    ), summary
    assert {reader: before[reader] for reader in ALIVE} == {
        reader: after[reader] for reader in ALIVE
    }
    assert before[DEAD] == before[FULL] == ReaderState("active", 0, ())
    assert after[DEAD].subscription == "bounced"
    assert [severity for severity, _said in after[DEAD].bounces] == ["hard"]
    assert "5.1.1" in after[DEAD].bounces[0][1]
    assert after[FULL].subscription == "active"
    assert [severity for severity, _said in after[FULL].bounces] == ["soft"]
    assert "4.2.2" in after[FULL].bounces[0][1]
    assert bounced_count == 2
    assert "1 hard bounce, 0 soft bounces" in again
    assert "0 unmatched, 0 already processed" in again
    forwarded_bounce = (
        "hard", after[DEAD].bounces[0][1].replace(f"<{DEAD}>", f"<{ALIVE[0]}>")
    )  # fmt: skip
    assert forwarded_after == after | {
        DEAD: ReaderState("bounced", 2, (*after[DEAD].bounces, forwarded_bounce)),
    }
    assert forwarded_count == bounced_count + 1


def test_a_reader_server_that_refuses_connections_comes_back_as_failed_4_4_1(
    tmp_path: Path, database_url: str
) -> None:
    readers = [ALIVE[0], UNREACHABLE]
    closed = free_port()  # nothing listens there: the connection is refused
    with (
        SMTPServer(ReadersServer()) as downstream,
        running_postfix(
            tmp_path,
            {"example.org": downstream.port, "unreachable.example.net": closed},
            BOUNCE_DOMAIN,
        ) as postfix,
    ):
        site, rows = send_through(postfix, tmp_path, database_url, readers)
        postfix.wait_for_mail(1, DSN_TIMEOUT)
        queue = postfix.wait_until_settled(len(readers), DSN_TIMEOUT)
        dsns = dsns_by_reader(postfix, 1, rows)
        before, summary, (after, bounced_count) = process_twice(site, postfix, 1)

    by_reader = check_envelopes(queue, rows)
    assert [(a.dsn, a.status) for a in by_reader[UNREACHABLE].attempts] == [("4.4.1", "deferred")]
    assert by_reader[UNREACHABLE].expired
    assert [m.recipients for m in downstream.messages] == [[ALIVE[0]]]
    [(reader, report)] = dsns.items()
    assert reader == UNREACHABLE
    assert report.field("Action") == "failed"
    assert report.field("Status") == "4.4.1"
    assert report.field("Remote-MTA") is None  # no server ever answered
    assert report.field("Diagnostic-Code") == (
        f"X-Postfix; connect to 127.0.0.1[127.0.0.1]:{closed}: Connection refused"
    )
    keep(report, tmp_path, "postfix-connection-refused-4.4.1-expired.eml")

    assert "0 hard bounces, 1 soft bounce, 0 refused" in summary, summary
    assert after[ALIVE[0]] == before[ALIVE[0]] == ReaderState("active", 0, ())
    assert after[UNREACHABLE].subscription == "active"
    assert after[UNREACHABLE].bounce_count == 1
    [(severity, said)] = after[UNREACHABLE].bounces
    assert severity == "soft"
    assert "4.4.1" in said
    assert bounced_count == 1


def auto_reply(to: str, about: Received) -> bytes:
    """A reader's vacation responder answering ``about`` as RFC 3834 says: to its sender."""
    original = parse(about.data)
    reply = EmailMessage()
    reply["From"] = about.recipients[0]
    reply["To"] = to
    reply["Subject"] = f"Auto: {original['Subject']}"
    reply["Message-ID"] = "<vacation.1@example.org>"
    reply["In-Reply-To"] = str(original["Message-ID"])
    reply["Auto-Submitted"] = "auto-replied"
    reply.set_content("I am away until January and read no mail.")
    return bytes(reply)


def test_an_auto_reply_mailed_back_through_postfix_is_recorded_and_changes_nothing_else(
    tmp_path: Path, database_url: str
) -> None:
    """RFC 3834 replies go to the envelope sender: the VERP address, through the relay."""
    reader = ALIVE[0]
    with (
        SMTPServer(ReadersServer()) as downstream,
        running_postfix(tmp_path, {"example.org": downstream.port}, BOUNCE_DOMAIN) as postfix,
    ):
        site, rows = send_through(postfix, tmp_path, database_url, [reader])
        [received] = downstream.messages
        assert delivery_for(received.sender, [TEST_KEY]) == rows[reader]
        # The reader's server answers over SMTP, to the sender it was given.
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=DSN_TIMEOUT) as client:
            client.sendmail("", [received.sender], auto_reply(received.sender, received))
        [arrived] = postfix.wait_for_mail(1, DSN_TIMEOUT)
        assert parse(arrived.read_bytes())["Auto-Submitted"] == "auto-replied"
        before, summary, (after, bounced_count) = process_twice(site, postfix, 1)
        with site.runtime("maildir:///nowhere") as runtime, runtime.sessions() as session:
            kinds = session.scalars(
                select(Event.kind).where(Event.kind.in_(["auto_reply", "bounce", "suppressed"]))
            ).all()

    assert "1 auto-reply" in summary, summary
    assert "0 hard bounces, 0 soft bounces" in summary, summary
    assert kinds == ["auto_reply"]
    assert after == before == {reader: ReaderState("active", 0, ())}
    assert bounced_count == 0
