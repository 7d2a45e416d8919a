"""Where the bounce address's mail is read from: a Maildir path, or an imap(s):// URL.

Parsed from one string (``--imap``, or ``GAZETTE_BOUNCE_MAILBOX``, which config only
reads) with one sentence naming the value when it is wrong. The password never appears
in a message or a log: every sentence names the URL with it masked as ``***``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gazette.errors import ConfigError

IMAP_PORT = 143
IMAPS_PORT = 993
IMAP_SCHEMES = ("imap", "imaps")
SHAPE = "imaps://user:password@host[:port]/FOLDER"


@dataclass(frozen=True)
class ImapURL:
    """An IMAP mailbox: server, login and the folder the bounce address's mail lands in."""

    secure: bool
    user: str
    host: str
    port: int
    folder: str
    # Kept out of repr(), so a logged or printed value never shows it.
    password: str = field(repr=False)

    @property
    def server(self) -> str:
        """The URL without its folder, the password masked: ``imaps://ada:***@host``."""
        scheme = "imaps" if self.secure else "imap"
        default = IMAPS_PORT if self.secure else IMAP_PORT
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == default else f":{self.port}"
        return f"{scheme}://{self.user}:***@{host}{port}"

    @property
    def masked(self) -> str:
        """The URL with its password replaced by ``***``, for messages and logs."""
        return f"{self.server}/{self.folder}"

    def __str__(self) -> str:
        return self.masked


Mailbox = Path | ImapURL


def is_imap_url(raw: str) -> bool:
    """Whether ``raw`` names an IMAP mailbox (imap:// or imaps://) rather than a path."""
    return raw.strip().lower().partition("://")[0] in IMAP_SCHEMES and "://" in raw


def mask(raw: str) -> str:
    """``raw`` with whatever stands between ``user:`` and the last ``@`` shown as ``***``."""
    scheme, sep, rest = raw.partition("://")
    userinfo, at, place = rest.rpartition("@")
    if not (sep and at and ":" in userinfo):
        return raw
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{place}"


def parse_imap_url(raw: str, label: str = "--imap") -> ImapURL:
    """``raw`` as an ImapURL, or ConfigError naming ``label`` and the URL, password masked.

    Plain ``imap://`` is refused to any host but a loopback address: LOGIN would send
    the password in clear across the network.
    """
    value = raw.strip()
    shown = f"{label} {mask(value)!r}"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{shown} is not an IMAP URL ({SHAPE}).") from None
    scheme = parts.scheme.lower()
    if scheme not in IMAP_SCHEMES or not parts.hostname:
        raise ConfigError(f"{shown} is not an IMAP URL ({SHAPE}).")
    if not parts.username or parts.password is None:
        raise ConfigError(f"{shown} has no user name and password ({SHAPE}).")
    if parts.query or parts.fragment:
        raise ConfigError(f"{shown} has a ? or # part; write the folder as its path ({SHAPE}).")
    secure = scheme == "imaps"
    if not secure and not _loopback(parts.hostname):
        raise ConfigError(
            f"{shown} would send the password in clear to {parts.hostname}: use imaps:// "
            "(plain imap:// is accepted only to a loopback address)."
        )
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    if any(ord(c) < 32 or ord(c) > 126 for c in folder):
        raise ConfigError(f"{shown} names a folder that is not printable ASCII.")
    return ImapURL(
        secure=secure, user=unquote(parts.username), host=parts.hostname,
        port=port or (IMAPS_PORT if secure else IMAP_PORT), folder=folder,
        password=unquote(parts.password),
    )  # fmt: skip


def parse_mailbox(raw: str, label: str) -> Mailbox:
    """An imap(s):// URL, or the path of a Maildir that exists (absolute); else ConfigError."""
    if is_imap_url(raw):
        return parse_imap_url(raw, label)
    path = Path(raw.strip()).expanduser()
    if not (path / "new").is_dir() or not (path / "cur").is_dir():
        raise ConfigError(
            f"{label}={raw!r} is neither a Maildir (a folder with new/ and cur/ in it) "
            f"nor an IMAP URL ({SHAPE})."
        )
    return path.resolve()


def _loopback(host: str) -> bool:
    """Whether ``host`` is this machine: ``localhost`` or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
