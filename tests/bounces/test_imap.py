"""`gazette bounces process --imap` against a real Dovecot on loopback (issue 18).

A real issue goes out with GAZETTE_BOUNCE_ADDRESS set (as in test_cli.py); the bounce
samples, addressed to the readers' VERP addresses, are APPENDed to the INBOX of a
Dovecot of the test's own (tests/support/dovecot.py). The real CLI then reads the
folder: each report does what the policy says, every message moves to Gazette.Processed
or, with the reason in a header, Gazette.Unrecognised, and a second run (and every
message copied back) changes nothing. Servers without MOVE, IMAP over TLS, and every
way the URL or the server can be wrong are tried too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.bounces.helpers import FORWARDED, Sent, sample, send_issue
from tests.support.cli import one_sentence
from tests.support.dovecot import PASSWORD, USER, append, contents, imap, running_dovecot
from tests.support.smtp import free_port

PROCESSED = "Gazette.Processed"  # Dovecot's Maildir++ layout separates with "."
UNRECOGNISED = "Gazette.Unrecognised"


def process(sent: Sent, url: str) -> str:
    code, out, err = sent.gazette("bounces", "process", "--imap", url)
    assert code == 0, err
    assert err == ""
    assert PASSWORD not in out
    return out.strip()


def every_kind(sent: Sent) -> list[bytes]:
    """Seven reports of every kind about the readers of ``sent``, two of them not reports."""
    about = {
        "dsn_delayed_441.eml": "grace@example.org", "dsn_policy_571.eml": "linus@example.org",
        "arf_complaint.eml": "mary@example.org", "auto_reply.eml": "joan@example.org",
    }  # fmt: skip
    first = sample("dsn_failed_511.eml", verp=sent.verp["ada@example.org"], recipient=FORWARDED)
    reports = [sample(name, verp=sent.verp[who], recipient=who) for name, who in about.items()]
    others = ("exim_nonstandard.eml", "broken_mime.eml", "binary_junk.eml")
    return [first, *reports, *(sample(name) for name in others)]


def test_an_imap_folder_is_processed_once_and_moved_out_of_the_way(
    tmp_path: Path, database_url: str
) -> None:
    sent = send_issue(tmp_path, database_url)
    with running_dovecot() as server:
        append(server, *every_kind(sent))
        before = sent.state()

        summary = process(sent, server.url)

        place = f"imap://{USER}:***@127.0.0.1:{server.port}"
        assert summary == (
            f"Read 8 messages from {place}/INBOX: 2 hard bounces, 0 soft bounces, 1 refused "
            "for policy (not counted against readers), 1 delayed, 1 complaint, 1 auto-reply, "
            f"2 unrecognised (kept aside in {place}/{UNRECOGNISED}), 0 unmatched, "
            "0 already processed."
        )
        after = sent.state()
        assert after["readers"] == before["readers"] | {  # type: ignore[operator]
            "ada@example.org": (1, [("relay-news", "bounced")]),
            "mary@example.org": (0, [("relay-news", "complained")]),
            "userx@its.example.nl": (1, [("relay-news", "bounced")]),
        }
        assert after["bounced_count"] == 1
        assert contents(server, "INBOX") == []
        assert len(contents(server, PROCESSED)) == 6
        kept = contents(server, UNRECOGNISED)
        assert len(kept) == 2
        for raw in kept:
            assert re.match(rb"X-Gazette-Reason: \S", raw), raw[:200]
            assert raw.count(b"X-Gazette-Reason") == 1

        # A second run finds nothing; every message copied back changes nothing either.
        assert process(sent, server.url).startswith(f"Read 0 messages from {place}/INBOX")
        append(server, *contents(server, PROCESSED), *kept)
        again = process(sent, server.url)
        assert "0 hard bounces, 0 soft bounces, 0 refused" in again
        assert again.endswith("0 unmatched, 6 already processed."), again
        assert sent.state() == after
        assert len(contents(server, PROCESSED)) == 12
        for raw in contents(server, UNRECOGNISED):
            assert raw.count(b"X-Gazette-Reason") == 1


def test_a_server_without_move_gets_copy_delete_and_expunge(
    tmp_path: Path, database_url: str
) -> None:
    sent = send_issue(tmp_path, database_url)
    with running_dovecot(capabilities="IMAP4rev1 LITERAL+ UIDPLUS") as server:
        other = sample("dsn_expired_447.eml", verp=sent.verp["grace@example.org"])
        append(server, sample("dsn_failed_511.eml", verp=sent.verp["linus@example.org"]), other)
        # The operator's own message, marked deleted: not read, and UID EXPUNGE keeps it.
        with imap(server) as client:
            client.append("INBOX", r"(\Deleted)", None, b"Subject: keep\r\n\r\nmine\r\n")
        assert "1 hard bounce, 1 soft bounce," in process(sent, server.url)
        assert [raw[:30] for raw in contents(server, "INBOX")] == [b"Subject: keep\r\n\r\nmine\r\n"]
        assert len(contents(server, PROCESSED)) == 2


def test_imaps_with_the_server_s_certificate_trusted(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = send_issue(tmp_path, database_url)
    with running_dovecot(secure=True) as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))
        url = server.url
        assert url.startswith("imaps://")
        empty = process(sent, url)
        assert empty.startswith(f"Read 0 messages from imaps://{USER}:***@127.0.0.1:")
        # Not trusted: refused, in one sentence.
        monkeypatch.delenv("SSL_CERT_FILE")
        monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
        code, _out, err = sent.gazette("bounces", "process", "--imap", url)
        assert code == 1
        assert err.startswith(f"gazette: Cannot reach imaps://{USER}:***@127.0.0.1:"), err
        assert "certificate" in err


@pytest.mark.parametrize(
    ("url", "code", "said"),
    [
        ("imaps://mail.example.org/INBOX", 2, "has no user name and password"),
        ("pop3://u:pw@mail.example.org/INBOX", 2, "is not an IMAP URL"),
        ("imaps://u:pw@mail.example.org:99999/INBOX", 2, "is not an IMAP URL"),
        ("imap://u:pw@mail.example.org/INBOX", 2, "would send the password in clear"),
        ("WRONG-PASSWORD", 1, "the server refused the user name or password"),
        ("CLOSED-PORT", 1, "Cannot reach"),
        ("MISSING-FOLDER", 1, "the server has no folder 'Bounces'"),
    ],
)
def test_a_wrong_url_or_server_is_one_sentence_with_the_password_masked(
    tmp_path: Path, database_url: str, url: str, code: int, said: str
) -> None:
    sent = send_issue(tmp_path, database_url)
    with running_dovecot() as server:
        if url == "WRONG-PASSWORD":
            url = server.url_for("INBOX", password="not-the-password")
        elif url == "CLOSED-PORT":
            url = server.url.replace(f":{server.port}/", f":{free_port()}/")
        elif url == "MISSING-FOLDER":
            url = server.url_for("Bounces")
        result = sent.site.gazette(sent.outbox, "bounces", "process", "--imap", url)
    assert result.returncode == code, result.stderr
    line = one_sentence(result)
    assert said in line, line
    assert "pw@" not in line
    assert PASSWORD not in line
    assert "not-the-password" not in line
