"""End to end (issue 14): a feed gains a post every minute, a newsletter is due every
minute, a real `celery worker` sends; every post reaches every reader exactly once.

The scheduler's tick is driven with injected times (what beat's plan_due_issues does,
minute by minute) so the test takes seconds, not minutes; polling is real HTTP and
sending is a real worker on Redis delivering to a loopback SMTP server.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gazette.articles.feed_registry import add_feed
from gazette.articles.feeds import poll_feed
from gazette.config import load_settings
from gazette.digests.planning import due_editions, plan_issue
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Delivery, DeliveryStatus
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.support.env import install, make_env
from tests.support.feedserver import serve_feeds
from tests.support.smtp import SMTPServer
from tests.support.workers import Worker, require_redis, wait_for

pytestmark = pytest.mark.slow

BASE = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
MINUTES = 6
READERS = 3


def rss(posts: list[tuple[str, datetime]]) -> bytes:
    items = "".join(
        f"<item><title>{title}</title><link>https://site.example/{title.replace(' ', '-')}</link>"
        f"<guid>https://site.example/?p={title.replace(' ', '-')}</guid>"
        f"<pubDate>{format_datetime(published)}</pubDate></item>"
        for title, published in posts
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Site</title>{items}'
        "</channel></rss>"
    ).encode()


@pytest.fixture
def broker_env(tmp_path: Path, database_url: str, smtp_server: SMTPServer) -> dict[str, str]:
    return make_env(tmp_path, database_url, broker_url=require_redis(), smtp_url=smtp_server.url)


@pytest.fixture
def broker_runtime(tmp_path: Path, broker_env: dict[str, str]) -> Iterator[Runtime]:
    with install(load_settings(broker_env, cwd=tmp_path)) as built:
        yield built


def all_sent(rt: Runtime, issues: list[int]) -> bool:
    """True when no delivery of ``issues`` is left unsent."""
    with rt.sessions() as session:
        left = session.scalar(
            select(func.count()).where(
                Delivery.issue_id.in_(issues), Delivery.status != DeliveryStatus.SENT
            )
        )
    return left == 0


def test_a_post_a_minute_reaches_every_reader_once(
    tmp_path: Path, broker_env: dict[str, str], broker_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    from worker.tasks import enqueue_issue

    rt = broker_runtime
    readers = [f"reader{n}@example.org" for n in range(READERS)]
    posts: list[tuple[str, datetime]] = []
    issues: list[int] = []
    with serve_feeds() as server:
        url = server.static("/feed", rss(posts))
        with transaction(rt.sessions) as session:
            create_newsletter(session, "minute", "Every Minute", cron="* * * * *")
            for address in readers:
                subscribe(session, address, "minute", Origin("cli"), confirmed=True)
            feed_id = add_feed(session, url)
        worker = Worker(broker_env, tmp_path / "worker.log")
        try:
            for minute in range(MINUTES):
                now = BASE + timedelta(minutes=minute)
                posts.append((f"Post {minute}", now - timedelta(seconds=20)))
                if minute == 3:
                    # Back-dated: published before the previous issue, fetched only now.
                    posts.append(("Post late", now - timedelta(minutes=2)))
                server.static("/feed", rss(posts))
                poll = poll_feed(rt.sessions, feed_id)
                assert poll.error is None, poll.error
                with transaction(rt.sessions) as session:
                    planned = [
                        plan_issue(session, newsletter_id, now, edition=edition)
                        for newsletter_id, edition in due_editions(session, now)
                    ]
                for result in planned:
                    issues.append(result.issue_id)
                    enqueue_issue(result.issue_id)
            wait_for(lambda: all_sent(rt, issues), 120, "every delivery sent")
        finally:
            worker.stop()
    assert len(issues) == MINUTES
    received: Counter[tuple[str, str]] = Counter()
    assert len(smtp_server.messages) == MINUTES * READERS, len(smtp_server.messages)
    for message in smtp_server.messages:
        body = message.parsed().get_body(("plain",))
        assert body is not None
        text = body.get_content()
        for title, _published in posts:
            if re.search(rf"^\d+\. {re.escape(title)}\r?$", text, re.MULTILINE):
                [recipient] = message.recipients
                received[(recipient, title)] += 1
    expected = Counter({(r, title): 1 for r in readers for title, _ in posts})
    assert received == expected
