"""Honest outcomes of a send: counts, the reasons grouped, a non-zero exit, and a retry.

The real command line (`gazette digest send --now --wait`, `digest status`, `digest
retry` as subprocesses, the send running in-process without a broker) against a real
aiosmtpd relay on loopback, on SQLite and PostgreSQL. A relay that refuses
connections makes the send exit 1 with "refused" and "3 waiting to retry: ..."; the
status shows that group; once the relay listens, `digest retry ISSUE --wait` sends
each waiting reader exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gazette.digests.ledger import error_reason
from gazette.digests.planning import plan_issue
from gazette.newsletters.service import newsletter_by_slug
from gazette.store.db import transaction
from gazette.store.models import Delivery, DeliveryStatus, utcnow
from tests.support.relays import READERS, SLUG, Installation, make_installation, one_sentence
from tests.support.smtp import RecordingHandler, SMTPServer, by_recipient, message_ids

POLICY = "550 5.7.1 <{}>: Recipient address rejected: Access denied"
NOWHERE = "maildir:///nowhere"  # for commands that send nothing


class Site(Installation):
    """The relay tests' installation, plus what these tests read back."""

    def status_json(self, issue: int) -> dict[str, Any]:
        """The one issue `digest status ISSUE --json` prints."""
        result = self.gazette(NOWHERE, "digest", "status", str(issue), "--json")
        assert result.returncode == 0, result.stderr
        [row] = json.loads(result.stdout)["issues"]
        assert isinstance(row, dict)
        return row

    def ledger(self) -> list[tuple[str, int, str | None]]:
        """Every delivery row as (status, attempts, last_error), in id order."""
        with self.runtime(NOWHERE) as rt, rt.sessions() as session:
            rows = session.execute(
                select(Delivery.status, Delivery.attempts, Delivery.last_error).order_by(
                    Delivery.id
                )
            ).all()
        return [(status.value, attempts, error) for status, attempts, error in rows]


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Site:
    """A newsletter with two fresh articles and three confirmed readers."""
    make_installation(tmp_path, database_url, READERS)
    return Site(tmp_path, database_url)


def refuse(addresses: Sequence[str], reply: str) -> Any:
    """A RCPT script giving ``reply`` (with the reader's address) to each of ``addresses``."""
    return lambda recipient, _count: reply.format(recipient) if recipient in addresses else None


# --- a relay refusing connections, then back -------------------------------------------


def test_a_refused_connection_exits_non_zero_grouped_and_retry_sends_each_once(
    site: Site,
) -> None:
    handler = RecordingHandler()
    relay = SMTPServer(handler)  # its port is chosen, and nothing listens on it yet

    down = site.send(relay.url)
    line = one_sentence(down)
    assert "refused" in line.lower()
    print(down.stdout + down.stderr)
    stdout = down.stdout.splitlines()
    assert "Issue 1: 0 sent, 0 failed, 0 skipped, 3 pending." in stdout
    [grouped] = [text for text in stdout if "waiting to retry" in text]
    assert grouped.startswith("3 waiting to retry: connection failed: ")
    assert "Connection refused" in grouped
    reason = grouped.removeprefix("3 waiting to retry: ")

    assert site.status_json(1)["errors"] == [{"reason": reason, "status": "pending", "count": 3}]
    table = site.gazette(NOWHERE, "digest", "status")
    assert table.returncode == 0, table.stderr
    assert f"Issue 1: 3 waiting to retry: {reason}" in table.stdout.splitlines()

    with relay:
        again = site.gazette(relay.url, "digest", "retry", "1", "--wait")
        print(again.stdout + again.stderr)
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines() == [
            "Issue 1: 3 waiting deliveries are due now; 1 batch(es) enqueued.",
            "Issue 1: 3 sent, 0 failed, 0 skipped, 0 pending.",
        ]
        # Each waiting reader got the issue exactly once.
        assert by_recipient(handler.messages) == dict.fromkeys(READERS, 1)
        assert set(message_ids(handler.messages).values()) == {1}

        finished = one_sentence(site.gazette(relay.url, "digest", "retry", "1"))
        assert finished == "gazette: Issue 1 is finished (sent); nothing of it is left to retry."
    assert len(handler.messages) == 3
    assert site.status_json(1)["errors"] == []
    assert [status for status, _n, _error in site.ledger()] == ["sent"] * 3


# --- refusals about readers: grouped by reason, not by reader --------------------------


