"""Mail transports: what sending talks to, and the one chosen by GAZETTE_SMTP_URL.

A sending batch opens one connection (or pool) and reuses it for every message; each
send either returns or raises a DeliveryError (gazette.mail.outcomes). Here are the
protocols, the Maildir outbox (the embedded default, and tests) and the factory; the
SMTP session lives in gazette.mail.smtp and the pool of sessions in gazette.mail.pool.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from gazette.mail.outcomes import DeliveryError, K
from gazette.mail.pool import SMTPPool
from gazette.mail.smtp import SMTPConnection
from gazette.url_settings import MailURL

if TYPE_CHECKING:
    from gazette.ratelimit import SessionGate


class Connection(Protocol):
    """An open transport: send one message to one recipient, or a stream of them."""

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        """Hand ``message`` over, or raise DeliveryError."""

    def send_each(
        self, messages: Iterable[tuple[K, str, str, bytes]]
    ) -> Iterator[tuple[K, DeliveryError | None]]:
        """Send each (key, sender, recipient, message); yield (key, failure or None) in order.

        ``messages`` is read lazily, one ahead: the next message may be built while the
        relay is still answering for the one before.
        """
        ...


def one_by_one(
    connection: Connection, messages: Iterable[tuple[K, str, str, bytes]]
) -> Iterator[tuple[K, DeliveryError | None]]:
    """send_each for a transport with nothing to overlap: each send, then its outcome."""
    for key, sender, recipient, message in messages:
        try:
            connection.send(sender, recipient, message)
        except DeliveryError as failure:
            yield key, failure
        else:
            yield key, None


class Transport(Protocol):
    """Opens connections; chosen by GAZETTE_SMTP_URL."""

    def connect(self) -> AbstractContextManager[Connection]:
        """Return a context manager yielding one reusable connection."""


class MaildirConnection:
    """Writes each message into a Maildir's ``new/`` atomically (tmp, then rename)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._host = socket.gethostname().replace("/", "_").replace(":", "_")
        self._count = 0

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        """Write ``message`` as one file; readers never see a partial file."""
        self._count += 1
        name = f"{time.time_ns()}.P{os.getpid()}Q{self._count}.{self._host}"
        tmp = self._root / "tmp" / name
        with open(tmp, "wb") as handle:
            handle.write(message)
        os.rename(tmp, self._root / "new" / name)

    def send_each(
        self, messages: Iterable[tuple[K, str, str, bytes]]
    ) -> Iterator[tuple[K, DeliveryError | None]]:
        """Write each message in turn (see Connection.send_each)."""
        return one_by_one(self, messages)


class MaildirTransport:
    """The embedded default outbox: a Maildir folder an operator can open in any client."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """Create the Maildir folders when missing and yield a writer."""
        for sub in ("tmp", "new", "cur"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        yield MaildirConnection(self.root)


class SMTPTransport:
    """An SMTP relay (smtp:// with optional STARTTLS, or smtps://).

    With ``connections`` above one, a batch sends over a pool of that many sessions
    (SMTPPool); with one, over a single session that builds each message while the
    relay answers for the one before (SMTPConnection.send_each).
    """

    def __init__(
        self,
        url: MailURL,
        max_per_connection: int = 1000,
        connections: int = 1,
        *,
        pipelining: bool = True,
        gate: SessionGate | None = None,
    ) -> None:
        self.url = url
        self.max_per_connection = max_per_connection
        self.connections = connections
        self.pipelining = pipelining
        self.gate = gate

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """Yield a connection (or pool) that opens lazily and closes when the block ends."""
        connection: SMTPConnection | SMTPPool
        if self.connections > 1 or self.gate is not None:
            connection = SMTPPool(
                self.url, self.max_per_connection, self.connections,
                pipelining=self.pipelining, gate=self.gate,
            )  # fmt: skip
        else:
            connection = SMTPConnection(
                self.url, self.max_per_connection, pipelining=self.pipelining
            )
        try:
            yield connection
        finally:
            connection.close()


def make_transport(
    url: MailURL,
    max_per_connection: int = 1000,
    connections: int = 1,
    *,
    pipelining: bool = True,
    gate: SessionGate | None = None,
) -> Transport:
    """Return the transport GAZETTE_SMTP_URL selects, with GAZETTE_SMTP_CONNECTIONS sessions."""
    if url.scheme == "maildir":
        assert url.path is not None
        return MaildirTransport(url.path)
    return SMTPTransport(url, max_per_connection, connections, pipelining=pipelining, gate=gate)
