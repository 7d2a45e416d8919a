"""One SMTP session: connect, TLS, login, then each message's dialogue, pipelined if offered.

SMTPConnection keeps a session to the relay, reconnecting once when the relay drops it
or says 421, and turns every refusal into a classified DeliveryError. ``transmit`` and
its halves speak smtplib's ``sendmail`` dialogue for one recipient, cheaper: no regular
expression over the message, and MAIL FROM, RCPT TO and DATA in one write when the
relay offers PIPELINING (RFC 2920). A measured fast path: see docs/benchmarks.md.
"""

from __future__ import annotations

import enum
import smtplib
import socket
import ssl
from collections.abc import Iterable, Iterator
from contextlib import suppress

from gazette.mail.mime import DotSafe
from gazette.mail.outcomes import DeliveryError, K, classify, relay_failure, reply_text
from gazette.mail.pipelining import (
    chunked_finish,
    chunked_start,
    end_transaction,
    offers_chunking,
    pipelined_envelope,
)
from gazette.url_settings import MailURL


class _Again(enum.Enum):
    """An attempt that failed in a way a second attempt, on a new connection, may pass."""

    RETRY = "retry"


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

    def __init__(self, url: MailURL, max_per_connection: int, *, pipelining: bool = True) -> None:
        self._url = url
        self._max = max_per_connection
        self._pipelining = pipelining
        # Whether a session was ever opened: a pool tells a relay's connection limit
        # (a further session refused) from a relay that takes none.
        self.opened = False
        self._client: smtplib.SMTP | None = None
        self._sent_on_client = 0
        # Whether the last message _start sent took its second (last) attempt.
        self._retried = False
        # Whether the message in flight went as a BDAT chunk, its envelope's replies unread.
        self._chunked = False

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
        if client.sock is not None:
            # Every command group and message goes out as one buffer: Nagle's algorithm
            # could only hold a message's last segment back for a round trip.
            with suppress(OSError):
                client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
            outcome = self._attempt(sender, recipient, message, wait=wait, first=attempt == 1)
            if outcome is _Again.RETRY:
                continue
            if outcome is None:
                self._sent_on_client += 1
                self._retried = attempt == 2
            return outcome
        raise AssertionError("unreachable: the last attempt returns")

    def _attempt(
        self, sender: str, recipient: str, message: bytes, *, wait: bool, first: bool
    ) -> DeliveryError | _Again | None:
        """One try at a message on the open session (opened first if need be)."""
        client = self._client
        if client is None:
            opened = self._connect(first=first)
            if not isinstance(opened, smtplib.SMTP):
                return opened
            client = opened
        try:
            self._chunked = transmit_start(
                client, sender, recipient, message, pipelining=self._pipelining
            )
            if wait:
                transmit_finish(client, self._chunked, sender, recipient)
        except OSError as exc:  # smtplib's exceptions are all OSErrors
            return self._judge(exc, recipient, first=first)
        return None

    def _connect(self, *, first: bool) -> smtplib.SMTP | DeliveryError | _Again:
        """Open a new session; on failure, try again (a first attempt) or say why not."""
        try:
            self._client = self._open()
        except _OpenError as failed:
            if failed.retry and first:
                return _Again.RETRY
            return relay_failure(failed.step, failed.cause)
        self._sent_on_client = 0
        self.opened = True
        return self._client

    def _judge(self, exc: OSError, recipient: str, *, first: bool) -> DeliveryError | _Again:
        """What a failed attempt comes to: a classified refusal, or another try when ``first``."""
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, reply = exc.recipients[recipient]
            return classify(code, reply_text(reply))
        if isinstance(exc, smtplib.SMTPSenderRefused | smtplib.SMTPHeloError):
            # MAIL FROM or EHLO refused: the relay's answer to the operator's
            # sender or host, the same for every reader; the batch stops here.
            self.close()
            if exc.smtp_code == 421 and first:
                return _Again.RETRY
            sender_refused = isinstance(exc, smtplib.SMTPSenderRefused)
            return relay_failure("sender refused" if sender_refused else "greeting refused", exc)
        if isinstance(exc, smtplib.SMTPResponseException):
            if exc.smtp_code == 421 and first:
                self.close()
                return _Again.RETRY
            return self._refused(exc)
        self.close()  # the connection dropped (SMTPServerDisconnected) or failed
        if first:
            return _Again.RETRY
        return DeliveryError(f"connection failed: {exc}", permanent=False)

    def _finish(self, sender: str, recipient: str, message: bytes) -> DeliveryError | None:
        """Read the final reply of the message _start(wait=False) left open.

        A dropped connection or a 421 here ends the attempt _start made, as in send():
        after a first attempt the message is sent once more, whole, on a new
        connection; after the second it is left for a later retry.
        """
        try:
            if self._client is None:
                raise smtplib.SMTPServerDisconnected("the connection was closed")  # noqa: TRY301
            transmit_finish(self._client, self._chunked, sender, recipient)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused) as exc:
            # Only a chunked message's envelope is answered this late (chunking.py).
            judged = self._judge(exc, recipient, first=not self._retried)
            if judged is _Again.RETRY:
                return self._start(sender, recipient, message, wait=True, retry=False)
            return judged
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
        return classify(exc.smtp_code, reply_text(exc.smtp_error))

    def _reset_after(self, code: int) -> None:
        """Clear a refused transaction with RSET, or drop the session after a 421."""
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
    by gazette.mail.mime has no such line, and two C searches say so without a copy.
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
    transmit_finish(client, transmit_start(client, sender, recipient, message), sender, recipient)


