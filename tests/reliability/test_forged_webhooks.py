"""Scenario: forged provider webhooks, across providers and forgery kinds, accept nothing.

A real digest is sent (its tokens are real, so a forgery that got through would bounce
a real reader); then N calls to /webhooks/ses, /postmark and /mailgun, each about a
random reader's real delivery and forged one way, go through the real HTTP server.
None may be answered 2xx and nothing but the Mailgun token counters may change; the
same events, genuinely signed, are then accepted (the control).
"""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.figures import record
from tests.support.reliability import scenario
from tests.support.routes import database_state
from tests.webhooks.hooks import (
    CERT_URL,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    READERS,
    Hooked,
    address,
    basic,
    hooked_site,
    mailgun_signature,
    reader_states,
    ses_event,
    sns_message,
)

pytestmark = pytest.mark.reliability
TRIES = 600
Forgery = tuple[str, str, Any, dict[str, str]]  # (kind, path, body, headers)


def _bounce(token: str, name: str) -> str:
    recipient = {"emailAddress": address(name), "status": "5.1.1", "diagnosticCode": "550 5.1.1"}
    return ses_event("Bounce", token, address(name), bounce={
        "bounceType": "Permanent", "bouncedRecipients": [recipient]})  # fmt: skip


def _forgers(site: Hooked, rng: random.Random) -> list[Callable[[str, str], Forgery]]:
    """One builder per forgery kind: (token, reader name) -> the forged call."""
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(site.clock())
    spent = mailgun_signature(now, "spent-token")

    def sns(
        kind: str, key: rsa.RSAPrivateKey | None = None, version: str = "1", **changes: str
    ) -> Callable[[str, str], Forgery]:
        def build(token: str, name: str) -> Forgery:
            message = sns_message("Notification", _bounce(token, name),
                                  message_id=secrets.token_hex(8), version=version, key=key,
                                  **changes)  # fmt: skip
            return f"ses: {kind}", "/webhooks/ses", message, {}

        return build

    def ses_edit(
        kind: str, edit: Callable[[dict[str, str]], dict[str, str]]
    ) -> Callable[..., Forgery]:
        def build(token: str, name: str) -> Forgery:
            good = sns_message(
                "Notification", _bounce(token, name), message_id=secrets.token_hex(8)
            )
            return f"ses: {kind}", "/webhooks/ses", edit(good), {}

        return build

    def postmark(kind: str, headers: Callable[[], dict[str, str]]) -> Callable[..., Forgery]:
        def build(token: str, name: str) -> Forgery:
            body = {"RecordType": "Bounce", "Type": "HardBounce", "ID": rng.getrandbits(40),
                    "Email": address(name), "Metadata": {"gazette": token}}  # fmt: skip
            return f"postmark: {kind}", "/webhooks/postmark", body, headers()

        return build

    def mailgun(kind: str, signature: Callable[[], dict[str, str]]) -> Callable[..., Forgery]:
        def build(token: str, name: str) -> Forgery:
            data = {"event": "failed", "severity": "permanent", "id": secrets.token_hex(8),
                    "recipient": address(name), "user-variables": {"gazette": token}}  # fmt: skip
            return f"mailgun: {kind}", "/webhooks/mailgun", {
                "signature": signature(), "event-data": data}, {}  # fmt: skip

        return build

    lookalike = "https://sns.us-east-1.amazonaws.com.evil.org/SimpleNotificationService-1.pem"
    return [
        ses_edit("unsigned", lambda m: {k: v for k, v in m.items() if k != "Signature"}),
        ses_edit("body changed", lambda m: m | {"Message": m["Message"].replace("5.1.1", "5.1.2")}),
        ses_edit("random signature", lambda m: m | {"Signature": secrets.token_urlsafe(256)}),
        sns("another key", key=other_key),
        sns("wrong topic", TopicArn="arn:aws:sns:us-east-1:999999999999:gazette-ses-events"),
        sns("lookalike certificate host", SigningCertURL=lookalike),
        sns("certificate over http", SigningCertURL=CERT_URL.replace("https", "http")),
        sns("unknown version", version="3"),
        postmark("no credentials", lambda: {}),
        postmark("wrong password", lambda: basic(POSTMARK_USER, secrets.token_urlsafe(20))),
        postmark("wrong user", lambda: basic(secrets.token_hex(6), POSTMARK_PASSWORD)),
        mailgun("unsigned", lambda: {}),
        mailgun("wrong key", lambda: mailgun_signature(now, secrets.token_hex(25),
                                                       "key-" + secrets.token_hex(16))),
        mailgun("random signature", lambda: {"timestamp": str(now), "token": secrets.token_hex(25),
                                             "signature": secrets.token_hex(32)}),
        mailgun("stale", lambda: mailgun_signature(now - 301 - rng.randrange(10**6),
                                                   secrets.token_hex(25))),
        mailgun("token reused", lambda: spent),
    ]  # fmt: skip


def test_reliability_forged_webhooks_are_never_accepted(tmp_path: Path, database_url: str) -> None:
    rng = random.Random(20261206)
    with hooked_site(tmp_path, database_url, "ses") as site:
        # The spent token was used once, genuinely, on a delay of the bystander's.
        spent_call = {"signature": mailgun_signature(int(site.clock()), "spent-token"),
                      "event-data": {"event": "failed", "severity": "temporary", "id": "d-1",
                                     "recipient": address("bystander")}}  # fmt: skip
        assert site.post("/webhooks/mailgun", spent_call).text.startswith("Applied: delayed")
        forgers = _forgers(site, rng)
        before = database_state(site.runtime)
        tried: Counter[str] = Counter()
        statuses: Counter[int] = Counter()
        accepted = []
        started = time.perf_counter()
        for n in range(TRIES):
            name = rng.choice(READERS)
            kind, path, body, headers = forgers[n % len(forgers)](site.tokens[address(name)], name)
            answer = site.post(path, body, headers)
            tried[kind] += 1
            statuses[answer.status] += 1
            if answer.status < 300:
                accepted.append((kind, answer.text))
        elapsed = time.perf_counter() - started
        after = database_state(site.runtime)
        before.pop("rate_limit"), after.pop("rate_limit")  # the reused token's counter
        changed = [table for table in before if before[table] != after[table]]
        assert site.fetcher.fetched == [CERT_URL]
        # The control: the same kind of event, genuinely signed, is accepted.
        genuine = sns_message("Notification", _bounce(site.tokens[address("hard")], "hard"),
                              message_id="genuine")  # fmt: skip
        assert site.post("/webhooks/ses", genuine).text.startswith("Applied: hard bounce")
        assert reader_states(site.runtime)[address("hard")].statuses == ("bounced",)
    record(
        scenario("Forged webhooks", database_url),
        f"{TRIES:,} forged calls over HTTP to /webhooks/ses, /postmark and /mailgun, each "
        f"naming a real delivery's token: " + ", ".join(f"{n} {k}" for k, n in tried.items()),
        f"{len(accepted)} accepted, {len(changed)} table(s) changed; statuses "
        + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())) + f"; {elapsed:.1f} s",
        "0 accepted, nothing written; the genuine control accepted",
    )  # fmt: skip
    assert accepted == []
    assert changed == []
    assert set(statuses) <= {401, 403}
