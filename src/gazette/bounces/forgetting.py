"""Delete the kept bounce messages about a reader who is forgotten (`subscribers forget`).

A bounce quotes the message it is about: the reader's address, name and working links.
Once the reader is forgotten, every message of the bounce mailbox about them goes too,
waiting or kept: one whose VERP token names one of their deliveries, or that names
their address anywhere (a report without a token, the quoted original's To).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Collection, Sequence
from pathlib import Path

from gazette.bounces.imap import PROCESSED, UNRECOGNISED, open_mailbox
from gazette.bounces.mailboxes import MAX_BYTES
from gazette.bounces.mailboxes import PROCESSED as MAILDIR_PROCESSED
from gazette.bounces.mailboxes import UNRECOGNISED as MAILDIR_UNRECOGNISED
from gazette.bounces.reports import read_report
from gazette.bounces.sources import ImapURL, Mailbox


def is_about(
    raw: bytes, email: str, delivery_ids: Collection[int], secret_keys: Sequence[str]
) -> bool:
    """Whether the message ``raw`` is about the reader of ``email`` and ``delivery_ids``."""
    if _naming(email).search(raw):
        return True
    return read_report(raw, secret_keys).delivery_id in delivery_ids


# What may stand right before and after an address that is named whole: not a character
# an address could go on with, so forgetting ann@example.org leaves the bounces of
# joann@example.org and ann@example.org.uk, which are other readers' and may be waiting.
# A quoted-printable body writes "<" as "=3C", so "=" and two hex digits also end what
# comes before; a full stop ends a sentence unless a domain label follows it.
_BEFORE = rb"(?:^|[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]|=[0-9A-Fa-f]{2})"
_AFTER = rb"(?!\.?[A-Za-z0-9\-])"


@functools.lru_cache(maxsize=8)
def _naming(email: str) -> re.Pattern[bytes]:
    """A pattern finding ``email`` named whole, in any case, in a message's bytes."""
    return re.compile(_BEFORE + re.escape(email.encode("utf-8")) + _AFTER, re.IGNORECASE)


def forget_messages(
    mailbox: Mailbox, email: str, delivery_ids: Collection[int], secret_keys: Sequence[str]
) -> int:
    """Delete every message in ``mailbox`` about the reader; return how many."""
    if isinstance(mailbox, ImapURL):
        return _forget_imap(mailbox, email, delivery_ids, secret_keys)
    gone = 0
    for folder in (mailbox, mailbox / MAILDIR_PROCESSED, mailbox / MAILDIR_UNRECOGNISED):
        for file in _files(folder):
            with file.open("rb") as handle:
                raw = handle.read(MAX_BYTES)
            if is_about(raw, email, delivery_ids, secret_keys):
                file.unlink(missing_ok=True)
                gone += 1
    return gone


def _files(folder: Path) -> list[Path]:
    """The messages of one Maildir folder's new/ and cur/ (none when it does not exist)."""
    found = []
    for sub in ("new", "cur"):
        if (folder / sub).is_dir():
            found += [Path(e.path) for e in os.scandir(folder / sub) if e.is_file()]
    return found


def _forget_imap(
    url: ImapURL, email: str, delivery_ids: Collection[int], secret_keys: Sequence[str]
) -> int:
    with open_mailbox(url) as box:
        gone = 0
        for folder in (url.folder, box.folder(PROCESSED), box.folder(UNRECOGNISED)):
            box.select(folder)
            about = []
            for uid in box.waiting():
                fetched = box.fetch(uid)
                raw = fetched[2] if fetched else None
                if raw is not None and is_about(raw, email, delivery_ids, secret_keys):
                    about.append(uid)
            if about:
                box.delete(",".join(about))
            gone += len(about)
        return gone
