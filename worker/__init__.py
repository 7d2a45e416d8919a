"""Gazette's Celery app: ``celery -A worker worker`` and ``celery -A worker beat``."""

from worker.app import app

__all__ = ["app"]
