"""What each digest message is addressed and sealed with: ids, List-Id, links, DKIM.

Shared by the composer (digests) and the notices (confirmation, welcome), so both
mint the same links and headers the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gazette.mail.mime import Envelope, QuotedPrintable, build_message
from gazette.mail.senders import split_sender
from gazette.store.models import Newsletter
from gazette.tokens import Purpose

if TYPE_CHECKING:  # the composer imports this module; the context is only annotated
    from gazette.digests.composer import SendContext


def domain_of(address: str) -> str:
    """The domain part of an address (for Message-IDs and List-Id)."""
    return address.rpartition("@")[2]


def message_id(issue_public_id: str, subscriber_public_id: str, domain: str) -> str:
    """Deterministic per (issue, subscriber), so a resend is recognisably the same message."""
    return f"{issue_public_id}.{subscriber_public_id}@{domain}"


def list_id_for(newsletter: Newsletter, from_address: str) -> str:
    """The newsletter's List-Id: its own, or its slug under the sender's domain."""
    # RFC 2919: the identifier stays plain; only the name before it may be encoded.
    return (newsletter.list_id or f"{newsletter.slug}.{domain_of(from_address)}").strip("<>")


_LINKS = (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES)


def reader_links(ctx: SendContext, public_id: str, slug: str) -> tuple[str, str]:
    """A reader's (unsubscribe URL, preferences URL) for a newsletter, each with a signed token."""
    unsubscribe, preferences = ctx.tokens.mint_each(_LINKS, public_id, slug)
    return (
        f"{ctx.base_url}/unsubscribe/{unsubscribe}",
        f"{ctx.base_url}/preferences/{preferences}",
    )


def sealed(
    ctx: SendContext,
    envelope: Envelope,
    text: str | QuotedPrintable,
    html: str | QuotedPrintable,
    boundary: str,
) -> bytes:
    """The message as bytes (DotSafe unless signed), DKIM-signed when a key is set."""
    message: bytes = build_message(envelope, text, html, boundary)
    if ctx.signer is not None:
        message = ctx.signer.sign(message, envelope.from_address)
    return message


def require_dkim_key(ctx: SendContext, newsletter: Newsletter) -> None:
    """MissingDkimKeyError when signing is on and the newsletter's From domain has no key."""
    if ctx.signer is not None:
        ctx.signer.key_for(split_sender(newsletter.from_address or ctx.default_from).address)
