"""Handing work to whatever runs it: in this process by default, a queue when one is set.

Commands and views never run a send themselves, nor import the worker: they ask the
Runtime's dispatcher. With no broker the work runs here, before the call returns (the
embedded default). With GAZETTE_BROKER_URL set, the dispatcher installed under the
``gazette.dispatchers`` entry point group (the ``worker`` package registers its Celery
one) enqueues it for worker processes; the library names the group, never the package.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from gazette.config import Settings
from gazette.digests import ledger, sending
from gazette.digests.composer import SendContext
from gazette.errors import ConfigError
from gazette.ratelimit import RateLimiter
from gazette.store.db import transaction
from gazette.subscribers import notices

# The entry point group, and the name in it, of the dispatcher used when a broker is set.
ENTRY_POINT_GROUP = "gazette.dispatchers"
QUEUE_DISPATCHER = "celery"


class Dispatcher(Protocol):
    """What entry points hand off: each call takes ids, after the caller's commit."""

    def send_confirmation(self, subscriber_id: int, newsletter_id: int) -> None:
        """Send (or queue) the double opt-in link to a pending reader."""

    def send_welcome(self, subscription_id: int) -> None:
        """Send (or queue) the welcome mail to a reader who has just confirmed."""

    def enqueue_issue(self, issue_id: int) -> int:
        """Send (or queue) the issue's pending deliveries; return how many batches."""


# What the entry point names: called with the settings and the session factory.
DispatcherFactory = Callable[[Settings, sessionmaker[Session]], Dispatcher]


def send_range(
    sessions: sessionmaker[Session], ctx: SendContext, issue_id: int, low: int, high: int
) -> sending.BatchResult:
    """Send one batch (an id range) of the issue, then finish the issue if nothing is left.

    One body for the in-process paths and the Celery task, so all finish the same way.
    """
    result = sending.send_batch(sessions, ctx, issue_id, low, high)
    finish(sessions, issue_id)
    return result


def finish(sessions: sessionmaker[Session], issue_id: int) -> None:
    """Mark the issue sent with its counts when no delivery is left open."""
    with transaction(sessions) as session:
        ledger.finish_issue(session, issue_id)


def batches(
    sessions: sessionmaker[Session], issue_id: int, batch_size: int
) -> list[tuple[int, int]]:
    """The id ranges of the issue's pending deliveries, read in a session of their own."""
    with sessions() as session:
        return ledger.pending_batches(session, issue_id, batch_size)


class InProcessDispatcher:
    """Runs the work in the caller's process and returns when it is done (no broker).

    Errors reach the caller as they are raised (a refused relay is a DeliveryError), as
    Celery's eager mode with propagation did.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        send_context: SendContext,
        limiter: RateLimiter,
        batch_size: int,
    ) -> None:
        self.sessions = sessions
        self.send_context = send_context
        self.limiter = limiter
        self.batch_size = batch_size

    def send_confirmation(self, subscriber_id: int, newsletter_id: int) -> None:
        """Send the confirmation link now (at most one an hour per reader and newsletter)."""
        notices.send_confirmation(
            self.sessions, self.send_context, self.limiter, subscriber_id, newsletter_id
        )

    def send_welcome(self, subscription_id: int) -> None:
        """Send the welcome now (once per confirmation; the newsletter may turn it off)."""
        notices.send_welcome(self.sessions, self.send_context, subscription_id)

    def enqueue_issue(self, issue_id: int) -> int:
        """Send every pending batch of the issue here, in order; return how many."""
        found = batches(self.sessions, issue_id, self.batch_size)
        for low, high in found:
            send_range(self.sessions, self.send_context, issue_id, low, high)
        if not found:
            finish(self.sessions, issue_id)
        return len(found)


def queue_dispatcher(settings: Settings, sessions: sessionmaker[Session]) -> Dispatcher:
    """The dispatcher registered for a broker, built for ``settings``.

    Looked up by entry point so that the library runs (and imports) without Celery;
    a missing registration is an installation error, said in one sentence.
    """
    found = entry_points(group=ENTRY_POINT_GROUP, name=QUEUE_DISPATCHER)
    if not found:
        raise ConfigError(
            f"GAZETTE_BROKER_URL is set, but no '{QUEUE_DISPATCHER}' dispatcher is installed "
            f"in the entry point group {ENTRY_POINT_GROUP}; reinstall Gazette with its "
            "worker package (pip install -e .)."
        )
    factory: DispatcherFactory = next(iter(found)).load()
    return factory(settings, sessions)
