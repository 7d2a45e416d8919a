"""Readers' choice of frequency: every issue, or one weekly summary.

A newsletter that sends more often than weekly may let readers choose. Regular issues
then go to readers who kept every issue; the weekly summary, planned at the first
scheduled tick of each week with its own article window, goes to those who chose it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from gazette.articles.service import ArticleInput, upsert_article
from gazette.config import load_settings
from gazette.digests.archive import archived_issue, list_archive
from gazette.digests.planning import due_editions, period_key, plan_issue
from gazette.errors import GazetteError
from gazette.newsletters.service import (
    NewsletterChanges,
    Schedule,
    create_newsletter,
    newsletter_by_slug,
    update_newsletter,
)
from gazette.runtime import Runtime, build_runtime
from gazette.store.db import transaction
from gazette.store.models import Delivery, Edition, Issue, IssueArticle, IssueStatus, Subscriber
from gazette.subscribers.preferences import update_preferences
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.support.digests import maildir_messages
from tests.support.env import installed_runtime
from tests.support.messages import parse
from worker import tasks

CLI = Origin("cli")
GAZETTE = [sys.executable, "-m", "gazette"]
SLUG = "morning"
# Every day at 07:00 in Kyiv; 2025-06-02 is a Monday.
DAILY = "0 7 * * *"
ZONE = "Europe/Kyiv"
MONDAY = datetime(2025, 6, 2, 4, 0, tzinfo=UTC)  # 07:00 in Kyiv (UTC+3)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def daily_newsletter(session: Session, *, allow: bool = True) -> int:
    newsletter_id = create_newsletter(session, SLUG, "Morning Brief", cron=DAILY, timezone=ZONE)
    if allow:
        update_newsletter(session, SLUG, NewsletterChanges(allow_frequency=True))
    return newsletter_id


def add_article(session: Session, title: str, published_at: datetime) -> int:
    slug = "-".join(title.lower().split())
    return upsert_article(
        session,
        ArticleInput(
            title=title, url=f"https://news.example.org/{slug}", published_at=published_at
        ),
    ).article_id


def add_reader(session: Session, address: str, frequency: str | None) -> int:
    result = subscribe(session, address, SLUG, CLI, confirmed=True)
    if frequency is not None:
        public_id = session.get_one(Subscriber, result.subscriber_id).public_id
        update_preferences(
            session, public_id, SLUG, Origin("web"), language="en", topics=[], frequency=frequency
        )
    return result.subscriber_id


def audience(session: Session, issue_id: int) -> set[int]:
    return set(session.scalars(select(Delivery.subscriber_id).where(Delivery.issue_id == issue_id)))


def articles_of(session: Session, issue_id: int) -> set[int]:
    return set(
        session.scalars(select(IssueArticle.article_id).where(IssueArticle.issue_id == issue_id))
    )


# --- the choice is offered only where it means something ---------------------------------


def test_a_weekly_summary_cannot_be_offered_on_a_weekly_schedule(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        create_newsletter(session, "weekly", "Weekly", cron="0 8 * * 1")
    with pytest.raises(GazetteError) as raised, transaction(runtime.sessions) as session:
        update_newsletter(session, "weekly", NewsletterChanges(allow_frequency=True))
    assert str(raised.value) == (
        "weekly is sent on schedule '0 8 * * 1', at most weekly already: a choice of a "
        "weekly summary needs a schedule that fires more often."
    )
    with runtime.sessions() as session:
        assert newsletter_by_slug(session, "weekly").allow_frequency is False


def test_moving_a_newsletter_with_the_choice_to_a_weekly_schedule_is_refused(
    runtime: Runtime,
) -> None:
    with transaction(runtime.sessions) as session:
        daily_newsletter(session)
    with (
        pytest.raises(GazetteError, match="at most weekly already"),
        transaction(runtime.sessions) as session,
    ):
        update_newsletter(session, SLUG, NewsletterChanges(cron="0 8 * * 1"))
    with runtime.sessions() as session:
        assert newsletter_by_slug(session, SLUG).schedule_cron == DAILY


@pytest.mark.parametrize(
    ("cron", "more_often"),
    [
        ("0 7 * * *", True),
        ("0 8 * * 1,4", True),
        ("0 8 * * 1", False),
        ("0 8 1 * *", False),
        # Three days a month: more than twice in some fortnights, never more than weekly.
        ("0 9 1-3 * *", False),
    ],
)
def test_more_often_than_weekly(cron: str, more_often: bool) -> None:
    assert Schedule(cron, ZONE).more_often_than_weekly() is more_often


def test_a_weekly_edition_of_a_newsletter_without_the_choice_is_refused(
    runtime: Runtime,
) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = daily_newsletter(session, allow=False)
        with pytest.raises(GazetteError, match="morning has no weekly edition"):
            plan_issue(session, newsletter_id, MONDAY, edition=Edition.WEEKLY)
        assert due_editions(session, MONDAY) == [(newsletter_id, Edition.REGULAR)]


# --- who gets what ------------------------------------------------------------------------


def test_regular_issues_skip_weekly_readers_and_the_summary_reaches_only_them(
    runtime: Runtime,
) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = daily_newsletter(session)
        every = add_reader(session, "every@example.org", None)
        daily = add_reader(session, "daily@example.org", "daily")
        weekly = add_reader(session, "weekly@example.org", "weekly")
        first = add_article(session, "First story", MONDAY - 2 * DAY)
        regular = plan_issue(session, newsletter_id, MONDAY)
        summary = plan_issue(session, newsletter_id, MONDAY, edition=Edition.WEEKLY)
        assert regular.created
        assert summary.created
        assert summary.issue_id != regular.issue_id
        assert audience(session, regular.issue_id) == {every, daily}
        assert audience(session, summary.issue_id) == {weekly}
        # The summary repeats what regular issues carried: its readers got none of them.
        assert articles_of(session, regular.issue_id) == {first}
        assert articles_of(session, summary.issue_id) == {first}
        assert session.get_one(Issue, summary.issue_id).edition is Edition.WEEKLY


def test_a_week_of_daily_issues_then_one_summary_with_all_of_them(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = daily_newsletter(session)
        add_reader(session, "daily@example.org", None)
        weekly = add_reader(session, "weekly@example.org", "weekly")
        old = add_article(session, "Old news", MONDAY - 10 * DAY)
        stories = []
        summaries = {}
        for day in range(8):  # Monday to the next Monday
            tick = MONDAY + day * DAY
            published = add_article(session, f"Story {day}", tick - timedelta(hours=2))
            stories.append(published)
            due = due_editions(session, tick + timedelta(minutes=1))
            for due_id, edition in due:
                assert due_id == newsletter_id
                result = plan_issue(
                    session, newsletter_id, tick + timedelta(minutes=1), edition=edition
                )
                if edition is Edition.WEEKLY:
                    summaries[day] = result.issue_id
            # Planned: nothing more is due until the next tick.
            assert due_editions(session, tick + timedelta(minutes=30)) == []
        # A summary on each Monday, none on the other days.
        assert sorted(summaries) == [0, 7]
        first, second = summaries[0], summaries[7]
        # The first summary covers the week before it, not the back catalogue.
        assert articles_of(session, first) == {stories[0]}
        assert old not in articles_of(session, first)
        # The next covers the week since, whatever the regular issues already carried.
        assert articles_of(session, second) == set(stories[1:8])
        assert audience(session, second) == {weekly}
        keys = [session.get_one(Issue, i).period_key for i in (first, second)]
        assert keys == ["week-2025-W23", "week-2025-W24"]
        regular_issues = session.scalars(
            select(Issue.id).where(Issue.edition == Edition.REGULAR).order_by(Issue.id)
        ).all()
        assert len(regular_issues) == 8
        assert all(weekly not in audience(session, i) for i in regular_issues)


def test_the_weekly_key_follows_the_newsletters_zone(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        daily_newsletter(session)
        newsletter = newsletter_by_slug(session, SLUG)
        # Sunday 23:30 UTC is already Monday 02:30 in Kyiv, but the last tick (Sunday
        # 07:00 Kyiv) is in the week before: the new week's summary waits for its tick.
        sunday_night = datetime(2025, 6, 8, 23, 30, tzinfo=UTC)
        assert period_key(newsletter, sunday_night, Edition.WEEKLY) == "week-2025-W23"
        assert period_key(newsletter, datetime(2025, 6, 9, 4, 1, tzinfo=UTC), Edition.WEEKLY) == (
            "week-2025-W24"
        )


def test_a_summary_with_no_reader_is_skipped_and_one_with_too_few_articles_rolls_over(
    runtime: Runtime,
) -> None:
    week = 7 * DAY
    with transaction(runtime.sessions) as session:
        newsletter_id = daily_newsletter(session)
        update_newsletter(session, SLUG, NewsletterChanges(min_articles=2))
        add_reader(session, "daily@example.org", None)
        reader = add_reader(session, "weekly@example.org", "weekly")
        public_id = session.get_one(Subscriber, reader).public_id

        def choose(frequency: str) -> None:
            update_preferences(
                session, public_id, SLUG, Origin("web"), language="en", topics=[],
                frequency=frequency,
            )  # fmt: skip

        def summary(weeks: int) -> tuple[IssueStatus, str | None, set[int]]:
            result = plan_issue(
                session, newsletter_id, MONDAY + weeks * week, edition=Edition.WEEKLY
            )
            return result.status, result.skip_reason, articles_of(session, result.issue_id)

        first = [add_article(session, f"First {n}", MONDAY - DAY * (n + 1)) for n in range(2)]
        assert summary(0) == (IssueStatus.PLANNED, None, set(first))
        # The only weekly reader switches to every issue: next week's summary has no one.
        # Its week counts as covered: that reader got its article as a regular issue.
        choose("daily")
        add_article(session, "Read as a regular issue", MONDAY + 3 * DAY)
        add_article(session, "Also read as a regular issue", MONDAY + 4 * DAY)
        assert summary(1)[:2] == (IssueStatus.SKIPPED, "no reader chose the weekly summary")
        choose("weekly")
        # One article is fewer than the minimum of two: skipped, and it rolls over.
        quiet = add_article(session, "A quiet week", MONDAY + week + 3 * DAY)
        status, reason, _ = summary(2)
        assert status is IssueStatus.SKIPPED
        assert reason is not None
        assert reason.startswith("1 new article(s)")
        busy = add_article(session, "A busy week", MONDAY + 2 * week + 3 * DAY)
        status, _, carried = summary(3)
        assert status is IssueStatus.PLANNED
        assert carried == {quiet, busy}


def test_a_summary_after_weeks_without_the_choice_covers_one_week(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = daily_newsletter(session)
        add_reader(session, "weekly@example.org", "weekly")
        add_article(session, "Spring", MONDAY - DAY)
        plan_issue(session, newsletter_id, MONDAY, edition=Edition.WEEKLY)
        update_newsletter(session, SLUG, NewsletterChanges(allow_frequency=False))
        for week in range(1, 9):  # two months of regular issues only
            add_article(session, f"Week {week}", MONDAY + week * 7 * DAY - DAY)
        update_newsletter(session, SLUG, NewsletterChanges(allow_frequency=True))
        last_week = add_article(session, "Last week", MONDAY + 9 * 7 * DAY - DAY)
        result = plan_issue(session, newsletter_id, MONDAY + 9 * 7 * DAY, edition=Edition.WEEKLY)
        assert articles_of(session, result.issue_id) == {last_week}


def test_switching_the_choice_on_mid_week_waits_for_the_next_week(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = daily_newsletter(session, allow=False)
        add_reader(session, "weekly@example.org", None)
        wednesday = MONDAY + 2 * DAY + timedelta(minutes=1)
        update_newsletter(session, SLUG, NewsletterChanges(allow_frequency=True))
        assert due_editions(session, wednesday) == [(newsletter_id, Edition.REGULAR)]
        next_monday = MONDAY + 7 * DAY + timedelta(minutes=1)
        assert due_editions(session, next_monday) == [
            (newsletter_id, Edition.REGULAR),
            (newsletter_id, Edition.WEEKLY),
        ]
        # Missed by a down scheduler at 07:00, still due later that Monday.
        assert (newsletter_id, Edition.WEEKLY) in due_editions(session, next_monday + 5 * HOUR)


def test_an_older_weekly_newsletter_with_the_choice_can_still_be_renamed(
    runtime: Runtime,
) -> None:
    with transaction(runtime.sessions) as session:
        create_newsletter(session, "weekly", "Weekly", cron="0 8 * * 1")
        # As an earlier version allowed: the choice on a weekly schedule.
        newsletter_by_slug(session, "weekly").allow_frequency = True
    with transaction(runtime.sessions) as session:
        update_newsletter(session, "weekly", NewsletterChanges(name="The Weekly"))
    with runtime.sessions() as session:
        assert newsletter_by_slug(session, "weekly").name == "The Weekly"


def test_withdrawing_the_choice_sends_weekly_readers_every_issue(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = daily_newsletter(session)
        every = add_reader(session, "every@example.org", None)
        weekly = add_reader(session, "weekly@example.org", "weekly")
        add_article(session, "A story", MONDAY - DAY)
        update_newsletter(session, SLUG, NewsletterChanges(allow_frequency=False))
        assert due_editions(session, MONDAY) == [(newsletter_id, Edition.REGULAR)]
        regular = plan_issue(session, newsletter_id, MONDAY)
        assert audience(session, regular.issue_id) == {every, weekly}


def test_planning_the_summary_twice_makes_one_issue(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = daily_newsletter(session)
        add_reader(session, "weekly@example.org", "weekly")
        add_article(session, "A story", MONDAY - DAY)
        first = plan_issue(session, newsletter_id, MONDAY, edition=Edition.WEEKLY)
        # Later in the same week, from another scheduler tick: the same summary.
        again = plan_issue(session, newsletter_id, MONDAY + 3 * DAY, edition=Edition.WEEKLY)
        assert (again.issue_id, again.created, again.deliveries) == (first.issue_id, False, 1)


# --- end to end: the scheduler's task, the outbox, and the operator's commands -------------


def test_the_scheduler_sends_the_summary_only_to_weekly_readers(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Beat's tick a minute after the week's first scheduled time; sending runs for real.
    tick = MONDAY + timedelta(minutes=1)
    monkeypatch.setattr(tasks, "utcnow", lambda: tick)
    with installed_runtime(tmp_path, database_url) as runtime:
        with transaction(runtime.sessions) as session:
            daily_newsletter(session)
            add_reader(session, "every@example.org", None)
            add_reader(session, "weekly@example.org", "weekly")
            add_article(session, "Yesterday's story", MONDAY - DAY)
        tasks.plan_due_issues()
        received = {
            str(message["To"]): message
            for message in (parse(raw) for raw in maildir_messages(runtime))
        }
        assert sorted(received) == ["every@example.org", "weekly@example.org"]
        with runtime.sessions() as session:
            issues = {i.edition: i for i in session.scalars(select(Issue))}
        assert set(issues) == {Edition.REGULAR, Edition.WEEKLY}
        assert all(i.status is IssueStatus.SENT and i.sent_count == 1 for i in issues.values())
        # Each reader's message is from the issue of their edition.
        for address, edition in (("every", Edition.REGULAR), ("weekly", Edition.WEEKLY)):
            message_id = str(received[f"{address}@example.org"]["Message-ID"])
            assert message_id.startswith(f"<{issues[edition].public_id}.")
        # The choice withdrawn after beat enqueued the summary: the task plans nothing.
        with transaction(runtime.sessions) as session:
            update_newsletter(session, SLUG, NewsletterChanges(allow_frequency=False))
            newsletter_id = newsletter_by_slug(session, SLUG).id
        tasks.plan_newsletter(newsletter_id, "weekly")
        with runtime.sessions() as session:
            assert len(session.scalars(select(Issue)).all()) == 2


def cli(folder: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
    env["GAZETTE_DATABASE_URL"] = database_url
    return subprocess.run(
        [*GAZETTE, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )


def test_operator_commands_for_the_weekly_summary(tmp_path: Path, database_url: str) -> None:
    def ok(*args: str) -> str:
        result = cli(tmp_path, database_url, *args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    ok("init")
    ok("newsletters", "add", SLUG, "--name", "Morning Brief", "--schedule", DAILY)
    ok("newsletters", "add", "weekly", "--name", "W")
    refused = cli(tmp_path, database_url, "newsletters", "edit", "weekly", "--allow-frequency")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "gazette: weekly is sent on schedule '0 8 * * 1', at most weekly already: a choice of "
        "a weekly summary needs a schedule that fires more often."
    ]
    no_summary = cli(tmp_path, database_url, "digest", "send", SLUG, "--weekly")
    assert no_summary.returncode == 1
    assert "morning has no weekly edition" in no_summary.stderr
    ok("newsletters", "edit", SLUG, "--allow-frequency")
    ok("subscribers", "add", "every@example.org", "--newsletter", SLUG, "--confirmed")
    ok("subscribers", "add", "weekly@example.org", "--newsletter", SLUG, "--confirmed")
    ok("articles", "add", "--title", "Night trains", "--url", "https://example.org/trains")
    runtime = build_runtime(load_settings({"GAZETTE_DATABASE_URL": database_url}, cwd=tmp_path))
    try:
        with transaction(runtime.sessions) as session:
            subscriber = session.scalars(
                select(Subscriber).where(Subscriber.email == "weekly@example.org")
            ).one()
            update_preferences(
                session, subscriber.public_id, SLUG, Origin("web"), language="en", topics=[],
                frequency="weekly",
            )  # fmt: skip
    finally:
        runtime.engine.dispose()

    # The preview follows the reader's choice unless told otherwise.
    own = ok("digest", "preview", SLUG, "--as", "weekly@example.org")
    assert "1 article(s) (weekly summary)" in own
    forced = ok("digest", "preview", SLUG, "--as", "weekly@example.org", "--regular")
    assert "(weekly summary)" not in forced
    sent = ok("digest", "send", SLUG, "--weekly")
    regular_only = cli(tmp_path, database_url, "newsletters", "edit", SLUG, "--no-allow-frequency")
    assert regular_only.returncode == 0, regular_only.stderr
    # Without the choice the weekly reader gets every issue, and the preview says so.
    withdrawn = ok("digest", "preview", SLUG, "--as", "weekly@example.org")
    assert "(weekly summary)" not in withdrawn
    ok("newsletters", "edit", SLUG, "--allow-frequency")
    assert "1 article(s), 1 reader(s)" in sent
    regular = ok("digest", "send", SLUG)
    assert "1 article(s), 1 reader(s)" in regular
    status = ok("digest", "status", "--json")
    editions = sorted((row["edition"], row["sent"]) for row in json.loads(status)["issues"])
    assert editions == [("regular", 1), ("weekly", 1)]


def test_the_archive_lists_regular_issues_and_still_opens_a_summary(
    tmp_path: Path, database_url: str
) -> None:
    with installed_runtime(tmp_path, database_url) as runtime:
        now = datetime.now(UTC)
        with transaction(runtime.sessions) as session:
            newsletter_id = daily_newsletter(session)
            add_reader(session, "every@example.org", None)
            add_reader(session, "weekly@example.org", "weekly")
            add_article(session, "Night trains", now - DAY)
            regular = plan_issue(session, newsletter_id, now)
            summary = plan_issue(session, newsletter_id, now, edition=Edition.WEEKLY)
            public_ids = {
                i.id: i.public_id
                for i in session.scalars(
                    select(Issue).where(Issue.id.in_([regular.issue_id, summary.issue_id]))
                )
            }
        tasks.enqueue_issue(regular.issue_id)
        tasks.enqueue_issue(summary.issue_id)
        ctx = runtime.send_context
        with runtime.sessions() as session:
            listed = [entry.public_id for entry in list_archive(session, ctx)]
            opened = archived_issue(session, ctx, public_ids[summary.issue_id])
        assert listed == [public_ids[regular.issue_id]]
        assert [a.title for a in opened.view.articles] == ["Night trains"]
