"""When the next issue is planned, and what waits for it (issue 19).

``planning.next_issue`` must say what the scheduler will do: each test plans issues
at injected times, asks when the next one comes, and checks the answer against
``due_editions``, the scheduler's own question. The CLI tests run `python -m gazette`
on the same database, so ``newsletters show --json`` and ``digest preview`` are read
as an operator reads them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from gazette.digests.planning import NextSend, due_editions, next_issue, plan_issue
from gazette.newsletters.service import Schedule, create_newsletter, retire_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Edition, utcnow
from tests.support.cli import NewsletterCli
from tests.support.digests import add_article
from tests.support.env import make_env

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# Monday 30 November 2026, 07:00 UTC; the week after it starts on Monday 7 December.
MONDAY = datetime(2026, 11, 30, 7, tzinfo=UTC)


def added(session: Session, cron: str, timezone: str = "UTC", **options: object) -> int:
    """A newsletter on ``cron`` with one article published the week before MONDAY."""
    newsletter_id = create_newsletter(
        session, "weekly", "The Weekly", cron=cron, timezone=timezone,
        **options,  # type: ignore[arg-type]
    )  # fmt: skip
    add_article(session, "Before the week", MONDAY - 2 * DAY)
    return newsletter_id


def due_at(session: Session, newsletter_id: int, now: datetime) -> bool:
    """The scheduler's answer: does its tick at ``now`` plan the regular edition?"""
    return (newsletter_id, Edition.REGULAR) in due_editions(session, now)


def agrees_with_scheduler(session: Session, newsletter_id: int, now: datetime) -> NextSend:
    """next_issue at ``now``, checked against due_editions at now and at the time it names."""
    send = next_issue(session, newsletter_id, now).send
    assert send is not None
    assert due_at(session, newsletter_id, now) is send.due_now
    assert due_at(session, newsletter_id, send.at)
    if not send.due_now:
        # Nothing is planned between now and then: a minute earlier is not due either.
        assert not due_at(session, newsletter_id, send.at - timedelta(minutes=1))
    return send


# --- the schedule's next time ---------------------------------------------------------------


