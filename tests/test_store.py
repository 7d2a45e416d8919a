"""The store: migrations match the models, SQLite is configured for several writers,
unique keys hold, and timestamps are always aware UTC."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, func, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from gazette.store import migrate
from gazette.store.db import (
    SQLITE_BUSY_TIMEOUT_MS,
    make_engine,
    make_session_factory,
    make_statement_engine,
    run_statement,
    transaction,
)
from gazette.store.models import Base, Delivery, Issue, Newsletter, Subscriber, Subscription
from tests.support.env import PG_URL
from tests.support.figures import record

KYIV = ZoneInfo("Europe/Kyiv")


@pytest.fixture
def migrated(engine: Engine) -> Engine:
    """The same engine after the migrations ran."""
    migrate.upgrade(engine)
    return engine


def schema_snapshot(engine: Engine) -> dict[str, Any]:
    """Tables with their columns, indexes, unique constraints and foreign keys, comparable."""
    inspector = inspect(engine)
    snapshot: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        snapshot[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)
            ],
            "indexes": sorted(
                (i["name"] or "", tuple(str(c) for c in i["column_names"]))
                for i in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"] or "", tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "foreign_keys": sorted(
                (f["name"] or "", tuple(f["constrained_columns"]), f["referred_table"])
                for f in inspector.get_foreign_keys(table)
            ),
        }
    return snapshot


# --- migrations ---------------------------------------------------------------------------


def test_migrations_produce_exactly_the_models_schema(engine: Engine) -> None:
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
    tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
    assert tables == set(Base.metadata.tables)


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    migrate.upgrade(engine)
    before = schema_snapshot(engine)
    with transaction(make_session_factory(engine)) as session:
        session.add(Subscriber(email="kept@example.org"))
    migrate.upgrade(engine)
    assert schema_snapshot(engine) == before
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        emails = connection.execute(select(Subscriber.email)).scalars().all()
    assert [row[0] for row in versions] == [migrate.head_revision()]
    assert emails == ["kept@example.org"]


def test_current_revision_is_head_after_upgrade(engine: Engine) -> None:
    head = migrate.head_revision()
    assert head is not None
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == head


# --- SQLite connection settings -----------------------------------------------------------


def test_sqlite_connections_use_wal_foreign_keys_and_a_long_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'pragmas.db'}")
    try:
        # Two connections held at once (raw, so neither starts a write transaction):
        # every pooled connection is configured, not just the first.
        first, second = engine.raw_connection(), engine.raw_connection()
        try:
            for connection in (first, second):
                cursor = connection.cursor()
                journal = cursor.execute("PRAGMA journal_mode").fetchone()[0]
                foreign_keys = cursor.execute("PRAGMA foreign_keys").fetchone()[0]
                busy = cursor.execute("PRAGMA busy_timeout").fetchone()[0]
                cursor.close()
                assert str(journal).lower() == "wal"
                assert foreign_keys == 1
                assert isinstance(busy, int)
                assert busy >= 30_000
        finally:
            first.close()
            second.close()
        assert SQLITE_BUSY_TIMEOUT_MS >= 30_000
    finally:
        engine.dispose()


def refuse(factory: sessionmaker[Session], row: object, match: str | None = None) -> None:
    """Adding ``row`` in a transaction of its own must raise IntegrityError (rolled back)."""
    with factory() as session:
        session.add(row)
        with pytest.raises(IntegrityError, match=match):
            session.flush()


def test_foreign_keys_are_enforced(migrated: Engine) -> None:
    factory = make_session_factory(migrated)
    refuse(factory, Subscription(subscriber_id=424242, newsletter_id=434343))
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 0


# --- unique keys --------------------------------------------------------------------------


def _newsletter(session: Session, slug: str = "weekly") -> Newsletter:
    newsletter = Newsletter(slug=slug, name=slug.title())
    session.add(newsletter)
    session.flush()
    return newsletter


def rows(factory: sessionmaker[Session], model: type[Base]) -> int:
    """How many rows ``model``'s table holds."""
    with transaction(factory) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_duplicate_subscriber_email_is_refused(migrated: Engine) -> None:
    factory = make_session_factory(migrated)
    with transaction(factory) as session:
        session.add(Subscriber(email="same@example.org"))
    refuse(factory, Subscriber(email="same@example.org"), r"uq_subscriber_email|subscriber\.email")
    assert rows(factory, Subscriber) == 1


