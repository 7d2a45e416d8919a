"""The root command group, error handling and the helpers every command shares."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any, NoReturn

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from gazette.cli.output import LiteralConsole
from gazette.config import load_settings
from gazette.errors import ConfigError, GazetteError
from gazette.runtime import Runtime, build_runtime, use_runtime
from gazette.store import migrate
from gazette.store.db import check_connection

EXIT_FAILED = 1
EXIT_USAGE = 2
# Commands other packages add (the worker package's `worker` and `beat`), by entry point.
COMMANDS_GROUP = "gazette.commands"


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print one sentence to stderr and exit: 1 for a failed operation, 2 for bad config."""
    click.echo(f"gazette: {message}", err=True)
    sys.exit(code)


class GazetteGroup(click.Group):
    """Turns the errors a user can cause into one sentence and an exit code, no traceback.

    Also lists and loads the commands registered under COMMANDS_GROUP, only when asked
    for, so `gazette serve` never imports the worker package (nor Celery).
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The group's own commands and the registered ones, sorted."""
        plugins = {entry.name for entry in entry_points(group=COMMANDS_GROUP)}
        return sorted({*super().list_commands(ctx), *plugins})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The group's own command of that name, else the registered one, loaded now."""
        own = super().get_command(ctx, cmd_name)
        if own is not None:
            return own
        for entry in entry_points(group=COMMANDS_GROUP, name=cmd_name):
            command: click.Command = entry.load()
            return command
        return None

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command, mapping ConfigError to exit 2 and GazetteError to exit 1."""
        try:
            return super().invoke(ctx)
        except ConfigError as error:
            fail(str(error), EXIT_USAGE)
        except GazetteError as error:
            fail(str(error), EXIT_FAILED)


def runtime(*, require_schema: bool = True) -> Runtime:
    """Build this invocation's runtime from the environment and install it for tasks too.

    The database must answer and, unless the command creates it, carry the schema this
    version expects. Work the command hands off goes through the runtime's dispatcher:
    to the configured broker, or in-process with none.
    """
    settings = load_settings()
    built = build_runtime(settings)
    check_connection(built.engine)
    if require_schema:
        current, head = migrate.current_revision(built.engine), migrate.head_revision()
        if current != head:
            built.engine.dispose()
            state = "has no schema yet" if current is None else f"is at revision {current}"
            raise GazetteError(
                f"The database {settings.database_url_redacted} {state}; "
                "run `gazette db upgrade` (or `gazette init`) first."
            )
    use_runtime(built)
    return built


def console() -> LiteralConsole:
    """Return the console for human output (stdout): values print literally, never as markup.

    Off a terminal rich would wrap tables at 80 columns; a pipe or a log gets full rows.
    """
    return LiteralConsole(width=None if sys.stdout.isatty() else 200)


@contextmanager
def progress(total: int | None, description: str) -> Iterator[Callable[[int], None]]:
    """Yield a callback taking the number of items done; a bar only on a terminal.

    Off a terminal (cron, CI, a pipe) nothing is drawn; the command prints its summary
    line either way.
    """
    out = LiteralConsole(stderr=True)
    if not out.is_terminal:
        yield lambda _done: None
        return
    columns = (
        TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
        TaskProgressColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=out, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


def print_json(document: object) -> None:
    """Print one JSON document on stdout and nothing else, for scripts."""
    click.echo(json.dumps(document, ensure_ascii=False, indent=2, default=str))


@click.group(cls=GazetteGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gazette")
def main() -> None:
    """Gazette: a self-hosted newsletter service.

    Settings come from GAZETTE_* environment variables; with none set, everything lives
    under ./var (a SQLite database and a Maildir outbox) and tasks run in-process.

    \b
    Example:
      gazette init && gazette demo
    """
