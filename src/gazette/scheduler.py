"""The scheduler's tick, in one process: what beat and its workers do, for ``gazette run``.

A tick sweeps (expired leases back to pending, settled issues finished), polls the feeds
that are due, plans the editions that are due and hands each new issue to a sender, then
hands over the issues that have due pending rows (retries, and the batches a killed
process left). It calls the same domain functions as the Celery tasks (worker/tasks.py)
in the same order of commits, so the ledger reads the same whichever ran it.

Sending in-process can be long; ``InProcessSender`` stops between batches when asked,
so a stop never leaves a claimed batch half-recorded: what it did not reach stays
pending, and the next start's sweep and resume send it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from gazette import dispatch
from gazette.articles import feeds
from gazette.bounces.runs import Run
from gazette.digests import ledger, planning, sending
from gazette.digests.composer import SendContext
from gazette.digests.planning import PlanResult
from gazette.errors import GazetteError
from gazette.store.db import transaction
from gazette.store.models import Edition, IssueStatus, Newsletter, utcnow

logger = logging.getLogger(__name__)

# Asked between steps and between batches: True once the process is shutting down.
Stopping = Callable[[], bool]
Poller = Callable[[sessionmaker[Session], int], feeds.PollResult]
# Reads the bounce mailbox when its interval has passed (bounces.runs.ScheduledReading).
BounceReader = Callable[[datetime], Run | None]


def _never() -> bool:
    """The default stop question: a tick run on its own is never interrupted."""
    return False


class IssueSender(Protocol):
    """What a tick hands an issue to, after the commit that made its rows visible."""

    def enqueue_issue(self, issue_id: int) -> int:
        """Send (or queue) the issue's pending deliveries; return how many batches."""


@dataclass
class SendTotals:
    """What the in-process sender did since it was last asked: message counts, relay words."""

    counts: Counter[str] = field(default_factory=Counter)
    relay_errors: list[str] = field(default_factory=list)

    def summary(self) -> str | None:
        """``sent 3, 1 to retry, 0 failed, 0 skipped`` (and the relay's words), or None."""
        if not self.counts and not self.relay_errors:
            return None
        c = self.counts
        line = (
            f"sent {c['sent']}, {c['retry']} to retry, {c['failed']} failed, {c['skipped']} skipped"
        )
        if self.relay_errors:
            # Every batch of a refused session carries the same words: say them once.
            line += f" (the relay refused: {'; '.join(dict.fromkeys(self.relay_errors))})"
        return line


class InProcessSender:
    """Sends an issue's batches in the calling thread, one after another, until told to stop.

    The same steps as the in-process dispatcher: each batch goes through
    dispatch.send_range, which sends and records it, then finishes the issue. The
    stop question is asked before each batch, never inside one, so a stop lets the batch
    under way record every row it claimed.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        send_context: SendContext,
        batch_size: int,
        stopping: Stopping = _never,
    ) -> None:
        self.sessions = sessions
        self.send_context = send_context
        self.batch_size = batch_size
        self.stopping = stopping
        self._totals = SendTotals()
        self._lock = threading.Lock()

    def enqueue_issue(self, issue_id: int) -> int:
        """Send the issue's pending batches here, in order; return how many were sent."""
        found = dispatch.batches(self.sessions, issue_id, self.batch_size)
        if not found:
            dispatch.finish(self.sessions, issue_id)
            return 0
        done = 0
        for low, high in found:
            if self.stopping():
                break  # the rest stays pending: the next start resumes it
            result = dispatch.send_range(self.sessions, self.send_context, issue_id, low, high)
            done += 1
            with self._lock:
                self._totals.counts.update(
                    sent=result.sent, retry=result.retry,
                    failed=result.failed, skipped=result.skipped,
                )  # fmt: skip
                if result.relay_error:
                    self._totals.relay_errors.append(result.relay_error)
        return done

    def take(self) -> SendTotals:
        """Return what was sent since the last call, and start counting afresh."""
        with self._lock:
            taken, self._totals = self._totals, SendTotals()
        return taken


@dataclass(frozen=True)
class Planned:
    """One edition a tick planned: the newsletter's slug and what planning said."""

    newsletter: str
    edition: Edition
    result: PlanResult


@dataclass
class TickReport:
    """What one tick did, for its one line of output."""

    at: datetime
    reclaimed: int = 0
    finished: list[int] = field(default_factory=list)
    polled: list[feeds.PollResult] = field(default_factory=list)
    planned: list[Planned] = field(default_factory=list)
    not_planned: list[str] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)
    batches: int = 0
    bounces: Run | None = None
    errors: list[str] = field(default_factory=list)
    stopped: bool = False

    def summary(self, sent: SendTotals | None = None) -> str | None:
        """One line saying what the tick did (with the sender's totals), or None if nothing."""
        parts: list[str] = []
        if self.reclaimed:
            parts.append(f"{self.reclaimed} expired lease(s) returned to pending")
        if self.finished:
            parts.append(f"issue(s) {_ids(self.finished)} finished")
        if self.polled:
            added = sum(p.ingest.added for p in self.polled if p.ingest is not None)
            failed = sum(1 for p in self.polled if p.error)
            parts.append(
                f"{len(self.polled)} feed(s) polled, {added} new article(s), {failed} failed"
            )
        parts.extend(_describe(planned) for planned in self.planned)
        parts.extend(self.not_planned)
        if self.resumed:
            parts.append(f"issue(s) {_ids(self.resumed)} resumed")
        sent_line = sent.summary() if sent is not None else None
        if sent_line:
            parts.append(sent_line)
        if self.bounces is not None and (self.bounces.summary.read or self.bounces.expired):
            parts.append(self.bounces.line().removesuffix("."))
        parts.extend(self.errors)
        if not parts:
            return None
        if self.stopped:
            parts.append("stopped early: the rest waits for the next start")
        return f"{self.at:%Y-%m-%d %H:%M:%S}Z tick: " + "; ".join(parts) + "."


