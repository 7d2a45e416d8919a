"""ESMTP PIPELINING (RFC 2920): MAIL FROM, RCPT TO and DATA in one write when offered.

Real relays on loopback: aiosmtpd taught to offer PIPELINING (it reads commands one
after another, so a pipelined group is served as RFC 2920 says), aiosmtpd as it ships
(no PIPELINING: the path for relays that do not offer it), and Postfix's smtp-sink.
What the client wrote is seen by counting its socket writes; every reply is still
judged as before: a 5.1.1 to RCPT TO is the reader's hard bounce, a refused MAIL FROM
the relay's, a 421 anywhere in the group ends the session and the message is tried
once more on a new one.
"""

from __future__ import annotations

import os
import random
import smtplib
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from benchmarks.harness.processes import wait_for_port
from gazette.mail.outcomes import DeliveryError, Fault
from gazette.mail.pipelining import _quoted
from gazette.mail.smtp import SMTPConnection, transmit_finish, transmit_start
from gazette.url_settings import MailURL
from tests.support.smtp import PipeliningRelay, SMTPServer, free_port

if TYPE_CHECKING:
    from typing_extensions import Buffer

SENDER = "digest@news.example.org"
MESSAGE = b"Subject: hello\r\n\r\nOne line.\r\n"
SMTP_SINK = Path("/usr/sbin/smtp-sink")


class CountingSMTP(smtplib.SMTP):
    """smtplib's client, keeping each write it makes (the wire is left as it is)."""

    writes: list[bytes]

    def send(self, s: Buffer | str) -> None:
        """Keep a copy of the write, then write it."""
        if not hasattr(self, "writes"):
            self.writes = []
        self.writes.append(s.encode() if isinstance(s, str) else bytes(s))
        super().send(s)


def url(port: int) -> MailURL:
    return MailURL(scheme="smtp", host="127.0.0.1", port=port, timeout=10)


def envelope_writes(
    port: int, *, pipelining: bool, recipient: str = "ada@example.org"
) -> list[bytes]:
    """The writes of one message sent with transmit_start/finish, EHLO left out."""
    client = CountingSMTP("127.0.0.1", port, timeout=10)
    try:
        client.ehlo()
        client.writes = []
        transmit_start(client, SENDER, recipient, MESSAGE, pipelining=pipelining)
        transmit_finish(client)
        return client.writes
    finally:
        client.close()


def test_mail_rcpt_and_data_go_in_one_write_when_the_relay_offers_pipelining() -> None:
    handler = PipeliningRelay()
    with SMTPServer(handler) as server:
        writes = envelope_writes(server.port, pipelining=True)
    assert (
        writes[0]
        == (
            f"MAIL FROM:<{SENDER}> size={len(MESSAGE)}\r\nRCPT TO:<ada@example.org>\r\nDATA\r\n"
        ).encode()
    )
    assert len(writes) == 2  # the envelope, then the message with its final dot
    assert [(m.sender, m.recipients, m.data) for m in handler.messages] == [
        (SENDER, ["ada@example.org"], MESSAGE)
    ]


@pytest.mark.parametrize(("offered", "wanted"), [(False, True), (True, False)])
def test_each_command_waits_for_its_reply_without_pipelining(offered: bool, wanted: bool) -> None:
    # A relay that does not offer it, or GAZETTE_SMTP_PIPELINING=0: as sendmail sends.
    handler = PipeliningRelay(pipelining=offered)
    with SMTPServer(handler) as server:
        writes = envelope_writes(server.port, pipelining=wanted)
    assert [w.split(b":")[0] for w in writes[:3]] == [b"mail FROM", b"rcpt TO", b"data\r\n"]
    assert handler.commands == [
        f"MAIL {SENDER} SIZE={len(MESSAGE)}",
        "RCPT ada@example.org",
        "DATA",
    ]
    assert len(handler.messages) == 1


# Recipient -> reply the relay gives its RCPT TO (None: accepted).
RCPT_REPLIES: dict[str, str | None] = {
    "ada@example.org": None,
    "gone@example.org": "550 5.1.1 no such user",
    "policy@example.org": "550 5.7.1 refused by policy",
    "later@example.org": "451 4.7.1 greylisted, try later",
    "full@example.org": "552 5.2.2 mailbox full",
}


def outcomes(port: int, pipelining: bool) -> list[tuple[str, object]]:
    """(recipient, failure as (code, permanent, fault, session) or None), one session."""
    connection = SMTPConnection(url(port), 100, pipelining=pipelining)
    seen: list[tuple[str, object]] = []
    try:
        for recipient in RCPT_REPLIES:
            try:
                connection.send(SENDER, recipient, MESSAGE)
                seen.append((recipient, None))
            except DeliveryError as failure:
                seen.append(
                    (recipient, (failure.code, failure.permanent, failure.fault, failure.session))
                )
    finally:
        connection.close()
    return seen


def test_replies_in_a_pipeline_are_judged_as_one_by_one() -> None:
    def script(address: str, _count: int) -> str | None:
        return RCPT_REPLIES.get(address)

    results = {}
    for pipelining in (True, False):
        handler = PipeliningRelay(rcpt_script=script)
        with SMTPServer(handler) as server:
            results[pipelining] = outcomes(server.port, pipelining)
        # The refused readers left the session usable (RSET): the next one was sent.
        assert [m.recipients for m in handler.messages] == [["ada@example.org"]]
        assert handler.sessions == 1
    assert results[True] == results[False]
    judged = dict(results[True])
    assert judged["gone@example.org"] == (550, True, Fault.READER, False)  # hard bounce
    assert judged["policy@example.org"] == (550, True, Fault.RELAY, False)
    assert judged["later@example.org"] == (451, False, Fault.READER, False)


