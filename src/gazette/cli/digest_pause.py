"""``gazette digest resume``: sending of a newsletter paused by its figures goes on."""

from __future__ import annotations

import click

from gazette.cli.app import runtime
from gazette.cli.digest import digest
from gazette.digests.ledger import resumable_issues
from gazette.newsletters.pausing import resume as resume_sending
from gazette.newsletters.service import newsletter_by_slug
from gazette.store.db import transaction
from gazette.store.models import utcnow


@digest.command()
@click.argument("newsletter")
def resume(newsletter: str) -> None:
    """Resume sending a newsletter paused by an issue's complaint or hard-bounce rate.

    Its waiting deliveries are enqueued again and the scheduler plans its issues; the
    issue that paused it pauses it again only if new hard bounces or complaints arrive.

    \b
    Example:
      gazette digest resume weekly
    """
    rt = runtime()
    with transaction(rt.sessions) as session:
        found = newsletter_by_slug(session, newsletter)
        reason = resume_sending(session, found.id, utcnow())
        waiting = resumable_issues(session, utcnow(), found.id)
    click.echo(f"Sending of {newsletter} resumed (it was paused: {reason}).")
    for issue_id in waiting:
        batches = rt.dispatcher.enqueue_issue(issue_id)
        click.echo(f"Issue {issue_id}: {batches} batch(es) enqueued.")
