"""The csv scenario: `gazette subscribers import FILE --confirmed` in a process of its own.

The file has the columns an operator exports from another tool (email, name, language)
with about one row in a hundred that validation must reject or correct (a malformed
address; an unknown language, which gets the default), so the import does its full
per-row checking.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.harness import seeding
from benchmarks.harness.context import Context, Scenario
from benchmarks.harness.figures import Figure, FigureSpec, FigureTable, fmt
from benchmarks.harness.processes import ROOT, child_env
from benchmarks.harness.profiling import (
    IMPORT,
    ProfileSummary,
    profile_command,
    profile_lines,
    py_spy_path,
)
from benchmarks.harness.report import this_run

if TYPE_CHECKING:
    from benchmarks.harness.report import RunInfo

MB = 1024 * 1024
FIGURES = FigureTable(
    "csv",
    {
        "rate": FigureSpec(
            "csv.sqlite.rows_per_s",
            "rows/s",
            "CSV import of {rows:,} rows with validation, SQLite",
            ">= 10,000 rows/s",
            lambda f: f.value >= 10_000,
        ),
        "rss": FigureSpec(
            "csv.sqlite.peak_rss_mb", "MB", "CSV import: peak RSS of the import process"
        ),
    },
)
METHOD = (
    "`python -m gazette subscribers import FILE --confirmed` in its own process on SQLite "
    "after `init` and `newsletters add`; rows/s over every row of the file (1% invalid), "
    "peak RSS from `getrusage(RUSAGE_CHILDREN)` in a wrapper process "
    "(`python -m benchmarks.harness.timing`)."
)


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
    with seeding.database("sqlite", folder) as url:
        env = seeding.gazette_env(folder, url)
        _gazette(env, "init")
        _gazette(env, "newsletters", "add", seeding.NEWSLETTER, "--name", "The Meridian Weekly")
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
    with seeding.database("sqlite", folder) as url:
        env = seeding.gazette_env(folder, url)
        _gazette(env, "init")
        _gazette(env, "newsletters", "add", seeding.NEWSLETTER, "--name", "The Meridian Weekly")
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.harness.timing", "--", *_import_command(csv_path)],
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


def run(ctx: Context) -> None:
    """`gazette subscribers import FILE --confirmed` in a subprocess, SQLite."""
    rows = ctx.sizes.csv_rows
    path = ctx.folder("csv") / "readers.csv"
    valid = seeding.write_csv(path, rows)
    runs = [import_once(path, rows, ctx.folder("csv", str(n))) for n in range(ctx.runs)]
    for n, one in enumerate(runs):
        ctx.log(f"    import run {n + 1}: {fmt(one.rate)} rows/s; {one.summary}")
    ctx.setup["CSV"] = f"{rows:,} rows (email, name, language), {rows - valid:,} invalid"
    rate = FIGURES.register(ctx, "rate", [r.rate for r in runs], rows=rows)
    FIGURES.register(ctx, "rss", [r.max_rss_bytes / MB for r in runs])
    program = py_spy_path()
    if rate.met is False and ctx.profile and program is not None:
        ctx.log("  profiling one more import with py-spy")
        ctx.profiles.append(profile_import(path, ctx.folder("csv", "profile"), program))


def findings(figures: Sequence[Figure], info: RunInfo) -> list[str]:
    """This run's import rate and memory, and its profile when one was taken."""
    current = this_run(figures, info)
    rate = current.get("csv.sqlite.rows_per_s")
    if rate is None:
        return []
    text = f"**CSV import.** {fmt(rate.value)} rows/s over the whole command"
    rss = current.get("csv.sqlite.peak_rss_mb")
    if rss is not None:
        text += f", with the import process peaking at {fmt(rss.value)} MB"
    out = [text + ".", ""]
    for profile in info.profiles:
        if profile.kind == "import" and profile.samples:
            out += profile_lines(profile)
    return out


SCENARIO = Scenario("csv", run, FIGURES, METHOD, findings)
