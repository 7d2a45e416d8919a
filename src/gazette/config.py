"""Settings: the one place that reads the environment.

Every value comes from a ``GAZETTE_*`` variable, read by a strict helper that fails at
start with one sentence naming the variable and the value, so a typo never surfaces
later as a traceback in a worker.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from dkim.crypto import parse_pem_private_key
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from gazette.errors import ConfigError

PREFIX = "GAZETTE_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


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


@dataclass(frozen=True)
class Settings:
    """Every setting Gazette has, typed, with the embedded defaults."""

    database_url: str
    broker_url: str | None
    smtp: MailURL
    base_url: str
    from_address: str
    secret_keys: tuple[str, ...]
    template_dir: Path | None
    var_dir: Path
    batch_size: int = 500
    lease_seconds: int = 600
    smtputf8: bool = False
    proxy_hops: int = 0
    subscribe_limit_per_ip: int = 20
    subscribe_limit_per_address: int = 5
    send_rate: int = 0
    messages_per_connection: int = 1000
    queue: str = "gazette"
    beat_interval: int = 60
    dkim_key: bytes | None = None
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    # The name given with GAZETTE_FROM_ADDRESS ("Name <address>"), or none.
    from_name: str = ""

    @property
    def eager(self) -> bool:
        """Tasks run in-process when no broker is configured (the embedded default)."""
        return self.broker_url is None

    @property
    def sender(self) -> str:
        """The default sender as one value: ``Name <address>``, or the bare address."""
        from gazette.senders import Sender

        return Sender(self.from_name, self.from_address).stored

    @property
    def database_url_redacted(self) -> str:
        """Return the database URL without its password, for messages and logs."""
        return make_url(self.database_url).render_as_string(hide_password=True)


_USERINFO_PASSWORD = re.compile(r"(://[^/@:]*:)[^@/]*@")


def _shown(raw: str) -> str:
    """The value as error messages show it: a password in a URL is masked."""
    return _USERINFO_PASSWORD.sub(r"\1***@", raw)


def _split(raw: str, name: str) -> SplitResult:
    try:
        return urlsplit(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={_shown(raw)!r} is not a valid URL.") from None


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(PREFIX + name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not a whole number.") from None
    if value < minimum:
        raise ConfigError(f"{PREFIX}{name}={raw!r} must be at least {minimum}.")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(PREFIX + name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{PREFIX}{name}={raw!r} is not a yes/no value (use 1 or 0).")


def parse_database_url(raw: str, name: str = "DATABASE_URL") -> str:
    """Check a database URL and pin the driver Gazette supports for its dialect."""
    try:
        url: URL = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigError(f"{PREFIX}{name}={_shown(raw)!r} is not a database URL.") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.drivername != "sqlite":
            raise ConfigError(f"{PREFIX}{name}={_shown(raw)!r}: use the plain sqlite:/// scheme.")
        if not url.database or url.database == ":memory:":
            raise ConfigError(
                f"{PREFIX}{name}={_shown(raw)!r} must name a database file (sqlite:///path/to/file.db)."
            )
        return url.render_as_string(hide_password=False)
    if backend == "postgresql":
        if url.drivername not in ("postgresql", "postgresql+psycopg"):
            raise ConfigError(
                f"{PREFIX}{name}={_shown(raw)!r}: Gazette talks to PostgreSQL through psycopg 3 "
                "(postgresql+psycopg://)."
            )
        if not url.database:
            raise ConfigError(f"{PREFIX}{name}={_shown(raw)!r} does not name a database.")
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ConfigError(
        f"{PREFIX}{name}={_shown(raw)!r} names an unsupported database; use sqlite:/// or postgresql://."
    )


def parse_mail_url(raw: str, name: str = "SMTP_URL") -> MailURL:
    """Parse ``maildir:///abs/path``, ``smtp://user:pass@host:587?starttls=1`` or ``smtps://``."""
    parts = _split(raw, name)
    if parts.scheme == "maildir":
        if parts.netloc or not parts.path.startswith("/"):
            raise ConfigError(
                f"{PREFIX}{name}={_shown(raw)!r}: a Maildir URL needs an absolute path "
                "(maildir:///var/mail/outbox)."
            )
        return MailURL(scheme="maildir", path=Path(unquote(parts.path)))
    if parts.scheme in ("smtp", "smtps"):
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(
                f"{PREFIX}{name}={_shown(raw)!r} has a port that is not a number."
            ) from None
        if not parts.hostname:
            raise ConfigError(f"{PREFIX}{name}={_shown(raw)!r} does not name a host.")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = set(query) - {"starttls", "timeout"}
        if unknown:
            raise ConfigError(
                f"{PREFIX}{name}={_shown(raw)!r} has unknown options: {', '.join(sorted(unknown))}."
            )
        starttls_raw = query.get("starttls", ["0"])[-1].lower()
        if starttls_raw not in _TRUE | _FALSE:
            raise ConfigError(f"{PREFIX}{name}={_shown(raw)!r}: starttls must be 1 or 0.")
        try:
            timeout = float(query.get("timeout", ["30"])[-1])
        except ValueError:
            timeout = math.nan
        if not (math.isfinite(timeout) and timeout > 0):
            raise ConfigError(
                f"{PREFIX}{name}={_shown(raw)!r}: timeout must be a positive number of seconds."
            )
        if parts.scheme == "smtps" and starttls_raw in _TRUE:
            raise ConfigError(
                f"{PREFIX}{name}={_shown(raw)!r}: smtps:// is already TLS; drop starttls."
            )
        return MailURL(
            scheme=parts.scheme,
            host=parts.hostname,
            port=port or (465 if parts.scheme == "smtps" else 25),
            username=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            starttls=starttls_raw in _TRUE,
            timeout=timeout,
        )
    raise ConfigError(
        f"{PREFIX}{name}={_shown(raw)!r} is not a mail URL; use maildir:///path, smtp://host:port "
        "or smtps://host:port."
    )


