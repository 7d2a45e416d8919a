"""Reliability (issue 14): a post and a digest every minute, with the real processes.

A feed on loopback gains a post every minute (in en, uk, ja or no language, one of them
back-dated so it is fetched after the issue it belongs before); a newsletter on
``--article-languages own`` is due every minute; `gazette beat` (real Celery beat)
polls the feed and plans the issues, a real `gazette worker` sends them to an SMTP
server on loopback, for about four real minutes. Twenty readers read en, uk or ja, four
of them with further languages chosen. Every post must reach every reader who reads its
language exactly once, and nothing else may.

Only existing settings speed it up: GAZETTE_BEAT_INTERVAL (how often beat looks for due
work) and the feed's own one-minute poll interval (`feeds add --interval 1`).
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gazette.articles.feed_registry import add_feed
from gazette.articles.feeds import poll_feed
from gazette.digests.routing import save_extra_languages
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import (
    Article,
    Delivery,
    DeliveryStatus,
    Issue,
    IssueArticle,
    IssueStatus,
    Subscriber,
    utcnow,
)
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.support.env import installed_env
from tests.support.feedserver import serve_feeds
from tests.support.figures import record
from tests.support.reliability import duplicates, wait_ready
from tests.support.smtp import RecordingHandler, SMTPServer, message_ids
from tests.support.workers import Worker, require_redis, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SLUG = "minutely"
NEW_POSTS = 5  # one when the run starts, then one after each new minute's issue
LATE_AFTER = 2  # the back-dated post goes up with this new post
# Each reader's own language and the further ones they chose on the preferences page.
EXTRA = {1: ("en",), 2: ("uk",), 4: ("ja", "en"), 6: ("ja",)}
READERS = [(("en", "uk", "ja")[n % 3], EXTRA.get(n, ())) for n in range(20)]
TOKEN = re.compile(r"\[P(\d+)\]")
TITLES = {"en": "Evening brief", "uk": "Вечірній огляд", "ja": "夕方のまとめ", None: "Photo"}


@dataclass(frozen=True)
class Post:
    """One post of the feed; its number, in the title, tells messages' articles apart."""

    number: int
    language: str | None
    published: datetime

    @property
    def title(self) -> str:
        """The title in the post's language, with its number as a token to find it by."""
        return f"{TITLES[self.language]} [P{self.number:02d}]"

    def item(self) -> str:
        """The RSS item: en and uk say their language with dc:language, ja with xml:lang."""
        attribute = ' xml:lang="ja"' if self.language == "ja" else ""
        language = (
            f"<dc:language>{self.language}</dc:language>" if self.language in ("en", "uk") else ""
        )
        return (
            f"<item{attribute}><title>{self.title}</title>"
            f"<link>https://site.example/p/{self.number}</link>"
            f"<guid>https://site.example/?p={self.number}</guid>{language}"
            f"<pubDate>{format_datetime(self.published)}</pubDate>"
            "<description>A short summary.</description></item>"
        )


def rss(posts: list[Post]) -> bytes:
    """The feed document, newest first as WordPress writes it; the channel has no language."""
    items = "".join(p.item() for p in sorted(posts, key=lambda p: p.published, reverse=True))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<channel><title>Site</title><link>https://site.example/</link>{items}</channel></rss>"
    ).encode()


def scenario(name: str, database_url: str) -> str:
    """The scenario's name in the report, with the database it ran on."""
    return f"{name} ({'PostgreSQL' if database_url.startswith('postgresql') else 'SQLite'})"


@contextmanager
def started(env: dict[str, str], args: list[str], cwd: Path, log: Path) -> Iterator[Worker]:
    """Run one `gazette` command (worker or beat) until the block ends."""
    process = Worker(env, log, command=[sys.executable, "-m", "gazette", *args], cwd=cwd)
    try:
        yield process
    finally:
        process.stop()


def issue_count(runtime: Runtime, newsletter_id: int) -> int:
    """Issues of the newsletter planned so far, sent or skipped."""
    with runtime.sessions() as session:
        return (
            session.scalar(
                select(func.count()).select_from(Issue).where(Issue.newsletter_id == newsletter_id)
            )
            or 0
        )


