"""Scenario 3: two schedulers at once plan each issue once."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gazette.articles.service import ArticleInput, upsert_article
from gazette.newsletters.service import create_newsletter
from gazette.store.db import transaction
from gazette.store.models import Delivery, Issue, IssueArticle, IssueStatus
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.support.env import installed_env
from tests.support.figures import record
from tests.support.reliability import SLUG, address, plan_ticks, scenario

# The fault and hostile-input suite: `make reliability` runs it and writes its report.
pytestmark = pytest.mark.reliability


def test_reliability_two_schedulers_plan_one_issue_per_period(
    tmp_path: Path, database_url: str
) -> None:
    readers, ticks = 25, 10
    base = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    with installed_env(tmp_path, database_url) as (_env, runtime):
        with transaction(runtime.sessions) as session:
            newsletter_id = create_newsletter(session, SLUG, "Every Minute", cron="* * * * *")
            for n in range(readers):
                subscribe(session, address(n), SLUG, Origin("cli"), confirmed=True)
            for k in range(ticks):
                upsert_article(
                    session,
                    ArticleInput(
                        title=f"Minute {k}",
                        url=f"https://example.org/minute/{k}",
                        published_at=base + timedelta(minutes=k, seconds=1),
                    ),
                )
        # Two schedulers whose clocks tick at different seconds of the same minutes.
        schedules = [
            [(base + timedelta(minutes=k, seconds=offset)).isoformat() for k in range(ticks)]
            for offset in (5, 35)
        ]
        spawn = multiprocessing.get_context("spawn")
        barrier = spawn.Barrier(2)
        results = spawn.Queue()
        url = runtime.settings.database_url
        processes = [
            spawn.Process(
                target=plan_ticks,
                args=(name, url, newsletter_id, schedule, barrier, results),
            )
            for name, schedule in zip(("at :05", "at :35"), schedules, strict=True)
        ]
        started = time.monotonic()
        for process in processes:
            process.start()
        try:
            reports = dict(results.get(timeout=120) for _ in processes)
        finally:
            for process in processes:
                process.join(timeout=30)
                if process.is_alive():  # pragma: no cover - only when a child hangs
                    process.kill()
                    process.join(timeout=10)
            results.close()
            results.join_thread()
        elapsed = time.monotonic() - started
        with runtime.sessions() as session:
            issues = session.execute(
                select(Issue.id, Issue.period_key, Issue.status).order_by(Issue.id)
            ).all()
            per_issue = dict(
                session.execute(
                    select(Delivery.issue_id, func.count()).group_by(Delivery.issue_id)
                ).all()
            )
            repeated = session.execute(
                select(Delivery.issue_id, Delivery.subscriber_id)
                .group_by(Delivery.issue_id, Delivery.subscriber_id)
                .having(func.count() > 1)
            ).all()
            articles = Counter(session.scalars(select(IssueArticle.issue_id)))
    assert [p.exitcode for p in processes] == [0, 0]
    first, second = reports["at :05"], reports["at :35"]
    assert len(first) == len(second) == ticks
    created = [int(a[1]) + int(b[1]) for a, b in zip(first, second, strict=True)]
    winners = Counter(":05" if a[1] else ":35" for a, _b in zip(first, second, strict=True))
    # Both schedulers got the same issue at every tick, and only one of them created it.
    for (issue_a, _c, deliveries_a, key_a), (issue_b, _d, deliveries_b, key_b) in zip(
        first, second, strict=True
    ):
        assert (issue_a, deliveries_a, key_a) == (issue_b, deliveries_b, key_b)
        assert deliveries_a == readers
    assert created == [1] * ticks
    assert len(issues) == ticks
    assert len({key for _id, key, _status in issues}) == ticks
    assert {status for _id, _key, status in issues} == {IssueStatus.PLANNED}
    assert per_issue == {issue_id: readers for issue_id, _key, _status in issues}
    assert repeated == []
    assert articles == {issue_id: 1 for issue_id, _key, _status in issues}
    record(
        scenario("Two schedulers", database_url),
        f"two OS processes planned the same every-minute newsletter ({readers} readers) at "
        f"{ticks} successive ticks, meeting at a barrier before each",
        f"{len(issues)} issue(s) for {ticks} periods, {sum(created)} created by "
        f"{2 * ticks} plan calls (the :05 scheduler created {winners[':05']}, the :35 one "
        f"{winners[':35']}), {len(repeated)} repeated delivery; {elapsed:.1f} s",
        "exactly one issue per period, one delivery per reader per issue",
    )
