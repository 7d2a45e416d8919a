"""Writing a run's outputs: benchmarks/results/latest.json, docs/benchmarks.md, the charts.

Every sentence the report writes under "What limits it now" is computed from the
figures of this run (the scenarios' ``findings``, and the missed targets and machine
load here), so the report never says more than the run shows; figures a partial run
kept from an earlier run are in the table, marked, but not in the findings.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sqlite3
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.harness import seeding, timing
from benchmarks.harness.figures import Figure, fmt
from benchmarks.harness.processes import ROOT
from benchmarks.harness.profiling import ProfileSummary

if TYPE_CHECKING:
    from benchmarks.harness.context import Context, Scenario

RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
MARKDOWN = ROOT / "docs" / "benchmarks.md"
CHARTS = ROOT / "docs"  # each scenario's chart, next to the markdown that shows it


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
    """The first line a command prints, or "unknown" when it cannot run."""
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
    info["Memory"] = f"{timing.memory_total() / 2**30:.1f} GiB"
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


# -- docs/benchmarks.md -------------------------------------------------------------------


def _cell(value: float, unit: str) -> str:
    """A value as a table cell shows it, with its unit."""
    if unit == "share":
        return f"{value:.0%}"
    if unit == "x":
        return f"{fmt(value)}x"
    if unit in ("errors",):
        return f"{value:.0f}"
    return f"{fmt(value)} {unit}"


def _command(fig: Figure) -> str:
    """The command that measures the figure again."""
    full = " --full" if fig.mode == "full" else ""
    return f"`python -m benchmarks.run --only {fig.scenario}{full}`"


def _target(fig: Figure) -> str:
    """The figure's target and whether it was met, for the table."""
    if fig.target is None:
        return ""
    if fig.met is None:
        return fig.target
    return f"{fig.target}: **{'met' if fig.met else 'missed'}**"


def table(figures: Sequence[Figure], current: RunInfo) -> list[str]:
    """The results table: one row per figure, earlier runs' rows marked."""
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


def this_run(figures: Sequence[Figure], info: RunInfo) -> dict[str, Figure]:
    """The figures this run recorded, by name: what findings may speak of."""
    return {f.name: f for f in figures if f.recorded_at == info.started}


def headline(current: Mapping[str, Figure], prefix: str, suffix: str) -> Figure | None:
    """The ``<prefix>.n<N>.<suffix>`` figure with the largest N, if any."""
    pattern = re.compile(re.escape(prefix) + r"\.n(\d+)\." + re.escape(suffix))
    matches = [(int(m.group(1)), f) for f in current.values() if (m := pattern.fullmatch(f.name))]
    return max(matches, key=lambda pair: pair[0])[1] if matches else None


def _load_at_start(info: RunInfo) -> float | None:
    """The 1-minute load average before the first scenario, from the machine lines."""
    for key, value in info.machine.items():
        if key.startswith("Load average at the start"):
            return float(value.split(",")[0])
    return None


def general_findings(figures: Sequence[Figure], info: RunInfo) -> list[str]:
    """Missed targets and the machine's load: what every report says first."""
    current = this_run(figures, info)
    if not current:
        return ["This run recorded no figures."]
    out: list[str] = []
    earlier = len(figures) - len(current)
    if earlier:
        ran = sorted({f.scenario for f in current.values()})
        out += [
            f"What follows reads this run's figures only ({', '.join(ran)}); the other "
            + ("row of the table is" if earlier == 1 else f"{earlier} rows of the table are")
            + " from earlier runs, as marked.",
            "",
        ]
    missed = [f for f in current.values() if f.met is False]
    if missed:
        out += ["Targets missed in this run:", ""]
        out += [f"- {f.label}: {_cell(f.value, f.unit)} against {f.target}." for f in missed]
    else:
        targeted = sum(1 for f in current.values() if f.met is not None)
        if targeted == 0:
            out.append("No figure of this run has a target.")
        elif targeted == 1:
            out.append("The one figure of this run with a target meets it.")
        else:
            out.append(f"All {targeted} figures of this run with a target meet it.")
    out.append("")
    # Only the load before the first scenario tells of other work: by the end it counts
    # the benchmark's own processes and threads.
    load = _load_at_start(info)
    cores = os.cpu_count() or 1
    if load is not None and load > cores / 2:
        out += [
            f"**A shared machine.** The 1-minute load average was {load:.1f} on {cores} cores "
            "when this run started: other work ran in the minute before it, and may have "
            "gone on beside it. So its absolute rates, latencies and CPU times may be those "
            "of a shared machine, and ratios of figures of the same run are the more "
            "comparable numbers.",
            "",
        ]
    return out


