"""``gazette demo``: the main job, end to end, on whatever the settings point at."""

from __future__ import annotations

import click

from gazette import demo_publisher as demo_data
from gazette.cli.app import main, runtime
from gazette.digests.planning import PlanResult, plan_issue
from gazette.runtime import Runtime
from gazette.store import migrate
from gazette.store.db import transaction
from gazette.store.models import utcnow
from gazette.tokens import Purpose


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
    """Point at one message written to the outbox and its reader's unsubscribe link."""
    outbox = rt.settings.smtp.path
    if outbox is not None and sample.message_id:
        path = demo_data.find_in_maildir(outbox, sample.message_id)
        if path is not None:
            click.echo(f"One message: {path}")
    token = rt.tokens.mint(Purpose.UNSUBSCRIBE, sample.public_id, demo_data.NEWSLETTER)
    click.echo(f"Unsubscribe link for {sample.email}: {rt.settings.base_url}/unsubscribe/{token}")
