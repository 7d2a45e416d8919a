"""The obvious approach's Celery app: ``celery -A benchmarks.scenarios.obvious.app worker``.

Celery's defaults (early acknowledgement, prefetching four tasks per process), as an
application written the obvious way would have them; only the broker and the queue come
from the same GAZETTE_* settings the Gazette worker reads.
"""

from __future__ import annotations

import sys

from celery import Celery

from gazette.config import Settings, load_settings
from gazette.errors import ConfigError

app = Celery("bench-naive", include=["benchmarks.scenarios.obvious.sender"])


def configure(settings: Settings) -> None:
    """Point the app at the settings' broker and queue."""
    app.conf.update(
        broker_url=settings.broker_url or "memory://",
        task_always_eager=settings.broker_url is None,
        task_default_queue=settings.queue,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )


try:
    configure(load_settings())
except ConfigError as error:
    print(f"benchmarks.scenarios.obvious.app: {error}", file=sys.stderr)
    raise SystemExit(2) from None