def _base_url(raw: str) -> str:
    parts = _split(raw, "BASE_URL")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{PREFIX}BASE_URL={raw!r} is not an http(s) URL.")
    return raw.rstrip("/")


def _broker_url(raw: str | None) -> str | None:
    if raw is None:
        return None
    if _split(raw, "BROKER_URL").scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"{PREFIX}BROKER_URL={_shown(raw)!r} is not a Redis URL (redis://host:6379/0)."
        )
    return raw


def _from_address(raw: str) -> tuple[str, str]:
    """The sender name (may be empty) and bare address of GAZETTE_FROM_ADDRESS."""
    # Imported here so importing config stays cheap for tools that only read settings.
    from gazette.senders import parse_sender

    sender = parse_sender(raw, f"{PREFIX}FROM_ADDRESS")
    return sender.name, sender.address


# The example key in .env.example: a copy of it signs links anyone could forge.
PLACEHOLDER_SECRET = "change-me-to-a-long-random-string"  # noqa: S105 (refused, never used)


def _secret_keys(raw: str) -> tuple[str, ...]:
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


def _queue(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", raw):
        raise ConfigError(f"{PREFIX}QUEUE={raw!r} must be letters, digits, dots, dashes.")
    return raw


_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
_SELECTOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _dkim(env: Mapping[str, str], from_address: str) -> tuple[bytes | None, str | None, str | None]:
    """DKIM key, selector and domain: all set together, or none (no signing)."""
    key_file, selector = _get(env, "DKIM_KEY_FILE"), _get(env, "DKIM_SELECTOR")
    if key_file is None and selector is None:
        return None, None, None
    if key_file is None or selector is None:
        raise ConfigError(
            f"{PREFIX}DKIM_KEY_FILE and {PREFIX}DKIM_SELECTOR go together; set both or neither."
        )
    if not _SELECTOR.match(selector):
        raise ConfigError(f"{PREFIX}DKIM_SELECTOR={selector!r} is not a DNS label.")
    try:
        key = Path(key_file).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{PREFIX}DKIM_KEY_FILE={key_file!r} cannot be read ({exc.strerror})."
        ) from None
    try:
        parse_pem_private_key(key)
    except Exception:  # dkimpy raises several kinds for a key it cannot read
        raise ConfigError(f"{PREFIX}DKIM_KEY_FILE={key_file!r} is not a PEM private key.") from None
    raw_domain = _get(env, "DKIM_DOMAIN") or from_address.rpartition("@")[2]
    try:
        domain = raw_domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        domain = ""
    if not _HOSTNAME.match(domain):
        raise ConfigError(f"{PREFIX}DKIM_DOMAIN={raw_domain!r} is not a domain name.")
    return key, selector, domain


