"""The Celery app, configured from Settings: broker, serialisation, acks, beat schedule.

Importing this module only creates the (unconfigured) app: reading the environment can
fail or create ./var/secret.key, so it waits until Celery first reads the configuration
(in ``celery worker`` and ``celery beat``), unless ``configure`` was called before.
"""

from __future__ import annotations

import sys

from celery import Celery
from celery.signals import worker_process_init
from kombu import pools as kombu_pools

from gazette.bounces.runs import BOUNCE_INTERVAL
from gazette.config import Settings, load_settings
from gazette.errors import ConfigError

app = Celery("gazette", include=["worker.tasks"])

# Redis redelivers an unacknowledged task after this long; every time limit stays well
# under it so a slow task is never handed to a second worker while still running.
VISIBILITY_TIMEOUT = 3600
# Without a broker tasks run eagerly, yet Celery still opens a producer on the broker
# URL to serialise them; kombu warns "No hostname was supplied" for a bare memory://,
# so the in-memory transport is named with the host it would default to anyway.
EAGER_BROKER = "memory://localhost/"
TASK_TIME_LIMIT = 900

# The settings configure() last applied; None until the app is pointed anywhere.
_applied: Settings | None = None


def configure(settings: Settings) -> None:
    """Point the app at the configured broker, or run tasks in-process when there is none.

    Safe to call again with other settings (the CLI and tests do): connections opened
    for the previous broker are dropped, or tasks would still be published there.
    Called again with the same settings (each runtime built for them does), it does
    nothing, so a running worker's configuration is never rewritten under it.
    """
    global _applied
    if settings == _applied:
        return
    if _applied is not None and _applied.broker_url != settings.broker_url:
        _drop_broker_connections()
    _applied = settings
    tick = float(settings.beat_interval)
    app.conf.update(
        broker_url=settings.broker_url or EAGER_BROKER,
        task_always_eager=settings.eager,
        # Several installations (or test runs) can share one Redis without taking
        # each other's tasks.
        task_default_queue=settings.queue,
        task_eager_propagates=True,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=TASK_TIME_LIMIT,
        task_soft_time_limit=TASK_TIME_LIMIT - 60,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "plan-due-issues": {"task": "gazette.plan_due_issues", "schedule": tick},
            "sweep": {"task": "gazette.sweep", "schedule": tick},
            # Each feed has its own interval; this only finds the ones that are due.
            "poll-due-feeds": {"task": "gazette.poll_due_feeds", "schedule": tick},
            **_bounce_schedule(settings),
        },
        timezone="UTC",
    )


def _bounce_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    """Reading the bounce mailbox every few minutes, when GAZETTE_BOUNCE_MAILBOX is set."""
    if settings.bounce_mailbox is None:
        return {}
    every = BOUNCE_INTERVAL.total_seconds()
    return {"process-bounces": {"task": "gazette.process_bounces", "schedule": every}}


def _drop_broker_connections() -> None:
    # Celery caches its connection pool and producer pool on first use and has no
    # public call to reset them short of deregistering the app; kombu also keeps
    # producer pools per broker URL globally, which would hand back a pool closed
    # here when the app returns to a broker it used before. Drop them all.
    pool = getattr(app, "_pool", None)
    if pool is not None:
        pool.force_close_all()
    app._pool = None  # type: ignore[attr-defined]
    app.amqp._producer_pool = None  # type: ignore[attr-defined]
    kombu_pools.reset()


@app.on_configure.connect(weak=False)
def _configure_from_environment(**_kwargs: object) -> None:
    """Configure from GAZETTE_* when Celery first reads its settings and nobody else did.

    This is how ``celery -A worker worker`` (which ``gazette worker`` runs) is set up.
    Only ``app.conf.update`` runs here: the configuration is still pending, and reading
    from it would ask Celery to load it again.
    """
    if _applied is not None:
        return
    try:
        settings = load_settings()
    except ConfigError as error:
        # A bad setting must read as one sentence, not a traceback from inside Celery.
        print(f"gazette: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    configure(settings)


@worker_process_init.connect(weak=False)
def _build_runtime(**_kwargs: object) -> None:
    """Build each pool process's runtime as it starts, not in its first task.

    Still after the fork, as current_runtime's lazy build would be: the engine, the
    SMTP pool and the Redis clients are the process's own. The first task then does
    only its own work: building cost tens of milliseconds of CPU per process (the
    database driver's import, the message catalogues), 7% of the worker's CPU on a
    10,000-reader issue sent by fresh processes. Celery logs an exception raised here
    and starts the process anyway; its first task then raises it again. Nothing here may
    connect or wait (the engine, Redis and SMTP connect on first use): Celery kills a
    pool process that is not up within worker_proc_alive_timeout (4 s).
    """
    from gazette.runtime import current_runtime  # here: importing worker.app alone stays light

    current_runtime().renderer.load_catalogues()
