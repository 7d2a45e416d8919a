"""What the scenarios of one invocation share: their sizes, the sink, and the figures.

``Context`` carries the sizes of the mode (quick or full), the working folder, the SMTP
sink, and everything the report is written from (figures, setup lines, notes, profiles).
``Scenario`` is what each module under benchmarks/scenarios/ declares about itself.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.harness import seeding
from benchmarks.harness.figures import MIN_RUNS, Figure, FigureTable, fmt
from benchmarks.harness.messages import Corpus
from benchmarks.harness.profiling import ProfileSummary
from benchmarks.harness.sending import SendRun
from benchmarks.harness.servers import Sink, start_sink

if TYPE_CHECKING:
    from benchmarks.harness.report import RunInfo


@dataclass(frozen=True)
class Sizes:
    """How big each scenario runs in one mode."""

    mode: str
    send: tuple[int, ...]  # end-to-end subscriber counts on PostgreSQL; the last is the headline
    sqlite_send: tuple[int, ...]  # the same on SQLite
    obvious_send: tuple[int, ...]  # subscriber counts of the obvious approach's issues
    obvious_sample: int  # messages the obvious approach sends (and is timed on) per run
    ceiling_cap: int  # most messages one ceiling run sends
    corpus: int  # distinct pre-rendered messages the ceiling cycles through
    sink_messages: int
    planning: int
    csv_rows: int
    feed_items: int
    web_seconds: int
    web_readers: int
    profile_size: int
    dkim_send: int = 10_000  # subscribers of the runs with DKIM signing on (one database)


QUICK = Sizes(
    mode="quick",
    send=(2_000, 10_000),
    sqlite_send=(10_000,),
    obvious_send=(10_000,),
    obvious_sample=300,
    ceiling_cap=25_000,
    corpus=1_000,
    sink_messages=4_000,
    planning=200_000,
    csv_rows=100_000,
    feed_items=1_000,
    web_seconds=10,
    web_readers=10_000,
    profile_size=5_000,
)
FULL = Sizes(
    mode="full",
    send=(10_000, 100_000),
    sqlite_send=(100_000,),
    obvious_send=(10_000, 100_000),
    obvious_sample=600,
    ceiling_cap=25_000,
    corpus=1_000,
    sink_messages=10_000,
    planning=1_000_000,
    csv_rows=100_000,
    feed_items=1_000,
    web_seconds=30,
    web_readers=20_000,
    profile_size=10_000,
)


@dataclass
class Context:
    """What the scenarios of one invocation share: sizes, the sink, and the figures."""

    sizes: Sizes
    workdir: Path
    runs: int = MIN_RUNS
    summary_chars: int = seeding.SUMMARY_CHARS
    databases: tuple[str, ...] = ("postgresql", "sqlite")
    obvious_databases: tuple[str, ...] = ("postgresql",)
    profile: bool = True
    # An SMTP server the caller runs (tests); otherwise the scenarios start the sink.
    sink_url: str | None = None
    sink_kind: str = ""
    log: Callable[[str], None] = field(default=lambda text: print(text, flush=True))
    started: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    )
    figures: dict[str, Figure] = field(default_factory=dict)
    send_runs: list[SendRun] = field(default_factory=list)
    setup: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    profiles: list[ProfileSummary] = field(default_factory=list)
    sink: Sink | None = None
    corpus: Corpus | None = None
    load_at_start: tuple[float, float, float] = field(default_factory=os.getloadavg)
    timings: dict[str, float] = field(default_factory=dict)
    failed: bool = False

    def add(self, fig: Figure) -> Figure:
        """Record a figure of this run and print it."""
        fig.mode = self.sizes.mode
        fig.recorded_at = self.started
        self.figures[fig.name] = fig
        target = ""
        if fig.target is not None:
            target = f"  target {fig.target}" + (
                "" if fig.met is None else (" met" if fig.met else " MISSED")
            )
        self.log(
            f"  {fig.name:<44} {fmt(fig.value):>10} {fig.unit:<10} "
            f"(min {fmt(fig.min)}, max {fmt(fig.max)}, {fig.runs} runs){target}"
        )
        return fig

    def send_sizes(self, database: str) -> tuple[int, ...]:
        """End-to-end subscriber counts for ``database``."""
        return self.sizes.sqlite_send if database == "sqlite" else self.sizes.send

    def folder(self, *parts: str) -> Path:
        """A folder under the working folder, created when missing."""
        path = self.workdir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def ensure_sink(self) -> str:
        """The SMTP URL every mail scenario sends to; starts the sink on first use."""
        if self.sink_url is None:
            self.sink = start_sink()
            self.sink_url = self.sink.url
            self.sink_kind = self.sink.kind
            self.log(f"SMTP sink: {self.sink.kind} at {self.sink_url}")
        return self.sink_url

    @contextmanager
    def attempt(self, what: str) -> Iterator[None]:
        """Run a block; a failure is reported and recorded, and the scenario goes on."""
        try:
            yield
        except Exception as error:
            self.failed = True
            traceback.print_exc()
            self.notes.append(f"{what} failed: {error.__class__.__name__}: {error}")

    def repeat(self, what: str, once: Callable[[int], float]) -> list[float]:
        """``once(n)`` for each run n, each result printed: the samples of one figure."""
        samples = []
        for n in range(self.runs):
            value = once(n)
            self.log(f"    {what} run {n + 1}/{self.runs}: {fmt(value)}")
            samples.append(value)
        return samples

    def close(self) -> None:
        """Stop the sink this invocation started."""
        if self.sink is not None:
            self.sink.stop()
            self.sink = None


@dataclass(frozen=True)
class Chart:
    """A chart a scenario draws from the figures: its file (next to the report) and title."""

    filename: str
    title: str
    draw: Callable[[Sequence[Figure], str, Path], bool]  # (figures, mode and date, path)


@dataclass(frozen=True)
class Scenario:
    """What a scenario module declares: its name, how to run it, and how to report it."""

    name: str
    run: Callable[[Context], None]
    figures: FigureTable
    method: str  # how its figures are measured, for the report
    findings: Callable[[Sequence[Figure], RunInfo], list[str]]
    # Scenarios whose figures of the same run this one's figures are computed from.
    needs: tuple[str, ...] = ()
    chart: Chart | None = None
