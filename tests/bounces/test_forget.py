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

from sqlalchemy import select

from gazette.store.models import BounceReport
from tests.bounces.helpers import FORWARDED, deliver, files, make_maildir, sample, send_issue
from tests.support.dovecot import append, contents, running_dovecot


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
