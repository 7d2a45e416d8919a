"""What `gazette demo` tells a person (issue 19): one message as a mail client shows it,
where the files are, and the one command that serves the links it prints.

The demo runs as a real subprocess on an empty folder, as `make demo` runs it; the
message it shows is read back from the outbox with the standard library's parser.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path

import pytest

from gazette.demo_publisher import SHOWN_READER
from gazette.text import display_width
from tests.support.cli import Cli
from tests.support.messages import parse


def demo(folder: Path, **env: str) -> tuple[str, list[Path]]:
    """Run `gazette demo` in ``folder``; return what it printed and the messages it wrote."""
    cli = Cli(folder, env, f"sqlite:///{folder / 'var' / 'gazette.db'}")
    return cli.ok("demo").stdout, cli.outbox()


def message_to(files: list[Path], address: str) -> tuple[Path, EmailMessage]:
    """The file, and the message in it, that went to ``address``."""
    for path in files:
        message = parse(path)
        if message["To"].addresses[0].addr_spec == address:
            return path, message
    raise AssertionError(f"no message to {address}")


def words(text: str) -> str:
    """``text`` with every run of white space made one space: wrapping set aside."""
    return " ".join(text.split())


def test_the_demo_shows_one_message_decoded(tmp_path: Path) -> None:
    printed, files = demo(tmp_path)
    path, message = message_to(files, SHOWN_READER)
    # The file itself is quoted-printable: what the operator could not read before.
    assert b"=D0=" in path.read_bytes() or b"=?utf-8?" in path.read_bytes()
    subject = str(message["Subject"])
    assert "та ще" in subject  # the Ukrainian reader's subject, in Ukrainian
    assert f"Subject: {words(subject)}" in words(printed)
    plain = message.get_body(("plain",))
    assert plain is not None
    greeting = next(line for line in plain.get_content().splitlines() if "Оксана" in line)
    assert greeting == "Вітаємо, Оксана Коваленко!"
    assert f"    {greeting}\n" in printed
    assert f"The message to {SHOWN_READER}" in printed


def test_no_quoted_printable_reaches_the_terminal(tmp_path: Path) -> None:
    printed, _files = demo(tmp_path)
    assert "=\n" not in printed
    assert re.search(r"=[0-9A-F]{2}", printed) is None, printed
    assert "=?utf-8?" not in printed.lower()


def test_the_demo_says_where_its_files_are(tmp_path: Path) -> None:
    printed, files = demo(tmp_path)
    assert "messages  var/outbox/new/" in printed
    assert "database  var/gazette.db" in printed
    shown = re.search(r"this one  (\S+)", printed)
    assert shown is not None
    assert tmp_path / "var" / "outbox" / "new" / shown.group(1) in files


@pytest.mark.parametrize("base_url", [None, "http://localhost:8765"])
def test_the_printed_command_serves_the_printed_links(tmp_path: Path, base_url: str | None) -> None:
    printed, _files = demo(tmp_path, **({"GAZETTE_BASE_URL": base_url} if base_url else {}))
    commands = re.findall(r"^  gazette run --port (\d+)$", printed, flags=re.MULTILINE)
    links = re.findall(r"http://localhost:(\d+)/", printed)
    assert len(commands) == 1, printed
    assert links, printed
    assert set(links) == {commands[0]}
    assert commands[0] == ("8765" if base_url else "8000")


def test_a_public_base_url_gets_no_local_command(tmp_path: Path) -> None:
    printed, _files = demo(tmp_path, GAZETTE_BASE_URL="https://news.example.org")
    assert "gazette run --port" not in printed
    assert "The links point at https://news.example.org" in printed


def test_every_line_but_a_link_fits_80_columns(tmp_path: Path) -> None:
    printed, _files = demo(tmp_path)
    for line in printed.splitlines():
        if "://" not in line:
            assert display_width(line) <= 80, line


def test_a_second_run_still_shows_the_message_it_sent_before(tmp_path: Path) -> None:
    demo(tmp_path)
    printed, _files = demo(tmp_path)
    assert "Messages written: 0" in printed
    assert "Вітаємо, Оксана Коваленко!" in printed
