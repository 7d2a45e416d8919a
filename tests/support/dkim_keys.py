"""DKIM test keys made with cryptography: PEM files, their DNS records, a DNS for dkimpy."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gazette.mail.dkim import DkimKey


@dataclass(frozen=True)
class TestKey:
    """A private key on disk and the TXT record publishing its public half."""

    __test__ = False  # not a test class, for pytest

    domain: str
    selector: str
    path: Path
    record: bytes
    key: DkimKey

    @property
    def name(self) -> bytes:
        """The DNS name dkimpy asks for: ``selector._domainkey.domain.``."""
        return f"{self.selector}._domainkey.{self.domain}.".encode()

    @property
    def entry(self) -> str:
        """This key as one GAZETTE_DKIM_KEYS entry."""
        return f"{self.domain}:{self.selector}:{self.path}"


def make_key(folder: Path, domain: str, selector: str, kind: str = "rsa") -> TestKey:
    """An RSA-2048 or Ed25519 key for ``domain``, written as PKCS#8 PEM under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if kind == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    path = folder / f"{domain}.{selector}.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    record = b"v=DKIM1; k=%s; p=%s" % (kind.encode(), base64.b64encode(public))
    return TestKey(domain, selector, path, record, DkimKey(domain, selector, private))


def dns_for(*keys: TestKey) -> Callable[..., bytes | None]:
    """A dnsfunc for dkim.verify answering with the keys' records (and nothing else)."""
    records = {key.name: key.record for key in keys}

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return dns
