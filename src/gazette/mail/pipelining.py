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
    if "SMTPUTF8" in options:
        client.command_encoding = "utf-8"  # as SMTP.mail does for an SMTPUTF8 envelope
    extra = "".join(f" {option}" for option in options)
    client.send(
        f"MAIL FROM:{smtplib.quoteaddr(sender)}{extra}\r\n"
        f"RCPT TO:{smtplib.quoteaddr(recipient)}\r\nDATA\r\n"
    )
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
    data = client.getreply()
    refused = mail[0] != 250 or rcpt[0] not in (250, 251)
    if data[0] == 354 and refused:
        client.send(b".\r\n")
        client.getreply()
    if mail[0] != 250:
        end_transaction(client, data[0] if data[0] == 421 else mail[0])
        raise smtplib.SMTPSenderRefused(mail[0], mail[1], sender)
    if rcpt[0] not in (250, 251):
        end_transaction(client, data[0] if data[0] == 421 else rcpt[0])
        raise smtplib.SMTPRecipientsRefused({recipient: rcpt})
    if data[0] != 354:
        raise smtplib.SMTPDataError(data[0], data[1])


def chunked_start(
    client: smtplib.SMTP, sender: str, recipient: str, message: bytes, options: list[str]
) -> None:
    """Write MAIL FROM, RCPT TO, BDAT <size> LAST and the message at once; read nothing.

    ``options`` are MAIL FROM's parameters (SIZE, SMTPUTF8, BODY=8BITMIME), as for DATA.
    """
    if "SMTPUTF8" in options:
        client.command_encoding = "utf-8"  # as SMTP.mail does for an SMTPUTF8 envelope
    extra = "".join(f" {option}" for option in options)
    commands = (
        f"MAIL FROM:{smtplib.quoteaddr(sender)}{extra}\r\n"
        f"RCPT TO:{smtplib.quoteaddr(recipient)}\r\n"
        f"BDAT {len(message)} LAST\r\n"
    ).encode(client.command_encoding)
    # One buffer: a separate small write of the commands could wait on Nagle.
    client.send(commands + message)


def chunked_finish(client: smtplib.SMTP, sender: str, recipient: str) -> None:
    """Read the three replies chunked_start's write gets, judged as the DATA path judges them.

    A refused MAIL FROM raises SMTPSenderRefused (the relay's answer to the operator's
    sender), a refused RCPT TO SMTPRecipientsRefused (the reader's), a refused chunk
    SMTPDataError, exactly as smtp.transmit would. A 421 ends the session at once: the
    relay closes it and later replies never come.
    """
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
    bdat = client.getreply()
    if mail[0] != 250:
        end_transaction(client, bdat[0] if bdat[0] == 421 else mail[0])
        raise smtplib.SMTPSenderRefused(mail[0], mail[1], sender)
    if rcpt[0] not in (250, 251):
        end_transaction(client, bdat[0] if bdat[0] == 421 else rcpt[0])
        raise smtplib.SMTPRecipientsRefused({recipient: rcpt})
    if bdat[0] != 250:
        end_transaction(client, bdat[0])
        raise smtplib.SMTPDataError(bdat[0], bdat[1])


def end_transaction(client: smtplib.SMTP, code: int) -> None:
    """End a refused transaction on ``client``: close after a 421, RSET otherwise."""
    # As sendmail does: a 421 means the relay is closing, anything else is cleared by RSET.
    if code == 421:
        client.close()
        return
    with suppress(smtplib.SMTPServerDisconnected):
        client.rset()
