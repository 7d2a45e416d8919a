"""A real Postfix of the test's own (Debian's package) on loopback, whose DSNs land in a Maildir.

The instance has its own config directory, queue and logs; the system's Postfix service
is never touched (every command names the instance's config directory with -c). Its smtpd
listens on 127.0.0.1 on a free port and accepts mail from loopback; each reader domain
in ``routes`` is relayed to a loopback port (a scripted aiosmtpd, or a closed port),
every other destination fails at once through the error transport, so no message ever
leaves the machine and no DNS is asked. The bounce domain is delivered by virtual(8) to
one Maildir, the extension after "+" stripped for the lookup (recipient_delimiter), as
an operator would set up VERP. With maximal_queue_lifetime=0 and 1 s backoffs Postfix
tries each message once and mails its own DSN back to the envelope sender at once.

Postfix's master must start as root (its services then run as mail_owner, "postfix"):
the tests run as root in CI. Its directory is made under the system's temporary folder,
not pytest's tmp_path, because pytest's base folder is private to root and the services
running as "postfix" must reach the queue and the Maildir; the maillog is copied into
the test's folder when the instance stops, and printed, so a failing test shows it.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.smtp import free_port
from tests.support.workers import wait_for

POSTFIX = Path("/usr/sbin/postfix")
MASTER = Path("/usr/lib/postfix/sbin/master")
MAIL_OWNER = "postfix"
BOUNCE_MAILBOX = "bounces"
# How long the instance may take to answer on its port after `postfix start` returns.
START_TIMEOUT = 15.0

# Every service the instance needs (postfix.org master(5)); chroot off, since the
# instance's directory is not a chroot jail, and no pickup: nothing uses sendmail.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
virtual   unix - n n - - virtual
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def require_postfix() -> None:
    """Skip the test, saying why, when Debian's postfix is not installed or cannot start."""
    if not (POSTFIX.exists() and MASTER.exists()):
        pytest.skip(f"Postfix is not installed ({POSTFIX} and {MASTER}): apt-get install postfix")
    if os.geteuid() != 0:
        pytest.skip("Postfix's postfix and master commands are reserved for the superuser")


# The log lines that tell a message's story (postfix.org/OVERVIEW.html, qmgr(8), smtp(8)).
_ENTERED = re.compile(
    r"\]: ([0-9A-F]+): (?:client=|message-id=)|notification: ([0-9A-F]+)$", re.MULTILINE
)
_SENDER = re.compile(r"\]: ([0-9A-F]+): from=<([^>]*)>, size=", re.MULTILINE)
_ATTEMPT = re.compile(
    r"\]: ([0-9A-F]+): to=<([^>]*)>, .*?dsn=([0-9.]+), status=(\w+)", re.MULTILINE
)
_EXPIRED = re.compile(r"\]: ([0-9A-F]+): from=<[^>]*>, status=expired", re.MULTILINE)
_REMOVED = re.compile(r"\]: ([0-9A-F]+): removed$", re.MULTILINE)


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt the log records: the recipient, its DSN code and status."""

    recipient: str
    dsn: str
    status: str  # sent, bounced, deferred


@dataclass
class Queued:
    """One message in the instance's queue, as its log tells it."""

    queue_id: str
    sender: str | None = None  # None until the queue manager has logged it
    attempts: list[Attempt] = field(default_factory=list)
    expired: bool = False  # returned to its sender when its lifetime (0) ran out
    removed: bool = False  # out of the queue: delivered, or bounced and its DSN queued


def queue_story(log: str) -> dict[str, Queued]:
    """Every message the log shows entering the queue (its DSNs too), by queue id."""
    story: dict[str, Queued] = {}

    def entry(queue_id: str) -> Queued:
        return story.setdefault(queue_id, Queued(queue_id))

    for match in _ENTERED.finditer(log):
        entry(match.group(1) or match.group(2))
    for match in _SENDER.finditer(log):
        if entry(match.group(1)).sender is None:
            entry(match.group(1)).sender = match.group(2)
    for match in _ATTEMPT.finditer(log):
        entry(match.group(1)).attempts.append(Attempt(*match.group(2, 3, 4)))
    for match in _EXPIRED.finditer(log):
        entry(match.group(1)).expired = True
    for match in _REMOVED.finditer(log):
        entry(match.group(1)).removed = True
    return story


