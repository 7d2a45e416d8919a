"""``gazette articles``: articles pushed by hand or from the publisher's own systems."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from sqlalchemy import select

from gazette.article_files import read_articles
from gazette.articles import (
    ArticleInput,
    normalise_language,
    parse_date,
    upsert_article,
    withdraw_article,
)
from gazette.cli.app import console, main, print_json, progress, runtime
from gazette.errors import GazetteError
from gazette.feeds import store_items
from gazette.store.db import transaction
from gazette.store.models import Article, Issue, IssueArticle, Newsletter, utcnow


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
def add(
    title: str,
    url: str,
    summary: str,
    topics: tuple[str, ...],
    published: str | None,
    language: str | None,
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
    item = ArticleInput(
        title=title, url=url, published_at=when, summary=summary, topics=list(topics),
        language=language,
    )  # fmt: skip
    with transaction(rt.sessions) as session:
        result = upsert_article(session, item)
    state = "added" if result.created else "updated" if result.changed else "unchanged"
    click.echo(f"Article {result.article_id} {state}.")


@articles.command(name="import")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
def import_(path: Path) -> None:
    """Import articles from a JSON array or a JSON Lines file, all or nothing.

    Each record has title and url, and optionally summary, published (ISO 8601),
    topics (a list), guid, author and language.

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
        query = select(Article).order_by(Article.published_at.desc()).limit(limit)
        if since:
            query = query.where(Article.published_at >= parse_date(since, "--since"))
        found = list(session.scalars(query))
        carried: dict[int, list[dict[str, Any]]] = {a.id: [] for a in found}
        for article_id, issue_id, slug, edition, status in session.execute(
            select(IssueArticle.article_id, Issue.id, Newsletter.slug, Issue.edition, Issue.status)
            .join(Issue, Issue.id == IssueArticle.issue_id)
            .join(Newsletter, Newsletter.id == Issue.newsletter_id)
            .where(IssueArticle.article_id.in_(list(carried)))
            .order_by(Issue.id)
        ):
            carried[article_id].append(
                {"issue": issue_id, "newsletter": slug, "edition": edition.value,
                 "status": status.value}
            )  # fmt: skip
        rows: list[dict[str, Any]] = [
            {
                "id": a.id,
                "title": a.title,
                "url": a.url,
                "published_at": a.published_at.isoformat(),
                "language": a.language,
                "topics": sorted(t.slug for t in a.topics),
                "withdrawn_at": a.withdrawn_at.isoformat() if a.withdrawn_at else None,
                "issues": carried[a.id],
            }
            for a in found
        ]
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
