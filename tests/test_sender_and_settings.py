"""What an operator meets on day one: sender addresses, the example secret, `serve`
without a broker, and `digest test` after a send.

Everything runs through the real command line as a subprocess, on SQLite and
PostgreSQL, with a real SMTP server on loopback where the envelope matters.
"""

from __future__ import annotations

import os
import subprocess
import sys
from email.utils import parseaddr
from pathlib import Path

import pytest

from gazette.config import load_settings
from gazette.errors import ConfigError
from gazette.mail.senders import parse_sender
from gazette.secret_settings import PLACEHOLDER_SECRET
from tests.support.cli import healthy
from tests.support.env import TEST_KEY, make_env
from tests.support.http import Browser, LiveServer
from tests.support.messages import check_wire_format, parse, raw_header
from tests.support.smtp import RecordingHandler, SMTPServer, free_port
from tests.support.workers import wait_for

KPL = "Kyiv Policy Lab <news@kyivpolicylab.example>"


class Site:
    """One installation driven through `gazette` subprocesses."""

    def __init__(self, folder: Path, database_url: str, **settings: str) -> None:
        self.folder = folder
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
        self.env |= make_env(folder, database_url, **settings)

    def run(self, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
        env = self.env | {f"GAZETTE_{k.upper()}": v for k, v in settings.items()}
        return subprocess.run(
            [sys.executable, "-m", "gazette", *args], cwd=self.folder, env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def ok(self, *args: str, **settings: str) -> str:
        result = self.run(*args, **settings)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def outbox(self) -> list[Path]:
        folder = self.folder / "var" / "outbox" / "new"
        return sorted(folder.iterdir()) if folder.is_dir() else []


def usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of a command refused with exit 2, no traceback, nothing on stdout."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


def seeded(site: Site, *newsletter_args: str) -> None:
    site.ok("init")
    site.ok("newsletters", "add", "kpl", "--name", "Kyiv Policy Lab Weekly", *newsletter_args)
    site.ok("subscribers", "add", "ada@example.org", "--newsletter", "kpl", "--confirmed")
    site.ok("articles", "add", "--title", "Grain corridor", "--url", "https://example.org/grain")


# --- item 7: the sender ------------------------------------------------------------------


def test_a_named_from_address_gives_the_sender_name_and_a_clean_message_id(
    tmp_path: Path, database_url: str
) -> None:
    relay = SMTPServer(RecordingHandler())
    relay.start()
    try:
        site = Site(tmp_path, database_url, smtp_url=relay.url)
        seeded(site, "--from-address", KPL)
        sent = site.ok("digest", "send", "kpl", "--now", "--wait")
        assert "1 sent, 0 failed" in sent
    finally:
        relay.stop()
    [received] = relay.messages
    assert received.sender == "news@kyivpolicylab.example"  # the envelope: the bare address
    check_wire_format(received.data)
    message = parse(received.data)
    [sender] = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (
        "Kyiv Policy Lab", "news@kyivpolicylab.example",
    )  # fmt: skip
    assert raw_header(received.data, "From") == [
        b"From: Kyiv Policy Lab <news@kyivpolicylab.example>"
    ]
    message_id = message["Message-ID"].strip()
    assert message_id.startswith("<")
    assert message_id.endswith("@kyivpolicylab.example>")
    assert message_id.count("<") == message_id.count(">") == 1
    assert message["List-Id"].endswith("<kpl.kyivpolicylab.example>")


def test_a_from_address_that_is_not_one_is_refused_with_exit_2(
    tmp_path: Path, database_url: str
) -> None:
    site = Site(tmp_path, database_url)
    site.ok("init")
    line = usage_error(
        site.run("newsletters", "add", "bad", "--name", "Bad", "--from-address", "not an email")
    )
    assert "'not an email' is not a sender address" in line
    assert "bad" not in site.ok("newsletters", "list")  # nothing half-written
    site.ok("newsletters", "add", "kpl", "--name", "KPL")
    for value in ("not an email", "Kyiv <news@kyivpolicylab.example> trailing"):
        line = usage_error(site.run("newsletters", "edit", "kpl", "--from-address", value))
        assert repr(value) in line
    site.ok("newsletters", "edit", "kpl", "--from-address", KPL)
    assert KPL in site.ok("newsletters", "list", "--json")


def test_gazette_from_address_takes_a_name_and_refuses_what_is_not_an_address(
    tmp_path: Path, database_url: str
) -> None:
    site = Site(tmp_path, database_url)
    site.ok("init")
    line = usage_error(site.run("digest", "status", from_address="not an email"))
    assert line.startswith("gazette: GAZETTE_FROM_ADDRESS 'not an email' is not a sender address")

    settings = load_settings(
        make_env(tmp_path, database_url, from_address=f"  {KPL} "), cwd=tmp_path
    )
    assert (settings.from_name, settings.from_address) == (
        "Kyiv Policy Lab", "news@kyivpolicylab.example",
    )  # fmt: skip
    assert settings.sender == KPL


@pytest.mark.parametrize(
    ("raw", "name", "address"),
    [
        ("news@example.org", "", "news@example.org"),
        ("<news@example.org>", "", "news@example.org"),
        ('"Lab, Inc." <news@example.org>', "Lab, Inc.", "news@example.org"),
        ("Київська лабораторія <news@example.org>", "Київська лабораторія", "news@example.org"),
    ],
)
def test_parse_sender_reads_both_forms_and_round_trips(raw: str, name: str, address: str) -> None:
    sender = parse_sender(raw)
    assert (sender.name, sender.address) == (name, address)
    assert parse_sender(sender.stored) == sender
    assert parseaddr(sender.stored) == (name, address)


@pytest.mark.parametrize(
    "raw",
    ["not an email", "", "a <b@example.org> c", "<<news@example.org>>", "Name\n<a@b.example>"],
)
def test_parse_sender_refuses_the_rest(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_sender(raw)
    assert repr(raw) in str(caught.value)
    assert "\n" not in str(caught.value).replace(repr(raw), "")


# --- item 8: the example's secret --------------------------------------------------------


@pytest.mark.parametrize("keys", [PLACEHOLDER_SECRET, f"{TEST_KEY},{PLACEHOLDER_SECRET}"])
def test_the_placeholder_secret_from_env_example_is_refused(
    tmp_path: Path, database_url: str, keys: str
) -> None:
    example = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    assert f"GAZETTE_SECRET_KEYS={PLACEHOLDER_SECRET}\n" in example
    site = Site(tmp_path, database_url)
    line = usage_error(site.run("init", secret_keys=keys))
    assert line.startswith("gazette: GAZETTE_SECRET_KEYS still holds the placeholder")
    assert not (tmp_path / "var" / "gazette.db").exists()


# --- item 16: `serve` without a broker, and `digest test` after a send -------------------


def test_serve_without_a_broker_logs_no_kombu_warning(tmp_path: Path) -> None:
    site = Site(tmp_path, f"sqlite:///{tmp_path / 'gazette.db'}")
    site.ok("init")
    site.ok("newsletters", "add", "kpl", "--name", "KPL")
    port = free_port()
    with (tmp_path / "err.log").open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "gazette", "serve", "--port", str(port)],
            cwd=tmp_path, env=site.env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        wait_for(lambda: healthy(port, 1), 60, "the server to answer")
        browser = Browser(LiveServer("127.0.0.1", port))
        form = browser.get("/subscribe").form("/subscribe")
        page = browser.submit(form, email="ada@example.org", name="Ada")
        assert page.status == 200, page.text
    finally:
        process.terminate()
        process.wait(timeout=30)
    # The subscribe ran the confirmation task in-process: it was sent, and quietly.
    assert len(site.outbox()) == 1
    log = (tmp_path / "err.log").read_text()
    assert "No hostname was supplied" not in log
    assert "kombu" not in log


def test_digest_test_after_a_send_uses_the_latest_issue(tmp_path: Path, database_url: str) -> None:
    site = Site(tmp_path, database_url, from_address=KPL)
    seeded(site)
    site.ok("digest", "send", "kpl", "--now", "--wait")
    assert len(site.outbox()) == 1
    # Nothing new since: a preview says so, but a test send re-uses the issue's articles.
    assert site.run("digest", "preview", "kpl").returncode == 1
    out = site.ok("digest", "test", "kpl", "--to", "editor@example.org")
    assert "nothing new since issue 1: its articles were used" in out
    [_first, test] = site.outbox()
    message = parse(test.read_bytes())
    assert [a.addr_spec for a in message["To"].addresses] == ["editor@example.org"]
    assert message["Subject"] == "Kyiv Policy Lab Weekly: Grain corridor"
    # No sender of its own: GAZETTE_FROM_ADDRESS's name and address.
    [sender] = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (
        "Kyiv Policy Lab", "news@kyivpolicylab.example",
    )  # fmt: skip