def transmit_start(
    client: smtplib.SMTP, sender: str, recipient: str, message: bytes, *, pipelining: bool = False
) -> bool:
    """``transmit`` up to the message's last line, leaving its final reply unread.

    With ``pipelining``, when the relay offers PIPELINING (RFC 2920), MAIL FROM, RCPT TO
    and DATA go in one write and their replies are read after: two round trips per
    message instead of four, each reply still raising what sendmail would raise. When
    it also offers CHUNKING (RFC 3030), the envelope and the message go in one write as
    one BDAT chunk and every reply is left unread: True then, and transmit_finish
    must be told so.
    """
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
    if pipelining and offers_chunking(client):
        chunked_start(client, sender, recipient, message, options)
        return True
    if pipelining and client.does_esmtp and client.has_extn("pipelining"):
        pipelined_envelope(client, sender, recipient, options)
    else:
        _envelope(client, sender, recipient, options)
    body = message if isinstance(message, DotSafe) else dot_stuffed(message)
    # One buffer for body and final dot: a separate small write could wait on Nagle.
    client.send(body + (b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n"))
    return False


def _envelope(client: smtplib.SMTP, sender: str, recipient: str, options: list[str]) -> None:
    """MAIL FROM, RCPT TO and DATA, each waiting for its reply, as sendmail sends them."""
    code, reply = client.mail(sender, options)
    if code != 250:
        end_transaction(client, code)
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    code, reply = client.rcpt(recipient)
    if code not in (250, 251):
        end_transaction(client, code)
        raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
    # SMTP.data(), with its regular expression replaced.
    client.putcmd("data")
    code, reply = client.getreply()
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)


def transmit_finish(
    client: smtplib.SMTP, chunked: bool = False, sender: str = "", recipient: str = ""
) -> None:
    """Read the reply to a message's last line, as the end of ``transmit``.

    ``chunked`` (transmit_start's answer): read the envelope's replies too, which judge
    ``sender`` and ``recipient`` as the DATA path does.
    """
    if chunked:
        chunked_finish(client, sender, recipient)
        return
    code, reply = client.getreply()
    if code != 250:
        end_transaction(client, code)
        raise smtplib.SMTPDataError(code, reply)
