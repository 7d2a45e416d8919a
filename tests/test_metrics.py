"""GET /metrics over real HTTP, on SQLite and PostgreSQL: what it counts, who may read it.

The body is read with prometheus-client's own text parser. The counts come from running
totals (the issue's columns, the subscription tally its triggers keep), so the tests
check them against the rows they stand for: a message sent in the middle of an issue,
a reader confirming, leaving and being forgotten, a random run of changes, a database
upgraded from the revision before the tally.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Connection, Engine, func, insert, select, text, update
from sqlalchemy.orm import Session

from gazette.config import load_settings
from gazette.digests.ledger import pending_batches
from gazette.digests.planning import plan_issue
from gazette.digests.sending import send_batch
from gazette.errors import ConfigError, GazetteError
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store import migrate
from gazette.store.db import make_session_factory, transaction
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Feed,
    Issue,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    SubscriptionTally,
    utcnow,
)
from gazette.store.models.readers import TALLY_SHARDS
from gazette.subscribers.bounces import record_bounce, unbounce
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import confirm, subscribe
from gazette.subscribers.unsubscribing import forget, unsubscribe
from gazette.web.metrics import LOOPBACK_ONLY, from_loopback
from tests.support.digests import ArticleSpec, add_articles, add_readers
from tests.support.env import PG_URL, make_env
from tests.support.smtp import RecordingHandler
from tests.support.web import SLUG, Site, SiteFactory, add_reader

TOKEN = "metrics-token-0123456789abcdef"
REMOTE = {"X-Forwarded-For": "203.0.113.7"}
BOUNCING = "nobody@example.net"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def smtp_handler() -> RecordingHandler:
    """The relay: it accepts every reader but BOUNCING, whose mailbox does not exist."""

    def rcpt(address: str, _count: int) -> str | None:
        return "550 5.1.1 <nobody@example.net>: no such user" if address == BOUNCING else None

    return RecordingHandler(rcpt_script=rcpt)


def scrape(site: Site, headers: Mapping[str, str] | None = None) -> Samples:
    """GET /metrics and parse it with prometheus-client's parser: every sample by labels."""
    page = site.browser(cookies=False).get("/metrics", headers)
    assert page.status == 200, page.text
    assert page.headers["Content-Type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(page.text):
        assert family.type == "gauge", family.name
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def issue_sample(samples: Samples, name: str, issue_id: int, **labels: str) -> float | None:
    """The value of the issue's sample with ``labels``, or None when there is none."""
    for (sample_name, found), value in samples.items():
        wanted = {("issue", str(issue_id)), *labels.items()}
        if sample_name == name and wanted <= found:
            return value
    return None


def subscriptions(samples: Samples, slug: str = SLUG) -> dict[str, float]:
    """The gazette_subscriptions gauge of one newsletter, by status."""
    return {
        dict(labels)["status"]: value
        for (name, labels), value in samples.items()
        if name == "gazette_subscriptions" and dict(labels)["newsletter"] == slug
    }


def plan_now(runtime: Runtime) -> int:
    """Plan an issue of the site's newsletter now; return its id."""
    with transaction(runtime.sessions) as session:
        newsletter_id = session.scalars(select(Newsletter.id).where(Newsletter.slug == SLUG)).one()
        result = plan_issue(session, newsletter_id, utcnow())
    assert result.created
    return result.issue_id


def test_a_message_just_sent_is_counted_while_its_issue_is_in_flight(
    make_site: SiteFactory,
) -> None:
    site = make_site()
    rt = site.runtime
    add_articles(
        rt, [ArticleSpec(f"News {n}", f"https://blog.example.com/{n}", n + 1) for n in range(2)]
    )
    readers = [(f"reader{n}@example.com", f"Reader {n}", "en") for n in range(4)]
    add_readers(rt, [*readers, (BOUNCING, "Nobody", "en")])
    issue_id = plan_now(rt)

    before = scrape(site)
    assert issue_sample(before, "gazette_issue_messages", issue_id, outcome="sent") == 0
    assert issue_sample(before, "gazette_issue_deliveries_open", issue_id, state="pending") == 5

    # One batch of the first two rows: the issue is still sending, two messages are out.
    with rt.sessions() as session:
        ((low, _high),) = pending_batches(session, issue_id, 100)
    result = send_batch(rt.sessions, rt.send_context, issue_id, low, low + 1)
    assert (result.claimed, result.sent) == (2, 2)
    assert len(site.smtp.messages) == 2
    # A reader still waiting unsubscribes: their row is skipped, and counted so at once.
    with transaction(rt.sessions) as session:
        leaving = session.execute(
            select(Delivery.subscriber_id, Issue.newsletter_id)
            .join(Issue, Issue.id == Delivery.issue_id)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.status == DeliveryStatus.PENDING, Subscriber.email != BOUNCING)
            .limit(1)
        ).one()
        assert unsubscribe(session, *leaving, Origin("web"))
    middle = scrape(site)
    assert issue_sample(middle, "gazette_issue_messages", issue_id, outcome="sent") == 2
    assert issue_sample(middle, "gazette_issue_messages", issue_id, outcome="skipped") == 1
    assert issue_sample(middle, "gazette_issue_deliveries_open", issue_id, state="pending") == 2

    # The rest: one more sent, and the reader whose mailbox does not exist bounced.
    rt.dispatcher.enqueue_issue(issue_id)
    assert len(site.smtp.messages) == 3
    after = scrape(site)
    expected = {"sent": 3, "failed": 1, "skipped": 1, "bounced": 1}
    for outcome, count in expected.items():
        assert issue_sample(after, "gazette_issue_messages", issue_id, outcome=outcome) == count
    # A finished issue has nothing open to report.
    assert issue_sample(after, "gazette_issue_deliveries_open", issue_id, state="pending") is None
    assert subscriptions(after)["bounced"] == 1


