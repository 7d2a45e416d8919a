"""``gazette db``: schema migrations."""

from __future__ import annotations

import click

from gazette.cli.app import console, main, print_json, runtime
from gazette.store import migrate


@main.group()
def db() -> None:
    """Create and upgrade the database schema.

    \b
    Example:
      gazette db upgrade
    """


@db.command()
def upgrade() -> None:
    """Apply every migration this version ships (safe to run again).

    \b
    Example:
      GAZETTE_DATABASE_URL=postgresql://gazette@db/gazette gazette db upgrade
    """
    rt = runtime(require_schema=False)
    before = migrate.current_revision(rt.engine)
    migrate.upgrade(rt.engine)
    after = migrate.current_revision(rt.engine)
    where = rt.settings.database_url_redacted
    if before == after:
        click.echo(f"Database {where} is up to date (revision {after}).")
    else:
        click.echo(f"Database {where} upgraded from {before or 'empty'} to {after}.")


@db.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(as_json: bool) -> None:
    """Show the schema revision of the database and the newest one this version ships.

    \b
    Example:
      gazette db status --json
    """
    rt = runtime(require_schema=False)
    current, head = migrate.current_revision(rt.engine), migrate.head_revision()
    document = {
        "database": rt.settings.database_url_redacted,
        "current": current,
        "head": head,
        "up_to_date": current == head,
    }
    if as_json:
        print_json(document)
        return
    state = "up to date" if current == head else "needs `gazette db upgrade`"
    console().print(f"{document['database']}: revision {current or 'none'} of {head}, {state}.")
