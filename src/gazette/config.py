"""Settings: the one place that reads the environment.

Every value comes from a ``GAZETTE_*`` variable, read by a strict helper that fails at
start with one sentence naming the variable and the value, so a typo never surfaces
later as a traceback in a worker.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict
from urllib.parse import SplitResult, urlsplit

from sqlalchemy.engine import make_url

from gazette import provider_settings
from gazette.deliverability_settings import NAMES as DELIVERABILITY
from gazette.deliverability_settings import Deliverability, parse_deliverability
from gazette.dkim_settings import DkimKeySetting, parse_dkim_keys
from gazette.errors import ConfigError
from gazette.secret_settings import metrics_token, secret_keys_or_embedded
from gazette.url_settings import (
    NO,
    PREFIX,
    YES,
    MailURL,
    parse_base_url,
    parse_broker_url,
    parse_database_url,
    parse_mail_url,
)

if TYPE_CHECKING:
    from gazette.bounces.sources import Mailbox

# Links and the rule when no accent colour is set: the theme's blue (contrast 6.7:1).
DEFAULT_ACCENT = "#1d4ed8"


@dataclass(frozen=True)
class Brand:
    """Who sends a newsletter: name, site, logo, colour, postal address, privacy policy."""

    publisher: str = ""
    website: str = ""
    logo_url: str = ""
    accent_colour: str = ""
    postal_address: str = ""
    privacy_url: str = ""

    @property
    def accent(self) -> str:
        """The colour for links and the header rule: the brand's, or the theme's blue."""
        return self.accent_colour or DEFAULT_ACCENT

    @property
    def address_lines(self) -> list[str]:
        """The postal address, one entry per non-empty line."""
        return [line.strip() for line in self.postal_address.splitlines() if line.strip()]


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
    # DKIM keys by From domain (GAZETTE_DKIM_KEYS and the single-key shorthand); none: unsigned.
    dkim_keys: tuple[DkimKeySetting, ...] = ()
    # The name given with GAZETTE_FROM_ADDRESS ("Name <address>"), or none.
    from_name: str = ""
    # Sending to a distant relay (issue 20): SMTP connections each worker process keeps
    # busy at once, and whether to pipeline commands (RFC 2920) when the relay offers it.
    smtp_connections: int = 10
    smtp_pipelining: bool = True
    # SMTP sessions the whole installation may hold open at once (0: no cap).
    smtp_connections_total: int = 0
    # Where reports on sent mail come back, a VERP token added (mail/verp); None: From.
    bounce_address: str | None = None
    # Reports about sent mail without a valid VERP token change nothing (gazette.bounces).
    bounce_require_verp: bool = False
    # Soft-bounce decay, the rates that pause a newsletter, the Feedback-ID's SenderId.
    deliverability: Deliverability = field(default_factory=Deliverability)
    # The bounce address's mailbox (a Maildir or an IMAP folder) beat reads; and how
    # many days its processed messages, which quote the original, are kept.
    bounce_mailbox: Mailbox | None = None
    bounce_retention_days: int = 30
    # The publisher's brand, the default of every newsletter (each may override it).
    brand: Brand = field(default_factory=Brand)
    # The bearer token GET /metrics asks of a client off loopback (none: loopback only).
    metrics_token: str | None = None
    # GAZETTE_MAIL_PROVIDER and the provider webhooks' credentials (bounces/providers).
    providers: provider_settings.ProviderSettings = field(
        default_factory=provider_settings.ProviderSettings
    )

    @property
    def eager(self) -> bool:
        """Tasks run in-process when no broker is configured (the embedded default)."""
        return self.broker_url is None

    @property
    def sender(self) -> str:
        """The default sender as one value: ``Name <address>``, or the bare address."""
        from gazette.mail.senders import Sender

        return Sender(self.from_name, self.from_address).stored

    @property
    def database_url_redacted(self) -> str:
        """Return the database URL without its password, for messages and logs."""
        return make_url(self.database_url).render_as_string(hide_password=True)


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
    if lowered in YES:
        return True
    if lowered in NO:
        return False
    raise ConfigError(f"{PREFIX}{name}={raw!r} is not a yes/no value (use 1 or 0).")


_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


def check_http_url(raw: str, label: str) -> str:
    """An absolute http(s) URL as given, or ConfigError naming ``label`` and the value.

    The brand's links are shown to every reader: a ``javascript:`` or relative URL
    would be dead or dangerous in every mail client.
    """
    value = raw.strip()
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = SplitResult("", "", "", "", "")
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise ConfigError(f"{label}={raw!r} is not an http(s) URL.")
    return value


def check_colour(raw: str, label: str) -> str:
    """A colour as ``#rrggbb`` (lower-cased), or ConfigError naming ``label`` and the value."""
    value = raw.strip()
    if not _COLOUR.match(value):
        raise ConfigError(f"{label}={raw!r} is not a colour written as #rrggbb.")
    return value.lower()


def _brand(env: Mapping[str, str]) -> Brand:
    """The installation's brand settings, each checked; unset ones are empty."""
    urls = {}
    for field_name, name in (("website", "WEBSITE"), ("logo_url", "LOGO_URL"),
                             ("privacy_url", "PRIVACY_URL")):  # fmt: skip
        raw = _get(env, name)
        urls[field_name] = check_http_url(raw, PREFIX + name) if raw else ""
    colour = _get(env, "ACCENT_COLOUR")
    address = env.get(PREFIX + "POSTAL_ADDRESS", "").strip()
    return Brand(
        publisher=" ".join((_get(env, "PUBLISHER") or "").split()),
        accent_colour=check_colour(colour, PREFIX + "ACCENT_COLOUR") if colour else "",
        # A postal address keeps its lines; "\\n" lets one environment line hold several.
        postal_address=address.replace("\\n", "\n"),
        **urls,
    )


