"""The ceiling: Gazette's own messages, pre-rendered, pushed over smtplib connections.

Two processes each keep one SMTP connection open and send their share as fast as the
sink takes it, with the cheapest smtplib dialogue there is (gazette.mail.smtp.transmit:
sendmail's commands without its dot-stuffing regex, which Gazette's messages never
need). Nothing is composed, queued or recorded while the clock runs, so no sender built
on smtplib can beat this on the same machine.
"""

from __future__ import annotations

import multiprocessing
import os
import smtplib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchmarks.harness import timing
from benchmarks.harness.context import Context, Scenario
from benchmarks.harness.figures import Figure, FigureSpec, FigureTable, fmt
from benchmarks.harness.messages import Corpus, prerender
from gazette.mail.smtp import transmit

if TYPE_CHECKING:
    from benchmarks.harness.report import RunInfo

FIGURES = FigureTable(
    "ceiling",
    {
        "compose": FigureSpec(
            "compose.cpu_ms_per_msg",
            "CPU ms/msg",
            "Composer.compose in one process (personalise + MIME bytes)",
        ),
        "rate": FigureSpec(
            "ceiling.n{subscribers}.msgs_per_s",
            "msg/s",
            "Ceiling at {subscribers:,} subscribers: pre-rendered, smtplib, 2 processes, "
            "{total:,} messages",
        ),
        "cpu": FigureSpec(
            "ceiling.n{subscribers}.cpu_ms_per_msg",
            "CPU ms/msg",
            "Ceiling at {subscribers:,} subscribers: client CPU per message",
        ),
    },
)
METHOD = (
    "digest messages composed by Gazette's own `Composer` from a seeded database "
    "(pre-rendered before the clock starts; the time per message is the compose figure), "
    "then pushed over one reused `smtplib` connection per process by 2 processes, with "
    "`gazette.mail.smtp.transmit` (sendmail's commands, no dot-stuffing regex). The "
    "senders' CPU is psutil `cpu_times` of the two processes. A run sends as many messages "
    "as the issue has subscribers, cycling through the pre-rendered ones, capped (see "
    "Setup) since its rate does not depend on the count."
)


@dataclass(frozen=True)
class CeilingRun:
    """One ceiling run: messages, wall seconds, client CPU seconds."""

    messages: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_ms_per_message(self) -> float:
        return self.cpu_seconds * 1000 / self.messages


def _send_share(
    corpus: Corpus,
    offset: int,
    count: int,
    port: int,
    barrier: Any,
    results: Any,
) -> None:
    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
    client.ehlo()
    messages = corpus.messages
    size = len(messages)
    barrier.wait()
    cpu_before = timing.cpu_seconds(os.getpid()) or 0.0
    began = time.time()
    for i in range(offset, offset + count):
        recipient, message = messages[i % size]
        transmit(client, corpus.sender, recipient, message)
    ended = time.time()
    cpu_after = timing.cpu_seconds(os.getpid()) or 0.0
    client.quit()
    results.put((count, began, ended, cpu_after - cpu_before))


def push(corpus: Corpus, total: int, port: int, processes: int = 2) -> CeilingRun:
    """Send ``total`` messages from ``processes`` processes, one reused connection each."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    results = context.Queue()
    shares = [total // processes + (1 if i < total % processes else 0) for i in range(processes)]
    workers = []
    offset = 0
    for share in shares:
        worker = context.Process(
            target=_send_share, args=(corpus, offset, share, port, barrier, results)
        )
        worker.start()
        workers.append(worker)
        offset += share
    outcomes = [results.get(timeout=1800) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        if worker.exitcode != 0:
            raise RuntimeError(f"a ceiling sender exited with {worker.exitcode}")
    sent = sum(o[0] for o in outcomes)
    began = min(o[1] for o in outcomes)
    ended = max(o[2] for o in outcomes)
    return CeilingRun(sent, ended - began, sum(o[3] for o in outcomes))


def corpus(ctx: Context) -> Corpus:
    """Pre-render the messages once per invocation (``ctx.runs`` timed passes)."""
    if ctx.corpus is None:
        count = ctx.sizes.corpus
        ctx.log(f"pre-rendering {count} digest messages with Gazette's Composer")
        ctx.corpus = prerender(count, ctx.folder("corpus"), ctx.summary_chars, ctx.runs)
        FIGURES.register(ctx, "compose", ctx.corpus.compose_ms)
        ctx.setup["Messages"] = (
            f"10 articles with ~{ctx.summary_chars:,}-character HTML summaries, "
            f"3 languages (80% en, 10% uk, 10% ja), {ctx.corpus.average_bytes / 1024:.1f} "
            "KiB per message on average: both the text and the HTML part carry every "
            "summary, and the HTML has its CSS inlined (`--summary-chars 500` gives "
            "about 25 KiB)"
        )
    return ctx.corpus


def run(ctx: Context) -> None:
    """Pre-rendered messages pushed by two smtplib processes, one connection each."""
    ctx.ensure_sink()
    messages = corpus(ctx)
    assert ctx.sink_url is not None
    port = int(ctx.sink_url.rsplit(":", 1)[1])
    ctx.setup["Ceiling"] = (
        f"{len(messages.messages):,} distinct pre-rendered messages, cycled; at most "
        f"{ctx.sizes.ceiling_cap:,} messages per run"
    )
    for subscribers in sorted({n for db in ctx.databases for n in ctx.send_sizes(db)}):
        total = min(subscribers, ctx.sizes.ceiling_cap)
        results = [push(messages, total, port) for _ in range(ctx.runs)]
        for n, r in enumerate(results):
            ctx.log(f"    ceiling n={subscribers} run {n + 1}: {fmt(r.rate)} msg/s")
        FIGURES.register(
            ctx, "rate", [r.rate for r in results], subscribers=subscribers, total=total
        )
        FIGURES.register(
            ctx, "cpu", [r.cpu_ms_per_message for r in results], subscribers=subscribers
        )


def findings(figures: Sequence[Figure], info: RunInfo) -> list[str]:
    """Nothing of its own: the gazette scenario reads its figures against the ceiling's."""
    return []


SCENARIO = Scenario("ceiling", run, FIGURES, METHOD, findings)
