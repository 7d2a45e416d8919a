"""Planning: one frozen issue per newsletter period, its articles and its audience."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from gazette.articles.service import ArticleInput, upsert_article
from gazette.digests.ledger import pending_batches
from gazette.digests.planning import PlanResult, due_editions, period_key, plan_issue
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import make_engine, make_session_factory, transaction
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Issue,
    IssueArticle,
    IssueStatus,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Topic,
)
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from gazette.subscribers.unsubscribing import unsubscribe
from tests.support.digests import add_article, carried
from tests.support.workers import wait_for

CLI = Origin("cli")
KYIV = ZoneInfo("Europe/Kyiv")
# Newsletters below run "0 8 * * 1" in UTC unless said otherwise: Mondays 08:00 UTC.
DAY = timedelta(days=1)
WEEK = timedelta(days=7)
MONDAY_1 = datetime(2025, 6, 2, 8, tzinfo=UTC)
NOW_1 = MONDAY_1 + timedelta(hours=1)
NOW_2 = NOW_1 + WEEK
NOW_3 = NOW_2 + WEEK


def add_reader(
    session: Session, email: str, slug: str = "weekly", *, confirmed: bool = True
) -> int:
    return subscribe(session, email, slug, CLI, confirmed=confirmed).subscriber_id


def add_stories(session: Session, *titles: str) -> None:
    """One article a day for each title, the last published the day before MONDAY_1."""
    for days_before, title in enumerate(reversed(titles), start=1):
        add_article(session, title, MONDAY_1 - timedelta(days=days_before))


def delivery_subscribers(session: Session, issue_id: int) -> list[int]:
    return sorted(
        session.scalars(select(Delivery.subscriber_id).where(Delivery.issue_id == issue_id))
    )


def count(session: Session, model: type[Issue] | type[Delivery]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


# --- idempotence and audience --------------------------------------------------------------


def test_planning_a_period_twice_returns_the_same_issue(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, "weekly", "Weekly")
        readers = [add_reader(session, f"reader{n}@example.org") for n in range(3)]
        add_stories(session, "First story", "Second story")
        first = plan_issue(session, newsletter_id, NOW_1)
    assert first.created is True
    assert first.status == IssueStatus.PLANNED
    assert first.articles == 2

    # Again, later in the same period, from a new transaction: the issue already planned.
    with transaction(runtime.sessions) as session:
        second = plan_issue(session, newsletter_id, NOW_1 + timedelta(days=3))
    # And again inside one transaction, the savepoint keeping the transaction usable.
    with transaction(runtime.sessions) as session:
        third = plan_issue(session, newsletter_id, NOW_1 + timedelta(hours=5))
        fourth = plan_issue(session, newsletter_id, NOW_1 + timedelta(hours=6))
        assert count(session, Issue) == 1
    for again in (second, third, fourth):
        assert again == PlanResult(first.issue_id, False, IssueStatus.PLANNED, 2, 3, None)

    with runtime.sessions() as session:
        assert count(session, Issue) == 1
        assert delivery_subscribers(session, first.issue_id) == sorted(readers)
        statuses = set(session.scalars(select(Delivery.status)))
        assert statuses == {DeliveryStatus.PENDING}


def test_plan_result_counts_what_was_frozen(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, "weekly", "Weekly")
        for n in range(4):
            add_reader(session, f"reader{n}@example.org")
        add_stories(session, "First story", "Second story")
        created = plan_issue(session, newsletter_id, NOW_1)
    with runtime.sessions() as session:
        frozen_articles = len(carried(session, created.issue_id))
        frozen_deliveries = len(delivery_subscribers(session, created.issue_id))
    assert (frozen_articles, frozen_deliveries) == (2, 4)
    # The call that created the issue reports the same counts as any later call.
    assert (created.articles, created.deliveries) == (2, 4)


def test_only_active_subscribers_get_a_delivery(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, "weekly", "Weekly")
        create_newsletter(session, "other", "Other")
        active = add_reader(session, "active@example.org")
        add_reader(session, "pending@example.org", confirmed=False)
        gone = add_reader(session, "gone@example.org")
        assert unsubscribe(session, gone, newsletter_id, CLI)
        add_reader(session, "elsewhere@example.org", "other")
        # Subscribing again after unsubscribing does not reactivate without confirmation.
        add_reader(session, "gone@example.org", confirmed=False)
        add_article(session, "A story", MONDAY_1 - timedelta(days=1))
        result = plan_issue(session, newsletter_id, NOW_1)
    with runtime.sessions() as session:
        assert delivery_subscribers(session, result.issue_id) == [active]
        assert count(session, Delivery) == 1


def test_unsubscribing_updates_what_the_session_already_holds(runtime: Runtime) -> None:
    """Unsubscribe writes past the session for speed; objects it holds must not go stale."""
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, "weekly", "Weekly")
        reader = add_reader(session, "reader@example.org")
        other = add_reader(session, "other@example.org")
        add_article(session, "A story", MONDAY_1 - timedelta(days=1))
        issue_id = plan_issue(session, newsletter_id, NOW_1).issue_id
        subscription = session.scalars(
            select(Subscription).where(Subscription.subscriber_id == reader)
        ).one()
        deliveries = {
            d.subscriber_id: d
            for d in session.scalars(select(Delivery).where(Delivery.issue_id == issue_id))
        }
        assert unsubscribe(session, reader, newsletter_id, CLI)
        assert subscription.status == SubscriptionStatus.UNSUBSCRIBED
        assert deliveries[reader].status == DeliveryStatus.SKIPPED
        assert deliveries[other].status == DeliveryStatus.PENDING
        # Twice is a no-op.
        assert not unsubscribe(session, reader, newsletter_id, CLI)


def test_too_few_articles_skip_the_issue_without_deliveries(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, "weekly", "Weekly", min_articles=3)
        add_reader(session, "reader@example.org")
        add_stories(session, "One", "Two")
        result = plan_issue(session, newsletter_id, NOW_1)
    assert result.created is True
    assert result.status == IssueStatus.SKIPPED
    assert result.deliveries == 0
    assert result.articles == 2
    assert result.skip_reason is not None
    assert "2" in result.skip_reason
    assert "3" in result.skip_reason
    with transaction(runtime.sessions) as session:
        issue = session.get_one(Issue, result.issue_id)
        assert issue.status == IssueStatus.SKIPPED
        assert issue.skip_reason == result.skip_reason
        assert count(session, Delivery) == 0
        again = plan_issue(session, newsletter_id, NOW_1 + timedelta(hours=1))
    assert again == PlanResult(
        result.issue_id, False, IssueStatus.SKIPPED, 2, 0, result.skip_reason
    )


def test_articles_of_a_skipped_issue_carry_over_to_the_next(runtime: Runtime) -> None:
    """A skipped issue sends nothing, so its articles must still reach readers later.

    Only issues that were not skipped count as having carried an article, so the
    articles a skipped issue looked at stay due.
    """
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, "weekly", "Weekly", min_articles=3)
        add_reader(session, "reader@example.org")
        old = [
            add_article(session, "One", MONDAY_1 - timedelta(days=2)),
            add_article(session, "Two", MONDAY_1 - timedelta(days=1)),
        ]
        skipped = plan_issue(session, newsletter_id, NOW_1)
    assert skipped.status == IssueStatus.SKIPPED
    with transaction(runtime.sessions) as session:
        new = add_article(session, "Three", NOW_1 + timedelta(days=1))
        result = plan_issue(session, newsletter_id, NOW_2)
        carried_ids = carried(session, result.issue_id)
    assert result.issue_id != skipped.issue_id
    assert sorted(carried_ids) == sorted([*old, new])
    assert result.status == IssueStatus.PLANNED


# --- which articles ------------------------------------------------------------------------


def test_next_issue_carries_what_the_edition_has_not_carried(runtime: Runtime) -> None:
    """Was: "only articles after the previous cutoff". Now a late arrival goes in the
    next issue, and an update (even one with a later date) never makes an article new."""
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, "weekly", "Weekly")
        add_reader(session, "reader@example.org")
        early = add_article(session, "Early", MONDAY_1 - timedelta(days=3), guid="tag:early")
        by_url = add_article(session, "By link", MONDAY_1 - timedelta(days=2))
        at_cutoff = add_article(session, "At the cutoff", NOW_1)
        first = plan_issue(session, newsletter_id, NOW_1)
        first_articles = carried(session, first.issue_id)
    assert sorted(first_articles) == sorted([early, by_url, at_cutoff])

    with transaction(runtime.sessions) as session:
        just_after = add_article(session, "Just after", NOW_1 + timedelta(microseconds=1))
        fresh = add_article(session, "Fresh", NOW_1 + timedelta(days=2))
        # Arrived late, published before the first issue's cutoff: the next issue has it.
        late = add_article(session, "Late arrival", NOW_1 - timedelta(minutes=5))
        # Published after the next cutoff: not yet.
        add_article(session, "Tomorrow", NOW_2 + timedelta(days=1))
        site = "https://news.example.org"
        updated, retitled = (
            upsert_article(session, article)
            for article in (
                # Updated articles keep their id: new title and date (matched by guid) ...
                ArticleInput(
                    "Early, corrected", f"{site}/early-v2", NOW_1 + 3 * DAY, guid="tag:early"
                ),
                # ... or a new title only (no guid: matched by its link).
                ArticleInput("By link, retitled", f"{site}/by-link", NOW_1 + 4 * DAY),
            )
        )
        assert (updated.article_id, updated.created) == (early, False)
        assert (retitled.article_id, retitled.created) == (by_url, False)
        second = plan_issue(session, newsletter_id, NOW_2)
        second_articles = carried(session, second.issue_id)
        issue = session.get_one(Issue, second.issue_id)
        # The look-back window: the newsletter's 14 days.
        assert issue.since_at == NOW_2 - timedelta(days=14)
        assert issue.cutoff_at == NOW_2
    assert second.created is True
    assert second_articles == [fresh, just_after, late]
    assert not set(second_articles) & set(first_articles)

    with transaction(runtime.sessions) as session:
        newest = add_article(session, "Newest", NOW_2 + timedelta(hours=1))
        third = plan_issue(session, newsletter_id, NOW_3)
        third_articles = carried(session, third.issue_id)
    # "Tomorrow" was after the second cutoff, so it belongs to the third issue.
    assert newest in third_articles
    assert len(third_articles) == 2
    assert not set(third_articles) & (set(first_articles) | set(second_articles))


def test_articles_are_oldest_due_first_capped_and_shown_newest_first(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, "weekly", "Weekly", max_articles=3)
        add_reader(session, "reader@example.org")
        # Stored in an order unrelated to their dates.
        days = {"Wed": 3, "Mon": 5, "Fri": 1, "Tue": 4, "Thu": 2}
        ids = {
            name: add_article(session, f"{name} story", MONDAY_1 - timedelta(days=ago))
            for name, ago in days.items()
        }
        result = plan_issue(session, newsletter_id, NOW_1)
        chosen = carried(session, result.issue_id)
        positions = list(
            session.scalars(
                select(IssueArticle.position)
                .where(IssueArticle.issue_id == result.issue_id)
                .order_by(IssueArticle.position)
            )
        )
    # The oldest due go first (they leave the window soonest), shown newest first.
    assert result.articles == 3
    assert chosen == [ids["Wed"], ids["Tue"], ids["Mon"]]
    assert positions == [0, 1, 2]
    # The rest roll over to the next issue (was: lost once three were sent).
    with transaction(runtime.sessions) as session:
        following = plan_issue(session, newsletter_id, NOW_1 + timedelta(days=1), "next")
        assert carried(session, following.issue_id) == [ids["Fri"], ids["Thu"]]


def test_topic_filter_picks_only_articles_with_the_newsletter_s_topics(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        science_id = create_newsletter(session, "science", "Science")
        everything_id = create_newsletter(session, "everything", "Everything")
        add_reader(session, "reader@example.org", "science")
        add_reader(session, "reader@example.org", "everything")
        topic = Topic(slug="science", name="Science")
        science = session.get_one(Newsletter, science_id)
        science.topics.append(topic)
        session.flush()
        day = MONDAY_1 - timedelta(days=1)
        tagged = add_article(session, "Comets", day, topics=["Science"])
        both = add_article(session, "Physics of football", day, topics=["Sports", "Science"])
        add_article(session, "Match report", day, topics=["Sports"])
        add_article(session, "No topic", day)
        filtered = plan_issue(session, science_id, NOW_1)
        unfiltered = plan_issue(session, everything_id, NOW_1)
        science_articles = carried(session, filtered.issue_id)
        all_articles = carried(session, unfiltered.issue_id)
    assert sorted(science_articles) == sorted([tagged, both])
    assert len(all_articles) == 4


# --- batches -------------------------------------------------------------------------------


def test_pending_batches_cover_every_pending_delivery_exactly_once(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, "weekly", "Weekly")
        add_article(session, "A story", MONDAY_1 - timedelta(days=1))
        session.execute(
            insert(Subscriber),
            [{"email": f"r{n}@example.org", "public_id": f"p{n}"} for n in range(1234)],
        )
        subscriber_ids = list(session.scalars(select(Subscriber.id)))
        session.execute(
            insert(Subscription),
            [
                {
                    "subscriber_id": sid,
                    "newsletter_id": newsletter_id,
                    "status": SubscriptionStatus.ACTIVE,
                }
                for sid in subscriber_ids
            ],
        )
        result = plan_issue(session, newsletter_id, NOW_1)

    def covered(ranges: list[tuple[int, int]], ids: list[int]) -> dict[int, int]:
        hits = dict.fromkeys(ids, 0)
        for low, high in ranges:
            assert low <= high
            inside = [i for i in ids if low <= i <= high]
            assert len(inside) <= 500
            for i in inside:
                hits[i] += 1
        return hits

    with transaction(runtime.sessions) as session:
        pending = list(
            session.scalars(select(Delivery.id).where(Delivery.issue_id == result.issue_id))
        )
        assert len(pending) == 1234
        ranges = pending_batches(session, result.issue_id, 500)
        assert len(ranges) == 3
        assert ranges == sorted(ranges)
        assert all(ranges[n][1] < ranges[n + 1][0] for n in range(len(ranges) - 1))
        assert set(covered(ranges, pending).values()) == {1}

        # Once some are sent, the ranges cover exactly the rows still pending.
        sent = pending[:100] + pending[700:750]
        session.execute(
            update(Delivery).where(Delivery.id.in_(sent)).values(status=DeliveryStatus.SENT)
        )
        still = [i for i in pending if i not in set(sent)]
        ranges = pending_batches(session, result.issue_id, 500)
        assert ranges[0][0] == min(still)
        assert ranges[-1][1] == max(still)
        assert set(covered(ranges, still).values()) == {1}

        session.execute(
            update(Delivery)
            .where(Delivery.issue_id == result.issue_id)
            .values(status=DeliveryStatus.SENT)
        )
        assert pending_batches(session, result.issue_id, 500) == []


# --- periods -------------------------------------------------------------------------------


def kyiv_weekly() -> Newsletter:
    return Newsletter(slug="kyiv", name="Kyiv", schedule_cron="0 8 * * 1", timezone="Europe/Kyiv")


def hourly(start: datetime, end: datetime) -> list[datetime]:
    times = []
    moment = start
    while moment < end:
        times.append(moment)
        moment += timedelta(minutes=37)
    return times


@pytest.mark.parametrize(
    ("period_start", "next_start"),
    [
        # Clocks go forward on Sunday 30 March 2025: 08:00 Kyiv is 06:00 UTC, then 05:00 UTC.
        (datetime(2025, 3, 24, 6, tzinfo=UTC), datetime(2025, 3, 31, 5, tzinfo=UTC)),
        # Clocks go back on Sunday 26 October 2025: 08:00 Kyiv is 05:00 UTC, then 06:00 UTC.
        (datetime(2025, 10, 20, 5, tzinfo=UTC), datetime(2025, 10, 27, 6, tzinfo=UTC)),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_period_key_is_one_per_kyiv_week_across_dst(
    period_start: datetime, next_start: datetime
) -> None:
    newsletter = kyiv_weekly()
    assert period_start.astimezone(KYIV).hour == 8
    assert next_start.astimezone(KYIV).hour == 8
    key = period_key(newsletter, period_start)
    assert key == period_start.strftime("%Y-%m-%dT%H:%MZ")

    inside = [*hourly(period_start, next_start), next_start - timedelta(microseconds=1)]
    assert {period_key(newsletter, now) for now in inside} == {key}
    # The same instants given in other zones are the same period.
    for zone in ("America/New_York", "Asia/Tokyo", "Europe/Kyiv"):
        assert {period_key(newsletter, now.astimezone(ZoneInfo(zone))) for now in inside} == {key}

    next_key = next_start.strftime("%Y-%m-%dT%H:%MZ")
    assert next_key != key
    for now in (next_start, next_start + timedelta(seconds=59), next_start + timedelta(hours=30)):
        assert period_key(newsletter, now) == next_key
    # Just before this period began it was still the week before.
    assert period_key(newsletter, period_start - timedelta(seconds=1)) < key


def test_due_editions_until_the_current_period_has_an_issue(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        weekly = create_newsletter(session, "weekly", "Weekly")
        daily = create_newsletter(
            session, "daily", "Daily", cron="0 8 * * *", timezone="Europe/Kyiv"
        )
        sparse = create_newsletter(session, "sparse", "Sparse", min_articles=5)
        add_reader(session, "reader@example.org")
        add_article(session, "A story", MONDAY_1 - timedelta(days=1))
        assert due_newsletters_regular(session, NOW_1) == [weekly, daily, sparse]
        plan_issue(session, weekly, NOW_1)
        assert due_newsletters_regular(session, NOW_1) == [daily, sparse]
        # A skipped issue still settles its period.
        assert plan_issue(session, sparse, NOW_1).status == IssueStatus.SKIPPED
        assert due_newsletters_regular(session, NOW_1 + timedelta(hours=1)) == [daily]
        plan_issue(session, daily, NOW_1)
        assert due_newsletters_regular(session, NOW_1 + timedelta(hours=2)) == []
        # The next morning the daily one is due again, the weekly ones are not.
        assert due_newsletters_regular(session, NOW_1 + timedelta(days=1)) == [daily]
        assert due_newsletters_regular(session, NOW_2) == [weekly, daily, sparse]


def due_newsletters_regular(session: Session, now: datetime) -> list[int]:
    """The newsletters due now; none of these offers a weekly edition."""
    due = due_editions(session, now)
    assert all(edition is Edition.REGULAR for _, edition in due)
    return [newsletter_id for newsletter_id, _ in due]


# --- two planners at the same moment (PostgreSQL) -----------------------------------------


def waits_on_a_lock(runtime: Runtime, pid: int) -> bool:
    """True while PostgreSQL backend ``pid`` is blocked waiting for a lock."""
    with runtime.engine.connect() as connection:
        kind = connection.scalar(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        )
    return str(kind) == "Lock"


def test_concurrent_planners_make_one_issue(runtime: Runtime, database_url: str) -> None:
    if make_url(database_url).get_backend_name() != "postgresql":
        pytest.skip("SQLite serialises writers (BEGIN IMMEDIATE); the race needs PostgreSQL")
    readers = 25
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, "weekly", "Weekly")
        subscriber_ids = [add_reader(session, f"reader{n}@example.org") for n in range(readers)]
        add_article(session, "A story", MONDAY_1 - timedelta(days=1))
        for week in range(1, 3):
            add_article(session, f"Story {week}", NOW_1 + week * WEEK - timedelta(days=1))

    engines = [make_engine(database_url), make_engine(database_url)]
    try:
        for now in (NOW_1, NOW_2, NOW_3):
            barrier = threading.Barrier(2, timeout=30)
            pids: dict[int, int] = {}
            returned: list[int] = []
            order = threading.Lock()

            def planner(
                index: int,
                now: datetime = now,
                barrier: threading.Barrier = barrier,
                pids: dict[int, int] = pids,
                returned: list[int] = returned,
                order: threading.Lock = order,
            ) -> tuple[PlanResult, bool]:
                """Plan in a transaction; the first to return holds it until the other waits."""
                factory = make_session_factory(engines[index])
                with factory() as session, session.begin():
                    # Connected, in a transaction, and known by the server's process id.
                    session.get_one(Newsletter, newsletter_id)
                    pids[index] = int(session.scalar(text("SELECT pg_backend_pid()")) or 0)
                    barrier.wait()
                    result = plan_issue(session, newsletter_id, now)
                    with order:
                        first = not returned
                        returned.append(index)
                    if first:
                        # Hold the transaction open until the other planner is seen blocked
                        # on this one's uncommitted issue: it must wait, then find it.
                        wait_for(
                            lambda: waits_on_a_lock(runtime, pids[1 - index]),
                            60,
                            "the other planner to wait on the uncommitted issue",
                        )
                return result, first

            with ThreadPoolExecutor(2) as pool:
                futures = [pool.submit(planner, n) for n in range(2)]
                outcomes = [future.result(timeout=120) for future in futures]
            results = [result for result, _ in outcomes]
            assert sorted(r.created for r in results) == [False, True]
            assert results[0].issue_id == results[1].issue_id
            loser = next(r for r in results if not r.created)
            assert loser.deliveries == readers
            assert results[0].articles == results[1].articles >= 1
            # The loser waited on the winner's uncommitted issue, then found it: the winner
            # returned first and held its transaction until the loser was blocked on a lock.
            assert [first for result, first in outcomes if result.created] == [True]

            with runtime.sessions() as session:
                key = period_key(session.get_one(Newsletter, newsletter_id), now)
                issues = list(
                    session.scalars(
                        select(Issue.id).where(
                            Issue.newsletter_id == newsletter_id, Issue.period_key == key
                        )
                    )
                )
                assert issues == [results[0].issue_id]
                assert delivery_subscribers(session, issues[0]) == sorted(subscriber_ids)
    finally:
        for engine in engines:
            engine.dispose()
    with runtime.sessions() as session:
        assert count(session, Issue) == 3
        assert count(session, Delivery) == 3 * readers
