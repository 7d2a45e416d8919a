"""Mail transports: a Maildir outbox (embedded default, tests) and SMTP relays.

The only module that knows SMTP. A sending batch opens one connection and reuses it for
every message; each send either returns or raises a failure classed as transient
(retry later) or permanent (do not retry), and as the reader's or the relay's doing
(see ``classify``: the one place that decides whether a reply can count as a bounce).
"""

from __future__ import annotations

import enum
import os
import re
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


class Fault(enum.Enum):
    """Who a refusal is about: only the reader's own can count as a bounce."""

    # A reply to the reader's RCPT TO or to the message's DATA that names the mailbox.
    READER = "reader"
    # The relay or the operator: login, MAIL FROM, TLS, the connection, or a policy reply.
    RELAY = "relay"


# How a relay-level failure's detail starts, by the step that failed; the ledger keeps
# the detail, so a pending row whose last_error starts so waits on the relay, not on
# the reader (see gazette.sending.relay_refusal).
RELAY_STEPS = (
    "connection failed", "TLS failed", "greeting refused", "login refused", "sender refused",
)  # fmt: skip


class DeliveryError(Exception):
    """A message the relay did not accept: whether to retry, and whose fault it was.

    ``session`` marks a refusal of the whole SMTP session (login, MAIL FROM, TLS, an
    unreachable relay): no later message on this connection can fare better.
    """

    def __init__(
        self,
        detail: str,
        *,
        permanent: bool,
        code: int | None = None,
        fault: Fault = Fault.RELAY,
        session: bool = False,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent
        self.code = code
        self.fault = fault
        self.session = session

    @property
    def hard_bounce(self) -> bool:
        """True when the reader's mailbox is dead: a permanent refusal about the reader."""
        return self.fault is Fault.READER and self.permanent


def _reply_text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


def is_permanent(code: int) -> bool:
    """5xx is permanent except 552 (mailbox full, often transient in practice)."""
    return 500 <= code < 600 and code != 552


_ENHANCED = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")


def enhanced_code(reply: str) -> tuple[int, int, int] | None:
    """The RFC 3463 enhanced status code a reply text starts with, if it has one."""
    match = _ENHANCED.match(reply)
    if match is None:
        return None
    klass, subject, detail = match.groups()
    return int(klass), int(subject), int(detail)


def classify(code: int, reply: str) -> DeliveryError:
    """The failure a reply to a reader's RCPT TO or to the message's DATA stands for.

    The enhanced code decides whose it is (RFC 3463): X.1 (addressing) and X.2
    (mailbox) are the reader's; X.3 (mail system), X.4 (routing), X.5 (protocol),
    X.6 (content) and X.7 (policy, authentication) are not the reader's doing and
    never count as a bounce. A reply without one counts as the reader's, as relays
    have always said "550 no such user". A 421 is the relay closing the session; other
    4xx replies stay the reader's (a deferral that outlives the retry period is a soft
    bounce, as before).
    Only 5xx other than 552 is permanent; a permanent policy refusal is not retried
    (the same message would be refused again) but leaves the reader subscribed.
    """
    detail = f"{code} {reply}".strip()
    enhanced = enhanced_code(reply)
    fault = Fault.READER
    if code == 421 or (code >= 500 and enhanced is not None and enhanced[1] not in (1, 2)):
        fault = Fault.RELAY
    return DeliveryError(detail, permanent=is_permanent(code), code=code, fault=fault)


def relay_failure(step: str, exc: BaseException) -> DeliveryError:
    """A failure of the session itself (``step`` is one of RELAY_STEPS): wait and retry.

    Never the reader's: the deliveries stay pending with a backoff, and the batch stops
    using the connection, since every later message would meet the same refusal.
    """
    if isinstance(exc, smtplib.SMTPResponseException):
        words = f"{exc.smtp_code} {_reply_text(exc.smtp_error)}".strip()
        code: int | None = exc.smtp_code
    else:
        words, code = str(exc) or type(exc).__name__, None
    return DeliveryError(
        f"{step}: {words}", permanent=False, code=code, fault=Fault.RELAY, session=True
    )


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


class _OpenError(Exception):
    """Opening a session failed at ``step``; ``retry`` when a second try may succeed."""

    def __init__(self, step: str, cause: BaseException, *, retry: bool | None = None) -> None:
        super().__init__(step)
        self.step = step
        self.cause = cause
        if retry is None:
            # A dropped or refused connection, or a 421, may pass; a 535 will not.
            code = getattr(cause, "smtp_code", None)
            retry = code == 421 or not isinstance(cause, smtplib.SMTPResponseException)
            retry = retry and not isinstance(cause, smtplib.SMTPNotSupportedError)
        self.retry = retry


def _drop(client: smtplib.SMTP | None) -> None:
    """Close a half-opened session without a word: the relay already said no."""
    if client is not None:
        client.close()


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
        """Connect, start TLS and log in; raise _OpenError naming the step that failed."""
        url = self._url
        client: smtplib.SMTP | None = None
        step = "connection failed"
        try:
            if url.scheme == "smtps":
                client = smtplib.SMTP_SSL(
                    url.host, url.port, timeout=url.timeout, context=ssl.create_default_context()
                )
            else:
                client = smtplib.SMTP(url.host, url.port, timeout=url.timeout)
                if url.starttls:
                    step = "TLS failed"
                    client.starttls(context=ssl.create_default_context())
            if url.username:
                step = "login refused"
                client.login(url.username, url.password)
        except smtplib.SMTPConnectError as exc:
            raise _OpenError("greeting refused", exc) from exc
        except ssl.SSLError as exc:
            # A certificate or handshake failure: the same on every try.
            _drop(client)
            raise _OpenError("TLS failed", exc, retry=False) from exc
        except smtplib.SMTPServerDisconnected as exc:
            _drop(client)
            raise _OpenError("connection failed", exc) from exc
        except smtplib.SMTPException as exc:
            # A 535 to AUTH, a relay that offers no STARTTLS or AUTH, a 454 to STARTTLS.
            # (Caught before OSError, of which SMTPException is a subclass.)
            _drop(client)
            raise _OpenError(step, exc) from exc
        except OSError as exc:
            _drop(client)
            raise _OpenError("connection failed", exc) from exc
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
            if self._client is None:
                try:
                    self._client = self._open()
                except _OpenError as failed:
                    if failed.retry and attempt == 1:
                        continue
                    return relay_failure(failed.step, failed.cause)
                self._sent_on_client = 0
            try:
                if wait:
                    transmit(self._client, sender, recipient, message)
                else:
                    transmit_start(self._client, sender, recipient, message)
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = exc.recipients[recipient]
                return classify(code, _reply_text(reply))
            except (smtplib.SMTPSenderRefused, smtplib.SMTPHeloError) as exc:
                # MAIL FROM or EHLO refused: the relay's answer to the operator's
                # sender or host, the same for every reader; the batch stops here.
                self.close()
                if exc.smtp_code == 421 and attempt == 1:
                    continue
                sender_refused = isinstance(exc, smtplib.SMTPSenderRefused)
                return relay_failure(
                    "sender refused" if sender_refused else "greeting refused", exc
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
        """A reply about this message (to RCPT TO, DATA or its end), classified."""
        self._reset_after(exc.smtp_code)
        return classify(exc.smtp_code, _reply_text(exc.smtp_error))

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
                {recipient: (553, b"5.6.7 the relay does not offer SMTPUTF8 for this address")}
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
