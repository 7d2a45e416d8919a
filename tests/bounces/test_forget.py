"""`subscribers forget` removes the kept bounce messages about the reader (issue 18).

A bounce quotes the original message: the reader's address and working links. Once a
reader is forgotten, the messages about them (by their deliveries' VERP tokens, or by
their address) go from GAZETTE_BOUNCE_MAILBOX, and their bounce_report rows lose the
reader; the rows' keys stay, so a copy of a message already processed still changes
nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from gazette.bounces.forgetting import is_about
from gazette.store.models import BounceReport
from tests.bounces.helpers import FORWARDED, deliver, files, make_maildir, sample, send_issue
from tests.support.dovecot import append, contents, running_dovecot


def _bounce_naming(who: str) -> bytes:
    """A bounce without a VERP token that names ``who`` as a report would."""
    return (
        "From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered Mail\r\n"
        f"Content-Type: text/plain\r\n\r\n{who}\r\n"
    ).encode()


@pytest.mark.parametrize(
    "named",
    [
        "<Ada@Example.org>: host mx.example.org said: 550 5.1.1 unknown user",
        "Final-Recipient: rfc822; ada@example.org",
        "To: ada@example.org",
        "ada@example.org",
        'href=3D"mailto:ada@example.org"',
        "=3Cada@example.org=3E",
        "We could not deliver to ada@example.org.",
    ],
)
def test_a_message_naming_the_whole_address_is_about_the_reader(named: str) -> None:
    assert is_about(_bounce_naming(named), "ada@example.org", (), ("key",))


@pytest.mark.parametrize(
    "named",
    [
        "<mada@example.org>: 550 5.1.1 unknown user",  # another reader, ending the same
        "Final-Recipient: rfc822; ada@example.org.uk",  # another domain, starting the same
        "To: ada@example.organic",
        "To: x.ada@example.org",
        "To: ada@example.org-mail.net",
    ],
)
def test_a_message_naming_another_address_containing_it_is_not_about_the_reader(
    named: str,
) -> None:
    # Forgetting ada must not delete another reader's bounce, which may still be waiting.
    assert not is_about(_bounce_naming(named), "ada@example.org", (), ("key",))


def test_forgetting_a_reader_deletes_the_bounces_about_them_and_keeps_the_keys(
    tmp_path: Path, database_url: str
) -> None:
    maildir = make_maildir(tmp_path / "bounces")
    sent = send_issue(tmp_path, database_url, bounce_mailbox=str(maildir))
    # About ada: by her token (naming a forward), and by her address alone.
    deliver(maildir, "ada-token", sample("dsn_failed_511.eml", verp=sent.verp["ada@example.org"],
                                         recipient=FORWARDED, n=1))  # fmt: skip
    deliver(maildir, "ada-address", sample("dsn_delayed_441.eml", recipient="Ada@Example.org"))
    deliver(
        maildir,
        "grace",
        sample(
            "dsn_expired_447.eml",
            verp=sent.verp["grace@example.org"],
            recipient="grace@example.org",
        ),
    )
    assert sent.gazette("bounces", "process")[0] == 0
    kept = {p.name.partition(":")[0]: p for p in files(maildir / ".processed")}
    assert set(kept) == {"ada-token", "ada-address", "grace"}
    copy = tmp_path / "ada-copy"
    shutil.copy(kept["ada-token"], copy)
    before = sent.state()

    code, out, err = sent.gazette("subscribers", "forget", "ada@example.org", "--yes")
    assert code == 0, err
    assert out.strip() == (
        "ada@example.org is forgotten; 2 bounce message(s) about them deleted from the "
        "bounce mailbox."
    )
    assert [p.name.partition(":")[0] for p in files(maildir / ".processed")] == ["grace"]
    with sent.site.runtime(sent.outbox) as runtime, runtime.sessions() as session:
        rows = session.execute(select(BounceReport.subscriber_id, BounceReport.effect)).all()
    assert len(rows) == 3
    assert sorted(effect for who, effect in rows if who is None) == ["delayed", "hard bounce"]

    # A copy of a message about her, put back, is known as processed: it changes nothing.
    deliver(maildir, "again", copy.read_bytes())
    _code, out, _err = sent.gazette("bounces", "process")
    assert out.strip().endswith("0 unmatched, 1 already processed."), out
    now, then = sent.state()["events"], before["events"]
    assert isinstance(now, int)
    assert isinstance(then, int)
    assert now == then + 1  # the "forgotten" event only


def test_forgetting_a_reader_deletes_the_bounces_about_them_from_imap(
    tmp_path: Path, database_url: str
) -> None:
    with running_dovecot() as server:
        sent = send_issue(tmp_path, database_url, bounce_mailbox=server.url)
        append(
            server,
            sample("dsn_failed_511.eml", verp=sent.verp["ada@example.org"], recipient=FORWARDED),
            sample(
                "dsn_expired_447.eml",
                verp=sent.verp["grace@example.org"],
                recipient="grace@example.org",
            ),
        )
        assert sent.gazette("bounces", "process")[0] == 0
        append(server, sample("dsn_delayed_441.eml", recipient="ada@example.org"))  # waiting
        code, out, err = sent.gazette("subscribers", "forget", "ada@example.org", "--yes")
        assert code == 0, err
        assert "2 bounce message(s) about them deleted" in out
        assert contents(server, "INBOX") == []
        [grace] = contents(server, "Gazette.Processed")
        assert b"grace@example.org" in grace
