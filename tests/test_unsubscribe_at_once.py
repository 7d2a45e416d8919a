"""Unsubscribing ends the subscription, skips what is still pending, counts and logs it.

PostgreSQL does it in one statement, SQLite in several; neither touches the issue's
row, so one-click bursts do not queue on it, and /metrics counts the skipped rows.
Both must leave the same rows, on both backends.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from gazette.errors import GazetteError
from gazette.metrics import issue_figures
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Event,
    Issue,
    IssueStatus,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    SubscriptionTally,
    utcnow,
)
from gazette.subscribers import unsubscribe_statement as statement
from gazette.subscribers.service import Origin
from gazette.subscribers.unsubscribing import unsubscribe, unsubscribe_link
from tests.digests.helpers import new_newsletter
from tests.support.digests import (
    NAME,
    SLUG,
    ArticleSpec,
    SeededReader,
    add_articles,
    add_readers,
    plan,
)
from tests.support.env import PG_URL

WEB = Origin("web", "192.0.2.7")
READERS = [(f"r{n}@example.com", f"R{n}", "en") for n in range(6)]


def _skipped_and_events(runtime: Runtime, issues: list[int]) -> tuple[list[int], int]:
    """Each issue's skipped messages as /metrics reports them, and the "unsubscribed" events.

    The issues are open, so their own skipped_count stays 0 until they finish.
    """
    with runtime.sessions() as session:
        figures = {f.issue_id: f.outcomes["skipped"] for f in issue_figures(session, utcnow())}
        skipped = [figures[i] for i in issues]
        assert [session.get_one(Issue, i).skipped_count for i in issues] == [0] * len(issues)
        events = session.scalar(
            select(func.count()).select_from(Event).where(Event.kind == "unsubscribed")
        )
    return skipped, events or 0


def _tally(runtime: Runtime, newsletter_id: int) -> dict[str, int]:
    with runtime.sessions() as session:
        rows = session.execute(
            select(SubscriptionTally.status, func.sum(SubscriptionTally.count))
            .where(SubscriptionTally.newsletter_id == newsletter_id)
            .group_by(SubscriptionTally.status)
        ).all()
    return {str(status.value): count for status, count in rows if count}


@pytest.fixture
def two_issues(runtime: Runtime) -> tuple[int, list[int], dict[str, SeededReader]]:
    """Six readers, each with a pending delivery in two planned issues."""
    newsletter_id = new_newsletter(runtime)
    now = utcnow()
    readers = add_readers(runtime, READERS)
    add_articles(runtime, [ArticleSpec("First", "https://news.example.org/1", 30)], now)
    first, _, _ = plan(runtime, newsletter_id, now - timedelta(hours=24), "p1")
    add_articles(runtime, [ArticleSpec("Second", "https://news.example.org/2", 2)], now)
    second, _, _ = plan(runtime, newsletter_id, now, "p2")
    return newsletter_id, [first, second], readers


def test_a_link_skips_every_pending_delivery_and_counts_and_logs_it_once(
    runtime: Runtime, two_issues: tuple[int, list[int], dict[str, SeededReader]]
) -> None:
    newsletter_id, issues, readers = two_issues
    reader = readers["r0@example.com"]
    with transaction(runtime.sessions) as session:
        done = unsubscribe_link(session, reader.public_id, SLUG, WEB)
    assert (done.changed, done.language, done.newsletter.name) == (True, "en", NAME)
    with transaction(runtime.sessions) as session:
        again = unsubscribe_link(session, reader.public_id, SLUG, WEB)
    assert again.changed is False

    with runtime.sessions() as session:
        statuses = session.execute(
            select(Delivery.issue_id, Delivery.status, Delivery.last_error)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Subscriber.public_id == reader.public_id)
            .order_by(Delivery.issue_id)
        ).all()
        assert statuses == [(i, DeliveryStatus.SKIPPED, "unsubscribed") for i in issues]
        others = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.status == DeliveryStatus.PENDING)
        )
        assert others == 2 * (len(READERS) - 1)
        events = session.execute(select(Event.kind, Event.source, Event.ip, Event.detail)).all()
        assert [e for e in events if e.kind == "unsubscribed"] == [
            ("unsubscribed", "web", "192.0.2.7", {})
        ]
        subscription = session.scalars(
            select(Subscription).where(Subscription.newsletter_id == newsletter_id)
        ).all()
        assert sorted(s.status.value for s in subscription) == ["active"] * 5 + ["unsubscribed"]
    assert _tally(runtime, newsletter_id) == {"active": 5, "unsubscribed": 1}
    assert _skipped_and_events(runtime, issues) == ([1, 1], 1)


def test_a_link_to_a_newsletter_that_is_gone_names_it_and_changes_nothing(
    runtime: Runtime, two_issues: tuple[int, list[int], dict[str, SeededReader]]
) -> None:
    _newsletter_id, issues, readers = two_issues
    reader = readers["r1@example.com"]
    with transaction(runtime.sessions) as session:
        with pytest.raises(GazetteError, match="There is no newsletter 'gone-weekly'"):
            unsubscribe_link(session, reader.public_id, "gone-weekly", WEB)
        with pytest.raises(GazetteError, match="no longer exists"):
            unsubscribe_link(session, "no-such-reader00", SLUG, WEB)
    assert _skipped_and_events(runtime, issues) == ([0, 0], 0)


def test_a_reader_with_nothing_pending_changes_no_issue(
    runtime: Runtime, two_issues: tuple[int, list[int], dict[str, SeededReader]]
) -> None:
    newsletter_id, issues, readers = two_issues
    with transaction(runtime.sessions) as session:
        session.execute(
            Delivery.__table__.update().values(status=DeliveryStatus.SENT)  # type: ignore[attr-defined]
        )
    with transaction(runtime.sessions) as session:
        reader_id = session.scalar(
            select(Subscription.subscriber_id).where(Subscription.newsletter_id == newsletter_id)
        )
        assert reader_id is not None
        assert unsubscribe(session, reader_id, newsletter_id, WEB) is True
    assert _skipped_and_events(runtime, issues) == ([0, 0], 1)
    del readers


def test_clicks_at_the_same_moment_change_it_once_and_others_all_once(
    runtime: Runtime, two_issues: tuple[int, list[int], dict[str, SeededReader]]
) -> None:
    """Every reader clicks three times from three threads at once (PostgreSQL's case)."""
    newsletter_id, issues, readers = two_issues

    def click(public_id: str) -> bool:
        with transaction(runtime.sessions) as session:
            return unsubscribe_link(session, public_id, SLUG, WEB).changed

    ids = [r.public_id for r in readers.values()] * 3
    with ThreadPoolExecutor(max_workers=6) as pool:
        changed = list(pool.map(click, ids))
    assert sum(changed) == len(READERS)
    assert _skipped_and_events(runtime, issues) == ([6, 6], len(READERS))
    with runtime.sessions() as session:
        assert session.scalar(
            select(func.count()).select_from(Delivery).where(
                Delivery.status == DeliveryStatus.PENDING)
        ) == 0  # fmt: skip
        assert {s for (s,) in session.execute(select(Subscription.status))} == {
            SubscriptionStatus.UNSUBSCRIBED
        }
    assert _tally(runtime, newsletter_id) == {"unsubscribed": len(READERS)}


def _rows_read(plan: dict[str, Any], table: str) -> int:
    """How many rows the plan's scans of ``table`` returned or filtered out, all loops."""
    read = 0
    if plan.get("Relation Name") == table and "Scan" in plan["Node Type"]:
        per_loop = plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)
        read += per_loop * plan["Actual Loops"]
    return read + sum(_rows_read(child, table) for child in plan.get("Plans", []))


