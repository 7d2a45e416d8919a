"""The feed scenario: one RSS 2.0 document of many items through `ingest_document`."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from benchmarks.harness import seeding
from benchmarks.harness.context import Context, Scenario
from benchmarks.harness.figures import Figure, FigureSpec, FigureTable, fmt
from benchmarks.harness.report import this_run
from gazette.articles.feeds import ingest_document
from gazette.runtime import use_runtime
from gazette.store.db import transaction

if TYPE_CHECKING:
    from benchmarks.harness.report import RunInfo

FIGURES = FigureTable(
    "feed",
    {
        "rate": FigureSpec(
            "feed.{database}.items_per_s",
            "items/s",
            "Feed ingest, {items:,}-item RSS document, {database}",
        ),
    },
)
METHOD = (
    "one RSS 2.0 document through `gazette.articles.feeds.ingest_document` into a fresh "
    "database, parse and store in one transaction."
)


def rss_document(items: int, seed: int = 3) -> bytes:
    """An RSS 2.0 feed like WordPress writes: content:encoded HTML, categories, authors."""
    rng = random.Random(seed)
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    topics = ("Energy", "Cities", "Transport", "Economy", "Technology", "Housing")
    entries = []
    for n in range(items):
        title = seeding.sentence(rng)[:-1]
        link = f"https://meridian.example.org/{n // 100}/{n}/item-{n}/"
        body = seeding.summary_html(rng, n, 1500)
        categories = "".join(
            f"<category>{escape(t)}</category>" for t in rng.sample(topics, rng.randint(1, 3))
        )
        entries.append(
            f"<item><title>{escape(title)}</title><link>{link}</link>"
            f'<guid isPermaLink="false">meridian-{seed}-{n}</guid>'
            f"<pubDate>{format_datetime(now - timedelta(minutes=37 * n))}</pubDate>"
            f"<dc:creator>{escape(rng.choice(seeding.FIRST_NAMES['en']))} Okafor</dc:creator>"
            f"{categories}<description>{escape(seeding.sentence(rng))}</description>"
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
    with seeding.database(kind, folder) as url:
        runtime = seeding.install_runtime(seeding.gazette_env(folder, url), folder)
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


def run(ctx: Context) -> None:
    """One RSS document through gazette.articles.feeds.ingest_document, per database."""
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
            FIGURES.register(ctx, "rate", samples, database=database, items=items)


def findings(figures: Sequence[Figure], info: RunInfo) -> list[str]:
    """This run's ingest rate on each database."""
    current = this_run(figures, info)
    rates = [
        f"{fmt(f.value)} items/s on {database}"
        for database in ("postgresql", "sqlite")
        if (f := current.get(f"feed.{database}.items_per_s")) is not None
    ]
    if not rates:
        return []
    return [f"**Feed ingest.** {' and '.join(rates)}.", ""]


SCENARIO = Scenario("feed", run, FIGURES, METHOD, findings)