def _from_address(raw: str) -> tuple[str, str]:
    """The sender name (may be empty) and bare address of GAZETTE_FROM_ADDRESS."""
    # Imported here so importing config stays cheap for tools that only read settings.
    from gazette.mail.senders import parse_sender

    sender = parse_sender(raw, f"{PREFIX}FROM_ADDRESS")
    return sender.name, sender.address


def _queue(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", raw):
        raise ConfigError(f"{PREFIX}QUEUE={raw!r} must be letters, digits, dots, dashes.")
    return raw


def _dkim(env: Mapping[str, str], from_address: str) -> tuple[DkimKeySetting, ...]:
    """The DKIM keys: GAZETTE_DKIM_KEYS, plus the single key of GAZETTE_DKIM_KEY_FILE."""
    return parse_dkim_keys(
        _get(env, "DKIM_KEYS"), _get(env, "DKIM_KEY_FILE"), _get(env, "DKIM_SELECTOR"),
        _get(env, "DKIM_DOMAIN"), from_address,
    )  # fmt: skip


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
    secret_keys = secret_keys_or_embedded(_get(env, "SECRET_KEYS"), var_dir)
    from_name, from_address = _from_address(
        _get(env, "FROM_ADDRESS") or "newsletter@localhost.localdomain"
    )
    dkim_keys = _dkim(env, from_address)
    from gazette.mail.verp import check_bounce_address  # here, so importing config stays cheap

    template_dir = _template_dir(env)
    return Settings(
        database_url=database_url,
        broker_url=parse_broker_url(_get(env, "BROKER_URL")),
        smtp=smtp,
        base_url=parse_base_url(_get(env, "BASE_URL") or "http://localhost:8000"),
        from_address=from_address,
        from_name=from_name,
        dkim_keys=dkim_keys,
        secret_keys=secret_keys,
        bounce_address=check_bounce_address(_get(env, "BOUNCE_ADDRESS")),
        bounce_require_verp=_bool(env, "BOUNCE_REQUIRE_VERP", False),
        deliverability=parse_deliverability({name: _get(env, name) for name in DELIVERABILITY}),
        bounce_mailbox=_bounce_mailbox(_get(env, "BOUNCE_MAILBOX")),
        bounce_retention_days=_int(env, "BOUNCE_RETENTION_DAYS", 30),
        template_dir=template_dir,
        var_dir=var_dir,
        **_tuning(env),
        brand=_brand(env),
        metrics_token=metrics_token(_get(env, "METRICS_TOKEN")),
        providers=provider_settings.parse({n: _get(env, n) for n in provider_settings.VARIABLES}),
    )


class _Tuning(TypedDict):
    """The settings that tune batches, limits, the worker and the SMTP sessions."""

    batch_size: int
    lease_seconds: int
    smtputf8: bool
    proxy_hops: int
    subscribe_limit_per_ip: int
    subscribe_limit_per_address: int
    send_rate: int
    queue: str
    beat_interval: int
    messages_per_connection: int
    smtp_connections: int
    smtp_pipelining: bool
    smtp_connections_total: int


def _tuning(env: Mapping[str, str]) -> _Tuning:
    """Read the tuning settings, each checked, in the order their errors are reported."""
    return _Tuning(
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
        smtp_connections=_smtp_connections(env),
        smtp_pipelining=_bool(env, "SMTP_PIPELINING", True),
        smtp_connections_total=_int(env, "SMTP_CONNECTIONS_TOTAL", 0, minimum=0),
    )


def _bounce_mailbox(raw: str | None) -> Mailbox | None:
    """GAZETTE_BOUNCE_MAILBOX, parsed by the bounces package (imported only when set)."""
    from gazette.bounces.sources import parse_mailbox

    return parse_mailbox(raw, PREFIX + "BOUNCE_MAILBOX") if raw else None


def _template_dir(env: Mapping[str, str]) -> Path | None:
    """GAZETTE_TEMPLATE_DIR as an absolute folder that exists, or None."""
    template_raw = _get(env, "TEMPLATE_DIR")
    template_dir = Path(template_raw).resolve() if template_raw else None
    if template_dir is not None and not template_dir.is_dir():
        raise ConfigError(f"{PREFIX}TEMPLATE_DIR={template_raw!r} is not a folder.")
    return template_dir


# More connections than this per process would be a typo, not a relay's limit.
MAX_SMTP_CONNECTIONS = 100


def _smtp_connections(env: Mapping[str, str]) -> int:
    """GAZETTE_SMTP_CONNECTIONS: a whole number from 1 to MAX_SMTP_CONNECTIONS."""
    value = _int(env, "SMTP_CONNECTIONS", 10)
    if value > MAX_SMTP_CONNECTIONS:
        raise ConfigError(
            f"{PREFIX}SMTP_CONNECTIONS={_get(env, 'SMTP_CONNECTIONS')!r} must be at most "
            f"{MAX_SMTP_CONNECTIONS} (connections per worker process)."
        )
    return value
