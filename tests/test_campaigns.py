"""Campaign tags: UTM parameters on article links only, never on Gazette's own links."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from gazette.digests.previews import preview
from gazette.newsletters.brand import PresentationChanges, apply_presentation
from gazette.newsletters.campaigns import tag_url
from gazette.newsletters.service import create_newsletter, newsletter_by_slug
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import utcnow
from tests.support.digests import ArticleSpec, add_articles
from tests.support.env import installed_runtime

DATE = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


@dataclass
class Tags:
    utm_source: str | None = "gazette"
    utm_medium: str | None = "email"
    utm_campaign: str | None = "weekly-{date}"


def test_tags_are_added_with_the_issue_date() -> None:
    tagged = tag_url("https://example.org/post?id=7#comments", Tags(), DATE)
    parts = urlsplit(tagged)
    assert parts.fragment == "comments"
    assert parse_qsl(parts.query) == [
        ("id", "7"), ("utm_source", "gazette"), ("utm_medium", "email"),
        ("utm_campaign", "weekly-2026-12-07"),
    ]  # fmt: skip


def test_no_tags_leave_the_url_as_it_is() -> None:
    url = "https://example.org/a b?x=%20"
    assert tag_url(url, Tags(None, None, None), DATE) == url


def test_a_tag_the_author_set_is_kept() -> None:
    tagged = tag_url("https://example.org/p?utm_source=twitter", Tags(), DATE)
    query = dict(parse_qsl(urlsplit(tagged).query))
    assert query["utm_source"] == "twitter"
    assert query["utm_medium"] == "email"


@pytest.mark.parametrize("url", ["mailto:editor@example.org", "ftp://example.org/f", "/relative"])
def test_only_http_links_are_tagged(url: str) -> None:
    assert tag_url(url, Tags(), DATE) == url


def test_values_are_encoded() -> None:
    tagged = tag_url("https://example.org/", Tags("a&b", "e mail", None), DATE)
    assert tagged == "https://example.org/?utm_source=a%26b&utm_medium=e+mail"


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    with installed_runtime(tmp_path, database_url) as built:
        with transaction(built.sessions) as session:
            create_newsletter(session, "weekly", "The Weekly")
            apply_presentation(
                newsletter_by_slug(session, "weekly"),
                PresentationChanges(
                    utm_source="gazette", utm_medium="email", utm_campaign="weekly-{date}"
                ),
            )
        add_articles(built, [ArticleSpec("Grid storage", "https://example.org/grid", 2)])
        yield built


def test_digest_tags_article_links_and_nothing_else(runtime: Runtime) -> None:
    now = utcnow()
    with runtime.sessions() as session:
        shown = preview(session, runtime.send_context, "weekly", now)
    expected = (
        "https://example.org/grid?utm_source=gazette&utm_medium=email"
        f"&utm_campaign=weekly-{now:%Y-%m-%d}"
    )
    text, html = shown.personal.text, shown.personal.html
    assert expected in text
    assert expected.replace("&", "&amp;") in html
    links = re.findall(r'href="([^"]+)"', html) + re.findall(r"https?://\S+", text)
    own = [u for u in links if u.startswith("https://news.example.org")]
    assert {urlsplit(u).path.split("/")[1] for u in own} == {
        "archive", "preferences", "unsubscribe",
    }  # fmt: skip
    assert not [u for u in own if "utm_" in u]
    assert shown.personal.unsubscribe_url.startswith("https://news.example.org/unsubscribe/")
    assert "utm_" not in shown.personal.unsubscribe_url
