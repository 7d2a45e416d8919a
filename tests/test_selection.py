"""Selection by what each edition has carried (issue 14).

An article is due for a newsletter's edition while that edition has not carried it and
it was published within the newsletter's look-back window. Each test runs several
issues with injected times and checks that every eligible article was carried exactly
once over them, and nothing else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.orm import Session

from gazette.articles.feeds import store_items
from gazette.articles.service import ArticleInput, upsert_article, withdraw_article
from gazette.digests.planning import due_editions, plan_issue
from gazette.digests.selection import EXPIRED_EVENT, select_articles, waiting_articles, window_start
from gazette.errors import GazetteError
from gazette.newsletters.service import (
    NewsletterChanges,
    create_newsletter,
    offered_newsletters,
    retire_newsletter,
    update_newsletter,
)
from gazette.runtime import Runtime
from gazette.store import migrate
from gazette.store.db import transaction
from gazette.store.models import (
    Edition,
    Event,
    Feed,
    Issue,
    IssueArticle,
    IssueStatus,
    Newsletter,
    Subscriber,
)
from gazette.subscribers.preferences import update_preferences
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.support.digests import add_article, carried

CLI = Origin("cli")
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
# 2026-11-30 is a Monday; the newsletters below send every day at 08:00 UTC.
START = datetime(2026, 11, 30, 8, tzinfo=UTC)
DAILY = "0 8 * * *"


def add_weekly_reader(session: Session) -> None:
    """Let readers of "daily" choose a frequency, and add one who chose a weekly summary."""
    update_newsletter(session, "daily", NewsletterChanges(allow_frequency=True))
    reader = subscribe(session, "weekly@example.org", "daily", CLI, confirmed=True)
    public_id = session.get_one(Subscriber, reader.subscriber_id).public_id
    update_preferences(
        session, public_id, "daily", Origin("web"), language="en", topics=[], frequency="weekly"
    )


def newsletter(session: Session, slug: str = "daily", **options: object) -> int:
    newsletter_id = create_newsletter(session, slug, slug.title(), cron=DAILY, **options)  # type: ignore[arg-type]
    subscribe(session, f"reader@{slug}.example.org", slug, CLI, confirmed=True)
    return newsletter_id


def carried_by_edition(
    session: Session, newsletter_id: int, edition: Edition = Edition.REGULAR
) -> Counter[int]:
    """How often each article went out in an issue of the edition that was not skipped."""
    return Counter(
        session.scalars(
            select(IssueArticle.article_id)
            .join(Issue, Issue.id == IssueArticle.issue_id)
            .where(
                Issue.newsletter_id == newsletter_id,
                Issue.edition == edition,
                Issue.status != IssueStatus.SKIPPED,
            )
        )
    )


def exactly_once(counts: Counter[int], expected: Iterable[int]) -> None:
    """Every expected article carried once, and nothing else."""
    assert counts == Counter(set(expected))


def plan(session: Session, newsletter_id: int, now: datetime, **kw: object) -> list[int]:
    return carried(session, plan_issue(session, newsletter_id, now, **kw).issue_id)  # type: ignore[arg-type]


def expired(session: Session, newsletter_id: int) -> list[int]:
    events = session.scalars(
        select(Event).where(Event.kind == EXPIRED_EVENT, Event.newsletter_id == newsletter_id)
    )
    return sorted(int(e.detail["article_id"]) for e in events)


# --- late posts, overflow, the first issue -----------------------------------------------


def test_a_late_fetched_post_goes_in_the_next_issue(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = newsletter(session)
        on_time = add_article(session, "On time", START - HOUR)
        assert plan(session, newsletter_id, START) == [on_time]
        # Published at 06:00, fetched at 09:10: after the 08:00 issue was cut.
        late = add_article(session, "Back-dated", START - 2 * HOUR)
        fresh = add_article(session, "Fresh", START + 5 * HOUR)
        assert waiting_articles(session, newsletter_id, START + 6 * HOUR) == 2
        assert plan(session, newsletter_id, START + DAY) == [fresh, late]
        assert plan_issue(session, newsletter_id, START + 2 * DAY).status is IssueStatus.SKIPPED
        exactly_once(carried_by_edition(session, newsletter_id), [on_time, late, fresh])
        assert waiting_articles(session, newsletter_id, START + 2 * DAY) == 0


def test_overflow_rolls_over_across_three_issues_oldest_first(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = newsletter(session, max_articles=3)
        ids = [add_article(session, f"Story {n}", START - (8 - n) * HOUR) for n in range(8)]
        first = plan(session, newsletter_id, START)
        second = plan(session, newsletter_id, START + DAY)
        third = plan(session, newsletter_id, START + 2 * DAY)
        # Oldest due first; each issue shows its own newest first.
        assert first == [ids[2], ids[1], ids[0]]
        assert second == [ids[5], ids[4], ids[3]]
        assert third == [ids[7], ids[6]]
        exactly_once(carried_by_edition(session, newsletter_id), ids)
        assert expired(session, newsletter_id) == []


def test_the_first_issue_carries_nothing_older_than_the_window(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = newsletter(session, max_age_days=14)
        backlog = [add_article(session, f"Old {n}", START - (15 + n) * DAY) for n in range(5)]
        edge = add_article(session, "Exactly 14 days", START - 14 * DAY)
        recent = [add_article(session, f"Recent {n}", START - n * DAY - HOUR) for n in range(3)]
        inside = add_article(session, "13 days", START - 13 * DAY)
        assert window_start(session, newsletter_id, START) == START - 14 * DAY
        assert sorted(plan(session, newsletter_id, START)) == sorted([*recent, inside])
        for day in range(1, 20):
            plan(session, newsletter_id, START + day * DAY)
        counts = carried_by_edition(session, newsletter_id)
        exactly_once(counts, [*recent, inside])
        assert not set(counts) & {*backlog, edge}
        # Nothing that was never due on the first issue "expired" on a later one.
        assert expired(session, newsletter_id) == []


P1, P7 = "https://site.example/?p=1", "https://site.example/?p=7"  # WordPress-style guids


def test_an_updated_article_is_never_new_again(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = newsletter(session)
        original = add_article(session, "Draft", START - HOUR, guid=P7)
        assert plan(session, newsletter_id, START) == [original]
        # The site edits it: new title, new link, and an "updated" date days later.
        final = ArticleInput("Final", "https://site.example/final", START + 3 * DAY, guid=P7)
        updated = upsert_article(session, final)
        assert (updated.article_id, updated.created, updated.changed) == (original, False, True)
        # An old article edited much later stays out of the window too.
        old = add_article(session, "Ancient", START - 40 * DAY, guid=P1)
        revised = ArticleInput(
            "Ancient, revised", "https://news.example.org/ancient", START + 3 * DAY, guid=P1
        )
        upsert_article(session, revised)
        for day in range(1, 6):
            plan(session, newsletter_id, START + day * DAY)
        exactly_once(carried_by_edition(session, newsletter_id), [original])
        assert old not in carried_by_edition(session, newsletter_id)


def test_two_posts_with_one_title_and_date_are_both_carried(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = newsletter(session)
        items = [
            ArticleInput("&", f"https://site.example/{n}", START - HOUR, guid=f"{n}")
            for n in range(3)
        ]
        result = store_items(session, items)
        assert result.added == 3
        ids = plan(session, newsletter_id, START)
        assert len(ids) == 3
        again = store_items(session, items)
        assert (again.added, again.updated, again.unchanged) == (0, 0, 3)
        plan(session, newsletter_id, START + DAY)
        exactly_once(carried_by_edition(session, newsletter_id), ids)


# --- expiry ----------------------------------------------------------------------------------


def test_an_article_that_leaves_the_window_unsent_is_recorded_once(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = newsletter(session, max_articles=1, max_age_days=2)
        ids = [add_article(session, f"Burst {n}", START - (5 - n) * HOUR) for n in range(5)]
        for day in range(6):
            plan(session, newsletter_id, START + day * DAY)
        counts = carried_by_edition(session, newsletter_id)
        gone = expired(session, newsletter_id)
        # One fits a day; by the third issue the two-day window starts after the burst
        # (at the first issue's cutoff), so the three left expire, recorded once each.
        assert sorted(counts) == ids[:2]
        assert set(counts.values()) == {1}
        assert gone == ids[2:]
        event = session.scalars(select(Event).where(Event.kind == EXPIRED_EVENT)).first()
        assert event is not None
        assert event.subscriber_id is None
        assert event.detail["edition"] == "regular"


# --- which newsletter takes which article -------------------------------------------------


def test_a_feed_with_a_newsletter_feeds_only_that_newsletter(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        research = newsletter(session, "research")
        events = newsletter(session, "events")
        session.add_all(
            [
                Feed(url="https://site.example/research/feed", newsletter_id=research),
                Feed(url="https://site.example/feed"),
            ]
        )
        session.flush()
        only_research, everyone = session.scalars(select(Feed.id).order_by(Feed.id)).all()

        def item(n: int) -> ArticleInput:
            return ArticleInput(
                f"Post {n}",
                f"https://site.example/{n}",
                START - HOUR,
                guid=f"https://site.example/?p={n}",
            )

        store_items(session, [item(1), item(2)], only_research)
        store_items(session, [item(2), item(3)], everyone)
        by_hand = add_article(session, "By hand", START - HOUR)
        ids = {n: upsert_article(session, item(n)).article_id for n in (1, 2, 3)}
        research_ids = plan(session, research, START)
        events_ids = plan(session, events, START)
    # Post 2 was also seen in the general feed, so every newsletter takes it.
    assert sorted(research_ids) == sorted([ids[1], ids[2], ids[3], by_hand])
    assert sorted(events_ids) == sorted([ids[2], ids[3], by_hand])


def test_a_withdrawn_article_is_never_carried(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = newsletter(session)
        kept = add_article(session, "Kept", START - HOUR)
        pulled = add_article(session, "Pulled", START - 2 * HOUR)
        assert withdraw_article(session, pulled, START - HOUR)
        assert not withdraw_article(session, pulled, START - HOUR)
        with pytest.raises(GazetteError, match="There is no article 999"):
            withdraw_article(session, 999, START)
        for day in range(3):
            plan(session, newsletter_id, START + day * DAY)
        exactly_once(carried_by_edition(session, newsletter_id), [kept])
        assert expired(session, newsletter_id) == []


# --- languages (the "all" and "own" caps; routing to readers is elsewhere) ------------------


def test_all_mode_caps_the_issue_and_own_mode_caps_each_language(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        everyone = newsletter(session, "everyone", max_articles=2)
        by_language = newsletter(session, "by-language", max_articles=2, article_languages="own")
        articles: dict[str | None, list[int]] = {}
        for n, language in enumerate(["en", "uk", "en", None, "uk", "en", "uk"]):
            article_id = add_article(
                session, f"Story {n}", START - (10 - n) * HOUR, language=language
            )
            articles.setdefault(language, []).append(article_id)
        every = [a for group in articles.values() for a in group]

        first_all = plan(session, everyone, START)
        first_own = plan(session, by_language, START)
        assert len(first_all) == 2
        assert sorted(first_own) == sorted(
            [*articles["en"][:2], *articles["uk"][:2], *articles[None]]
        )
        for day in range(1, 5):
            plan(session, everyone, START + day * DAY)
            plan(session, by_language, START + day * DAY)
        exactly_once(carried_by_edition(session, everyone), every)
        exactly_once(carried_by_edition(session, by_language), every)


def test_own_mode_min_articles_counts_the_whole_issue(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = newsletter(session, min_articles=3, max_articles=3, article_languages="own")
        ids = [
            add_article(session, "English", START - HOUR, language="en"),
            add_article(session, "Українська", START - HOUR, language="uk"),
        ]
        assert plan_issue(session, newsletter_id, START).status is IssueStatus.SKIPPED
        ids.append(add_article(session, "日本語", START + HOUR, language="ja"))
        result = plan_issue(session, newsletter_id, START + DAY)
        assert (result.status, result.articles) == (IssueStatus.PLANNED, 3)
        exactly_once(carried_by_edition(session, newsletter_id), ids)


# --- the weekly summary beside regular issues ------------------------------------------------


def test_the_weekly_summary_carries_each_article_once_beside_the_regular_issues(
    runtime: Runtime,
) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = newsletter(session, max_articles=2)
        add_weekly_reader(session)
        # Three weeks: three posts a day, two fit an issue, one a day rolls over.
        posts: list[int] = []
        summaries: list[list[int]] = []
        for day in range(21):
            now = START + day * DAY
            posts += [
                add_article(session, f"Day {day} post {n}", now - DAY + (n + 1) * HOUR)
                for n in range(3)
            ]
            plan(session, newsletter_id, now)
            if now.weekday() == 0:
                summaries.append(plan(session, newsletter_id, now, edition=Edition.WEEKLY))
        regular = carried_by_edition(session, newsletter_id)
        weekly = carried_by_edition(session, newsletter_id, Edition.WEEKLY)
    assert set(regular.values()) == {1}
    assert set(weekly.values()) == {1}
    # Regular readers are never short-changed: two a day keeps up with the backlog
    # until the last days, and whatever is left still waits inside the window.
    assert len(regular) == 2 * 21
    assert not set(regular) - set(posts)
    # A summary repeats what the week's regular issues carried, capped like them.
    assert len(summaries) == 3
    assert all(len(summary) == 2 for summary in summaries)


def test_a_summary_never_reaches_back_past_the_previous_one(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = newsletter(session)
        add_weekly_reader(session)
        before = add_article(session, "Before", START - 2 * DAY)
        assert plan(session, newsletter_id, START, edition=Edition.WEEKLY) == [before]
        # Published before that summary, fetched after it: the summary's readers missed
        # it, but the window of a summary never reaches back past the previous one.
        add_article(session, "Late for the summary", START - HOUR)
        this_week = add_article(session, "This week", START + 2 * DAY)
        assert plan(session, newsletter_id, START + 7 * DAY, edition=Edition.WEEKLY) == [this_week]


# --- retiring ------------------------------------------------------------------------------


def test_a_retired_newsletter_is_neither_scheduled_nor_offered(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        kept = newsletter(session, "kept")
        retired = newsletter(session, "gone")
        add_article(session, "A story", START - HOUR)
        issue = plan_issue(session, retired, START)
        assert retire_newsletter(session, "gone", START + HOUR)
        assert not retire_newsletter(session, "gone", START + HOUR)
        assert [n.slug for n in offered_newsletters(session)] == ["kept"]
        assert due_editions(session, START + DAY) == [(kept, Edition.REGULAR)]
        with pytest.raises(GazetteError, match="gone is retired"):
            plan_issue(session, retired, START + DAY)
        with pytest.raises(GazetteError, match="retired"):
            subscribe(session, "new@example.org", "gone", CLI, confirmed=True)
        # Its history stays.
        assert session.get_one(Issue, issue.issue_id).newsletter_id == retired


# --- the preview shows exactly the next issue ---------------------------------------------


def test_preview_selection_is_the_next_issue(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = newsletter(session, max_articles=2)
        for n in range(5):
            add_article(session, f"Story {n}", START - (n + 1) * HOUR)
        news = session.get_one(Newsletter, newsletter_id)
        for day in range(3):
            now = START + day * DAY
            since = window_start(session, newsletter_id, now)
            previewed = select_articles(session, news, now, since)
            assert plan(session, newsletter_id, now) == previewed


# --- the upgrade from the old rule (migration 0006) ---------------------------------------


def advance_sequences(engine: Engine) -> None:
    """Rows inserted with explicit ids leave PostgreSQL's sequences behind: move them on."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as connection:
        for table in ("newsletter", "article", "issue", "feed"):
            connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 100)"))


