"""POST /webhooks/ses: Amazon SES events through SNS, signature and topic checked.

A real digest goes out through a loopback relay with GAZETTE_MAIL_PROVIDER=ses; each SES
event (signed as SNS signs, with a test CA's certificate the injected fetcher serves for
sns.us-east-1.amazonaws.com) names its message by the token the X-SES-MESSAGE-TAGS
header carried, and changes exactly that reader, once.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from gazette.store.models import SubscriptionStatus
from gazette.web import MAX_BODY
from tests.support.routes import database_state
from tests.webhooks.hooks import (
    CERT_URL,
    SUBSCRIBE_URL,
    Hooked,
    address,
    hooked_site,
    reader_states,
    report_rows,
    ses_event,
    sns_message,
)

PROVIDER = "ses"


def bounce(token: str | None, email: str, bounce_type: str, status: str, words: str) -> str:
    recipient = {"emailAddress": email, "action": "failed", "status": status,
                 "diagnosticCode": words}  # fmt: skip
    return ses_event("Bounce", token, email, bounce={
        "bounceType": bounce_type, "bounceSubType": "General", "bouncedRecipients": [recipient],
    })  # fmt: skip


def events(site: Hooked) -> dict[str, str]:
    """One SES event per reader of READERS (the bystander has none), by reader name."""
    t = {name: site.tokens[address(name)] for name in ("hard", "soft", "complaint", "delayed")}
    return {
        "hard": bounce(t["hard"], address("hard"), "Permanent", "5.1.1",
                       "smtp; 550 5.1.1 user unknown"),
        "soft": bounce(t["soft"], address("soft"), "Transient", "5.2.2",
                       "smtp; 552 5.2.2 mailbox full"),
        "complaint": ses_event("Complaint", t["complaint"], address("complaint"), complaint={
            "complainedRecipients": [{"emailAddress": address("complaint")}],
            "complaintFeedbackType": "abuse"}),
        "delayed": ses_event("DeliveryDelay", t["delayed"], address("delayed"), deliveryDelay={
            "delayType": "MailboxFull", "delayedRecipients": [{"emailAddress": address("delayed"),
            "status": "4.2.2", "diagnosticCode": "smtp; 452 4.2.2 over quota"}]}),
    }  # fmt: skip


def test_each_event_changes_exactly_its_reader_once(site: Hooked) -> None:
    before = reader_states(site.runtime)
    for n, (name, body) in enumerate(events(site).items()):
        version = "1" if n % 2 else "2"
        message = sns_message("Notification", body, message_id=f"msg-{name}", version=version)
        answer = site.post("/webhooks/ses", message)
        assert answer.status == 200, answer.text
        assert answer.text.startswith("Applied:"), answer.text
    after = reader_states(site.runtime)
    assert after[address("bystander")] == before[address("bystander")]
    assert after[address("hard")].statuses == (SubscriptionStatus.BOUNCED.value,)
    soft = after[address("soft")]
    assert soft.statuses == (SubscriptionStatus.ACTIVE.value,)
    assert soft.bounce_count == before[address("soft")].bounce_count + 1
    assert after[address("complaint")].statuses == (SubscriptionStatus.COMPLAINED.value,)
    delayed = after[address("delayed")]
    assert delayed.statuses == (SubscriptionStatus.ACTIVE.value,)
    assert delayed.bounce_count == 0
    assert delayed.events - before[address("delayed")].events == {"delayed": 1}
    # The certificate was fetched once, for all four.
    assert site.fetcher.fetched == [CERT_URL]

    # Replays and SNS's retries (the same MessageId) answer 200 and change nothing.
    state = database_state(site.runtime)
    for name, body in events(site).items():
        again = site.post("/webhooks/ses", sns_message("Notification", body,
                                                       message_id=f"msg-{name}"))  # fmt: skip
        assert (again.status, again.text.strip()) == (200, "Already applied.")
    assert database_state(site.runtime) == state


def test_without_a_tag_the_address_is_matched(site: Hooked) -> None:
    body = bounce(None, address("hard"), "Permanent", "5.1.1", "smtp; 550 5.1.1 unknown")
    answer = site.post("/webhooks/ses", sns_message("Notification", body, message_id="untagged"))
    assert answer.status == 200, answer.text
    assert reader_states(site.runtime)[address("hard")].statuses == ("bounced",)


def test_a_subscription_is_confirmed_once(site: Hooked) -> None:
    message = sns_message("SubscriptionConfirmation", "Confirm it", message_id="confirm-1")
    first = site.post("/webhooks/ses", message)
    assert (first.status, first.text.strip()) == (200, "Subscription confirmed.")
    second = site.post("/webhooks/ses", message)
    assert (second.status, second.text.strip()) == (200, "Subscription already confirmed.")
    assert site.fetcher.fetched == [CERT_URL, SUBSCRIBE_URL]
    assert report_rows(site.runtime) == 0


def forgeries(site: Hooked) -> dict[str, dict[str, str]]:
    """Every way an SES call can be forged, each about the hard reader's real delivery."""
    body = events(site)["hard"]
    good = sns_message("Notification", body, message_id="forged")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elsewhere = "https://sns.us-east-1.amazonaws.com.evil.org/SimpleNotificationService-1.pem"
    return {
        "unsigned": {k: v for k, v in good.items() if k != "Signature"},
        "no signature version": {k: v for k, v in good.items() if k != "SignatureVersion"},
        "unknown version": good | {"SignatureVersion": "3"},
        "signed by another key": sns_message("Notification", body, message_id="forged",
                                             key=other_key),
        "body changed after signing": good | {"Message": body.replace("Permanent", "Permanent ")},
        "wrong topic": sns_message("Notification", body, message_id="forged",
                                   TopicArn="arn:aws:sns:us-east-1:210987654321:other"),
        "certificate on a lookalike host": sns_message(
            "Notification", body, message_id="forged", SigningCertURL=elsewhere),
        "certificate on another host": sns_message(
            "Notification", body, message_id="forged",
            SigningCertURL="https://evil.example.org/SimpleNotificationService-1.pem"),
        "certificate over http": sns_message(
            "Notification", body, message_id="forged",
            SigningCertURL=CERT_URL.replace("https:", "http:")),
        "certificate with credentials": sns_message(
            "Notification", body, message_id="forged",
            SigningCertURL=CERT_URL.replace("https://", "https://evil.org@")),
        "confirmation to another host": sns_message(
            "SubscriptionConfirmation", "x", message_id="forged",
            SubscribeURL="https://evil.example.org/?Action=ConfirmSubscription"),
    }  # fmt: skip


