"""Fixtures of the ingest tests: the feed server on loopback, the CLI on the test database."""

from __future__ import annotations

from pathlib import Path

import pytest

from gazette.runtime import Runtime
from tests.support.cli import FeedCli
from tests.support.env import make_env


@pytest.fixture
def cli(runtime: Runtime, tmp_path: Path, database_url: str) -> FeedCli:
    """The CLI against the test database, migrated by the runtime fixture."""
    return FeedCli(tmp_path, make_env(tmp_path, database_url))
