"""`gazette bounces process --maildir` end to end (issue 18), on SQLite and PostgreSQL.

A real issue goes out through `gazette digest send` to an aiosmtpd relay on loopback
with GAZETTE_BOUNCE_ADDRESS set, and the MAIL FROM each message had is what the reports
in the Maildir are mailed back to. The real CLI then reads the Maildir: each kind of
report does what the policy says, every message moves out of the way, a second run (and
a copy of every message put back) changes nothing, forged reports bounce nobody when
VERP is required, and a malformed message is kept aside without a traceback.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gazette.mail.verp import Verp
from gazette.subscribers.bounces import SOFT_BOUNCE_LIMIT
from tests.bounces.helpers import (
    BOUNCE,
    FORWARDED,
    READERS,
    deliver,
    files,
    make_maildir,
    sample,
    send_issue,
    status_of,
)
from tests.support.cli import one_sentence, write_csv
from tests.support.relays import make_installation


def test_a_maildir_of_every_kind_is_processed_once_and_moved_out_of_the_way(
    tmp_path: Path, database_url: str
) -> None:
    sent = send_issue(tmp_path, database_url)
    assert sent.gazette("newsletters", "add", "other", "--name", "Other")[0] == 0
    assert (
        sent.gazette(
            "subscribers", "add", "mary@example.org", "--newsletter", "other", "--confirmed"
        )[0]
        == 0
    )
    maildir = make_maildir(tmp_path / "bounces")
    # The report names another address (a forward): the token decides whose it is.
    deliver(
        maildir,
        "1.failed",
        sample("dsn_failed_511.eml", verp=sent.verp["ada@example.org"], recipient=FORWARDED),
    )
    deliver(
        maildir,
        "2.delayed",
        sample(
            "dsn_delayed_441.eml",
            verp=sent.verp["grace@example.org"],
            recipient="grace@example.org",
        ),
    )
    deliver(
        maildir,
        "3.policy",
        sample(
            "dsn_policy_571.eml", verp=sent.verp["linus@example.org"], recipient="linus@example.org"
        ),
    )
    deliver(
        maildir,
        "4.complaint",
        sample(
            "arf_complaint.eml", verp=sent.verp["mary@example.org"], recipient="mary@example.org"
        ),
    )
    deliver(
        maildir,
        "5.auto",
        sample("auto_reply.eml", verp=sent.verp["joan@example.org"], recipient="joan@example.org"),
    )
    deliver(maildir, "6.postfix", sample("postfix_nonstandard.eml"))
    deliver(maildir, "7.exim", sample("exim_nonstandard.eml"), seen=True)
    deliver(maildir, "8.qmail", sample("qmail_nonstandard.eml"))  # nobody we know
    deliver(maildir, "9.broken", sample("broken_mime.eml"))
    deliver(maildir, "10.junk", sample("binary_junk.eml"), seen=True)
    before = sent.state()

    summary = sent.process(maildir)

    aside = maildir / ".unrecognised"
    assert summary == (
        f"Read 10 messages from {maildir}: 3 hard bounces, 0 soft bounces, 1 refused for policy "
        "(not counted against readers), 1 delayed, 1 complaint, 1 auto-reply, "
        f"2 unrecognised (kept aside in {aside}), 1 unmatched, 0 already processed."
    )
    readers = sent.state()["readers"]
    assert readers == before["readers"] | {  # type: ignore[operator]
        "ada@example.org": (1, [("relay-news", "bounced")]),
        "mary@example.org": (0, [("other", "complained"), ("relay-news", "complained")]),
        "xxxxx@local.ie": (1, [("relay-news", "bounced")]),
        "userx@its.example.nl": (1, [("relay-news", "bounced")]),
    }
    after = sent.state()
    assert after["bounced_count"] == 1  # ada's, by its token; the others had none
    assert after["suppressions"] == ["complaint"]
    assert files(maildir) == []
    assert len(files(maildir / ".processed")) == 8
    kept = {p.name.partition(":")[0]: p.read_bytes() for p in files(aside)}
    assert set(kept) == {"9.broken", "10.junk"}
    for raw in kept.values():
        assert raw.startswith(b"X-Gazette-Reason: ")
        assert raw.count(b"X-Gazette-Reason") == 1

    # Each action is in the reader's history, with what the report said.
    code, shown, _err = sent.gazette("subscribers", "show", "ada@example.org")
    assert code == 0
    assert "bounce" in shown
    assert "5.1.1" in shown
    histories = {
        "grace@example.org": "delayed", "linus@example.org": "bounce_not_counted",
        "joan@example.org": "auto_reply", "mary@example.org": "complaint",
    }  # fmt: skip
    for email, kind in histories.items():
        code, shown, _err = sent.gazette("subscribers", "show", email)
        assert code == 0
        assert kind in shown, (email, shown)

    # A second run finds nothing; every message copied back changes nothing either.
    assert sent.process(maildir).startswith(f"Read 0 messages from {maildir}: 0 hard bounces")
    for path in files(maildir / ".processed") + files(aside):
        shutil.copy(path, maildir / "new" / path.name.partition(":")[0])
    again = sent.process(maildir)
    assert again.endswith(
        "2 unrecognised (kept aside in " + str(aside) + "), 0 unmatched, 8 already processed."
    )
    assert "0 hard bounces, 0 soft bounces, 0 refused" in again
    assert sent.state() == after
    for path in files(aside):
        assert path.read_bytes().count(b"X-Gazette-Reason") == 1

    # The reader who complained cannot be imported back, to any newsletter.
    csv = write_csv(tmp_path / "readers.csv", [["email"], ["Mary@example.org"]])
    for slug in ("relay-news", "other"):
        code, _out, err = sent.gazette(
            "subscribers", "import", str(csv), "--confirmed", "--newsletter", slug
        )
        assert code == 0, err
    assert sent.gazette("newsletters", "add", "third", "--name", "Third")[0] == 0
    code, _out, err = sent.gazette(
        "subscribers", "import", str(csv), "--confirmed", "--newsletter", "third"
    )
    assert code == 0, err
    assert status_of(sent, "mary@example.org") == (
        0,
        [("other", "complained"), ("relay-news", "complained")],
    )


def test_requiring_verp_forged_reports_bounce_nobody(tmp_path: Path, database_url: str) -> None:
    sent = send_issue(tmp_path, database_url, bounce_require_verp="yes")
    ada_delivery = Verp(BOUNCE, ["test-secret-key-0123456789"]).delivery_for(
        sent.verp["ada@example.org"]
    )
    assert ada_delivery is not None
    forged_token = Verp(BOUNCE, ["someone-elses-key-0123456789"]).address(ada_delivery)
    maildir = make_maildir(tmp_path / "bounces")
    deliver(
        maildir,
        "no-token",
        sample("dsn_failed_511.eml", verp=BOUNCE, recipient="ada@example.org", n=1),
    )
    deliver(
        maildir,
        "foreign-token",
        sample("dsn_failed_511.eml", verp=forged_token, recipient="ada@example.org", n=2),
    )
    deliver(
        maildir,
        "complaint",
        sample("arf_complaint.eml", verp=BOUNCE, recipient="ada@example.org", n=3),
    )
    deliver(
        maildir,
        "genuine",
        sample(
            "dsn_failed_511.eml",
            verp=sent.verp["grace@example.org"],
            recipient="grace@example.org",
            n=4,
        ),
    )
    summary = sent.process(maildir)
    assert "1 hard bounce, " in summary, summary
    assert "3 unmatched" in summary, summary
    assert status_of(sent, "ada@example.org") == (0, [("relay-news", "active")])
    assert status_of(sent, "grace@example.org") == (1, [("relay-news", "bounced")])
    assert sent.state()["suppressions"] == []


def test_soft_bounces_suppress_only_at_the_limit(tmp_path: Path, database_url: str) -> None:
    sent = send_issue(tmp_path, database_url)
    maildir = make_maildir(tmp_path / "bounces")
    verp = sent.verp["linus@example.org"]
    for n in range(1, SOFT_BOUNCE_LIMIT):
        deliver(maildir, f"soft{n}", sample("dsn_expired_447.eml", verp=verp, n=n))
    assert f"{SOFT_BOUNCE_LIMIT - 1} soft bounces" in sent.process(maildir)
    assert status_of(sent, "linus@example.org") == (
        SOFT_BOUNCE_LIMIT - 1,
        [("relay-news", "active")],
    )
    deliver(maildir, "last", sample("dsn_expired_447.eml", verp=verp, n=SOFT_BOUNCE_LIMIT))
    assert "1 soft bounce," in sent.process(maildir)
    assert status_of(sent, "linus@example.org") == (SOFT_BOUNCE_LIMIT, [("relay-news", "bounced")])
    assert sent.state()["bounced_count"] == SOFT_BOUNCE_LIMIT


@pytest.mark.parametrize("what", ["missing", "file", "folder"])
def test_a_path_that_is_not_a_maildir_is_one_sentence_and_exit_2(
    tmp_path: Path, database_url: str, what: str
) -> None:
    site = make_installation(tmp_path, database_url, READERS[:1])
    path = tmp_path / "not-a-maildir"
    if what == "file":
        path.write_text("hello")
    elif what == "folder":
        (path / "new").mkdir(parents=True)
    result = site.gazette("maildir:///nowhere", "bounces", "process", "--maildir", str(path))
    assert result.returncode == 2, result.stderr
    assert one_sentence(result) == (
        f"gazette: {str(path)!r} is not a Maildir (a folder with new/ and cur/ in it)."
    )
    assert not (path / ".processed").exists()
