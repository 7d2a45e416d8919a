"""``gazette init``: prepare a fresh installation."""

from __future__ import annotations

import click

from gazette.cli.app import main, runtime
from gazette.store import migrate


@main.command()
def init() -> None:
    """Create the data folder and the database schema (safe to run again).

    \b
    Example:
      gazette init
    """
    rt = runtime(require_schema=False)
    rt.settings.var_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(rt.engine)
    click.echo(f"Database ready: {rt.settings.database_url_redacted}")
    click.echo(f"Mail goes to: {rt.settings.smtp.redacted()}")
    broker = rt.settings.broker_url or "none (tasks run in-process)"
    click.echo(f"Task broker: {broker}")