def test_duplicate_issue_for_one_period_is_refused(migrated: Engine) -> None:
    factory = make_session_factory(migrated)
    cutoff = datetime(2025, 6, 2, 8, tzinfo=UTC)
    with transaction(factory) as session:
        weekly = _newsletter(session, "weekly").id
        other = _newsletter(session, "other").id
        session.add(Issue(newsletter_id=weekly, period_key="2025-06-02T08:00Z", cutoff_at=cutoff))
        # The same key for another newsletter, or another key for this one, is fine.
        session.add(Issue(newsletter_id=other, period_key="2025-06-02T08:00Z", cutoff_at=cutoff))
        session.add(Issue(newsletter_id=weekly, period_key="2025-06-09T08:00Z", cutoff_at=cutoff))
    refuse(
        factory,
        Issue(newsletter_id=weekly, period_key="2025-06-02T08:00Z", cutoff_at=cutoff),
        r"uq_issue_newsletter_id|issue\.newsletter_id",
    )
    assert rows(factory, Issue) == 3


def test_duplicate_delivery_for_one_subscriber_is_refused(migrated: Engine) -> None:
    factory = make_session_factory(migrated)
    cutoff = datetime(2025, 6, 2, 8, tzinfo=UTC)
    with transaction(factory) as session:
        newsletter = _newsletter(session)
        reader = Subscriber(email="reader@example.org")
        first = Issue(newsletter_id=newsletter.id, period_key="a", cutoff_at=cutoff)
        second = Issue(newsletter_id=newsletter.id, period_key="b", cutoff_at=cutoff)
        session.add_all([reader, first, second])
        session.flush()
        session.add(Delivery(issue_id=first.id, subscriber_id=reader.id))
        # The same reader in another issue is fine.
        session.add(Delivery(issue_id=second.id, subscriber_id=reader.id))
        issue_id, reader_id = first.id, reader.id
    refuse(
        factory,
        Delivery(issue_id=issue_id, subscriber_id=reader_id),
        r"uq_delivery_issue_id|delivery\.issue_id",
    )
    assert rows(factory, Delivery) == 2


# --- timestamps ---------------------------------------------------------------------------


def test_naive_datetime_is_refused(migrated: Engine) -> None:
    factory = make_session_factory(migrated)
    with factory() as session:
        session.add(Subscriber(email="naive@example.org", created_at=datetime(2025, 1, 1, 12)))
        with pytest.raises(StatementError, match="naive datetime") as caught:
            session.flush()
    assert isinstance(caught.value.orig, ValueError)
    with pytest.raises(StatementError, match="naive datetime"), migrated.connect() as connection:
        connection.execute(
            select(Subscriber.id).where(Subscriber.created_at < datetime(2025, 1, 1))
        )
    assert rows(factory, Subscriber) == 0


def test_timestamps_come_back_aware_utc(migrated: Engine) -> None:
    factory = make_session_factory(migrated)
    # 09:30:15 in Kyiv, the day clocks went forward (now UTC+3), is 06:30:15 UTC.
    local = datetime(2025, 3, 30, 9, 30, 15, 123456, tzinfo=KYIV)
    expected = datetime(2025, 3, 30, 6, 30, 15, 123456, tzinfo=UTC)
    with transaction(factory) as session:
        session.add(Subscriber(email="aware@example.org", created_at=local, confirmed_at=None))
    with factory() as session:
        created, confirmed = session.execute(
            select(Subscriber.created_at, Subscriber.confirmed_at)
        ).one()
        loaded = session.scalars(select(Subscriber)).one()
        # Comparisons with aware values work in SQL on both backends.
        later = session.scalar(
            select(func.count())
            .select_from(Subscriber)
            .where(Subscriber.created_at > datetime(2025, 3, 30, 6, 30, tzinfo=UTC))
        )
        earlier = session.scalar(
            select(func.count())
            .select_from(Subscriber)
            .where(Subscriber.created_at > datetime(2025, 3, 30, 6, 31, tzinfo=UTC))
        )
    assert confirmed is None
    for value in (created, loaded.created_at):
        assert value.tzinfo is not None
        offset = value.utcoffset()
        assert offset is not None
        assert offset.total_seconds() == 0
        assert value == expected
        assert (value.hour, value.minute, value.second, value.microsecond) == (6, 30, 15, 123456)
    assert (later, earlier) == (1, 0)
    # What is on disk is the UTC instant, not the local wall time with its zone dropped.
    with migrated.connect() as connection:
        if migrated.dialect.name == "sqlite":
            raw = connection.exec_driver_sql("SELECT created_at FROM subscriber").scalar()
        else:
            raw = connection.exec_driver_sql(
                "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
                "FROM subscriber"
            ).scalar()
    assert str(raw).startswith("2025-03-30 06:30:15")


