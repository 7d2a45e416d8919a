"""CSV import: `gazette subscribers import FILE --confirmed` in a process of its own.

The file has the columns an operator exports from another tool (email, name, language)
with about one row in a hundred that validation must reject or correct (a malformed
address; an unknown language, which gets the default), so the import does its full
per-row checking.
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks import data
from benchmarks.procs import ROOT, child_env
from benchmarks.profile import IMPORT, ProfileSummary, profile_command


@dataclass(frozen=True)
class ImportRun:
    """One import: rows in the file, wall seconds, peak RSS of the import process."""

    rows: int
    seconds: float
    max_rss_bytes: int
    summary: str

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def write_csv(path: Path, rows: int, seed: int = 5) -> int:
    """Write ``rows`` reader rows (0.5% invalid); return how many rows are valid."""
    rng = random.Random(seed)
    valid = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "language"])
        for reader in data.reader_rows(rows, seed=seed):
            roll = rng.random()
            if roll < 0.005:
                writer.writerow([reader.email.replace("@", " at "), reader.name, reader.language])
            elif roll < 0.01:
                # A language Gazette does not offer: imported with the default language.
                writer.writerow([reader.email, reader.name, "xx"])
                valid += 1
            else:
                # Addresses as people type them: mixed case, stray spaces.
                email = reader.email.title() if roll < 0.2 else reader.email
                writer.writerow(
                    [f" {email} " if roll > 0.95 else email, reader.name, reader.language]
                )
                valid += 1
    return valid


def _gazette(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "gazette", *args],
        check=True,
        cwd=ROOT,
        env=child_env(env),
        capture_output=True,
    )


def _import_command(csv_path: Path) -> list[str]:
    return [sys.executable, "-m", "gazette", "subscribers", "import", str(csv_path), "--confirmed"]


def profile_import(csv_path: Path, folder: Path, program: str) -> ProfileSummary:
    """One more import, on a fresh installation, run under py-spy."""
    folder.mkdir(parents=True, exist_ok=True)
    with data.database("sqlite", folder) as url:
        env = data.gazette_env(folder, url)
        _gazette(env, "init")
        _gazette(env, "newsletters", "add", data.NEWSLETTER, "--name", "The Meridian Weekly")
        return profile_command(
            program,
            _import_command(csv_path),
            folder / "py-spy.txt",
            IMPORT,
            "an extra CSV import of the same file under py-spy",
            "import",
            cwd=ROOT,
            env=child_env(env),
        )


def import_once(csv_path: Path, rows: int, folder: Path) -> ImportRun:
    """Init a fresh SQLite installation, add a newsletter, and time the import."""
    folder.mkdir(parents=True, exist_ok=True)
    with data.database("sqlite", folder) as url:
        env = data.gazette_env(folder, url)
        _gazette(env, "init")
        _gazette(env, "newsletters", "add", data.NEWSLETTER, "--name", "The Meridian Weekly")
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.measure", "--", *_import_command(csv_path)],
            check=True,
            cwd=ROOT,
            env=child_env(env),
            capture_output=True,
        )
        result = json.loads(completed.stdout)
        if result["returncode"] != 0:
            raise RuntimeError(f"gazette subscribers import failed: {result['stderr']}")
        summary = next(
            (line for line in result["stdout"].splitlines() if line.startswith("Imported")), ""
        )
        return ImportRun(rows, result["seconds"], result["max_rss_bytes"], summary)
