"""The WSGI endpoint under load: wrk against `gazette serve` (gunicorn) on PostgreSQL.

Fifty connections for thirty seconds on loopback, each alternating an RFC 8058
one-click unsubscribe POST (rotating over readers who each have a pending delivery in a
planned issue) with GET /subscribe. The bound is no error at all; then the database
must show exactly what the POSTs asked for: every reader unsubscribed has their
pending delivery skipped and one audit event, everyone else is untouched.

Speed is recorded, never asserted: the machine that runs this may be small and busy.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from benchmarks.harness import seeding as data
from benchmarks.harness import webload as web
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Event,
    Issue,
    IssueStatus,
    Subscription,
    SubscriptionStatus,
)
from tests.support.env import PG_URL
from tests.support.figures import record

pytestmark = pytest.mark.reliability

READERS = 20_000
CONNECTIONS = 50
SECONDS = 30


@pytest.mark.timeout(600)
@pytest.mark.skipif(
    PG_URL is None, reason="set GAZETTE_TEST_DATABASE_URL: the load runs on PostgreSQL"
)
def test_web_endpoint_under_load_answers_every_request_and_records_every_unsubscribe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = web.wrk_path()
    if program is None:
        pytest.fail("wrk is not on PATH: install Debian's wrk package (apt-get install wrk).")
    # The benchmark harness makes its schema on BENCH_PG_URL; here it goes where the
    # rest of the suite's PostgreSQL tests go.
    monkeypatch.setattr(data, "PG_URL", PG_URL)

    with web.serving(READERS, tmp_path / "web") as (server, runtime):
        run = web.run_wrk(
            program,
            server.base,
            web.mixed_script(server.unsubscribe_paths),
            SECONDS,
            tmp_path,
            connections=CONNECTIONS,
        )
        # One snapshot: POSTs still in flight when wrk stopped may commit meanwhile,
        # and each commits a subscription, its delivery and its event together.
        with runtime.engine.connect().execution_options(
            isolation_level="REPEATABLE READ"
        ) as connection:
            issues = connection.execute(select(Issue.id, Issue.status)).all()
            subscriptions = dict(
                connection.execute(select(Subscription.subscriber_id, Subscription.status)).all()
            )
            deliveries = connection.execute(
                select(Delivery.issue_id, Delivery.subscriber_id, Delivery.status)
            ).all()
            events = connection.execute(
                select(Event.kind, Event.subscriber_id, Event.source, Event.ip)
            ).all()
    log = (tmp_path / "web" / "serve.log").read_text(errors="replace")

    assert run.errors == 0, f"{run.errors} errors under load: {run}"
    assert run.posts is not None
    assert run.gets is not None
    assert run.fresh_posts is not None
    # Both kinds of request were made.
    assert run.posts > 0, run
    assert run.gets > 0, run
    # Each thread alternates POST, GET, POST...: at most one more POST than GET per thread.
    assert 0 <= run.posts - run.gets <= 2, run
    # With no errors, every request made was answered but those in flight at the stop.
    in_flight = run.posts + run.gets - run.requests
    assert 0 <= in_flight <= CONNECTIONS, run
    assert "Traceback" not in log

    ((issue_id, issue_status),) = issues
    assert issue_status == IssueStatus.PLANNED
    assert set(subscriptions.values()) <= {
        SubscriptionStatus.ACTIVE,
        SubscriptionStatus.UNSUBSCRIBED,
    }
    unsubscribed = {s for s, st in subscriptions.items() if st == SubscriptionStatus.UNSUBSCRIBED}
    assert 0 < len(unsubscribed) <= min(READERS, run.posts)
    # Every answered POST that named a reader no earlier POST had named unsubscribed them.
    assert len(unsubscribed) >= run.fresh_posts - in_flight, run

    # The planned issue holds one delivery per reader: skipped for those unsubscribed,
    # still pending for everyone else.
    assert {i for i, _, _ in deliveries} == {issue_id}
    assert sorted(s for _, s, _ in deliveries) == sorted(subscriptions)
    not_skipped = [
        s for _, s, st in deliveries if s in unsubscribed and st != DeliveryStatus.SKIPPED
    ]
    assert not_skipped == [], f"{len(not_skipped)} unsubscribed reader(s) still to be sent"
    not_pending = [
        s for _, s, st in deliveries if s not in unsubscribed and st != DeliveryStatus.PENDING
    ]
    assert not_pending == [], f"{len(not_pending)} subscribed reader(s) no longer pending"

    # One "unsubscribed" event per reader unsubscribed, from the web, from loopback; the
    # GETs and the repeated POSTs wrote nothing.
    assert Counter(kind for kind, _, _, _ in events) == {"unsubscribed": len(unsubscribed)}
    assert Counter(s for _, s, _, _ in events) == Counter(unsubscribed)
    assert {(source, ip) for _, _, source, ip in events} == {("web", "127.0.0.1")}

    assert run.duration_s is not None
    record(
        "WSGI endpoint under load (PostgreSQL)",
        f"wrk, {CONNECTIONS} connections (2 threads) for {SECONDS} s on loopback: one-click "
        f"unsubscribe POSTs and GET /subscribe alternating, {web.server_words()} on PostgreSQL, "
        f"{READERS:,} readers with a planned issue",
        f"{run.requests_per_s:,.0f} req/s ({run.posts / run.duration_s:,.0f} POST, "
        f"{run.gets / run.duration_s:,.0f} GET per s), p50 {run.p50_ms:,.0f} ms, "
        f"p99 {run.p99_ms:,.0f} ms, {run.errors} errors; {len(unsubscribed):,} readers "
        "unsubscribed, each with the delivery skipped and one event",
        "errors = 0; every reader unsubscribed: delivery skipped, one event",
    )
