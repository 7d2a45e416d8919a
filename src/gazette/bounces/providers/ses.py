"""Amazon SES events through SNS: the message's signature checked, then read into a Report.

SNS signs each message with the key of a certificate it serves from
``https://sns.<region>.amazonaws.com/...pem``. The certificate is trusted because it
is fetched over https from that pinned host (any other host, scheme or lookalike is
refused before anything is fetched), then checked for its validity period and used to
verify the signature (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) over the
fields SNS signs. The topic must be GAZETTE_SES_TOPIC_ARN's. A subscription is
confirmed by GET-ing its SubscribeURL, pinned the same way.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gazette.bounces.formats import Field
from gazette.bounces.providers.events import (
    TAG,
    CallRefusedError,
    Clock,
    Fetcher,
    event_key,
    part,
    text,
    token_delivery,
    with_class,
)
from gazette.bounces.reports import Kind, Report

# sns.us-east-1.amazonaws.com, sns.us-gov-west-1.amazonaws.com, sns.cn-north-1.amazonaws.com.cn
SNS_HOST = re.compile(r"sns\.[a-z]{2}(?:-[a-z]+)+-\d{1,2}\.amazonaws\.com(?:\.cn)?")
# The fields SNS signs, in the order it signs them, per message type.
SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_CACHED_CERTIFICATES = 16
_URL_MAX = 2000


def pinned(url: str, *, certificate: bool) -> bool:
    """True for an https URL on an SNS host (a ``.pem`` path for a certificate), nothing else."""
    if not url.isascii() or len(url) > _URL_MAX or any(c in url for c in " \\\t\r\n"):
        return False
    parts = urlsplit(url)
    if parts.scheme != "https" or "@" in parts.netloc or parts.port not in (None, 443):
        return False
    if not SNS_HOST.fullmatch(parts.hostname or ""):
        return False
    return not certificate or (parts.path.endswith(".pem") and not parts.query)


class SnsVerifier:
    """Checks SNS messages for one topic; certificates fetched once per URL and kept."""

    def __init__(self, topic_arn: str, fetcher: Fetcher, clock: Clock) -> None:
        self.topic_arn = topic_arn
        self._fetch = fetcher
        self._clock = clock
        self._certificates: dict[str, x509.Certificate] = {}

    def verify(self, message: dict[str, Any]) -> str:
        """The message's Type once its topic and signature check out; else CallRefusedError."""
        kind = message.get("Type")
        if not isinstance(kind, str) or kind not in SIGNED:
            raise CallRefusedError(403, "This is not an SNS message (no known Type).")
        if message.get("TopicArn") != self.topic_arn:
            raise CallRefusedError(
                403, "The message is not from the topic GAZETTE_SES_TOPIC_ARN names."
            )
        algorithm = _HASHES.get(str(message.get("SignatureVersion")))
        if algorithm is None:
            raise CallRefusedError(
                403, "The message is unsigned or uses an unknown SignatureVersion."
            )
        try:
            signature = base64.b64decode(str(message.get("Signature") or ""), validate=True)
        except (binascii.Error, ValueError):
            raise CallRefusedError(403, "The message's Signature is not base64.") from None
        if not signature:
            raise CallRefusedError(403, "The message is unsigned.")
        if kind != "Notification":
            subscribe_url = message.get("SubscribeURL")
            if not isinstance(subscribe_url, str) or not pinned(subscribe_url, certificate=False):
                raise CallRefusedError(403, "The SubscribeURL is not an https URL on an SNS host.")
        url = message.get("SigningCertURL")
        if not isinstance(url, str) or not pinned(url, certificate=True):
            raise CallRefusedError(403, "The SigningCertURL is not an https URL on an SNS host.")
        public_key = self._certificate(url).public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise CallRefusedError(403, "The signing certificate does not hold an RSA key.")
        try:
            public_key.verify(signature, signed_text(message), padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise CallRefusedError(403, "The message's signature does not verify.") from None
        return kind

    def _certificate(self, url: str) -> x509.Certificate:
        """The certificate at ``url``, fetched once, and valid now."""
        certificate = self._certificates.get(url)
        if certificate is None:
            try:
                certificate = x509.load_pem_x509_certificate(self._fetch(url))
            except Exception:  # any failure of the fetch or the PEM: nothing to verify with
                raise CallRefusedError(
                    403, "The signing certificate could not be fetched."
                ) from None
            if len(self._certificates) >= _CACHED_CERTIFICATES:
                self._certificates.clear()
            self._certificates[url] = certificate
        now = datetime.fromtimestamp(self._clock(), UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise CallRefusedError(403, "The signing certificate is not valid now.")
        return certificate

    def confirm(self, message: dict[str, Any]) -> None:
        """Confirm a verified SubscriptionConfirmation by GET-ing its SubscribeURL."""
        try:
            self._fetch(str(message["SubscribeURL"]))
        except Exception as exc:  # the fetcher's failure, whatever it is: SNS will resend
            raise CallRefusedError(
                502, f"The subscription could not be confirmed ({exc})."
            ) from None


def signed_text(message: dict[str, Any]) -> bytes:
    """What SNS signs: each signed field present, as ``name\\nvalue\\n``, in order."""
    names = SIGNED[str(message["Type"])]
    return "".join(
        f"{name}\n{message[name]}\n" for name in names if message.get(name) is not None
    ).encode("utf-8")


def report_of(message: dict[str, Any], secret_keys: Sequence[str]) -> Report:
    """The Report of a verified Notification: an SES Bounce, Complaint or DeliveryDelay."""
    key = event_key("ses", text(message, "MessageId", 200))
    try:
        event = json.loads(str(message.get("Message")))
    except ValueError:
        event = None
    if not isinstance(event, dict):
        return Report(key, Kind.UNRECOGNISED, reason="an SNS notification that is not SES JSON")
    name = text(event, "eventType") or text(event, "notificationType")
    delivery = token_delivery(part(part(event, "mail"), "tags").get(TAG), secret_keys)
    if name == "Bounce":
        return _bounce(key, delivery, part(event, "bounce"))
    if name == "Complaint":
        complaint = part(event, "complaint")
        feedback = text(complaint, "complaintFeedbackType") or "unspecified"
        fields = tuple(
            Field(text(r, "emailAddress"), "complaint", None, f"Feedback-Type: {feedback}")
            for r in _list(complaint, "complainedRecipients")
        )
        return Report(key, Kind.COMPLAINT, delivery, fields, "Amazon SES complaint")
    if name == "DeliveryDelay":
        delay = part(event, "deliveryDelay")
        fields = tuple(
            Field(text(r, "emailAddress"), "delayed", with_class(text(r, "status"),
                  text(r, "diagnosticCode"), "4"), text(r, "diagnosticCode"))
            for r in _list(delay, "delayedRecipients")
        )  # fmt: skip
        why = f"Amazon SES delivery delay ({text(delay, 'delayType') or 'unspecified'})"
        return Report(key, Kind.DELAYED, delivery, fields, why)
    return Report(key, Kind.UNRECOGNISED, delivery, reason=f"an SES {name or 'unknown'} event")


def _bounce(key: str, delivery: int | None, bounce: dict[str, Any]) -> Report:
    """Permanent: a failure of class 5; Transient and Undetermined: of class 4 (soft)."""
    bounce_type = text(bounce, "bounceType") or "Undetermined"
    klass = "5" if bounce_type == "Permanent" else "4"
    fields = []
    for recipient in _list(bounce, "bouncedRecipients"):
        words = text(recipient, "diagnosticCode") or text(bounce, "bounceSubType")
        status = with_class(text(recipient, "status"), words, klass)
        fields.append(Field(text(recipient, "emailAddress"), "failed", status, words))
    why = f"Amazon SES bounce ({bounce_type}/{text(bounce, 'bounceSubType') or 'General'})"
    if not fields:  # a bounce that names nobody still names its delivery by the token
        fields.append(Field("", "failed", None if klass == "5" else "4.0.0", why))
    return Report(key, Kind.FAILED, delivery, tuple(fields), why)


def _list(part: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = part.get(name)
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []
