"""Scenario: forged DSNs and complaints mailed to the bounce address change nobody.

A real issue goes out with VERP senders and GAZETTE_BOUNCE_REQUIRE_VERP=yes (the setting
for operators who worry about forged bounces). Then N reports, each about a real reader
and forged one way, are put in the bounce Maildir and read by the real `gazette bounces
process`: no token, a token signed with another key, a real token with characters
changed or cut, the token of a delivery that does not exist, a complaint or a soft
bounce without a token. No reader, subscription, suppression, event or issue count may
change (a report's key may be kept, so a copy of it is known: that is not an effect). A
genuine DSN for one reader, read afterwards, is the control. A real token under another
bounce domain is not tried: it is accepted on purpose (the bounce address may change
while messages are out), and only a server that received the message knows it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from gazette.mail.verp import Verp
from tests.bounces.helpers import BOUNCE, READERS, deliver, make_maildir, sample, send_issue
from tests.support.env import TEST_KEY
from tests.support.figures import record
from tests.support.reliability import scenario

pytestmark = pytest.mark.reliability
TRIES = 400
OTHER_KEY = "someone-elses-key-0123456789"
Forger = Callable[[str, str, int], bytes]  # (reader, their VERP address, n) -> a report


def _changed(address: str, rng: random.Random) -> str:
    """``address`` with one character of its token replaced by another of the alphabet."""
    local, _, domain = address.partition("@")
    base, _, token = local.rpartition("+")
    at = rng.randrange(len(token))
    swapped = rng.choice([c for c in "abcdefghijklmnopqrstuvwxyz234567" if c != token[at]])
    return f"{base}+{token[:at]}{swapped}{token[at + 1 :]}@{domain}"


def _cut(address: str) -> str:
    """``address`` with the last four characters of its token gone."""
    local, _, domain = address.partition("@")
    return f"{local[:-4]}@{domain}"


def _forgers(rng: random.Random) -> dict[str, Forger]:
    """One builder per forgery kind."""
    other = Verp(BOUNCE, [OTHER_KEY])
    mine = Verp(BOUNCE, [TEST_KEY])

    def dsn(verp: str, reader: str, n: int, name: str = "dsn_failed_511.eml") -> bytes:
        return sample(name, verp=verp, recipient=reader, n=n)

    return {
        "no token": lambda reader, _verp, n: dsn(BOUNCE, reader, n),
        "another key's token": lambda reader, verp, n: dsn(
            other.address(mine.delivery_for(verp) or 0), reader, n
        ),
        "token changed": lambda reader, verp, n: dsn(_changed(verp, rng), reader, n),
        "token cut short": lambda reader, verp, n: dsn(_cut(verp), reader, n),
        "no such delivery": lambda reader, _verp, n: dsn(mine.address(10**9 + n), reader, n),
        "complaint without a token": lambda reader, _verp, n: dsn(
            BOUNCE, reader, n, "arf_complaint.eml"
        ),
        "soft bounce without a token": lambda reader, _verp, n: dsn(
            BOUNCE, reader, n, "dsn_expired_447.eml"
        ),
    }


def test_forged_dsns_and_complaints_change_no_reader(tmp_path: Path, database_url: str) -> None:
    rng = random.Random(18)
    sent = send_issue(tmp_path, database_url, bounce_require_verp="yes")
    readers = [r for r in READERS if "@example.org" in r]
    forgers = _forgers(rng)
    maildir = make_maildir(tmp_path / "bounces")
    tried: Counter[str] = Counter()
    for n in range(1, TRIES + 1):
        kind = rng.choice(sorted(forgers))
        reader = rng.choice(readers)
        deliver(maildir, f"forged-{n}", forgers[kind](reader, sent.verp[reader], n))
        tried[kind] += 1
    before = sent.state()
    summary = sent.process(maildir)
    after = sent.state()
    changed = sorted(
        key for key in before if key not in ("events", "reports") and before[key] != after[key]
    )
    events_added = int(str(after["events"])) - int(str(before["events"]))
    keys_kept = int(str(after["reports"])) - int(str(before["reports"]))

    # The control: a genuine DSN, its real token, bounces its reader.
    control = "grace@example.org"
    deliver(maildir, "genuine", sample("dsn_failed_511.eml", verp=sent.verp[control], n=TRIES + 1))
    assert "1 hard bounce, " in sent.process(maildir)
    readers_after = sent.state()["readers"]
    assert isinstance(readers_after, dict)
    assert readers_after[control] == (1, [("relay-news", "bounced")])

    record(
        scenario("Forged DSNs", database_url),
        f"{TRIES:,} forged reports about real readers in the bounce Maildir, read by "
        "`gazette bounces process` with GAZETTE_BOUNCE_REQUIRE_VERP=yes: "
        + ", ".join(f"{count} {kind}" for kind, count in sorted(tried.items())),
        f"{len(changed)} change(s) to readers, subscriptions, suppressions or issue counts; "
        f"{events_added} event(s) written; {keys_kept} report key(s) kept as seen; "
        f"the run said: {summary.partition(': ')[2]}",
        "nothing changed; the genuine control bounced its reader",
    )
    assert changed == []
    assert events_added == 0
    assert keys_kept <= TRIES
    assert f"Read {TRIES} messages" in summary, summary
    assert "0 hard bounces, 0 soft bounces" in summary, summary
    assert "0 complaints" in summary, summary
