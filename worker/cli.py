"""``gazette worker`` and ``gazette beat``: the Celery processes, with Gazette's settings.

These commands live with the Celery app and join the ``gazette`` CLI through the
``gazette.commands`` entry point group (pyproject.toml): the library knows no Celery.
"""

from __future__ import annotations

import os
import sys

import click

from gazette.cli.app import EXIT_USAGE, fail, runtime


def _exec_celery(*args: str) -> None:
    """Check the settings and the database, then become ``celery -A worker <args>``."""
    rt = runtime()
    if rt.settings.broker_url is None:
        fail(
            "GAZETTE_BROKER_URL is not set: without a broker there is nothing for a worker "
            "or beat to do; `gazette run` serves, schedules and sends in one process.",
            EXIT_USAGE,
        )
    rt.engine.dispose()
    # Replace this process, so signals from a supervisor reach Celery directly.
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "worker", *args])  # noqa: S606


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker that sends batches (extra arguments go to Celery).

    \b
    Example:
      gazette worker --concurrency 4 --loglevel INFO
    """
    _exec_celery("worker", *celery_args)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(celery_args: tuple[str, ...]) -> None:
    """Run Celery beat: plans due issues every minute and sweeps lost work. Run one.

    \b
    Example:
      gazette beat --loglevel INFO
    """
    _exec_celery("beat", *celery_args)
