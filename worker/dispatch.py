"""The Celery dispatcher: what ``gazette`` uses to hand work to workers when a broker is set.

Registered under the ``gazette.dispatchers`` entry point group (pyproject.toml), so the
library finds it without importing this package by name.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from gazette.config import Settings
from worker import tasks
from worker.app import configure


class CeleryDispatcher:
    """Enqueues tasks on the configured broker; workers run them."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        """Point the Celery app at ``settings`` (its broker and queue) for this process."""
        configure(settings)
        self.sessions = sessions
        self.batch_size = settings.batch_size

    def send_confirmation(self, subscriber_id: int, newsletter_id: int) -> None:
        """Queue the confirmation mail; a worker sends it."""
        tasks.send_confirmation.delay(subscriber_id, newsletter_id)

    def send_welcome(self, subscription_id: int) -> None:
        """Queue the welcome mail; a worker sends it."""
        tasks.send_welcome.delay(subscription_id)

    def enqueue_issue(self, issue_id: int) -> int:
        """Queue one send task per pending batch of the issue; return how many."""
        return tasks.enqueue_batches(self.sessions, self.batch_size, issue_id)
