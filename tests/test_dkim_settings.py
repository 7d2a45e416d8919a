"""GAZETTE_DKIM_KEYS and the single-key shorthand: keys per From domain, each bad one named.

Every key Gazette cannot sign with is refused at start, in one sentence naming the
setting, the domain, the file and the reason, never the key itself.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gazette.config import load_settings
from gazette.errors import ConfigError
from gazette.mail.dkim import DkimSigner
from gazette.mail.mime import Envelope, build_message
from gazette.store.models import utcnow
from tests.support.dkim_keys import TestKey, dns_for, make_key
from tests.support.env import make_env

FROM_DOMAIN = "news.example.org"  # make_env's GAZETTE_FROM_ADDRESS is digest@news.example.org


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TestKey]:
    folder = tmp_path_factory.mktemp("keys")
    return {
        "rsa": make_key(folder, "example.org", "gz2026"),
        "ed25519": make_key(folder, "other.example", "ed1", "ed25519"),
        "shorthand": make_key(folder, FROM_DOMAIN, "short"),
    }


def _load(tmp_path: Path, **extra: str) -> DkimSigner | None:
    env = make_env(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", **extra)
    settings = load_settings(env, cwd=tmp_path)
    return DkimSigner.from_settings(settings.dkim_keys) if settings.dkim_keys else None


def _refusal(tmp_path: Path, **extra: str) -> str:
    env = make_env(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", **extra)
    with pytest.raises(ConfigError) as raised:
        load_settings(env, cwd=tmp_path)
    sentence = str(raised.value)
    assert "\n" not in sentence
    assert "PRIVATE KEY" not in sentence
    return sentence


def _signed_by(signer: DkimSigner, address: str) -> bytes:
    envelope = Envelope(
        from_name="News", from_address=address, to_name="", to_address="r@example.com",
        subject="Hello", message_id=f"x@{address.rpartition('@')[2]}", date=utcnow(),
    )  # fmt: skip
    return signer.sign(build_message(envelope, "Body\n", "<p>Body</p>", "bnd"), address)


def test_keys_per_domain_and_the_shorthand_sign_together(
    tmp_path: Path, keys: dict[str, TestKey]
) -> None:
    signer = _load(
        tmp_path,
        dkim_keys=f" {keys['rsa'].entry} , {keys['ed25519'].entry},",
        dkim_key_file=str(keys["shorthand"].path),
        dkim_selector="short",
    )
    assert signer is not None
    dns = dns_for(*keys.values())
    for address, key in (
        ("news@example.org", keys["rsa"]),
        ("news@other.example", keys["ed25519"]),
        ("digest@news.example.org", keys["shorthand"]),  # the installation's own From
    ):
        signed = _signed_by(signer, address)
        assert f"d={key.domain};".encode() in signed
        assert dkim.verify(signed, dnsfunc=dns) is True


def test_no_setting_means_no_signing(tmp_path: Path) -> None:
    assert _load(tmp_path) is None


def test_the_shorthand_signs_the_from_domain_as_the_dkim_domain(
    tmp_path: Path, keys: dict[str, TestKey]
) -> None:
    # GAZETTE_DKIM_DOMAIN names d=; the key still serves GAZETTE_FROM_ADDRESS's domain.
    signer = _load(
        tmp_path, dkim_key_file=str(keys["rsa"].path), dkim_selector="gz2026",
        dkim_domain="EXAMPLE.org",
    )  # fmt: skip
    assert signer is not None
    signed = _signed_by(signer, "digest@news.example.org")
    assert b"d=example.org;" in signed
    assert dkim.verify(signed, dnsfunc=dns_for(keys["rsa"])) is True


def test_an_ed25519_key_as_dknewkey_writes_it_is_accepted(tmp_path: Path) -> None:
    seed = ed25519.Ed25519PrivateKey.generate()
    raw = seed.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    path = tmp_path / "ed.key"
    path.write_bytes(base64.b64encode(raw) + b"\n")
    signer = _load(tmp_path, dkim_keys=f"other.example:ed2:{path}")
    assert signer is not None
    public = seed.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(public)
    signed = _signed_by(signer, "news@other.example")
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record) is True


def _bad_key(folder: Path, case: str) -> Path:
    """A key file Gazette cannot sign with, of the kind ``case`` names."""
    path = folder / f"{case}.pem"
    if case == "rsa-512":
        subprocess.run(
            ["openssl", "genrsa", "-out", str(path), "512"], check=True, capture_output=True
        )
    elif case == "ec-p256":
        key = ec.generate_private_key(ec.SECP256R1())
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    elif case == "encrypted":
        key25519 = ed25519.Ed25519PrivateKey.generate()
        path.write_bytes(
            key25519.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
    elif case == "public-key":
        public = ed25519.Ed25519PrivateKey.generate().public_key()
        path.write_bytes(
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    elif case == "armour-around-nothing":
        path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    return path


KEY_REASONS = {
    "rsa-512": "is an RSA key of 512 bits; DKIM needs at least 1024",
    "ec-p256": "is an EC key; DKIM signs with RSA or Ed25519 keys only",
    "encrypted": "is encrypted",
    "public-key": "is not a PEM private key",
    "armour-around-nothing": "is not a PEM private key",
    "missing": "cannot be read (No such file or directory)",
}


@pytest.mark.parametrize("case", sorted(KEY_REASONS))
def test_a_key_that_cannot_sign_is_named_with_the_reason(
    tmp_path: Path, keys: dict[str, TestKey], case: str
) -> None:
    path = tmp_path / "absent.pem" if case == "missing" else _bad_key(tmp_path, case)
    entries = f"{keys['rsa'].entry},bad.example:s1:{path}"
    sentence = _refusal(tmp_path, dkim_keys=entries)
    assert sentence.startswith(f"GAZETTE_DKIM_KEYS: the key of bad.example ({path}) ")
    assert KEY_REASONS[case] in sentence
    # The shorthand names its own variable for the same file.
    short = _refusal(tmp_path, dkim_key_file=str(path), dkim_selector="s1")
    assert short.startswith(f"GAZETTE_DKIM_KEY_FILE={str(path)!r} {KEY_REASONS[case]}")


ENTRY_REASONS = {
    "example.org:gz2026": "is not domain:selector:/path/to/key.pem",
    "example.org::{path}": "is not domain:selector:/path/to/key.pem",
    "mail example.org:gz2026:{path}": "'mail example.org' is not a domain name",
    "example.org:not a label!:{path}": "'not a label!' is not a DNS label",
}


@pytest.mark.parametrize("entry", sorted(ENTRY_REASONS))
def test_a_malformed_entry_is_named(tmp_path: Path, keys: dict[str, TestKey], entry: str) -> None:
    raw = entry.format(path=keys["rsa"].path)
    sentence = _refusal(tmp_path, dkim_keys=raw)
    assert sentence.startswith(f"GAZETTE_DKIM_KEYS entry {raw!r}")
    assert ENTRY_REASONS[entry] in sentence


def test_two_keys_for_one_domain_are_refused(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    other = make_key(tmp_path, "example.org", "second")
    twice = _refusal(tmp_path, dkim_keys=f"{keys['rsa'].entry},{other.entry}")
    assert "Two DKIM keys are given for mail from example.org" in twice
    assert str(keys["rsa"].path) in twice
    assert str(other.path) in twice
    # The shorthand is the From domain's key: GAZETTE_DKIM_KEYS may not give it again.
    again = _refusal(
        tmp_path, dkim_keys=f"{FROM_DOMAIN}:s9:{keys['rsa'].path}",
        dkim_key_file=str(keys["shorthand"].path), dkim_selector="short",
    )  # fmt: skip
    assert f"Two DKIM keys are given for mail from {FROM_DOMAIN}" in again