def test_subscriptions_by_status_follow_a_reader_and_go_down_when_forgotten(
    make_site: SiteFactory,
) -> None:
    site = make_site()
    rt = site.runtime
    email = "oksana@example.org"
    public_id = add_reader(rt, email, confirmed=False)
    assert subscriptions(scrape(site)) == {
        "pending": 1, "active": 0, "unsubscribed": 0, "bounced": 0, "complained": 0,
    }  # fmt: skip

    with transaction(rt.sessions) as session:
        assert confirm(session, public_id, SLUG, Origin("web"))
    assert subscriptions(scrape(site))["pending"] == 0
    assert subscriptions(scrape(site))["active"] == 1

    with transaction(rt.sessions) as session:
        subscriber_id, newsletter_id = session.execute(
            select(Subscription.subscriber_id, Subscription.newsletter_id)
        ).one()
        assert unsubscribe(session, subscriber_id, newsletter_id, Origin("web"))
    counted = subscriptions(scrape(site))
    assert (counted["active"], counted["unsubscribed"]) == (0, 1)

    with transaction(rt.sessions) as session:
        forget(session, email, Origin("cli"))
    assert set(subscriptions(scrape(site)).values()) == {0}


def test_no_feed_polled_no_age_then_the_age_of_the_newest_poll(site: Site) -> None:
    age = ("gazette_feed_last_poll_age_seconds", frozenset[tuple[str, str]]())
    assert age not in scrape(site)
    now = utcnow()
    with transaction(site.runtime.sessions) as session:
        session.add(Feed(url="https://a.example.org/feed", last_polled_at=now - timedelta(hours=2)))
        session.add(
            Feed(url="https://b.example.org/feed", last_polled_at=now - timedelta(minutes=3))
        )
        # A removed feed is polled no more: its poll is not the newest one.
        session.add(Feed(url="https://c.example.org/feed", last_polled_at=now, removed_at=now))
    seconds = scrape(site)[age]
    # Three minutes, and the few seconds between writing the rows and the scrape.
    assert 180 <= seconds < 240