def test_a_policy_refusal_of_some_readers_is_one_group_in_status(site: Site) -> None:
    handler = RecordingHandler(rcpt_script=refuse(READERS[1:], POLICY))
    with SMTPServer(handler) as relay:
        result = site.send(relay.url)
    print(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr
    reason = "550 5.7.1 <reader>: Recipient address rejected: Access denied"
    assert result.stdout.splitlines()[-2:] == [
        "Issue 1: 1 sent, 2 failed, 0 skipped, 0 pending.",
        f"2 failed: {reason}",
    ]
    assert site.status_json(1)["errors"] == [{"reason": reason, "status": "failed", "count": 2}]
    # The ledger keeps each reader's own words; only the grouping leaves the address out.
    assert [error for _s, _n, error in site.ledger()][1:] == [
        POLICY.format(READERS[1]), POLICY.format(READERS[2]),
    ]  # fmt: skip


def test_deferrals_and_refusals_are_separate_groups_and_nothing_sent_exits_one(
    site: Site,
) -> None:
    deferral = "451 4.7.1 <{}>: greylisted, try again later"
    script = refuse(READERS[:2], deferral)
    handler = RecordingHandler(
        rcpt_script=lambda rcpt, n: script(rcpt, n) or refuse(READERS[2:], POLICY)(rcpt, n)
    )
    with SMTPServer(handler) as relay:
        result = site.send(relay.url)
    print(result.stdout + result.stderr)
    line = one_sentence(result)
    waiting = "2 waiting to retry: 451 4.7.1 <reader>: greylisted, try again later"
    assert line == (
        f"gazette: Nothing of issue 1 could be sent ({waiting}); "
        "`gazette digest retry 1` sends what waits."
    )
    assert result.stdout.splitlines()[-3:] == [
        "Issue 1: 0 sent, 1 failed, 0 skipped, 2 pending.",
        waiting,
        "1 failed: 550 5.7.1 <reader>: Recipient address rejected: Access denied",
    ]
    assert site.status_json(1)["errors"] == [
        {"reason": "451 4.7.1 <reader>: greylisted, try again later", "status": "pending",
         "count": 2},
        {"reason": "550 5.7.1 <reader>: Recipient address rejected: Access denied",
         "status": "failed", "count": 1},
    ]  # fmt: skip
    assert handler.messages == []


# --- retry refuses what it cannot do, in one sentence, writing nothing -----------------


def test_retry_of_an_unknown_issue_or_one_with_nothing_waiting_is_one_sentence(
    site: Site,
) -> None:
    unknown = one_sentence(site.gazette(NOWHERE, "digest", "retry", "999"))
    assert unknown == "gazette: There is no issue 999; `gazette digest status` lists them."

    # An issue planned but never tried: pending, yet nothing waits for a retry.
    with site.runtime(NOWHERE) as rt, transaction(rt.sessions) as session:
        newsletter_id = newsletter_by_slug(session, SLUG).id
        issue_id = plan_issue(session, newsletter_id, utcnow(), "extra-test").issue_id
    before = site.ledger()
    nothing = one_sentence(site.gazette(NOWHERE, "digest", "retry", str(issue_id), "--wait"))
    assert nothing == (
        f"gazette: Issue {issue_id} has no delivery waiting for a retry; "
        f"`gazette digest status {issue_id}` shows where it is."
    )
    assert site.ledger() == before
    assert {status for status, _n, _e in before} == {DeliveryStatus.PENDING.value}


@pytest.mark.parametrize(
    ("last_error", "reason"),
    [
        (
            "550 5.7.1 <grace@example.org>: Recipient address rejected: Access denied",
            "550 5.7.1 <reader>: Recipient address rejected: Access denied",
        ),
        ("452 4.2.2 ada@example.org: over quota", "452 4.2.2 <reader>: over quota"),
        ("550 no such user grace@example.org.", "550 no such user <reader>."),
        # A refusal of the session is the same for every row: kept whole, sender and all.
        (
            "sender refused: 554 5.7.1 <digest@news.example.org>: Sender address rejected",
            "sender refused: 554 5.7.1 <digest@news.example.org>: Sender address rejected",
        ),
        (
            "connection failed: [Errno 111]\n  Connection refused",
            "connection failed: [Errno 111] Connection refused",
        ),
    ],
)
def test_error_reason_leaves_the_reader_out(last_error: str, reason: str) -> None:
    assert error_reason(last_error) == reason
