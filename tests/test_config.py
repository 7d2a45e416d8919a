"""Settings from GAZETTE_* variables: embedded defaults, strict checks, one-sentence errors."""

from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import quote

import pytest

from gazette.config import Settings, load_settings
from gazette.errors import ConfigError
from gazette.url_settings import MailURL, parse_database_url, parse_mail_url

GOOD_KEY = "a-good-secret-key-0123456789"


def load(tmp_path: Path, **variables: str) -> Settings:
    return load_settings({f"GAZETTE_{k}": v for k, v in variables.items()}, cwd=tmp_path)


# --- embedded defaults -----------------------------------------------------------------


def test_defaults_put_everything_under_var(tmp_path: Path) -> None:
    settings = load_settings({}, cwd=tmp_path)
    var = tmp_path.resolve() / "var"
    assert settings.var_dir == var
    assert settings.database_url == f"sqlite:///{var / 'gazette.db'}"
    assert settings.smtp == MailURL(scheme="maildir", path=var / "outbox")
    assert settings.broker_url is None
    assert settings.eager is True
    assert settings.base_url == "http://localhost:8000"
    assert settings.from_address == "newsletter@localhost.localdomain"
    assert settings.template_dir is None
    assert settings.batch_size == 500
    assert settings.lease_seconds == 600
    assert settings.smtputf8 is False
    assert len(settings.secret_keys) == 1


def test_blank_values_count_as_unset(tmp_path: Path) -> None:
    settings = load(tmp_path, DATABASE_URL="  ", SMTP_URL="", BATCH_SIZE=" ", BROKER_URL="")
    assert settings.database_url.endswith("/var/gazette.db")
    assert settings.smtp.scheme == "maildir"
    assert settings.batch_size == 500
    assert settings.eager is True


def test_var_dir_moves_the_defaults(tmp_path: Path) -> None:
    elsewhere = tmp_path / "data"
    settings = load(tmp_path, VAR_DIR=str(elsewhere))
    assert settings.database_url == f"sqlite:///{elsewhere.resolve() / 'gazette.db'}"
    assert settings.smtp.path == elsewhere.resolve() / "outbox"
    assert (elsewhere / "secret.key").is_file()
    assert not (tmp_path / "var").exists()


def test_reads_os_environ_when_no_mapping_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAZETTE_BATCH_SIZE", "37")
    monkeypatch.setenv("GAZETTE_SECRET_KEYS", GOOD_KEY)
    monkeypatch.setenv("GAZETTE_VAR_DIR", str(tmp_path / "var"))
    settings = load_settings(cwd=tmp_path)
    assert settings.batch_size == 37
    assert settings.secret_keys == (GOOD_KEY,)


# --- the embedded secret key -------------------------------------------------------------


def test_secret_key_file_is_created_once_private_and_reused(tmp_path: Path) -> None:
    first = load_settings({}, cwd=tmp_path)
    path = tmp_path / "var" / "secret.key"
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (key,) = first.secret_keys
    assert len(key) >= 32
    assert path.read_text() == key + "\n"
    before = path.stat()

    second = load_settings({}, cwd=tmp_path)
    assert second.secret_keys == (key,)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    other = load_settings({}, cwd=tmp_path / "other")
    assert other.secret_keys != (key,)


def test_an_existing_secret_key_file_is_used_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret.key").write_text("an-operator-chosen-key-42\n")
    assert load_settings({}, cwd=tmp_path).secret_keys == ("an-operator-chosen-key-42",)


def test_an_empty_secret_key_file_never_becomes_the_signing_key(tmp_path: Path) -> None:
    # What a second process sees while the first is between os.open(O_EXCL) and write():
    # an empty file. Signing links with an empty key would make every token forgeable.
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret.key").write_text("")
    try:
        keys = load_settings({}, cwd=tmp_path).secret_keys
    except ConfigError:
        return
    assert all(len(key) >= 16 for key in keys), keys


def test_configured_keys_are_used_newest_first_and_no_file_is_written(tmp_path: Path) -> None:
    settings = load(tmp_path, SECRET_KEYS=" new-key-0123456789abcdef , old-key-0123456789abcdef ,")
    assert settings.secret_keys == ("new-key-0123456789abcdef", "old-key-0123456789abcdef")
    assert not (tmp_path / "var" / "secret.key").exists()


