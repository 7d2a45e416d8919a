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
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Protocol

from gazette.config import MailURL
from gazette.mime import DotSafe


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
    """An open transport: send one message to one recipient."""

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        """Hand ``message`` over, or raise DeliveryError."""


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
        if self._client is not None and self._sent_on_client >= self._max:
            self.close()
        for attempt in (1, 2):
            try:
                if self._client is None:
                    self._client = self._open()
                    self._sent_on_client = 0
                transmit(self._client, sender, recipient, message)
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = exc.recipients[recipient]
                raise DeliveryError(
                    f"{code} {_reply_text(reply)}",
                    permanent=is_permanent(code),
                    code=code,
                ) from None
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code == 421 and attempt == 1:
                    self.close()
                    continue
                self._reset_after(exc.smtp_code)
                raise DeliveryError(
                    f"{exc.smtp_code} {_reply_text(exc.smtp_error)}",
                    permanent=is_permanent(exc.smtp_code),
                    code=exc.smtp_code,
                ) from None
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self.close()
                if attempt == 1:
                    continue
                raise DeliveryError(f"connection failed: {exc}", permanent=False) from None
            self._sent_on_client += 1
            return

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