def tally(session: Session) -> Counter[tuple[int, str]]:
    """The tally's non-zero sums per newsletter and status, its shards added as /metrics does."""
    rows = session.execute(
        select(SubscriptionTally.newsletter_id, SubscriptionTally.status,
               func.sum(SubscriptionTally.count))
        .group_by(SubscriptionTally.newsletter_id, SubscriptionTally.status)
    )  # fmt: skip
    return Counter({(nid, str(status)): count for nid, status, count in rows if count})


def shards(session: Session) -> set[int]:
    """The shards the tally has rows in."""
    return set(session.scalars(select(SubscriptionTally.shard).distinct()))


def counted(session: Session) -> Counter[tuple[int, str]]:
    """COUNT(*) GROUP BY newsletter and status over the subscription table."""
    rows = session.execute(
        select(Subscription.newsletter_id, Subscription.status, func.count()).group_by(
            Subscription.newsletter_id, Subscription.status
        )
    )
    return Counter({(nid, str(status)): count for nid, status, count in rows})


def random_changes(session: Session, rng: random.Random, steps: int) -> None:
    """Sign-ups, confirmations, unsubscribes, bounces, unbounces, forgets, bulk updates."""
    slugs = ["alpha", "beta"]
    for slug in slugs:
        create_newsletter(session, slug, slug.title())
    origin = Origin("cli")
    emails: list[str] = []
    for _ in range(steps):
        action = rng.choice(["subscribe"] * 3 + ["confirm", "unsubscribe", "bounce",
                                                 "unbounce", "forget", "bulk"])  # fmt: skip
        if action == "subscribe" or not emails:
            email = f"r{rng.randrange(40)}@example.org"
            try:
                subscribe(session, email, rng.choice(slugs), origin, confirmed=rng.random() < 0.5)
            except GazetteError:  # a forgotten address is refused before anything is written
                continue
            emails.append(email)
            continue
        email = rng.choice(emails)
        row = session.execute(
            select(Subscription.subscriber_id, Subscription.newsletter_id)
            .join(Subscription.subscriber)
            .where(Subscription.subscriber.has(email=email))
        ).first()
        if row is None:
            continue
        subscriber_id, newsletter_id = row
        if action == "confirm":
            session.execute(
                update(Subscription)
                .where(Subscription.subscriber_id == subscriber_id,
                       Subscription.status == SubscriptionStatus.PENDING)
                .values(status=SubscriptionStatus.ACTIVE)
            )  # fmt: skip
        elif action == "unsubscribe":
            unsubscribe(session, subscriber_id, newsletter_id, origin)
        elif action == "bounce":
            record_bounce(session, subscriber_id, hard=True, detail="550 5.1.1 gone")
        elif action == "unbounce":
            with contextlib.suppress(GazetteError):  # not bounced: nothing written
                unbounce(session, email, origin)
        elif action == "forget":
            forget(session, email, origin)
            emails = [e for e in emails if e != email]
        else:  # one statement changing many rows at once
            session.execute(
                update(Subscription)
                .where(Subscription.status == SubscriptionStatus.PENDING)
                .values(status=SubscriptionStatus.ACTIVE)
            )
        session.flush()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_tally_equals_a_count_after_random_changes(runtime: Runtime, seed: int) -> None:
    with transaction(runtime.sessions) as session:
        random_changes(session, random.Random(seed), 80)
    with runtime.sessions() as session:
        assert sum(counted(session).values()) > 0
        assert tally(session) == counted(session)
        # One connection made every change: on PostgreSQL its server process's shard.
        if session.get_bind().dialect.name == "postgresql":
            assert len(shards(session)) == 1
        else:
            assert shards(session) == {0}


