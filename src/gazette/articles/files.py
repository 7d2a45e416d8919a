"""Reading articles pushed as JSON (an array) or JSON Lines, checked record by record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from gazette.articles.service import ArticleInput, check_url, parse_date
from gazette.errors import GazetteError
from gazette.text import clean_line


def read_articles(path: Path) -> list[ArticleInput]:
    """Read and check every article in ``path``; raise on the first bad one, naming it.

    The whole file is checked before the caller stores anything, so a bad record on
    the last line leaves nothing half-imported.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise GazetteError(f"{path} does not exist.") from None
    except UnicodeDecodeError:
        raise GazetteError(f"{path} is not UTF-8 text.") from None
    if path.suffix == ".jsonl":
        items = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise GazetteError(f"{path}:{number}: not valid JSON ({exc.msg}).") from None
            items.append(article_from_record(record, f"{path}:{number}"))
        return items
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GazetteError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        raise GazetteError(f"{path}: expected a JSON array of articles.")
    return [article_from_record(r, f"{path}: item {n}") for n, r in enumerate(document, start=1)]


def article_from_record(record: object, where: str) -> ArticleInput:
    """Check one JSON record (title, url, and optional summary, published, topics, guid...).

    ``where`` names its place in the file for the error sentence ("item 3", "line 7").
    """
    if not isinstance(record, dict):
        raise GazetteError(f"{where}: an article must be a JSON object, not {record!r:.60}.")
    for name in ("title", "url"):
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            raise GazetteError(f"{where}: the article has no {name} (got {value!r:.60}).")
    published = _record_date(record.get("published"), where)
    topics = record.get("topics", [])
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise GazetteError(f"{where}: topics must be a list of names, not {topics!r:.60}.")
    item = ArticleInput(
        title=record["title"],
        url=record["url"],
        published_at=published,
        summary=str(record.get("summary") or ""),
        content=str(record.get("content") or ""),
        guid=str(record.get("guid") or ""),
        author=str(record.get("author") or ""),
        language=str(record["language"]) if record.get("language") else None,
        topics=topics,
    )
    try:
        check_url(item.url)
    except GazetteError as exc:
        raise GazetteError(f"{where}: {exc}") from None
    if not clean_line(item.title):
        raise GazetteError(
            f"{where}: the article's title {item.title!r:.60} is empty once cleaned."
        )
    return item


def _record_date(published: object, where: str) -> datetime:
    """A record's ``published`` value as a date; now when it has none."""
    if published is None:
        return datetime.now(UTC)
    if not isinstance(published, str):
        raise GazetteError(f"{where}: published {published!r:.60} is not a date string.")
    try:
        return parse_date(published)
    except GazetteError as exc:
        raise GazetteError(f"{where}: {exc}") from None
