"""``gazette digest``: plan and send an issue, and watch it go out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from gazette import previews
from gazette.cli.app import console, main, print_json, progress, runtime
from gazette.digests import IssueStats, in_flight, issue_stats, plan_issue
from gazette.errors import GazetteError
from gazette.mailer import DeliveryError
from gazette.newsletters import newsletter_by_slug
from gazette.senders import split_sender
from gazette.sending import relay_refusal
from gazette.store.db import transaction
from gazette.store.models import Edition, utcnow
from gazette.subscribers import check_address

POLL_SECONDS = 0.5


@main.group()
def digest() -> None:
    """Plan, send and follow digest issues.

    \b
    Example:
      gazette digest send weekly --wait
    """


def _describe(stats: IssueStats) -> dict[str, Any]:
    rate = stats.rate(utcnow())
    return {
        "issue": stats.issue_id,
        "newsletter": stats.newsletter,
        "edition": stats.edition.value,
        "period": stats.period_key,
        "status": stats.status.value,
        "planned": stats.planned,
        "sent": stats.sent,
        "failed": stats.failed,
        "skipped": stats.skipped,
        "pending": stats.pending,
        "started_at": stats.started_at.isoformat() if stats.started_at else None,
        "finished_at": stats.finished_at.isoformat() if stats.finished_at else None,
        "messages_per_second": round(rate, 1) if rate is not None else None,
    }


@digest.command()
@click.argument("newsletter")
@click.option("--now", "extra", is_flag=True, help="Plan an extra issue now, outside the schedule.")
@click.option("--wait", is_flag=True, help="Follow the send until every message is settled.")
@click.option(
    "--weekly", is_flag=True, help="The weekly summary, for readers who chose it, this week."
)
def send(newsletter: str, extra: bool, wait: bool, weekly: bool) -> None:
    """Plan the issue of the current scheduled period and enqueue its batches.

    Planning is idempotent: the period's issue is planned once however often this
    runs. --now plans an extra issue with the articles waiting (published within
    the look-back window and not sent yet). --weekly plans the week's summary
    instead, sent to the readers who chose a weekly frequency (the scheduler plans
    it at the first tick of each week). With no broker configured the send runs
    in-process and returns when done.

    When the relay refuses the session (a wrong password, a refused sender, TLS, or
    no answer at all), the deliveries stay pending and are retried later, nobody is
    counted as bounced, and the command exits 1 with the relay's words.

    \b
    Example:
      gazette digest send weekly --now --wait
    """
    from worker.tasks import enqueue_issue

    rt = runtime()
    now = utcnow()
    with transaction(rt.sessions) as session:
        newsletter_id = newsletter_by_slug(session, newsletter).id
        edition = Edition.WEEKLY if weekly else Edition.REGULAR
        prefix = "extra-weekly" if weekly else "extra"
        key = f"{prefix}-{now:%Y-%m-%dT%H:%M:%S}Z" if extra else None
        plan = plan_issue(session, newsletter_id, now, key, edition)
    if plan.skip_reason:
        click.echo(
            f"Issue {plan.issue_id} of {newsletter} skipped, nothing sent: {plan.skip_reason}."
        )
        return
    batches = enqueue_issue(plan.issue_id)
    state = "planned" if plan.created else "already planned"
    click.echo(
        f"Issue {plan.issue_id} of {newsletter} {state}: {plan.articles} article(s), "
        f"{plan.deliveries} reader(s); {batches} batch(es) enqueued."
    )
    if wait or rt.settings.eager:
        stats = _follow(rt.sessions, plan.issue_id)
        click.echo(
            f"Issue {stats.issue_id}: {stats.sent} sent, {stats.failed} failed, "
            f"{stats.skipped} skipped, {stats.pending} pending."
        )
        with rt.sessions() as session:
            refusal = relay_refusal(session, plan.issue_id)
        if refusal is not None:
            words = " ".join(refusal.split())
            raise GazetteError(
                f"The relay {rt.settings.smtp.redacted()} refused to send issue "
                f"{plan.issue_id} ({words}); its {stats.pending} pending deliveries are "
                "kept and retried later."
            )


def in_flight_now(sessions: sessionmaker[Session], issue_id: int) -> bool:
    """True while some of the issue's rows are being sent or are due."""
    with sessions() as session:
        return in_flight(session, issue_id, utcnow())


def _follow(sessions: sessionmaker[Session], issue_id: int) -> IssueStats:
    """Poll the ledger with a progress bar until the issue is settled."""
    with sessions() as session:
        stats = issue_stats(session, [issue_id])[0]
    with progress(stats.planned, f"Issue {issue_id}") as advance:
        while True:
            advance(stats.sent + stats.failed + stats.skipped)
            # Rows waiting on a retry backoff are pending but not in flight: stop there.
            if stats.done or not in_flight_now(sessions, issue_id):
                return stats
            time.sleep(POLL_SECONDS)
            with sessions() as session:
                stats = issue_stats(session, [issue_id])[0]


