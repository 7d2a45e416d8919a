"""The scenarios, one function each, and the figures they report."""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import data
from benchmarks.ceiling import Corpus, push, smtp_source_rate
from benchmarks.core import MIN_RUNS, Figure, figure, fmt, ratio, with_target
from benchmarks.endtoend import SendRun, send_once
from benchmarks.profile import ProfileSummary, py_spy_path
from benchmarks.sink import Sink, smtp_source_path, start_sink
from benchmarks.web import WrkRun

SCENARIOS = ("sink", "ceiling", "gazette", "obvious", "planning", "csv", "feed", "web")
# A scenario's figures are computed from these scenarios' figures of the same run.
NEEDS: dict[str, tuple[str, ...]] = {"gazette": ("ceiling",), "obvious": ("gazette",)}
TARGET_SUBSCRIBERS = 100_000
TARGET_PLANNING = 1_000_000
MB = 1024 * 1024


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
    summary_chars: int = data.SUMMARY_CHARS
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

    def ensure_corpus(self) -> Corpus:
        """Pre-render the ceiling's messages once per invocation (three timed passes)."""
        if self.corpus is None:
            from benchmarks.ceiling import prerender

            count = self.sizes.corpus
            self.log(f"pre-rendering {count} digest messages with Gazette's Composer")
            self.corpus = prerender(count, self.folder("corpus"), self.summary_chars, self.runs)
            self.add(
                figure(
                    "compose.cpu_ms_per_msg",
                    self.corpus.compose_ms,
                    "CPU ms/msg",
                    scenario="ceiling",
                    label="Composer.compose in one process (personalise + MIME bytes)",
                )
            )
            self.setup["Messages"] = (
                f"10 articles with ~{self.summary_chars:,}-character HTML summaries, "
                f"3 languages (80% en, 10% uk, 10% ja), {self.corpus.average_bytes / 1024:.1f} "
                "KiB per message on average: both the text and the HTML part carry every "
                "summary, and the HTML has its CSS inlined (`--summary-chars 500` gives "
                "about 25 KiB)"
            )
        return self.corpus

    @contextmanager
    def attempt(self, what: str) -> Iterator[None]:
        """Run a block; a failure is reported and recorded, and the scenario goes on."""
        try:
            yield
        except Exception as error:
            self.failed = True
            traceback.print_exc()
            self.notes.append(f"{what} failed: {error.__class__.__name__}: {error}")

    def close(self) -> None:
        if self.sink is not None:
            self.sink.stop()
            self.sink = None


def resolve(chosen: Iterable[str]) -> list[str]:
    """The chosen scenarios plus what their figures need, in running order."""
    wanted: set[str] = set()

    def need(name: str) -> None:
        if name in wanted:
            return
        wanted.add(name)
        for other in NEEDS.get(name, ()):
            need(other)

    for name in chosen:
        need(name)
    return [name for name in SCENARIOS if name in wanted]


def _runs(ctx: Context, what: str, once: Callable[[int], float]) -> list[float]:
    samples = []
    for n in range(ctx.runs):
        value = once(n)
        ctx.log(f"    {what} run {n + 1}/{ctx.runs}: {fmt(value)}")
        samples.append(value)
    return samples


# -- 1. sink --------------------------------------------------------------------------