def load_settings(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Read and check every setting; raise ConfigError naming the first bad one.

    The embedded defaults put everything under ``./var``: a SQLite file, and a Maildir
    outbox as the mail transport; with no broker, tasks run in-process.
    """
    env = os.environ if env is None else env
    base = (cwd or Path.cwd()).resolve()
    var_dir = Path(_get(env, "VAR_DIR") or base / "var").resolve()
    default_db = f"sqlite:///{var_dir / 'gazette.db'}"
    database_url = parse_database_url(_get(env, "DATABASE_URL") or default_db)
    smtp = parse_mail_url(_get(env, "SMTP_URL") or f"maildir://{var_dir / 'outbox'}")
    keys_raw = _get(env, "SECRET_KEYS")
    if keys_raw is None:
        secret_keys: tuple[str, ...] = (_embedded_secret(var_dir),)
    else:
        secret_keys = _secret_keys(keys_raw)
    from_name, from_address = _from_address(
        _get(env, "FROM_ADDRESS") or "newsletter@localhost.localdomain"
    )
    dkim_key, dkim_selector, dkim_domain = _dkim(env, from_address)
    template_raw = _get(env, "TEMPLATE_DIR")
    template_dir = Path(template_raw).resolve() if template_raw else None
    if template_dir is not None and not template_dir.is_dir():
        raise ConfigError(f"{PREFIX}TEMPLATE_DIR={template_raw!r} is not a folder.")
    return Settings(
        database_url=database_url,
        broker_url=_broker_url(_get(env, "BROKER_URL")),
        smtp=smtp,
        base_url=_base_url(_get(env, "BASE_URL") or "http://localhost:8000"),
        from_address=from_address,
        from_name=from_name,
        dkim_key=dkim_key,
        dkim_selector=dkim_selector,
        dkim_domain=dkim_domain,
        secret_keys=secret_keys,
        template_dir=template_dir,
        var_dir=var_dir,
        batch_size=_int(env, "BATCH_SIZE", 500),
        lease_seconds=_int(env, "LEASE_SECONDS", 600, minimum=10),
        smtputf8=_bool(env, "SMTPUTF8", False),
        proxy_hops=_int(env, "PROXY_HOPS", 0, minimum=0),
        subscribe_limit_per_ip=_int(env, "SUBSCRIBE_LIMIT_PER_IP", 20),
        subscribe_limit_per_address=_int(env, "SUBSCRIBE_LIMIT_PER_ADDRESS", 5),
        send_rate=_int(env, "SEND_RATE", 0, minimum=0),
        queue=_queue(_get(env, "QUEUE") or "gazette"),
        beat_interval=_int(env, "BEAT_INTERVAL", 60),
        messages_per_connection=_int(env, "MESSAGES_PER_CONNECTION", 1000),
    )


def _embedded_secret(var_dir: Path) -> str:
    """Return the secret kept in ``var/secret.key``, creating it on first use.

    The embedded default must sign links that survive a restart without the operator
    choosing a key; production sets GAZETTE_SECRET_KEYS instead. The file appears
    complete or not at all (written aside, then hard-linked into place), so a second
    process starting at the same moment never reads it half-written.
    """
    import secrets

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
