"""``gazette bounces``: read the reports about sent mail that came back, and act on them."""

from __future__ import annotations

from pathlib import Path

import click

from gazette.bounces.mailboxes import MaildirError, check_maildir
from gazette.bounces.runs import read_mailbox
from gazette.bounces.sources import Mailbox, parse_imap_url
from gazette.cli.app import EXIT_USAGE, fail, main, progress, runtime
from gazette.store.models import utcnow


@main.group()
def bounces() -> None:
    """Bounces, delays, complaints and auto-replies mailed back to the bounce address."""


@bounces.command()
@click.option(
    "--maildir",
    "path",
    type=click.Path(path_type=Path, file_okay=True),
    help="The Maildir the bounce address delivers to.",
)
@click.option(
    "--imap", "imap_url", metavar="URL",
    help="The IMAP folder the bounce address delivers to: imaps://user:password@host/INBOX.",
)  # fmt: skip
def process(path: Path | None, imap_url: str | None) -> None:
    """Act on every message in a Maildir or an IMAP folder, then move it out of the way.

    Each message is read (RFC 3464 bounces, RFC 5965 complaints, RFC 3834 auto-replies,
    and the non-standard bounces flufl.bounce knows), applied once, and moved into the
    Maildir's .processed folder, or kept aside in .unrecognised with the reason (on
    IMAP: the folders Gazette/Processed and Gazette/Unrecognised); a second run changes
    nothing. Kept messages older than GAZETTE_BOUNCE_RETENTION_DAYS are then deleted.
    Without either option, the mailbox GAZETTE_BOUNCE_MAILBOX names is read.
    GAZETTE_BOUNCE_REQUIRE_VERP=yes acts only on reports that carry a valid VERP token.

    \b
    Examples:
      gazette bounces process --maildir /var/mail/bounces
      gazette bounces process --imap 'imaps://bounces:secret@mail.example.org/INBOX'
    """
    if path is not None and imap_url is not None:
        fail("Give --maildir or --imap, not both.", EXIT_USAGE)
    mailbox: Mailbox | None = None
    if imap_url is not None:
        mailbox = parse_imap_url(imap_url)
    elif path is not None:
        try:
            mailbox = check_maildir(path)
        except MaildirError as error:
            fail(str(error), EXIT_USAGE)
    rt = runtime()
    mailbox = mailbox or rt.settings.bounce_mailbox
    if mailbox is None:
        fail(
            "Give --maildir PATH or --imap URL, or set GAZETTE_BOUNCE_MAILBOX: "
            "the bounce mailbox to read.",
            EXIT_USAGE,
        )
    run = read_mailbox(
        rt.sessions, mailbox, secret_keys=rt.settings.secret_keys,
        require_verp=rt.settings.bounce_require_verp,
        retention_days=rt.settings.bounce_retention_days, now=utcnow(), progress=progress,
        rules=rt.settings.deliverability,
    )  # fmt: skip
    click.echo(run.line())
