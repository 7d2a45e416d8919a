"""The ledger without foreign keys: forgetting a reader still removes their rows, and the
migration that drops the keys keeps every row (and gives the keys back on the way down)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, func, inspect, select

from gazette.digests.planning import plan_issue
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store import migrate
from gazette.store.db import transaction
from gazette.store.models import Delivery, Subscriber, utcnow
from gazette.subscribers.service import Origin
from gazette.subscribers.unsubscribing import forget
from tests.support.digests import add_article, add_readers

BEFORE = "brand150009"  # 0010, the last revision with the ledger's foreign keys
KEYS = {"fk_delivery_issue_id_issue", "fk_delivery_subscriber_id_subscriber"}


def ledger_keys(engine: Engine) -> set[str]:
    """The names of the delivery table's foreign keys."""
    return {key["name"] or "" for key in inspect(engine).get_foreign_keys("delivery")}


def test_forgetting_a_reader_removes_their_ledger_rows_only(runtime: Runtime) -> None:
    now = utcnow()
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, "weekly", "Weekly")
        add_article(session, "Harbour news", now - timedelta(hours=1))
    add_readers(
        runtime, [("ada@example.org", "Ada", "en"), ("bob@example.org", "Bob", "en")], "weekly"
    )
    with transaction(runtime.sessions) as session:
        assert plan_issue(session, newsletter_id, now).deliveries == 2
    with transaction(runtime.sessions) as session:
        forget(session, "ada@example.org", Origin("cli"))
    with runtime.sessions() as session:
        left = session.execute(
            select(Subscriber.email).join(Delivery, Delivery.subscriber_id == Subscriber.id)
        ).scalars()
        assert list(left) == ["bob@example.org"]
        assert session.scalar(select(func.count()).select_from(Delivery)) == 1


def test_the_migration_drops_the_keys_and_keeps_the_ledger(runtime: Runtime) -> None:
    engine = runtime.engine
    migrate.downgrade(engine, BEFORE)
    assert ledger_keys(engine) == KEYS
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO newsletter (id, slug, name, description, schedule_cron, timezone, "
            "min_articles, max_articles, allow_frequency, template_set, default_language, "
            "created_at, content_mode, excerpt_words, article_languages) VALUES (7, 'w', 'W', "
            "'', '0 8 * * 1', 'UTC', 1, 20, false, 'digest', 'en', "
            "'2025-06-02 08:00:00+00:00', 'excerpt', 60, 'all')"
        )
        connection.exec_driver_sql(
            "INSERT INTO subscriber (id, public_id, email, name, language, created_at, "
            "consent_source, bounce_count, attributes, email_key) VALUES (7, 'p7', "
            "'a@example.org', '', 'en', '2025-06-02 08:00:00+00:00', 'cli', 0, '{}', "
            "'a@example.org')"
        )
        connection.exec_driver_sql(
            "INSERT INTO issue (id, public_id, newsletter_id, period_key, status, cutoff_at, "
            "planned_at, sent_count, failed_count, skipped_count, edition) VALUES (7, 'i7', 7, "
            "'2025-06-02T08:00Z', 'sent', '2025-06-02 08:00:00+00:00', "
            "'2025-06-02 08:00:00+00:00', 1, 0, 0, 'regular')"
        )
        connection.exec_driver_sql(
            "INSERT INTO delivery (id, issue_id, subscriber_id, status, attempts) "
            "VALUES (7, 7, 7, 'sent', 1)"
        )
    migrate.upgrade(engine)
    assert ledger_keys(engine) == set()
    with engine.begin() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM delivery").scalar() == 1
        # A row whose reader is gone (forgotten while its issue was being planned).
        connection.exec_driver_sql(
            "INSERT INTO delivery (id, issue_id, subscriber_id, status, attempts) "
            "VALUES (8, 7, 999, 'pending', 0)"
        )
    migrate.downgrade(engine, BEFORE)
    assert ledger_keys(engine) == KEYS
    with engine.connect() as connection:
        kept = connection.exec_driver_sql("SELECT id FROM delivery").scalars().all()
    assert kept == [7]
