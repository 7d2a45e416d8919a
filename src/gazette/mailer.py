"""Mail transports: a Maildir outbox (embedded default, tests) and SMTP relays.

The only module that knows SMTP. A sending batch opens one connection and reuses it for
every message; each send either returns or raises a failure classed as transient
(retry later) or permanent (do not retry), following Mailman's rules.
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Protocol, TypeVar

from gazette.config import MailURL
from gazette.mime import DotSafe

# What the caller of send_each tells its messages apart by (a ledger row, say).
K = TypeVar("K")


class DeliveryError(Exception):
    """A message the relay did not accept; ``permanent`` says whether to retry."""

    def __init__(self, detail: str, *, permanent: bool, code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent
        self.code = code


def _reply_text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


def is_permanent(code: int) -> bool:
    """5xx is permanent except 552 (mailbox full, often transient in practice)."""
    return 500 <= code < 600 and code != 552


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


class SMTPConnection:
    """One SMTP session, reconnected when the relay drops it or says 421."""

    def __init__(self, url: MailURL, max_per_connection: int) -> None:
        self._url = url
        self._max = max_per_connection
        self._client: smtplib.SMTP | None = None
        self._sent_on_client = 0
        # Whether the last message _start sent took its second (last) attempt.
        self._retried = False

    def _open(self) -> smtplib.SMTP:
        url = self._url
        client: smtplib.SMTP
        if url.scheme == "smtps":
            client = smtplib.SMTP_SSL(
                url.host, url.port, timeout=url.timeout, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(url.host, url.port, timeout=url.timeout)
            if url.starttls:
                client.starttls(context=ssl.create_default_context())
        if url.username:
            client.login(url.username, url.password)
        return client

    def close(self) -> None:
        """Say QUIT when the relay is still there; drop the socket either way."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        """Send one message; reconnect once on a dropped connection or a 421."""
        failure = self._start(sender, recipient, message, wait=True)
        if failure is not None:
            raise failure

    def send_each(
        self, messages: Iterable[tuple[K, str, str, bytes]]
    ) -> Iterator[tuple[K, DeliveryError | None]]:
        """Send a stream of messages, reading each final reply only after the next is built.

        The relay takes a while to answer a message's last line (it receives and queues
        it); building the next message in that time, instead of waiting and then
        building, lets one worker process send about a third more per second. The SMTP
        dialogue is unchanged: every command still waits for its reply before the next.
        """
        pending: tuple[K, str, str, bytes] | None = None
        for key, sender, recipient, message in messages:
            if pending is not None:
                yield pending[0], self._finish(*pending[1:])
                pending = None
            failure = self._start(sender, recipient, message, wait=False)
            if failure is None:
                pending = (key, sender, recipient, message)
            else:
                yield key, failure
        if pending is not None:
            yield pending[0], self._finish(*pending[1:])

    def _start(
        self, sender: str, recipient: str, message: bytes, *, wait: bool, retry: bool = True
    ) -> DeliveryError | None:
        """Send one message up to its last line (and, with ``wait``, read the final reply).

        Reconnects and starts over once (when ``retry``) on a dropped connection or a 421.
        """
        if self._client is not None and self._sent_on_client >= self._max:
            self.close()
        for attempt in (1, 2) if retry else (2,):
            try:
                if self._client is None:
                    self._client = self._open()
                    self._sent_on_client = 0
                if wait:
                    transmit(self._client, sender, recipient, message)
                else:
                    transmit_start(self._client, sender, recipient, message)
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = exc.recipients[recipient]
                return DeliveryError(
                    f"{code} {_reply_text(reply)}", permanent=is_permanent(code), code=code
                )
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code == 421 and attempt == 1:
                    self.close()
                    continue
                return self._refused(exc)
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self.close()
                if attempt == 1:
                    continue
                return DeliveryError(f"connection failed: {exc}", permanent=False)
            self._sent_on_client += 1
            self._retried = attempt == 2
            return None
        raise AssertionError("unreachable: the last attempt returns")

    def _finish(self, sender: str, recipient: str, message: bytes) -> DeliveryError | None:
        """Read the final reply of the message _start(wait=False) left open.

        A dropped connection or a 421 here ends the attempt _start made, as in send():
        after a first attempt the message is sent once more, whole, on a new
        connection; after the second it is left for a later retry.
        """
        try:
            if self._client is None:
                raise smtplib.SMTPServerDisconnected("the connection was closed")  # noqa: TRY301
            transmit_finish(self._client)
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == 421 and not self._retried:
                self.close()
                return self._start(sender, recipient, message, wait=True, retry=False)
            return self._refused(exc)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.close()
            if self._retried:
                return DeliveryError(f"connection failed: {exc}", permanent=False)
            return self._start(sender, recipient, message, wait=True, retry=False)
        return None

    def _refused(self, exc: smtplib.SMTPResponseException) -> DeliveryError:
        self._reset_after(exc.smtp_code)
        return DeliveryError(
            f"{exc.smtp_code} {_reply_text(exc.smtp_error)}",
            permanent=is_permanent(exc.smtp_code),
            code=exc.smtp_code,
        )

    def _reset_after(self, code: int) -> None:
        # After a rejected transaction the session is still usable once RSET clears it.
        if self._client is None or code == 421:
            self.close()
            return
        try:
            self._client.rset()
        except (smtplib.SMTPException, OSError):
            self.close()


def dot_stuffed(message: bytes) -> bytes:
    """``message`` with a "." added before each line starting with "." (RFC 5321 4.5.2).

    The same bytes as smtplib's ``re.sub(br'(?m)^\\.', b'..', msg)``, but a message built
    by gazette.mime has no such line, and two C searches say so without a copy.
    """
    if message.startswith(b"."):
        message = b"." + message
    if b"\n." in message:
        message = message.replace(b"\n.", b"\n..")
    return message


def transmit(client: smtplib.SMTP, sender: str, recipient: str, message: bytes) -> None:
    """Send as smtplib's ``sendmail`` does for one recipient, step for step, but cheaper.

    sendmail dot-stuffs with a regular expression over the whole message, a quarter of
    a worker's time; dot_stuffed checks first, and a DotSafe message needs neither.
    Same commands, the same exceptions on the same replies, the same RSET or close
    after a refusal: failures classify as before.
    """
    transmit_start(client, sender, recipient, message)
    transmit_finish(client)


def transmit_start(client: smtplib.SMTP, sender: str, recipient: str, message: bytes) -> None:
    """``transmit`` up to the message's last line, leaving its final reply unread."""
    client.ehlo_or_helo_if_needed()
    options = [f"size={len(message)}"] if client.does_esmtp and client.has_extn("size") else []
    if not (sender.isascii() and recipient.isascii()):
        # An internationalised address (GAZETTE_SMTPUTF8) travels only as RFC 6531 allows.
        if not client.has_extn("smtputf8"):
            raise smtplib.SMTPRecipientsRefused(
                {recipient: (553, b"the relay does not offer SMTPUTF8 for this address")}
            )
        options.append("SMTPUTF8")
        if client.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
    code, reply = client.mail(sender, options)
    if code != 250:
        _end_transaction(client, code)
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    code, reply = client.rcpt(recipient)
    if code not in (250, 251):
        _end_transaction(client, code)
        raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
    # SMTP.data(), with its regular expression replaced.
    client.putcmd("data")
    code, reply = client.getreply()
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    body = message if isinstance(message, DotSafe) else dot_stuffed(message)
    # One buffer for body and final dot: a separate small write could wait on Nagle.
    client.send(body + (b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n"))


def transmit_finish(client: smtplib.SMTP) -> None:
    """Read the reply to a message's last line, as the end of ``transmit``."""
    code, reply = client.getreply()
    if code != 250:
        _end_transaction(client, code)
        raise smtplib.SMTPDataError(code, reply)


def _end_transaction(client: smtplib.SMTP, code: int) -> None:
    # As sendmail does: a 421 means the relay is closing, anything else is cleared by RSET.
    if code == 421:
        client.close()
        return
    with suppress(smtplib.SMTPServerDisconnected):
        client.rset()


class SMTPTransport:
    """An SMTP relay (smtp:// with optional STARTTLS, or smtps://)."""

    def __init__(self, url: MailURL, max_per_connection: int = 1000) -> None:
        self.url = url
        self.max_per_connection = max_per_connection

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """Yield a connection that opens lazily and closes when the block ends."""
        connection = SMTPConnection(self.url, self.max_per_connection)
        try:
            yield connection
        finally:
            connection.close()


def make_transport(url: MailURL, max_per_connection: int = 1000) -> Transport:
    """Return the transport GAZETTE_SMTP_URL selects."""
    if url.scheme == "maildir":
        assert url.path is not None
        return MaildirTransport(url.path)
    return SMTPTransport(url, max_per_connection)