def scenario_sink(ctx: Context) -> None:
    """Start the sink; time its capacity with Postfix's C client when both are there."""
    ctx.ensure_sink()
    program = smtp_source_path()
    if ctx.sink is None or not ctx.sink.kind.startswith("Postfix") or program is None:
        ctx.notes.append(
            f"Sink capacity not measured: it needs Postfix's smtp-sink and smtp-source "
            f"(sink in this run: {ctx.sink_kind})."
        )
        return
    corpus = ctx.ensure_corpus()
    message = corpus.messages[len(corpus.messages) // 2][1]
    total = ctx.sizes.sink_messages
    port = ctx.sink.port
    folder = ctx.folder("sink")
    samples = _runs(
        ctx, "smtp-source", lambda _n: smtp_source_rate(program, message, total, port, folder)
    )
    ctx.add(
        figure(
            "sink.capacity_msgs_per_s",
            samples,
            "msg/s",
            scenario="sink",
            label=f"Sink capacity: smtp-source (C, 2 sessions) into {ctx.sink_kind}, "
            f"{total:,} messages",
        )
    )


# -- 2. ceiling -----------------------------------------------------------------------


def scenario_ceiling(ctx: Context) -> None:
    """Pre-rendered messages pushed by two smtplib processes, one connection each."""
    ctx.ensure_sink()
    corpus = ctx.ensure_corpus()
    assert ctx.sink_url is not None
    port = int(ctx.sink_url.rsplit(":", 1)[1])
    ctx.setup["Ceiling"] = (
        f"{len(corpus.messages):,} distinct pre-rendered messages, cycled; at most "
        f"{ctx.sizes.ceiling_cap:,} messages per run"
    )
    for subscribers in sorted({n for db in ctx.databases for n in ctx.send_sizes(db)}):
        total = min(subscribers, ctx.sizes.ceiling_cap)
        results = [push(corpus, total, port) for _ in range(ctx.runs)]
        for n, r in enumerate(results):
            ctx.log(f"    ceiling n={subscribers} run {n + 1}: {fmt(r.rate)} msg/s")
        ctx.add(
            figure(
                f"ceiling.n{subscribers}.msgs_per_s",
                [r.rate for r in results],
                "msg/s",
                scenario="ceiling",
                label=f"Ceiling at {subscribers:,} subscribers: pre-rendered, smtplib, "
                f"2 processes, {total:,} messages",
                subscribers=subscribers,
            )
        )
        ctx.add(
            figure(
                f"ceiling.n{subscribers}.cpu_ms_per_msg",
                [r.cpu_ms_per_message for r in results],
                "CPU ms/msg",
                scenario="ceiling",
                label=f"Ceiling at {subscribers:,} subscribers: client CPU per message",
                subscribers=subscribers,
            )
        )


# -- 3. gazette end to end ------------------------------------------------------------


def _send_figures(ctx: Context, approach: str, database: str, subscribers: int) -> list[SendRun]:
    sink = ctx.ensure_sink()
    limit = ctx.sizes.obvious_sample if approach == "obvious" else None
    runs: list[SendRun] = []
    for n in range(ctx.runs):
        folder = ctx.folder(approach, database, str(subscribers), str(n))
        run = send_once(
            approach,
            database,
            subscribers,
            sink,
            folder,
            summary_chars=ctx.summary_chars,
            limit=limit,
        )
        ctx.log(
            f"    {approach} {database} n={subscribers} run {n + 1}: {fmt(run.rate)} msg/s, "
            f"{fmt(run.cpu_ms_per_message)} CPU ms/msg, peak {fmt(run.peak_rss_mb)} MB"
        )
        runs.append(run)
    ctx.send_runs.extend(runs)
    return runs


def _at(subscribers: int, target: int) -> str:
    return "" if subscribers == target else f" (set for {target:,})"


def scenario_gazette(ctx: Context) -> None:
    """Gazette's real workers, PostgreSQL and SQLite ledgers, at each size."""
    ctx.setup["Workers"] = (
        "celery prefork, --concurrency 2, GAZETTE_BATCH_SIZE 500 (default), Redis broker, "
        "a queue of its own per run"
    )
    for database in ctx.databases:
        for subscribers in ctx.send_sizes(database):
            with ctx.attempt(f"gazette on {database} with {subscribers:,} subscribers"):
                runs = _send_figures(ctx, "gazette", database, subscribers)
                prefix = f"gazette.{database}.n{subscribers}"
                what = f"Gazette, {database}, {subscribers:,} subscribers"
                rate = ctx.add(
                    figure(
                        f"{prefix}.msgs_per_s",
                        [r.rate for r in runs],
                        "msg/s",
                        scenario="gazette",
                        label=f"{what}: messages/s",
                        subscribers=subscribers,
                    )
                )
                cpu = ctx.add(
                    figure(
                        f"{prefix}.cpu_ms_per_msg",
                        [r.cpu_ms_per_message for r in runs],
                        "CPU ms/msg",
                        scenario="gazette",
                        label=f"{what}: worker CPU per message",
                        subscribers=subscribers,
                    )
                )
                ctx.add(
                    with_target(
                        figure(
                            f"{prefix}.peak_rss_mb",
                            [r.peak_rss_mb for r in runs],
                            "MB",
                            scenario="gazette",
                            label=f"{what}: peak RSS per worker process",
                            subscribers=subscribers,
                        ),
                        "< 150 MB",
                        lambda f: f.max < 150,
                    )
                )
                ctx.add(
                    figure(
                        f"{prefix}.plan_s",
                        [r.plan_seconds for r in runs],
                        "s",
                        scenario="gazette",
                        label=f"{what}: planning (plan_issue + commit)",
                        subscribers=subscribers,
                    )
                )
                ctx.add(
                    figure(
                        f"{prefix}.machine_busy",
                        [r.machine_busy for r in runs],
                        "share",
                        scenario="gazette",
                        label=f"{what}: machine CPU busy while sending (any process)",
                        subscribers=subscribers,
                    )
                )
                ceiling_rate = ctx.figures.get(f"ceiling.n{subscribers}.msgs_per_s")
                ceiling_cpu = ctx.figures.get(f"ceiling.n{subscribers}.cpu_ms_per_msg")
                if ceiling_rate is not None:
                    ctx.add(
                        with_target(
                            ratio(
                                f"{prefix}.of_ceiling",
                                rate,
                                ceiling_rate,
                                scenario="gazette",
                                label=f"{what}: messages/s as a share of the ceiling",
                            ),
                            f">= 0.60{_at(subscribers, TARGET_SUBSCRIBERS)}",
                            lambda f: f.value >= 0.60,
                        )
                    )
                if ceiling_cpu is not None:
                    ctx.add(
                        with_target(
                            ratio(
                                f"{prefix}.cpu_vs_ceiling",
                                cpu,
                                ceiling_cpu,
                                scenario="gazette",
                                label=f"{what}: worker CPU/message over ceiling client CPU/message",
                            ),
                            "<= 2",
                            lambda f: f.value <= 2,
                        )
                    )
    _maybe_profile(ctx)


def _maybe_profile(ctx: Context) -> None:
    """One extra, unreported Gazette run under py-spy when a sending target is missed."""
    missed = [
        f
        for f in ctx.figures.values()
        if f.scenario == "gazette" and f.met is False and not f.name.endswith("peak_rss_mb")
    ]
    if not ctx.profile or not missed:
        return
    if py_spy_path() is None:
        ctx.notes.append("A sending target was missed but py-spy is not installed to profile it.")
        return
    database = "postgresql" if "postgresql" in ctx.databases else ctx.databases[0]
    size = ctx.sizes.profile_size
    folder = ctx.folder("profile")
    ctx.log(f"  profiling one more Gazette run ({database}, {size:,} subscribers) with py-spy")
    run = send_once(
        "gazette",
        database,
        size,
        ctx.ensure_sink(),
        folder,
        summary_chars=ctx.summary_chars,
        profile=folder / "py-spy.txt",
    )
    if run.profile is not None:
        run.profile.title = (
            f"the Celery worker during an extra Gazette run on {database} with {size:,} "
            f"subscribers, {fmt(run.rate)} msg/s under the profiler"
        )
        ctx.profiles.append(run.profile)


# -- 4. the obvious approach ------------------------------------------------------------


def scenario_obvious(ctx: Context) -> None:
    """One task per message, everything per message; compared with Gazette's figures."""
    sample = ctx.sizes.obvious_sample
    ctx.setup["Obvious approach"] = (
        f"same readers and plan; sends and is timed on the first {sample:,} messages of "
        "the issue per run (one task each), since at its rate the whole issue would take "
        "longer than the benchmark budget"
    )
    for database in ctx.obvious_databases:
        sizes = [n for n in ctx.sizes.obvious_send if n in ctx.send_sizes(database)]
        for subscribers in sizes or ctx.send_sizes(database)[-1:]:
            with ctx.attempt(f"obvious on {database} with {subscribers:,} subscribers"):
                runs = _send_figures(ctx, "obvious", database, subscribers)
                prefix = f"obvious.{database}.n{subscribers}"
                what = f"Obvious approach, {database}, {subscribers:,} subscribers"
                rate = ctx.add(
                    figure(
                        f"{prefix}.msgs_per_s",
                        [r.rate for r in runs],
                        "msg/s",
                        scenario="obvious",
                        label=f"{what}: messages/s ({sample:,} sent)",
                        subscribers=subscribers,
                    )
                )
                ctx.add(
                    figure(
                        f"{prefix}.cpu_ms_per_msg",
                        [r.cpu_ms_per_message for r in runs],
                        "CPU ms/msg",
                        scenario="obvious",
                        label=f"{what}: worker CPU per message",
                        subscribers=subscribers,
                    )
                )
                gazette = ctx.figures.get(f"gazette.{database}.n{subscribers}.msgs_per_s")
                if gazette is not None:
                    ctx.add(
                        with_target(
                            ratio(
                                f"gazette.{database}.n{subscribers}.vs_obvious",
                                gazette,
                                rate,
                                scenario="obvious",
                                label=f"Gazette over the obvious approach, {database}, "
                                f"{subscribers:,} subscribers",
                            ),
                            f">= 10{_at(subscribers, TARGET_SUBSCRIBERS)}",
                            lambda f: f.value >= 10,
                        )
                    )


# -- 5. planning ------------------------------------------------------------------------


def scenario_planning(ctx: Context) -> None:
    """plan_issue over a large subscriber table, each run into an empty ledger."""
    subscribers = ctx.sizes.planning
    for database in ctx.databases:
        with ctx.attempt(f"planning on {database}"):
            _plan_on(ctx, database, subscribers)


def _plan_on(ctx: Context, database: str, subscribers: int) -> None:
    from benchmarks.planning import plan_once, seeded

    with seeded(database, subscribers, ctx.folder("planning", database)) as (rt, nid, secs):
        ctx.log(f"    seeded {subscribers:,} readers on {database} in {secs:.1f} s")
        ctx.setup[f"Planning seed ({database})"] = (
            f"{subscribers:,} readers and subscriptions in {secs:.1f} s "
            f"({'COPY' if database == 'postgresql' else 'executemany'})"
        )
        runs = []
        for n in range(ctx.runs):
            run = plan_once(rt, nid, n)
            if run.deliveries != subscribers:
                raise RuntimeError(f"planned {run.deliveries} of {subscribers}")
            ctx.log(f"    plan {database} run {n + 1}: {run.seconds:.2f} s")
            runs.append(run.seconds)
    fig = figure(
        f"planning.{database}.n{subscribers}.plan_s",
        runs,
        "s",
        scenario="planning",
        label=f"Planning {subscribers:,} active subscriptions, {database}",
        subscribers=subscribers,
    )
    if database == "postgresql":
        with_target(fig, f"< 15 s{_at(subscribers, TARGET_PLANNING)}", lambda f: f.value < 15)
    ctx.add(fig)


# -- 6. csv import ------------------------------------------------------------------------


def scenario_csv(ctx: Context) -> None:
    """`gazette subscribers import FILE --confirmed` in a subprocess, SQLite."""
    from benchmarks.csvimport import import_once, profile_import, write_csv

    rows = ctx.sizes.csv_rows
    path = ctx.folder("csv") / "readers.csv"
    valid = write_csv(path, rows)
    runs = [import_once(path, rows, ctx.folder("csv", str(n))) for n in range(ctx.runs)]
    for n, run in enumerate(runs):
        ctx.log(f"    import run {n + 1}: {fmt(run.rate)} rows/s; {run.summary}")
    ctx.setup["CSV"] = f"{rows:,} rows (email, name, language), {rows - valid:,} invalid"
    rate = ctx.add(
        with_target(
            figure(
                "csv.sqlite.rows_per_s",
                [r.rate for r in runs],
                "rows/s",
                scenario="csv",
                label=f"CSV import of {rows:,} rows with validation, SQLite",
            ),
            ">= 10,000 rows/s",
            lambda f: f.value >= 10_000,
        )
    )
    ctx.add(
        figure(
            "csv.sqlite.peak_rss_mb",
            [r.max_rss_bytes / MB for r in runs],
            "MB",
            scenario="csv",
            label="CSV import: peak RSS of the import process",
        )
    )
    program = py_spy_path()
    if rate.met is False and ctx.profile and program is not None:
        ctx.log("  profiling one more import with py-spy")
        ctx.profiles.append(profile_import(path, ctx.folder("csv", "profile"), program))


# -- 7. feed ingest -----------------------------------------------------------------------


def scenario_feed(ctx: Context) -> None:
    """One RSS document through gazette.feeds.ingest_document."""
    from benchmarks.feed import ingest_once, rss_document

    items = ctx.sizes.feed_items
    document = rss_document(items)
    ctx.setup["Feed"] = f"RSS 2.0, {items:,} items, {len(document) / 1024:.0f} KiB"
    for database in ctx.databases:
        with ctx.attempt(f"feed ingest on {database}"):
            samples = []
            for n in range(ctx.runs):
                seconds = ingest_once(
                    document, items, database, ctx.folder("feed", database, str(n))
                )
                ctx.log(f"    ingest {database} run {n + 1}: {fmt(items / seconds)} items/s")
                samples.append(items / seconds)
            ctx.add(
                figure(
                    f"feed.{database}.items_per_s",
                    samples,
                    "items/s",
                    scenario="feed",
                    label=f"Feed ingest, {items:,}-item RSS document, {database}",
                )
            )


# -- 8. web ---------------------------------------------------------------------------------


def _wrk_line(run: WrkRun) -> str:
    return (
        f"{fmt(run.requests_per_s)} req/s, p50 {fmt(run.p50_ms)} ms, p99 {fmt(run.p99_ms)} ms, "
        f"{run.errors} errors of {run.requests:,} requests"
    )


def scenario_web(ctx: Context) -> None:
    """wrk against `gazette serve`: GET /subscribe and the one-click unsubscribe POST."""
    from benchmarks import web

    program = web.wrk_path()
    if program is None:
        ctx.notes.append("wrk is not installed: the web scenario was skipped.")
        ctx.log("  wrk is not installed; skipping the web scenario")
        return
    seconds = ctx.sizes.web_seconds
    folder = ctx.folder("web")
    ctx.setup["Web"] = (
        f"wrk -t2 -c50 -d{seconds}s --latency; gazette serve --processes {web.PROCESSES} "
        f"(waitress, 8 threads each) on PostgreSQL; {ctx.sizes.web_readers:,} readers with "
        "a planned issue"
    )
    with web.serving(ctx.sizes.web_readers, folder) as (server, runtime):
        get_runs = []
        for n in range(ctx.runs):
            run = web.run_wrk(
                program, f"{server.base}/subscribe", web.get_script(), seconds, folder
            )
            ctx.log(f"    GET /subscribe run {n + 1}: {_wrk_line(run)}")
            get_runs.append(run)
        post_runs = []
        script = web.one_click_script(server.unsubscribe_paths)
        for n in range(ctx.runs):
            web.resubscribe(runtime)
            run = web.run_wrk(program, server.base, script, seconds, folder)
            ctx.log(f"    one-click POST run {n + 1}: {_wrk_line(run)}")
            post_runs.append(run)
        # What one POST costs inside the app: no HTTP server, no wrk, no concurrency.
        probes = []
        for n in range(ctx.runs):
            web.resubscribe(runtime)
            probes.append(web.probe_one_click(runtime, server.unsubscribe_paths[n::3], 200))
            ctx.log(f"    one-click POST in-process probe run {n + 1}: {probes[-1]}")
    ctx.add(
        figure(
            "web.one_click_post.app_cpu_ms",
            [p.cpu_ms for p in probes],
            "CPU ms/req",
            scenario="web",
            label="One-click POST in-process (Flask test client): app CPU per request",
        )
    )
    ctx.add(
        figure(
            "web.one_click_post.sql_statements",
            [p.statements for p in probes],
            "per req",
            scenario="web",
            label="One-click POST in-process: SQL statements per request",
        )
    )
    ctx.add(
        figure(
            "web.one_click_post.pool_checkouts",
            [p.checkouts for p in probes],
            "per req",
            scenario="web",
            label="One-click POST in-process: connection checkouts (each pre-pinged) per request",
        )
    )
    for key, label, runs in (
        ("subscribe_get", "GET /subscribe", get_runs),
        ("one_click_post", "One-click POST /unsubscribe/<token>", post_runs),
    ):
        ctx.add(
            figure(
                f"web.{key}.req_per_s",
                [r.requests_per_s for r in runs],
                "req/s",
                scenario="web",
                label=f"{label}: requests/s",
            )
        )
        ctx.add(
            figure(
                f"web.{key}.p50_ms",
                [r.p50_ms for r in runs],
                "ms",
                scenario="web",
                label=f"{label}: p50 latency",
            )
        )
        p99 = figure(
            f"web.{key}.p99_ms",
            [r.p99_ms for r in runs],
            "ms",
            scenario="web",
            label=f"{label}: p99 latency",
        )
        errors = figure(
            f"web.{key}.errors",
            [float(r.errors) for r in runs],
            "errors",
            scenario="web",
            label=f"{label}: errors (non-2xx + socket) per run",
        )
        if key == "one_click_post":
            with_target(p99, "< 100 ms", lambda f: f.value < 100)
            with_target(errors, "0 in every run", lambda f: f.max == 0)
        ctx.add(p99)
        ctx.add(errors)


RUNNERS: dict[str, Callable[[Context], None]] = {
    "sink": scenario_sink,
    "ceiling": scenario_ceiling,
    "gazette": scenario_gazette,
    "obvious": scenario_obvious,
    "planning": scenario_planning,
    "csv": scenario_csv,
    "feed": scenario_feed,
    "web": scenario_web,
}


def run_all(ctx: Context, selected: Sequence[str]) -> bool:
    """Run the scenarios in order; a failing one is reported and the rest still run.

    Returns True when any scenario failed.
    """
    failed = False
    try:
        for name in selected:
            ctx.log(f"\n== {name} ==")
            began = time.perf_counter()
            try:
                RUNNERS[name](ctx)
            except Exception as error:
                failed = True
                traceback.print_exc()
                ctx.notes.append(f"The {name} scenario failed: {error.__class__.__name__}: {error}")
            ctx.timings[name] = time.perf_counter() - began
            ctx.log(f"   ({name} took {ctx.timings[name]:.0f} s)")
    finally:
        ctx.close()
    return failed or ctx.failed


def merged(ctx: Context, selected: Sequence[str], previous: Sequence[Figure]) -> list[Figure]:
    """This run's figures, plus the previous results of scenarios this run did not redo."""
    redone = set(selected)
    kept = [f for f in previous if f.scenario not in redone and f.name not in ctx.figures]
    order = {name: n for n, name in enumerate(SCENARIOS)}
    combined = [*ctx.figures.values(), *kept]
    return sorted(combined, key=lambda f: (order.get(f.scenario, 99), _sort_key(f)))


# Within a scenario, rows go by database, then size, then this order of metrics.
METRICS = (
    "capacity_msgs_per_s", "msgs_per_s", "of_ceiling", "vs_obvious", "cpu_ms_per_msg",
    "cpu_vs_ceiling", "peak_rss_mb", "plan_s", "machine_busy", "rows_per_s", "items_per_s",
    "req_per_s", "p50_ms", "p99_ms", "errors", "app_cpu_ms", "sql_statements", "pool_checkouts",
)  # fmt: skip


def _sort_key(f: Figure) -> tuple[int, int, int, str]:
    parts = f.name.split(".")
    database = 0 if "postgresql" in parts else 1 if "sqlite" in parts else 2
    if "subscribe_get" in parts:
        database = 3
    metric = METRICS.index(parts[-1]) if parts[-1] in METRICS else len(METRICS)
    return (database, f.subscribers or 0, metric, f.name)


def write_outputs(
    ctx: Context,
    selected: Sequence[str],
    *,
    partial: bool,
    command: str,
    seconds: float,
    results: Path | None = None,
    markdown: Path | None = None,
    plot: Path | None = None,
) -> list[Figure]:
    """latest.json, docs/benchmarks.md and docs/benchmarks.png for this run."""
    from benchmarks import report

    results = results or report.RESULTS
    markdown = markdown or report.MARKDOWN
    plot = plot or report.PLOT
    previous = report.load_previous(results) if partial else []
    figures = merged(ctx, selected, previous)
    report.write_json(figures, results)
    info = report.RunInfo(
        mode=ctx.sizes.mode,
        command=command,
        started=ctx.started,
        seconds=seconds,
        machine=report.machine(data.REDIS_URL, data.PG_URL),
        setup=dict(ctx.setup),
        notes=list(ctx.notes),
        profiles=list(ctx.profiles),
    )
    if ctx.sink_kind:
        info.machine["SMTP sink"] = ctx.sink_kind
    if ctx.timings:
        info.setup["Seconds per scenario"] = ", ".join(
            f"{name} {seconds:.0f}" for name, seconds in ctx.timings.items()
        )
    info.machine["Load average at the start (1, 5, 15 min)"] = ", ".join(
        f"{x:.2f}" for x in ctx.load_at_start
    )
    info.machine["Load average at the end, the benchmark's own included (1, 5, 15 min)"] = (
        ", ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    plotted = report.write_plot(
        figures, f"Gazette sending throughput ({ctx.sizes.mode} run, {ctx.started})", plot
    )
    report.write_markdown(figures, info, plotted, markdown)
    return figures
