"""The settings that are URLs: the database, the mail transport, the broker, the site.

Each raw value (as gazette.config read it from the environment) is checked here and
turned into what the rest of Gazette uses, or refused with a ConfigError that names
the variable and shows the value with any password masked. Nothing here reads the
environment: gazette.config stays the one place that does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from gazette.errors import ConfigError

# Every setting's variable starts so; a message names the variable in full.
PREFIX = "GAZETTE_"
# The spellings a yes/no setting (or a URL's yes/no option) accepts.
YES = frozenset({"1", "true", "yes", "on"})
NO = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class MailURL:
    """Where mail goes: a Maildir folder or an SMTP relay."""

    scheme: str  # "maildir", "smtp" or "smtps"
    path: Path | None = None
    host: str = ""
    port: int = 0
    username: str = ""
    password: str = ""
    starttls: bool = False
    timeout: float = 30.0

    def redacted(self) -> str:
        """Return the URL for logs and messages, without the password."""
        if self.scheme == "maildir":
            return f"maildir://{self.path}"
        user = f"{self.username}:***@" if self.username else ""
        return f"{self.scheme}://{user}{self.host}:{self.port}"


_USERINFO_PASSWORD = re.compile(r"(://[^/@:]*:)[^@/]*@")


def shown(raw: str) -> str:
    """The value as error messages show it: a password in a URL is masked."""
    return _USERINFO_PASSWORD.sub(r"\1***@", raw)


def _split(raw: str, name: str) -> SplitResult:
    """``raw`` split into its parts, or ConfigError naming GAZETTE_``name``."""
    try:
        return urlsplit(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={shown(raw)!r} is not a valid URL.") from None


def parse_database_url(raw: str, name: str = "DATABASE_URL") -> str:
    """Check a database URL and pin the driver Gazette supports for its dialect."""
    try:
        url: URL = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigError(f"{PREFIX}{name}={shown(raw)!r} is not a database URL.") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.drivername != "sqlite":
            raise ConfigError(f"{PREFIX}{name}={shown(raw)!r}: use the plain sqlite:/// scheme.")
        if not url.database or url.database == ":memory:":
            raise ConfigError(
                f"{PREFIX}{name}={shown(raw)!r} must name a database file (sqlite:///path/to/file.db)."
            )
        return url.render_as_string(hide_password=False)
    if backend == "postgresql":
        if url.drivername not in ("postgresql", "postgresql+psycopg"):
            raise ConfigError(
                f"{PREFIX}{name}={shown(raw)!r}: Gazette talks to PostgreSQL through psycopg 3 "
                "(postgresql+psycopg://)."
            )
        if not url.database:
            raise ConfigError(f"{PREFIX}{name}={shown(raw)!r} does not name a database.")
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ConfigError(
        f"{PREFIX}{name}={shown(raw)!r} names an unsupported database; use sqlite:/// or postgresql://."
    )


def parse_mail_url(raw: str, name: str = "SMTP_URL") -> MailURL:
    """Parse ``maildir:///abs/path``, ``smtp://user:pass@host:587?starttls=1`` or ``smtps://``."""
    parts = _split(raw, name)
    if parts.scheme == "maildir":
        return _maildir_url(parts, raw, name)
    if parts.scheme in ("smtp", "smtps"):
        return _smtp_url(parts, raw, name)
    raise ConfigError(
        f"{PREFIX}{name}={shown(raw)!r} is not a mail URL; use maildir:///path, smtp://host:port "
        "or smtps://host:port."
    )


def _maildir_url(parts: SplitResult, raw: str, name: str) -> MailURL:
    """A ``maildir:///abs/path`` URL: an absolute path, and nothing else."""
    if parts.netloc or not parts.path.startswith("/"):
        raise ConfigError(
            f"{PREFIX}{name}={shown(raw)!r}: a Maildir URL needs an absolute path "
            "(maildir:///var/mail/outbox)."
        )
    return MailURL(scheme="maildir", path=Path(unquote(parts.path)))


def _smtp_url(parts: SplitResult, raw: str, name: str) -> MailURL:
    """An ``smtp://`` or ``smtps://`` URL: a host, a port, a login, and its options."""
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"{PREFIX}{name}={shown(raw)!r} has a port that is not a number."
        ) from None
    if not parts.hostname:
        raise ConfigError(f"{PREFIX}{name}={shown(raw)!r} does not name a host.")
    starttls, timeout = _smtp_options(parts.query, raw, name)
    if parts.scheme == "smtps" and starttls:
        raise ConfigError(f"{PREFIX}{name}={shown(raw)!r}: smtps:// is already TLS; drop starttls.")
    return MailURL(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or (465 if parts.scheme == "smtps" else 25),
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        starttls=starttls,
        timeout=timeout,
    )


def _smtp_options(query_string: str, raw: str, name: str) -> tuple[bool, float]:
    """The ``starttls`` and ``timeout`` options of an SMTP URL; no others are allowed."""
    query = parse_qs(query_string, keep_blank_values=True)
    unknown = set(query) - {"starttls", "timeout"}
    if unknown:
        raise ConfigError(
            f"{PREFIX}{name}={shown(raw)!r} has unknown options: {', '.join(sorted(unknown))}."
        )
    starttls_raw = query.get("starttls", ["0"])[-1].lower()
    if starttls_raw not in YES | NO:
        raise ConfigError(f"{PREFIX}{name}={shown(raw)!r}: starttls must be 1 or 0.")
    try:
        timeout = float(query.get("timeout", ["30"])[-1])
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(
            f"{PREFIX}{name}={shown(raw)!r}: timeout must be a positive number of seconds."
        )
    return starttls_raw in YES, timeout


def parse_base_url(raw: str) -> str:
    """GAZETTE_BASE_URL: an http(s) URL, without its trailing slash."""
    parts = _split(raw, "BASE_URL")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{PREFIX}BASE_URL={raw!r} is not an http(s) URL.")
    return raw.rstrip("/")


def parse_broker_url(raw: str | None) -> str | None:
    """GAZETTE_BROKER_URL: a Redis URL, or None (tasks run in-process)."""
    if raw is None:
        return None
    if _split(raw, "BROKER_URL").scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"{PREFIX}BROKER_URL={shown(raw)!r} is not a Redis URL (redis://host:6379/0)."
        )
    return raw
