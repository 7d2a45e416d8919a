"""The gazette command line run against a test installation, as an operator would run it.

Each Cli runs `python -m gazette` in a subprocess with the installation's GAZETTE_*
variables only, and reads back what the command left in the database and the outbox.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from gazette.store.models import Event, Newsletter, Subscriber, Subscription, Suppression
from tests.support.messages import parse

GAZETTE = [sys.executable, "-m", "gazette"]
SLUG = "weekly"


@dataclass
class Cli:
    """Runs `python -m gazette` against one test installation and looks behind it."""

    folder: Path
    env: dict[str, str]
    database_url: str

    def _env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
        clean.update(self.env)
        return clean

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*GAZETTE, *args], cwd=self.folder, env=self._env(), capture_output=True,
            text=True, input=input, timeout=timeout,
        )  # fmt: skip

    def raw(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        """Run with stdout as bytes (text mode would fold a CR inside a CSV cell)."""
        return subprocess.run(
            [*GAZETTE, *args], cwd=self.folder, env=self._env(), capture_output=True, timeout=120
        )

    def ok(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = self(*args, timeout=timeout)
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
        assert "Traceback" not in result.stderr
        return result

    def listing(self, *args: str) -> dict[str, Any]:
        document = json.loads(
            self.ok("subscribers", "list", "--json", "--limit", "1000", *args).stdout
        )
        assert isinstance(document, dict)
        return document

    def emails(self) -> list[str]:
        """Every stored address, read from the database (so `list` is tested on its own)."""
        with self.session() as session:
            return list(session.scalars(select(Subscriber.email).order_by(Subscriber.email)))

    def readers(self) -> dict[str, tuple[str, str]]:
        """Each stored address with its name and language, from the database."""
        with self.session() as session:
            rows = session.execute(select(Subscriber.email, Subscriber.name, Subscriber.language))
            return {email: (name, language) for email, name, language in rows}

    def statuses(self) -> dict[str, str]:
        """Each address's subscription status on SLUG, from the database."""
        with self.session() as session:
            rows = session.execute(
                select(Subscriber.email, Subscription.status)
                .join(Subscription, Subscription.subscriber_id == Subscriber.id)
                .join(Newsletter, Newsletter.id == Subscription.newsletter_id)
                .where(Newsletter.slug == SLUG)
            ).all()
        return {email: status.value for email, status in rows}

    def show(self, email: str) -> dict[str, Any]:
        document = json.loads(self.ok("subscribers", "show", email, "--json").stdout)
        assert isinstance(document, dict)
        return document

    def outbox(self) -> list[Path]:
        new = self.folder / "var" / "outbox" / "new"
        return sorted(new.iterdir()) if new.is_dir() else []

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session on the installation's database, its engine disposed afterwards."""
        engine = create_engine(self.database_url)
        try:
            with Session(engine) as session:
                yield session
        finally:
            engine.dispose()

    def counts(self) -> dict[str, int]:
        """Rows in the tables an import or an add writes to."""
        with self.session() as session:
            return {
                model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
                for model in (Subscriber, Subscription, Event, Suppression)
            }


def one_sentence(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command prints on stderr, checked for form."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gazette: "), lines[0]
    return lines[0]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def _not_utf8(bad_line: int) -> tuple[bytes, int]:
    # Rows on lines 2..bad_line-1 are fine; Latin-1 "é" on bad_line; more fine rows after.
    before = ("email,name\n" + _valid_rows(2, bad_line - 1)).encode()
    after = _valid_rows(bad_line + 1, bad_line + 200).encode()
    return before + b"rene@example.org,Ren\xe9\n" + after, bad_line


class NewsletterCli(Cli):
    """`python -m gazette` against one test installation, with newsletter look-ups."""

    def show(self, slug: str = "weekly") -> dict[str, Any]:
        document = json.loads(self.ok("newsletters", "show", slug, "--json").stdout)
        assert isinstance(document, dict)
        return document

    def messages(self) -> list[EmailMessage]:
        return [parse(path.read_bytes()) for path in self.outbox()]


@dataclass
class FeedCli:
    folder: Path
    env: dict[str, str]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
        clean.update(self.env)
        return subprocess.run(
            [*GAZETTE, *args], cwd=self.folder, env=clean, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self(*args)
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
        assert "Traceback" not in result.stderr
        return result

    def json(self, *args: str) -> dict[str, Any]:
        document = json.loads(self.ok(*args).stdout)
        assert isinstance(document, dict)
        return document


def healthy(port: int, timeout: float = 5) -> bool:
    """True when a new connection to the server gets a 200 from /healthz."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _valid_rows(first: int, last: int) -> str:
    return "".join(f"reader{n}@example.org,Reader {n}\n" for n in range(first, last + 1))
