"""``gazette feeds``: the publisher's RSS and Atom feeds."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from gazette.cli.app import console, main, print_json, progress, runtime
from gazette.feeds import add_feed, due_feeds, list_feeds, poll_feed
from gazette.store.db import transaction
from gazette.store.models import Feed, utcnow


def _describe(feed: Feed) -> dict[str, Any]:
    return {
        "id": feed.id,
        "url": feed.url,
        "interval_minutes": feed.poll_interval_seconds // 60,
        "last_polled_at": feed.last_polled_at.isoformat() if feed.last_polled_at else None,
        "last_error": feed.last_error,
        "etag": feed.etag,
        "language": feed.language,
    }


@main.group()
def feeds() -> None:
    """Register and poll the feeds articles come from.

    \b
    Example:
      gazette feeds add https://example.org/feed/ --topic Research
    """


@feeds.command()
@click.argument("url")
@click.option("--topic", help="Topic given to every article of this feed.")
@click.option("--newsletter", "slug", help="The only newsletter this feed's articles go to.")
@click.option(
    "--interval",
    default=15,
    show_default=True,
    type=click.IntRange(1),
    help="Minutes between polls.",
)
@click.option("--language", help="Language of its articles, over what the feed declares.")
def add(url: str, topic: str | None, slug: str | None, interval: int, language: str | None) -> None:
    """Register a feed; beat polls it every --interval minutes.

    \b
    Example:
      gazette feeds add https://example.org/feed/ --topic Energy --interval 30
    """
    rt = runtime()
    with transaction(rt.sessions) as session:
        feed_id = add_feed(
            session, url, topic=topic, newsletter_slug=slug, interval_minutes=interval,
            language=language,
        )  # fmt: skip
    click.echo(f"Feed {feed_id} added: {url.strip()}")


@feeds.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def list_(as_json: bool) -> None:
    """List feeds with when each was polled and why the last poll failed, if it did.

    \b
    Example:
      gazette feeds list --json
    """
    with runtime().sessions() as session:
        rows = [_describe(f) for f in list_feeds(session)]
    if as_json:
        print_json({"feeds": rows})
        return
    table = Table("id", "url", "every", "last polled", "last error")
    for row in rows:
        table.add_row(
            str(row["id"]), row["url"], f"{row['interval_minutes']} min",
            (row["last_polled_at"] or "never")[:19], row["last_error"] or "",
        )  # fmt: skip
    console().print(table)


@feeds.command()
@click.argument("feed_ids", nargs=-1, type=int)
@click.option("--all", "poll_all", is_flag=True, help="Poll every feed, due or not.")
def poll(feed_ids: tuple[int, ...], poll_all: bool) -> None:
    """Poll feeds now (the due ones by default) and store what is new.

    A feed that fails is reported and recorded; the others are still polled.

    \b
    Example:
      gazette feeds poll --all
    """
    rt = runtime()
    with rt.sessions() as session:
        if feed_ids:
            targets = list(feed_ids)
        elif poll_all:
            targets = [f.id for f in list_feeds(session)]
        else:
            targets = due_feeds(session, utcnow())
    failed = 0
    with progress(len(targets), "Polling feeds") as advance:
        for done, feed_id in enumerate(targets, start=1):
            result = poll_feed(rt.sessions, feed_id)
            failed += result.error is not None
            click.echo(result.summary())
            advance(done)
    click.echo(f"Polled {len(targets)} feed(s), {failed} failed.")