def test_every_forged_call_is_refused_and_writes_nothing(site: Hooked) -> None:
    state = database_state(site.runtime)
    for name, message in forgeries(site).items():
        answer = site.post("/webhooks/ses", message)
        assert answer.status in (401, 403), (name, answer.status, answer.text)
        assert len(answer.text.strip().splitlines()) == 1, (name, answer.text)
    for body in (b"not json", b"[]"):
        assert site.post("/webhooks/ses", body).status == 400
    # Bodies are capped like every POST's.
    assert site.post("/webhooks/ses", b" " * (MAX_BODY + 1)).status == 413
    assert database_state(site.runtime) == state
    # Only the pinned host's certificate was ever fetched; nothing was confirmed.
    assert set(site.fetcher.fetched) <= {CERT_URL}


def test_an_expired_certificate_is_refused(site: Hooked) -> None:
    site.clock.sleep(400 * 86400)  # past the test certificate's year
    message = sns_message("Notification", events(site)["hard"], message_id="late")
    answer = site.post("/webhooks/ses", message)
    assert (answer.status, answer.text.strip()) == (
        403,
        "The signing certificate is not valid now.",
    )
    assert report_rows(site.runtime) == 0


def test_not_configured_is_404(tmp_path: Path, database_url: str) -> None:
    with hooked_site(tmp_path, database_url, "none", ses_topic_arn="") as site:
        answer = site.post("/webhooks/ses", sns_message("Notification", "{}", message_id="x"))
        assert answer.status == 404
        assert site.tokens == {}
        assert all(b"X-SES-MESSAGE-TAGS" not in m for m in site.raw_messages)