def _ids(issue_ids: list[int]) -> str:
    return ", ".join(str(issue_id) for issue_id in issue_ids)


def _describe(planned: Planned) -> str:
    """``issue 3 of weekly planned: 2 article(s), 150 reader(s)``, or why it was skipped."""
    plan = planned.result
    name = planned.newsletter
    if planned.edition is Edition.WEEKLY:
        name += " (weekly summary)"
    if plan.status is IssueStatus.SKIPPED:
        return f"issue {plan.issue_id} of {name} skipped: {plan.skip_reason}"
    return (
        f"issue {plan.issue_id} of {name} planned: {plan.articles} article(s), "
        f"{plan.deliveries} reader(s)"
    )


def tick(
    sessions: sessionmaker[Session],
    sender: IssueSender,
    now: datetime,
    *,
    stopping: Stopping = _never,
    poll: Poller = feeds.poll_feed,
    bounces: BounceReader | None = None,
) -> TickReport:
    """Sweep, read the bounces, poll due feeds, plan due editions, send, resume due issues.

    Bounces are read first, so a reader bounced since the last tick gets no new issue.
    Feeds are polled before planning so an issue planned in this tick carries what
    they just brought. Each step commits before the sender is called (a sender for
    workers must never enqueue rows they cannot see yet). ``stopping`` is asked
    between steps; a stopped tick leaves the rest to the next one.
    """
    report = TickReport(at=now)
    with transaction(sessions) as session:
        report.reclaimed = sending.reclaim_expired(session, now)
        for issue_id in ledger.settled_unfinished(session):
            if ledger.finish_issue(session, issue_id):
                report.finished.append(issue_id)
    if bounces is not None:
        _read_bounces(bounces, now, report)
    with sessions() as session:
        due_feeds = feeds.due_feeds(session, now)
    for feed_id in due_feeds:
        if stopping():
            report.stopped = True
            return report
        report.polled.append(poll(sessions, feed_id))
    with sessions() as session:
        due = planning.due_editions(session, now)
    handed: set[int] = set()
    for newsletter_id, edition in due:
        if stopping():
            report.stopped = True
            return report
        planned = _plan(sessions, newsletter_id, edition, now, report)
        if planned is None:
            continue
        report.planned.append(planned)
        if planned.result.status is IssueStatus.SKIPPED:
            continue
        handed.add(planned.result.issue_id)
        _send(sender, planned.result.issue_id, report)
    with sessions() as session:
        resumable = ledger.resumable_issues(session, now)
    for issue_id in resumable:
        # A sender for workers may not have sent what it was just handed: not twice.
        if issue_id in handed:
            continue
        if stopping():
            report.stopped = True
            return report
        report.resumed.append(issue_id)
        _send(sender, issue_id, report)
    if stopping():
        # Stopped after the sender's last batch, or before one: say so only if work waits.
        with sessions() as session:
            report.stopped = bool(ledger.resumable_issues(session, now))
    return report


def _read_bounces(bounces: BounceReader, now: datetime, report: TickReport) -> None:
    """Read the bounce mailbox when due; a mailbox that cannot be read is reported."""
    try:
        report.bounces = bounces(now)
    except GazetteError as error:  # the server away, a wrong password: said, and retried
        report.errors.append(f"bounces not read: {error}")


def _send(sender: IssueSender, issue_id: int, report: TickReport) -> None:
    """Hand one issue to the sender; its failure is reported, and the tick goes on.

    One issue that cannot be sent (a broken template, say) must not hold up the others,
    as one failing Celery task does not; its claimed rows come back when their lease ends.
    """
    try:
        report.batches += sender.enqueue_issue(issue_id)
    except Exception as error:
        logger.exception("sending issue %s failed", issue_id)
        report.errors.append(f"issue {issue_id} failed: {error}")


def _plan(
    sessions: sessionmaker[Session],
    newsletter_id: int,
    edition: Edition,
    now: datetime,
    report: TickReport,
) -> Planned | None:
    """Plan one due edition in a transaction of its own; None, reported, if it cannot be."""
    try:
        with transaction(sessions) as session:
            slug = session.get_one(Newsletter, newsletter_id).slug
            result = planning.plan_issue(session, newsletter_id, now, edition=edition)
    except GazetteError as error:
        # Retired, or its weekly choice withdrawn, since due_editions looked.
        report.not_planned.append(f"newsletter {newsletter_id} not planned: {error}")
        return None
    return Planned(slug, edition, result)


def run_loop(
    step: Callable[[datetime], None],
    interval: float,
    stop: threading.Event,
) -> None:
    """Call ``step(now)`` at once and then every ``interval`` seconds until ``stop`` is set.

    A tick that fails (the database away for a moment, say) is logged and the next one
    runs as usual: every step is safe to repeat, so nothing is lost by trying again.
    """
    while not stop.is_set():
        started = time.monotonic()
        try:
            step(utcnow())
        except Exception:
            logger.exception("the scheduler's tick failed; trying again at the next one")
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
