"""What a report about sent mail means for the reader it names.

A failure's status code goes through the one policy, gazette.mail.status_policy
(``Source.REPORT``), which the replies during sending share; this module reads a
report's fields into it and adds what only reports have:

- a delay (Action: delayed) or an auto-reply: an event in the reader's history, nothing else.
- a complaint (an RFC 5965 abuse or fraud report): unsubscribed from every newsletter
  and suppressed for good; only the reader's own double opt-in brings them back.
- soft bounces end the subscriptions after GAZETTE_SOFT_BOUNCE_LIMIT of them within
  GAZETTE_SOFT_BOUNCE_DAYS (gazette.subscribers.bounces); a hard bounce at once; a
  failure that was not the reader's is counted for its issue and receiving domain
  (bounce_report), never against them.
"""

from __future__ import annotations

from gazette.bounces.formats import Field, status_code
from gazette.bounces.reports import Kind
from gazette.mail.status_policy import Effect, Source, code_effect, parse_status

__all__ = ["Effect", "effect_of", "failure_effect", "reported_status"]


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
    # A failed DSN is permanent: without a code it is the bare "550 no such user".
    return code_effect(True, parse_status(status) if status else None, Source.REPORT)
