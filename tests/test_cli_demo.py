"""`gazette demo` and the CLI's conventions, run as a real subprocess on a fresh folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gazette.demo_publisher import READERS
from tests.support.messages import parse

GAZETTE = [sys.executable, "-m", "gazette"]


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
    clean.update(env)
    return subprocess.run(
        [*GAZETTE, *args], cwd=cwd, env=clean, capture_output=True, text=True, timeout=120
    )


def outbox(folder: Path) -> list[Path]:
    new = folder / "var" / "outbox" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def test_demo_on_an_empty_folder_sends_one_valid_message_per_reader(tmp_path: Path) -> None:
    result = run(["demo"], tmp_path)
    assert result.returncode == 0, result.stderr
    files = outbox(tmp_path)
    assert len(files) == len(READERS)
    assert f"Messages written: {len(READERS)}" in result.stdout
    assert "/unsubscribe/" in result.stdout

    message_ids = set()
    recipients = set()
    for path in files:
        message = parse(path)
        assert message.defects == []
        assert message.get_content_type() == "multipart/alternative"
        parts = [part.get_content_type() for part in message.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        for header in ("From", "To", "Subject", "Date", "Message-ID"):
            assert message[header], f"{header} missing in {path.name}"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        message_ids.add(message["Message-ID"])
        recipients.add(message["To"].addresses[0].addr_spec)
    assert len(message_ids) == len(READERS)
    assert recipients == {email for email, _name, _language in READERS}


def test_demo_twice_sends_nothing_twice(tmp_path: Path) -> None:
    assert run(["demo"], tmp_path).returncode == 0
    first = outbox(tmp_path)
    second = run(["demo"], tmp_path)
    assert second.returncode == 0, second.stderr
    assert "Messages written: 0" in second.stdout
    assert outbox(tmp_path) == first


def test_demo_speaks_each_reader_s_language(tmp_path: Path) -> None:
    assert run(["demo"], tmp_path).returncode == 0
    bodies = {}
    for path in outbox(tmp_path):
        message = parse(path)
        plain = message.get_body(("plain",))
        assert plain is not None
        bodies[message["To"].addresses[0].addr_spec] = plain.get_content()
    assert "Вітаємо, Оксана Коваленко!" in bodies["oksana.kovalenko@example.org"]
    assert "佐藤 花子 様" in bodies["hanako.sato@example.net"]
    assert "Hello, Olivia Bennett!" in bodies["olivia.bennett@example.org"]
    assert "Hello!" in bodies["reader@example.com"]


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("GAZETTE_DATABASE_URL", "mysql://nobody@nowhere/db", "GAZETTE_DATABASE_URL"),
        ("GAZETTE_DATABASE_URL", "not a url at all", "GAZETTE_DATABASE_URL"),
        ("GAZETTE_DATABASE_URL", "postgresql+psycopg://u@127.0.0.1:1/db", "GAZETTE_DATABASE_URL"),
        ("GAZETTE_SMTP_URL", "ftp://mail.example.org", "GAZETTE_SMTP_URL"),
        ("GAZETTE_SMTP_URL", "maildir://relative/path", "GAZETTE_SMTP_URL"),
        ("GAZETTE_SMTP_URL", "smtp://mail.example.org:notaport", "GAZETTE_SMTP_URL"),
        ("GAZETTE_BATCH_SIZE", "many", "GAZETTE_BATCH_SIZE"),
    ],
)
def test_bad_setting_is_one_sentence_and_exit_2(
    tmp_path: Path, variable: str, value: str, named: str
) -> None:
    result = run(["demo"], tmp_path, **{variable: value})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert outbox(tmp_path) == []


def test_help_lists_commands_with_an_example(tmp_path: Path) -> None:
    result = run(["--help"], tmp_path)
    assert result.returncode == 0
    for command in ("demo", "init", "db"):
        assert command in result.stdout
    assert "Example" in result.stdout
    assert run(["demo", "--help"], tmp_path).stdout.count("Example") == 1


def test_unknown_command_is_usage_error(tmp_path: Path) -> None:
    assert run(["no-such-command"], tmp_path).returncode == 2


def test_init_then_db_status_json(tmp_path: Path) -> None:
    assert run(["init"], tmp_path).returncode == 0
    result = run(["db", "status", "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["up_to_date"] is True
    assert document["current"] == document["head"]


def test_demo_articles_carry_the_language_they_are_written_in(tmp_path: Path) -> None:
    """The example feed says <language>en</language> but holds uk and ja posts too: each of
    those items names its own language, so a newsletter on 'own' routes them right."""
    assert run(["demo"], tmp_path).returncode == 0
    listed = run(["articles", "list", "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    languages = {a["title"]: a["language"] for a in json.loads(listed.stdout)["articles"]}
    assert len(languages) == 8

    def script(title: str) -> str:
        if any("\u3040" <= ch <= "\u9fff" for ch in title):
            return "ja"
        return "uk" if any("\u0400" <= ch <= "\u04ff" for ch in title) else "en"

    assert languages == {title: script(title) for title in languages}
    assert set(languages.values()) == {"en", "uk", "ja"}