@dataclass
class Postfix:
    """One Postfix instance: its directory, its smtpd port and where each domain goes."""

    folder: Path
    # Reader domain -> loopback port its mail is relayed to.
    routes: Mapping[str, int]
    bounce_domain: str
    port: int = field(default_factory=free_port)
    hostname: str = "relay.gazette.test"
    # main.cf settings a test adds or overrides (smtpd restrictions, say).
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Gazette's GAZETTE_SMTP_URL for this relay."""
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def bounce_address(self) -> str:
        """Gazette's GAZETTE_BOUNCE_ADDRESS: the mailbox whose Maildir gets the DSNs."""
        return f"{BOUNCE_MAILBOX}@{self.bounce_domain}"

    @property
    def maildir(self) -> Path:
        """The Maildir the bounce address (and every +extension of it) is delivered to."""
        return self.folder / "mail" / self.bounce_domain / BOUNCE_MAILBOX

    @property
    def maillog(self) -> Path:
        return self.folder / "maillog"

    def log(self) -> str:
        """Everything the instance has logged so far."""
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def delivered(self) -> list[Path]:
        """The messages in the Maildir (new/ and cur/), oldest name first."""
        found = [p for sub in ("new", "cur") for p in (self.maildir / sub).glob("*")]
        return sorted(p for p in found if p.is_file())

    def main_cf(self) -> str:
        owner = pwd.getpwnam(MAIL_OWNER)
        transports = ", ".join(
            f"{domain}=smtp:[127.0.0.1]:{port}" for domain, port in self.routes.items()
        )
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.folder / "queue",
            "data_directory": self.folder / "data",
            "mail_owner": MAIL_OWNER,
            "setgid_group": "postdrop",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.folder,
            "syslog_name": "gazette-test-postfix",
            "myhostname": self.hostname,
            "mydomain": "gazette.test",
            "myorigin": "$myhostname",
            # Nothing is delivered by local(8): no aliases, no local recipients.
            "mydestination": "",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "relay_domains": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_peername_lookup": "no",
            "smtpd_tls_security_level": "none",
            "in_flow_delay": "0",
            # Readers' domains to their loopback servers; anything else fails here.
            "transport_maps": f"inline:{{ {transports} }}",
            "default_transport": "error:5.7.1 this test relay routes only the test's domains",
            "smtp_tls_security_level": "none",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtp_connect_timeout": "5s",
            "smtp_helo_timeout": "10s",
            # VERP: bounces+TOKEN@ is looked up as bounces@ and delivered to its Maildir.
            "recipient_delimiter": "+",
            "virtual_mailbox_domains": self.bounce_domain,
            "virtual_mailbox_base": self.folder / "mail",
            "virtual_mailbox_maps": (
                f"inline:{{ {self.bounce_address}={self.bounce_domain}/{BOUNCE_MAILBOX}/ }}"
            ),
            "virtual_uid_maps": f"static:{owner.pw_uid}",
            "virtual_gid_maps": f"static:{owner.pw_gid}",
            "virtual_minimum_uid": str(owner.pw_uid),
            # Try once, return the DSN at once: a test cannot wait out Postfix's days.
            "maximal_queue_lifetime": "0",
            "bounce_queue_lifetime": "0",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "1s",
            "queue_run_delay": "1s",
            "delay_warning_time": "0",
            "biff": "no",
            "readme_directory": "no",
        }
        settings.update(self.extra)
        return "".join(f"{name} = {value}\n" for name, value in settings.items())

    @property
    def config(self) -> Path:
        """The config directory: main.cf and master.cf alone, all root's, as Postfix checks."""
        return self.folder / "config"

    def configure(self) -> None:
        """Write main.cf and master.cf, and the directories Postfix does not create."""
        owner = pwd.getpwnam(MAIL_OWNER)
        self.config.mkdir(mode=0o755)
        (self.config / "main.cf").write_text(self.main_cf())
        (self.config / "master.cf").write_text(MASTER_CF.format(port=self.port))
        # `postfix start` creates the queue's subdirectories, not the queue itself.
        (self.folder / "queue").mkdir(mode=0o755)
        for owned in (self.folder / "data", self.folder / "mail"):
            owned.mkdir(mode=0o700)
            os.chown(owned, owner.pw_uid, owner.pw_gid)

    def postfix(self, command: str) -> subprocess.CompletedProcess[str]:
        """Run `postfix -c CONFIG command` (never without -c: that is the system's Postfix)."""
        assert self.config.resolve() != Path("/etc/postfix")
        return subprocess.run(
            [str(POSTFIX), "-c", str(self.config), command],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def start(self) -> None:
        """Start the instance and wait until its smtpd greets on the port."""
        started = self.postfix("start")
        if started.returncode != 0:
            raise AssertionError(f"postfix start failed: {started.stderr}\n{self.log()}")
        self._wait(self.greets, START_TIMEOUT, f"Postfix's smtpd to greet on port {self.port}")

    def greets(self) -> bool:
        """Whether the smtpd answers a connection with its 220 greeting."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as client:
                return client.recv(512).startswith(b"220")
        except OSError:
            return False

    def stop(self) -> str:
        """Stop the master and every service it started (SIGKILL after 5 s, by postfix).

        What `postfix stop` printed: nothing when it stopped a running instance.
        """
        return self.postfix("stop").stderr

    def wait_for_mail(self, count: int, timeout: float) -> list[Path]:
        """The Maildir's messages once there are at least ``count``; fail with the log if not."""
        self._wait(
            lambda: len(self.delivered()) >= count, timeout, f"{count} messages in {self.maildir}"
        )
        return self.delivered()

    def queue(self) -> dict[str, Queued]:
        """Every message that entered the queue so far, as the log tells it."""
        return queue_story(self.log())

    def wait_until_settled(self, messages: int, timeout: float) -> dict[str, Queued]:
        """The queue once ``messages`` with a sender came in and every message, DSNs too, left."""

        def settled() -> bool:
            story = self.queue().values()
            return sum(1 for m in story if m.sender) >= messages and all(m.removed for m in story)

        self._wait(settled, timeout, f"{messages} messages to go through Postfix")
        return self.queue()

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """wait_for, with the instance's log in the failure."""
        try:
            wait_for(condition, timeout, what)
        except AssertionError as error:
            raise AssertionError(f"{error}; Postfix's log:\n{self.log()}") from None


@contextmanager
def running_postfix(
    keep_logs: Path,
    routes: Mapping[str, int],
    bounce_domain: str,
    extra: Mapping[str, str] | None = None,
) -> Iterator[Postfix]:
    """A started Postfix instance; stopped, its maillog copied to ``keep_logs`` and printed.

    ``extra``: main.cf settings added to (or overriding) the instance's own.
    """
    require_postfix()
    folder = Path(tempfile.mkdtemp(prefix="gazette-postfix-"))
    folder.chmod(0o755)  # mkdtemp's 0700 would keep the services (user postfix) out
    instance = Postfix(folder, routes, bounce_domain, extra=dict(extra or {}))
    try:
        instance.configure()
        instance.start()
        yield instance
    finally:
        stopping = instance.stop()
        log = instance.log()
        (keep_logs / "postfix-maillog").write_text(log)
        # Printed, so pytest shows them with a failing test.
        print(f"--- Postfix's maillog ({folder}) ---\n{log}\n--- postfix stop ---\n{stopping}")
        shutil.rmtree(folder, ignore_errors=True)
