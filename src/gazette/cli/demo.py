"""``gazette demo``: the main job, end to end, on whatever the settings point at."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import click
from sqlalchemy.engine import make_url

from gazette import demo_publisher as demo_data
from gazette.cli.app import main, runtime
from gazette.digests.planning import PlanResult, plan_issue
from gazette.runtime import Runtime
from gazette.store import migrate
from gazette.store.db import transaction
from gazette.store.models import utcnow
from gazette.text import wrap_line
from gazette.tokens import Purpose

# What the demo prints fits an 80-column terminal (the links aside: they are copied whole).
WIDTH = 80
# Base URL hosts that `gazette run` on this machine answers for.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@main.command()
def demo() -> None:
    """Run the main job once: ingest, subscribe, plan an issue and send it.

    On an empty folder this creates the database, loads the example feed and readers in
    English, Ukrainian and Japanese, plans this week's issue and sends it through the
    same dispatcher production uses (in-process when no broker is set). Running it
    again sends nothing twice.

    \b
    Example:
      gazette demo && ls var/outbox/new
    """
    rt = runtime(require_schema=False)
    migrate.upgrade(rt.engine)
    with transaction(rt.sessions) as session:
        seeded = demo_data.seed(session)
        plan = plan_issue(session, seeded.newsletter_id, utcnow())
    with rt.sessions() as session:
        sent_before = demo_data.sent_count(session, plan.issue_id)
    batches = rt.dispatcher.enqueue_issue(plan.issue_id)
    with rt.sessions() as session:
        sent_now = demo_data.sent_count(session, plan.issue_id) - sent_before
        sample = demo_data.first_sent(session, plan.issue_id)
    _report_seed(seeded)
    if plan.skip_reason:
        click.echo(f"Issue {plan.issue_id} skipped: {plan.skip_reason}.")
        return
    _report_issue(rt, plan, batches, sent_now, sample)


def _report_seed(seeded: demo_data.DemoSeed) -> None:
    """Say what loading the example feed and readers added."""
    ingest = seeded.ingest
    click.echo(
        f"Articles: {ingest.added} added, {ingest.updated} updated, "
        f"{ingest.unchanged} already known, "
        f"{ingest.rejected} rejected from {demo_data.example_feed().name}."
    )
    click.echo(f"Readers: {seeded.readers_added} added ({len(demo_data.READERS)} in the demo).")


def _report_issue(
    rt: Runtime,
    plan: PlanResult,
    batches: int,
    sent_now: int,
    sample: demo_data.SentSample | None,
) -> None:
    """Say what the issue holds and where it went: the broker, or messages written."""
    state = "planned" if plan.created else "already planned"
    click.echo(
        f"Issue {plan.issue_id} {state}: {plan.articles} articles, {plan.deliveries} readers."
    )
    if rt.settings.broker_url:
        click.echo(f"Enqueued {batches} batch(es) on {rt.settings.broker_url}; workers send them.")
        return
    click.echo(f"Messages written: {sent_now} (to {rt.settings.smtp.redacted()}).")
    if sample is not None:
        _show_sample(rt, sample)


def _show_sample(rt: Runtime, sample: demo_data.SentSample) -> None:
    """Show one message as its reader sees it, where the files are, and how to serve links."""
    outbox = rt.settings.smtp.path
    path = None
    if outbox is not None and sample.message_id:
        path = demo_data.find_in_maildir(outbox, sample.message_id)
    if path is not None:
        click.echo(f"\nThe message to {sample.email}, as a mail client shows it:")
        seen = demo_data.glimpse(path)
        label = "  Subject: "
        for number, piece in enumerate(wrap_line(seen.subject, WIDTH - len(label))):
            click.echo(f"{label if number == 0 else ' ' * len(label)}{piece}")
        for line in seen.lines:
            for piece in wrap_line(line, WIDTH - 4):
                click.echo(f"    {piece}")
    click.echo("\nFiles:")
    if outbox is not None:
        click.echo(f"  messages  {_shown(outbox / 'new')}{os.sep} (one file per message)")
        if path is not None:
            click.echo(f"  this one  {path.name}")
    click.echo(f"  database  {_database(rt.settings.database_url)}")
    token = rt.tokens.mint(Purpose.UNSUBSCRIBE, sample.public_id, demo_data.NEWSLETTER)
    _serve_hint(rt.settings.base_url)
    click.echo(f"Unsubscribe link for {sample.email}:")
    click.echo(f"  {rt.settings.base_url}/unsubscribe/{token}")


def _serve_hint(base_url: str) -> None:
    """Say the one command that answers the links printed: ``gazette run`` on their port."""
    parts = urlsplit(base_url)
    if parts.hostname not in LOCAL_HOSTS:
        click.echo(
            f"\nThe links point at {base_url}: serve it with `gazette run` behind the web "
            "server that answers there (docs/deployment.md)."
        )
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    click.echo("\nTo open the links, serve them from this folder with:")
    click.echo(f"  gazette run --port {port}")


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it, else in full."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _database(database_url: str) -> str:
    """Where the database is: the SQLite file, or the server's URL without its password."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        return _shown(Path(url.database))
    return url.render_as_string(hide_password=True)
