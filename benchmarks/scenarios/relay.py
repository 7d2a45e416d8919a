"""The relay scenario: sending to a distant relay, smtp-sink behind the latency proxy.

One run starts ``benchmarks.harness.latency_proxy`` in front of the sink with half the
round trip as its one-way delay, sends one issue through real Celery workers (Gazette,
or the obvious approach on a sample) via the proxy, and reads back the proxy's own CPU
and the connections it forwarded. It draws its own chart, messages/s against the round
trip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.harness import timing
from benchmarks.harness.context import Chart, Context, Scenario
from benchmarks.harness.figures import Figure, FigureSpec, FigureTable, fmt
from benchmarks.harness.plots import Series, line_chart
from benchmarks.harness.processes import ROOT, child_env, free_port, stop_group, wait_for_port
from benchmarks.harness.report import this_run
from benchmarks.harness.sending import Approach, SendRun, send_once
from benchmarks.scenarios import gazette, obvious

if TYPE_CHECKING:
    from benchmarks.harness.report import RunInfo

RTTS_MS = (0, 5, 20, 50)
# Round trips a message costs on one connection: MAIL, RCPT, DATA and the final dot
# answered one by one, or two with PIPELINING (MAIL, RCPT and DATA in one write).
ROUND_TRIPS_PLAIN = 4
ROUND_TRIPS_PIPELINED = 2
# Messages per run: enough for several seconds at the expected rate; the obvious approach
# (a new connection per message) sends a sample.
GAZETTE_MESSAGES = 3000
ONE_CONNECTION_MESSAGES = 600
OBVIOUS_SAMPLE = 100
TARGET_RTT_MS = 20
TARGET_RATE = 300
# The connections curve is measured at the target round trip.
CONNECTION_COUNTS = (1, 10, 20)
DEFAULT_CONNECTIONS = 10
WORKER_PROCESSES = 2

FIGURES = FigureTable(
    "relay",
    {
        "rate": FigureSpec(
            "relay.{run}.msgs_per_s",
            "msg/s",
            "{label}: messages/s",
            f">= {TARGET_RATE}",
            lambda f: f.value >= TARGET_RATE,
        ),
        "connections": FigureSpec(
            "relay.{run}.connections",
            "connections",
            "{label}: connections opened per run (most open at once: {most_open})",
        ),
        "proxy_cpu": FigureSpec(
            "relay.{run}.proxy_cpu_ms_per_msg", "CPU ms/msg", "{label}: the proxy's own CPU"
        ),
        "bound": FigureSpec(
            "relay.{run}.bound_msgs_per_s",
            "msg/s",
            "{label}: latency's bound, {links} connections / ({trips} round trips x {rtt:g} ms)",
        ),
    },
)
METHOD = (
    "the gazette and obvious runs, sent through `benchmarks.harness.latency_proxy` (its own "
    "process: each chunk read is written to the other side at arrival + RTT/2, in order, "
    "without waiting for the chunk before it) to the same sink, at several round trips and "
    "connection counts (`GAZETTE_SMTP_CONNECTIONS`). Connections are those the proxy "
    "accepted; the proxy's CPU is psutil `cpu_times` of its process over the run; the bound "
    "is connections x processes / (2 round trips per pipelined message x RTT)."
)


class LatencyProxy:
    """The latency proxy in a process of its own, in front of 127.0.0.1:``target_port``."""

    def __init__(self, target_port: int, rtt_ms: float, folder: Path) -> None:
        self.port = free_port()
        self.rtt_ms = rtt_ms
        folder.mkdir(parents=True, exist_ok=True)
        self._stats = folder / f"proxy-{self.port}.json"
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "benchmarks.harness.latency_proxy", "--port", str(self.port),
                "--target", f"127.0.0.1:{target_port}", "--delay-ms", str(rtt_ms / 2),
                "--stats", str(self._stats),
            ],
            cwd=ROOT,
            env=child_env({}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_for_port(self.port, 30, self.process)
        except BaseException:
            stop_group(self.process, timeout=5)
            raise
        self.cpu_at_start = timing.cpu_seconds(self.process.pid) or 0.0

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """CPU the proxy used since it started listening."""
        return (timing.cpu_seconds(self.process.pid) or self.cpu_at_start) - self.cpu_at_start

    def stop(self) -> dict[str, int]:
        """Stop the proxy and return its counts (connections, most_open, ...)."""
        stop_group(self.process, timeout=10)
        try:
            stats: dict[str, int] = json.loads(self._stats.read_text())
        except (OSError, ValueError):
            stats = {}
        return stats


@dataclass(frozen=True)
class RelayRun:
    """One send through the proxy: the end-to-end run and what the proxy saw."""

    rtt_ms: float
    run: SendRun
    connections: int
    most_open: int
    proxy_cpu_seconds: float

    @property
    def proxy_cpu_ms_per_message(self) -> float:
        return self.proxy_cpu_seconds * 1000 / self.run.sent


def relay_once(
    approach: Approach,
    rtt_ms: float,
    sink_port: int,
    subscribers: int,
    folder: Path,
    *,
    connections: int | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
) -> RelayRun:
    """Send one issue with ``approach`` to the sink through a proxy of ``rtt_ms``."""
    proxy = LatencyProxy(sink_port, rtt_ms, folder)
    stats: dict[str, int] = {}
    try:
        settings = {} if connections is None else {"smtp_connections": str(connections)}
        run = send_once(
            approach, "postgresql", subscribers, proxy.url, folder,
            limit=limit, batch_size=batch_size, settings=settings,
        )  # fmt: skip
        cpu = proxy.cpu_seconds()
    finally:
        stats = proxy.stop()
    return RelayRun(rtt_ms, run, stats.get("connections", 0), stats.get("most_open", 0), cpu)


def bound(connections: int, round_trips: int, rtt_ms: float) -> float | None:
    """Messages/s latency alone allows: connections / (round trips per message x RTT)."""
    if rtt_ms <= 0:
        return None
    return connections * 1000 / (round_trips * rtt_ms)


def _sink_port(ctx: Context) -> int:
    """The port of the sink the proxies forward to (started on first use)."""
    url = ctx.ensure_sink()
    return int(url.rsplit(":", 1)[1])


def run(ctx: Context) -> None:
    """Gazette and the obvious approach to smtp-sink behind the latency proxy."""
    port = _sink_port(ctx)
    ctx.setup["Relay latency"] = (
        f"`benchmarks.harness.latency_proxy` (asyncio, each chunk forwarded at arrival + "
        f"RTT/2 each way, in order, chunks overlapping) in front of the sink at "
        f"{', '.join(str(r) for r in RTTS_MS)} ms round trips; Gazette sends "
        f"{GAZETTE_MESSAGES:,} messages per run ({ONE_CONNECTION_MESSAGES} with one "
        f"connection per process), the obvious approach a sample of {OBVIOUS_SAMPLE}; "
        f"PostgreSQL ledger, {WORKER_PROCESSES} worker processes"
    )
    runs: list[tuple[Approach, int | None, float]] = [
        (gazette.SENDER, DEFAULT_CONNECTIONS, rtt) for rtt in RTTS_MS
    ]
    runs += [
        (gazette.SENDER, c, TARGET_RTT_MS) for c in CONNECTION_COUNTS if c != DEFAULT_CONNECTIONS
    ]
    runs += [(obvious.SENDER, None, rtt) for rtt in RTTS_MS]
    for approach, connections, rtt in runs:
        what = f"{approach.name} at {rtt:g} ms" + (
            f", {connections} connections" if connections else ""
        )
        with ctx.attempt(f"relay: {what}"):
            _figures(ctx, approach, connections, rtt, port, what)


def _figures(
    ctx: Context, approach: Approach, connections: int | None, rtt: float, port: int, what: str
) -> None:
    """Send ``ctx.runs`` issues through a proxy of ``rtt``; record rate, connections, CPU."""
    if approach is gazette.SENDER:
        assert connections is not None
        count = GAZETTE_MESSAGES if connections > 1 else ONE_CONNECTION_MESSAGES
        limit = None
    else:
        count, limit = OBVIOUS_SAMPLE, OBVIOUS_SAMPLE
    results = []
    for n in range(ctx.runs):
        folder = ctx.folder("relay", f"{approach.name}-{rtt:g}-{connections}-{n}")
        result = relay_once(
            approach, rtt, port, count, folder, connections=connections, limit=limit
        )
        ctx.log(
            f"    relay {what} run {n + 1}/{ctx.runs}: {result.run.rate:.1f} msg/s, "
            f"{result.connections} connections, proxy "
            f"{result.proxy_cpu_ms_per_message:.3f} CPU ms/msg"
        )
        results.append(result)
    who = "Gazette" if approach is gazette.SENDER else "obvious approach"
    name = f"rtt{rtt:g}.{approach.name}" + (f".c{connections}" if connections else "")
    label = f"Relay {rtt:g} ms away, {who}" + (
        f", {connections} connection{'s' if connections != 1 else ''} per process"
        if connections
        else ""
    )
    # Only Gazette's rate at the target round trip, with the default connections, has one.
    targeted = (
        approach is gazette.SENDER and rtt == TARGET_RTT_MS and connections == DEFAULT_CONNECTIONS
    )

    def register(key: str, samples: Sequence[float], **more: object) -> None:
        """One figure of this approach, round trip and connection count."""
        FIGURES.register(
            ctx, key, samples, subscribers=count, targeted=targeted, run=name, label=label,
            rtt=rtt, **more,
        )  # fmt: skip

    register("rate", [r.run.rate for r in results])
    register(
        "connections", [r.connections for r in results],
        most_open=max(r.most_open for r in results),
    )  # fmt: skip
    register("proxy_cpu", [r.proxy_cpu_ms_per_message for r in results])
    if approach is gazette.SENDER and connections is not None:
        links = connections * WORKER_PROCESSES
        limit_rate = bound(links, ROUND_TRIPS_PIPELINED, rtt)
        if limit_rate is not None:
            register("bound", [limit_rate], links=links, trips=ROUND_TRIPS_PIPELINED)


def findings(figures: Sequence[Figure], info: RunInfo) -> list[str]:
    """Each round trip's rate against the bound latency alone sets, from this run."""
    found = this_run(figures, info)
    rows = []
    for rtt in RTTS_MS:
        rate = found.get(f"relay.rtt{rtt:g}.gazette.c{DEFAULT_CONNECTIONS}.msgs_per_s")
        slow = found.get(f"relay.rtt{rtt:g}.obvious.msgs_per_s")
        limit = found.get(f"relay.rtt{rtt:g}.gazette.c{DEFAULT_CONNECTIONS}.bound_msgs_per_s")
        if rate is None:
            continue
        rows.append(
            f"| {rtt:g} ms | {fmt(rate.value)} | {fmt(slow.value) if slow else ''} | "
            f"{fmt(limit.value) if limit else '(no latency)'} | "
            f"{f'{rate.value / limit.value:.0%}' if limit else ''} |"
        )
    if not rows:
        return []
    return [
        "**A distant relay.** Messages/s through the latency proxy, Gazette with "
        f"{DEFAULT_CONNECTIONS} SMTP connections per worker process, against the bound "
        "latency alone sets (connections / (round trips per message x RTT)):",
        "",
        "| RTT | Gazette msg/s | obvious msg/s | bound msg/s | of the bound |",
        "|---:|---:|---:|---:|---:|",
        *rows,
        "",
        *_by_connections(found),
    ]


