"""Read the bounce address's IMAP folder, act on each message, move it out of the way.

Every message in the folder is fetched (without marking it read), processed in a
transaction of its own, then moved to ``Gazette/Processed``, or, when it was not
understood, to ``Gazette/Unrecognised`` (both created when missing; the server's own
hierarchy separator replaces ``/``). IMAP cannot add a header to a stored message, so
one not understood is APPENDed to ``Gazette/Unrecognised`` with the reason in an
``X-Gazette-Reason`` header at its top, as the Maildir reader writes it, and the
original is deleted: the reason stays with the message, where the operator reads it in
a mail client, instead of in a cron mail that is gone by then. MOVE (RFC 6851) when
the server offers it, else COPY, ``\\Deleted`` and EXPUNGE (only that message's, with
UIDPLUS). A second run finds nothing; a crash after the commit leaves the message in
place, and the next run finds it done and only moves it.
"""

from __future__ import annotations

import imaplib
import logging
import re
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gazette.bounces.mailboxes import (
    MAX_BYTES,
    Summary,
    process_raw,
    with_reason,
    without_reason,
)
from gazette.bounces.processing import Outcome
from gazette.bounces.reports import Kind
from gazette.bounces.sources import ImapURL
from gazette.deliverability_settings import Deliverability
from gazette.errors import GazetteError
from gazette.subscribers.bounces import DEFAULT_RULES

logger = logging.getLogger(__name__)

