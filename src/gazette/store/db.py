"""Engines and sessions for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from gazette.errors import ConfigError

T = TypeVar("T")

# What code that runs Core statements only can run them on: a session's transaction,
# or a bare connection (run_statement's, which costs the one-click POST less CPU).
Executor: TypeAlias = Session | Connection

# A statement-engine connection unused for longer is replaced, not lent (see
# make_statement_engine): well under the idle timeouts of firewalls and NAT
# (minutes), and a reconnect after a lull costs a few milliseconds once.
STATEMENT_IDLE_LIMIT_S = 30.0

# Long enough to ride out another process's short write transaction, so SQLite's
# "database is locked" never reaches a user while several workers share one file.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def _configure_sqlite(engine: Engine) -> None:
    """Open every SQLite connection with WAL, foreign keys and a busy timeout.

    Transactions start with BEGIN IMMEDIATE: a transaction that reads and then writes
    would otherwise fail at once with "database is locked" when another process wrote
    in between (the busy handler does not apply to that upgrade), so every transaction
    takes the write lock up front and waits its turn.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to the "begin" hook below instead of pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(database_url: str, *, pre_ping: bool = True, **kwargs: Any) -> Engine:
    """Create the engine for a checked database URL (see config.parse_database_url).

    PostgreSQL's pool pings each connection before lending it unless ``pre_ping`` is
    False (the statement engine's pool, which replaces idle ones instead).
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=pre_ping, **kwargs)


def check_connection(engine: Engine) -> None:
    """Connect once, turning an unreachable database into one sentence for the operator."""
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        shown = engine.url.render_as_string(hide_password=True)
        raise ConfigError(
            f"Cannot open the database GAZETTE_DATABASE_URL={shown!r}: {reason}"
        ) from None


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory every entry point uses; objects stay usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def make_statement_engine(
    engine: Engine,
    *,
    idle_limit: float = STATEMENT_IDLE_LIMIT_S,
    clock: Callable[[], float] = time.monotonic,
) -> Engine:
    """The engine on which, on PostgreSQL, each statement commits on its own (autocommit).

    For code whose every change is one idempotent statement (the one-click unsubscribe),
    run through run_statement: no row lock it takes outlives the statement, and no BEGIN,
    COMMIT or ping costs a round trip. Its pool is its own, disposed with ``engine``'s,
    and does not ping a connection before lending it (the ping was one of the POST's
    three round trips) but replaces one left unused longer than ``idle_limit`` seconds
    by ``clock``: a firewall may have dropped it without a word, and a statement on it
    would wait for TCP to give up. On SQLite it is ``engine``, since its code there
    takes several statements in one transaction.
    """
    if engine.dialect.name != "postgresql":
        return engine
    unpinged = make_engine(
        engine.url.render_as_string(hide_password=False),
        pre_ping=False,
        isolation_level="AUTOCOMMIT",
    )
    event.listen(engine, "engine_disposed", lambda _engine: unpinged.dispose())

    @event.listens_for(unpinged.pool, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = clock()

    @event.listens_for(unpinged.pool, "checkout")
    def _lent(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is not None and clock() - returned > idle_limit:
            # The pool closes this one and lends a new connection instead.
            raise DisconnectionError(f"unused for more than {idle_limit:g} s")

    return unpinged


def run_statement(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run ``work`` on a connection of ``engine``, again on a new one if the first was dead.

    For make_statement_engine's engine, whose pool lends connections unpinged: one the
    server closed since its last use (a restart, an idle timeout) fails the statement,
    and the pool drops it and every connection as old. Running ``work`` again is safe
    because it is one idempotent statement: if the first did commit before the
    connection died, the second finds nothing left to change. A bare connection, not
    a session: on the one-click POST a session's bookkeeping cost more CPU than the
    statement's own round trip. On SQLite ``work`` runs in one transaction.
    """
    try:
        with engine.begin() as connection:
            return work(connection)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    with engine.begin() as connection:
        return work(connection)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Open a session, commit when the block ends, roll back (and re-raise) on error."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def one_connection(factory: sessionmaker[Session]) -> Iterator[sessionmaker[Session]]:
    """Sessions made as ``factory`` makes them, all on one connection checked out once.

    For work that commits many short transactions in a row (a batch records each chunk
    as it goes): each checkout from the pool pings the server first (pool_pre_ping), a
    round trip per transaction that one checkout for the whole work saves. Each session
    still begins and commits its own transaction on the connection.
    """
    engine = factory.kw["bind"]
    with engine.connect() as connection:
        options = {name: value for name, value in factory.kw.items() if name != "bind"}
        yield sessionmaker(connection, **options)


def database_answers(engine: Engine) -> bool:
    """True when the database answers a trivial query: what a load balancer's check asks."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:  # any failure means "not healthy"
        return False
    return True