@digest.command()
@click.argument("issues", nargs=-1, type=int)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(issues: tuple[int, ...], limit: int, as_json: bool) -> None:
    """Show issues with their ledger counts (the newest first).

    \b
    Example:
      gazette digest status --json
    """
    with runtime().sessions() as session:
        # Issues asked for by id are all shown, however many: --limit is for the newest.
        found = issue_stats(session, list(issues) or None, max(limit, len(issues)))
    missing = sorted(set(issues) - {s.issue_id for s in found})
    if missing:
        raise GazetteError(f"There is no issue {missing[0]}; `gazette digest status` lists them.")
    rows = [_describe(s) for s in found]
    if as_json:
        print_json({"issues": rows})
        return
    table = Table(
        "issue", "newsletter", "edition", "period", "status", "planned", "sent", "failed",
        "skipped", "pending", "started", "finished", "msg/s",
    )  # fmt: skip
    for row in rows:
        table.add_row(
            *(str(row[k]) for k in ("issue", "newsletter", "edition", "period", "status",
                                    "planned", "sent", "failed", "skipped", "pending")),
            (row["started_at"] or "")[:19], (row["finished_at"] or "")[:19],
            str(row["messages_per_second"] or ""),
        )  # fmt: skip
    console().print(table)


@digest.command()
@click.argument("newsletter")
@click.option("--as", "as_email", help="Render for this subscriber (language, topics, name).")
@click.option(
    "--html",
    "html_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the HTML part here.",
)
@click.option(
    "--eml",
    "eml_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the whole message here.",
)
@click.option(
    "--weekly/--regular",
    "weekly",
    default=None,
    help="The weekly summary or every-issue edition (default: the --as reader's own).",
)
def preview(
    newsletter: str,
    as_email: str | None,
    html_file: Path | None,
    eml_file: Path | None,
    weekly: bool | None,
) -> None:
    """Show the issue the newsletter would send if planned now; changes nothing.

    \b
    Example:
      gazette digest preview weekly --as ada@example.org --html preview.html
    """
    rt = runtime()
    with rt.sessions() as session:
        result = previews.preview(
            session, rt.send_context, newsletter, utcnow(), as_email=as_email,
            edition=_edition(weekly),
        )  # fmt: skip
    if html_file is not None:
        html_file.write_text(result.personal.html, encoding="utf-8")
    if eml_file is not None:
        eml_file.write_bytes(result.message)
    click.echo(f"Subject: {result.personal.subject}")
    edition = " (weekly summary)" if result.edition is Edition.WEEKLY else ""
    click.echo(
        f"For: {result.reader.email} ({result.reader.language}), "
        f"{result.articles} article(s){edition}"
    )
    click.echo("")
    click.echo(result.personal.text)


@digest.command(name="test")
@click.argument("newsletter")
@click.option("--to", "to", required=True, help="Address that receives the test message.")
@click.option("--as", "as_email", help="Render for this subscriber (language, topics, name).")
@click.option(
    "--weekly/--regular",
    "weekly",
    default=None,
    help="The weekly summary or every-issue edition (default: the --as reader's own).",
)
def test_send(newsletter: str, to: str, as_email: str | None, weekly: bool | None) -> None:
    """Send the preview to one address, through the configured transport.

    With no new articles, the latest issue's articles are used, so templates and the
    relay can be tested again after a send.

    \b
    Example:
      gazette digest test weekly --to editor@example.org
    """
    rt = runtime()
    address = check_address(to, allow_smtputf8=rt.settings.smtputf8)
    with rt.sessions() as session:
        result = previews.preview(
            session, rt.send_context, newsletter, utcnow(), as_email=as_email, to=address,
            edition=_edition(weekly), latest_if_none=True,
        )  # fmt: skip
    with rt.send_context.transport.connect() as connection:
        try:
            sender = split_sender(rt.send_context.default_from).address
            connection.send(sender, address, result.message)
        except DeliveryError as error:
            raise GazetteError(
                f"The relay refused the test message to {address}: {error.detail}"
            ) from None
    again = (
        f" (nothing new since issue {result.from_issue}: its articles were used)"
        if result.from_issue is not None
        else ""
    )
    click.echo(f"Test of {newsletter} sent to {address} via {rt.settings.smtp.redacted()}{again}.")


def _edition(weekly: bool | None) -> Edition | None:
    """--weekly/--regular as an edition; neither leaves the choice to the reader's own."""
    if weekly is None:
        return None
    return Edition.WEEKLY if weekly else Edition.REGULAR
