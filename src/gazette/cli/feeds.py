"""``gazette feeds``: the publisher's RSS and Atom feeds."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from gazette.articles.feed_registry import (
    active_feeds,
    add_feed,
    check_feed,
    list_feeds,
    prepare_feed_url,
    remove_feed,
)
from gazette.articles.feeds import due_feeds, poll_feed, pollable_feeds
from gazette.cli.app import EXIT_FAILED, console, main, print_json, progress, runtime
from gazette.store.db import transaction
from gazette.store.models import Feed, utcnow


def _describe(feed: Feed) -> dict[str, Any]:
    return {
        "id": feed.id,
        "url": feed.url,
        "interval_minutes": feed.poll_interval_seconds // 60,
        "last_polled_at": feed.last_polled_at.isoformat() if feed.last_polled_at else None,
        "last_error": feed.last_error,
        "rejections": feed.last_rejections.splitlines() if feed.last_rejections else [],
        "removed_at": feed.removed_at.isoformat() if feed.removed_at else None,
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
    type=click.IntRange(1),
    help="Minutes between polls (default 15; a restored feed keeps its own).",
)
@click.option(
    "--no-check",
    is_flag=True,
    help="Add it without fetching it first (a feed that is down on purpose).",
)
@click.option("--language", help="Language of its articles, over what the feed declares.")
def add(
    url: str,
    topic: str | None,
    slug: str | None,
    interval: int | None,
    no_check: bool,
    language: str | None,
) -> None:
    """Register a feed; beat polls it every --interval minutes.

    The feed is fetched once first: a refused connection, an HTTP error or a page that
    is not RSS or Atom is refused with the reason. The URL is stored normalised (lower-case
    scheme and host, no default port or fragment); a second spelling of a feed is
    refused, and the URL of a removed feed restores it.

    \b
    Example:
      gazette feeds add https://example.org/feed/ --topic Energy --interval 30
    """
    rt = runtime()
    with rt.sessions() as session:
        normal, restoring = prepare_feed_url(session, url)
    if not no_check:
        # Over the network, outside any transaction; nothing is written when it fails.
        check_feed(normal)
    with transaction(rt.sessions) as session:
        feed_id = add_feed(
            session,
            normal,
            topic=topic,
            newsletter_slug=slug,
            interval_minutes=interval,
            language=language,
        )
    click.echo(f"Feed {feed_id} {'restored' if restoring else 'added'}: {normal}")


@feeds.command()
@click.argument("feed")
def remove(feed: str) -> None:
    """Stop polling a feed, named by its id or URL; its articles are kept.

    The feed stays listed as removed; `gazette feeds add URL` restores it.

    \b
    Example:
      gazette feeds remove 3
    """
    rt = runtime()
    with transaction(rt.sessions) as session:
        removal = remove_feed(session, feed, utcnow())
    when = removal.removed_at.date().isoformat()
    if removal.already:
        click.echo(f"Feed {removal.feed_id} ({removal.url}) was already removed on {when}.")
        return
    click.echo(
        f"Feed {removal.feed_id} removed: {removal.url} (no longer polled; its "
        f"{removal.articles} article(s) are kept)."
    )


@feeds.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def list_(as_json: bool) -> None:
    """List feeds with when each was polled, why the last poll failed or rejected items.

    \b
    Example:
      gazette feeds list --json
    """
    with runtime().sessions() as session:
        rows = [_describe(f) for f in list_feeds(session)]
    if as_json:
        print_json({"feeds": rows})
        return
    table = Table("id", "url", "every", "last polled", "last error", "rejected items")
    for row in rows:
        # URLs, errors and rejected titles come from outside: printed as text, never markup.
        state = (
            f"removed {row['removed_at'][:10]}"
            if row["removed_at"]
            else f"{row['interval_minutes']} min"
        )
        table.add_row(
            str(row["id"]), Text(row["url"]), state,
            (row["last_polled_at"] or "never")[:19], Text(row["last_error"] or ""),
            Text("\n".join(row["rejections"])),
        )  # fmt: skip
    console().print(table)


@feeds.command()
@click.argument("feed_ids", nargs=-1, type=int)
@click.option("--all", "poll_all", is_flag=True, help="Poll every feed not removed, due or not.")
def poll(feed_ids: tuple[int, ...], poll_all: bool) -> None:
    """Poll feeds now (the due ones by default) and store what is new.

    A feed that fails is reported and recorded; the others are still polled, and the
    command exits 1 when any failed. Each rejected item is listed with the reason.

    \b
    Example:
      gazette feeds poll --all
    """
    rt = runtime()
    with rt.sessions() as session:
        if feed_ids:
            targets = pollable_feeds(session, list(feed_ids))
        elif poll_all:
            targets = active_feeds(session)
        else:
            targets = due_feeds(session, utcnow())
    failed = 0
    with progress(len(targets), "Polling feeds") as advance:
        for done, feed_id in enumerate(targets, start=1):
            result = poll_feed(rt.sessions, feed_id)
            failed += result.error is not None
            click.echo(result.summary())
            for reason in result.rejections:
                click.echo(f"  rejected {reason}")
            advance(done)
    click.echo(f"Polled {len(targets)} feed(s), {failed} failed.")
    if failed:
        sys.exit(EXIT_FAILED)
