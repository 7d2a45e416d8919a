"""``gazette subscribers``: add, list, show, remove, forget, import, export."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from gazette.bounces.forgetting import forget_messages
from gazette.cli.app import (
    EXIT_FAILED,
    EXIT_USAGE,
    console,
    fail,
    main,
    print_json,
    progress,
    runtime,
)
from gazette.cli.output import strong
from gazette.mail.outcomes import DeliveryError
from gazette.newsletters.service import newsletter_by_slug, newsletter_or_only
from gazette.ratelimit import LocalThrottle
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Subscriber
from gazette.subscribers.csv_export import export_csv
from gazette.subscribers.csv_import import import_csv
from gazette.subscribers.csv_reading import check_file
from gazette.subscribers.listing import list_subscribers, reader_events
from gazette.subscribers.service import LANGUAGES, Origin, subscriber_by_email
from gazette.subscribers.subscribing import subscribe
from gazette.subscribers.unsubscribing import forget, unsubscribe, unsubscribe_all

CLI = Origin("cli")


def _default_newsletter(rt: Runtime, slug: str | None) -> str:
    """The newsletter a command acts on: the one given, or the only one there is."""
    if slug:
        return slug
    with rt.sessions() as session:
        return newsletter_or_only(session, slug)


@main.group()
def subscribers() -> None:
    """Manage readers and their subscriptions.

    \b
    Example:
      gazette subscribers import readers.csv --newsletter weekly --confirmed
    """


@subscribers.command()
@click.argument("email")
@click.option("--name", default="", help="Display name used in greetings.")
@click.option("--language", type=click.Choice(LANGUAGES), default="en", show_default=True)
@click.option("--newsletter", "slug", help="Newsletter slug (default: the only one).")
@click.option("--confirmed", is_flag=True, help="You already hold this reader's consent.")
def add(email: str, name: str, language: str, slug: str | None, confirmed: bool) -> None:
    """Subscribe one reader; without --confirmed they are sent a confirmation link.

    \b
    Example:
      gazette subscribers add ada@example.org --name "Ada" --language en --confirmed
    """
    rt = runtime()
    slug = _default_newsletter(rt, slug)
    with transaction(rt.sessions) as session:
        result = subscribe(
            session, email, slug, CLI, name=name, language=language,
            confirmed=confirmed, allow_smtputf8=rt.settings.smtputf8,
        )  # fmt: skip
    if result.needs_confirmation:
        rt.dispatcher.send_confirmation(result.subscriber_id, result.newsletter_id)
        click.echo(f"{email.strip()} is pending: a confirmation link is on its way.")
    else:
        click.echo(f"{email.strip()} is {result.status.value} on {slug}.")


def _describe(subscriber: Subscriber) -> dict[str, Any]:
    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "language": subscriber.language,
        "created_at": subscriber.created_at.isoformat(),
        "confirmed_at": subscriber.confirmed_at.isoformat() if subscriber.confirmed_at else None,
        "consent": {
            "source": subscriber.consent_source,
            "at": subscriber.consent_at.isoformat() if subscriber.consent_at else None,
            "ip": subscriber.consent_ip,
        },
        "bounces": subscriber.bounce_count,
        "subscriptions": {
            s.newsletter.slug: s.status.value
            for s in sorted(subscriber.subscriptions, key=lambda s: s.newsletter.slug)
        },
    }


@subscribers.command(name="list")
@click.option("--newsletter", "slug", help="Only readers of this newsletter.")
@click.option(
    "--status", type=click.Choice(["pending", "active", "unsubscribed", "bounced", "complained"])
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def list_(slug: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """List readers, newest first.

    \b
    Example:
      gazette subscribers list --newsletter weekly --status active --json
    """
    with runtime().sessions() as session:
        total, found = list_subscribers(session, slug, status, limit)
        rows = [_describe(s) for s in found]
    if as_json:
        print_json({"total": total, "subscribers": rows})
        return
    table = Table("email", "name", "language", "subscriptions", "created")
    for row in rows:
        subs = ", ".join(f"{k}: {v}" for k, v in row["subscriptions"].items())
        table.add_row(row["email"], row["name"], row["language"], subs, row["created_at"][:16])
    console().print(table)
    console().print(f"{len(rows)} of {total} shown.")


@subscribers.command()
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def show(email: str, as_json: bool) -> None:
    """Show one reader: consent record, subscriptions, and their event history.

    \b
    Example:
      gazette subscribers show ada@example.org
    """
    rt = runtime()
    with rt.sessions() as session:
        subscriber = subscriber_by_email(session, email)
        document = _describe(subscriber)
        document["events"] = [
            {
                "at": e.created_at.isoformat(),
                "kind": e.kind,
                "source": e.source,
                "ip": e.ip,
                "detail": e.detail or {},
            }
            for e in reader_events(session, subscriber.id)
        ]
    if as_json:
        print_json(document)
        return
    out = console()
    out.print(strong(document["email"]), document["name"], f"({document['language']})")
    for key, value in document["subscriptions"].items():
        out.print(f"  {key}: {value}")
    table = Table("at", "event", "source", "ip", "detail")
    for event in document["events"]:
        # What a bounce or a complaint said, so the operator sees why a reader was ended.
        detail = "; ".join(f"{k}: {v}" for k, v in event["detail"].items() if v)
        table.add_row(
            event["at"][:19], event["kind"], event["source"], event["ip"] or "", detail[:200]
        )
    out.print(table)


@subscribers.command()
@click.argument("email")
@click.option("--newsletter", "slug", help="Only this newsletter (default: all of them).")
def remove(email: str, slug: str | None) -> None:
    """Unsubscribe a reader (their record and history stay).

    \b
    Example:
      gazette subscribers remove ada@example.org --newsletter weekly
    """
    rt = runtime()
    with transaction(rt.sessions) as session:
        subscriber = subscriber_by_email(session, email)
        if slug:
            changed = int(
                unsubscribe(session, subscriber.id, newsletter_by_slug(session, slug).id, CLI)
            )
        else:
            changed = unsubscribe_all(session, subscriber.id, CLI)
    click.echo(f"{subscriber.email}: {changed} subscription(s) ended.")


@subscribers.command()
@click.argument("email")
def unbounce(email: str) -> None:
    """Give back the subscriptions bounces ended (for a bounce made by mistake).

    Each returns to the status it had, the bounce count restarts from zero and a
    bounce suppression is lifted; the change is recorded in the reader's history.

    \b
    Example:
      gazette subscribers unbounce ada@example.org
    """
    from gazette.subscribers.bounces import unbounce as unbounce_reader

    rt = runtime()
    with transaction(rt.sessions) as session:
        result = unbounce_reader(session, email, CLI)
    pending = f", {result.pending} pending confirmation" if result.pending else ""
    click.echo(f"{result.email}: {result.reactivated} subscription(s) active again{pending}.")


@subscribers.command(name="forget")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def forget_(email: str, yes: bool) -> None:
    """Delete a reader's personal data; a hash stops any re-import from adding them again.

    \b
    Example:
      gazette subscribers forget ada@example.org --yes
    """
    rt = runtime()
    if not yes:
        click.confirm(f"Delete every personal record of {email.strip()}?", abort=True)
    with transaction(rt.sessions) as session:
        forgotten = forget(session, email, CLI)
    kept = ""
    if rt.settings.bounce_mailbox is not None:
        gone = forget_messages(
            rt.settings.bounce_mailbox, forgotten.email, forgotten.delivery_ids,
            rt.settings.secret_keys,
        )  # fmt: skip
        kept = f"; {gone} bounce message(s) about them deleted from the bounce mailbox"
    click.echo(f"{email.strip()} is forgotten{kept}.")


@subscribers.command(name="import")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--newsletter", "slug", help="Newsletter slug (default: the only one).")
@click.option("--confirmed", is_flag=True, help="You hold every listed reader's consent.")
@click.option(
    "--send-confirmations",
    is_flag=True,
    help="Leave new readers pending and mail each a confirmation link (throttled).",
)
@click.option(
    "--rate",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Confirmation mails queued per second with --send-confirmations.",
)
def import_(
    path: Path, slug: str | None, confirmed: bool, send_confirmations: bool, rate: float
) -> None:
    """Import readers from CSV with an email column (name and language optional).

    Choose --confirmed (you hold consent) or --send-confirmations (each new reader is
    mailed a link and stays pending until they follow it). Spellings of one mailbox are
    one reader. Language tags map to the offered languages (ja-JP to ja); a language
    not offered gives a new reader the newsletter's default. Rejected rows are listed
    with their line numbers; nothing is written when the file itself cannot be read.
    Running the same import again changes nothing.

    \b
    Example:
      gazette subscribers import readers.csv --newsletter weekly --confirmed
    """
    _require_one_choice(confirmed, send_confirmations)
    rt = runtime()
    slug = _default_newsletter(rt, slug)
    total = check_file(path)
    with progress(total, f"Importing {path.name}") as advance:
        report = import_csv(
            rt.sessions, path, slug, Origin("import"), confirmed=confirmed,
            allow_smtputf8=rt.settings.smtputf8, progress=advance,
        )  # fmt: skip
    for row in report.rejected:
        click.echo(f"{path}:{row.line}: {row.reason}", err=True)
    line = report.summary()
    failed = 0
    if send_confirmations:
        queued, failed = _queue_confirmations(rt, slug, report.pending, rate)
        line += f", {queued} confirmation mail{'' if queued == 1 else 's'} queued"
        if failed:
            line += f", {failed} could not be sent"
    click.echo(f"Imported {path.name}: {line}.")
    if failed or (report.rejected and not (report.added or report.updated or report.unchanged)):
        sys.exit(EXIT_FAILED)


def _require_one_choice(confirmed: bool, send_confirmations: bool) -> None:
    """Exit with a usage error unless exactly one of the two consent flags was given."""
    if confirmed == send_confirmations:
        # Mailing an old list out of the blue draws complaints that hurt the sender's
        # reputation; holding consent is the operator's claim. Neither is a default.
        fail(
            "Choose --confirmed (you hold every listed reader's consent) or "
            "--send-confirmations (each new reader is mailed a link to confirm): "
            "confirmation mail to an old list draws complaints, so Gazette does not "
            "choose for you.",
            EXIT_USAGE,
        )


def _queue_confirmations(
    rt: Runtime, slug: str, subscriber_ids: list[int], rate: float
) -> tuple[int, int]:
    """Queue a confirmation mail per reader, at most ``rate`` a second; (queued, failed).

    Paced here rather than all at once, so the relay and the recipients' providers
    see a steady trickle, not a burst from one sender.
    """
    with rt.sessions() as session:
        newsletter_id = newsletter_by_slug(session, slug).id
    throttle = LocalThrottle(rate)
    readers = list(dict.fromkeys(subscriber_ids))  # one mail per reader
    queued = failed = 0
    with progress(len(readers), "Queueing confirmation mails") as advance:
        for done, subscriber_id in enumerate(readers, start=1):
            throttle.wait()
            try:
                rt.dispatcher.send_confirmation(subscriber_id, newsletter_id)
            except DeliveryError as error:
                # Without a broker the mail goes out here; the reader stays pending and
                # a later run with --send-confirmations tries again.
                click.echo(f"subscriber {subscriber_id}: not sent: {error.detail}", err=True)
                failed += 1
            else:
                queued += 1
            advance(done)
    return queued, failed


@subscribers.command()
@click.option("--newsletter", "slug", help="Only readers of this newsletter.")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="File (default: stdout).",
)
@click.option(
    "--excel",
    is_flag=True,
    help="Start with a UTF-8 byte-order mark, so spreadsheets read non-Latin text right.",
)
def export(slug: str | None, output: Path | None, excel: bool) -> None:
    """Export readers as UTF-8 CSV that is safe to open in a spreadsheet.

    Without --excel the file has no byte-order mark; Excel then reads it in the
    system's legacy code page and garbles Cyrillic and Japanese.

    \b
    Example:
      gazette subscribers export --newsletter weekly --excel -o readers.csv
    """
    rt = runtime()
    encoding = "utf-8-sig" if excel else "utf-8"
    with rt.sessions() as session:
        if output is None:
            out = io.TextIOWrapper(sys.stdout.buffer, encoding=encoding, newline="")
            try:
                count = export_csv(session, out, slug)
            finally:
                out.detach()  # flushed, and sys.stdout stays open
        else:
            tmp = output.with_name(output.name + ".part")
            with tmp.open("w", encoding=encoding, newline="") as handle:
                count = export_csv(session, handle, slug)
            tmp.replace(output)
    click.echo(f"Exported {count} row(s).", err=True)
