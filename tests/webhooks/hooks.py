"""A sent digest and the webhook endpoint that hears about it, and how providers sign.

A Hooked site sends a real issue through a loopback SMTP relay with GAZETTE_MAIL_PROVIDER
set, reads each message's metadata header back (the token the provider would echo),
and serves the app over HTTP with an injected certificate fetcher and clock. SNS
messages are signed with a test CA's signing certificate, made with ``cryptography``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from gazette.bounces.providers.ses import signed_text
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import (
    BounceReport,
    Event,
    IssueStatus,
    Subscriber,
    Subscription,
)
from gazette.web import create_app, server_options
from tests.support import digests
from tests.support.clock import FakeClock
from tests.support.env import installed_runtime
from tests.support.http import Browser, LiveServer, Page, serve
from tests.support.smtp import RecordingHandler, SMTPServer

REGION = "us-east-1"
TOPIC = f"arn:aws:sns:{REGION}:123456789012:gazette-ses-events"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
SUBSCRIBE_URL = (
    f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=abc"
)
POSTMARK_USER, POSTMARK_PASSWORD = "gazette-hooks", "postmark-password-0123456789"
MAILGUN_KEY = "key-mailgun-signing-0123456789abcdef"
READERS = ("hard", "soft", "complaint", "delayed", "bystander")
# The metadata header each provider's messages carry, the token in group 1.
HEADER = {
    "ses": re.compile(r"^X-SES-MESSAGE-TAGS: gazette=([a-z2-7]+)\r?$", re.M),
    "postmark": re.compile(r"^X-PM-Metadata-gazette: ([a-z2-7]+)\r?$", re.M),
    "mailgun": re.compile(r'^X-Mailgun-Variables: \{"gazette": "([a-z2-7]+)"\}\r?$', re.M),
    "sendgrid": re.compile(
        r'^X-SMTPAPI: \{"unique_args": \{"gazette": "([a-z2-7]+)"\}\}\r?$', re.M
    ),
}
WEBHOOK_SETTINGS = {
    "ses_topic_arn": TOPIC,
    "postmark_webhook_user": POSTMARK_USER,
    "postmark_webhook_password": POSTMARK_PASSWORD,
    "mailgun_signing_key": MAILGUN_KEY,
}


def address(name: str) -> str:
    return f"{name}.reader@example.org"


# --- a test CA and SNS's signing certificate ---------------------------------------------


@dataclass(frozen=True)
class SigningCert:
    key: rsa.RSAPrivateKey
    pem: bytes


@cache
def signing_cert(now: float = FakeClock()()) -> SigningCert:
    """A signing certificate for sns.us-east-1.amazonaws.com, issued by a test CA."""
    start = datetime.fromtimestamp(now, UTC) - timedelta(days=1)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Gazette Test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(start).not_valid_after(start + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                    f"sns.{REGION}.amazonaws.com")]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(2)
        .not_valid_before(start).not_valid_after(start + timedelta(days=365))
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    return SigningCert(key, leaf.public_bytes(serialization.Encoding.PEM))


@dataclass
class Fetcher:
    """SNS's hosts as a test sees them: the certificate and the confirmation, each fetch kept."""

    served: dict[str, bytes] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)

    def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        if url in self.served:
            return self.served[url]
        if url.startswith(f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription"):
            return b"<ConfirmSubscriptionResponse/>"
        raise OSError(f"{url} answered HTTP 404")


def sns_message(
    kind: str,
    body: str,
    *,
    message_id: str,
    version: str = "1",
    key: rsa.RSAPrivateKey | None = None,
    **overrides: str,
) -> dict[str, str]:
    """An SNS message of ``kind`` for the test topic, signed by ``key`` (SNS's by default)."""
    message = {
        "Type": kind, "MessageId": message_id, "TopicArn": TOPIC, "Message": body,
        "Timestamp": "2024-05-01T08:00:00.000Z", "SignatureVersion": version,
        "SigningCertURL": CERT_URL,
    }  # fmt: skip
    if kind == "SubscriptionConfirmation":
        message |= {"Token": "abc", "SubscribeURL": SUBSCRIBE_URL}
    message |= overrides
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signer = key or signing_cert().key
    signature = signer.sign(signed_text(message), padding.PKCS1v15(), algorithm)
    return message | {"Signature": base64.b64encode(signature).decode()}


def ses_event(event_type: str, token: str | None, email: str, **part: Any) -> str:
    """An SES event (as a configuration set publishes it) about one message to ``email``."""
    tags = {"gazette": [token]} if token else {}
    event: dict[str, Any] = {
        "eventType": event_type,
        "mail": {"messageId": "0100018f-ses", "destination": [email], "tags": tags},
    }
    event |= part
    return json.dumps(event)


# --- Postmark and Mailgun ---------------------------------------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def mailgun_signature(timestamp: int, token: str, key: str = MAILGUN_KEY) -> dict[str, str]:
    digest = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {"timestamp": str(timestamp), "token": token, "signature": digest}


# --- the site -----------------------------------------------------------------------------------


@dataclass
class Hooked:
    runtime: Runtime
    server: LiveServer
    fetcher: Fetcher
    clock: FakeClock
    # Each reader's token, as the provider's metadata header carried it.
    tokens: dict[str, str]
    raw_messages: list[bytes]

    def post(
        self,
        path: str,
        body: bytes | str | Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
    ) -> Page:
        data = body if isinstance(body, bytes) else (
            body.encode() if isinstance(body, str) else json.dumps(body).encode()
        )  # fmt: skip
        sent = {"Content-Type": "application/json"} | dict(headers or {})
        return Browser(self.server, cookies=False).request("POST", path, data, sent)


@dataclass(frozen=True)
class ReaderState:
    statuses: tuple[str, ...]
    bounce_count: int
    events: Counter[str]


def reader_states(runtime: Runtime) -> dict[str, ReaderState]:
    """Each reader's subscription statuses, bounce count and event kinds."""
    with runtime.sessions() as session:
        readers = session.execute(select(Subscriber.id, Subscriber.email, Subscriber.bounce_count))
        states = {}
        for subscriber_id, email, count in readers.all():
            statuses = session.scalars(
                select(Subscription.status).where(Subscription.subscriber_id == subscriber_id)
            )
            kinds = session.scalars(select(Event.kind).where(Event.subscriber_id == subscriber_id))
            states[email] = ReaderState(
                tuple(sorted(s.value for s in statuses)), count, Counter(kinds)
            )
    return states


def report_rows(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(BounceReport)) or 0


@contextmanager
def hooked_site(
    tmp_path: Path, database_url: str, provider: str, **settings: str
) -> Iterator[Hooked]:
    """A digest sent to READERS through a loopback relay as ``provider``; the app served."""
    with SMTPServer(RecordingHandler()) as relay, installed_runtime(
        tmp_path, database_url, smtp_url=relay.url, mail_provider=provider,
        **(WEBHOOK_SETTINGS | settings),
    ) as runtime:  # fmt: skip
        with transaction(runtime.sessions) as session:
            newsletter_id = create_newsletter(session, digests.SLUG, "Hooked News")
        digests.add_articles(
            runtime, [digests.ArticleSpec("Grid storage", "https://blog.example.com/grid", 2)]
        )
        digests.add_readers(runtime, [(address(name), name.title(), "en") for name in READERS])
        issue_id, _public_id, _status = digests.plan(runtime, newsletter_id)
        assert digests.send(runtime, issue_id).status == IssueStatus.SENT
        messages = relay.messages
        assert len(messages) == len(READERS)
        tokens = {}
        pattern = HEADER.get(provider)
        for received in messages:
            [recipient] = received.recipients
            if pattern is not None:
                head = received.data.split(b"\r\n\r\n", 1)[0].decode()
                [token] = pattern.findall(head)
                tokens[recipient] = token
        fetcher, clock = Fetcher({CERT_URL: signing_cert().pem}), FakeClock()
        app = create_app(runtime, fetcher=fetcher, clock=clock)
        with serve(app, **server_options(runtime.settings)) as server:
            yield Hooked(runtime, server, fetcher, clock, tokens,
                         [m.data for m in messages])  # fmt: skip
