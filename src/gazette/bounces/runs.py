"""One run over the bounce mailbox, Maildir or IMAP: what the CLI, beat and `gazette run` call.

A run processes every waiting message (mailboxes, imap), then deletes the kept ones
older than the retention: a bounce quotes the original message, working unsubscribe
link included, so it is kept only as long as GAZETTE_BOUNCE_RETENTION_DAYS says.
Beat and the `gazette run` tick read the configured mailbox every BOUNCE_INTERVAL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from gazette.bounces.imap import PROCESSED, UNRECOGNISED, open_mailbox, process_imap
from gazette.bounces.mailboxes import Summary, check_maildir, expire_maildir, process_maildir
from gazette.bounces.mailboxes import waiting as maildir_waiting
from gazette.bounces.policy import Effect
from gazette.bounces.sources import ImapURL, Mailbox
from gazette.config import Settings
from gazette.deliverability_settings import Deliverability
from gazette.subscribers.bounces import DEFAULT_RULES

# How often beat and the `gazette run` tick read the configured mailbox.
BOUNCE_INTERVAL = timedelta(minutes=5)
# The CLI's progress bar: (total, label) -> a callback taking the number done.
Progress = Callable[[int, str], AbstractContextManager[Callable[[int], None]]]


@dataclass(frozen=True)
class Run:
    """What one run did: where it read, the messages' summary, old kept ones deleted."""

    where: str
    summary: Summary
    expired: int = 0

    def line(self) -> str:
        """``Read 3 messages from PLACE: 1 hard bounce, ...`` (and what retention deleted)."""
        line = f"Read {count(self.summary.read, 'message')} from {self.where}: "
        line += describe(self.summary)
        if self.expired:
            line += f"; {count(self.expired, 'kept message')} past the retention deleted"
        return line + "."


def read_mailbox(
    sessions: sessionmaker[Session],
    mailbox: Mailbox,
    *,
    secret_keys: Sequence[str],
    require_verp: bool,
    retention_days: int,
    now: datetime,
    progress: Progress | None = None,
    rules: Deliverability = DEFAULT_RULES,
) -> Run:
    """Process every message waiting in ``mailbox``, then expire the kept ones."""
    before = now - timedelta(days=retention_days)
    if isinstance(mailbox, ImapURL):
        with open_mailbox(mailbox) as box:
            uids = box.waiting()
            with _progress(progress, len(uids), mailbox.folder) as advance:
                summary = process_imap(
                    sessions, box, uids, secret_keys=secret_keys,
                    require_verp=require_verp, progress=advance, rules=rules,
                )  # fmt: skip
            expired = sum(
                box.expire(box.folder(parts), before) for parts in (PROCESSED, UNRECOGNISED)
            )
        return Run(mailbox.masked, summary, expired)
    maildir = check_maildir(Path(mailbox))
    with _progress(progress, len(maildir_waiting(maildir)), maildir.name) as advance:
        summary = process_maildir(
            sessions, maildir, secret_keys=secret_keys, require_verp=require_verp,
            progress=advance, rules=rules,
        )  # fmt: skip
    return Run(str(maildir), summary, expire_maildir(maildir, before))


@dataclass
class ScheduledReading:
    """Reads the configured mailbox when BOUNCE_INTERVAL has passed since the last time."""

    sessions: sessionmaker[Session]
    mailbox: Mailbox
    secret_keys: Sequence[str]
    require_verp: bool
    retention_days: int
    rules: Deliverability = DEFAULT_RULES
    last: datetime | None = None

    def __call__(self, now: datetime) -> Run | None:
        """The run, when one was due; None when the last was under BOUNCE_INTERVAL ago."""
        if self.last is not None and now - self.last < BOUNCE_INTERVAL:
            return None
        self.last = now
        return read_mailbox(
            self.sessions, self.mailbox, secret_keys=self.secret_keys,
            require_verp=self.require_verp, retention_days=self.retention_days, now=now,
            rules=self.rules,
        )  # fmt: skip


def scheduled_reading(
    sessions: sessionmaker[Session], settings: Settings
) -> ScheduledReading | None:
    """The reading `gazette run`'s tick does, or None when GAZETTE_BOUNCE_MAILBOX is unset."""
    if settings.bounce_mailbox is None:
        return None
    return ScheduledReading(
        sessions, settings.bounce_mailbox, settings.secret_keys,
        settings.bounce_require_verp, settings.bounce_retention_days, settings.deliverability,
    )  # fmt: skip


def read_configured(
    sessions: sessionmaker[Session], settings: Settings, now: datetime
) -> Run | None:
    """Read GAZETTE_BOUNCE_MAILBOX once (beat's task); None when it is unset."""
    reading = scheduled_reading(sessions, settings)
    return None if reading is None else reading(now)


def describe(summary: Summary) -> str:
    """The run's counts in one line, every kind named even when none came."""
    effects = summary.effects
    parts = [
        count(effects[Effect.HARD], "hard bounce"),
        count(effects[Effect.SOFT], "soft bounce"),
        f"{effects[Effect.NOT_THE_READER]} refused for policy (not counted against readers)",
        f"{effects[Effect.DELAYED]} delayed",
        count(effects[Effect.COMPLAINT], "complaint"),
        count(effects[Effect.AUTO_REPLY], "auto-reply", "auto-replies"),
        f"{summary.unrecognised} unrecognised"
        + (f" (kept aside in {summary.kept_aside})" if summary.unrecognised else ""),
        f"{summary.unmatched} unmatched",
        f"{summary.duplicates} already processed",
    ]
    return ", ".join(parts)


def count(number: int, one: str, many: str | None = None) -> str:
    """``1 message``, ``2 messages``."""
    return f"{number} {one if number == 1 else many or one + 's'}"


class _Nothing(AbstractContextManager[Callable[[int], None]]):
    """No progress bar: a callback that does nothing."""

    def __enter__(self) -> Callable[[int], None]:
        return lambda _done: None

    def __exit__(self, *_exc: object) -> None:
        return None


def _progress(
    progress: Progress | None, total: int, label: str
) -> AbstractContextManager[Callable[[int], None]]:
    return _Nothing() if progress is None else progress(total, f"Reading {label}")