# The "daily" newsletter as the schema before the carry rule (4a1c0de5e1ec) stored it.
OLD_STAMP = "2026-11-30 08:00:00+00:00"
OLD_DAILY = (
    "INSERT INTO newsletter (id, slug, name, description, schedule_cron, timezone,"
    " min_articles, max_articles, allow_frequency, template_set, default_language,"
    " max_age_days, article_languages, created_at) VALUES (1, 'daily', 'Daily', '',"
    f" '0 8 * * *', 'UTC', 1, 1, false, 'digest', 'en', 14, 'all', '{OLD_STAMP}')"
)


def test_after_the_upgrade_nothing_old_is_sent_again(runtime: Runtime) -> None:
    """Issues planned under the old rule: what they carried and all before their cutoff
    counts as carried; nothing new is lost."""
    engine = runtime.engine
    migrate.downgrade(engine, "4a1c0de5e1ec")
    stamp = OLD_STAMP
    with engine.begin() as connection:
        connection.execute(text(OLD_DAILY))
        rows = [
            # (id, guid, published): 1 was sent; 2 overflowed under the old rule (lost);
            # 3 was published after the last old issue.
            (1, "https://site.example/?p=1", "2026-11-30 06:00:00+00:00"),
            (2, "2", "2026-11-30 05:00:00+00:00"),
            (3, "https://site.example/?p=3", "2026-11-30 09:00:00+00:00"),
        ]
        for article_id, guid, published in rows:
            connection.execute(
                text(
                    "INSERT INTO article (id, guid, url, title, summary, author, fingerprint,"
                    " published_at, created_at, updated_at) VALUES (:id, :guid, :url, :title,"
                    " '', '', :fp, :published, :published, :published)"
                ),
                {
                    "id": article_id, "guid": guid, "url": f"https://site.example/{article_id}",
                    "title": f"Article {article_id}", "fp": f"f{article_id}",
                    "published": published,
                },
            )  # fmt: skip
        connection.execute(
            text(
                "INSERT INTO issue (id, public_id, newsletter_id, period_key, edition, status,"
                " since_at, cutoff_at, planned_at, sent_count, failed_count, skipped_count)"
                f" VALUES (1, 'i1', 1, '2026-11-30T08:00Z', 'regular', 'sent', NULL, '{stamp}',"
                f" '{stamp}', 1, 0, 0)"
            )
        )
        connection.execute(
            text("INSERT INTO issue_article (issue_id, article_id, position) VALUES (1, 1, 0)")
        )
    migrate.upgrade(engine)
    advance_sequences(engine)
    with engine.connect() as connection:
        keys: dict[int, str] = dict(
            connection.execute(text("SELECT id, identity_key FROM article")).all()
        )
        selection = connection.execute(text("SELECT selection FROM issue")).scalar()
    # Global guids as they are; a bare guid scoped by its feed (none here: local).
    assert keys == {1: "https://site.example/?p=1", 2: "local:2", 3: "https://site.example/?p=3"}
    assert selection == "cutoff"
    with transaction(runtime.sessions) as session:
        subscribe(session, "reader@example.org", "daily", CLI, confirmed=True)
        first = plan(session, 1, START + DAY)
        for day in range(2, 5):
            plan(session, 1, START + day * DAY)
        counts = carried_by_edition(session, 1)
        new_issue = session.scalars(select(Issue).where(Issue.id != 1)).first()
        assert new_issue is not None
        assert new_issue.selection == "carried"
        assert expired(session, 1) == []
    assert first == [3]
    # Article 1 once (by the old issue), 3 once (by the new one), 2 never.
    assert counts == Counter({1: 1, 3: 1})


