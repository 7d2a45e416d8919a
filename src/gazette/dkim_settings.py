"""DKIM keys from their settings: ``GAZETTE_DKIM_KEYS`` and the single-key shorthand.

config.py reads the raw strings; here each entry (domain, selector, key file, the key's
type and size) is checked, and a key Gazette cannot sign with is named with the reason,
so a worker never meets it message after message.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gazette.errors import ConfigError
from gazette.url_settings import PREFIX

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    SigningKey = RSAPrivateKey | Ed25519PrivateKey

KEYS = f"{PREFIX}DKIM_KEYS"
KEY_FILE = f"{PREFIX}DKIM_KEY_FILE"
SELECTOR = f"{PREFIX}DKIM_SELECTOR"
DOMAIN = f"{PREFIX}DKIM_DOMAIN"
# RFC 8301 3.2: signers MUST use at least 1024 bits, and verifiers reject shorter keys.
MIN_RSA_BITS = 1024

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
_SELECTOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# What `dknewkey --ktype ed25519` (dkimpy) writes: the 32-byte seed in base64.
_ED25519_SEED = re.compile(rb"^[A-Za-z0-9+/]{43}=$")


@dataclass(frozen=True)
class DkimKeySetting:
    """One key: mail From ``from_domain`` (or below it) is signed ``d=domain; s=selector``."""

    from_domain: str
    domain: str
    selector: str
    path: str
    pem: bytes = field(repr=False)


def load_signing_key(data: bytes) -> SigningKey:
    """The RSA or Ed25519 private key in ``data``; ValueError says why it cannot sign."""
    # Imported here, so importing config (which imports this module) stays cheap.
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if _ED25519_SEED.match(data.strip()):
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(data.strip()))
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError("is encrypted; give the key without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm, binascii.Error):
        raise ValueError("is not a PEM private key") from None
    if isinstance(key, RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(
                f"is an RSA key of {key.key_size} bits; DKIM needs at least {MIN_RSA_BITS} "
                "(2048 recommended)"
            )
        return key
    if isinstance(key, Ed25519PrivateKey):
        return key
    kind = type(key).__name__.replace("PrivateKey", "")
    article = "an" if kind[:1] in ("A", "E", "I", "O", "U", "X") else "a"
    raise ValueError(f"is {article} {kind} key; DKIM signs with RSA or Ed25519 keys only")


def domain_name(raw: str) -> str | None:
    """``raw`` as a lower-case ASCII (IDNA) domain name, or None when it is not one."""
    try:
        domain = raw.strip().rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    return domain if _HOSTNAME.match(domain) else None


def _read_key(path: str, where: str) -> bytes:
    """The key file's bytes, checked to hold a key Gazette can sign with."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read ({exc.strerror}).") from None
    try:
        load_signing_key(data)
    except ValueError as why:
        raise ConfigError(f"{where} {why}.") from None
    return data


def _entry(raw: str) -> DkimKeySetting:
    """One ``domain:selector:/path/to/key.pem`` entry of GAZETTE_DKIM_KEYS."""
    parts = [part.strip() for part in raw.split(":", 2)]
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"{KEYS} entry {raw.strip()!r} is not domain:selector:/path/to/key.pem.")
    raw_domain, selector, path = parts
    domain = domain_name(raw_domain)
    if domain is None:
        raise ConfigError(f"{KEYS} entry {raw.strip()!r}: {raw_domain!r} is not a domain name.")
    if not _SELECTOR.match(selector):
        raise ConfigError(f"{KEYS} entry {raw.strip()!r}: {selector!r} is not a DNS label.")
    pem = _read_key(path, f"{KEYS}: the key of {domain} ({path})")
    return DkimKeySetting(domain, domain, selector, path, pem)


def _shorthand(
    key_file: str | None, selector: str | None, domain: str | None, from_address: str
) -> DkimKeySetting | None:
    """The single key of GAZETTE_DKIM_KEY_FILE and _SELECTOR, for GAZETTE_FROM_ADDRESS's domain."""
    if key_file is None and selector is None:
        return None
    if key_file is None or selector is None:
        raise ConfigError(f"{KEY_FILE} and {SELECTOR} go together; set both or neither.")
    if not _SELECTOR.match(selector):
        raise ConfigError(f"{SELECTOR}={selector!r} is not a DNS label.")
    pem = _read_key(key_file, f"{KEY_FILE}={key_file!r}")
    from_domain = domain_name(from_address.rpartition("@")[2]) or ""
    raw_domain = domain or from_domain
    signing_domain = domain_name(raw_domain)
    if signing_domain is None:
        raise ConfigError(f"{DOMAIN}={raw_domain!r} is not a domain name.")
    return DkimKeySetting(from_domain or signing_domain, signing_domain, selector, key_file, pem)


def parse_dkim_keys(
    keys: str | None,
    key_file: str | None,
    selector: str | None,
    domain: str | None,
    from_address: str,
) -> tuple[DkimKeySetting, ...]:
    """Every DKIM key the settings give, one per From domain; none: no signing.

    ``keys``: GAZETTE_DKIM_KEYS, comma-separated ``domain:selector:/path/to/key.pem``.
    The single-key settings add one key for the domain of GAZETTE_FROM_ADDRESS, signed
    as GAZETTE_DKIM_DOMAIN (default: that domain).
    """
    found: list[DkimKeySetting] = []
    single = _shorthand(key_file, selector, domain, from_address)
    if single is not None:
        found.append(single)
    for raw in (keys or "").split(","):
        if raw.strip():
            found.append(_entry(raw))
    by_domain: dict[str, DkimKeySetting] = {}
    for entry in found:
        first = by_domain.setdefault(entry.from_domain, entry)
        if first is not entry:
            raise ConfigError(
                f"Two DKIM keys are given for mail from {entry.from_domain} ({first.path} and "
                f"{entry.path}); give each domain one key, in {KEYS} or {KEY_FILE}."
            )
    return tuple(found)


def missing_key_sentence(address: str, domain: str) -> str:
    """Why mail from ``address`` is not sent while signing is on: one sentence, the fix in it."""
    return (
        f"No DKIM key signs mail from {address}: signing is on, and a signature for "
        f"another domain fails DMARC alignment; add {domain}:SELECTOR:/path/to/key.pem "
        f"to {KEYS} (and publish its public key), or send from a domain that has a key."
    )
