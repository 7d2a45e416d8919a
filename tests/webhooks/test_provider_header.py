"""The metadata header a provider echoes back carries the delivery's VERP token.

Each provider's digest, sent through a loopback relay, carries its header once, and
its token reads back (with the installation's keys, as VERP reads it) as exactly that
reader's ledger row. The settings refuse what they cannot use, in one sentence.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from gazette.config import load_settings
from gazette.errors import ConfigError
from gazette.mail.provider_headers import HEADERS
from gazette.mail.verp import delivery_for
from gazette.provider_settings import parse
from gazette.store.models import Delivery, Subscriber
from tests.support.env import TEST_KEY, make_env
from tests.webhooks.hooks import HEADER, hooked_site


@pytest.mark.parametrize("provider", sorted(HEADERS))
def test_each_message_carries_its_own_delivery_s_token(
    tmp_path: Path, database_url: str, provider: str
) -> None:
    with (
        hooked_site(tmp_path, database_url, provider) as site,
        site.runtime.sessions() as session,
    ):
        rows = dict(session.execute(
                select(Subscriber.email, Delivery.id)
                .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            ).all())  # fmt: skip
    assert set(site.tokens) == set(rows)
    for email, token in site.tokens.items():
        assert delivery_for(token, [TEST_KEY]) == rows[email]
        assert delivery_for(token, ["another-installation-key-0123"]) is None
    for raw in site.raw_messages:
        assert len(HEADER[provider].findall(raw.decode())) == 1


def test_no_provider_no_header(tmp_path: Path, database_url: str) -> None:
    with hooked_site(tmp_path, database_url, "none") as site:
        for raw in site.raw_messages:
            assert not any(pattern.search(raw.decode()) for pattern in HEADER.values())


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"MAIL_PROVIDER": "sparkpost"}, "GAZETTE_MAIL_PROVIDER='sparkpost' must be one of none,"),
        ({"SES_TOPIC_ARN": "gazette-events"}, "GAZETTE_SES_TOPIC_ARN='gazette-events' is not an"),
        ({"POSTMARK_WEBHOOK_USER": "hooks"}, "GAZETTE_POSTMARK_WEBHOOK_USER is set without"),
        ({"POSTMARK_WEBHOOK_PASSWORD": "p" * 20}, "GAZETTE_POSTMARK_WEBHOOK_PASSWORD is set with"),
        ({"POSTMARK_WEBHOOK_USER": "hooks", "POSTMARK_WEBHOOK_PASSWORD": "short-secret"},
         "GAZETTE_POSTMARK_WEBHOOK_PASSWORD (the 12 characters given) must be at least 16"),
        ({"MAILGUN_SIGNING_KEY": "key-123"}, "GAZETTE_MAILGUN_SIGNING_KEY (the 7 characters"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_one_sentence_without_the_secret(
    tmp_path: Path, database_url: str, given: dict[str, str], says: str
) -> None:
    env = make_env(tmp_path, database_url) | {f"GAZETTE_{k}": v for k, v in given.items()}
    with pytest.raises(ConfigError) as raised:
        load_settings(env, cwd=tmp_path)
    message = str(raised.value)
    assert message.startswith(says), message
    assert "short-secret" not in message
    assert "key-123" not in message


def test_the_settings_read_back() -> None:
    parsed = parse({
        "MAIL_PROVIDER": "SES", "SES_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:events",
        "POSTMARK_WEBHOOK_USER": "hooks", "POSTMARK_WEBHOOK_PASSWORD": "p" * 20,
    })  # fmt: skip
    assert parsed.mail_provider == "ses"
    assert parsed.postmark_credentials == ("hooks", "p" * 20)
    assert parsed.mailgun_signing_key is None
