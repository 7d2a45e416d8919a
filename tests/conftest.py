"""Makes the suite's fixtures (tests/support/fixtures.py) visible to every test file."""

from tests.support.fixtures import (
    chromium,
    database_url,
    engine,
    feeds,
    make_site,
    runtime,
    session,
    settings,
    site,
    smtp_handler,
    smtp_runtime,
    smtp_server,
)
from tests.support.hostile import installation
from tests.support.routes import seeded

__all__ = [
    "chromium",
    "database_url",
    "engine",
    "feeds",
    "installation",
    "make_site",
    "runtime",
    "seeded",
    "session",
    "settings",
    "site",
    "smtp_handler",
    "smtp_runtime",
    "smtp_server",
]
