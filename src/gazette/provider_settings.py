"""The mail provider settings: which provider sends, and each webhook's credentials.

Parsed from the raw strings gazette.config read (it stays the only reader of the
environment); a refusal names the variable and never repeats a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from gazette.errors import ConfigError
from gazette.url_settings import PREFIX

# GAZETTE_MAIL_PROVIDER: the provider whose metadata header each digest carries.
PROVIDERS = ("none", "ses", "postmark", "mailgun", "sendgrid")
# The variables read, without the prefix; config passes each raw value (or None).
VARIABLES = (
    "MAIL_PROVIDER", "SES_TOPIC_ARN", "POSTMARK_WEBHOOK_USER", "POSTMARK_WEBHOOK_PASSWORD",
    "MAILGUN_SIGNING_KEY",
)  # fmt: skip
# arn:aws:sns:REGION:ACCOUNT:TOPIC (the partition may be aws-cn or aws-us-gov).
_TOPIC_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}")
_SECRET_MIN = 16


@dataclass(frozen=True)
class ProviderSettings:
    """The provider that sends (``none``: a plain relay) and the webhooks configured."""

    mail_provider: str = "none"
    # The SNS topic SES publishes to; None: no /webhooks/ses.
    ses_topic_arn: str | None = None
    # Postmark's webhook basic-auth credentials; None: no /webhooks/postmark.
    postmark_credentials: tuple[str, str] | None = None
    # Mailgun's HTTP webhook signing key; None: no /webhooks/mailgun.
    mailgun_signing_key: str | None = None


def parse(raw: Mapping[str, str | None]) -> ProviderSettings:
    """The settings from ``raw`` (VARIABLES to their stripped values or None)."""
    provider = (raw.get("MAIL_PROVIDER") or "none").lower()
    if provider not in PROVIDERS:
        raise ConfigError(
            f"{PREFIX}MAIL_PROVIDER={raw.get('MAIL_PROVIDER')!r} must be one of "
            f"{', '.join(PROVIDERS)}."
        )
    arn = raw.get("SES_TOPIC_ARN")
    if arn is not None and not _TOPIC_ARN.fullmatch(arn):
        raise ConfigError(
            f"{PREFIX}SES_TOPIC_ARN={arn!r} is not an SNS topic ARN "
            "(arn:aws:sns:REGION:ACCOUNT:TOPIC)."
        )
    return ProviderSettings(
        mail_provider=provider,
        ses_topic_arn=arn,
        postmark_credentials=_postmark(raw.get("POSTMARK_WEBHOOK_USER"),
                                       raw.get("POSTMARK_WEBHOOK_PASSWORD")),
        mailgun_signing_key=_secret("MAILGUN_SIGNING_KEY", raw.get("MAILGUN_SIGNING_KEY")),
    )  # fmt: skip


def _postmark(user: str | None, password: str | None) -> tuple[str, str] | None:
    """Both basic-auth credentials, or neither: one without the other is a mistake."""
    if user is None and password is None:
        return None
    if user is None or password is None:
        given, missing = ("USER", "PASSWORD") if password is None else ("PASSWORD", "USER")
        raise ConfigError(
            f"{PREFIX}POSTMARK_WEBHOOK_{given} is set without "
            f"{PREFIX}POSTMARK_WEBHOOK_{missing}; set both, or neither."
        )
    if ":" in user:
        raise ConfigError(f"{PREFIX}POSTMARK_WEBHOOK_USER={user!r} must not contain ':'.")
    return user, _secret("POSTMARK_WEBHOOK_PASSWORD", password) or ""


def _secret(name: str, value: str | None) -> str | None:
    """A webhook secret of at least _SECRET_MIN characters; the refusal does not repeat it."""
    if value is not None and len(value) < _SECRET_MIN:
        raise ConfigError(
            f"{PREFIX}{name} (the {len(value)} characters given) must be at least "
            f"{_SECRET_MIN} characters."
        )
    return value
