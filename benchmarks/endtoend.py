"""End to end: plan an issue for N readers and send it through real Celery workers.

Gazette: ``celery -A worker worker --concurrency 2 --pool prefork`` on Redis, batches of
GAZETTE_BATCH_SIZE rows, the ledger on PostgreSQL or SQLite. The obvious approach
(benchmarks.naive): the same readers, the same plan, the same sink, one task per message.

The clock starts just before the first task is enqueued and stops at the last ledger
update, max(delivery.sent_at). Worker CPU is the worker's main process plus its pool
children (psutil), peak memory the largest VmHWM among the pool children.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
from sqlalchemy import func, select

from benchmarks import data, procstat
from benchmarks.procs import CeleryWorker, TreeSampler, wait_until
from benchmarks.profile import Profiler, ProfileSummary, py_spy_path
from gazette.config import load_settings
from gazette.runtime import Runtime, use_runtime
from gazette.store.models import Delivery, DeliveryStatus, Issue, IssueStatus

APPROACHES = ("gazette", "obvious")
WORKER_APPS = {"gazette": "worker", "obvious": "benchmarks.naive_app"}


@dataclass(frozen=True)
class SendRun:
    """What one end-to-end run measured."""

    approach: str
    database: str
    subscribers: int
    sent: int
    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    plan_seconds: float
    enqueue_seconds: float
    machine_busy: float = 0.0  # share of all cores busy during the run (any process)
    profile: ProfileSummary | None = None

    @property
    def rate(self) -> float:
        return self.sent / self.seconds

    @property
    def cpu_ms_per_message(self) -> float:
        return self.cpu_seconds * 1000 / self.sent

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_bytes / (1024 * 1024)


def _busy(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of all cores' time between two machine_cpu() readings not spent idle."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def _issue_sent(runtime: Runtime, issue_id: int) -> bool:
    with runtime.sessions() as session:
        status = session.scalar(select(Issue.status).where(Issue.id == issue_id))
    return status == IssueStatus.SENT


def _enqueue_obvious(runtime: Runtime, issue_id: int, limit: int | None) -> int:
    """One task per delivery (the first ``limit`` of them); return the last id enqueued."""
    from benchmarks.naive import send_one

    with runtime.sessions() as session:
        query = select(Delivery.id).where(Delivery.issue_id == issue_id).order_by(Delivery.id)
        if limit is not None:
            query = query.limit(limit)
        ids = list(session.scalars(query))
    for delivery_id in ids:
        send_one.delay(delivery_id)
    return ids[-1]


def _pending_up_to(runtime: Runtime, issue_id: int, last_id: int) -> bool:
    with runtime.sessions() as session:
        row = session.scalar(
            select(Delivery.id)
            .where(
                Delivery.issue_id == issue_id,
                Delivery.id <= last_id,
                Delivery.status == DeliveryStatus.PENDING,
            )
            .limit(1)
        )
    return row is not None


def _forget_queue(queue: str) -> None:
    """Drop what the run's queue left in Redis (the list and kombu's binding entries)."""
    client = redis.Redis.from_url(data.REDIS_URL)
    try:
        client.delete(queue, f"{queue}.pidbox", f"unacked_index_{queue}")
        for key in client.scan_iter("_kombu.binding.*"):
            for member in client.smembers(key):
                if queue.encode() in member:
                    client.srem(key, member)
    finally:
        client.close()


def send_once(
    approach: str,
    kind: str,
    subscribers: int,
    sink_url: str,
    folder: Path,
    *,
    summary_chars: int = data.SUMMARY_CHARS,
    batch_size: int | None = None,
    timeout: float | None = None,
    limit: int | None = None,
    profile: Path | None = None,
) -> SendRun:
    """Seed, plan and send one issue with ``approach`` on a fresh ``kind`` database.

    ``limit`` (the obvious approach only) enqueues and times the first ``limit``
    messages of the planned issue instead of all of them. ``profile`` records the
    worker with py-spy into that file while it sends.
    """
    if limit is not None and approach != "obvious":
        raise ValueError("only the obvious approach sends a sample")
    expected = min(limit, subscribers) if limit is not None else subscribers
    if approach not in APPROACHES:
        raise ValueError(f"unknown approach {approach!r}")
    folder.mkdir(parents=True, exist_ok=True)
    with data.database(kind, folder) as url:
        extra = {"broker_url": data.REDIS_URL, "smtp_url": sink_url}
        if batch_size is not None:
            extra["batch_size"] = str(batch_size)
        env = data.gazette_env(folder, url, **extra)
        queue = env["GAZETTE_QUEUE"]
        runtime = data.install_runtime(env, folder)
        try:
            newsletter_id = data.seed_issue_content(runtime, summary_chars=summary_chars)
            data.seed_readers(runtime.engine, newsletter_id, subscribers)
            issue_id, planned, plan_seconds = data.plan(runtime, newsletter_id)
            if planned != subscribers:
                raise RuntimeError(f"planned {planned} deliveries for {subscribers} readers")
            if approach == "obvious":
                from benchmarks import naive_app

                naive_app.configure(load_settings(env, cwd=folder))
            worker = CeleryWorker(
                WORKER_APPS[approach], env, folder / f"{approach}-worker.log", queue
            )
            profiler: Profiler | None = None
            try:
                worker.wait_ready(data.REDIS_URL)
                pool = worker.pool_pids()
                program = py_spy_path() if profile is not None else None
                if program is not None and profile is not None:
                    profiler = Profiler(program, worker.pid, profile)
                sampler = TreeSampler(worker.pid)
                baseline = sampler.start()
                machine_before = procstat.machine_cpu()
                started = datetime.now(UTC)
                began = time.perf_counter()
                if approach == "gazette":
                    from worker.tasks import enqueue_issue

                    enqueue_issue(issue_id)
                    done = lambda: _issue_sent(runtime, issue_id)  # noqa: E731
                else:
                    last_id = _enqueue_obvious(runtime, issue_id, limit)
                    done = lambda: not _pending_up_to(runtime, issue_id, last_id)  # noqa: E731
                enqueue_seconds = time.perf_counter() - began
                patience = timeout if timeout is not None else 120 + expected / 10
                wait_until(done, patience, f"{approach} to send {expected} messages", 0.25)
                final = sampler.stop()
                machine_after = procstat.machine_cpu()
                summary = profiler.stop() if profiler is not None else None
                profiler = None
            finally:
                if profiler is not None:
                    profiler.stop()
                worker.stop()
                _forget_queue(queue)
            with runtime.sessions() as session:
                sent, last = session.execute(
                    select(func.count(), func.max(Delivery.sent_at)).where(
                        Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.SENT
                    )
                ).one()
            if sent != expected or last is None:
                raise RuntimeError(f"{approach}: {sent} of {expected} deliveries sent")
            return SendRun(
                approach=approach,
                database=kind,
                subscribers=subscribers,
                sent=sent,
                seconds=(last - started).total_seconds(),
                cpu_seconds=TreeSampler.cpu_between(baseline, final),
                peak_rss_bytes=sampler.peak_of(pool),
                plan_seconds=plan_seconds,
                enqueue_seconds=enqueue_seconds,
                machine_busy=_busy(machine_before, machine_after),
                profile=summary,
            )
        finally:
            use_runtime(None)