def _by_connections(found: dict[str, Figure]) -> list[str]:
    """The connections curve at the target round trip, against the same bound."""
    rows = []
    for connections in CONNECTION_COUNTS:
        run = f"relay.rtt{TARGET_RTT_MS}.gazette.c{connections}"
        rate = found.get(f"{run}.msgs_per_s")
        limit = found.get(f"{run}.bound_msgs_per_s")
        if rate is None or limit is None:
            continue
        rows.append(
            f"| {connections} | {fmt(rate.value)} | {fmt(limit.value)} | "
            f"{rate.value / limit.value:.0%} |"
        )
    if not rows:
        return []
    return [
        f"At {TARGET_RTT_MS} ms, by SMTP connections per worker process "
        f"({WORKER_PROCESSES} processes):",
        "",
        "| connections per process | Gazette msg/s | bound msg/s | of the bound |",
        "|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def _points(found: dict[str, Figure], suffix: str) -> list[tuple[float, Figure]]:
    """(round trip, figure) of ``relay.rtt<RTT><suffix>`` for each round trip measured."""
    named = ((rtt, found.get(f"relay.rtt{rtt:g}{suffix}")) for rtt in RTTS_MS)
    return [(float(rtt), f) for rtt, f in named if f is not None]


def draw(figures: Sequence[Figure], when: str, path: Path) -> bool:
    """Messages/s against the round trip: Gazette, the obvious approach, the bound."""
    found = {f.name: f for f in figures if f.scenario == "relay"}
    series = [
        Series(label, colour, "o", _points(found, suffix))
        for label, suffix, colour in (
            (
                f"Gazette, {DEFAULT_CONNECTIONS} connections/process",
                f".gazette.c{DEFAULT_CONNECTIONS}.msgs_per_s",
                "#1d4ed8",
            ),
            ("Obvious approach", ".obvious.msgs_per_s", "#b91c1c"),
            (
                "Bound (connections / 2 RTT)",
                f".gazette.c{DEFAULT_CONNECTIONS}.bound_msgs_per_s",
                "#6b7280",
            ),
        )
    ]
    return line_chart(
        path, series,
        title="Sending to a distant relay (smtp-sink behind the latency proxy)",
        xlabel="round trip to the relay (ms)", log_x=False,
    )  # fmt: skip


SCENARIO = Scenario(
    "relay", run, FIGURES, METHOD, findings,
    chart=Chart("benchmarks-relay.png", "Messages/s against the relay's round trip", draw),
)  # fmt: skip
