"""The settings that are secrets: the keys that sign links, the metrics bearer token.

Each raw value (as gazette.config read it from the environment) is checked here, and a
refusal never repeats a secret. Nothing here reads the environment: gazette.config
stays the one place that does.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from gazette.errors import ConfigError
from gazette.url_settings import PREFIX

# The example key in .env.example: a copy of it signs links anyone could forge.
PLACEHOLDER_SECRET = "change-me-to-a-long-random-string"  # noqa: S105 (refused, never used)


def secret_keys(raw: str) -> tuple[str, ...]:
    """GAZETTE_SECRET_KEYS as a tuple, refusing short keys and the example's placeholder."""
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    if not keys or any(len(k) < 16 for k in keys):
        raise ConfigError(
            f"{PREFIX}SECRET_KEYS must list keys of at least 16 characters, "
            "newest first, separated by commas."
        )
    if PLACEHOLDER_SECRET in keys:
        raise ConfigError(
            f"{PREFIX}SECRET_KEYS still holds the placeholder {PLACEHOLDER_SECRET!r} from "
            '.env.example; replace it with a key of your own (python -c "import secrets; '
            'print(secrets.token_urlsafe(32))").'
        )
    return keys


def metrics_token(raw: str | None) -> str | None:
    """GAZETTE_METRICS_TOKEN: a bearer token (RFC 6750 characters) of 16 or more characters.

    The value is never repeated in the error: it is a secret, and may be half right.
    """
    if raw is None:
        return None
    if len(raw) < 16 or not re.fullmatch(r"[A-Za-z0-9._~+/-]+=*", raw):
        raise ConfigError(
            f"{PREFIX}METRICS_TOKEN (the {len(raw)} characters given) must be at least 16 "
            "letters, digits or -._~+/ characters, as a bearer token is "
            '(python -c "import secrets; print(secrets.token_urlsafe(32))").'
        )
    return raw


def secret_keys_or_embedded(raw: str | None, var_dir: Path) -> tuple[str, ...]:
    """GAZETTE_SECRET_KEYS when set; otherwise the key kept in ``var/secret.key``."""
    if raw is None:
        return (embedded_secret(var_dir),)
    return secret_keys(raw)


def embedded_secret(var_dir: Path) -> str:
    """Return the secret kept in ``var/secret.key``, creating it on first use.

    The embedded default must sign links that survive a restart without the operator
    choosing a key; production sets GAZETTE_SECRET_KEYS instead. The file appears
    complete or not at all (written aside, then hard-linked into place), so a second
    process starting at the same moment never reads it half-written.
    """
    path = var_dir / "secret.key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        aside = var_dir / f".secret.key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(aside, path)  # fails if another process linked its key first
        except FileExistsError:
            pass
        finally:
            aside.unlink()
    key = path.read_text().strip()
    if len(key) < 16:
        raise ConfigError(
            f"{path} holds no usable key; delete it to have a new one made, "
            f"or set {PREFIX}SECRET_KEYS."
        )
    return key
