"""Article identity (issue 14): one post is one article wherever it is seen, and two
posts are never merged on title and date alone."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

from sqlalchemy import select
from sqlalchemy.orm import Session

from gazette.articles.feeds import ingest_document
from gazette.articles.service import normalise_language
from gazette.runtime import Runtime
from gazette.store.models import Article, Feed, article_feed
from tests.support.env import make_env

GAZETTE = [sys.executable, "-m", "gazette"]
DATE = "Mon, 30 Nov 2026 09:00:00 GMT"


def rss(*items: str, language: str = "en-US") -> bytes:
    body = "".join(items)
    return (
        '<?xml version="1.0"?><rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<channel><title>Site</title><language>{language}</language>{body}</channel></rss>"
    ).encode()


def item(
    title: str, link: str, guid: str, *, categories: tuple[str, ...] = (), extra: str = ""
) -> str:
    tags = "".join(f"<category>{escape(c)}</category>" for c in categories)
    return (
        f"<item><title>{escape(title)}</title><link>{escape(link)}</link>"
        f"<guid isPermaLink='false'>{escape(guid)}</guid><pubDate>{DATE}</pubDate>"
        f"{tags}{extra}</item>"
    )


def add_feed(session: Session, url: str, language: str | None = None) -> int:
    feed = Feed(url=url, language=language)
    session.add(feed)
    session.flush()
    return feed.id


def stored(session: Session) -> list[Article]:
    return list(session.scalars(select(Article).order_by(Article.id)))


def test_two_posts_with_one_title_and_date_in_one_document_stay_two(session: Session) -> None:
    document = rss(*(item("&amp;", f"https://site.example/{n}", f"{n}") for n in range(5)))
    first = ingest_document(
        session, document, "feed", add_feed(session, "https://site.example/feed")
    )
    assert first.added == 5
    feed_id = session.scalar(select(Feed.id))
    again = ingest_document(session, document, "feed", feed_id)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 5)
    assert len(stored(session)) == 5


def test_one_post_in_the_main_and_a_category_feed_is_one_article(session: Session) -> None:
    main = add_feed(session, "https://site.example/feed")
    category = add_feed(session, "https://site.example/category/energy/feed")
    guid = "https://site.example/?p=123"
    post = ("Grid storage", "https://site.example/grid-storage", guid)
    main_doc = rss(item(*post, categories=("Energy", "Policy")))
    category_doc = rss(item(*post, categories=("Energy", "Storage")))
    assert ingest_document(session, main_doc, "main", main).added == 1
    seen = ingest_document(session, category_doc, "category", category)
    assert (seen.added, seen.updated) == (0, 1)  # the union gained a topic
    [article] = stored(session)
    assert {t.slug for t in article.topics} == {"energy", "policy", "storage"}
    # Polling either again changes nothing: the topics do not flip back and forth.
    for document, feed_id in ((main_doc, main), (category_doc, category), (main_doc, main)):
        result = ingest_document(session, document, "again", feed_id)
        assert (result.added, result.updated, result.unchanged) == (0, 0, 1)
    feeds = set(session.scalars(select(article_feed.c.feed_id)))
    assert feeds == {main, category}


def test_the_same_bare_guid_in_two_feeds_is_two_articles(session: Session) -> None:
    a = add_feed(session, "https://a.example/feed")
    b = add_feed(session, "https://b.example/feed")
    ingest_document(session, rss(item("A's post", "https://a.example/?p=123", "123")), "a", a)
    ingest_document(session, rss(item("B's post", "https://b.example/?p=123", "123")), "b", b)
    articles = stored(session)
    assert [a.title for a in articles] == ["A's post", "B's post"]
    assert sorted(a.identity_key for a in articles) == [f"feed:{a}:123", f"feed:{b}:123"]


def test_a_document_that_repeats_a_guid_keeps_its_first_occurrence(session: Session) -> None:
    feed = add_feed(session, "https://site.example/feed")
    document = rss(
        item("First", "https://site.example/first", "urn:uuid:1"),
        item("Second", "https://site.example/second", "urn:uuid:1"),
    )
    result = ingest_document(session, document, "feed", feed)
    assert result.added == 1
    [article] = stored(session)
    assert (article.title, article.url) == ("First", "https://site.example/first")


def test_published_at_is_frozen_at_first_sight(session: Session) -> None:
    feed = add_feed(session, "https://site.example/feed")
    ingest_document(session, rss(item("Post", "https://site.example/p", "urn:p")), "feed", feed)
    later = item("Post, updated", "https://site.example/p", "urn:p").replace(
        DATE, "Fri, 04 Dec 2026 09:00:00 GMT"
    )
    assert ingest_document(session, rss(later), "feed", feed).updated == 1
    [article] = stored(session)
    assert article.title == "Post, updated"
    assert article.published_at == datetime(2026, 11, 30, 9, tzinfo=UTC)


def test_languages_come_from_the_entry_then_the_feed_override_then_the_declared(
    session: Session,
) -> None:
    declared = add_feed(session, "https://en.example/feed")
    overridden = add_feed(session, "https://uk.example/feed", language="uk")
    entries = (
        item("Declared", "https://en.example/1", "1"),
        item("Own", "https://en.example/2", "2", extra="<dc:language>ja-JP</dc:language>"),
    )
    ingest_document(session, rss(*entries), "en", declared)
    ingest_document(
        session,
        rss(item("Overridden", "https://uk.example/1", "1"), language="en"),
        "uk",
        overridden,
    )
    languages = {a.title: a.language for a in stored(session)}
    assert languages == {"Declared": "en", "Own": "ja", "Overridden": "uk"}
    assert [normalise_language(t) for t in ("en-US", "EN_gb", "", "12")] == ["en", "en", None, None]


def cli(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = make_env(tmp_path, database_url)
    return subprocess.run(
        [*GAZETTE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_commands_of_issue_14(runtime: Runtime, tmp_path: Path, database_url: str) -> None:
    import json

    def ok(*args: str) -> str:
        result = cli(tmp_path, database_url, *args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def refused(*args: str, phrase: str) -> None:
        result = cli(tmp_path, database_url, *args)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert result.stderr.strip().splitlines() == [f"gazette: {phrase}"]

    ok(
        "newsletters",
        "add",
        "kyiv",
        "--name",
        "Kyiv",
        "--article-languages",
        "own",
        "--max-age",
        "14",
    )
    shown = json.loads(ok("newsletters", "show", "kyiv", "--json"))
    assert (shown["article_languages"], shown["max_age_days"], shown["waiting_articles"]) == (
        "own", 14, 0,
    )  # fmt: skip
    ok("newsletters", "edit", "kyiv", "--max-age", "7")
    published = datetime.now(UTC).replace(microsecond=0).isoformat()
    out = ok("articles", "add", "--title", "T", "--url", "https://site.example/t",
             "--published", published, "--language", "uk-UA")  # fmt: skip
    assert out.strip() == "Article 1 added."
    shown = json.loads(ok("newsletters", "show", "kyiv", "--json"))
    assert (shown["max_age_days"], shown["waiting_articles"]) == (7, 1)
    listed = json.loads(ok("articles", "list", "--json"))["articles"]
    assert [(a["id"], a["language"], a["issues"]) for a in listed] == [(1, "uk", [])]
    assert ok("articles", "withdraw", "1").strip() == "Article 1 withdrawn."
    assert json.loads(ok("newsletters", "show", "kyiv", "--json"))["waiting_articles"] == 0
    refused("articles", "withdraw", "42", phrase="There is no article 42.")
    refused("newsletters", "retire", "nope", phrase="There is no newsletter 'nope'.")
    assert ok("newsletters", "retire", "kyiv").strip() == "Newsletter kyiv retired."
    refused("digest", "send", "kyiv", phrase="kyiv is retired: it is no longer sent.")