@pytest.mark.skipif(PG_URL is None, reason="set GAZETTE_TEST_DATABASE_URL: PostgreSQL's planner")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_click_reads_the_readers_own_rows_while_statistics_call_pending_rare(
    runtime: Runtime,
) -> None:
    """The statistics of a ledger analysed before an issue was planned: no row pending.

    So it is in production: planning adds an issue's rows at once, and ANALYZE comes
    much later (never, for a ledger ten times larger). Through (issue_id, status)
    PostgreSQL would then read every pending row of the issue on every click.
    """
    newsletter_id = new_newsletter(runtime)
    now = utcnow()
    readers = add_readers(runtime, [(f"r{n}@example.com", f"R{n}", "en") for n in range(600)])
    add_articles(runtime, [ArticleSpec("First", "https://news.example.org/1", 30)], now)
    first, _, _ = plan(runtime, newsletter_id, now - timedelta(hours=24), "p1")
    with transaction(runtime.sessions) as session:
        session.execute(text("ALTER TABLE delivery SET (autovacuum_enabled = false)"))
        session.execute(
            update(Delivery).where(Delivery.issue_id == first).values(status=DeliveryStatus.SENT)
        )
        session.execute(update(Issue).where(Issue.id == first).values(status=IssueStatus.SENT))
    with runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE delivery"))
    add_articles(runtime, [ArticleSpec("Second", "https://news.example.org/2", 2)], now)
    second, _, _ = plan(runtime, newsletter_id, now, "p2")

    reader = readers["r7@example.com"]
    with runtime.sessions() as session:
        reader_id = session.scalars(
            select(Subscriber.id).where(Subscriber.public_id == reader.public_id)
        ).one()
        params = statement.parameters(WEB, utcnow(), reader=reader_id, newsletter=newsletter_id)
        params["detail"] = json.dumps(params["detail"])
        (explained,) = session.execute(
            text("EXPLAIN (ANALYZE, FORMAT JSON) " + str(statement.BY_IDS.element)), params
        ).one()
        session.rollback()
    # The reader's row of the open issue, found by the unique index, then by its id.
    assert _rows_read(explained[0]["Plan"], "delivery") == 2
    with transaction(runtime.sessions) as session:
        assert unsubscribe(session, reader_id, newsletter_id, WEB)
    with runtime.sessions() as session:
        rows = session.execute(
            select(Delivery.issue_id, Delivery.status).where(Delivery.subscriber_id == reader_id)
        ).all()
    assert sorted(rows) == [(first, DeliveryStatus.SENT), (second, DeliveryStatus.SKIPPED)]