def write_markdown(
    figures: Sequence[Figure],
    info: RunInfo,
    scenarios: Sequence[Scenario],
    charts: Mapping[str, str],
    path: Path = MARKDOWN,
) -> None:
    """docs/benchmarks.md: machine, setup, the table, the charts, findings and method.

    ``charts`` maps each chart file drawn for this report to its title.
    """
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
    for filename, title in charts.items():
        lines += [f"![{title}]({filename})", ""]
    lines += ["## What limits it now", ""]
    lines += general_findings(figures, info)
    for scenario in scenarios:
        lines += scenario.findings(figures, info)
    if info.notes:
        lines += ["Notes:", ""]
        lines += [f"- {note}" for note in info.notes]
    lines += ["", "## How each figure is measured", ""]
    reported = {f.scenario for f in figures}
    lines += [f"- **{s.name}**: {s.method}" for s in scenarios if s.name in reported]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")


# -- merging a partial run with the previous results ---------------------------------------

# Within a scenario, rows go by database, then size, then this order of metrics.
METRICS = (
    "capacity_msgs_per_s", "msgs_per_s", "of_ceiling", "vs_obvious", "cpu_ms_per_msg",
    "cpu_vs_ceiling", "peak_rss_mb", "plan_s", "machine_busy", "rows_per_s", "items_per_s",
    "req_per_s", "p50_ms", "p99_ms", "errors", "app_cpu_ms", "sql_statements", "pool_checkouts",
)  # fmt: skip


def _sort_key(f: Figure) -> tuple[int, int, int, str]:
    """Where a figure's row goes within its scenario."""
    parts = f.name.split(".")
    database = 0 if "postgresql" in parts else 1 if "sqlite" in parts else 2
    if "subscribe_get" in parts:
        database = 3
    metric = METRICS.index(parts[-1]) if parts[-1] in METRICS else len(METRICS)
    return (database, f.subscribers or 0, metric, f.name)


def merged(
    ctx: Context, order: Sequence[str], selected: Sequence[str], previous: Sequence[Figure]
) -> list[Figure]:
    """This run's figures, plus the previous results of scenarios this run did not redo."""
    redone = set(selected)
    kept = [f for f in previous if f.scenario not in redone and f.name not in ctx.figures]
    rank = {name: n for n, name in enumerate(order)}
    combined = [*ctx.figures.values(), *kept]
    return sorted(combined, key=lambda f: (rank.get(f.scenario, 99), _sort_key(f)))


def write_outputs(
    ctx: Context,
    scenarios: Sequence[Scenario],
    selected: Sequence[str],
    *,
    partial: bool,
    command: str,
    seconds: float,
    results: Path = RESULTS,
    markdown: Path = MARKDOWN,
    charts: Path = CHARTS,
) -> list[Figure]:
    """latest.json, the markdown report and the scenarios' charts for this run."""
    previous = load_previous(results) if partial else []
    figures = merged(ctx, [s.name for s in scenarios], selected, previous)
    # The machine and the commit first: writing latest.json would make the tree dirty.
    info = RunInfo(
        mode=ctx.sizes.mode,
        command=command,
        started=ctx.started,
        seconds=seconds,
        machine=machine(seeding.REDIS_URL, seeding.PG_URL),
        setup=dict(ctx.setup),
        notes=list(ctx.notes),
        profiles=list(ctx.profiles),
    )
    write_json(figures, results)
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
    drawn: dict[str, str] = {}
    for scenario in scenarios:
        if scenario.chart is None:
            continue
        path = charts / scenario.chart.filename
        if scenario.chart.draw(figures, f"{ctx.sizes.mode} run, {ctx.started}", path):
            drawn[scenario.chart.filename] = scenario.chart.title
        else:
            path.unlink(missing_ok=True)  # no chart rather than a stale one
    write_markdown(figures, info, scenarios, drawn, markdown)
    return figures
