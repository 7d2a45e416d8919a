"""The one policy by RFC 3463 status code (gazette.mail.status_policy), for both sources.

Replies during sending (mail/outcomes.classify) and reports that come back later
(bounces/policy.failure_effect) must agree on every code but 5.0.0, where each keeps
the behaviour right for its source: the relay's own undefined refusal while sending, a
reply without a code (Postfix writes 5.0.0 for it) in a DSN.
"""

from __future__ import annotations

import pytest

from gazette.bounces.policy import failure_effect
from gazette.mail.outcomes import Fault, classify
from gazette.mail.status_policy import Effect, Source, code_effect, parse_status

AGREED = [
    ("5.1.1", Effect.HARD),
    ("5.1.10", Effect.HARD),
    ("5.2.1", Effect.HARD),
    ("5.2.2", Effect.SOFT),
    ("5.3.4", Effect.NOT_THE_READER),
    ("5.4.4", Effect.NOT_THE_READER),
    ("5.5.0", Effect.NOT_THE_READER),
    ("5.6.7", Effect.NOT_THE_READER),
    ("5.7.1", Effect.NOT_THE_READER),
    ("5.7.26", Effect.NOT_THE_READER),
    ("4.2.2", Effect.SOFT),
    ("4.4.7", Effect.SOFT),
    ("4.7.1", Effect.NOT_THE_READER),
]


@pytest.mark.parametrize(("status", "effect"), AGREED)
def test_sending_and_reports_agree_on_every_code_but_5_0_0(status: str, effect: Effect) -> None:
    code = 550 if status.startswith("5") else 451
    assert failure_effect(status) is effect
    assert classify(code, f"{status} words").effect is effect
    for source in Source:
        assert code_effect(True, parse_status(status), source) is effect


def test_5_0_0_is_the_relays_while_sending_and_the_readers_in_a_dsn() -> None:
    during = classify(550, "5.0.0 <ada@example.org>: Recipient address rejected")
    assert (during.effect, during.fault, during.hard_bounce) == (
        Effect.NOT_THE_READER, Fault.RELAY, False,
    )  # fmt: skip
    assert failure_effect("5.0.0") is Effect.HARD
    assert code_effect(True, (5, 0, 0), Source.SMTP) is Effect.NOT_THE_READER
    assert code_effect(True, (5, 0, 0), Source.REPORT) is Effect.HARD


def test_a_failure_without_a_code_is_the_readers_by_its_class() -> None:
    assert classify(550, "no such user here").effect is Effect.HARD
    assert classify(450, "mailbox busy").effect is Effect.SOFT
    assert failure_effect(None) is Effect.HARD


def test_a_greylisting_deferral_waits_like_the_readers_but_never_counts() -> None:
    failure = classify(451, "4.7.1 greylisted")
    assert (failure.fault, failure.permanent, failure.effect) == (
        Fault.READER, False, Effect.NOT_THE_READER,
    )  # fmt: skip
    assert classify(421, "4.3.2 closing").effect is Effect.NOT_THE_READER


@pytest.mark.parametrize("text", ["5.1", "5.x.1", "", "5.1.1.1"])
def test_a_status_that_is_not_three_numbers_is_no_code(text: str) -> None:
    assert parse_status(text) is None
