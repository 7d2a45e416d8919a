"""An issue whose hard-bounce rate passes the limit pauses its newsletter: real sends, the CLI.

`gazette digest send --now --wait` as a subprocess to a loopback relay answering
550 5.1.1 for two of twelve readers, batches of six and GAZETTE_PAUSE_MIN_SETTLED=5:
the first batch's results pause the newsletter in the transaction that records them,
the second batch claims nothing, the send exits 1 with the sentence, `digest status`
and `newsletters show` say it, and `gazette digest resume` sends the rest, which the
issue's old figures do not pause again. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gazette.store.models import DeliveryStatus, SubscriptionStatus
from tests.support.relays import (
    SLUG,
    Installation,
    Relay,
    make_installation,
    one_sentence,
    readers,
)
from tests.support.smtp import SMTPServer, by_recipient

READERS = tuple(f"r{n:02d}@example.org" for n in range(12))
DEAD = {READERS[0], READERS[3]}


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Installation:
    built = make_installation(tmp_path, database_url, READERS)
    built.settings = {"pause_min_settled": "5", "batch_size": "6"}
    return built


def _dead_at_rcpt(recipient: str, _count: int) -> str | None:
    return f"550 5.1.1 <{recipient}>: no such user" if recipient in DEAD else None


def test_a_hard_bounce_rate_past_the_limit_pauses_until_resumed(site: Installation) -> None:
    relay = Relay(rcpt_script=_dead_at_rcpt)
    with SMTPServer(relay) as server:
        result = site.send(server.url)
        sentence = (
            f"gazette: Sending of {SLUG} is paused: issue 1's hard-bounce rate 33.33% passed "
            f"5.00% over 6 settled messages. Nothing is planned or sent until "
            f"`gazette digest resume {SLUG}`."
        )
        # The log says it when it happens (the worker's log, here the command's stderr),
        # and the command ends with it, exit 1.
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines() == [sentence.removeprefix("gazette: "), sentence]
        assert "4 sent, 2 failed, 0 skipped, 6 pending" in result.stdout
        assert set(by_recipient(relay.messages)) == set(READERS[:6]) - DEAD

        status = site.gazette(server.url, "digest", "status", "--json")
        [issue] = json.loads(status.stdout)["issues"]
        assert issue["paused"] == sentence.removeprefix("gazette: ")
        assert issue["deliverability"] == {
            "settled": 6, "hard_bounces": 2, "soft_bounces": 0, "complaints": 0,
            "hard_bounce_rate": 0.333333, "soft_bounce_rate": 0.0, "complaint_rate": 0.0,
            "policy_refusals": {},
        }  # fmt: skip
        text = site.gazette(server.url, "digest", "status").stdout
        assert "Issue 1: hard bounces 33.33%, soft bounces 0.00%, complaints 0.00% of 6" in text
        assert sentence.removeprefix("gazette: ") in text
        shown = site.gazette(server.url, "newsletters", "show", SLUG).stdout
        assert sentence.removeprefix("gazette: ") in shown
        again = site.send(server.url)  # no new issue while paused
        assert one_sentence(again) == sentence

        resumed = site.gazette(server.url, "digest", "resume", SLUG)
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.startswith(f"Sending of {SLUG} resumed (it was paused: issue 1's")
        assert "Issue 1: 1 batch(es) enqueued." in resumed.stdout
        twice = site.gazette(server.url, "digest", "resume", SLUG)
        assert one_sentence(twice) == f"gazette: {SLUG} is not paused; there is nothing to resume."
    state = readers(site)
    for email in READERS:
        expected = (
            (SubscriptionStatus.BOUNCED, DeliveryStatus.FAILED) if email in DEAD
            else (SubscriptionStatus.ACTIVE, DeliveryStatus.SENT)
        )  # fmt: skip
        assert (state[email].subscription, state[email].delivery) == expected, email
    assert by_recipient(relay.messages) == dict.fromkeys(set(READERS) - DEAD, 1)
