"""The same tasks on a real Redis broker and real `celery worker` processes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gazette.articles.service import ArticleInput, upsert_article
from gazette.config import load_settings
from gazette.digests.planning import plan_issue
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Delivery, DeliveryStatus, Issue, IssueStatus, utcnow
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.support.env import install, make_env
from tests.support.smtp import SMTPServer
from tests.support.workers import Worker, require_redis, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def broker_env(tmp_path: Path, database_url: str, smtp_server: SMTPServer) -> dict[str, str]:
    return make_env(
        tmp_path,
        database_url,
        broker_url=require_redis(),
        smtp_url=smtp_server.url,
        batch_size="100",
    )


@pytest.fixture
def broker_runtime(tmp_path: Path, broker_env: dict[str, str]) -> Iterator[Runtime]:
    with install(load_settings(broker_env, cwd=tmp_path)) as built:
        yield built


def seed(runtime: Runtime, readers: int) -> int:
    """A newsletter with three articles and ``readers`` confirmed readers; plan its issue."""
    now = utcnow()
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, "weekly", "The Weekly")
        for n in range(3):
            upsert_article(
                session,
                ArticleInput(
                    title=f"Article {n}",
                    url=f"https://example.org/a/{n}",
                    published_at=now - timedelta(days=3 - n),  # inside the look-back window
                    summary="<p>Summary.</p>",
                ),
            )
        for n in range(readers):
            language = ("en", "uk", "ja")[n % 3]
            subscribe(
                session, f"reader{n}@example.org", "weekly", Origin("cli"),
                language=language, confirmed=True,
            )  # fmt: skip
        plan = plan_issue(session, newsletter_id, now + timedelta(seconds=1))
    return plan.issue_id


def sent(runtime: Runtime, issue_id: int) -> int:
    with runtime.sessions() as session:
        return (
            session.scalar(
                select(func.count()).where(
                    Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.SENT
                )
            )
            or 0
        )


def test_real_worker_sends_every_message_once(
    tmp_path: Path, broker_env: dict[str, str], broker_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    from worker.tasks import enqueue_issue

    readers = 1000
    issue_id = seed(broker_runtime, readers)
    worker = Worker(broker_env, tmp_path / "worker.log")
    try:
        assert enqueue_issue(issue_id) == 10
        wait_for(lambda: sent(broker_runtime, issue_id) == readers, 120, "1,000 sent rows")
        wait_for(
            lambda: len(smtp_server.messages) == readers, 30, "1,000 messages at the SMTP server"
        )
        with broker_runtime.sessions() as session:
            wait_for(
                lambda: (
                    session.get_one(Issue, issue_id, populate_existing=True).status
                    == IssueStatus.SENT
                ),
                30,
                "the issue to be marked sent",
            )
    finally:
        worker.stop()
    ids = {message.parsed()["Message-ID"] for message in smtp_server.messages}
    assert len(ids) == readers
    recipients = sorted(r for message in smtp_server.messages for r in message.recipients)
    assert recipients == sorted(f"reader{n}@example.org" for n in range(readers))
