"""What a relay's answer means: the DeliveryError a send raises, and whose fault it was.

The one place that decides whether a reply can count as a bounce (``classify``): a
failure is transient (retry later) or permanent (do not retry), and the reader's or
the relay's doing. The ledger keeps a failure's detail, and ``relay_fault`` reads it back.
"""

from __future__ import annotations

import enum
import re
import smtplib
from typing import TypeVar

from gazette.mail.status_policy import Effect, Source, code_effect

# What the caller of send_each tells its messages apart by (a ledger row, say): each
# outcome comes back paired with it.
K = TypeVar("K")


class Fault(enum.Enum):
    """Who a refusal is about: only the reader's own can count as a bounce."""

    # A reply to the reader's RCPT TO or to the message's DATA that names the mailbox.
    READER = "reader"
    # The relay or the operator: login, MAIL FROM, TLS, the connection, or a policy reply.
    RELAY = "relay"


# How a relay-level failure's detail starts, by the step that failed; the ledger keeps
# the detail, so a pending row whose last_error starts so waits on the relay, not on
# the reader (see gazette.digests.ledger.relay_refusal).
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
        effect: Effect = Effect.NOT_THE_READER,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent
        self.code = code
        self.fault = fault
        self.session = session
        # What the status code says of the reader (gazette.mail.status_policy): whether
        # the refusal, once final, counts as a hard or soft bounce or not at all.
        self.effect = effect

    @property
    def hard_bounce(self) -> bool:
        """True when the reader's mailbox is dead: a permanent refusal about the reader."""
        return self.fault is Fault.READER and self.permanent and self.effect is Effect.HARD


def reply_text(reply: bytes | str) -> str:
    """A reply as smtplib hands it (bytes, or already text), as text."""
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

    The enhanced code decides what it means for the reader, by the one policy
    (gazette.mail.status_policy, ``Source.SMTP``): X.1 (addressing) and X.2 (mailbox)
    are the reader's, X.3 to X.7 and a bare 5.0.0 the relay's or the operator's, and a
    reply without one counts as the reader's, as relays have always said "550 no such
    user". A 421 is the relay closing the session. Other 4xx replies wait like the
    reader's (retried with a backoff); one that outlives the retry period is a soft
    bounce unless its code says it was not the reader's (4.7.x, a policy deferral).
    Only 5xx other than 552 is permanent; a permanent policy refusal is not retried
    (the same message would be refused again) but leaves the reader subscribed.
    """
    detail = f"{code} {reply}".strip()
    effect = code_effect(code >= 500, enhanced_code(reply), Source.SMTP)
    fault = Fault.READER
    if code == 421 or (code >= 500 and effect is Effect.NOT_THE_READER):
        fault = Fault.RELAY
    if code == 421:
        effect = Effect.NOT_THE_READER
    return DeliveryError(
        detail, permanent=is_permanent(code), code=code, fault=fault, effect=effect
    )


def relay_fault(detail: str) -> bool:
    """Whether a refusal as the ledger recorded it (a row's last_error) was the relay's.

    Read back so that a finished send can tell the operator the relay refused everyone
    for its own reasons (a 5.7.x policy reply, say) rather than report a quiet success.
    """
    if detail.startswith(tuple(f"{step}:" for step in RELAY_STEPS)):
        return True
    code, _, reply = detail.partition(" ")
    return code.isdigit() and classify(int(code), reply).fault is Fault.RELAY


def relay_failure(step: str, exc: BaseException) -> DeliveryError:
    """A failure of the session itself (``step`` is one of RELAY_STEPS): wait and retry.

    Never the reader's: the deliveries stay pending with a backoff, and the batch stops
    using the connection, since every later message would meet the same refusal.
    """
    if isinstance(exc, smtplib.SMTPResponseException):
        words = f"{exc.smtp_code} {reply_text(exc.smtp_error)}".strip()
        code: int | None = exc.smtp_code
    else:
        words, code = str(exc) or type(exc).__name__, None
    return DeliveryError(
        f"{step}: {words}", permanent=False, code=code, fault=Fault.RELAY, session=True
    )