@pytest.mark.parametrize(
    "keys", ["too-short", f"{GOOD_KEY},short-key", " , ,", f"{GOOD_KEY},0123456789abcde"]
)
def test_short_secret_keys_are_rejected_without_echoing_them(tmp_path: Path, keys: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, SECRET_KEYS=keys)
    message = str(caught.value)
    assert "GAZETTE_SECRET_KEYS" in message
    assert "16" in message
    # A secret must not end up in logs: the message names the variable, not the keys.
    for key in keys.split(","):
        if key.strip():
            assert key.strip() not in message


# --- malformed values ----------------------------------------------------------------------

MALFORMED = [
    ("DATABASE_URL", "mysql://nobody@db.example.org/gazette"),
    ("DATABASE_URL", "sqlite:///:memory:"),
    ("DATABASE_URL", "sqlite://"),
    ("DATABASE_URL", "sqlite+pysqlite:///var/gazette.db"),
    ("DATABASE_URL", "postgresql+psycopg2://u@db.example.org/gazette"),
    ("DATABASE_URL", "postgresql://u@db.example.org"),
    ("DATABASE_URL", "not a url at all"),
    ("DATABASE_URL", "://"),
    ("SMTP_URL", "ftp://mail.example.org"),
    ("SMTP_URL", "maildir://relative/path"),
    ("SMTP_URL", "maildir:relative/path"),
    ("SMTP_URL", "smtp://mail.example.org:notaport"),
    ("SMTP_URL", "smtp://mail.example.org:99999"),
    ("SMTP_URL", "smtp://mail.example.org?tls=1"),
    ("SMTP_URL", "smtp://mail.example.org?starttls=maybe"),
    ("SMTP_URL", "smtp://mail.example.org?timeout=soon"),
    ("SMTP_URL", "smtps://mail.example.org?starttls=1"),
    ("SMTP_URL", "smtp://:587"),
    ("SMTP_URL", "mail.example.org:25"),
    ("BROKER_URL", "http://broker.example.org:6379/0"),
    ("BASE_URL", "ftp://news.example.org"),
    ("BASE_URL", "news.example.org"),
    ("BATCH_SIZE", "0"),
    ("BATCH_SIZE", "-5"),
    ("BATCH_SIZE", "x"),
    ("BATCH_SIZE", "2.5"),
    ("LEASE_SECONDS", "9"),
    ("SMTPUTF8", "maybe"),
    ("TEMPLATE_DIR", "/no/such/folder/for/gazette"),
    ("FROM_ADDRESS", "not-an-address"),
    ("FROM_ADDRESS", "digest@"),
]


@pytest.mark.parametrize(("name", "value"), MALFORMED)
def test_a_malformed_value_names_the_variable_and_the_value(
    tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, SECRET_KEYS=GOOD_KEY, **{name: value})
    message = str(caught.value)
    assert f"GAZETTE_{name}" in message
    assert value in message
    assert "\n" not in message


def test_a_template_dir_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    file = tmp_path / "templates.txt"
    file.write_text("not a folder")
    with pytest.raises(ConfigError, match="GAZETTE_TEMPLATE_DIR"):
        load(tmp_path, TEMPLATE_DIR=str(file))


# Typos that must still fail at start as ConfigError, never as a traceback later.
TYPOS = [
    ("DATABASE_URL", "postgresql://u@db.example.org:notaport/gazette"),
    ("SMTP_URL", "smtp://[mail.example.org:587"),
    ("BASE_URL", "https://[news.example.org"),
    ("BROKER_URL", "redis://[broker:6379/0"),
    ("SMTP_URL", "smtp://mail.example.org?timeout=-1"),
    ("SMTP_URL", "smtp://mail.example.org?timeout=nan"),
]


@pytest.mark.parametrize(("name", "value"), TYPOS)
def test_a_typo_is_a_config_error_not_a_traceback(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, SECRET_KEYS=GOOD_KEY, **{name: value})
    assert f"GAZETTE_{name}" in str(caught.value)
    assert value in str(caught.value)


# --- good values -------------------------------------------------------------------------


def test_smtp_url_with_credentials_port_and_starttls(tmp_path: Path) -> None:
    settings = load(tmp_path, SMTP_URL="smtp://user:p%40ss@mail.example.org:587?starttls=1")
    assert settings.smtp == MailURL(
        scheme="smtp",
        host="mail.example.org",
        port=587,
        username="user",
        password="p@ss",
        starttls=True,
        timeout=30.0,
    )