def test_migration_fills_article_feed_and_scopes_bare_guids(runtime: Runtime) -> None:
    engine = runtime.engine
    migrate.downgrade(engine, "4a1c0de5e1ec")
    stamp = "2026-11-30 08:00:00+00:00"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO feed (id, url, title, poll_interval_seconds, created_at)"
                f" VALUES (7, 'https://a.example/feed', '', 900, '{stamp}')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO article (id, guid, url, title, summary, author, fingerprint,"
                " published_at, feed_id, created_at, updated_at) VALUES (1, '123',"
                f" 'https://a.example/1', 'A', '', '', 'f', '{stamp}', 7, '{stamp}', '{stamp}')"
            )
        )
    migrate.upgrade(engine)
    advance_sequences(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT identity_key FROM article")).scalar() == (
            "feed:7:123"
        )
        assert connection.execute(text("SELECT article_id, feed_id FROM article_feed")).all() == [
            (1, 7)
        ]
    # The same bare guid in another feed is another article now.
    with transaction(runtime.sessions) as session:
        session.execute(insert(Feed).values(id=8, url="https://b.example/feed"))
        result = store_items(
            session, [ArticleInput("B", "https://b.example/1", START, guid="123")], 8
        )
        assert result.added == 1
    migrate.downgrade(engine, "4a1c0de5e1ec")
    with engine.connect() as connection:
        guids = sorted(connection.execute(text("SELECT guid FROM article")).scalars())
    # Back to globally unique guids: the second sighting takes its scoped key.
    assert guids == ["123", "feed:8:123"]
