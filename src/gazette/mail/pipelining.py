"""A message's commands sent together: PIPELINING (RFC 2920) and CHUNKING (RFC 3030).

With PIPELINING a message costs two round trips: MAIL FROM, RCPT TO and DATA in one
write, then the 354 must come back before the body may follow. BDAT names the body's length up
front, so MAIL FROM, RCPT TO, BDAT and the body go in one write and the message costs
one round trip; the body travels as it is (no dot-stuffing, no final dot). The relay
reads the chunk whatever it answered to the envelope, since its length was given, so a
refused envelope leaves the session in step (RFC 3030 section 2). Only used when the
relay offers both CHUNKING and PIPELINING: without PIPELINING each command would wait
for its reply anyway, and DATA costs no more.
"""

from __future__ import annotations

import re
import smtplib
from contextlib import suppress


def offers_chunking(client: smtplib.SMTP) -> bool:
    """True when the relay's EHLO offered both CHUNKING and PIPELINING."""
    return bool(client.does_esmtp and client.has_extn("chunking") and client.has_extn("pipelining"))


def pipelined_envelope(
    client: smtplib.SMTP, sender: str, recipient: str, options: list[str]
) -> None:
    """MAIL FROM, RCPT TO and DATA in one write (RFC 2920), then their three replies.

    Each reply is judged as _envelope judges it, in order, so a refused MAIL FROM is
    the relay's and a refused RCPT TO the reader's exactly as before. A 421 ends the
    session at once (the relay closes it; later replies never come). A relay that
    answers 354 to DATA after refusing the envelope gets an empty message's final dot,
    as RFC 2920 section 3.1 asks, before the refusal is raised.
    """
    client.send(_envelope(client, sender, recipient, options) + "DATA\r\n")
    mail, rcpt = _envelope_replies(client, sender, recipient)
    data = client.getreply()
    if data[0] == 354 and (mail[0] != 250 or rcpt[0] not in (250, 251)):
        client.send(b".\r\n")
        client.getreply()
    _judge_envelope(client, sender, recipient, mail, rcpt, data[0])
    if data[0] != 354:
        raise smtplib.SMTPDataError(data[0], data[1])


def chunked_start(
    client: smtplib.SMTP, sender: str, recipient: str, message: bytes, options: list[str]
) -> None:
    """Write MAIL FROM, RCPT TO, BDAT <size> LAST and the message at once; read nothing.

    ``options`` are MAIL FROM's parameters (SIZE, SMTPUTF8, BODY=8BITMIME), as for DATA.
    """
    commands = _envelope(client, sender, recipient, options) + f"BDAT {len(message)} LAST\r\n"
    # One buffer: a separate small write of the commands could wait on Nagle.
    client.send(commands.encode(client.command_encoding) + message)


def chunked_finish(client: smtplib.SMTP, sender: str, recipient: str) -> None:
    """Read the three replies chunked_start's write gets, judged as the DATA path judges them.

    A refused MAIL FROM raises SMTPSenderRefused (the relay's answer to the operator's
    sender), a refused RCPT TO SMTPRecipientsRefused (the reader's), a refused chunk
    SMTPDataError, exactly as smtp.transmit would. A 421 ends the session at once: the
    relay closes it and later replies never come.
    """
    mail, rcpt = _envelope_replies(client, sender, recipient)
    bdat = client.getreply()
    _judge_envelope(client, sender, recipient, mail, rcpt, bdat[0])
    if bdat[0] != 250:
        end_transaction(client, bdat[0])
        raise smtplib.SMTPDataError(bdat[0], bdat[1])


Reply = tuple[int, bytes]


def _envelope(client: smtplib.SMTP, sender: str, recipient: str, options: list[str]) -> str:
    """MAIL FROM and RCPT TO as one string, in the encoding the options ask for."""
    if "SMTPUTF8" in options:
        client.command_encoding = "utf-8"  # as SMTP.mail does for an SMTPUTF8 envelope
    extra = "".join(f" {option}" for option in options)
    return f"MAIL FROM:{_quoted(sender)}{extra}\r\nRCPT TO:{_quoted(recipient)}\r\n"


# An address with none of the characters RFC 5322's parser gives meaning to: what
# smtplib.quoteaddr would return after parsing it, known without parsing it.
_PLAIN_ADDRESS = re.compile(r'[^\s<>()",;:\\\[\]@]+@[^\s<>()",;:\\\[\]@]+')


def _quoted(address: str) -> str:
    """``<address>`` as smtplib.quoteaddr gives it, without its parse for a plain address."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _envelope_replies(client: smtplib.SMTP, sender: str, recipient: str) -> tuple[Reply, Reply]:
    """Read MAIL FROM's and RCPT TO's replies; a 421 closes the session and raises at once."""
    mail = client.getreply()
    if mail[0] == 421:
        client.close()
        raise smtplib.SMTPSenderRefused(mail[0], mail[1], sender)
    rcpt = client.getreply()
    if rcpt[0] == 421:
        client.close()
        if mail[0] != 250:
            raise smtplib.SMTPSenderRefused(mail[0], mail[1], sender)
        raise smtplib.SMTPRecipientsRefused({recipient: rcpt})
    return mail, rcpt


def _judge_envelope(
    client: smtplib.SMTP, sender: str, recipient: str, mail: Reply, rcpt: Reply, last: int
) -> None:
    """Raise for a refused MAIL FROM or RCPT TO after ending the transaction.

    ``last`` is the third command's code (DATA or BDAT): a 421 there closes the session.
    """
    if mail[0] != 250:
        end_transaction(client, last if last == 421 else mail[0])
        raise smtplib.SMTPSenderRefused(mail[0], mail[1], sender)
    if rcpt[0] not in (250, 251):
        end_transaction(client, last if last == 421 else rcpt[0])
        raise smtplib.SMTPRecipientsRefused({recipient: rcpt})


def end_transaction(client: smtplib.SMTP, code: int) -> None:
    """End a refused transaction on ``client``: close after a 421, RSET otherwise."""
    # As sendmail does: a 421 means the relay is closing, anything else is cleared by RSET.
    if code == 421:
        client.close()
        return
    with suppress(smtplib.SMTPServerDisconnected):
        client.rset()
