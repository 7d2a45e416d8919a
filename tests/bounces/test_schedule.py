"""GAZETTE_BOUNCE_MAILBOX, beat's reading of it, the `gazette run` tick's, and retention.

The setting is checked at start like every other; beat's schedule has an entry for the
mailbox only when it is set, and its task reads it; the tick of `gazette run` reads it
every BOUNCE_INTERVAL of its injected clock. Kept messages past the retention are
deleted by a run, by the date they came (an injected clock; a file's date is set only
for a message that is to come on the clock's later day).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gazette.bounces.runs import BOUNCE_INTERVAL, read_mailbox, scheduled_reading
from gazette.bounces.sources import ImapURL, Mailbox
from gazette.config import load_settings
from gazette.errors import ConfigError
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.scheduler import InProcessSender, tick
from gazette.store.db import transaction
from gazette.store.models import Subscriber, SubscriptionStatus, utcnow
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.bounces.helpers import deliver, files, make_maildir, sample
from tests.support.cli import one_sentence
from tests.support.dovecot import append, contents, running_dovecot
from tests.support.env import TEST_KEY, installed_runtime, make_env
from tests.support.relays import make_installation
from worker.app import app, configure

READERS = ("ada@example.org", "grace@example.org", "linus@example.org")


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return make_maildir(tmp_path / "bounces")


@pytest.fixture
def installed(tmp_path: Path, database_url: str, maildir: Path) -> Iterator[Runtime]:
    """Three readers of one newsletter, the bounce mailbox set to ``maildir``."""
    with installed_runtime(tmp_path, database_url, bounce_mailbox=str(maildir)) as built:
        with transaction(built.sessions) as session:
            create_newsletter(session, "news", "News")
            for email in READERS:
                subscribe(session, email, "news", Origin("import"), confirmed=True)
        yield built


def status(runtime: Runtime, email: str) -> tuple[int, list[SubscriptionStatus]]:
    with runtime.sessions() as session:
        reader = session.scalars(select(Subscriber).where(Subscriber.email == email)).one()
        return reader.bounce_count, [s.status for s in reader.subscriptions]


def read_at(runtime: Runtime, mailbox: Mailbox, at: datetime) -> str:
    """One run over ``mailbox`` with the clock at ``at`` (30 days' retention); its line."""
    return read_mailbox(
        runtime.sessions, mailbox, secret_keys=[TEST_KEY], require_verp=False,
        retention_days=30, now=at,
    ).line()  # fmt: skip


def test_the_setting_is_a_maildir_or_an_imap_url_checked_at_start(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "box")
    env = make_env(tmp_path, f"sqlite:///{tmp_path / 'g.db'}")
    assert load_settings(env | {"GAZETTE_BOUNCE_MAILBOX": str(maildir)}).bounce_mailbox == maildir
    url = load_settings(
        env | {"GAZETTE_BOUNCE_MAILBOX": "imaps://b%40x:p%2Fw@mail.example.org/Bounces"}
    ).bounce_mailbox
    assert isinstance(url, ImapURL)
    assert (url.user, url.password, url.host, url.port, url.folder) == (
        "b@x", "p/w", "mail.example.org", 993, "Bounces",
    )  # fmt: skip
    assert "p/w" not in repr(url)
    assert load_settings(env).bounce_mailbox is None
    assert load_settings(env).bounce_retention_days == 30
    wrong = {
        str(tmp_path / "nowhere"): "is neither a Maildir",
        "imap://u:secret@mail.example.org/INBOX": "would send the password in clear",
        "imaps://mail.example.org/INBOX": "has no user name and password",
    }
    for raw, said in wrong.items():
        with pytest.raises(ConfigError, match=said) as error:
            load_settings(env | {"GAZETTE_BOUNCE_MAILBOX": raw})
        assert "GAZETTE_BOUNCE_MAILBOX" in str(error.value)
        assert "secret" not in str(error.value)
    with pytest.raises(ConfigError, match="BOUNCE_RETENTION_DAYS"):
        load_settings(env | {"GAZETTE_BOUNCE_RETENTION_DAYS": "0"})


def test_the_command_reads_the_setting_and_without_one_says_so(
    tmp_path: Path, database_url: str, maildir: Path
) -> None:
    site = make_installation(tmp_path, database_url, READERS)
    deliver(maildir, "1", sample("dsn_failed_511.eml", recipient="ada@example.org"))
    result = site.gazette("maildir:///nowhere", "bounces", "process")
    assert result.returncode == 2
    assert one_sentence(result) == (
        "gazette: Give --maildir PATH or --imap URL, or set GAZETTE_BOUNCE_MAILBOX: "
        "the bounce mailbox to read."
    )
    site.settings = {"bounce_mailbox": str(maildir)}
    result = site.gazette("maildir:///nowhere", "bounces", "process")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Read 1 message from {maildir}: 1 hard bounce,")
    assert files(maildir) == []


def test_beat_schedules_the_reading_only_when_a_mailbox_is_set(
    tmp_path: Path, installed: Runtime
) -> None:
    schedule = app.conf.beat_schedule
    assert schedule["process-bounces"] == {
        "task": "gazette.process_bounces",
        "schedule": BOUNCE_INTERVAL.total_seconds(),
    }
    assert timedelta(minutes=5) == BOUNCE_INTERVAL
    configure(load_settings(make_env(tmp_path, f"sqlite:///{tmp_path / 'g.db'}")))
    assert "process-bounces" not in app.conf.beat_schedule
    assert "sweep" in app.conf.beat_schedule
    configure(installed.settings)


def test_beat_s_task_reads_the_configured_mailbox(installed: Runtime, maildir: Path) -> None:
    from worker.tasks import process_bounces

    deliver(maildir, "1", sample("dsn_failed_511.eml", recipient="ada@example.org"))
    process_bounces.delay()  # in-process: no broker
    assert status(installed, "ada@example.org") == (1, [SubscriptionStatus.BOUNCED])
    assert files(maildir) == []
    assert len(files(maildir / ".processed")) == 1


def test_the_run_tick_reads_the_mailbox_every_interval_of_its_clock(
    installed: Runtime, maildir: Path
) -> None:
    reading = scheduled_reading(installed.sessions, installed.settings)
    assert reading is not None
    sender = InProcessSender(installed.sessions, installed.send_context, 500)
    start = datetime(2026, 12, 7, 9, 0, tzinfo=utcnow().tzinfo)
    deliver(maildir, "1", sample("dsn_failed_511.eml", recipient="ada@example.org"))

    first = tick(installed.sessions, sender, start, bounces=reading).summary()
    assert first is not None
    assert f"Read 1 message from {maildir}: 1 hard bounce" in first
    assert status(installed, "ada@example.org") == (1, [SubscriptionStatus.BOUNCED])

    deliver(maildir, "2", sample("dsn_expired_447.eml", recipient="grace@example.org"))
    soon = tick(installed.sessions, sender, start + BOUNCE_INTERVAL / 2, bounces=reading)
    assert soon.bounces is None
    assert len(files(maildir)) == 1
    later = tick(installed.sessions, sender, start + BOUNCE_INTERVAL, bounces=reading)
    assert later.bounces is not None
    assert "1 soft bounce" in later.bounces.line()
    assert status(installed, "grace@example.org") == (1, [SubscriptionStatus.ACTIVE])
    # Nothing read: nothing said.
    quiet = tick(installed.sessions, sender, start + 2 * BOUNCE_INTERVAL, bounces=reading)
    assert quiet.bounces is not None
    assert quiet.summary() is None


def test_a_mailbox_that_cannot_be_read_is_reported_and_the_tick_goes_on(
    installed: Runtime,
) -> None:
    settings = load_settings(
        make_env(Path(installed.settings.var_dir).parent, installed.settings.database_url)
        | {"GAZETTE_BOUNCE_MAILBOX": "imap://u:secret@127.0.0.1:1/INBOX"}
    )
    reading = scheduled_reading(installed.sessions, settings)
    assert reading is not None
    sender = InProcessSender(installed.sessions, installed.send_context, 500)
    report = tick(installed.sessions, sender, utcnow(), bounces=reading)
    [error] = report.errors
    assert error.startswith("bounces not read: Cannot reach imap://u:***@127.0.0.1:1/INBOX")
    assert "secret" not in str(report.summary())


def test_kept_messages_past_the_retention_are_deleted_from_a_maildir(
    installed: Runtime, maildir: Path
) -> None:
    deliver(maildir, "1", sample("dsn_failed_511.eml", recipient="ada@example.org"))
    deliver(maildir, "2", sample("broken_mime.eml"))
    now = utcnow()

    def run(at: datetime) -> str:
        return read_at(installed, maildir, at)

    assert "deleted" not in run(now)
    assert len(files(maildir / ".processed")) == len(files(maildir / ".unrecognised")) == 1
    assert "deleted" not in run(now + timedelta(days=29))
    later = now + timedelta(days=30, minutes=1)
    third = deliver(maildir, "3", sample("dsn_expired_447.eml", recipient="grace@example.org"))
    os.utime(third, (later.timestamp(), later.timestamp()))  # it came on the clock's day
    line = run(later)
    assert line.endswith("; 2 kept messages past the retention deleted."), line
    # The message that came in this run is kept its 30 days.
    assert [p.name.partition(":")[0] for p in files(maildir / ".processed")] == ["3"]
    assert files(maildir / ".unrecognised") == []


def test_kept_messages_past_the_retention_are_deleted_from_imap(installed: Runtime) -> None:
    with running_dovecot() as server:
        append(server, sample("dsn_failed_511.eml", recipient="ada@example.org"))
        append(server, sample("broken_mime.eml"))
        url = load_settings(
            make_env(Path(installed.settings.var_dir).parent, installed.settings.database_url)
            | {"GAZETTE_BOUNCE_MAILBOX": server.url}
        ).bounce_mailbox
        assert isinstance(url, ImapURL)
        now = utcnow()

        def run(at: datetime) -> str:
            return read_at(installed, url, at)

        assert "deleted" not in run(now)
        assert "deleted" not in run(now + timedelta(days=29))
        assert len(contents(server, "Gazette.Processed")) == 1
        assert len(contents(server, "Gazette.Unrecognised")) == 1
        line = run(now + timedelta(days=30, minutes=1))
        assert line.endswith("; 2 kept messages past the retention deleted."), line
        assert contents(server, "Gazette.Processed") == []
        assert contents(server, "Gazette.Unrecognised") == []
