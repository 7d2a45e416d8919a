"""The ceiling: Gazette's own messages, pre-rendered, pushed over smtplib connections.

Two processes each keep one SMTP connection open and send their share as fast as the
sink takes it, with the cheapest smtplib dialogue there is (gazette.mailer.transmit:
sendmail's commands without its dot-stuffing regex, which Gazette's messages never
need). Nothing is composed, queued or recorded while the clock runs, so no sender built
on smtplib can beat this on the same machine.
"""

from __future__ import annotations

import multiprocessing
import os
import smtplib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import data, procstat
from gazette.composer import Reader, composer_for
from gazette.mailer import transmit
from gazette.runtime import use_runtime
from gazette.store.models import utcnow


@dataclass(frozen=True)
class Corpus:
    """Pre-rendered digest messages, as Gazette's Composer writes them."""

    sender: str
    messages: list[tuple[str, bytes]]
    average_bytes: float
    # CPU ms per Composer.compose in one process (issue renders cached), one per pass.
    compose_ms: list[float]


def prerender(
    count: int, folder: Path, summary_chars: int = data.SUMMARY_CHARS, passes: int = 3
) -> Corpus:
    """Seed a database with the benchmark articles and ``count`` readers; compose each one.

    Composes every reader ``passes`` times, timing each pass in CPU time, and keeps the
    last pass's messages.
    """
    with data.database("sqlite", folder) as url:
        env = data.gazette_env(folder, url)
        runtime = data.install_runtime(env, folder)
        try:
            newsletter_id = data.seed_issue_content(runtime, summary_chars=summary_chars)
            data.seed_readers(runtime.engine, newsletter_id, count)
            issue_id, _deliveries, _seconds = data.plan(runtime, newsletter_id)
            with runtime.sessions() as session:
                composer = composer_for(session, runtime.send_context, issue_id)
            readers = [
                Reader(r.public_id, r.email, r.name, r.language) for r in data.reader_rows(count)
            ]
            now = utcnow()
            # The first message of each language renders the issue; time the rest.
            for reader in readers[:10]:
                composer.compose(reader, now)
            compose_ms = []
            messages: list[tuple[str, bytes]] = []
            for _pass in range(passes):
                messages = []
                began = time.process_time()
                for reader in readers:
                    composed = composer.compose(reader, now)
                    assert composed is not None
                    messages.append((reader.email, composed[1]))
                compose_ms.append((time.process_time() - began) * 1000 / count)
            sender = composer.prepared.from_address
        finally:
            use_runtime(None)
    average = sum(len(m) for _r, m in messages) / len(messages)
    return Corpus(sender, messages, average, compose_ms)


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
    cpu_before = procstat.cpu_seconds(os.getpid()) or 0.0
    began = time.time()
    for i in range(offset, offset + count):
        recipient, message = messages[i % size]
        transmit(client, corpus.sender, recipient, message)
    ended = time.time()
    cpu_after = procstat.cpu_seconds(os.getpid()) or 0.0
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
            data.FROM_ADDRESS,
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
