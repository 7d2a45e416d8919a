"""The sink scenario: start the SMTP sink, and time its capacity with Postfix's C client.

Every mail scenario sends to the sink this starts (``Context.ensure_sink``); its capacity
tells whether the sink, rather than the sender, could be what limits a rate.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.harness import seeding
from benchmarks.harness.context import Context, Scenario
from benchmarks.harness.figures import Figure, FigureSpec, FigureTable, fmt
from benchmarks.harness.report import headline, this_run
from benchmarks.harness.servers import smtp_source_path
from benchmarks.scenarios.ceiling import corpus

if TYPE_CHECKING:
    from benchmarks.harness.report import RunInfo

FIGURES = FigureTable(
    "sink",
    {
        "capacity": FigureSpec(
            "sink.capacity_msgs_per_s",
            "msg/s",
            "Sink capacity: smtp-source (C, 2 sessions) into {kind}, {total:,} messages",
        ),
    },
)
METHOD = (
    "Postfix `smtp-sink` on a free loopback port in its own process "
    "(`benchmarks.harness.servers`, aiosmtpd, when smtp-sink is missing). Its capacity is "
    "timed with Postfix's C client `smtp-source` (2 sessions, connections reused) sending "
    "one of the benchmark messages."
)


def smtp_source_rate(program: str, message: bytes, total: int, port: int, folder: Path) -> float:
    """Messages/s Postfix's C client (smtp-source, 2 sessions, reused) gets into the sink."""
    path = folder / "message.eml"
    # smtp-source appends CRLF to each line itself and dot-stuffs.
    path.write_bytes(message.replace(b"\r\n", b"\n"))
    began = time.perf_counter()
    subprocess.run(
        [
            program,
            "-4",
            "-d",
            "-s",
            "2",
            "-m",
            str(total),
            "-F",
            str(path),
            "-f",
            seeding.FROM_ADDRESS,
            "-t",
            "reader@example.org",
            f"127.0.0.1:{port}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=600,
    )
    return total / (time.perf_counter() - began)


def run(ctx: Context) -> None:
    """Start the sink; time its capacity with Postfix's C client when both are there."""
    ctx.ensure_sink()
    program = smtp_source_path()
    if ctx.sink is None or not ctx.sink.kind.startswith("Postfix") or program is None:
        ctx.notes.append(
            f"Sink capacity not measured: it needs Postfix's smtp-sink and smtp-source "
            f"(sink in this run: {ctx.sink_kind})."
        )
        return
    messages = corpus(ctx)
    message = messages.messages[len(messages.messages) // 2][1]
    total = ctx.sizes.sink_messages
    port = ctx.sink.port
    folder = ctx.folder("sink")
    samples = ctx.repeat(
        "smtp-source", lambda _n: smtp_source_rate(program, message, total, port, folder)
    )
    FIGURES.register(ctx, "capacity", samples, kind=ctx.sink_kind, total=total)


def findings(figures: Sequence[Figure], info: RunInfo) -> list[str]:
    """The sink's capacity against the ceiling's rate, when this run measured both."""
    current = this_run(figures, info)
    sink = current.get("sink.capacity_msgs_per_s")
    ceiling = headline(current, "ceiling", "msgs_per_s")
    if sink is None or ceiling is None:
        return []
    verdict = (
        "so the sink was not what limited the ceiling"
        if sink.value > ceiling.value
        else "no faster than the ceiling, so the sink may be what limits it"
    )
    return [
        f"**The sink.** Postfix's C client (smtp-source) pushed {fmt(sink.value)} "
        f"messages/s into it, {fmt(sink.value / ceiling.value)} times the ceiling's "
        f"{fmt(ceiling.value)} at {ceiling.subscribers:,} subscribers, {verdict}.",
        "",
    ]


SCENARIO = Scenario("sink", run, FIGURES, METHOD, findings)
