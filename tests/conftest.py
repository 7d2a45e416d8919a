"""Shared fixtures: a real database (SQLite file, and PostgreSQL when configured),
settings pointing into a temporary folder, and an installed runtime."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from gazette.config import Settings, load_settings
from gazette.runtime import Runtime, build_runtime, use_runtime
from gazette.store import migrate
from gazette.store.db import transaction

PG_URL = os.environ.get("GAZETTE_TEST_DATABASE_URL")
TEST_KEY = "test-secret-key-0123456789"


def _pg_schema_url(base: str, schema: str) -> str:
    url = make_url(base).set(drivername="postgresql+psycopg")
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(
                PG_URL is None, reason="set GAZETTE_TEST_DATABASE_URL to test on PostgreSQL"
            ),
        ),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a schema of its own on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    assert PG_URL is not None
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg"))
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_schema_url(PG_URL, schema)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def make_env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    """GAZETTE_* variables for a test installation rooted at ``tmp_path``."""
    env = {
        "GAZETTE_VAR_DIR": str(tmp_path / "var"),
        "GAZETTE_DATABASE_URL": database_url,
        "GAZETTE_SECRET_KEYS": TEST_KEY,
        "GAZETTE_BASE_URL": "https://news.example.org",
        "GAZETTE_FROM_ADDRESS": "digest@news.example.org",
        # A queue of its own, so workers of tests running at the same time on the same
        # Redis never take each other's tasks.
        "GAZETTE_QUEUE": f"test-{secrets.token_hex(6)}",
    }
    env.update({f"GAZETTE_{k.upper()}": v for k, v in extra.items()})
    return env


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings for a test installation: its database, a Maildir outbox under tmp_path."""
    return load_settings(make_env(tmp_path, database_url), cwd=tmp_path)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """A migrated database and a runtime installed for tasks, which run in-process."""
    from worker.app import configure

    built = build_runtime(settings)
    migrate.upgrade(built.engine)
    use_runtime(built)
    configure(settings)
    try:
        yield built
    finally:
        use_runtime(None)


@pytest.fixture
def session(runtime: Runtime) -> Iterator[Session]:
    """A session whose work is committed when the test's block ends."""
    with transaction(runtime.sessions) as current:
        yield current
