"""``gazette digest``: plan and send an issue, and watch it go out."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from gazette.cli.app import console, main, print_json, progress, runtime
from gazette.digests import previews
from gazette.digests.deliverability import describe, issue_rates, policy_refusals
from gazette.digests.envelopes import require_dkim_key
from gazette.digests.intro import give_issue_note
from gazette.digests.ledger import (
    ErrorGroup,
    IssueStats,
    error_groups,
    in_flight,
    issue_stats,
    paused_reason,
    refused_by_relay,
    relay_refusal,
)
from gazette.digests.planning import PlanResult, plan_issue
from gazette.digests.retry import make_waiting_due
from gazette.errors import GazetteError
from gazette.mail.outcomes import DeliveryError
from gazette.mail.senders import split_sender
from gazette.mail.verp import envelope_sender
from gazette.newsletters.brand import read_intro_file
from gazette.newsletters.service import newsletter_by_slug
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Edition, utcnow
from gazette.subscribers.service import check_address

POLL_SECONDS = 0.5


@main.group()
def digest() -> None:
    """Plan, send and follow digest issues.

    \b
    Example:
      gazette digest send weekly --wait
    """


def _describe(stats: IssueStats, errors: list[ErrorGroup]) -> dict[str, Any]:
    """An issue's counts, and its last errors grouped by reason, as printed by status."""
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
        "errors": [group.as_json() for group in errors],
    }


@digest.command()
@click.argument("newsletter")
@click.option("--now", "extra", is_flag=True, help="Plan an extra issue now, outside the schedule.")
@click.option("--wait", is_flag=True, help="Follow the send until every message is settled.")
@click.option(
    "--weekly", is_flag=True, help="The weekly summary, for readers who chose it, this week."
)
@click.option(
    "--intro-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Markdown note from the editor above this issue's articles (instead of the standing one).",
)
def send(newsletter: str, extra: bool, wait: bool, weekly: bool, intro_file: Path | None) -> None:
    """Plan the issue of the current scheduled period and enqueue its batches.

    Planning is idempotent: the period's issue is planned once however often this
    runs. --now plans an extra issue with the articles waiting (published within
    the look-back window and not sent yet). --weekly plans the week's summary
    instead, sent to the readers who chose a weekly frequency (the scheduler plans
    it at the first tick of each week). With no broker configured the send runs
    in-process and returns when done.

    When the relay refuses the session (a wrong password, a refused sender, TLS, or
    no answer at all), the deliveries stay pending and are retried later, nobody is
    counted as bounced, and the command exits 1 with the relay's words. So it does
    when the relay refused every reader for its own reasons (a 5.7.x policy reply),
    and whenever nothing could be sent. --wait ends with the counts and the reasons
    of what failed or waits for a retry, grouped; `gazette digest retry ISSUE` sends
    what waits once the relay is fixed.

    \b
    Example:
      gazette digest send weekly --now --wait
    """
    rt = runtime()
    now = utcnow()
    note = read_intro_file(intro_file) if intro_file is not None else None
    with transaction(rt.sessions) as session:
        # Refused before planning: nothing is written for an issue that cannot be signed.
        require_dkim_key(rt.send_context, newsletter_by_slug(session, newsletter))
        plan = _plan(session, newsletter, now, extra=extra, weekly=weekly, note=note)
    if plan.skip_reason:
        click.echo(
            f"Issue {plan.issue_id} of {newsletter} skipped, nothing sent: {plan.skip_reason}."
        )
        return
    batches = rt.dispatcher.enqueue_issue(plan.issue_id)
    state = "planned" if plan.created else "already planned"
    click.echo(
        f"Issue {plan.issue_id} of {newsletter} {state}: {plan.articles} article(s), "
        f"{plan.deliveries} reader(s); {batches} batch(es) enqueued."
    )
    if wait or rt.settings.eager:
        _settle(rt, plan.issue_id)


def _plan(
    session: Session, slug: str, now: datetime, *, extra: bool, weekly: bool, note: str | None
) -> PlanResult:
    """Plan the period's issue (or an extra one, or the weekly summary), with its note."""
    newsletter_id = newsletter_by_slug(session, slug).id
    edition = Edition.WEEKLY if weekly else Edition.REGULAR
    prefix = "extra-weekly" if weekly else "extra"
    key = f"{prefix}-{now:%Y-%m-%dT%H:%M:%S}Z" if extra else None
    plan = plan_issue(session, newsletter_id, now, key, edition)
    if note is not None:
        give_issue_note(session, plan.issue_id, note, plan.created)
    return plan