def test_the_upgrade_seeds_the_tally_from_the_subscriptions_there_are(engine: Engine) -> None:
    migrate.upgrade(engine, "brand150009")
    sessions = make_session_factory(engine)
    origin = Origin("cli")
    # Core inserts of the columns 0009 had: the ORM would name columns later
    # migrations add (a newsletter's pause, 0014), which this schema does not have yet.
    with transaction(sessions) as session:
        alpha_id, beta_id = (
            session.scalars(
                insert(Newsletter).values(slug=slug, name=slug.title()).returning(Newsletter.id)
            ).one()
            for slug in ("alpha", "beta")
        )
        readers = [
            session.scalars(
                insert(Subscriber).values(email=f"r{n}@example.org").returning(Subscriber.id)
            ).one()
            for n in range(7)
        ]
        statuses = [
            (alpha_id, r, "pending" if n % 3 == 0 else "active") for n, r in enumerate(readers)
        ]
        statuses += [(beta_id, r, "active") for r in readers[:4]]
        statuses[0] = (alpha_id, readers[0], "unsubscribed")  # r0 left before the upgrade
        for newsletter_id, subscriber_id, status in statuses:
            session.execute(
                insert(Subscription).values(
                    newsletter_id=newsletter_id, subscriber_id=subscriber_id,
                    status=SubscriptionStatus(status),
                )
            )  # fmt: skip
    migrate.upgrade(engine)
    with sessions() as session:
        assert tally(session) == counted(session)
        alpha = session.scalars(select(Newsletter.id).where(Newsletter.slug == "alpha")).one()
        assert tally(session)[(alpha, "active")] == 4
        assert tally(session)[(alpha, "pending")] == 2
    # The triggers are in place too: the next change is counted.
    with transaction(sessions) as session:
        subscribe(session, "late@example.org", "alpha", origin, confirmed=True)
    with sessions() as session:
        assert tally(session)[(alpha, "active")] == 5
        assert tally(session) == counted(session)
    migrate.downgrade(engine, "brand150009")
    migrate.upgrade(engine)
    with sessions() as session:
        assert tally(session) == counted(session)


def unsharded_tally(session: Session) -> Counter[tuple[int, str]]:
    """The tally of a schema before 0015, read without the model's shard column."""
    rows = session.execute(text("SELECT newsletter_id, status, count FROM subscription_tally"))
    return Counter({(nid, str(status)): count for nid, status, count in rows if count})


def test_the_shards_are_seeded_from_the_subscriptions_and_undone_by_a_downgrade(
    engine: Engine,
) -> None:
    migrate.upgrade(engine, "deliver180014")
    sessions = make_session_factory(engine)
    origin = Origin("cli")
    with transaction(sessions) as session:
        for slug in ("alpha", "beta"):
            create_newsletter(session, slug, slug.title())
        for n in range(70):
            subscribe(session, f"r{n}@example.org", "alpha" if n % 3 else "beta", origin,
                      confirmed=n % 4 != 0)  # fmt: skip
    with sessions() as session:
        before = unsharded_tally(session)
        assert before == counted(session)
    migrate.upgrade(engine)
    with sessions() as session:
        assert tally(session) == before
        assert shards(session) == {0}  # what there was, seeded into one shard
    with transaction(sessions) as session:  # the sharded triggers count the next change
        leaving = session.scalars(select(Subscription).limit(1)).one()
        unsubscribe(session, leaving.subscriber_id, leaving.newsletter_id, origin)
    with sessions() as session:
        assert tally(session) == counted(session)
    migrate.downgrade(engine, "deliver180014")
    with sessions() as session:
        assert unsharded_tally(session) == counted(session)
    with transaction(sessions) as session:  # and 0012's triggers are back
        subscribe(session, "late@example.org", "beta", origin, confirmed=True)
    with sessions() as session:
        assert unsharded_tally(session) == counted(session)


def _two_shards(engine: Engine) -> list[tuple[Connection, int]]:
    """Two connections whose PostgreSQL server processes count in different shards."""
    opened = [engine.connect() for _ in range(3)]  # of three pids, two differ mod 64
    by_shard: dict[int, Connection] = {}
    for connection in opened:
        pid = connection.scalar(text("SELECT pg_backend_pid()"))
        assert isinstance(pid, int)
        by_shard.setdefault(pid % TALLY_SHARDS, connection)
    chosen = list(by_shard.items())[:2]
    for connection in opened:
        if all(connection is not kept for _, kept in chosen):
            connection.close()
    return [(connection, shard) for shard, connection in chosen]