@pytest.mark.parametrize(
    ("raw", "scheme", "port", "starttls"),
    [
        ("smtps://mail.example.org", "smtps", 465, False),
        ("smtps://mail.example.org:2465", "smtps", 2465, False),
        ("smtps://mail.example.org?starttls=0", "smtps", 465, False),
        ("smtp://mail.example.org", "smtp", 25, False),
        ("smtp://mail.example.org:2525?starttls=yes", "smtp", 2525, True),
        ("smtp://mail.example.org?starttls=off", "smtp", 25, False),
    ],
)
def test_smtp_default_ports_and_tls(raw: str, scheme: str, port: int, starttls: bool) -> None:
    mail = parse_mail_url(raw)
    assert (mail.scheme, mail.host, mail.port, mail.starttls) == (
        scheme,
        "mail.example.org",
        port,
        starttls,
    )
    assert (mail.username, mail.password) == ("", "")


def test_smtp_timeout_option() -> None:
    assert parse_mail_url("smtp://mail.example.org?timeout=12.5").timeout == 12.5


def test_maildir_url_with_an_absolute_path(tmp_path: Path) -> None:
    mail = parse_mail_url(f"maildir://{tmp_path}/out%20box")
    assert mail == MailURL(scheme="maildir", path=tmp_path / "out box")
    assert mail.redacted() == f"maildir://{tmp_path}/out box"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "postgresql://gazette:pw@db.example.org:5433/gazette",
            "postgresql+psycopg://gazette:pw@db.example.org:5433/gazette",
        ),
        (
            "postgresql+psycopg://gazette@db.example.org/gazette",
            "postgresql+psycopg://gazette@db.example.org/gazette",
        ),
        ("sqlite:////srv/gazette/gazette.db", "sqlite:////srv/gazette/gazette.db"),
    ],
)
def test_good_database_urls(tmp_path: Path, raw: str, expected: str) -> None:
    assert parse_database_url(raw) == expected
    assert load(tmp_path, DATABASE_URL=raw, SECRET_KEYS=GOOD_KEY).database_url == expected


def test_database_url_redacted_hides_the_password(tmp_path: Path) -> None:
    settings = load(tmp_path, DATABASE_URL="postgresql://gazette:s3cr3t-pw@db.example.org/gazette")
    assert "s3cr3t-pw" in settings.database_url
    assert "s3cr3t-pw" not in settings.database_url_redacted
    assert "db.example.org" in settings.database_url_redacted


def test_other_good_values(tmp_path: Path) -> None:
    templates = tmp_path / "my-templates"
    templates.mkdir()
    settings = load(
        tmp_path,
        BROKER_URL="rediss://broker.example.org:6380/1",
        BASE_URL="https://news.example.org/gazette/",
        BATCH_SIZE="25",
        LEASE_SECONDS="10",
        SMTPUTF8="Yes",
        TEMPLATE_DIR=str(templates),
        FROM_ADDRESS=" Digest@News.Example.ORG ",
    )
    assert settings.broker_url == "rediss://broker.example.org:6380/1"
    assert settings.eager is False
    assert settings.base_url == "https://news.example.org/gazette"
    assert settings.batch_size == 25
    assert settings.lease_seconds == 10
    assert settings.smtputf8 is True
    assert settings.template_dir == templates.resolve()
    assert settings.from_address == "Digest@news.example.org"


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("on", True), ("0", False), ("", False)]
)
def test_smtputf8_values(tmp_path: Path, raw: str, expected: bool) -> None:
    assert load(tmp_path, SMTPUTF8=raw).smtputf8 is expected


# --- redaction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password", ["p@ss-word-1", "hunter2-secret", "pa:ss/wo rd?#%", "пароль-секрет", "***x***"]
)
@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
def test_redacted_mail_url_never_contains_the_password(scheme: str, password: str) -> None:
    raw = f"{scheme}://mailer:{quote(password, safe='')}@mail.example.org:2587"
    mail = parse_mail_url(raw)
    assert mail.password == password
    redacted = mail.redacted()
    assert password not in redacted
    assert quote(password, safe="") not in redacted
    assert redacted == f"{scheme}://mailer:***@mail.example.org:2587"


def test_redacted_mail_url_without_credentials() -> None:
    assert parse_mail_url("smtp://mail.example.org").redacted() == "smtp://mail.example.org:25"
