"""End to end: plan an issue for N readers and send it through real Celery workers.

``send_once`` seeds a fresh database, plans the issue, starts ``celery -A APP worker
--concurrency 2 --pool prefork`` on Redis and hands the issue to it the way an
``Approach`` says (Gazette's in benchmarks.scenarios.gazette, the obvious approach's in
benchmarks.scenarios.obvious); the same readers, plan and sink for both.

The clock starts just before the first task is enqueued and stops at the last ledger
update, max(delivery.sent_at). Worker CPU is the worker's main process plus its pool
children (psutil), peak memory the largest VmHWM among the pool children.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
from sqlalchemy import func, select

from benchmarks.harness import seeding, timing
from benchmarks.harness.processes import CeleryWorker, wait_until
from benchmarks.harness.profiling import Profiler, ProfileSummary, py_spy_path
from benchmarks.harness.timing import TreeSampler
from gazette.config import Settings, load_settings
from gazette.runtime import Runtime, use_runtime
from gazette.store.models import Delivery, DeliveryStatus

# Enqueue an issue's messages (the first ``limit`` of them, when given) and return the
# test that says they have all been sent.
Enqueue = Callable[[Runtime, int, int | None], Callable[[], bool]]


@dataclass(frozen=True)
class Approach:
    """A way of sending an issue: its Celery app, and how the issue is handed to it."""

    name: str
    worker_app: str  # for `celery -A`
    enqueue: Enqueue
    # Point the app at the run's settings in this process before enqueueing.
    configure: Callable[[Settings], None] | None = None
    samples: bool = False  # whether it may send a sample (``limit``) of the issue


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


def _forget_queue(queue: str) -> None:
    """Drop what the run's queue left in Redis (the list and kombu's binding entries)."""
    client = redis.Redis.from_url(seeding.REDIS_URL)
    try:
        client.delete(queue, f"{queue}.pidbox", f"unacked_index_{queue}")
        for key in client.scan_iter("_kombu.binding.*"):
            for member in client.smembers(key):
                if queue.encode() in member:
                    client.srem(key, member)
    finally:
        client.close()


def send_once(
    approach: Approach,
    kind: str,
    subscribers: int,
    sink_url: str,
    folder: Path,
    *,
    summary_chars: int = seeding.SUMMARY_CHARS,
    batch_size: int | None = None,
    timeout: float | None = None,
    limit: int | None = None,
    profile: Path | None = None,
    settings: dict[str, str] | None = None,
) -> SendRun:
    """Seed, plan and send one issue with ``approach`` on a fresh ``kind`` database.

    ``limit`` (an approach that samples) enqueues and times the first ``limit``
    messages of the planned issue instead of all of them. ``profile`` records the
    worker with py-spy into that file while it sends. ``settings`` adds GAZETTE_*
    settings by their lower-case names (``smtp_connections``, say).
    """
    if limit is not None and not approach.samples:
        raise ValueError(f"{approach.name} sends the whole issue, not a sample")
    expected = min(limit, subscribers) if limit is not None else subscribers
    folder.mkdir(parents=True, exist_ok=True)
    with seeding.database(kind, folder) as url:
        extra = {"broker_url": seeding.REDIS_URL, "smtp_url": sink_url}
        if batch_size is not None:
            extra["batch_size"] = str(batch_size)
        extra.update(settings or {})
        env = seeding.gazette_env(folder, url, **extra)
        queue = env["GAZETTE_QUEUE"]
        runtime = seeding.install_runtime(env, folder)
        try:
            newsletter_id = seeding.seed_issue_content(runtime, summary_chars=summary_chars)
            seeding.seed_readers(runtime.engine, newsletter_id, subscribers)
            issue_id, planned, plan_seconds = seeding.plan(runtime, newsletter_id)
            if planned != subscribers:
                raise RuntimeError(f"planned {planned} deliveries for {subscribers} readers")
            if approach.configure is not None:
                approach.configure(load_settings(env, cwd=folder))
            worker = CeleryWorker(
                approach.worker_app, env, folder / f"{approach.name}-worker.log", queue
            )
            profiler: Profiler | None = None
            try:
                worker.wait_ready(seeding.REDIS_URL)
                pool = worker.pool_pids()
                program = py_spy_path() if profile is not None else None
                if program is not None and profile is not None:
                    profiler = Profiler(program, worker.pid, profile)
                sampler = TreeSampler(worker.pid)
                baseline = sampler.start()
                machine_before = timing.machine_cpu()
                started = datetime.now(UTC)
                began = time.perf_counter()
                done = approach.enqueue(runtime, issue_id, limit)
                enqueue_seconds = time.perf_counter() - began
                patience = timeout if timeout is not None else 120 + expected / 10
                wait_until(done, patience, f"{approach.name} to send {expected} messages", 0.25)
                final = sampler.stop()
                machine_after = timing.machine_cpu()
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
                raise RuntimeError(f"{approach.name}: {sent} of {expected} deliveries sent")
            return SendRun(
                approach=approach.name,
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