# --- several processes writing one SQLite file ---------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from sqlalchemy import func, select
from gazette.store.db import make_engine, make_session_factory, transaction
from gazette.store.models import Subscriber

url, worker, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
engine = make_engine(url)
factory = make_session_factory(engine)
with engine.connect():
    pass
(folder / f"ready-{worker}").touch()
while not (folder / "go").exists():
    time.sleep(0.002)
started = time.time()
for n in range(200):
    email = f"writer{worker}-{n}@example.org"
    # Read, then write, in one short transaction: the pattern that fails at once with
    # "database is locked" when a deferred transaction meets another process's write.
    with transaction(factory) as session:
        session.scalar(select(func.count()).select_from(Subscriber))
        if session.scalar(select(Subscriber.id).where(Subscriber.email == email)) is None:
            session.add(Subscriber(email=email))
finished = time.time()
engine.dispose()
print(started, finished)
"""


@pytest.mark.reliability
def test_eight_processes_write_one_sqlite_file_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    setup = make_engine(url)
    try:
        migrate.upgrade(setup)
    finally:
        setup.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", WRITER, url, str(worker), str(tmp_path)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in range(8)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready-{n}").exists() for n in range(8)):
            assert all(p.poll() is None for p in processes), "a writer died before starting"
            assert time.monotonic() < deadline, "writers did not start"
            time.sleep(0.01)
        (tmp_path / "go").touch()
        outputs = [p.communicate(timeout=180) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    windows = []
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert "database is locked" not in stderr
        assert process.returncode == 0, stderr
        started, finished = (float(part) for part in stdout.split())
        windows.append((started, finished))
    # The writers really ran at the same time: every one started before any finished.
    assert max(start for start, _ in windows) < min(end for _, end in windows)

    check = make_engine(url)
    try:
        with check.connect() as connection:
            total = connection.execute(select(func.count()).select_from(Subscriber)).scalar()
            distinct = connection.execute(
                select(func.count(func.distinct(Subscriber.email)))
            ).scalar()
    finally:
        check.dispose()
    assert total == 1600
    assert distinct == 1600
    overlap = min(end for _, end in windows) - max(start for start, _ in windows)
    span = max(end for _, end in windows) - min(start for start, _ in windows)
    slowest = max(end - start for start, end in windows)
    locked = sum(stderr.count("database is locked") for _, stderr in outputs)
    record(
        "8 processes writing one SQLite file",
        "8 OS processes, released together, each writing 200 subscribers to one SQLite "
        "file, every row in its own read-then-write transaction",
        f"{total:,} rows ({distinct:,} distinct) written by 8 processes in {span:.1f} s, "
        f'all 8 writing at once for {overlap:.1f} s; {locked} "database is locked"; '
        f"slowest writer {slowest:.1f} s",
        "0 'database is locked'; 1,600 distinct rows",
    )


def test_adding_the_edition_keeps_every_issue_and_its_ledger(engine: Engine) -> None:
    """0003 changes the issue table; on SQLite that is a copy-and-drop, which with
    foreign keys on would cascade into the deliveries and the frozen articles."""
    migrate.upgrade(engine, "135314e7cf60")  # 0002, before the edition existed
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO newsletter (id, slug, name, description, schedule_cron, timezone, "
            "min_articles, max_articles, allow_frequency, template_set, default_language, "
            "created_at) VALUES (1, 'weekly', 'Weekly', '', '0 8 * * 1', 'UTC', 1, 20, "
            "false, 'digest', 'en', '2025-06-02 08:00:00+00:00')"
        )
        connection.exec_driver_sql(
            "INSERT INTO subscriber (id, public_id, email, name, language, created_at, "
            "consent_source, bounce_count, attributes) VALUES (1, 'p1', 'a@example.org', '', "
            "'en', '2025-06-02 08:00:00+00:00', 'cli', 0, '{}')"
        )
        connection.exec_driver_sql(
            "INSERT INTO article (id, guid, url, title, summary, author, fingerprint, "
            "published_at, created_at, updated_at) VALUES (1, 'g1', 'https://e.org/1', 'A', "
            "'', '', 'f1', '2025-06-01 08:00:00+00:00', '2025-06-01 08:00:00+00:00', "
            "'2025-06-01 08:00:00+00:00')"
        )
        connection.exec_driver_sql(
            "INSERT INTO issue (id, public_id, newsletter_id, period_key, status, cutoff_at, "
            "planned_at, sent_count, failed_count, skipped_count) VALUES (1, 'i1', 1, "
            "'2025-06-02T08:00Z', 'sent', '2025-06-02 08:00:00+00:00', "
            "'2025-06-02 08:00:00+00:00', 1, 0, 0)"
        )
        connection.exec_driver_sql(
            "INSERT INTO issue_article (issue_id, article_id, position) VALUES (1, 1, 0)"
        )
        connection.exec_driver_sql(
            "INSERT INTO delivery (id, issue_id, subscriber_id, status, attempts) "
            "VALUES (1, 1, 1, 'sent', 1)"
        )
    migrate.upgrade(engine)
    with engine.connect() as connection:
        counts = {
            table: connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
            for table in ("issue", "issue_article", "delivery")
        }
        edition = connection.exec_driver_sql("SELECT edition FROM issue").scalar()
    assert counts == {"issue": 1, "issue_article": 1, "delivery": 1}
    assert edition == "regular"
    # And back down again, keeping the ledger too.
    migrate.downgrade(engine, "135314e7cf60")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM delivery").scalar() == 1


# --- one-statement changes on a pool that does not ping --------------------------------


def _backend(connection: Connection) -> int:
    """The PostgreSQL server process serving the connection."""
    pid = connection.scalar(text("SELECT pg_backend_pid()"))
    assert isinstance(pid, int)
    return pid


def _ended(engine: Engine, pid: int) -> bool:
    """True once the server process ``pid`` has gone (within 10 s: it exits at once)."""
    alive = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
    deadline = time.monotonic() + 10
    with engine.connect() as admin:
        while admin.scalar(alive, {"pid": pid}) and time.monotonic() < deadline:
            admin.rollback()  # a new snapshot of pg_stat_activity
            time.sleep(0.01)
        return bool(admin.scalar(alive, {"pid": pid}) == 0)


@pytest.mark.skipif(PG_URL is None, reason="set GAZETTE_TEST_DATABASE_URL: a server closes it")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_statement_whose_connection_the_server_closed_runs_again_on_a_new_one(
    engine: Engine,
) -> None:
    statements = make_statement_engine(engine)
    first = run_statement(statements, _backend)
    # The server ends the connection while it waits in the pool (a restart, an idle
    # timeout): the pool lends it unpinged, so the statement is what finds it dead.
    with engine.connect() as admin:
        assert admin.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    assert _ended(engine, first)
    calls: list[int] = []

    def counted(connection: Connection) -> int:
        calls.append(1)
        return _backend(connection)

    second = run_statement(statements, counted)
    assert second != first
    assert len(calls) == 2
    # Its pool goes with the engine's: a process that disposes before forking keeps none.
    pool = statements.pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedin() == 1
    engine.dispose()
    assert pool.checkedin() == 0


@pytest.mark.skipif(PG_URL is None, reason="set GAZETTE_TEST_DATABASE_URL: its pool is PG's")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_statement_connection_unused_for_long_is_replaced_not_lent(engine: Engine) -> None:
    now = [1000.0]
    statements = make_statement_engine(engine, idle_limit=30, clock=lambda: now[0])
    first = run_statement(statements, _backend)
    now[0] += 30  # a burst: the connection comes back at once, unpinged
    assert run_statement(statements, _backend) == first
    now[0] += 31  # a lull longer than the limit: a firewall may have dropped it
    second = run_statement(statements, _backend)
    assert second != first
    assert _ended(engine, first)  # closed, not leaked
    assert run_statement(statements, _backend) == second
    engine.dispose()


def test_a_statement_that_fails_on_a_live_connection_is_not_run_again(migrated: Engine) -> None:
    statements = make_statement_engine(migrated)
    calls: list[int] = []

    def failing(connection: Connection) -> None:
        calls.append(1)
        connection.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(DBAPIError) as raised:
        run_statement(statements, failing)
    assert not raised.value.connection_invalidated
    assert len(calls) == 1
