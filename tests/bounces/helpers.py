"""The bounce samples (tests/bounces/samples), filled in for a test, and Maildirs to hold them.

Also an issue sent with VERP senders through a loopback relay (``send_issue``), whose
readers the reports are about.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import func, select

from gazette.store.models import BounceReport, Event, Issue, Subscriber, Suppression
from tests.support.relays import Installation, make_installation
from tests.support.smtp import RecordingHandler, SMTPServer

SAMPLES = Path(__file__).parent / "samples"
BOUNCE = "bounces@bounce.example.org"
# What the samples are addressed to when a test does not say: the plain bounce address.
PLAIN = BOUNCE


def sample(
    name: str, *, verp: str = PLAIN, recipient: str = "ada@example.org", n: int = 0
) -> bytes:
    """Sample ``name`` mailed to ``verp`` about ``recipient``; ``n``: a Message-ID of its own."""
    raw = (SAMPLES / name).read_bytes()
    raw = raw.replace(b"@@VERP@@", verp.encode()).replace(b"@@RECIPIENT@@", recipient.encode())
    if n:
        raw = raw.replace(b"Message-Id: <", f"Message-Id: <copy{n}.".encode(), 1)
        raw = raw.replace(b"Message-ID: <", f"Message-ID: <copy{n}.".encode(), 1)
    return raw


def make_maildir(path: Path) -> Path:
    """An empty Maildir at ``path``."""
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def deliver(maildir: Path, name: str, raw: bytes, *, seen: bool = False) -> Path:
    """Put a message into the Maildir as a delivery agent would (new/, or cur/ once read)."""
    target = maildir / ("cur" if seen else "new") / (f"{name}:2,S" if seen else name)
    staged = maildir / "tmp" / name
    staged.write_bytes(raw)
    staged.rename(target)
    return target


def files(folder: Path) -> list[Path]:
    """The messages in a Maildir folder's new/ and cur/."""
    return sorted(
        p for sub in ("new", "cur") if (folder / sub).is_dir() for p in (folder / sub).iterdir()
    )


FORWARDED = "ada.forwarded@elsewhere.example"
# Readers of the issue; the last two are the addresses of flufl.bounce's samples.
READERS = (
    "ada@example.org", "grace@example.org", "linus@example.org", "mary@example.org",
    "joan@example.org", "xxxxx@local.ie", "userx@its.example.nl",
)  # fmt: skip


@dataclass
class Sent:
    """An installation that sent one issue, and the envelope sender each reader's message had."""

    site: Installation
    verp: dict[str, str]
    outbox: str

    def gazette(self, *args: str) -> tuple[int, str, str]:
        result = self.site.gazette(self.outbox, *args)
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, result.stdout, result.stderr

    def process(self, maildir: Path) -> str:
        code, out, err = self.gazette("bounces", "process", "--maildir", str(maildir))
        assert code == 0, err
        assert err == ""
        return out.strip()

    def state(self) -> dict[str, object]:
        """Everything a report may change: readers, events, suppressions, the issue's count."""
        with self.site.runtime(self.outbox) as runtime, runtime.sessions() as session:
            readers = {
                s.email: (
                    s.bounce_count,
                    sorted((sub.newsletter.slug, sub.status.value) for sub in s.subscriptions),
                )
                for s in session.scalars(select(Subscriber))
            }
            return {
                "readers": readers,
                "events": session.scalar(select(func.count()).select_from(Event)),
                "suppressions": sorted(session.scalars(select(Suppression.reason))),
                "bounced_count": session.scalar(select(func.sum(Issue.bounced_count))),
                "reports": session.scalar(select(func.count()).select_from(BounceReport)),
            }


def send_issue(tmp_path: Path, database_url: str, **settings: str) -> Sent:
    site = replace(
        make_installation(tmp_path, database_url, READERS),
        settings={"bounce_address": BOUNCE, **settings},
    )
    with SMTPServer(RecordingHandler()) as server:
        result = site.send(server.url)
        assert result.returncode == 0, result.stderr
    verp = {received.recipients[0]: received.sender for received in server.messages}
    assert set(verp) == set(READERS)
    return Sent(site, verp, f"maildir://{tmp_path / 'outbox'}")


def status_of(sent: Sent, email: str) -> tuple[int, list[tuple[str, str]]]:
    readers = sent.state()["readers"]
    assert isinstance(readers, dict)
    found = readers[email]
    assert isinstance(found, tuple)
    return found
