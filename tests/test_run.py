"""`gazette run`: the web endpoint and the scheduler in one process, without Redis.

Each test runs the real command as a subprocess on a SQLite installation, with a real
SMTP server (aiosmtpd) on loopback as the relay, and reads the ledger behind it. Waits
are bounded polls, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gazette.articles.service import ArticleInput, upsert_article
from gazette.config import load_settings
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime, build_runtime
from gazette.scheduler import InProcessSender, tick
from gazette.store import migrate
from gazette.store.db import make_engine, transaction
from gazette.store.models import Delivery, DeliveryStatus, Issue, IssueStatus, Subscriber, utcnow
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.support.cli import healthy
from tests.support.env import make_env
from tests.support.smtp import RecordingHandler, SMTPServer, by_recipient, free_port
from tests.support.workers import wait_for

GAZETTE = [sys.executable, "-m", "gazette"]
SLUG = "minutely"


def seed(session: Session, readers: int, *, article: bool = True) -> list[str]:
    """A newsletter scheduled every minute, confirmed readers, and one new article."""
    create_newsletter(session, SLUG, "Every Minute", cron="* * * * *")
    if article:
        upsert_article(
            session,
            ArticleInput(
                title="The one article",
                url="https://example.org/a/1",
                published_at=utcnow() - timedelta(hours=1),
                summary="<p>Summary.</p>",
            ),
        )
    emails = [f"reader{n:04d}@example.org" for n in range(readers)]
    for email in emails:
        subscribe(session, email, SLUG, Origin("cli"), confirmed=True)
    return emails


class Installation:
    """A SQLite installation in a folder, its relay, and `gazette run` started on it."""

    def __init__(self, folder: Path, smtp: SMTPServer, **settings: str) -> None:
        self.folder = folder
        self.database_url = f"sqlite:///{folder / 'gazette.db'}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
        self.env.update(make_env(folder, self.database_url, smtp_url=smtp.url, **settings))
        self.engine = make_engine(self.database_url)
        self.starts = 0

    def seed(self, readers: int, *, article: bool = True) -> list[str]:
        """Schema, a newsletter scheduled every minute, confirmed readers, one new article."""
        runtime = build_runtime(load_settings(self.env, cwd=self.folder))
        try:
            migrate.upgrade(runtime.engine)
            with transaction(runtime.sessions) as session:
                emails = seed(session, readers, article=article)
        finally:
            runtime.engine.dispose()
        return emails

    @contextmanager
    def running(self, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
        """`gazette run` on a free port, answering /healthz; killed if still alive at the end."""
        self.starts += 1
        port = free_port()
        with (
            (self.folder / f"out{self.starts}.log").open("w") as out,
            (self.folder / f"err{self.starts}.log").open("w") as err,
        ):
            process = subprocess.Popen(
                [*GAZETTE, "run", "--port", str(port), *args],
                env=self.env, cwd=self.folder, stdout=out, stderr=err,
            )  # fmt: skip
        try:
            wait_for(lambda: healthy(port) or process.poll() is not None, 60, "/healthz")
            assert process.poll() is None, self.logs()
            yield process, port
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)

    def cli(self, *args: str) -> None:
        """Run one `gazette` command on the installation; it must succeed."""
        result = subprocess.run(
            [*GAZETTE, *args], env=self.env, cwd=self.folder, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    def logs(self) -> str:
        """Both logs of the latest start, for an assertion's message."""
        out = (self.folder / f"out{self.starts}.log").read_text()
        err = (self.folder / f"err{self.starts}.log").read_text()
        return f"stdout:\n{out}\nstderr:\n{err}"

    def output(self) -> str:
        return (self.folder / f"out{self.starts}.log").read_text()

    def ledger(self) -> dict[str, int]:
        """The deliveries by status, read from the database."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(Delivery.status, func.count()).group_by(Delivery.status)
            ).all()
        return {status.value: count for status, count in rows}

    def sent_to(self) -> set[str]:
        """The addresses whose delivery the ledger records as sent."""
        with Session(self.engine) as session:
            return set(
                session.scalars(
                    select(Subscriber.email)
                    .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                    .where(Delivery.status == DeliveryStatus.SENT)
                )
            )

    def issues(self) -> dict[int, tuple[IssueStatus, int]]:
        """Each issue's status and recorded sent count."""
        with Session(self.engine) as session:
            rows = session.execute(select(Issue.id, Issue.status, Issue.sent_count)).all()
        return {issue_id: (status, sent) for issue_id, status, sent in rows}

    def statuses(self) -> list[IssueStatus]:
        """Each issue's status, in the order they were planned."""
        with Session(self.engine) as session:
            return list(session.scalars(select(Issue.status).order_by(Issue.id)))

    def close(self) -> None:
        self.engine.dispose()


