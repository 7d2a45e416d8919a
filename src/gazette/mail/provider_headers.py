"""The header that carries a digest's VERP token to a provider that owns the envelope sender.

SES, Postmark, Mailgun and SendGrid write their own MAIL FROM, so the VERP address never
comes back; each echoes a metadata header in its events instead (SES message tags,
Postmark metadata, Mailgun variables, SendGrid unique args). The token is the one VERP
mints for the delivery (same signer, same keys), so the webhook reads it the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from gazette.mail.verp import mint_token, verp_signer

# GAZETTE_MAIL_PROVIDER -> the text before and after the token on the header line.
HEADERS = {
    "ses": ("X-SES-MESSAGE-TAGS: gazette=", ""),
    "postmark": ("X-PM-Metadata-gazette: ", ""),
    "mailgun": ('X-Mailgun-Variables: {"gazette": "', '"}'),
    "sendgrid": ('X-SMTPAPI: {"unique_args": {"gazette": "', '"}}'),
}


class ProviderHeader:
    """Builds one provider's metadata header line for each delivery."""

    def __init__(self, provider: str, secret_keys: Sequence[str]) -> None:
        self.provider = provider
        self._prefix, self._suffix = HEADERS[provider]
        self._signer = verp_signer(secret_keys)

    def line(self, delivery_id: int) -> str:
        """The whole header line (no CRLF): ASCII, short, never folded."""
        return self._prefix + mint_token(self._signer, delivery_id) + self._suffix


def provider_header(provider: str, secret_keys: Sequence[str]) -> ProviderHeader | None:
    """The header builder for GAZETTE_MAIL_PROVIDER, or None for a plain relay ("none")."""
    return ProviderHeader(provider, secret_keys) if provider in HEADERS else None
