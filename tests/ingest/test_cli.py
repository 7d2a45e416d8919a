"""The command line: feeds add, list and poll; articles add, list and import (JSON, JSON Lines)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gazette.runtime import Runtime
from tests.ingest.helpers import GOOD_LINES, WORDPRESS, article_count, one_sentence
from tests.support.cli import FeedCli
from tests.support.feedserver import FeedServer


def test_cli_feeds_add_list_and_poll(cli: FeedCli, runtime: Runtime, feeds: FeedServer) -> None:
    good_url = feeds.static("/feed/", WORDPRESS.encode())
    bad_url = feeds.url("/error")

    added = cli.ok("feeds", "add", good_url, "--topic", "Research")
    assert added.stdout.strip() == f"Feed 1 added: {good_url}"
    # A feed that is down when added needs --no-check (it is refused otherwise).
    cli.ok("feeds", "add", bad_url, "--interval", "30", "--no-check")

    polled = cli("feeds", "poll", "--all")

    assert polled.returncode == 1, polled.stderr  # one of the two failed
    assert "Traceback" not in polled.stderr
    lines = polled.stdout.strip().splitlines()
    assert lines == [
        f"{good_url}: 2 added, 0 updated, 0 unchanged, 0 rejected",
        f"Feed 2 failed: {bad_url} answered HTTP 500.",
        "Polled 2 feed(s), 1 failed.",
    ]
    listing = cli.json("feeds", "list", "--json")
    by_url = {row["url"]: row for row in listing["feeds"]}
    assert set(by_url) == {good_url, bad_url}
    assert by_url[good_url]["last_error"] is None
    assert by_url[good_url]["last_polled_at"]
    assert by_url[bad_url]["last_error"] == f"{bad_url} answered HTTP 500."
    assert by_url[bad_url]["interval_minutes"] == 30
    articles = cli.json("articles", "list", "--json")["articles"]
    assert len(articles) == 2
    assert all("research" in a["topics"] for a in articles)

    again = cli("feeds", "poll", "--all")
    assert again.returncode == 1, again.stderr
    assert f"{good_url}: 0 added, 0 updated, 2 unchanged, 0 rejected" in again.stdout
    assert article_count(runtime) == 2


@pytest.mark.parametrize(
    ("args", "codes", "named"),
    [
        pytest.param(
            ["--title", "Ferries", "--url", "ftp://harbour.example.org/f"],
            (1,),
            ["url", "'ftp://harbour.example.org/f'"],
            id="ftp-url",
        ),
        pytest.param(
            ["--title", "Ferries", "--url", "javascript:alert(1)"],
            (1,),
            ["url", "'javascript:alert(1)'"],
            id="javascript-url",
        ),
        pytest.param(["--url", "https://harbour.example.org/f"], (2,), ["--title"], id="no-title"),
        pytest.param(
            ["--title", "  ", "--url", "https://harbour.example.org/f"],
            (1,),
            ["title", "https://harbour.example.org/f"],
            id="blank-title",
        ),
        pytest.param(
            ["--title", "Ferries", "--url", "https://x.example.org/f", "--published", "yesterday"],
            (1,),
            ["published", "'yesterday'"],
            id="published-yesterday",
        ),
    ],
)
def test_cli_articles_add_refuses_bad_input(
    cli: FeedCli, runtime: Runtime, args: list[str], codes: tuple[int, ...], named: list[str]
) -> None:
    result = cli("articles", "add", *args)

    assert result.returncode in codes, result
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    one_sentence(message)
    for word in named:
        assert word in message, message
    assert article_count(runtime) == 0


def test_cli_articles_add_then_list(cli: FeedCli) -> None:
    added = cli.ok(
        "articles", "add", "--title", "Night trains", "--url", "https://rail.example.org/n",
        "--topic", "Transport", "--published", "2026-11-20T09:00:00+01:00",
    )  # fmt: skip
    assert re.fullmatch(r"Article \d+ added\.", added.stdout.strip())
    [row] = cli.json("articles", "list", "--json")["articles"]
    assert row["title"] == "Night trains"
    assert row["topics"] == ["transport"]
    assert datetime.fromisoformat(row["published_at"]) == datetime(2026, 11, 20, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    "third",
    [
        pytest.param('{"title": "Three", "url": ', id="invalid-json"),
        pytest.param('{"title": "Three"}', id="no-url"),
        pytest.param('{"title": "Three", "url": "gopher://x.example/3"}', id="bad-url"),
        pytest.param(
            '{"title": "Three", "url": "https://import.example.org/3", "published": "soon"}',
            id="bad-date",
        ),
        pytest.param('["not", "an", "object"]', id="not-an-object"),
    ],
)
def test_cli_import_jsonl_with_a_bad_third_line_stores_nothing(
    cli: FeedCli, runtime: Runtime, tmp_path: Path, third: str
) -> None:
    path = tmp_path / "articles.jsonl"
    lines = [json.dumps(record) for record in GOOD_LINES] + [third]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = cli("articles", "import", str(path))

    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    [message] = result.stderr.strip().splitlines()
    assert re.search(r"(:3:|\bline 3\b)", message), message
    assert article_count(runtime) == 0


def test_cli_import_json_array_then_list_since(cli: FeedCli, tmp_path: Path) -> None:
    records: list[dict[str, Any]] = [
        {"title": "Before", "url": "https://import.example.org/a",
         "published": "2026-10-31T23:59:59Z"},
        {"title": "Midnight", "url": "https://import.example.org/b",
         "published": "2026-11-01T00:00:00Z", "topics": ["Energy"]},
        {"title": "West of UTC", "url": "https://import.example.org/c",
         "published": "2026-10-31T23:30:00-01:00"},
        {"title": "Mid-month", "url": "https://import.example.org/d",
         "published": "2026-11-15T12:00:00+02:00", "summary": "<p>Hi</p><script>x</script>"},
    ]  # fmt: skip
    path = tmp_path / "articles.json"
    path.write_text(json.dumps(records), encoding="utf-8")

    imported = cli.ok("articles", "import", str(path))

    assert imported.stdout.strip() == (
        "Imported articles.json: 4 added, 0 updated, 0 unchanged, 0 rejected."
    )
    everything = cli.json("articles", "list", "--json")["articles"]
    assert {a["title"] for a in everything} == {r["title"] for r in records}
    since = cli.json("articles", "list", "--since", "2026-11-01", "--json")["articles"]
    # Newest first; 23:30 at UTC-1 is 00:30 UTC on 1 November.
    assert [a["title"] for a in since] == ["Mid-month", "West of UTC", "Midnight"]
    assert since[2]["topics"] == ["energy"]

    again = cli.ok("articles", "import", str(path))
    assert "0 added, 0 updated, 4 unchanged" in again.stdout
