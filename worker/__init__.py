"""Gazette's Celery app: ``celery -A worker worker`` and ``celery -A worker beat``.

``worker.app`` (the Celery app) is imported when first asked for, so loading the
``gazette worker`` and ``beat`` commands (worker.cli) does not import Celery.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """Resolve ``worker.app`` (Celery's ``-A worker`` looks it up) on first use."""
    if name == "app":
        from worker.app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