@pytest.mark.skipif(PG_URL is None, reason="set GAZETTE_TEST_DATABASE_URL: server processes")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_transactions_changing_readers_in_opposite_order_do_not_wait_on_each_other(
    runtime: Runtime,
) -> None:
    """Two workers recording bounces: each changes several subscriptions in one transaction.

    Sharded by subscription id, the first would hold shard X and want shard Y while the
    second held Y and wanted X: a deadlock. Each connection's changes go to the shard
    of its own server process instead, so neither waits.
    """
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, "alpha", "Alpha")
        for n in range(2 * TALLY_SHARDS + 2):
            subscribe(session, f"r{n}@example.org", "alpha", Origin("cli"), confirmed=True)
        ids = list(session.scalars(select(Subscription.id).order_by(Subscription.id)))
    # x and x2 share a shard by id, and so do y and y2.
    x, y = ids[0], ids[1]
    x2 = next(i for i in ids if i % TALLY_SHARDS == x % TALLY_SHARDS and i != x)
    y2 = next(i for i in ids if i % TALLY_SHARDS == y % TALLY_SHARDS and i != y)
    (first, first_shard), (second, second_shard) = _two_shards(runtime.engine)
    leave = text("UPDATE subscription SET status = 'unsubscribed' WHERE id = :id")
    try:
        for connection in (first, second):
            # Waiting at all is the failure: fail after a second instead of hanging.
            connection.execute(text("SET lock_timeout = '1s'"))
        first.execute(leave, {"id": x})
        second.execute(leave, {"id": y2})
        first.execute(leave, {"id": y})
        second.execute(leave, {"id": x2})
        first.commit()
        second.commit()
    finally:
        first.close()
        second.close()
    with runtime.sessions() as session:
        assert tally(session) == counted(session)
        assert counted(session)[(newsletter_id, "unsubscribed")] == 4
        assert {first_shard, second_shard} <= shards(session)


def test_loopback_needs_no_token_and_others_need_the_right_one(make_site: SiteFactory) -> None:
    site = make_site(proxy_hops="1", metrics_token=TOKEN)
    browser = site.browser(cookies=False)
    assert scrape(site)  # from loopback, no token
    refused = browser.get("/metrics", REMOTE)
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    for wrong in (f"Bearer {TOKEN[:-1]}x", f"Basic {TOKEN}", "Bearer", TOKEN):
        assert browser.get("/metrics", {**REMOTE, "Authorization": wrong}).status == 401
    assert scrape(site, {**REMOTE, "Authorization": f"Bearer {TOKEN}"})
    assert browser.request("POST", "/metrics", b"").status == 405


def test_without_a_token_only_loopback_may_read(make_site: SiteFactory) -> None:
    site = make_site(proxy_hops="1")
    assert scrape(site)
    refused = site.browser(cookies=False).get(
        "/metrics", {**REMOTE, "Authorization": f"Bearer {TOKEN}"}
    )
    assert refused.status == 403
    assert refused.text.strip() == LOOPBACK_ONLY


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("127.8.0.2", True), ("::1", True), ("::ffff:127.0.0.1", True),
     ("10.0.0.1", False), ("::ffff:10.0.0.1", False), ("", False), (None, False)],
)  # fmt: skip
def test_what_counts_as_loopback(address: str | None, loopback: bool) -> None:
    assert from_loopback(address) is loopback


@pytest.mark.parametrize("token", ["short", "has spaces in it, sixteen+", "ключ-ключ-ключ-ключ"])
def test_a_bad_metrics_token_is_refused_without_echoing_it(tmp_path: Path, token: str) -> None:
    env = make_env(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", metrics_token=token)
    with pytest.raises(ConfigError) as raised:
        load_settings(env, cwd=tmp_path)
    assert "GAZETTE_METRICS_TOKEN" in str(raised.value)
    assert token not in str(raised.value)
