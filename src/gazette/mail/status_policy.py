"""Whose a failure is, by its RFC 3463 enhanced status code: the one rule, for every source.

Both the replies a relay gives during the SMTP conversation (gazette.mail.outcomes)
and the reports that come back later (gazette.bounces.policy) ask ``code_effect``:

| status                      | during SMTP (``Source.SMTP``) | in a report (``Source.REPORT``) |
| --------------------------- | ----------------------------- | ------------------------------- |
| no enhanced code, 5xx       | hard bounce                   | hard bounce                     |
| no enhanced code, 4xx       | soft                          | soft                            |
| 5.0.0                       | not the reader's              | hard bounce                     |
| 5.1.x, 5.2.x (not 5.2.2)    | hard bounce                   | hard bounce                     |
| 5.2.2 (mailbox full)        | soft                          | soft                            |
| 5.3.x to 5.7.x              | not the reader's              | not the reader's                |
| 4.7.x                       | not the reader's              | not the reader's                |
| any other 4.x.x             | soft                          | soft                            |

Only 5.0.0 differs, on purpose. During sending the reply comes from the relay Gazette
talks to, which uses 5.0.0 for its own undefined refusals (a relay that does not say
"mailbox" has not said the mailbox is dead; if it is, the relay's DSN says so later).
In a DSN the code was written by the MTA that tried the reader's mailbox, and Postfix
writes 5.0.0 exactly when the receiving server's reply had no enhanced code: that is the
bare "550 no such user" that counts as the reader's in both columns.
"""

from __future__ import annotations

import enum


class Effect(enum.StrEnum):
    """What one failure or report does to the reader it names."""

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


class Source(enum.Enum):
    """Where a status code was read: the relay's reply while sending, or a later report."""

    SMTP = "smtp"
    REPORT = "report"


Code = tuple[int, int, int]


def parse_status(status: str) -> Code | None:
    """``"5.1.1"`` as (5, 1, 1); None for anything that is not three dotted numbers."""
    parts = status.split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None
    klass, subject, detail = (int(part) for part in parts)
    return klass, subject, detail


def code_effect(permanent: bool, code: Code | None, source: Source) -> Effect:
    """The effect of a failure with the enhanced ``code`` (None: the reply had none).

    ``permanent`` is the failure's class when it has no enhanced code (a 5xx reply, a
    DSN that failed); with one, the code's own class decides. The table in the module's
    docstring is this function.
    """
    if code is None:
        return Effect.HARD if permanent else Effect.SOFT
    klass, subject, detail = code
    if klass == 4:
        return Effect.NOT_THE_READER if subject == 7 else Effect.SOFT
    if klass != 5:
        return Effect.NOT_THE_READER  # a success code on a failure: nothing to hold against anyone
    if (subject, detail) == (2, 2):
        return Effect.SOFT  # mailbox full: the reader may well come back
    if (subject, detail) == (0, 0):
        return Effect.NOT_THE_READER if source is Source.SMTP else Effect.HARD
    return Effect.HARD if subject in (1, 2) else Effect.NOT_THE_READER
