"""A Celery pool process builds its runtime as it starts, not in its first task."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery.signals import worker_process_init

import gazette.runtime
import worker.app  # noqa: F401  (connects its receiver, as the worker's own import does)
from gazette.rendering import LANGUAGES, _translations
from gazette.runtime import use_runtime
from tests.support.env import make_env


def test_a_pool_process_builds_its_runtime_and_catalogues_as_it_starts(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in make_env(tmp_path, database_url).items():
        monkeypatch.setenv(key, value)
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
