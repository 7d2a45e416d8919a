"""Reading articles pushed as JSON (an array) or JSON Lines (one object a line)."""

from __future__ import annotations

import json
from pathlib import Path

from gazette.articles import ArticleInput, article_from_record
from gazette.errors import GazetteError


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
