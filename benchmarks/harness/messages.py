"""Gazette's own digest messages, pre-rendered: what the ceiling and the sink capacity send.

A database is seeded with the benchmark articles and readers, an issue planned, and
every reader's message composed with Gazette's Composer, timed in CPU per message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import seeding
from gazette.digests.composer import Reader, composer_for
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
    count: int, folder: Path, summary_chars: int = seeding.SUMMARY_CHARS, passes: int = 3
) -> Corpus:
    """Seed a database with the benchmark articles and ``count`` readers; compose each one.

    Composes every reader ``passes`` times, timing each pass in CPU time, and keeps the
    last pass's messages.
    """
    with seeding.database("sqlite", folder) as url:
        env = seeding.gazette_env(folder, url)
        runtime = seeding.install_runtime(env, folder)
        try:
            newsletter_id = seeding.seed_issue_content(runtime, summary_chars=summary_chars)
            seeding.seed_readers(runtime.engine, newsletter_id, count)
            issue_id, _deliveries, _seconds = seeding.plan(runtime, newsletter_id)
            with runtime.sessions() as session:
                composer = composer_for(session, runtime.send_context, issue_id)
            readers = [
                Reader(r.public_id, r.email, r.name, r.language) for r in seeding.reader_rows(count)
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
