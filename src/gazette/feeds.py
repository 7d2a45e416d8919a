"""Feeds: turn an RSS or Atom document into clean articles and store them once."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import feedparser
from sqlalchemy.orm import Session

from gazette.articles import ArticleInput, upsert_article
from gazette.errors import GazetteError


@dataclass(frozen=True)
class IngestResult:
    """Counts of one ingest: articles added, articles updated, items rejected."""

    added: int
    updated: int
    rejected: int


def _when(entry: Any) -> datetime | None:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    if parsed is None:
        return None
    # feedparser normalises every date to a UTC struct_time.
    return datetime.fromtimestamp(calendar.timegm(parsed), UTC)


def parse_feed(document: bytes, source: str) -> list[ArticleInput]:
    """Parse RSS 0.9x/1.0/2.0 or Atom bytes, in any declared encoding, into article inputs.

    ``source`` names the document in errors. Items without a link or a date are skipped;
    a document that is not a feed at all raises GazetteError.
    """
    parsed = feedparser.parse(document)
    # feedparser flags only malformed XML; a well-formed page that is not a feed (an
    # HTML page where the feed used to be) comes back with no version and no entries.
    if not parsed.get("version") or (parsed.get("bozo") and not parsed.entries):
        reason = parsed.get("bozo_exception") or "no RSS or Atom root element"
        raise GazetteError(f"{source} is not a readable RSS or Atom feed ({reason}).")
    feed_language = parsed.feed.get("language")
    items: list[ArticleInput] = []
    for entry in parsed.entries:
        published = _when(entry)
        link = entry.get("link")
        if published is None or not link:
            continue
        content = entry.get("content")
        summary = content[0].get("value", "") if content else entry.get("summary", "")
        items.append(
            ArticleInput(
                title=entry.get("title", ""),
                url=link,
                published_at=published,
                summary=summary,
                guid=entry.get("id", ""),
                author=entry.get("author", ""),
                language=entry.get("language") or feed_language,
                topics=[tag.get("term", "") for tag in entry.get("tags", [])],
            )
        )
    return items


def ingest_document(
    session: Session, document: bytes, source: str, feed_id: int | None = None
) -> IngestResult:
    """Parse a feed document and store its articles once each; return what changed."""
    added = updated = rejected = 0
    for item in parse_feed(document, source):
        try:
            with session.begin_nested():
                result = upsert_article(session, item, feed_id=feed_id)
        except GazetteError:
            rejected += 1
            continue
        if result.created:
            added += 1
        else:
            updated += 1
    return IngestResult(added, updated, rejected)