def test_a_refused_sender_in_a_pipeline_is_the_relays() -> None:
    handler = PipeliningRelay(mail_replies=["554 5.7.1 sender address rejected"])
    with SMTPServer(handler) as server:
        connection = SMTPConnection(url(server.port), 100)
        try:
            with pytest.raises(DeliveryError) as refused:
                connection.send(SENDER, "ada@example.org", MESSAGE)
        finally:
            connection.close()
    failure = refused.value
    assert failure.detail.startswith("sender refused: 554 5.7.1")
    assert (failure.fault, failure.session, failure.hard_bounce) == (Fault.RELAY, True, False)
    # RCPT TO and DATA travelled in the same write and were refused for want of a sender.
    assert handler.commands == [f"MAIL {SENDER} SIZE={len(MESSAGE)}", "RSET"]
    assert handler.messages == []


def test_a_421_to_a_pipelined_mail_from_reconnects_and_sends_the_message_once() -> None:
    handler = PipeliningRelay(mail_replies=["421 4.3.2 service shutting down"])
    with SMTPServer(handler) as server:
        connection = SMTPConnection(url(server.port), 100)
        try:
            connection.send(SENDER, "ada@example.org", MESSAGE)
            connection.send(SENDER, "grace@example.org", MESSAGE)
        finally:
            connection.close()
    assert [m.recipients for m in handler.messages] == [["ada@example.org"], ["grace@example.org"]]
    # The 421 closed the first session; the message and the next went over a second one.
    assert handler.sessions == 2


def test_a_421_to_a_pipelined_rcpt_to_waits_as_it_did_one_by_one() -> None:
    closed: list[str] = []

    def first_rcpt(address: str, _count: int) -> str | None:
        if closed:
            return None
        closed.append(address)
        return "421 4.3.2 service shutting down"

    handler = PipeliningRelay(rcpt_script=first_rcpt)
    with SMTPServer(handler) as server:
        connection = SMTPConnection(url(server.port), 100)
        try:
            with pytest.raises(DeliveryError) as deferred:
                connection.send(SENDER, "ada@example.org", MESSAGE)
            connection.send(SENDER, "grace@example.org", MESSAGE)
        finally:
            connection.close()
    # The relay's doing, not the reader's: retried later, never a bounce.
    failure = deferred.value
    assert (failure.code, failure.permanent, failure.fault) == (421, False, Fault.RELAY)
    # The session closed with the 421; the next message went over a new one.
    assert [m.recipients for m in handler.messages] == [["grace@example.org"]]
    assert handler.sessions == 2


def test_a_421_to_the_final_dot_of_a_pipelined_message_is_tried_once_more() -> None:
    replies: list[str] = []

    def first_data(_address: str, count: int) -> str | None:
        if count == 1:
            replies.append("421")
            return "421 4.3.2 closing"
        return None

    handler = PipeliningRelay(data_script=first_data)
    with SMTPServer(handler) as server:
        connection = SMTPConnection(url(server.port), 100)
        try:
            results = list(
                connection.send_each(
                    iter(
                        [
                            (1, SENDER, "ada@example.org", MESSAGE),
                            (2, SENDER, "bo@example.org", MESSAGE),
                        ]
                    )
                )
            )
        finally:
            connection.close()
    assert results == [(1, None), (2, None)]
    assert replies == ["421"]
    assert [m.recipients for m in handler.messages] == [["ada@example.org"], ["bo@example.org"]]


@contextmanager
def postfix_sink() -> Iterator[int]:
    """Postfix's smtp-sink on a free loopback port (it offers PIPELINING, not CHUNKING).

    Not aiosmtpd: a real MTA's pipelining, so it is started here rather than through
    the suite's SMTP sink fixture.
    """
    if not SMTP_SINK.exists():
        pytest.skip("Postfix's smtp-sink is not installed")
    port = free_port()

    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [str(SMTP_SINK), *user, "-4", f"127.0.0.1:{port}", "100"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 30, process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_smtp_sink_is_sent_to_with_pipelining() -> None:
    with postfix_sink() as port:
        client = CountingSMTP("127.0.0.1", port, timeout=10)
        try:
            client.ehlo()
            assert client.has_extn("pipelining")
        finally:
            client.close()
        connection = SMTPConnection(url(port), 100)
        try:
            results = list(
                connection.send_each(
                    iter([(n, SENDER, f"reader{n}@example.org", MESSAGE) for n in range(20)])
                )
            )
        finally:
            connection.close()
        assert results == [(n, None) for n in range(20)]
        assert envelope_writes(port, pipelining=True)[0].count(b"\r\n") == 3


def test_envelope_addresses_are_quoted_as_smtplib_quotes_them() -> None:
    """The fast quoting of a plain address gives smtplib.quoteaddr's answer for any string."""
    alphabet = "ab.+-_@ <>()\",;:\\[]\tü=!#$%&*/?^{|}~'\x01"
    rng = random.Random(5321)
    samples = ["bounces+41.x@news.example.org", "r@читач.укр", "", "<a@b>", "a@[1.2.3.4]"]
    samples += ["".join(rng.choices(alphabet, k=rng.randint(1, 9))) for _ in range(20000)]
    for address in samples:
        assert _quoted(address) == smtplib.quoteaddr(address), address
