"""A real Dovecot IMAP server of the test's own (Debian's dovecot-imapd) on loopback.

The instance has its own config file, base_dir, state and log; the system's Dovecot is
never read or touched (every command names the instance's config with -c). It listens
on 127.0.0.1 on a free port, plain IMAP (``imap://``) or IMAP over TLS (``imaps://``,
a self-signed certificate made here with ``cryptography``), with one user in a
passwd-file whose mail is a Maildir under the instance's folder. ``capabilities``
replaces what the server announces after login (to leave MOVE out, say). Its log is
printed when it stops, so a failing test shows it.

As root, mail is stored as the ``mail`` user (Dovecot refuses mail access as root);
otherwise every process runs as the user running the tests.
"""

from __future__ import annotations

import datetime
import grp
import imaplib
import ipaddress
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.smtp import free_port
from tests.support.workers import wait_for

DOVECOT = Path("/usr/sbin/dovecot")
USER = "bounces"
PASSWORD = "imap-secret-0123"
START_TIMEOUT = 15.0


def require_dovecot() -> None:
    """Skip the test, saying why, when Debian's dovecot-imapd is not installed."""
    if not DOVECOT.exists() or not Path("/usr/lib/dovecot/imap").exists():
        pytest.skip(f"Dovecot is not installed ({DOVECOT}): apt-get install dovecot-imapd")


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (P-256), as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


@dataclass
class Dovecot:
    """One Dovecot instance: its folder, its port, plain or TLS."""

    folder: Path
    secure: bool = False
    capabilities: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The imap(s):// URL of the user's INBOX."""
        return self.url_for("INBOX")

    def url_for(self, folder: str, password: str = PASSWORD) -> str:
        scheme = "imaps" if self.secure else "imap"
        return f"{scheme}://{USER}:{password}@127.0.0.1:{self.port}/{folder}"

    @property
    def cert(self) -> Path:
        """The server's certificate: the CA a client must trust (SSL_CERT_FILE)."""
        return self.folder / "cert.pem"

    @property
    def maildir(self) -> Path:
        """The user's Maildir (Maildir++: a folder ``A.B`` is ``.A.B/``)."""
        return self.folder / "mail" / USER

    @property
    def log_file(self) -> Path:
        return self.folder / "dovecot.log"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def users(self) -> tuple[str, str, int, int]:
        """Internal user, login user, and the uid and gid mail is stored as."""
        if os.geteuid() == 0:
            mail = pwd.getpwnam("mail")
            return "dovecot", "dovenull", mail.pw_uid, mail.pw_gid
        me = pwd.getpwuid(os.geteuid())
        return me.pw_name, me.pw_name, me.pw_uid, me.pw_gid

    def config(self) -> str:
        internal, login, uid, gid = self.users()
        ssl = (
            f"ssl = required\nssl_cert = <{self.folder / 'cert.pem'}\n"
            f"ssl_key = <{self.folder / 'key.pem'}\n"
            if self.secure
            else "ssl = no\n"
        )
        listener = "imaps" if self.secure else "imap"
        other = "imap" if self.secure else "imaps"
        capability = f"imap_capability = {self.capabilities}\n" if self.capabilities else ""
        group = grp.getgrgid(gid).gr_name
        return f"""\
protocols = imap
listen = 127.0.0.1
instance_name = gazette-test-{self.port}
base_dir = {self.folder / "run"}
state_dir = {self.folder / "state"}
log_path = {self.log_file}
info_log_path = {self.log_file}
default_internal_user = {internal}
default_internal_group = {grp.getgrgid(pwd.getpwnam(internal).pw_gid).gr_name}
default_login_user = {login}
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:{self.folder / "mail"}/%u
{ssl}{capability}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.folder / "passwd"}
}}
userdb {{
  driver = static
  args = uid={uid} gid={group} home={self.folder / "home"}/%u
}}
service imap-login {{
  inet_listener {listener} {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener {other} {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""

    def start(self) -> None:
        """Write the config and the user, start dovecot in the foreground, wait for its greeting."""
        _internal, _login, uid, gid = self.users()
        for sub in ("run", "state", "home", "mail"):
            (self.folder / sub).mkdir()
        for owned in (self.folder / "home", self.folder / "mail"):
            os.chown(owned, uid, gid)
        (self.folder / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        (self.folder / "passwd").chmod(0o644)
        if self.secure:
            self_signed(self.folder)
            self.cert.chmod(0o644)
        (self.folder / "dovecot.conf").write_text(self.config())
        self.process = subprocess.Popen(
            [str(DOVECOT), "-F", "-c", str(self.folder / "dovecot.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            wait_for(self.greets, START_TIMEOUT, f"Dovecot to greet on port {self.port}")
        except AssertionError as error:
            self.stop()
            raise AssertionError(f"{error}; Dovecot's log:\n{self.log()}") from None

    def greets(self) -> bool:
        """Whether the port answers a connection (the greeting is inside TLS for imaps)."""
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"dovecot exited: {self.process.stderr and self.process.stderr.read()!r}"
            )
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the master (it stops its services) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@contextmanager
def running_dovecot(*, secure: bool = False, capabilities: str | None = None) -> Iterator[Dovecot]:
    """A started Dovecot instance; stopped and its folder removed at the end, its log printed."""
    require_dovecot()
    folder = Path(tempfile.mkdtemp(prefix="gazette-dovecot-"))
    folder.chmod(0o755)  # its services run as other users
    instance = Dovecot(folder, secure=secure, capabilities=capabilities)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        print(f"--- Dovecot's log ({folder}) ---\n{instance.log()}")
        if instance.process is not None and instance.process.stderr is not None:
            instance.process.stderr.close()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def imap(server: Dovecot) -> Iterator[imaplib.IMAP4]:
    """The test's own IMAP session with the server (imap:// only)."""
    client = imaplib.IMAP4("127.0.0.1", server.port)
    client.login(USER, PASSWORD)
    try:
        yield client
    finally:
        client.logout()


def append(server: Dovecot, *messages: bytes, folder: str = "INBOX") -> None:
    """Store ``messages`` in ``folder`` over IMAP, as a delivery would."""
    with imap(server) as client:
        for raw in messages:
            typ, said = client.append(folder, None, None, raw)
            assert typ == "OK", said


def contents(server: Dovecot, folder: str) -> list[bytes]:
    """Every message in ``folder``, in order; [] when it does not exist."""
    with imap(server) as client:
        typ, _ = client.select(f'"{folder}"', readonly=True)
        if typ != "OK":
            return []
        _typ, found = client.uid("SEARCH", "ALL")
        messages = []
        for uid in (found[0] or b"").decode().split():
            _typ, data = client.uid("FETCH", uid, "(BODY.PEEK[])")
            messages += [part[1] for part in data if isinstance(part, tuple)]
        return messages
