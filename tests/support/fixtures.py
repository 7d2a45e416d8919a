"""The suite's fixtures: a real database (SQLite file, and PostgreSQL when configured),
settings pointing into a temporary folder, an installed runtime, and the SMTP sink.

tests/conftest.py imports them, so pytest finds them by name in every test file. The
SMTP sink is the one server fixture of the suite: a file needing a scripted relay
overrides ``smtp_handler``, never the server.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from gazette.config import Settings, load_settings
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import make_engine, transaction
from gazette.web import create_app, server_options
from tests.support.digests import chromium_session, require_chromium
from tests.support.env import PG_URL, install, installed_runtime, make_env
from tests.support.feedserver import FeedServer, serve_feeds
from tests.support.http import serve
from tests.support.smtp import RecordingHandler, SMTPServer
from tests.support.web import NAME, SLUG, Site, SiteFactory


def _pg_schema_url(base: str, schema: str) -> str:
    """``base`` with every connection's search_path set to ``schema``."""
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


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings for a test installation: its database, a Maildir outbox under tmp_path."""
    return load_settings(make_env(tmp_path, database_url), cwd=tmp_path)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """A migrated database and a runtime installed for tasks, which run in-process."""
    with install(settings) as built:
        yield built


@pytest.fixture
def session(runtime: Runtime) -> Iterator[Session]:
    """A session whose work is committed when the test's block ends."""
    with transaction(runtime.sessions) as current:
        yield current


@pytest.fixture
def smtp_handler() -> RecordingHandler:
    """What the SMTP sink does with each command: accept and keep everything.

    A test file overrides this fixture to script the relay's replies.
    """
    return RecordingHandler()


@pytest.fixture
def smtp_server(smtp_handler: RecordingHandler) -> Iterator[SMTPServer]:
    """aiosmtpd on 127.0.0.1 with ``smtp_handler``, for the test's length."""
    with SMTPServer(smtp_handler) as server:
        yield server


@pytest.fixture
def make_site(tmp_path: Path, database_url: str, smtp_server: SMTPServer) -> Iterator[SiteFactory]:
    """Build the site with extra GAZETTE_* settings; one newsletter is seeded."""
    with ExitStack() as stack:

        def build(**extra: str) -> Site:
            runtime = stack.enter_context(
                installed_runtime(tmp_path, database_url, smtp_url=smtp_server.url, **extra)
            )
            with transaction(runtime.sessions) as session:
                create_newsletter(session, SLUG, NAME)
            server = stack.enter_context(
                serve(create_app(runtime), **server_options(runtime.settings))
            )
            return Site(runtime, smtp_server, server)

        yield build


@pytest.fixture
def site(make_site: SiteFactory) -> Site:
    return make_site()


@pytest.fixture
def chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """Headless Chromium for the page tests; skipped (failed in CI) when it is missing."""
    require_chromium()
    monkeypatch.setenv("SE_OFFLINE", "true")
    with chromium_session(tmp_path / "chromium-profile") as driver:
        yield driver


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the fresh, empty test database, disposed after the test."""
    built = make_engine(database_url)
    try:
        yield built
    finally:
        built.dispose()


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    """The scripted feed server on loopback (tests/support/feedserver.py)."""
    with serve_feeds() as server:
        yield server


@pytest.fixture
def smtp_runtime(tmp_path: Path, database_url: str, smtp_server: SMTPServer) -> Iterator[Runtime]:
    """A migrated database and a runtime whose transport is the loopback SMTP sink."""
    settings = load_settings(
        make_env(tmp_path, database_url, smtp_url=smtp_server.url), cwd=tmp_path
    )
    assert settings.smtp.scheme == "smtp"
    with install(settings) as built:
        yield built
