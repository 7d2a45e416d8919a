"""Sender addresses: ``news@example.org`` or ``Name <news@example.org>``, checked once.

GAZETTE_FROM_ADDRESS and a newsletter's ``--from-address`` accept either form; the name,
when given, becomes the sender name readers see, and only the bare address is used for
the envelope, the Message-ID and the List-Id. A stored value keeps the canonical form
``stored`` gives, which ``split_sender`` reads back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from gazette.addresses import AddressError, normalise_address
from gazette.errors import ConfigError

# A display name, then the address in angle brackets, and nothing after.
_NAMED = re.compile(r"(?P<name>[^<>]*?)\s*<(?P<address>[^<>]*)>")
# What RFC 5322 would make a name quote (so that reading it back gives the same name).
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NAME_LIMIT = 100


class SenderError(ConfigError):
    """A from address that cannot be used; like any setting, it exits with status 2."""


@dataclass(frozen=True)
class Sender:
    """A sender: the name readers see (may be empty) and the bare address."""

    name: str
    address: str

    @property
    def stored(self) -> str:
        """The canonical text kept in settings and the database: what parse_sender reads."""
        if not self.name:
            return self.address
        if _SPECIALS.search(self.name):
            escaped = self.name.replace("\\", "\\\\").replace('"', '\\"')
            return f'"{escaped}" <{self.address}>'
        return f"{self.name} <{self.address}>"


def _unquote(name: str) -> str:
    """A display name without its RFC 5322 quotes and backslash escapes."""
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name


def parse_sender(raw: str, what: str = "The from address") -> Sender:
    """Read ``address`` or ``Name <address>``; raise SenderError naming ``raw`` otherwise.

    The address is checked by the same rule as every reader's (email-validator, ASCII
    only, since not every relay offers SMTPUTF8 for the sender); the name may be any
    text on one line. ``what`` names the setting or option in the message.
    """
    text = raw.strip()
    match = _NAMED.fullmatch(text)
    name, address = (_unquote(match["name"].strip()), match["address"]) if match else ("", text)
    hint = 'use news@example.org or "Name <news@example.org>"'
    if "<" in address or ">" in address or (match is None and ("<" in text or ">" in text)):
        raise SenderError(f"{what} {raw!r} is not a sender address; {hint}.")
    # A line break anywhere could start a header of its own: one line, or nothing.
    if _CONTROL.search(text) or len(name) > NAME_LIMIT:
        raise SenderError(
            f"{what} {raw!r} has a sender name that is not one line of at most "
            f"{NAME_LIMIT} characters."
        )
    try:
        validate_email(address, check_deliverability=False, allow_smtputf8=False)
        bare = normalise_address(address, allow_smtputf8=False)
    except (EmailNotValidError, AddressError) as exc:
        reason = str(exc).rstrip(".")
        reason = reason[:1].lower() + reason[1:]
        raise SenderError(f"{what} {raw!r} is not a sender address ({reason}); {hint}.") from None
    return Sender(" ".join(name.split()), bare)


def split_sender(stored: str) -> Sender:
    """A stored from address as name and address.

    A value an older version stored unchecked is taken as a bare address, as before.
    """
    try:
        return parse_sender(stored)
    except SenderError:
        return Sender("", stored.strip())
