"""Sampling profiles with py-spy, summarised for the report.

py-spy attaches to a running process tree (the Celery worker and its pool children)
without pausing it (``--nonblocking``), or runs a command under itself (the CSV import).
Only samples taken while the process holds the GIL count (``--gil``): Python and
C-extension work, not waiting on sockets or for a core on a busy machine. Each sample is
charged to the innermost frame that belongs to a known part of the stack.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

Categories = tuple[tuple[str, tuple[str, ...]], ...]

# Innermost matching frame wins; the order only matters for files matching two rows.
SENDING: Categories = (
    ("MIME writing (gazette/mail/mime.py)", ("gazette/mail/mime.py",)),
    ("DKIM signing", ("gazette/mail/dkim.py", "dkim/")),
    (
        "composing (composer, rendering, tokens)",
        (
            "gazette/digests/composer.py",
            "gazette/rendering.py",
            "gazette/tokens.py",
            "itsdangerous/",
            "jinja2/",
            "css_inline",
            "gazette/text.py",
        ),
    ),
    (
        "SMTP client (smtplib, sockets)",
        (
            "smtplib.py",
            "socket.py",
            "gazette/mail/transports.py",
            "gazette/mail/senders.py",
            "ssl.py",
        ),
    ),
    (
        "database (SQLAlchemy, driver)",
        ("sqlalchemy/", "psycopg/", "sqlite3/", "gazette/store/", "psycopg_binary/"),
    ),
    ("ledger logic (gazette/digests/sending.py)", ("gazette/digests/sending.py",)),
    ("Celery, kombu, Redis client", ("celery/", "kombu/", "billiard/", "redis/", "vine/")),
)
IMPORT: Categories = (
    ("address validation (email_validator)", ("email_validator/", "idna/")),
    (
        "CSV reading (csv, gazette/subscribers/csv_files.py)",
        ("csv.py", "gazette/subscribers/csv_files.py", "codecs.py"),
    ),
    ("text cleaning (gazette/text.py)", ("gazette/text.py",)),
    (
        "database (SQLAlchemy, sqlite3)",
        ("sqlalchemy/", "sqlite3/", "gazette/store/", "psycopg/"),
    ),
    ("start-up (imports, CLI)", ("importlib", "click/", "gazette/cli/", "alembic/")),
)


def py_spy_path() -> str | None:
    """py-spy next to this interpreter, or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


@dataclass
class ProfileSummary:
    """Where a profile's samples went."""

    title: str = ""
    kind: str = "sending"  # which diagnosis applies: "sending" or "import"
    samples: int = 0
    by_category: Counter[str] = field(default_factory=Counter)
    by_function: Counter[str] = field(default_factory=Counter)

    def shares(self) -> list[tuple[str, float]]:
        """Categories by share of all samples, largest first."""
        return [(name, n / self.samples) for name, n in self.by_category.most_common()]

    def share(self, category: str) -> float:
        """One category's share of all samples."""
        return self.by_category.get(category, 0) / self.samples if self.samples else 0.0

    def top_functions(self, count: int = 8) -> list[tuple[str, float]]:
        """Innermost Python functions by share of samples (self time)."""
        return [(name, n / self.samples) for name, n in self.by_function.most_common(count)]


def _options(output: Path, rate: int) -> list[str]:
    return [
        "record", "--format", "raw", "--output", str(output), "--nolineno", "--gil",
        "--rate", str(rate),
    ]  # fmt: skip


class Profiler:
    """``py-spy record`` on a running process tree until stopped."""

    def __init__(
        self, program: str, pid: int, output: Path, categories: Categories = SENDING
    ) -> None:
        self.output = output
        self.categories = categories
        self.process = subprocess.Popen(
            [program, *_options(output, 100), "--pid", str(pid), "--subprocesses", "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self, title: str = "", kind: str = "sending") -> ProfileSummary:
        """Stop sampling (py-spy writes its file on SIGINT) and summarise it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return summarise(self.output, self.categories, title, kind)


def profile_command(
    program: str,
    command: Sequence[str],
    output: Path,
    categories: Categories,
    title: str,
    kind: str,
    **run: object,
) -> ProfileSummary:
    """Run ``command`` under py-spy to its end and summarise the samples."""
    subprocess.run(
        [program, *_options(output, 200), "--", *command],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **run,  # type: ignore[call-overload]
    )
    return summarise(output, categories, title, kind)


def _category(frames: list[str], categories: Categories) -> str:
    for frame in reversed(frames):
        for name, needles in categories:
            if any(needle in frame for needle in needles):
                return name
    return "other"


def summarise(
    raw: Path, categories: Categories = SENDING, title: str = "", kind: str = "sending"
) -> ProfileSummary:
    """Read py-spy's raw (collapsed stacks) output."""
    summary = ProfileSummary(title=title, kind=kind)
    if not raw.exists():
        return summary
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # The first element names the process; the rest are frames, outermost first.
        frames = stack.split(";")[1:]
        if not frames:
            continue
        summary.samples += count
        summary.by_category[_category(frames, categories)] += count
        summary.by_function[frames[-1]] += count
    return summary


def profile_lines(profile: ProfileSummary) -> list[str]:
    """The report's lines for one profile: shares by part of the stack, hottest functions."""
    out = [
        f"**Profile** of {profile.title} (py-spy --gil: {profile.samples:,} samples taken "
        "while a process held the GIL, so Python and C-extension work, not kernel time in "
        "socket writes):",
        "",
        "| Part of the stack (innermost frame) | Share |",
        "|---|---:|",
    ]
    out += [f"| {name} | {share:.0%} |" for name, share in profile.shares()]
    out += ["", "Hottest functions (self time):", ""]
    out += [f"- `{name}`: {share:.0%}" for name, share in profile.top_functions(8)]
    out.append("")
    return out
