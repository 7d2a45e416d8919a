"""DKIM signing through OpenSSL, with a key per From domain, so every digest aligns (DMARC).

RSA-SHA256 (PKCS#1 v1.5) and Ed25519-SHA256 (RFC 8463), relaxed/relaxed. dkimpy signed
before, in pure Python: 6.4 ms per RSA-2048 signature, twenty times the rest of the
worker's CPU per message; OpenSSL (through ``cryptography``) takes a fraction of a
millisecond. The body is canonicalized and hashed once per message.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from gazette.dkim_settings import (
    DkimKeySetting,
    domain_name,
    load_signing_key,
    missing_key_sentence,
)
from gazette.errors import GazetteError
from gazette.mail.dkim_canon import (
    crlf_message,
    relaxed_body,
    relaxed_field,
    signed_fields,
    split_message,
)
from gazette.mail.mime import DotSafe

if TYPE_CHECKING:
    from gazette.dkim_settings import SigningKey

# List-Unsubscribe and List-Unsubscribe-Post must be signed for one-click unsubscribe
# to be honoured by Gmail and Yahoo (RFC 8058 section 4); Gmail counts a Feedback-ID
# only when a domain it verified signed it.
SIGNED_HEADERS = (
    b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type",
    b"List-Id", b"List-Unsubscribe", b"List-Unsubscribe-Post", b"Feedback-ID",
)  # fmt: skip
_NAMES = tuple(name.lower() for name in SIGNED_HEADERS)
_FOLD = b"\r\n "
_WIDTH = 76  # header lines kept near 78 octets (RFC 5322 2.1.1)
_B64_LINE = 72


class MissingDkimKeyError(GazetteError):
    """Signing is on and no key signs mail from this address's domain."""


@dataclass(frozen=True)
class DkimKey:
    """One signing key and what its signatures say: ``d=``, ``s=`` and the algorithm."""

    domain: str
    selector: str
    private_key: SigningKey

    @property
    def algorithm(self) -> str:
        """``rsa-sha256`` or ``ed25519-sha256``."""
        return "rsa-sha256" if isinstance(self.private_key, RSAPrivateKey) else "ed25519-sha256"

    def signature(self, data: bytes) -> bytes:
        """The raw signature of the canonical header data (RFC 8463 signs its SHA-256)."""
        if isinstance(self.private_key, RSAPrivateKey):
            return self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return self.private_key.sign(hashlib.sha256(data).digest())


def _fold(atoms: Iterable[tuple[bytes, bytes]], column: int) -> bytes:
    """Join (separator, text) atoms, folding before an atom that would pass _WIDTH."""
    out: list[bytes] = []
    for separator, text in atoms:
        if out and column + len(separator) + len(text) > _WIDTH:
            out.append(_FOLD)
            column = 1
        elif out:
            out.append(separator)
            column += len(separator)
        out.append(text)
        column += len(text)
    return b"".join(out)


class _Template:
    """The DKIM-Signature of one key up to its per-message tags, folded once."""

    def __init__(self, key: DkimKey) -> None:
        self.key = key
        tags = [
            b"v=1;", f"a={key.algorithm};".encode(), b"c=relaxed/relaxed;",
            f"d={key.domain};".encode(), f"s={key.selector};".encode(),
        ]  # fmt: skip
        atoms = [(b" ", tag) for tag in tags]
        # h= may fold after each colon (RFC 6376 3.5: FWS around ":").
        names = [name + b":" for name in _NAMES[:-1]] + [_NAMES[-1] + b";"]
        atoms += [(b" ", b"h=" + names[0])] + [(b"", name) for name in names[1:]]
        self.head = b"DKIM-Signature: " + _fold(atoms, len(b"DKIM-Signature: "))

    def value(self, timestamp: int, body_hash: bytes, signature: bytes) -> bytes:
        """The header field's value from its first tag: t=, bh= and b= on lines of their own."""
        lines = [self.head, b" t=%d; bh=%s;" % (timestamp, body_hash), b" b="]
        text = base64.b64encode(signature)
        first = _B64_LINE - 3
        lines[-1] += text[:first]
        lines.extend(b" " + text[at : at + _B64_LINE] for at in range(first, len(text), _B64_LINE))
        return b"\r\n".join(lines)


def _missing(from_address: str) -> MissingDkimKeyError:
    """The refusal of mail from an address whose domain has no key, naming the setting."""
    domain = domain_name(from_address.rpartition("@")[2]) or from_address
    return MissingDkimKeyError(missing_key_sentence(from_address, domain))


class DkimSigner:
    """Signs whole messages, each with the key of its From domain (or of a parent domain).

    A parent domain's key (``example.org`` for ``news.example.org``) aligns under
    DMARC's relaxed alignment, the default.
    """

    def __init__(self, keys: dict[str, DkimKey], clock: Callable[[], float] = time.time) -> None:
        self._templates = {from_domain: _Template(key) for from_domain, key in keys.items()}
        self._clock = clock
        self._found: dict[str, _Template | None] = {}

    @classmethod
    def from_settings(cls, settings: Iterable[DkimKeySetting]) -> DkimSigner:
        """The signer of the keys the settings give (each already checked by them)."""
        return cls(
            {
                s.from_domain: DkimKey(s.domain, s.selector, load_signing_key(s.pem))
                for s in settings
            }
        )

    def _template(self, from_address: str) -> _Template | None:
        """The template of the key for the address's domain or its nearest parent."""
        domain = from_address.rpartition("@")[2]
        try:
            return self._found[domain]
        except KeyError:
            pass
        name = domain_name(domain) or ""
        labels = name.split(".")
        found = next(
            (
                template
                for at in range(len(labels) - 1)
                if (template := self._templates.get(".".join(labels[at:]))) is not None
            ),
            None,
        )
        self._found[domain] = found
        return found

    def key_for(self, from_address: str) -> DkimKey:
        """The key that signs mail from ``from_address``; MissingDkimKeyError when there is none."""
        template = self._template(from_address)
        if template is None:
            raise _missing(from_address)
        return template.key

    def sign(self, message: bytes, from_address: str) -> bytes:
        """Return ``message`` with a DKIM-Signature in front (DotSafe if it was).

        The key is that of ``from_address`` (the From header's address); MissingDkimKeyError
        when its domain has none.
        """
        template = self._template(from_address)
        if template is None:
            raise _missing(from_address)
        # build_message writes CRLF lines only, the last one ended, and quoted-printable
        # bodies: a DotSafe message needs no scan for bare line feeds or trailing blanks.
        message_crlf = message if isinstance(message, DotSafe) else crlf_message(message)
        head, body = split_message(message_crlf)
        canonical = relaxed_body(body, quoted_printable=isinstance(message, DotSafe))
        body_hash = base64.b64encode(hashlib.sha256(canonical).digest())
        timestamp = int(self._clock())
        unsigned = template.value(timestamp, body_hash, b"")
        name, _colon, value = unsigned.partition(b":")
        data = signed_fields(head, _NAMES) + relaxed_field(name, value)
        header = template.value(timestamp, body_hash, template.key.signature(data)) + b"\r\n"
        signed = header + message_crlf
        # Every line of the header starts with its name or a blank, never with ".".
        return DotSafe(signed) if isinstance(message, DotSafe) else signed