def test_weekly_schedule_names_next_monday_across_the_week_boundary(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = added(session, "0 7 * * 1")
        plan_issue(session, newsletter_id, MONDAY)
        for now in (MONDAY + HOUR, MONDAY + 5 * DAY, MONDAY + 7 * DAY - timedelta(minutes=1)):
            coming = agrees_with_scheduler(session, newsletter_id, now)
            assert (coming.at, coming.due_now) == (datetime(2026, 12, 7, 7, tzinfo=UTC), False)


def test_daily_schedule_names_the_next_morning_across_the_week_boundary(
    runtime: Runtime,
) -> None:
    sunday = datetime(2026, 12, 6, 8, tzinfo=UTC)
    with transaction(runtime.sessions) as session:
        newsletter_id = added(session, "0 8 * * *")
        plan_issue(session, newsletter_id, sunday)
        coming = agrees_with_scheduler(session, newsletter_id, sunday + 12 * HOUR)
        assert coming.at == datetime(2026, 12, 7, 8, tzinfo=UTC)
        plan_issue(session, newsletter_id, coming.at)
        coming = agrees_with_scheduler(session, newsletter_id, coming.at + HOUR)
        assert coming.at == datetime(2026, 12, 8, 8, tzinfo=UTC)


def test_a_utc_schedule_keeps_its_hour_over_a_dst_change_and_a_zoned_one_moves(
    runtime: Runtime,
) -> None:
    """Europe moves its clocks on Sunday 28 March 2027: a UTC schedule does not move."""
    before = datetime(2027, 3, 22, 7, tzinfo=UTC)  # the Monday before the change
    with transaction(runtime.sessions) as session:
        newsletter_id = added(session, "0 7 * * 1")
        plan_issue(session, newsletter_id, before)
        coming = agrees_with_scheduler(session, newsletter_id, before + 3 * DAY)
        assert coming.at == datetime(2027, 3, 29, 7, tzinfo=UTC)
    # The same Monday 09:00 read in Kyiv is 07:00 UTC in winter and 06:00 UTC in summer.
    kyiv = Schedule("0 9 * * 1", "Europe/Kyiv")
    assert kyiv.next_fire(before + 3 * DAY).astimezone(UTC) == datetime(2027, 3, 29, 6, tzinfo=UTC)
    assert kyiv.next_fire(before - DAY).astimezone(UTC) == before


def test_a_period_with_no_issue_yet_is_due_now(runtime: Runtime) -> None:
    """The scheduler plans a period that has no issue at its next tick: show says so."""
    with transaction(runtime.sessions) as session:
        newsletter_id = added(session, "0 7 * * 1")
        now = MONDAY + 2 * DAY
        coming = agrees_with_scheduler(session, newsletter_id, now)
        assert (coming.due_now, coming.at) == (True, MONDAY)
        # Exactly at the slot's minute, too: the scheduler's tick then plans it.
        assert agrees_with_scheduler(session, newsletter_id, MONDAY).due_now
        # Once the slot's issue is planned (here: sent in this slot), the next is a week on.
        plan_issue(session, newsletter_id, now)
        coming = agrees_with_scheduler(session, newsletter_id, now)
        assert (coming.due_now, coming.at) == (False, MONDAY + 7 * DAY)


def test_an_issue_skipped_for_too_few_articles_still_covers_its_slot(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = added(session, "0 7 * * 1", min_articles=5)
        assert plan_issue(session, newsletter_id, MONDAY).skip_reason
        assert agrees_with_scheduler(session, newsletter_id, MONDAY + HOUR).at == MONDAY + 7 * DAY
        coming = next_issue(session, newsletter_id, MONDAY + HOUR)
        assert (coming.waiting, coming.min_articles) == (1, 5)


def test_a_retired_newsletter_is_not_scheduled(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = added(session, "0 7 * * 1")
        retire_newsletter(session, "weekly", MONDAY)
        assert next_issue(session, newsletter_id, MONDAY + DAY).send is None
        assert not due_at(session, newsletter_id, MONDAY + 7 * DAY)


# --- what waits for it ----------------------------------------------------------------------


def test_waiting_counts_what_the_edition_has_not_carried_yet(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        newsletter_id = added(session, "0 7 * * 1", max_articles=2)
        assert next_issue(session, newsletter_id, MONDAY - HOUR).waiting == 1
        plan_issue(session, newsletter_id, MONDAY)
        assert next_issue(session, newsletter_id, MONDAY + HOUR).waiting == 0
        for hours in (1, 2, 3):
            add_article(session, f"Later {hours}", MONDAY + hours * DAY)
        coming = next_issue(session, newsletter_id, MONDAY + 4 * DAY)
        assert (coming.waiting, coming.carried) == (3, 2)


# --- through the command line ---------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> NewsletterCli:
    runner = NewsletterCli(tmp_path, make_env(tmp_path, database_url), database_url)
    runner.ok("db", "upgrade")
    # Once a year, so the answer cannot change while the test runs (but on 1 January).
    runner.ok("newsletters", "add", "weekly", "--name", "The Weekly", "--schedule", "0 8 1 1 *")
    return runner


def test_show_json_has_next_send_at_in_utc(cli: NewsletterCli) -> None:
    before = utcnow()
    document = cli.show()
    after = utcnow()
    # A new newsletter's current period has no issue: the scheduler's next tick plans it.
    slots = {Schedule("0 8 1 1 *", "UTC").last_fire(at).isoformat() for at in (before, after)}
    assert document["next_send_at"] in slots
    assert document["next_send_due"] is True
    text = cli.ok("newsletters", "show", "weekly").stdout
    assert "Next issue: due now at the scheduler's next tick, for " in text
    cli.ok("digest", "send", "weekly")  # plans this period (skipped: nothing to send)
    document = cli.show()
    expected = Schedule("0 8 1 1 *", "UTC").next_fire(utcnow())
    assert document["next_send_at"] == expected.isoformat()
    assert document["next_send_due"] is False
    assert document["next_send_at"].endswith("+00:00")
    text = cli.ok("newsletters", "show", "weekly").stdout
    sentence = f"Next issue: {expected:%A} {expected.day} {expected:%B %Y} 08:00 UTC, 0 articles"
    assert sentence in text
    assert "next_send_at" not in text


def test_show_of_a_retired_newsletter_says_not_scheduled(cli: NewsletterCli) -> None:
    cli.ok("newsletters", "retire", "weekly")
    assert cli.show()["next_send_at"] is None
    assert "Next issue: not scheduled" in cli.ok("newsletters", "show", "weekly").stdout


def preview_count(cli: NewsletterCli) -> int:
    """How many articles `digest preview` says the next issue carries."""
    shown = re.search(r"(\d+) article\(s\)", cli.ok("digest", "preview", "weekly").stdout)
    assert shown is not None
    return int(shown.group(1))


def test_the_count_agrees_with_what_digest_preview_carries(cli: NewsletterCli) -> None:
    for n in (1, 2, 3):
        cli.ok("articles", "add", "--title", f"Post {n}", "--url", f"https://example.org/{n}")
    document = cli.show()
    assert document["waiting_articles"] == document["next_issue_articles"] == 3
    assert preview_count(cli) == 3
    assert "3 articles waiting." in cli.ok("newsletters", "show", "weekly").stdout
    cli.ok("newsletters", "edit", "weekly", "--max-articles", "2")
    document = cli.show()
    assert (document["waiting_articles"], document["next_issue_articles"]) == (3, 2)
    assert preview_count(cli) == 2
    text = cli.ok("newsletters", "show", "weekly").stdout
    assert "3 articles waiting (2 go in it, the rest roll over)." in text
