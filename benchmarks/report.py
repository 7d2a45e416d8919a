"""Outputs of a run: results/latest.json, docs/benchmarks.md and docs/benchmarks.png."""

from __future__ import annotations

import json
import os
import platform
import re
import sqlite3
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import procstat
from benchmarks.core import Figure, fmt
from benchmarks.procs import ROOT
from benchmarks.profile import ProfileSummary
from benchmarks.web import PROCESSES as WEB_PROCESSES

RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
WORKER_PROCESSES = 2
MARKDOWN = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "benchmarks.png"


@dataclass
class RunInfo:
    """What the report says about the run besides its figures."""

    mode: str
    command: str
    started: str
    seconds: float = 0.0
    machine: dict[str, str] = field(default_factory=dict)
    setup: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    profiles: list[ProfileSummary] = field(default_factory=list)


def _first_line(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def machine(redis_url: str, pg_url: str) -> dict[str, str]:
    """Cores, memory, CPU model and the versions of everything a figure depends on."""
    info: dict[str, str] = {}
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["CPU"] = f"{os.cpu_count()} cores" + (f" ({model})" if model else "")
    info["Memory"] = f"{procstat.memory_total() / 2**30:.1f} GiB"
    info["OS"] = f"{platform.system()} {platform.release()}"
    info["Python"] = platform.python_version()
    try:
        import redis

        client = redis.Redis.from_url(redis_url)
        info["Redis"] = str(client.info("server").get("redis_version", "unknown"))
        client.close()
    except Exception as error:
        info["Redis"] = f"unreachable ({error.__class__.__name__})"
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(pg_url)
        with engine.connect() as connection:
            info["PostgreSQL"] = str(connection.execute(text("SHOW server_version")).scalar())
        engine.dispose()
    except Exception as error:
        info["PostgreSQL"] = f"unreachable ({error.__class__.__name__})"
    info["SQLite"] = sqlite3.sqlite_version
    commit = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    info["Gazette"] = f"{commit}{' with uncommitted changes' if dirty else ''}"
    return info


# -- latest.json ------------------------------------------------------------------------


def load_previous(path: Path = RESULTS) -> list[Figure]:
    """Figures of the last run, to keep the rows a partial (--only) run did not redo."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    known = set(Figure.__dataclass_fields__)
    figures = []
    for item in raw if isinstance(raw, list) else []:
        try:
            figures.append(Figure(**{k: v for k, v in item.items() if k in known}))
        except TypeError:
            continue
    return figures


def write_json(figures: Sequence[Figure], path: Path = RESULTS) -> None:
    """results/latest.json: a list of figure objects."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([f.as_json() for f in figures], indent=2, ensure_ascii=False) + "\n")


# -- docs/benchmarks.png ------------------------------------------------------------------


def _series(figures: Sequence[Figure], pattern: str) -> list[Figure]:
    matcher = re.compile(pattern)
    found = [f for f in figures if matcher.fullmatch(f.name) and f.subscribers]
    return sorted(found, key=lambda f: f.subscribers or 0)


SERIES = (
    ("Ceiling (pre-rendered, smtplib, 2 processes)", r"ceiling\.n\d+\.msgs_per_s", "#6b7280", "s"),
    ("Gazette, PostgreSQL ledger", r"gazette\.postgresql\.n\d+\.msgs_per_s", "#1d4ed8", "o"),
    ("Gazette, SQLite ledger", r"gazette\.sqlite\.n\d+\.msgs_per_s", "#0891b2", "D"),
    ("Obvious approach, PostgreSQL", r"obvious\.postgresql\.n\d+\.msgs_per_s", "#b91c1c", "^"),
    ("Obvious approach, SQLite", r"obvious\.sqlite\.n\d+\.msgs_per_s", "#ea580c", "v"),
)


def write_plot(figures: Sequence[Figure], title: str, path: Path = PLOT) -> bool:
    """Messages/s against subscribers, with min-max bars; False when nothing to plot."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    fig, axes = plt.subplots(figsize=(8, 5), dpi=120)
    plotted = False
    for label, pattern, colour, marker in SERIES:
        series = _series(figures, pattern)
        if not series:
            continue
        xs = [f.subscribers or 0 for f in series]
        ys = [f.value for f in series]
        errors = [[f.value - f.min for f in series], [f.max - f.value for f in series]]
        axes.errorbar(
            xs, ys, yerr=errors, label=label, color=colour, marker=marker, capsize=4, linewidth=1.5
        )
        plotted = True
    if not plotted:
        plt.close(fig)
        return False
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("subscribers in the issue")
    axes.set_ylabel("messages per second (median, min-max)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


# -- docs/benchmarks.md -------------------------------------------------------------------


def _cell(value: float, unit: str) -> str:
    if unit == "share":
        return f"{value:.0%}"
    if unit == "x":
        return f"{fmt(value)}x"
    if unit in ("errors",):
        return f"{value:.0f}"
    return f"{fmt(value)} {unit}"


def _command(fig: Figure) -> str:
    full = " --full" if fig.mode == "full" else ""
    return f"`python -m benchmarks.run --only {fig.scenario}{full}`"


def _target(fig: Figure) -> str:
    if fig.target is None:
        return ""
    if fig.met is None:
        return fig.target
    return f"{fig.target}: **{'met' if fig.met else 'missed'}**"


def table(figures: Sequence[Figure], current: RunInfo) -> list[str]:
    lines = [
        "| Figure | Median | Min | Max | Runs | Target | Reproduce |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for f in figures:
        label = f.label
        if f.recorded_at and f.recorded_at != current.started:
            label += f" *(earlier {f.mode} run, {f.recorded_at})*"
        lines.append(
            f"| {label}<br>`{f.name}` | {_cell(f.value, f.unit)} | {_cell(f.min, f.unit)} | "
            f"{_cell(f.max, f.unit)} | {f.runs} | {_target(f)} | {_command(f)} |"
        )
    return lines


def _by_name(figures: Sequence[Figure]) -> dict[str, Figure]:
    return {f.name: f for f in figures}


def _headline(figures: Sequence[Figure], prefix: str, suffix: str) -> Figure | None:
    pattern = re.compile(re.escape(prefix) + r"\.n(\d+)\." + re.escape(suffix))
    matches = [(int(m.group(1)), f) for f in figures if (m := pattern.fullmatch(f.name))]
    return max(matches, key=lambda pair: pair[0])[1] if matches else None


def limits(figures: Sequence[Figure], info: RunInfo) -> list[str]:
    """'What limits it now', written from this run's figures and profile."""
    out: list[str] = []
    missed = [f for f in figures if f.met is False]
    if missed:
        out.append("Targets missed in this run:")
        out.append("")
        for f in missed:
            out.append(f"- {f.label}: {_cell(f.value, f.unit)} against {f.target}.")
        out.append("")
    else:
        out.append("Every target with a figure in this run is met.")
        out.append("")
    # Only the load before the first scenario tells of other work: by the end it counts
    # the benchmark's own processes and threads (the last scenario runs 50 connections).
    busy_at = [
        float(v.split(",")[0])
        for k, v in info.machine.items()
        if k.startswith("Load average at the start")
    ]
    cores = os.cpu_count() or 1
    if busy_at and max(busy_at) > cores / 2:
        out.append(
            f"**A shared machine.** Other work was running when this run started (1-minute "
            f"load average {max(busy_at):.1f} on {cores} cores), so absolute rates, latencies, "
            "their spread, and even CPU time per message (shared cores do less per CPU "
            "second) are worse than on an idle machine; ratios of figures taken in the "
            "same run are the more robust numbers."
        )
        out.append("")
    g_rate = _headline(figures, "gazette.postgresql", "msgs_per_s")
    g_cpu = _headline(figures, "gazette.postgresql", "cpu_ms_per_msg")
    g_busy = _headline(figures, "gazette.postgresql", "machine_busy")
    c_rate = _headline(figures, "ceiling", "msgs_per_s")
    c_cpu = _headline(figures, "ceiling", "cpu_ms_per_msg")
    compose = _by_name(figures).get("compose.cpu_ms_per_msg")
    sink = _by_name(figures).get("sink.capacity_msgs_per_s")
    if g_rate and g_cpu and c_rate and c_cpu:
        used = g_rate.value * g_cpu.value / 1000
        out.append(
            f"**Where the time goes.** At {g_rate.subscribers:,} subscribers on PostgreSQL "
            f"Gazette sent {fmt(g_rate.value)} messages/s (the ceiling: {fmt(c_rate.value)}), "
            f"spending {fmt(g_cpu.value)} ms of worker CPU per message (main process and "
            f"pool children) against {fmt(c_cpu.value)} ms for the ceiling's bare SMTP "
            f"client: {fmt(g_cpu.value / c_cpu.value)} times as much. At that rate the "
            f"worker kept {fmt(used)} of the {cores} cores busy"
            + (
                f", while the machine as a whole was {g_busy.value:.0%} busy (the sink, "
                "Redis, PostgreSQL, this harness, and anything else running)."
                if g_busy is not None
                else "."
            )
        )
        if used < 0.8 * WORKER_PROCESSES:
            out.append(
                f"The worker's {WORKER_PROCESSES} pool processes were on CPU "
                f"{used / WORKER_PROCESSES:.0%} of the time: each sends its batch one "
                "message at a time (three commands that each wait for the relay's reply, "
                "then the message; the next message is built while the relay answers for "
                "that one; a ledger write every 50 messages), so it idles while the sink, "
                "the database or a busy machine answers."
            )
        if compose is not None:
            out.append(
                f"Composing alone (Composer.compose: personalise the issue's shared render, "
                f"then write the MIME bytes) costs {fmt(compose.value)} CPU ms per message in "
                f"a single process: {fmt(100 * compose.value / g_cpu.value)}% of the "
                "worker's CPU per message, and "
                f"{fmt(compose.value / c_cpu.value)} times the ceiling client's whole cost."
            )
        if sink is not None:
            out.append(
                f"The sink is not the limit: Postfix's own C client (smtp-source) pushes "
                f"{fmt(sink.value)} messages/s of the same size into it; the ceiling's "
                "smtplib-based clients are slower because they wait for four replies per "
                "message."
            )
        out.append("")
    for profile in info.profiles:
        if profile.kind == "sending" and profile.samples:
            out.extend(_profile_table(profile))
            out.extend(_diagnosis(profile))
    out.extend(_obvious(figures))
    out.extend(_planning(figures))
    out.extend(_csv(figures, [p for p in info.profiles if p.kind == "import"]))
    out.extend(_web(figures))
    if info.notes:
        out.append("Notes:")
        out.append("")
        out.extend(f"- {note}" for note in info.notes)
    return out


def _profile_table(profile: ProfileSummary) -> list[str]:
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


def _obvious(figures: Sequence[Figure]) -> list[str]:
    speedup = _headline(figures, "gazette.postgresql", "vs_obvious")
    g_cpu = _headline(figures, "gazette.postgresql", "cpu_ms_per_msg")
    o_cpu = _headline(figures, "obvious.postgresql", "cpu_ms_per_msg")
    if speedup is None or g_cpu is None or o_cpu is None:
        return []
    return [
        f"**Against the obvious approach.** Gazette sent {fmt(speedup.value)} times as many "
        f"messages per second at {speedup.subscribers:,} subscribers. Per message the "
        f"obvious approach's workers spend {fmt(o_cpu.value)} CPU ms (a full Jinja render, "
        f"`EmailMessage` with the SMTP policy, a new SMTP connection, a session and three "
        f"queries), Gazette's {fmt(g_cpu.value)}: {fmt(o_cpu.value / g_cpu.value)} times "
        "less."
        + (
            " On two busy cores the throughput ratio follows the CPU ratio, so the 10x "
            "target needs Gazette's CPU per message down as well (see above)."
            if speedup.met is False
            else ""
        ),
        "",
    ]


def _planning(figures: Sequence[Figure]) -> list[str]:
    pg = _headline(figures, "planning.postgresql", "plan_s")
    lite = _headline(figures, "planning.sqlite", "plan_s")
    if pg is None:
        return []
    rows = pg.subscribers or 0
    text = (
        f"**Planning.** The audience INSERT ... SELECT of {rows:,} rows takes "
        f"{fmt(pg.value)} s on PostgreSQL ({fmt(rows / pg.value)} rows/s)"
    )
    if lite is not None and lite.subscribers == rows:
        text += f" and {fmt(lite.value)} s on SQLite"
    text += (
        "; on PostgreSQL each inserted row also fires the two foreign-key checks "
        "(issue, subscriber) and updates three indexes (primary key, the unique "
        "(issue, subscriber) pair and (issue, status))."
    )
    if pg.met is False:
        text += (
            " Dropping the ledger's secondary index before a very large plan, or "
            "deferring the foreign-key checks, would be the levers; both need measuring."
        )
    return [text, ""]


def _csv(figures: Sequence[Figure], profiles: Sequence[ProfileSummary]) -> list[str]:
    rate = _by_name(figures).get("csv.sqlite.rows_per_s")
    if rate is None:
        return []
    out = [
        f"**CSV import.** {fmt(rate.value)} rows/s over the whole command (start-up, a "
        "first pass that checks the file, then validation and bulk writes per 1,000 rows).",
        "",
    ]
    for profile in profiles:
        if not profile.samples:
            continue
        out.extend(_profile_table(profile))
        validation = profile.share("address validation (email_validator)")
        if validation >= 0.2:
            out += [
                f"- **Address validation ({validation:.0%}).** `gazette.addresses."
                "normalise_address` calls `email_validator.validate_email` for every row, "
                "which checks the domain character by character (`uts46_valid_char`) "
                "each time. Imported lists repeat a handful of domains; validating each "
                "distinct domain once (an `lru_cache` on the domain part) and only the local "
                "part per row would remove most of this.",
                "",
            ]
        database = profile.share("database (SQLAlchemy, sqlite3)")
        if database >= 0.2:
            out += [
                f"- **Writing ({database:.0%}).** Each chunk inserts subscribers, "
                "subscriptions and events (three rows per new reader) through the ORM's "
                "bulk INSERT path (`session.execute(insert(Model), rows)`), which does "
                "per-row bookkeeping (`_collect_insert_commands`, per-value type "
                "processing); Core `insert(Model.__table__)` with the same rows skips it.",
                "",
            ]
    return out


def _web(figures: Sequence[Figure]) -> list[str]:
    by_name = _by_name(figures)
    rate = by_name.get("web.one_click_post.req_per_s")
    p99 = by_name.get("web.one_click_post.p99_ms")
    cpu = by_name.get("web.one_click_post.app_cpu_ms")
    statements = by_name.get("web.one_click_post.sql_statements")
    checkouts = by_name.get("web.one_click_post.pool_checkouts")
    if rate is None or p99 is None:
        return []
    text = (
        f"**One-click unsubscribe.** With 50 connections, {fmt(rate.value)} requests/s "
        f"means each waits about {fmt(50_000 / rate.value)} ms on average (Little's law), "
        f"and the p99 is {fmt(p99.value)} ms"
    )
    if p99.met is False:
        text += (
            f"; a p99 under 100 ms at this concurrency needs roughly "
            f"{fmt(50_000 / 100 * 1.5)} requests/s or more"
        )
    text += "."
    if cpu is not None and statements is not None and checkouts is not None:
        text += (
            f" In-process, without HTTP, one POST costs {fmt(cpu.value)} ms of the app's "
            f"CPU and issues {fmt(statements.value)} SQL statements (built once, over the "
            f"tables) in {fmt(checkouts.value)} pool checkout, pinged first "
            "(pool_pre_ping), plus BEGIN and COMMIT. The threads of one waitress process "
            f"share one GIL, so one process tops out near {fmt(1000 / cpu.value)} "
            f"requests/s before any database wait; the benchmark runs {WEB_PROCESSES} "
            "(`gazette serve --processes`), and wrk, PostgreSQL and the app share the 2 "
            "cores, so past that every round trip to the database (client, server and "
            "kernel CPU) is what the rate pays for."
        )
    return [text, ""]


def _diagnosis(profile: ProfileSummary) -> list[str]:
    """Plain-language reading of the profile: what to change, in order of payoff."""
    shares = dict(profile.shares())
    out: list[str] = ["What to change, in order of payoff:", ""]
    mime = shares.get("MIME writing (gazette/mime.py)", 0.0)
    if mime >= 0.15:
        out.append(
            f"- **MIME writing ({mime:.0%}).** The shared lines of both bodies are "
            "quoted-printable encoded once per render; per reader only the few lines "
            "holding the greeting and links are encoded, and the headers written. What is "
            "left is joining those pieces into one message: a writer that sent the pieces "
            "to the socket without joining them would save the copy."
        )
    compose = shares.get("composing (composer, rendering, tokens)", 0.0)
    if compose >= 0.10:
        out.append(
            f"- **Composing ({compose:.0%}).** Per reader: two signed tokens (HMAC-SHA1 "
            "with keys derived once) and three marker substitutions in the lines that "
            "hold them."
        )
    database = shares.get("database (SQLAlchemy, driver)", 0.0)
    if database >= 0.10:
        out.append(
            f"- **Database ({database:.0%}).** Per 50-message chunk, in one pool checkout: "
            "a Core executemany UPDATE of the ledger for the chunk just sent (committed), "
            "then one query for the next chunk's readers and their topics; larger chunks "
            "would cut this at the price of more re-sent messages after a crash."
        )
    smtp = shares.get("SMTP client (smtplib, sockets)", 0.0)
    if smtp >= 0.10:
        out.append(
            f"- **SMTP client ({smtp:.0%}).** `gazette.mailer.transmit` sends the same "
            "commands as smtplib's `sendmail`, without its dot-stuffing regex and, for "
            "the messages gazette.mime builds (DotSafe), without any scan at all; the "
            "ceiling sends the same way. What is left is smtplib's own work for four "
            "round trips per message (MAIL, RCPT, DATA, the message). ESMTP PIPELINING "
            "(RFC 2920) would send the first three in one write, for Gazette and the "
            "ceiling alike."
        )
    celery = shares.get("Celery, kombu, Redis client", 0.0)
    if celery >= 0.10:
        out.append(f"- **Celery and Redis ({celery:.0%}).**")
    if len(out) == 2:
        return []
    out.append("")
    return out


def write_markdown(
    figures: Sequence[Figure], info: RunInfo, plotted: bool, path: Path = MARKDOWN
) -> None:
    """docs/benchmarks.md: the machine, the table, the plot, and what limits it now."""
    minutes, seconds = divmod(round(info.seconds), 60)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/run.py`; do not edit by hand (every run rewrites it).",
        f"This run: `{info.command}` ({info.mode}), started {info.started}, "
        f"took {minutes} min {seconds:02d} s.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in info.machine.items()]
    lines += ["", "## Setup", ""]
    lines += [f"- {key}: {value}" for key, value in info.setup.items()]
    lines += ["", "## Results", ""]
    lines += table(figures, info)
    lines += [
        "",
        "Each figure is the median of its runs, with their minimum and maximum. Ratios "
        "divide two medians of the same run; their min and max pair the opposite "
        "extremes (min = min/max, max = max/min).",
        "",
    ]
    if plotted:
        lines += ["![Messages/s against subscribers](benchmarks.png)", ""]
    lines += ["## What limits it now", ""]
    lines += limits(figures, info)
    lines += ["", "## How each figure is measured", ""]
    lines += METHOD
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")


METHOD = [
    "- **sink**: Postfix `smtp-sink` on a free loopback port in its own process "
    "(`benchmarks.sink`, aiosmtpd, when smtp-sink is missing). Its capacity is timed with "
    "Postfix's C client `smtp-source` (2 sessions, connections reused) sending one of the "
    "benchmark messages.",
    "- **ceiling**: digest messages composed by Gazette's own `Composer` from a seeded "
    "database (pre-rendered before the clock starts; the time per message is the compose "
    "figure), then pushed over one reused `smtplib` connection per process by 2 "
    "processes, with `gazette.mailer.transmit` (sendmail's commands, no dot-stuffing "
    "regex). The senders' CPU is psutil `cpu_times` of the two processes. A run sends "
    "as many messages as the issue has subscribers, cycling through the pre-rendered ones, "
    "capped (see Setup) since its rate does not depend on the count.",
    "- **gazette**: N readers bulk-seeded (COPY / executemany), the benchmark articles, "
    "`gazette.digests.plan_issue`, then `worker.tasks.enqueue_issue` to real `celery -A "
    "worker worker --concurrency 2 --pool prefork` processes on Redis (a queue of its own "
    "per run), the ledger on a fresh PostgreSQL schema or SQLite file per run. Messages/s "
    "run from just before the first enqueue to max(delivery.sent_at). Worker CPU is the "
    "worker's main process plus its pool children; peak RSS is the largest VmHWM among the "
    "pool children, sampled every 0.25 s.",
    "- **obvious**: `benchmarks/naive.py` on its own Celery app (`benchmarks.naive_app`, "
    "Celery's defaults), 2 worker processes, the same seeding, plan and sink; one task per "
    "message that opens a session, loads the reader and the articles, renders Gazette's "
    "templates with Jinja, builds an `EmailMessage` (policy SMTP) and opens a new SMTP "
    "connection. It sends a sample of the planned issue (see Setup), timed the same way.",
    "- **planning**: `plan_issue` into an empty ledger over a bulk-seeded subscriber table "
    "(COPY on PostgreSQL, executemany on SQLite), plan and commit.",
    "- **csv**: `python -m gazette subscribers import FILE --confirmed` in its own process "
    "on SQLite after `init` and `newsletters add`; rows/s over every row of the file (1% "
    "invalid), peak RSS from `getrusage(RUSAGE_CHILDREN)` in a wrapper process.",
    "- **feed**: one RSS 2.0 document through `gazette.feeds.ingest_document` into a fresh "
    "database, parse and store in one transaction.",
    "- **web**: `python -m gazette serve` (waitress, 8 threads) on PostgreSQL, `wrk -t2 "
    "-c50 --latency`; the one-click POST rotates through unsubscribe tokens of distinct "
    "readers who each have a pending delivery (resubscribed between runs). Errors are "
    "non-2xx responses plus socket errors.",
]
