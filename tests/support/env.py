"""A test installation: its GAZETTE_* environment and a migrated runtime built from it.

Every test that needs an installation goes through ``installation`` (or the ``runtime``
fixture, which uses it), so the database is migrated and the runtime installed for
in-process tasks the same way everywhere.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gazette.config import Settings, load_settings
from gazette.runtime import Runtime, build_runtime, use_runtime
from gazette.store import migrate

PG_URL = os.environ.get("GAZETTE_TEST_DATABASE_URL")
TEST_KEY = "test-secret-key-0123456789"


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
        # One SMTP session, whose dialogue the sending tests follow step by step; the
        # pool of sessions (the default) has tests of its own (test_smtp_pool.py).
        "GAZETTE_SMTP_CONNECTIONS": "1",
    }
    env.update({f"GAZETTE_{k.upper()}": v for k, v in extra.items()})
    return env


@contextmanager
def in_use(built: Runtime) -> Iterator[Runtime]:
    """``built`` installed for the tasks, which run in-process, until the block ends."""
    from worker.app import configure

    use_runtime(built)
    configure(built.settings)
    try:
        yield built
    finally:
        use_runtime(None)


@contextmanager
def install(settings: Settings) -> Iterator[Runtime]:
    """A migrated database and a runtime built from ``settings``, installed for tasks."""
    built = build_runtime(settings)
    migrate.upgrade(built.engine)
    with in_use(built):
        yield built


@contextmanager
def installed_env(
    tmp_path: Path, database_url: str, **extra: str
) -> Iterator[tuple[dict[str, str], Runtime]]:
    """GAZETTE_* for worker processes, and the same installation migrated and used here."""
    env = make_env(tmp_path, database_url, **extra)
    with install(load_settings(env, cwd=tmp_path)) as built:
        yield env, built


@contextmanager
def installed_runtime(tmp_path: Path, database_url: str, **extra: str) -> Iterator[Runtime]:
    """A migrated database and a runtime built from make_env(**extra), installed for tasks."""
    with installed_env(tmp_path, database_url, **extra) as (_env, built):
        yield built