def latest_planned_at(runtime: Runtime, newsletter_id: int) -> datetime:
    """When the newsletter's newest issue was planned."""
    with runtime.sessions() as session:
        moment = session.scalar(
            select(func.max(Issue.planned_at)).where(Issue.newsletter_id == newsletter_id)
        )
    assert moment is not None
    return moment


def settled(runtime: Runtime, newsletter_id: int, urls: set[str]) -> bool:
    """True when an issue that was not skipped carried every post and all is sent."""
    with runtime.sessions() as session:
        carried = set(
            session.scalars(
                select(Article.url)
                .join(IssueArticle, IssueArticle.article_id == Article.id)
                .join(Issue, Issue.id == IssueArticle.issue_id)
                .where(Issue.newsletter_id == newsletter_id, Issue.status != IssueStatus.SKIPPED)
            )
        )
        unsent = session.scalar(
            select(func.count()).where(
                Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING])
            )
        )
        unfinished = session.scalar(
            select(func.count())
            .select_from(Issue)
            .where(Issue.status.in_([IssueStatus.PLANNED, IssueStatus.SENDING]))
        )
    return urls <= carried and unsent == 0 and unfinished == 0


def test_reliability_a_post_and_a_digest_every_minute(tmp_path: Path, database_url: str) -> None:
    """Issue 14's end-to-end bound: every post to every reader of its language, once."""
    relay = RecordingHandler()
    smtp = SMTPServer(relay)
    smtp.start()
    began = time.monotonic()
    try:
        with (
            serve_feeds() as server,
            installed_env(
                tmp_path, database_url, broker_url=require_redis(), smtp_url=smtp.url,
                beat_interval="5",
            ) as (env, runtime),
        ):  # fmt: skip
            now = utcnow()
            # Already on the site: one post in each language, and one from long ago that
            # the first issue must not dig up (outside the 14-day look-back window).
            posts = [
                Post(0, "en", now - timedelta(minutes=30)),
                Post(1, "uk", now - timedelta(minutes=29)),
                Post(2, "ja", now - timedelta(minutes=28)),
            ]
            too_old = Post(3, "en", now - timedelta(days=30))
            url = server.static("/feed", rss([*posts, too_old]))
            addresses: dict[str, tuple[str, tuple[str, ...]]] = {}
            with transaction(runtime.sessions) as session:
                newsletter_id = create_newsletter(
                    session, SLUG, "Every Minute", cron="* * * * *", article_languages="own"
                )
                feed_id = add_feed(session, url, interval_minutes=1)
            first = poll_feed(runtime.sessions, feed_id)
            assert first.error is None
            assert first.ingest is not None
            assert first.ingest.added == 4
            with transaction(runtime.sessions) as session:
                for n, (own, extra) in enumerate(READERS):
                    address = f"reader{n:02d}@example.org"
                    result = subscribe(
                        session, address, SLUG, Origin("cli"), language=own, confirmed=True
                    )
                    if extra:
                        reader = session.get_one(Subscriber, result.subscriber_id)
                        save_extra_languages(
                            session, reader.public_id, SLUG, Origin("web"), extra, utcnow()
                        )
                    addresses[address] = (own, extra)
            worker_args = [
                "worker", "--loglevel=INFO", "--concurrency=2", "--pool=prefork",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ]  # fmt: skip
            beat_args = ["beat", "--loglevel=INFO", "-s", str(tmp_path / "beat-schedule")]
            with (
                started(env, worker_args, tmp_path, tmp_path / "worker.log") as worker,
                started(env, beat_args, tmp_path, tmp_path / "beat.log") as beat,
            ):
                wait_ready(worker.log)
                late: Post | None = None
                for k in range(NEW_POSTS):
                    if k:
                        # The pace is the schedule's: the next post goes up once beat
                        # has planned the next minute's issue.
                        seen = issue_count(runtime, newsletter_id)

                        def planned_again(seen: int = seen) -> bool:
                            """True once beat has planned an issue since ``seen``."""
                            return issue_count(runtime, newsletter_id) > seen

                        wait_for(planned_again, 150, "beat to plan the next minute's issue")
                    tag = ["en", "uk", "ja", None, "en"][k]
                    posts.append(Post(10 + k, tag, utcnow() - timedelta(seconds=5)))
                    if k == LATE_AFTER:
                        # Back-dated before the issue just planned, fetched only after it.
                        before = latest_planned_at(runtime, newsletter_id) - timedelta(minutes=1)
                        late = Post(20, "uk", before)
                        posts.append(late)
                    server.static("/feed", rss([*posts, too_old]))
                urls = {f"https://site.example/p/{p.number}" for p in posts}
                wait_for(
                    lambda: settled(runtime, newsletter_id, urls),
                    240,
                    "every post carried and every delivery sent",
                )
                beat.stop()
                # An issue beat planned just before it stopped is finished too.
                wait_for(lambda: settled(runtime, newsletter_id, urls), 120, "the last issue")
                worker_alive = worker.process.poll() is None
            assert late is not None
    finally:
        smtp.stop()
    minutes = (time.monotonic() - began) / 60

    # What each reader received, post by post, from the text part a mail client shows.
    received: Counter[tuple[str, int]] = Counter()
    empty = 0
    for message in relay.messages:
        [recipient] = message.recipients
        body = message.parsed().get_body(("plain",))
        assert body is not None
        numbers = [int(n) for n in TOKEN.findall(body.get_content())]
        empty += not numbers
        for number in numbers:
            received[(recipient, number)] += 1
    language = {p.number: p.language for p in posts}
    eligible = {
        (address, p.number)
        for address, (own, extra) in addresses.items()
        for p in posts
        if p.language in (None, own, *extra)
    }
    wrong = sorted(
        (address, number, language.get(number))
        for address, number in received
        if (address, number) not in eligible
    )
    lost = sorted(eligible - set(received))
    twice = sorted(pair for pair, count in received.items() if count > 1)
    ids = message_ids(relay.messages)

    with runtime.sessions() as session:
        statuses = Counter(
            dict(
                session.execute(
                    select(Issue.status, func.count())
                    .where(Issue.newsletter_id == newsletter_id)
                    .group_by(Issue.status)
                ).all()
            )
        )
        ledger = Counter(
            dict(
                session.execute(
                    select(Delivery.status, func.count()).group_by(Delivery.status)
                ).all()
            )
        )
    runtime.engine.dispose()  # the PostgreSQL schema is dropped next: leave no connection
    assert worker_alive
    assert wrong == [], f"posts to readers who do not read them: {wrong[:10]}"
    assert lost == [], f"posts that never reached an eligible reader: {lost[:10]}"
    assert twice == [], f"posts received twice: {twice[:10]}"
    assert received == Counter(dict.fromkeys(eligible, 1))
    assert too_old.number not in {number for _, number in received}
    assert empty == 0, "a reader was sent a digest with no post in it"
    assert duplicates(ids) == 0
    assert ledger[DeliveryStatus.SENT] == len(relay.messages) == len(ids)
    assert ledger[DeliveryStatus.FAILED] == 0
    assert statuses[IssueStatus.SENT] >= 2  # the posts really went out over several issues
    assert set(statuses) <= {IssueStatus.SENT, IssueStatus.SKIPPED}
    record(
        scenario("A post and a digest every minute", database_url),
        f"{len(posts)} posts (en, uk, ja, none; 1 back-dated and fetched after its issue; "
        f"1 older than the look-back window besides) on a loopback feed polled every minute, "
        f"a newsletter on 'own' due every minute, {len(addresses)} readers in en/uk/ja "
        f"(4 with further languages); real `gazette beat` and `gazette worker`, "
        f"{minutes:.1f} min",
        f"{statuses[IssueStatus.SENT]} issues sent, {statuses[IssueStatus.SKIPPED]} skipped; "
        f"{len(relay.messages)} messages, {ledger[DeliveryStatus.SKIPPED]} reader(s) skipped "
        f"with nothing in their languages; {len(eligible)} post-reader pairs due: "
        f"{len(lost)} lost, {len(twice)} duplicate(s), {len(wrong)} to a reader of another "
        "language",
        "0 lost, 0 duplicates, 0 to a reader of another language",
    )
