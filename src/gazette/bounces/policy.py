"""What a report about sent mail means for the reader it names: the one place that decides.

By the RFC 3463 status code of a failure, as mail/outcomes does for a refusal during
the SMTP conversation:

- 5.1.x (bad address), 5.2.x (mailbox; but 5.2.2, mailbox full, is soft), 5.0.0 or no
  code at all (the reader's, as relays always said "550 no such user"; Postfix writes
  5.0.0 for a reply without a code): a hard bounce, the reader suppressed at once.
- 5.3.x to 5.7.x (mail system, routing, protocol, content, policy, reputation,
  authentication) and 4.7.x: not the reader's doing. Never counted against them; the
  event is kept and the report counted for its issue and receiving domain (the
  bounce_report table), for the operator.
- any other 4.x.x that failed for good: a soft bounce (SOFT_BOUNCE_LIMIT of them end
  the subscriptions).
- a delay (Action: delayed) or an auto-reply: an event in the reader's history, nothing else.
- a complaint (an RFC 5965 abuse or fraud report): unsubscribed from every newsletter
  and suppressed for good; only the reader's own double opt-in brings them back.
"""

from __future__ import annotations

import enum

from gazette.bounces.formats import Field, status_code
from gazette.bounces.reports import Kind


class Effect(enum.StrEnum):
    """What one report does to the reader it names."""

    HARD = "hard bounce"
    SOFT = "soft bounce"
    NOT_THE_READER = "not the reader"
    DELAYED = "delayed"
    AUTO_REPLY = "auto-reply"
    COMPLAINT = "complaint"

    @property
    def counts_against_reader(self) -> bool:
        """True for a bounce that counts towards suppressing the reader."""
        return self in (Effect.HARD, Effect.SOFT)


def effect_of(kind: Kind, field: Field | None) -> Effect | None:
    """What a report of ``kind`` about ``field`` does; None for an unrecognised one."""
    if kind is Kind.COMPLAINT:
        return Effect.COMPLAINT
    if kind is Kind.AUTO_REPLY:
        return Effect.AUTO_REPLY
    if kind is Kind.DELAYED or (field is not None and field.action == "delayed"):
        return Effect.DELAYED
    if kind is not Kind.FAILED:
        return None
    return failure_effect(reported_status(field))


def reported_status(field: Field | None) -> str | None:
    """The status code a failure reports, the diagnostic's when it says more.

    A Status of X.0.0 says nothing about whose the failure is; the receiving server's
    own words (``Diagnostic-Code: smtp; 550 5.7.1 ...``) may, and then they decide.
    """
    if field is None:
        return None
    status = field.status
    said = status_code(field.diagnostic)
    if (
        said is not None
        and (status is None or status.endswith(".0.0"))
        and said[0] == (status or said)[0]
    ):
        return said
    return status


def failure_effect(status: str | None) -> Effect:
    """The effect of a failed delivery with ``status`` ("5.1.1", or None for no code)."""
    if status is None:
        return Effect.HARD
    klass, subject, detail = (int(part) for part in status.split("."))
    if klass == 5:
        if (subject, detail) == (2, 2):
            return Effect.SOFT  # mailbox full: the reader may well come back
        return Effect.HARD if subject in (0, 1, 2) else Effect.NOT_THE_READER
    if klass == 4:
        return Effect.NOT_THE_READER if subject == 7 else Effect.SOFT
    return Effect.NOT_THE_READER  # a success code on a failure: nothing to hold against anyone
