"""Feed ingest: one RSS 2.0 document of many items through gazette.feeds.ingest_document."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

from benchmarks import data
from gazette.feeds import ingest_document
from gazette.runtime import use_runtime
from gazette.store.db import transaction


def rss_document(items: int, seed: int = 3) -> bytes:
    """An RSS 2.0 feed like WordPress writes: content:encoded HTML, categories, authors."""
    rng = random.Random(seed)
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    topics = ("Energy", "Cities", "Transport", "Economy", "Technology", "Housing")
    entries = []
    for n in range(items):
        title = data.sentence(rng)[:-1]
        link = f"https://meridian.example.org/{n // 100}/{n}/item-{n}/"
        body = data.summary_html(rng, n, 1500)
        categories = "".join(
            f"<category>{escape(t)}</category>" for t in rng.sample(topics, rng.randint(1, 3))
        )
        entries.append(
            f"<item><title>{escape(title)}</title><link>{link}</link>"
            f'<guid isPermaLink="false">meridian-{seed}-{n}</guid>'
            f"<pubDate>{format_datetime(now - timedelta(minutes=37 * n))}</pubDate>"
            f"<dc:creator>{escape(rng.choice(data.FIRST_NAMES['en']))} Okafor</dc:creator>"
            f"{categories}<description>{escape(data.sentence(rng))}</description>"
            f"<content:encoded><![CDATA[{body}]]></content:encoded></item>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>'
        "<title>The Meridian Institute</title><link>https://meridian.example.org/</link>"
        "<description>Research</description><language>en</language>"
        + "".join(entries)
        + "</channel></rss>"
    ).encode()


def ingest_once(document: bytes, items: int, kind: str, folder: Path) -> float:
    """Ingest ``document`` into a fresh ``kind`` database; return seconds (parse + store)."""
    with data.database(kind, folder) as url:
        runtime = data.install_runtime(data.gazette_env(folder, url), folder)
        try:
            began = time.perf_counter()
            with transaction(runtime.sessions) as session:
                result = ingest_document(session, document, "benchmark feed")
            seconds = time.perf_counter() - began
        finally:
            use_runtime(None)
    if result.added != items:
        raise RuntimeError(f"feed ingest added {result.added} of {items} items ({result})")
    return seconds
