"""``gazette bounces``: read the reports about sent mail that came back, and act on them."""

from __future__ import annotations

from pathlib import Path

import click

from gazette.bounces.imap import open_mailbox, process_imap
from gazette.bounces.mailboxes import MaildirError, Summary, check_maildir, process_maildir, waiting
from gazette.bounces.policy import Effect
from gazette.bounces.sources import ImapURL, parse_imap_url
from gazette.cli.app import EXIT_USAGE, fail, main, progress, runtime


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
    nothing. GAZETTE_BOUNCE_REQUIRE_VERP=yes acts only on reports that carry a valid
    VERP token.

    \b
    Examples:
      gazette bounces process --maildir /var/mail/bounces
      gazette bounces process --imap 'imaps://bounces:secret@mail.example.org/INBOX'
    """
    if path is not None and imap_url is not None:
        fail("Give --maildir or --imap, not both.", EXIT_USAGE)
    if imap_url is not None:
        _process_imap(parse_imap_url(imap_url))
        return
    if path is None:
        fail("Give --maildir PATH or --imap URL: the bounce mailbox to read.", EXIT_USAGE)
    try:
        maildir = check_maildir(path)
    except MaildirError as error:
        fail(str(error), EXIT_USAGE)
    rt = runtime()
    total = len(waiting(maildir))  # a MaildirError from here on is a failure (exit 1)
    with progress(total, f"Reading {maildir.name}") as advance:
        summary = process_maildir(
            rt.sessions, maildir, secret_keys=rt.settings.secret_keys,
            require_verp=rt.settings.bounce_require_verp, progress=advance,
        )  # fmt: skip
    click.echo(f"Read {_count(summary.read, 'message')} from {maildir}: {describe(summary)}.")


def _process_imap(url: ImapURL) -> None:
    """Process the IMAP folder ``url`` names, with a progress bar and a summary."""
    rt = runtime()
    with open_mailbox(url) as box:
        uids = box.waiting()
        with progress(len(uids), f"Reading {url.folder}") as advance:
            summary = process_imap(
                rt.sessions, box, uids, secret_keys=rt.settings.secret_keys,
                require_verp=rt.settings.bounce_require_verp, progress=advance,
            )  # fmt: skip
    click.echo(f"Read {_count(summary.read, 'message')} from {url.masked}: {describe(summary)}.")


def describe(summary: Summary) -> str:
    """The run's counts in one line, every kind named even when none came."""
    effects = summary.effects
    parts = [
        _count(effects[Effect.HARD], "hard bounce"),
        _count(effects[Effect.SOFT], "soft bounce"),
        f"{effects[Effect.NOT_THE_READER]} refused for policy (not counted against readers)",
        f"{effects[Effect.DELAYED]} delayed",
        _count(effects[Effect.COMPLAINT], "complaint"),
        _count(effects[Effect.AUTO_REPLY], "auto-reply", "auto-replies"),
        f"{summary.unrecognised} unrecognised"
        + (f" (kept aside in {summary.kept_aside})" if summary.unrecognised else ""),
        f"{summary.unmatched} unmatched",
        f"{summary.duplicates} already processed",
    ]
    return ", ".join(parts)


def _count(number: int, one: str, many: str | None = None) -> str:
    return f"{number} {one if number == 1 else many or one + 's'}"
