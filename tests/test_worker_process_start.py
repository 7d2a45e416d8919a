"""A Celery pool process builds its runtime as it starts, not in its first task."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from celery.signals import worker_process_init

import gazette.runtime
import worker.app  # connects its receiver, as the worker's own import does
from gazette.errors import ConfigError
from gazette.rendering import LANGUAGES, _translations
from gazette.runtime import use_runtime
from tests.support.env import make_env


def _environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Exactly ``env`` as the GAZETTE_* settings: none left over from the shell."""
    for key in [k for k in os.environ if k.startswith("GAZETTE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_a_pool_process_builds_its_runtime_and_catalogues_as_it_starts(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _environment(monkeypatch, make_env(tmp_path, database_url))
    use_runtime(None)
    _translations.cache_clear()
    try:
        # What billiard's process_initializer sends in each pool process after the fork.
        worker_process_init.send(sender="test@host")
        built = gazette.runtime._current
        assert built is not None
        assert built.settings.database_url == database_url
        assert _translations.cache_info().currsize == len(LANGUAGES)
    finally:
        use_runtime(None)


def test_a_bad_setting_leaves_the_process_to_its_first_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", smtp_connections="abc")
    _environment(monkeypatch, env)
    use_runtime(None)
    try:
        # Celery hands back what a receiver raised, logged, and starts the process anyway.
        responses = worker_process_init.send(sender="test@host")
        raised = [r for receiver, r in responses if receiver is worker.app._build_runtime]
        assert len(raised) == 1
        assert isinstance(raised[0], ConfigError)
        assert "GAZETTE_SMTP_CONNECTIONS='abc'" in str(raised[0])
        assert gazette.runtime._current is None
    finally:
        use_runtime(None)
