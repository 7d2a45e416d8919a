"""Reading a message that came back (issue 18): what it is, whose delivery, what it means.

Samples written from RFC 3464, RFC 5965 and RFC 3834, and non-standard bounces from
flufl.bounce's own test data; every one is read into the kind, the VERP delivery, the
recipient and status it reports, and the policy's effect. Nothing at all, mangled or
random, makes reading raise.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gazette.bounces.formats import Field
from gazette.bounces.policy import Effect, effect_of, failure_effect, reported_status
from gazette.bounces.reports import Kind, read_report
from gazette.config import load_settings
from gazette.errors import ConfigError
from gazette.mail.verp import Verp
from tests.bounces.helpers import BOUNCE, SAMPLES, sample
from tests.support.env import make_env

KEY = "bounce-test-key-0123456789"
OTHER_KEY = "another-installation-key-0123"
VERP = Verp(BOUNCE, [KEY]).address(4242)


@pytest.mark.parametrize(
    ("name", "kind", "status", "effect"),
    [
        ("dsn_failed_511.eml", Kind.FAILED, "5.1.1", Effect.HARD),
        ("dsn_delayed_441.eml", Kind.DELAYED, "4.4.1", Effect.DELAYED),
        ("dsn_policy_571.eml", Kind.FAILED, "5.7.1", Effect.NOT_THE_READER),
        ("dsn_expired_447.eml", Kind.FAILED, "4.4.7", Effect.SOFT),
        ("arf_complaint.eml", Kind.COMPLAINT, None, Effect.COMPLAINT),
        ("auto_reply.eml", Kind.AUTO_REPLY, None, Effect.AUTO_REPLY),
    ],
)
def test_each_standard_report_is_read_with_its_token_recipient_and_effect(
    name: str, kind: Kind, status: str | None, effect: Effect
) -> None:
    report = read_report(sample(name, verp=VERP, recipient="ada@example.org"), [KEY])
    assert report.kind is kind, report.reason
    assert report.delivery_id == 4242
    [first, *_rest] = report.recipients
    assert first.address == "ada@example.org"
    assert reported_status(first) == status
    assert effect_of(report.kind, first) is effect


@pytest.mark.parametrize(
    ("name", "address", "status"),
    [
        ("postfix_nonstandard.eml", "xxxxx@local.ie", "5.1.1"),
        ("exim_nonstandard.eml", "userx@its.example.nl", "5.1.1"),
        ("qmail_nonstandard.eml", "userx@example.de", None),
    ],
)
def test_non_standard_bounces_are_read_through_flufl_bounce(
    name: str, address: str, status: str | None
) -> None:
    report = read_report(sample(name), [KEY])
    assert report.kind is Kind.FAILED
    assert "flufl.bounce" in report.reason
    assert report.delivery_id is None  # mailed to a list address, no token
    assert [field.address for field in report.recipients] == [address]
    assert report.recipients[0].status == status
    assert effect_of(report.kind, report.recipients[0]) is Effect.HARD


def test_the_token_decides_even_when_the_report_names_another_address() -> None:
    report = read_report(
        sample("dsn_failed_511.eml", verp=VERP, recipient="fwd@elsewhere.example"), [KEY]
    )
    assert report.delivery_id == 4242
    assert report.recipients[0].address == "fwd@elsewhere.example"


def test_a_token_of_another_installation_or_a_damaged_one_names_nothing() -> None:
    theirs = Verp(BOUNCE, [OTHER_KEY]).address(4242)
    token = VERP.partition("+")[2].partition("@")[0]
    damaged = VERP.replace(token, token[:-1] + ("a" if token[-1] != "a" else "b"))
    for address in (theirs, damaged, BOUNCE):
        report = read_report(sample("dsn_failed_511.eml", verp=address), [KEY])
        assert report.kind is Kind.FAILED
        assert report.delivery_id is None, address


def test_only_the_envelope_headers_and_to_are_searched_for_a_token() -> None:
    # A token quoted in the report's body (the original message's Return-Path) is not
    # where the report was mailed to; the headers that say so are.
    raw = sample("dsn_failed_511.eml", verp=BOUNCE).replace(
        b"Return-Path: <bounces@", f"Return-Path: <{VERP}>\nX-Old: <bounces@".encode(), 1
    )
    assert read_report(raw, [KEY]).delivery_id is None
    for header in (b"Delivered-To", b"X-Original-To", b"Envelope-To", b"To"):
        raw = sample("dsn_failed_511.eml", verp="nobody@example.org")
        raw = raw.replace(b"Subject:", header + b": " + VERP.encode() + b"\nSubject:", 1)
        assert read_report(raw, [KEY]).delivery_id == 4242, header


def test_a_feedback_report_that_is_not_a_complaint_is_not_acted_on() -> None:
    raw = sample("arf_complaint.eml", verp=VERP).replace(
        b"Feedback-Type: abuse", b"Feedback-Type: auth-failure"
    )
    report = read_report(raw, [KEY])
    assert report.kind is Kind.UNRECOGNISED
    assert "'auth-failure', not a complaint" in report.reason


def test_a_report_of_a_successful_delivery_is_not_a_bounce() -> None:
    raw = sample("dsn_failed_511.eml", verp=VERP).replace(b"Action: failed", b"Action: delivered")
    report = read_report(raw, [KEY])
    assert report.kind is Kind.UNRECOGNISED
    assert "no failure (delivered)" in report.reason


@pytest.mark.parametrize(
    "marker",
    [
        b"Auto-Submitted: auto-generated",
        b"X-Autoreply: yes",
        b"Precedence: auto_reply",
        b"Subject: Automatic reply: Relay News",
        b"Subject: Out of Office",
    ],
)
def test_auto_replies_are_known_by_any_rfc_3834_marker_or_a_vacation_subject(
    marker: bytes,
) -> None:
    raw = (
        b"From: Ada <ada@example.org>\nTo: " + VERP.encode() + b"\n"
        b"Message-ID: <v@example.org>\n" + marker + b"\n\nAway until Monday.\n"
    )
    assert read_report(raw, [KEY]).kind is Kind.AUTO_REPLY


def test_a_bounce_marked_auto_submitted_by_a_mailer_daemon_stays_a_bounce() -> None:
    # Exim and Postfix write Auto-Submitted: auto-replied on their bounces.
    raw = sample("exim_nonstandard.eml").replace(
        b"Subject:", b"Auto-Submitted: auto-replied\nSubject:", 1
    )
    assert read_report(raw, [KEY]).kind is Kind.FAILED


def test_a_plain_reply_from_a_person_is_unrecognised() -> None:
    raw = b"From: ada@example.org\nTo: " + VERP.encode() + b"\nSubject: Re: Relay News\n\nThanks!\n"
    report = read_report(raw, [KEY])
    assert report.kind is Kind.UNRECOGNISED
    assert report.reason == "not a bounce, a complaint or an auto-reply Gazette recognises"


def test_the_key_is_the_message_id_and_else_the_bytes() -> None:
    first = read_report(sample("dsn_failed_511.eml", verp=VERP), [KEY])
    refolded = read_report(sample("dsn_failed_511.eml", verp=VERP).replace(b"\n", b"\r\n"), [KEY])
    other = read_report(sample("dsn_failed_511.eml", verp=VERP, n=1), [KEY])
    assert first.key == refolded.key != other.key
    bare = sample("exim_nonstandard.eml").replace(b"Message-Id:", b"X-Was-Message-Id:")
    assert read_report(bare, [KEY]).key != read_report(bare + b"\n", [KEY]).key


@pytest.mark.parametrize("name", ["broken_mime.eml", "binary_junk.eml"])
def test_malformed_messages_are_unrecognised_with_a_reason(name: str) -> None:
    report = read_report(sample(name, verp=VERP), [KEY])
    assert report.kind is Kind.UNRECOGNISED
    assert report.reason
    assert "\n" not in report.reason


@pytest.mark.parametrize(
    ("status", "effect"),
    [
        (None, Effect.HARD),
        ("5.0.0", Effect.HARD),
        ("5.1.1", Effect.HARD),
        ("5.1.10", Effect.HARD),
        ("5.2.1", Effect.HARD),
        ("5.2.2", Effect.SOFT),
        ("5.3.0", Effect.NOT_THE_READER),
        ("5.4.4", Effect.NOT_THE_READER),
        ("5.7.1", Effect.NOT_THE_READER),
        ("5.7.26", Effect.NOT_THE_READER),
        ("4.4.7", Effect.SOFT),
        ("4.2.2", Effect.SOFT),
        ("4.7.0", Effect.NOT_THE_READER),
    ],
)
def test_the_policy_by_status_code(status: str | None, effect: Effect) -> None:
    assert failure_effect(status) is effect


def test_the_diagnostic_decides_when_the_status_says_nothing_more_than_x_0_0() -> None:
    said = Field("ada@example.org", "failed", "5.0.0", "550 5.7.1 Message rejected as spam")
    assert reported_status(said) == "5.7.1"
    assert effect_of(Kind.FAILED, said) is Effect.NOT_THE_READER
    unknown = Field("ada@example.org", "failed", "5.0.0", "550 User unknown")
    assert effect_of(Kind.FAILED, unknown) is Effect.HARD
    # A precise Status stands; a diagnostic of another class does not replace it.
    assert reported_status(Field("a@b.example", "failed", "5.1.1", "550 5.7.1 x")) == "5.1.1"
    assert reported_status(Field("a@b.example", "failed", "5.0.0", "451 4.7.1 x")) == "5.0.0"


SAMPLE_BYTES = [p.read_bytes() for p in sorted(SAMPLES.glob("*.eml"))]


def test_every_sample_cut_short_or_with_bytes_changed_reads_without_raising() -> None:
    draw = random.Random(1803)
    for raw in SAMPLE_BYTES:
        for cut in range(0, len(raw), max(1, len(raw) // 40)):
            assert read_report(raw[:cut], [KEY]).kind in Kind
        for _ in range(40):
            mangled = bytearray(raw)
            for _ in range(draw.randint(1, 20)):
                mangled[draw.randrange(len(mangled))] = draw.randrange(256)
            assert read_report(bytes(mangled), [KEY]).kind in Kind


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_no_bytes_at_all_make_reading_raise(raw: bytes) -> None:
    assert read_report(raw, [KEY]).kind in Kind


def test_the_require_verp_setting_is_yes_or_no(tmp_path: Path) -> None:
    env = make_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert load_settings(env, cwd=tmp_path).bounce_require_verp is False
    for value, expected in (("yes", True), ("1", True), ("no", False), ("off", False)):
        settings_ = load_settings(env | {"GAZETTE_BOUNCE_REQUIRE_VERP": value}, cwd=tmp_path)
        assert settings_.bounce_require_verp is expected
    with pytest.raises(ConfigError, match=r"GAZETTE_BOUNCE_REQUIRE_VERP='maybe' is not a yes/no"):
        load_settings(env | {"GAZETTE_BOUNCE_REQUIRE_VERP": "maybe"}, cwd=tmp_path)