PROCESSED = ("Gazette", "Processed")
UNRECOGNISED = ("Gazette", "Unrecognised")
# Long enough for a slow server, short enough that a scheduled run never hangs.
TIMEOUT = 60.0
_UID = re.compile(rb"UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_DATE = re.compile(rb'INTERNALDATE "([^"]+)"')
_LIST = re.compile(rb'\((?P<flags>[^)]*)\) (?:"(?P<sep>[^"]*)"|NIL) ')


class ImapError(GazetteError):
    """The server cannot be reached, refuses the login, or lacks the folder (one sentence)."""


class ImapMailbox:
    """A logged-in connection to the folder of ``url``, its messages selected read-write."""

    def __init__(self, url: ImapURL, client: imaplib.IMAP4) -> None:
        self.url = url
        self.client = client
        # What the server offers once logged in (imaplib keeps only the greeting's list).
        self.capabilities = set(
            _said(self._ok(client.capability(), "say what it offers")).upper().split()
        )
        self.separator = self._separator()

    def waiting(self) -> list[str]:
        """The UIDs of the messages in the folder, oldest first, but those marked deleted.

        A message someone marked \\Deleted is on its way out: not read, and left alone.
        """
        uids = self._ok(self.client.uid("SEARCH", "UNDELETED"), "list the messages")
        return (uids[0] or b"").decode().split()

    def folder(self, parts: Sequence[str]) -> str:
        """``parts`` joined with the server's hierarchy separator, created when missing."""
        name = self.separator.join(parts)
        found = self._ok(self.client.list('""', _quote(name)), f"look for {name}")
        if not any(found):
            # A parallel run may have just made it: CREATE failing then is fine, LIST says.
            self.client.create(_quote(name))
            if not any(self._ok(self.client.list('""', _quote(name)), f"create {name}")):
                raise ImapError(f"{self.url.masked}: the server would not create folder {name!r}.")
        return name

    def fetch(self, uid: str) -> tuple[int, str | None, bytes | None] | None:
        """(size, internal date, bytes) of one message, the bytes None when too large to read.

        None when the message is gone (another run took it).
        """
        meta = self._ok(self.client.uid("FETCH", uid, "(RFC822.SIZE INTERNALDATE)"), "read")
        head = b" ".join(part[0] if isinstance(part, tuple) else part for part in meta if part)
        size, date = _SIZE.search(head), _DATE.search(head)
        if size is None:
            return None
        internal = date.group(1).decode() if date else None
        if int(size.group(1)) > MAX_BYTES:
            return int(size.group(1)), internal, None
        body = self._ok(self.client.uid("FETCH", uid, "(BODY.PEEK[])"), "read")
        raw = next((part[1] for part in body if isinstance(part, tuple)), None)
        return (int(size.group(1)), internal, raw) if raw is not None else None

    def move(self, uid: str, target: str) -> None:
        """Move one message to ``target``: MOVE, else COPY, \\Deleted and EXPUNGE."""
        if "MOVE" in self.capabilities:
            self._ok(self.client.uid("MOVE", uid, _quote(target)), f"move it to {target}")
            return
        self._ok(self.client.uid("COPY", uid, _quote(target)), f"copy it to {target}")
        self.delete(uid)

    def delete(self, uid: str) -> None:
        """Delete one message: \\Deleted, then EXPUNGE (only its own, with UIDPLUS)."""
        self._ok(self.client.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)"), "delete")
        if "UIDPLUS" in self.capabilities:
            self._ok(self.client.uid("EXPUNGE", uid), "expunge")
        else:
            self._ok(self.client.expunge(), "expunge")

    def append(self, target: str, raw: bytes, internal: str | None) -> None:
        """Store ``raw`` in ``target``, marked read, with the original's internal date."""
        when = f'"{internal}"' if internal else None
        self._ok(self.client.append(_quote(target), r"(\Seen)", when, raw), f"store in {target}")

    def select(self, folder: str) -> None:
        """Work on ``folder`` from now on (read-write)."""
        self._ok(self.client.select(_quote(folder)), f"open {folder}")

    def expire(self, folder: str, before: datetime) -> int:
        """Delete the messages of ``folder`` whose internal date is before ``before``."""
        self.select(folder)
        uids = self.waiting()
        if not uids:
            return 0
        dates = self._ok(self.client.uid("FETCH", ",".join(uids), "(INTERNALDATE)"), "read")
        old = []
        for line in dates:
            text = line[0] if isinstance(line, tuple) else line
            uid, date = _UID.search(text or b""), _DATE.search(text or b"")
            if uid and date and internal_date(date.group(1).decode()) < before:
                old.append(uid.group(1).decode())
        if old:
            self.delete(",".join(old))
        return len(old)

    def _separator(self) -> str:
        """The server's hierarchy separator ("/" or "."), from LIST "" ""."""
        listed = self._ok(self.client.list('""', '""'), "list folders")
        for line in listed:
            match = _LIST.match(line if isinstance(line, bytes) else b"")
            if match and match.group("sep"):
                return match.group("sep").decode()
        return "/"

    def _ok(self, answer: tuple[str, Sequence[Any]], doing: str) -> list[Any]:
        """The answer's data (bytes, and (bytes, bytes) for a literal), or ImapError."""
        typ, data = answer
        if typ != "OK":
            raise ImapError(f"{self.url.masked}: the server would not {doing} ({_said(data)}).")
        return list(data)


@contextmanager
def open_mailbox(url: ImapURL) -> Iterator[ImapMailbox]:
    """Connect, log in and select ``url``'s folder; ImapError naming the URL if it cannot."""
    try:
        client = _connect(url)
    except (OSError, imaplib.IMAP4.error) as error:
        raise ImapError(f"Cannot reach {url.masked} ({_reason(error)}).") from None
    try:
        try:
            client.login(url.user, url.password)
        except imaplib.IMAP4.error as error:
            raise ImapError(
                f"Cannot log in to {url.masked}: the server refused the user name or "
                f"password ({_reason(error)})."
            ) from None
        typ, data = client.select(_quote(url.folder))
        if typ != "OK":
            raise ImapError(
                f"{url.masked}: the server has no folder {url.folder!r} ({_said(data)})."
            )
        yield ImapMailbox(url, client)
    except (OSError, imaplib.IMAP4.abort) as error:
        raise ImapError(
            f"Lost the connection to {url.masked} ({_reason(error)}); "
            "what was processed stays done, and the rest waits for the next run."
        ) from None
    except imaplib.IMAP4.error as error:
        raise ImapError(f"{url.masked}: the server answered {_reason(error)!r}.") from None
    finally:
        _logout(client)


def process_imap(
    sessions: sessionmaker[Session],
    box: ImapMailbox,
    uids: Sequence[str],
    *,
    secret_keys: Sequence[str],
    require_verp: bool,
    progress: Callable[[int], None] | None = None,
    rules: Deliverability = DEFAULT_RULES,
) -> Summary:
    """Process each message ``uids`` names in ``box``, then move it out of the way."""
    processed, aside = box.folder(PROCESSED), box.folder(UNRECOGNISED)
    summary = Summary(kept_aside=f"{box.url.server}/{aside}")
    for done, uid in enumerate(uids, 1):
        fetched = box.fetch(uid)
        if fetched is not None:
            _size, internal, raw = fetched
            if raw is None:
                outcome = Outcome(Kind.UNRECOGNISED, reason=f"larger than {MAX_BYTES // 2**20} MB")
            else:
                raw = without_reason(raw)
                outcome = process_raw(sessions, raw, secret_keys, require_verp, rules)
            if outcome.kind is not Kind.UNRECOGNISED or raw is None:
                box.move(uid, processed if outcome.kind is not Kind.UNRECOGNISED else aside)
            else:
                box.append(aside, with_reason(raw, outcome.reason), internal)
                box.delete(uid)
            if outcome.kind is Kind.UNRECOGNISED:
                logger.info("kept aside message %s of %s: %s", uid, box.url, outcome.reason)
            summary.add(outcome)
        if progress is not None:
            progress(done)
    return summary


def internal_date(text: str) -> datetime:
    """An IMAP INTERNALDATE ("06-Dec-2026 04:08:16 +0000") as an aware datetime."""
    return datetime.strptime(text.strip(), "%d-%b-%Y %H:%M:%S %z")


def _connect(url: ImapURL) -> imaplib.IMAP4:
    if url.secure:
        # imaplib's own default context checks no certificate: the system's CAs must.
        context = ssl.create_default_context()
        return imaplib.IMAP4_SSL(url.host, url.port, ssl_context=context, timeout=TIMEOUT)
    return imaplib.IMAP4(url.host, url.port, timeout=TIMEOUT)


def _logout(client: imaplib.IMAP4) -> None:
    """Close the session; a connection already lost is closed as well as it can be."""
    try:
        client.logout()
    except (OSError, imaplib.IMAP4.error):
        client.shutdown()


def _reason(error: BaseException) -> str:
    """What went wrong, in the words of the server or the system, without Python's."""
    if isinstance(error, socket.gaierror):
        return f"unknown host: {error.strerror}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    said = error.args[0] if error.args else error
    if isinstance(said, bytes):
        said = said.decode(errors="replace")
    return str(said) or type(error).__name__


def _said(data: Sequence[Any]) -> str:
    """The text of a server's answer."""
    return b" ".join(d for d in data if isinstance(d, bytes)).decode(errors="replace")


def _quote(name: str) -> str:
    """A folder name as an IMAP quoted string (imaplib sends arguments as they are)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
