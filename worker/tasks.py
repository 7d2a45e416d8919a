"""Celery tasks: thin wrappers that open a session and call one domain function.

Tasks take ids, never objects, and are safe to run twice: planning is idempotent by
its unique key and sending claims rows from the ledger.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from gazette import dispatch
from gazette.articles import feeds
from gazette.bounces.runs import read_configured
from gazette.digests import ledger, planning, sending
from gazette.errors import GazetteError
from gazette.runtime import current_runtime
from gazette.store.db import transaction
from gazette.store.models import Edition, utcnow
from gazette.subscribers import notices
from worker.app import app

logger = logging.getLogger(__name__)


def enqueue_issue(issue_id: int) -> int:
    """Enqueue one send task per batch of the issue's pending rows; return how many.

    Called only after the planning transaction has committed, so a worker never looks
    for rows that are not visible yet.
    """
    runtime = current_runtime()
    return enqueue_batches(runtime.sessions, runtime.settings.batch_size, issue_id)


def enqueue_batches(sessions: sessionmaker[Session], batch_size: int, issue_id: int) -> int:
    """Enqueue a send task per pending batch of the issue (or its finish when none)."""
    batches = dispatch.batches(sessions, issue_id, batch_size)
    for low, high in batches:
        send_batch.delay(issue_id, low, high)
    if not batches:
        finish_issue.delay(issue_id)
    return len(batches)


@app.task(name="gazette.plan_newsletter", ignore_result=True, acks_late=True)
def plan_newsletter(newsletter_id: int, edition: str = Edition.REGULAR.value) -> None:
    """Plan the newsletter's issue (of an edition) for the current period, then enqueue it."""
    try:
        with transaction(current_runtime().sessions) as session:
            result = planning.plan_issue(session, newsletter_id, utcnow(), edition=Edition(edition))
    except GazetteError as error:
        # The weekly choice was withdrawn after beat enqueued this: nothing to send.
        logger.warning("not planning newsletter %s (%s): %s", newsletter_id, edition, error)
        return
    enqueue_issue(result.issue_id)


@app.task(name="gazette.plan_due_issues", ignore_result=True, acks_late=True)
def plan_due_issues() -> None:
    """Beat, every minute: plan every newsletter whose scheduled period has no issue yet."""
    with current_runtime().sessions() as session:
        due = planning.due_editions(session, utcnow())
    for newsletter_id, edition in due:
        plan_newsletter.delay(newsletter_id, edition.value)


@app.task(name="gazette.send_batch", ignore_result=True, acks_late=True)
def send_batch(issue_id: int, low: int, high: int) -> None:
    """Send the pending deliveries of one id range, then finish the issue if it is done."""
    runtime = current_runtime()
    dispatch.send_range(runtime.sessions, runtime.send_context, issue_id, low, high)


@app.task(name="gazette.finish_issue", ignore_result=True, acks_late=True)
def finish_issue(issue_id: int) -> None:
    """Mark the issue sent with its counts when nothing is left to send."""
    dispatch.finish(current_runtime().sessions, issue_id)


@app.task(name="gazette.sweep", ignore_result=True, acks_late=True)
def sweep() -> None:
    """Beat, every minute: reclaim expired leases and re-enqueue pending work.

    This is what recovers from a killed worker, a flushed broker, and transient SMTP
    failures whose backoff has passed.
    """
    runtime = current_runtime()
    with transaction(runtime.sessions) as session:
        sending.reclaim_expired(session)
        for issue_id in ledger.settled_unfinished(session):
            ledger.finish_issue(session, issue_id)
        issues = ledger.resumable_issues(session, utcnow())
    for issue_id in issues:
        enqueue_issue(issue_id)


@app.task(name="gazette.send_confirmation", ignore_result=True, acks_late=True)
def send_confirmation(subscriber_id: int, newsletter_id: int) -> None:
    """Email a new reader the link that confirms their subscription (double opt-in)."""
    runtime = current_runtime()
    notices.send_confirmation(
        runtime.sessions, runtime.send_context, runtime.limiter, subscriber_id, newsletter_id
    )


@app.task(name="gazette.send_welcome", ignore_result=True, acks_late=True)
def send_welcome(subscription_id: int) -> None:
    """Welcome a reader who has just confirmed: what comes when, the latest issue, preferences."""
    runtime = current_runtime()
    notices.send_welcome(runtime.sessions, runtime.send_context, subscription_id)


@app.task(name="gazette.poll_feed", ignore_result=True, acks_late=True)
def poll_feed(feed_id: int) -> None:
    """Fetch one feed and store what is new; a failure is recorded on the feed."""
    feeds.poll_feed(current_runtime().sessions, feed_id)


@app.task(name="gazette.poll_due_feeds", ignore_result=True, acks_late=True)
def poll_due_feeds() -> None:
    """Beat, every minute: poll each feed whose own interval has passed."""
    with current_runtime().sessions() as session:
        due = feeds.due_feeds(session, utcnow())
    for feed_id in due:
        poll_feed.delay(feed_id)


@app.task(name="gazette.process_bounces", ignore_result=True, acks_late=True)
def process_bounces() -> None:
    """Beat, every few minutes when GAZETTE_BOUNCE_MAILBOX is set: read the bounce mailbox."""
    runtime = current_runtime()
    run = read_configured(runtime.sessions, runtime.settings, utcnow())
    if run is not None:
        logger.info("%s", run.line())