class SlowHandler(RecordingHandler):
    """Accepts each message after ``delay`` seconds, without blocking the server's loop."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


class HoldingHandler(RecordingHandler):
    """Holds the ``hold_at``-th DATA unanswered until released, then defers it (451).

    The message being sent when the sender is killed: its 250 never reached the sender,
    so it is not counted as received; the restarted process sends it again.
    """

    def __init__(self, hold_at: int) -> None:
        super().__init__()
        self.hold_at = hold_at
        self.held = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.held.is_set() and self.data_count + 1 == self.hold_at:
            self.data_count += 1
            self.held.set()
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return "451 4.3.0 Try again later"
        return await super().handle_DATA(server, session, envelope)


@contextmanager
def installation(folder: Path, smtp: SMTPServer, **settings: str) -> Iterator[Installation]:
    site = Installation(folder, smtp, **settings)
    try:
        yield site
    finally:
        site.close()


@pytest.mark.slow
def test_without_redis_it_serves_and_sends_the_next_scheduled_issue_on_its_own(
    tmp_path: Path,
) -> None:
    # Ticks every 5 s (GAZETTE_BEAT_INTERVAL, --tick's default); the newsletter is due
    # every minute, so an article added while it runs goes out at a minute to come.
    with (
        SMTPServer(RecordingHandler()) as smtp,
        installation(tmp_path, smtp, beat_interval="5") as site,
    ):
        assert "GAZETTE_BROKER_URL" not in site.env
        readers = site.seed(5, article=False)
        with site.running() as (process, port):
            # The first tick, at start: this minute's issue, with nothing to carry.
            wait_for(lambda: "skipped: 0 new article(s)" in site.output(), 30, "a first tick")
            site.cli("articles", "add", "--title", "Fresh", "--url", "https://example.org/fresh")
            added = time.monotonic()
            wait_for(lambda: len(smtp.messages) == 5, 120, "the issue at the sink")
            took = time.monotonic() - added
            assert healthy(port)
            wait_for(lambda: site.ledger() == {"sent": 5}, 30, "the ledger to settle")
            wait_for(lambda: IssueStatus.SENT in site.statuses(), 30, "the issue to finish")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, site.logs()
        assert took < 120
        received = by_recipient(smtp.messages)
        assert sorted(received) == readers
        assert set(received.values()) == {1}
        # The minutes before the article had nothing to send; one issue carried it.
        statuses = site.statuses()
        assert statuses.count(IssueStatus.SENT) == 1, statuses
        assert set(statuses) == {IssueStatus.SKIPPED, IssueStatus.SENT}, statuses
        out = site.output().splitlines()
        assert out[0].startswith("Running https://news.example.org on http://127.0.0.1:"), out
        assert out[0].endswith("the scheduler ticks every 5 s and sends in this process.")
        ticks = [line for line in out if " tick: " in line]
        assert any(f"of {SLUG} planned: 1 article(s), 5 reader(s)" in t for t in ticks), out
        assert any("sent 5, 0 to retry, 0 failed, 0 skipped" in t for t in ticks), out
        assert out[-1] == "Stopped."
        assert "Traceback" not in site.logs()


@pytest.mark.slow
def test_a_process_killed_mid_send_is_finished_by_the_next_start(tmp_path: Path) -> None:
    # Batches of 100: the kill lands in the first, at its 51st message, once the first
    # recording chunk (50 messages) is in the ledger, so the sink's count is exact.
    holding = HoldingHandler(hold_at=51)
    with (
        SMTPServer(holding) as smtp,
        installation(tmp_path, smtp, batch_size="100", lease_seconds="10") as site,
    ):
        readers = site.seed(150)
        with site.running("--tick", "1") as (process, _port):
            wait_for(holding.held.is_set, 60, "the 51st message to reach the sink")
            wait_for(lambda: site.ledger().get("sent") == 50, 30, "the first chunk recorded")
            process.kill()
            assert process.wait(timeout=30) == -signal.SIGKILL
        holding.release.set()
        # Killed mid-batch: the rest of its batch is claimed (leased), the next batch pending.
        assert site.ledger() == {"sent": 50, "sending": 50, "pending": 50}
        assert len(smtp.messages) == 50

        restarted = time.monotonic()
        with site.running("--tick", "1") as (process, _port):
            wait_for(lambda: site.ledger() == {"sent": 150}, 90, "the restart to send the rest")
            took = time.monotonic() - restarted
            wait_for(lambda: site.issues()[1] == (IssueStatus.SENT, 150), 30, "the issue to finish")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, site.logs()
        received = by_recipient(smtp.messages)
        assert sorted(received) == readers
        assert set(received.values()) == {1}, [a for a, n in received.items() if n > 1]
        assert site.sent_to() == set(readers)
        # The leased rows waited for their lease (10 s) to expire, not longer.
        assert took < 60
        assert "expired lease(s) returned to pending" in site.output(), site.logs()


def test_with_a_broker_it_refuses_and_names_the_three_processes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
    env.update(
        make_env(
            tmp_path, f"sqlite:///{tmp_path / 'gazette.db'}", broker_url="redis://127.0.0.1:1/0"
        )
    )
    result = subprocess.run(
        [*GAZETTE, "run", "--port", str(free_port())],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        "gazette: GAZETTE_BROKER_URL is set, and `gazette run` sends in its own process: "
        "with a broker, run `gazette serve`, `gazette worker` and `gazette beat` instead."
    )
    assert not (tmp_path / "gazette.db").exists()


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_worker_and_beat_without_a_broker_point_to_run(tmp_path: Path, command: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
    env.update(make_env(tmp_path, f"sqlite:///{tmp_path / 'gazette.db'}"))
    upgrade = [*GAZETTE, "db", "upgrade"]
    subprocess.run(upgrade, env=env, cwd=tmp_path, check=True, capture_output=True, timeout=60)
    result = subprocess.run(
        [*GAZETTE, command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gazette: GAZETTE_BROKER_URL is not set: without a broker there is nothing for a "
        "worker or beat to do; `gazette run` serves, schedules and sends in one process."
    ]


@pytest.mark.slow
def test_sigterm_mid_send_finishes_the_batch_exits_0_and_the_next_start_resumes(
    tmp_path: Path,
) -> None:
    # A relay taking 50 ms a message and batches of 20: SIGTERM lands mid-issue.
    slow = SlowHandler(0.05)
    with SMTPServer(slow) as smtp, installation(tmp_path, smtp, batch_size="20") as site:
        readers = site.seed(120)
        with site.running("--tick", "1") as (process, port):
            wait_for(lambda: len(smtp.messages) >= 25, 60, "the send to be under way")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, site.logs()
            assert not healthy(port)
        ledger = site.ledger()
        # Nothing half-sent: every claimed row recorded, the rest left pending, and the
        # ledger says sent for exactly the readers the relay received.
        assert "sending" not in ledger, ledger
        assert ledger["sent"] % 20 == 0, ledger
        assert ledger["sent"] >= 40, ledger
        assert ledger["pending"] == 120 - ledger["sent"], ledger
        assert site.sent_to() == set(by_recipient(smtp.messages))
        assert site.output().splitlines()[-1] == "Stopped."
        assert "Traceback" not in site.logs()

        with site.running("--tick", "1") as (process, _port):
            wait_for(lambda: site.ledger() == {"sent": 120}, 60, "the rest to be sent")
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 0, site.logs()
        received = by_recipient(smtp.messages)
        assert sorted(received) == readers
        assert set(received.values()) == {1}
        assert any("issue(s) 1 resumed" in line for line in site.output().splitlines())


def test_a_stopped_tick_leaves_whole_batches_and_the_next_one_resumes(runtime: Runtime) -> None:
    # In-process, on each backend: the tick itself, its sender sending batches of 10.
    with transaction(runtime.sessions) as session:
        seed(session, 30)

    def sending_began() -> bool:
        # A stop asked for while the first batch goes out.
        with runtime.sessions() as session:
            sent = select(Delivery.id).where(Delivery.status == DeliveryStatus.SENT).limit(1)
            return session.scalar(sent) is not None

    sender = InProcessSender(runtime.sessions, runtime.send_context, 10, sending_began)
    report = tick(runtime.sessions, sender, utcnow(), stopping=sending_began)
    assert report.stopped
    assert [p.result.deliveries for p in report.planned] == [30]
    assert report.batches == 1
    with runtime.sessions() as session:
        ledger = dict(
            session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )
    assert ledger == {DeliveryStatus.SENT: 10, DeliveryStatus.PENDING: 20}
    line = report.summary(sender.take())
    assert line is not None
    assert line.endswith(
        "issue 1 of minutely planned: 1 article(s), 30 reader(s); "
        "sent 10, 0 to retry, 0 failed, 0 skipped; "
        "stopped early: the rest waits for the next start."
    ), line

    resumed = InProcessSender(runtime.sessions, runtime.send_context, 10)
    again = tick(runtime.sessions, resumed, utcnow())
    assert not again.stopped
    assert again.resumed == [1]
    assert again.batches == 2
    with runtime.sessions() as session:
        issue = session.get_one(Issue, 1)
        assert (issue.status, issue.sent_count) == (IssueStatus.SENT, 30)
    assert "sent 20, 0 to retry" in (again.summary(resumed.take()) or "")
    # A tick with nothing to do says nothing.
    assert tick(runtime.sessions, resumed, utcnow()).summary(resumed.take()) is None


def test_an_issue_that_cannot_be_sent_is_reported_and_the_tick_goes_on(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        seed(session, 3)
        create_newsletter(session, "second", "Second", cron="* * * * *")
        subscribe(session, "other@example.org", "second", Origin("cli"), confirmed=True)
    handed: list[int] = []

    class FailsFirst:
        """A sender whose first issue fails (a broken template, say)."""

        def enqueue_issue(self, issue_id: int) -> int:
            handed.append(issue_id)
            if len(handed) == 1:
                raise RuntimeError("the template is broken")
            return 1

    report = tick(runtime.sessions, FailsFirst(), utcnow())
    assert handed == [1, 2]
    assert report.errors == ["issue 1 failed: the template is broken"]
    assert report.batches == 1
    assert "issue 1 failed: the template is broken." in (report.summary() or "")
