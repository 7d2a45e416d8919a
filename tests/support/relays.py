"""A relay that refuses, and an installation whose sends the CLI runs against it.

The relay errors and the side-door scenarios send through `gazette send` in a subprocess
to scripted aiosmtpd relays, then read each reader's state from the database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import func, select

from gazette.articles.service import ArticleInput, upsert_article
from gazette.config import load_settings
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime, build_runtime
from gazette.store import migrate
from gazette.store.db import transaction
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Event,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.support.env import in_use, make_env
from tests.support.smtp import MailCountingHandler, SMTPServer

SLUG = "relay-news"
READERS = ("ada@example.org", "grace@example.org", "linus@example.org")
USER = "gazette"
PASSWORD = "right-password"


@dataclass
class Relay(MailCountingHandler):
    """MailCountingHandler that also logs every login attempt."""

    # One entry per AUTH the relay answered: (id of the SMTP session, accepted).
    logins: list[tuple[int, bool]] = field(default_factory=list)

    def authenticate(
        self, _server: Any, session: Any, _envelope: Any, _mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data == (USER.encode(), PASSWORD.encode())
        with self.lock:
            self.logins.append((id(session), ok))
        return AuthResult(success=ok, handled=False)

    @property
    def login_sessions(self) -> int:
        """How many SMTP sessions tried to log in."""
        return len({session for session, _ok in self.logins})


class AuthRelay(SMTPServer):
    """aiosmtpd offering AUTH over plain loopback (no TLS to set up in a test)."""

    def __init__(self, handler: Relay) -> None:
        super().__init__(handler, authenticator=handler.authenticate, auth_require_tls=False)


@dataclass
class Installation:
    folder: Path
    database_url: str
    # Further settings for every command, as make_env takes them (bounce_address=...).
    settings: dict[str, str] = field(default_factory=dict)

    def env(self, smtp_url: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
        return base | make_env(self.folder, self.database_url, smtp_url=smtp_url, **self.settings)

    def gazette(self, smtp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gazette", *args], cwd=self.folder,
            env=self.env(smtp_url), capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def send(self, smtp_url: str) -> subprocess.CompletedProcess[str]:
        return self.gazette(smtp_url, "digest", "send", SLUG, "--now", "--wait")

    @contextmanager
    def runtime(self, smtp_url: str) -> Iterator[Runtime]:
        """This installation's runtime in the test process, installed for the tasks."""
        settings = load_settings(
            make_env(self.folder, self.database_url, smtp_url=smtp_url, **self.settings)
        )
        built = build_runtime(settings)
        try:
            with in_use(built):
                yield built
        finally:
            built.engine.dispose()


def make_installation(tmp_path: Path, database_url: str, emails: Sequence[str]) -> Installation:
    """A migrated database with a newsletter, two fresh articles and ``emails`` as readers."""
    settings = load_settings(make_env(tmp_path, database_url), cwd=tmp_path)
    built = build_runtime(settings)
    migrate.upgrade(built.engine)
    with transaction(built.sessions) as session:
        create_newsletter(session, SLUG, "Relay News")
        for n in range(2):
            upsert_article(
                session,
                ArticleInput(
                    title=f"Article {n}", url=f"https://blog.example.com/{n}",
                    published_at=utcnow() - timedelta(hours=n + 1),
                ),
            )  # fmt: skip
        for email in emails:
            subscribe(session, email, SLUG, Origin("import"), confirmed=True)
    built.engine.dispose()
    return Installation(tmp_path, database_url)


@dataclass(frozen=True)
class ReaderState:
    subscription: SubscriptionStatus
    bounce_count: int
    delivery: DeliveryStatus
    last_error: str | None
    retry_later: bool


def readers(site: Installation) -> dict[str, ReaderState]:
    """Each reader's subscription, bounce count and ledger row of the latest issue."""
    with site.runtime("maildir:///nowhere") as runtime, runtime.sessions() as session:
        rows = session.execute(
            select(
                Subscriber.email, Subscription.status, Subscriber.bounce_count, Delivery.status,
                Delivery.last_error, Delivery.next_attempt_at,
            )
            .join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
        ).all()  # fmt: skip
    return {
        email: ReaderState(sub, count, status, error, at is not None and at > utcnow())
        for email, sub, count, status, error, at in rows
    }


def bounce_events(site: Installation) -> int:
    with site.runtime("maildir:///nowhere") as runtime, runtime.sessions() as session:
        return session.scalar(
            select(func.count()).select_from(Event).where(Event.kind.in_(["bounce", "suppressed"]))
        ) or 0  # fmt: skip


def one_sentence(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr, with no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]