def _settle(rt: Runtime, issue_id: int) -> None:
    """Follow the send to its end and report it with its reasons grouped.

    GazetteError when the relay refused it, or when nothing of it could be sent.
    """
    stats = _follow(rt.sessions, issue_id)
    click.echo(
        f"Issue {stats.issue_id}: {stats.sent} sent, {stats.failed} failed, "
        f"{stats.skipped} skipped, {stats.pending} pending."
    )
    with rt.sessions() as session:
        groups = error_groups(session, [issue_id])[issue_id]
        refusal = relay_refusal(session, issue_id)
        everyone = refused_by_relay(session, issue_id)
        paused = paused_reason(session, issue_id)
    for group in groups:
        click.echo(group.describe())
    if paused is not None:
        raise GazetteError(paused)
    if refusal is None and everyone is not None:
        words = " ".join(everyone.split())
        raise GazetteError(
            f"The relay {rt.settings.smtp.redacted()} refused every reader of issue "
            f"{issue_id} for its own reasons ({words}); nobody was counted as bounced."
        )
    if refusal is not None:
        words = " ".join(refusal.split())
        raise GazetteError(
            f"The relay {rt.settings.smtp.redacted()} refused to send issue "
            f"{issue_id} ({words}); its {stats.pending} pending deliveries are "
            f"kept and retried later, and `gazette digest retry {issue_id}` sends them now."
        )
    if stats.sent == 0 and groups:
        # Every reader refused or deferred for reasons about them (a 451 to all, say):
        # nobody was reached, which a quiet exit 0 would hide.
        raise GazetteError(
            f"Nothing of issue {issue_id} could be sent ({groups[0].describe()}); "
            f"`gazette digest retry {issue_id}` sends what waits."
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
        errors = error_groups(session, [s.issue_id for s in found])
        figures = {
            s.issue_id: (issue_rates(session, s.issue_id), policy_refusals(session, s.issue_id),
                         paused_reason(session, s.issue_id))
            for s in found
        }  # fmt: skip
    missing = sorted(set(issues) - {s.issue_id for s in found})
    if missing:
        raise GazetteError(f"There is no issue {missing[0]}; `gazette digest status` lists them.")
    rows = [_describe(s, errors[s.issue_id]) for s in found]
    for row in rows:
        rates, refusals, paused = figures[row["issue"]]
        row.update(deliverability={**rates.as_json(), "policy_refusals": refusals}, paused=paused)
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
    for stats in found:
        click.echo(describe(*figures[stats.issue_id][:2]))
        for group in errors[stats.issue_id]:
            click.echo(f"Issue {stats.issue_id}: {group.describe()}")
    for sentence in dict.fromkeys(row["paused"] for row in rows if row["paused"]):
        click.echo(sentence)


@digest.command()
@click.argument("issue", type=int)
@click.option("--wait", is_flag=True, help="Follow the send until every message is settled.")
def retry(issue: int, wait: bool) -> None:
    """Send the issue's deliveries that wait for a retry now, not when their backoff ends.

    For after the relay was fixed: the waiting deliveries become due and are sent as
    `digest send` sends (in-process without a broker, by the workers with one). An
    unknown issue, a finished one, or one with nothing waiting is an error (exit 1).

    \b
    Example:
      gazette digest retry 12 --wait
    """
    rt = runtime()
    with transaction(rt.sessions) as session:
        waiting = make_waiting_due(session, issue, utcnow())
    batches = rt.dispatcher.enqueue_issue(issue)
    click.echo(
        f"Issue {issue}: {waiting} waiting deliveries are due now; {batches} batch(es) enqueued."
    )
    if wait or rt.settings.eager:
        _settle(rt, issue)


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
    # A test message has no ledger row: the plain bounce address, when one is set.
    from_address = split_sender(rt.send_context.default_from).address
    sender = envelope_sender(rt.send_context.verp, from_address, None)
    with rt.send_context.transport.connect() as connection:
        try:
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
