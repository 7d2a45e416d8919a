"""CHUNKING (RFC 3030) against a real Postfix smtpd: each message as one BDAT chunk.

Postfix's smtpd offers CHUNKING and PIPELINING (its smtp-sink and aiosmtpd offer no
CHUNKING), so these tests send to an instance of the test's own (tests/support/postfix),
which relays each message to an aiosmtpd on loopback. What Postfix logged for each
session (its "disconnect from ... bdat=N" line) says which commands it was sent; what
arrived downstream shows the bytes went through unchanged, lines starting with "."
included (a chunk is never dot-stuffed). Refusals come from Postfix's own access maps:
a 5.7.1 to one reader's RCPT TO is that reader's and the session goes on, a 421
closes the session and the message is the relay's to retry, never a bounce.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gazette.mail.outcomes import DeliveryError, Fault
from gazette.mail.smtp import SMTPConnection
from gazette.url_settings import MailURL
from tests.support.postfix import Postfix, running_postfix
from tests.support.smtp import RecordingHandler, SMTPServer

SENDER = "digest@news.example.org"
DOMAIN = "readers.example.org"
BOUNCES = "bounces.example.org"
# Lines starting with "." (stuffed under DATA, sent as they are in a chunk), 8-bit text.
BODY = (
    "From: Digest <digest@news.example.org>\r\nTo: r{n}@readers.example.org\r\n"
    "Date: Sun, 06 Dec 2026 08:00:00 +0000\r\nSubject: {n}\r\n"
    "Message-ID: <m{n}@news.example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\n.leading dot\r\n..two\r\n"
    "Привіт, {n}!\r\n.\r\nend\r\n"
)
SESSION = re.compile(r"disconnect from \S+ (.*)")


def message(n: int) -> bytes:
    return BODY.format(n=n).encode()


def url(postfix: Postfix) -> MailURL:
    return MailURL(scheme="smtp", host="127.0.0.1", port=postfix.port, timeout=10)


@contextmanager
def relay(tmp_path: Path, **extra: str) -> Iterator[tuple[Postfix, RecordingHandler]]:
    """A Postfix relaying DOMAIN to an aiosmtpd; ``extra`` main.cf settings."""
    handler = RecordingHandler()
    with (
        SMTPServer(handler) as downstream,
        running_postfix(tmp_path, {DOMAIN: downstream.port}, BOUNCES, extra) as postfix,
    ):
        yield postfix, handler


def sessions(postfix: Postfix) -> list[str]:
    """Each smtpd session that carried mail: its command counts, as Postfix logged them."""
    return [m.group(1) for m in SESSION.finditer(postfix.log()) if "mail=" in m.group(1)]


def send_all(
    postfix: Postfix, recipients: list[str], *, pipelining: bool = True
) -> list[tuple[int, DeliveryError | None]]:
    connection = SMTPConnection(url(postfix), 100, pipelining=pipelining)
    try:
        return list(
            connection.send_each(
                iter([(n, SENDER, rcpt, message(n)) for n, rcpt in enumerate(recipients)])
            )
        )
    finally:
        connection.close()


def arrived(postfix: Postfix, handler: RecordingHandler, count: int) -> dict[str, bytes]:
    """The messages relayed downstream, by recipient, once ``count`` have arrived."""
    postfix.wait_until_settled(count, 30)
    return {m.recipients[0]: m.data for m in handler.messages}


def test_each_message_goes_as_one_bdat_chunk_and_arrives_unchanged(tmp_path: Path) -> None:
    readers = [f"r{n}@{DOMAIN}" for n in range(5)]
    with relay(tmp_path) as (postfix, handler):
        client = smtplib.SMTP("127.0.0.1", postfix.port, timeout=10)
        client.ehlo()
        offered = (client.has_extn("chunking"), client.has_extn("pipelining"))
        client.quit()
        results = send_all(postfix, readers)
        got = arrived(postfix, handler, len(readers))
        logged = sessions(postfix)
    assert offered == (True, True)
    assert results == [(n, None) for n in range(5)]
    # The envelope and the chunk of all five went over one session, no DATA at all.
    assert logged == ["ehlo=1 mail=5 rcpt=5 bdat=5 quit=1 commands=17"]
    for n, reader in enumerate(readers):
        # Postfix adds its Received header above the message, and changes nothing else.
        assert got[reader].replace(b"\r\n", b"\n").endswith(message(n).replace(b"\r\n", b"\n"))


def test_with_pipelining_turned_off_the_message_goes_with_data(tmp_path: Path) -> None:
    with relay(tmp_path) as (postfix, handler):
        results = send_all(postfix, [f"r0@{DOMAIN}", f"r1@{DOMAIN}"], pipelining=False)
        got = arrived(postfix, handler, 2)
        logged = sessions(postfix)
    assert results == [(0, None), (1, None)]
    assert logged == ["ehlo=1 mail=2 rcpt=2 data=2 quit=1 commands=8"]
    assert got[f"r1@{DOMAIN}"].replace(b"\r\n", b"\n").endswith(message(1).replace(b"\r\n", b"\n"))


def test_a_refused_recipient_in_a_chunk_is_the_readers_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    refused = f"gone@{DOMAIN}"
    # A value with spaces goes in braces of its own (postconf(5), inline tables).
    access = f"inline:{{ {{ {refused} = 550 5.1.1 no such mailbox }} }}"
    readers = [f"r0@{DOMAIN}", refused, f"r2@{DOMAIN}"]
    with relay(tmp_path, smtpd_recipient_restrictions=f"check_recipient_access {access}") as (
        postfix,
        handler,
    ):
        results = send_all(postfix, readers)
        got = arrived(postfix, handler, 2)
        logged = sessions(postfix)
    assert [n for n, failure in results if failure is None] == [0, 2]
    failure = results[1][1]
    assert failure is not None
    assert (failure.code, failure.permanent, failure.fault) == (550, True, Fault.READER)
    assert "no such mailbox" in failure.detail
    assert sorted(got) == [f"r0@{DOMAIN}", f"r2@{DOMAIN}"]
    # One session: the refused chunk was read and cleared (RSET), and the next one went.
    assert logged == ["ehlo=1 mail=3 rcpt=2/3 bdat=2/3 rset=1 quit=1 commands=10/12"]


@pytest.mark.parametrize("step", ["sender", "recipient"])
def test_a_421_mid_pipeline_closes_the_session_and_leaves_the_message_to_retry(
    tmp_path: Path, step: str
) -> None:
    """Postfix answers 421 from its access map and disconnects, as an overloaded relay does."""
    closing = "421 4.3.2 service shutting down"
    if step == "sender":
        access = f"inline:{{ {{ {SENDER} = {closing} }} }}"
        extra = {"smtpd_sender_restrictions": f"check_sender_access {access}"}
    else:
        target = f"r1@{DOMAIN}"
        extra = {
            "smtpd_recipient_restrictions": (
                f"check_recipient_access inline:{{ {{ {target} = {closing} }} }}"
            )
        }
    with relay(tmp_path, **extra) as (postfix, handler):
        results = send_all(postfix, [f"r0@{DOMAIN}", f"r1@{DOMAIN}", f"r2@{DOMAIN}"])
        if step == "recipient":
            got = arrived(postfix, handler, 2)
        logged = sessions(postfix)
    failures = {n: f for n, f in results if f is not None}
    if step == "sender":
        # Every session ends at the sender: the relay's refusal, the batch's to retry.
        assert 0 in failures
        first = failures[0]
        assert (first.code, first.permanent, first.fault) == (421, False, Fault.RELAY)
        assert handler.messages == []
    else:
        assert sorted(failures) == [1]
        assert (failures[1].code, failures[1].permanent, failures[1].fault) == (
            421,
            False,
            Fault.RELAY,
        )
        # The 421 closed the session; the next reader's message went over a new one.
        assert sorted(got) == [f"r0@{DOMAIN}", f"r2@{DOMAIN}"]
        assert len(logged) == 2, logged
