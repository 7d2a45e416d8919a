"""``gazette articles``: articles pushed by hand or from the publisher's own systems."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from gazette.articles.feeds import store_items
from gazette.articles.files import read_articles
from gazette.articles.listing import Carried, issues_carrying, recent_articles
from gazette.articles.service import (
    ArticleInput,
    normalise_language,
    parse_date,
    upsert_article,
    withdraw_article,
)
from gazette.cli.app import console, main, print_json, progress, runtime
from gazette.errors import GazetteError
from gazette.store.db import transaction
from gazette.store.models import Article, utcnow


@main.group()
def articles() -> None:
    """Add, import and list articles.

    \b
    Example:
      gazette articles add --title "Grid storage" --url https://example.org/grid
    """


@articles.command()
@click.option("--title", required=True)
@click.option("--url", required=True)
@click.option("--summary", default="", help="HTML or text; sanitised before it is stored.")
@click.option("--topic", "topics", multiple=True, help="Topic name (repeatable).")
@click.option("--published", help="ISO 8601 date and time (default: now).")
@click.option("--language", help="Language tag of the article (uk, en-GB: stored as en).")
@click.option(
    "--content-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The whole post as an HTML file (UTF-8); the excerpt is made from it without --summary.",
)
def add(
    title: str,
    url: str,
    summary: str,
    topics: tuple[str, ...],
    published: str | None,
    language: str | None,
    content_file: Path | None,
) -> None:
    """Add one article (or update the one with the same URL; its date stays the first).

    \b
    Example:
      gazette articles add --title "Night trains" --url https://example.org/night-trains \\
        --topic Transport --published 2026-11-20T09:00:00+01:00 --language en
    """
    rt = runtime()
    when = parse_date(published) if published else datetime.now(UTC)
    if language is not None and normalise_language(language) is None:
        raise GazetteError(f"--language {language!r} is not a language tag (uk, en, ja-JP).")
    content = ""
    if content_file is not None:
        try:
            content = content_file.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise GazetteError(f"{content_file} does not exist.") from None
        except UnicodeDecodeError:
            raise GazetteError(f"{content_file} is not UTF-8 text.") from None
    item = ArticleInput(
        title=title, url=url, published_at=when, summary=summary, topics=list(topics),
        language=language, content=content,
    )  # fmt: skip
    with transaction(rt.sessions) as session:
        result = upsert_article(session, item)
    state = "added" if result.created else "updated" if result.changed else "unchanged"
    click.echo(f"Article {result.article_id} {state}.")


@articles.command(name="import")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
def import_(path: Path) -> None:
    """Import articles from a JSON array or a JSON Lines file, all or nothing.

    Each record has title and url, and optionally summary, content (the whole post),
    published (ISO 8601), topics (a list), guid, author and language.

    \b
    Example:
      gazette articles import articles.jsonl
    """
    rt = runtime()
    items = read_articles(path)
    with (
        progress(len(items), f"Importing {path.name}") as advance,
        transaction(rt.sessions) as session,
    ):
        result = store_items(session, items)
        advance(len(items))
    click.echo(
        f"Imported {path.name}: {result.added} added, {result.updated} updated, "
        f"{result.unchanged} unchanged, {result.rejected} rejected."
    )


def _describe(article: Article, carried: list[Carried]) -> dict[str, Any]:
    """One article as `articles list` shows it, with the issues that carried it."""
    return {
        "id": article.id,
        "title": article.title,
        "url": article.url,
        "published_at": article.published_at.isoformat(),
        "language": article.language,
        "topics": sorted(t.slug for t in article.topics),
        "withdrawn_at": article.withdrawn_at.isoformat() if article.withdrawn_at else None,
        "issues": [
            {"issue": c.issue_id, "newsletter": c.newsletter_slug, "edition": c.edition.value,
             "status": c.status.value}
            for c in carried
        ],
    }  # fmt: skip


@articles.command(name="list")
@click.option("--since", help="Only articles published at or after this ISO 8601 date.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def list_(since: str | None, limit: int, as_json: bool) -> None:
    """List articles, newest first, with the issues that carried each one.

    \b
    Example:
      gazette articles list --since 2026-11-01 --json
    """
    with runtime().sessions() as session:
        when = parse_date(since, "--since") if since else None
        found = recent_articles(session, when, limit)
        carried = issues_carrying(session, [a.id for a in found])
        rows = [_describe(article, carried[article.id]) for article in found]
    if as_json:
        print_json({"articles": rows})
        return
    table = Table("id", "published", "language", "title", "topics", "issues")
    for row in rows:
        issues = ", ".join(str(i["issue"]) for i in row["issues"])
        table.add_row(
            str(row["id"]), row["published_at"][:16], row["language"] or "", row["title"],
            ", ".join(row["topics"]), "withdrawn" if row["withdrawn_at"] else issues,
        )  # fmt: skip
    console().print(table)


@articles.command()
@click.argument("article_id", type=int)
def withdraw(article_id: int) -> None:
    """Withdraw an article: no future issue carries it (issues already sent keep it).

    \b
    Example:
      gazette articles withdraw 42
    """
    rt = runtime()
    with transaction(rt.sessions) as session:
        done = withdraw_article(session, article_id, utcnow())
    click.echo(
        f"Article {article_id} withdrawn."
        if done
        else f"Article {article_id} was already withdrawn."
    )
