"""VERP: each digest's envelope sender names its delivery, signed, so a bounce finds it.

With GAZETTE_BOUNCE_ADDRESS=bounces@bounce.example.org, the message of delivery row 42
goes out with MAIL FROM ``bounces+<token>@bounce.example.org``; a receiver writes that
into Return-Path, and every later report (a DSN, forwarded or not) is mailed back to it.
The token is the delivery id and a truncated HMAC of it (gazette.tokens.ShortSigner,
purpose "verp": never valid as a link token, nor a link token as this), written in
lower-case base32, since mail systems may change the case of a local part: reading it
accepts any case. ``envelope_sender`` is the one place that chooses a message's sender.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

from email_validator import EmailNotValidError, validate_email

from gazette.errors import ConfigError
from gazette.tokens import ShortSigner

PURPOSE = "verp"
# 80 bits of HMAC-SHA256. A forged bounce must carry the signature of the one delivery
# it names, and there is nothing to compute it from offline: each guess is a message
# mailed to the bounce address, and 2**80 of them (or 2**60 to have a one in a million
# chance for a given delivery) is out of anyone's reach.
SIGNATURE_BYTES = 10
# Delivery ids are 64-bit signed integers on both databases.
LARGEST_ID = 2**63 - 1
# RFC 5321 4.5.3.1.1: a local part of at most 64 octets.
LOCAL_PART_MAX = 64
# The longest token (the largest id), and the longest bounce local part that leaves it
# room after the "+".
TOKEN_MAX = -(-(8 + SIGNATURE_BYTES) * 8 // 5)
BASE_MAX = LOCAL_PART_MAX - 1 - TOKEN_MAX
_BASE32 = re.compile(r"[a-z2-7]+")
# Longer than any address (RFC 5321: 64 + 1 + 255, and two angle brackets): not ours.
_ADDRESS_MAX = 322


class Verp:
    """One installation's bounce address, and the keys that sign its VERP tokens."""

    def __init__(self, bounce_address: str, secret_keys: Sequence[str]) -> None:
        """``bounce_address`` as config checked it: ASCII, a local part of at most BASE_MAX."""
        local, _, domain = bounce_address.rpartition("@")
        if not local or not domain or len(local.encode()) > BASE_MAX:
            raise ValueError(f"{bounce_address!r} cannot carry a VERP token")
        self.bounce_address = bounce_address
        self._local = local.lower()
        self._domain = domain.lower()
        self._prefix = f"{local}+"
        self._suffix = f"@{domain}"
        self._signer = verp_signer(secret_keys)

    def address(self, delivery_id: int) -> str:
        """The envelope sender of ``delivery_id``'s message: ``local+token@domain``."""
        return self._prefix + mint_token(self._signer, delivery_id) + self._suffix

    def delivery_for(self, address: str) -> int | None:
        """The delivery id a bounce address names, or None when it is not one of ours.

        ``address`` in any case, with or without angle brackets, whole or only its
        local part; its local part must be this bounce address's, plus a valid token.
        """
        parts = _split(address)
        if parts is None:
            return None
        local, domain = parts
        base, plus, text = local.rpartition("+")
        if not plus or base.lower() != self._local:
            return None
        if domain is not None and domain.lower() != self._domain:
            return None
        return read_token(self._signer, text)


def check_bounce_address(raw: str | None, label: str = "GAZETTE_BOUNCE_ADDRESS") -> str | None:
    """The bounce address ``raw`` as a bare ASCII address with room for a token, or None.

    ASCII only: the envelope sender must pass relays that do not offer SMTPUTF8.
    Anything else raises ConfigError naming ``label`` and the value.
    """
    if raw is None:
        return None
    try:
        checked = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        reason = str(exc).rstrip(".")
        reason = reason[:1].lower() + reason[1:]
        raise ConfigError(f"{label}={raw!r} is not an email address ({reason}).") from None
    local = checked.local_part
    if len(local) > BASE_MAX:
        raise ConfigError(
            f"{label}={raw!r} has a local part of {len(local)} characters; at most {BASE_MAX} "
            f"leave room for the VERP token within the {LOCAL_PART_MAX} an address may have."
        )
    return f"{local}@{checked.ascii_domain}"


def envelope_sender(verp: Verp | None, from_address: str, delivery_id: int | None) -> str:
    """The MAIL FROM of a message: where the reports about it are to come back.

    Without a bounce address, the From address, as always. With one, a digest message
    (``delivery_id``, its ledger row) carries its VERP address; a message with no ledger
    row (a confirmation, a welcome, a test send) the plain bounce address: its reports
    still reach the bounce mailbox, to be matched by the reader's address.
    """
    if verp is None:
        return from_address
    if delivery_id is None:
        return verp.bounce_address
    return verp.address(delivery_id)


def delivery_for(address: str, secret_keys: Sequence[str]) -> int | None:
    """The delivery id in a VERP address (or only its token), whatever its bounce address.

    For reports that echo the token elsewhere (a provider's metadata) or when the
    bounce address changed since the message went out; None when the token is not valid.
    """
    parts = _split(address)
    if parts is None:
        return None
    return read_token(verp_signer(secret_keys), parts[0].rpartition("+")[2])


def verp_signer(secret_keys: Sequence[str]) -> ShortSigner:
    """The signer of VERP tokens with the installation's keys (the newest signs)."""
    return ShortSigner(secret_keys, PURPOSE, SIGNATURE_BYTES)


def mint_token(signer: ShortSigner, delivery_id: int) -> str:
    """The token of ``delivery_id``: its shortest big-endian bytes, then their signature."""
    if not 0 <= delivery_id <= LARGEST_ID:
        raise ValueError(f"no VERP token for delivery id {delivery_id}")
    ident = delivery_id.to_bytes(max(1, (delivery_id.bit_length() + 7) // 8), "big")
    return _base32(ident + signer.sign(ident))


def read_token(signer: ShortSigner, text: str) -> int | None:
    """The delivery id ``text`` (any case) stands for, or None when it is not a valid token."""
    if not text.isascii() or not 0 < len(text) <= TOKEN_MAX:
        return None
    text = text.lower()
    if not _BASE32.fullmatch(text):
        return None
    try:
        raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except binascii.Error:  # a length base32 never has
        return None
    # One spelling per token: unused low bits must be zero.
    if _base32(raw) != text:
        return None
    ident, signature = raw[:-SIGNATURE_BYTES], raw[-SIGNATURE_BYTES:]
    if not 1 <= len(ident) <= 8 or (len(ident) > 1 and ident[0] == 0):
        return None
    if not signer.verify(ident, signature):
        return None
    delivery_id = int.from_bytes(ident, "big")
    return delivery_id if delivery_id <= LARGEST_ID else None


def _base32(data: bytes) -> str:
    """Lower-case base32 (RFC 4648's alphabet) without padding."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _split(address: str) -> tuple[str, str | None] | None:
    """An address's local part and domain (None when only a local part was given).

    Angle brackets and surrounding space are dropped; None for what is too long to be
    an address.
    """
    text = address.strip()
    if len(text) > _ADDRESS_MAX:
        return None
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    local, at, domain = text.rpartition("@")
    return (local, domain) if at else (text, None)
