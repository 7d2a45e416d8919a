"""Feed ingest: parsing, storing each article once, and cleaning what arrives."""

from __future__ import annotations

import html
import re
import time
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gazette.articles.feed_documents import parse_feed
from gazette.articles.feeds import ingest_document
from gazette.articles.service import ArticleInput, clean_html, upsert_article
from gazette.errors import GazetteError
from gazette.store.models import Article, Topic
from gazette.text import clean_line

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "feed.xml"
AMPERSAND_TITLE = 'Grid Storage & the "Evening Peak": What Batteries Can and Cannot Do'
JAPANESE_TITLE = "地方鉄道の再生：乗客が戻る路線の条件"
UKRAINIAN_TITLE = "Міська спека: як тінь і вода охолоджують квартали"
REMOTE_WORK_TITLE_JA = "在宅勤務は地方経済を変えるか"

# guid -> (title, publication time in UTC from the pubDate and its offset, topic slugs)
REMOTE_WORK_TITLE = "Remote Work and the Changing Shape of City Centres"
MICROGRIDS_TITLE = "Енергостійкість громад: уроки локальних мікромереж"
NIGHT_TRAINS_TITLE = "Night Trains Are Back. Can the Timetables Keep Up?"
SMALL_BUSINESS_TITLE = "Цифрові послуги для малого бізнесу: що справді економить час"
# What the example feed holds: guid -> (title, published in UTC, topic slugs).
EXPECTED = {
    guid: (title, datetime.fromisoformat(published).replace(tzinfo=UTC), set(topics.split()))
    for guid, title, published, topics in [
        ("meridian-2026-008", AMPERSAND_TITLE, "2026-11-27T09:15", "energy technology"),
        ("meridian-2026-007", JAPANESE_TITLE, "2026-11-24T09:30", "transport cities"),
        ("meridian-2026-006", UKRAINIAN_TITLE, "2026-11-20T08:00", "cities"),
        ("meridian-2026-005", REMOTE_WORK_TITLE, "2026-11-17T19:45", "economy cities"),
        ("meridian-2026-004", MICROGRIDS_TITLE, "2026-11-13T06:00", "energy"),
        (
            "meridian-2026-003",
            "在宅勤務は地方経済を変えるか",
            "2026-11-10T02:20",
            "economy technology",
        ),
        ("meridian-2026-002", NIGHT_TRAINS_TITLE, "2026-11-06T16:05", "transport"),
        ("meridian-2026-001", SMALL_BUSINESS_TITLE, "2026-11-02T06:30", "technology economy"),
    ]
}


def example() -> bytes:
    return EXAMPLE.read_bytes()


def item(
    title: str,
    link: str,
    guid: str,
    date: str = "Mon, 02 Nov 2026 07:30:00 +0100",
    description: str = "Plain summary.",
) -> str:
    return (
        f"<item><title>{escape(title)}</title><link>{escape(link)}</link>"
        f"<guid isPermaLink='false'>{escape(guid)}</guid><pubDate>{date}</pubDate>"
        f"<description>{escape(description)}</description></item>"
    )


def rss(*items: str, encoding: str = "utf-8") -> bytes:
    document = (
        f'<?xml version="1.0" encoding="{encoding}"?>\n'
        '<rss version="2.0"><channel><title>Test feed</title>'
        "<link>https://feed.example.org/</link><description>Tests</description>"
        f"{''.join(items)}</channel></rss>"
    )
    return document.encode(encoding)


def articles(session: Session) -> list[Article]:
    session.expire_all()
    return list(session.scalars(select(Article).order_by(Article.id)))


def article_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Article)) or 0


def test_parse_example_feed_keeps_every_item_and_its_text() -> None:
    items = parse_feed(example(), str(EXAMPLE))
    assert len(items) == 8
    by_guid = {i.guid: i for i in items}
    assert set(by_guid) == set(EXPECTED)
    for guid, (title, published, _slugs) in EXPECTED.items():
        assert by_guid[guid].title == title
        assert by_guid[guid].published_at == published
        assert by_guid[guid].published_at.utcoffset() == timedelta(0)
    assert by_guid["meridian-2026-008"].topics == ["Energy", "Technology"]
    assert by_guid["meridian-2026-007"].url == (
        "https://meridian.example.org/2026/11/24/regional-rail-revival/"
    )
    # Both are kept (issue 15): the description is the excerpt, content:encoded the post.
    assert "<em>evening peak</em>" in by_guid["meridian-2026-008"].content
    assert by_guid["meridian-2026-008"].summary.startswith("Four-hour batteries are reshaping")


@pytest.fixture
def far_local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with the process's local time zone far from UTC, then restore it."""
    monkeypatch.setenv("TZ", "Pacific/Auckland")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.usefixtures("far_local_zone")
def test_dates_do_not_depend_on_the_local_time_zone() -> None:
    assert time.localtime(0).tm_gmtoff != 0
    items = parse_feed(example(), "feed")
    assert {i.guid: i.published_at for i in items} == {g: e[1] for g, e in EXPECTED.items()}


def test_ingest_example_feed_stores_clean_articles(session: Session) -> None:
    result = ingest_document(session, example(), str(EXAMPLE))
    assert (result.added, result.updated, result.rejected) == (8, 0, 0)

    stored = {a.guid: a for a in articles(session)}
    assert set(stored) == set(EXPECTED)
    for guid, (title, published, slugs) in EXPECTED.items():
        article = stored[guid]
        assert article.title == title
        assert article.published_at == published
        assert article.published_at.utcoffset() == timedelta(0)
        assert {t.slug for t in article.topics} == slugs
    grid = stored["meridian-2026-008"]
    assert "&amp;" not in grid.title
    assert "&quot;" not in grid.title
    assert grid.author == "Helen Okafor"
    assert grid.language == "en"
    # The description is the excerpt; content:encoded is kept whole beside it (issue 15).
    assert grid.summary.startswith("Four-hour batteries are reshaping")
    assert "<em>evening peak</em>" in grid.content
    assert 'href="https://meridian.example.org/research/grid-storage-2026/"' in grid.content
    assert "本研究では" in stored["meridian-2026-007"].content
    topics = {t.slug: t.name for t in session.scalars(select(Topic))}
    assert topics == {
        "energy": "Energy",
        "technology": "Technology",
        "transport": "Transport",
        "cities": "Cities",
        "economy": "Economy",
    }


def test_ingesting_twice_adds_nothing(session: Session) -> None:
    first = ingest_document(session, example(), "feed")
    ids = {a.guid: a.id for a in articles(session)}
    second = ingest_document(session, example(), "feed")
    assert first.added == 8
    assert second.added == 0
    assert (second.updated, second.unchanged) == (0, 8)
    assert {a.guid: a.id for a in articles(session)} == ids
    assert session.scalar(select(func.count()).select_from(Topic)) == 5


def test_same_guid_with_a_changed_title_updates_in_place(session: Session) -> None:
    link = "https://feed.example.org/a"
    ingest_document(session, rss(item("Draft title", link, "guid-1")), "feed")
    [before] = articles(session)

    result = ingest_document(session, rss(item("Final title", link + "?v=2", "guid-1")), "feed")

    assert (result.added, result.updated) == (0, 1)
    [after] = articles(session)
    assert after.id == before.id
    assert after.title == "Final title"
    assert after.url == link + "?v=2"


def test_same_link_with_another_guid_is_the_same_article(session: Session) -> None:
    link = "https://feed.example.org/b"
    ingest_document(session, rss(item("Title", link, "guid-old")), "feed")
    [before] = articles(session)

    result = ingest_document(session, rss(item("Title, edited", link, "guid-new")), "feed")

    assert (result.added, result.updated) == (0, 1)
    [after] = articles(session)
    assert after.id == before.id
    assert after.title == "Title, edited"


def test_same_title_and_date_with_another_link_and_guid_is_another_article(
    session: Session,
) -> None:
    """Was "... is the same article": title and date alone never merge two posts (issue 14)."""
    date = "Tue, 24 Nov 2026 18:30:00 +0900"
    ingest_document(session, rss(item("Same Story", "https://a.example.org/1", "a-1", date)), "a")
    [before] = articles(session)

    # Another source: other link, other guid, same title (other case) at the same instant.
    result = ingest_document(
        session,
        rss(item("SAME STORY", "https://b.example.org/x", "b-9", "Tue, 24 Nov 2026 09:30:00 GMT")),
        "b",
    )

    assert (result.added, result.updated) == (1, 0)
    stored = {a.url: a for a in articles(session)}
    assert set(stored) == {"https://a.example.org/1", "https://b.example.org/x"}
    assert stored["https://a.example.org/1"].id == before.id
    assert stored["https://a.example.org/1"].title == "Same Story"

    # Seen again, each is unchanged: nothing flips between the two.
    again = ingest_document(
        session,
        rss(item("SAME STORY", "https://b.example.org/x", "b-9", "Tue, 24 Nov 2026 09:30:00 GMT")),
        "b",
    )
    assert (again.added, again.updated, again.unchanged) == (0, 0, 1)
    assert article_count(session) == 2


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(b"this is not xml at all", id="text"),
        pytest.param(b'{"items": [{"title": "json feed?"}]}', id="json"),
        pytest.param(
            b"<!DOCTYPE html><html><head><title>Blog</title></head>"
            b"<body><p>Welcome to my blog</p></body></html>",
            id="html-page",
        ),
        pytest.param(
            b'<?xml version="1.0"?><config><item>not a feed</item></config>', id="other-xml"
        ),
    ],
)
def test_a_document_that_is_not_a_feed_is_one_sentence(document: bytes) -> None:
    with pytest.raises(GazetteError) as raised:
        parse_feed(document, "https://blog.example.org/feed")
    message = str(raised.value)
    assert "https://blog.example.org/feed" in message
    assert "\n" not in message
    assert message.endswith(".")
    assert len(re.findall(r"[.!?](?:\s|$)", message)) == 1, message


def test_an_empty_feed_is_not_an_error() -> None:
    assert parse_feed(rss(), "empty") == []


HOSTILE = [
    pytest.param("<p>Hi</p><script>alert('x')</script>", id="script"),
    pytest.param("<script src='https://evil.example/x.js'></script><p>Hi</p>", id="script-src"),
    pytest.param("<style>body{background:url(javascript:alert(1))}</style><p>Hi</p>", id="style"),
    pytest.param('<p style="color:red">Hi</p>', id="style-attribute"),
    pytest.param('<iframe src="https://evil.example/"></iframe><p>Hi</p>', id="iframe"),
    pytest.param('<img src="x" onerror="alert(1)"><p>Hi</p>', id="onerror"),
    pytest.param('<p onclick="alert(1)">Hi</p>', id="onclick"),
    pytest.param('<a href="javascript:alert(1)">Hi</a>', id="javascript-url"),
    pytest.param('<a href=" JaVaScRiPt:alert(1)">Hi</a>', id="javascript-mixed-case"),
    pytest.param('<a href="data:text/html;base64,PHNjcmlwdD4=">Hi</a>', id="data-url"),
    pytest.param('<svg onload="alert(1)"><circle r="1"/></svg><p>Hi</p>', id="svg-onload"),
    pytest.param("<object data='x.swf'></object><embed src='x.swf'><p>Hi</p>", id="object"),
    pytest.param("<form action='https://evil.example/'><input name=x></form><p>Hi</p>", id="form"),
]
FORBIDDEN = (
    "<script",
    "alert",
    "<style",
    "style=",
    "<iframe",
    "onerror",
    "onclick",
    "onload",
    "javascript:",
    "data:",
    "<svg",
    "<img",
    "<object",
    "<embed",
    "<form",
    "<input",
)


@pytest.mark.parametrize("dirty", HOSTILE)
def test_clean_html_keeps_nothing_active(dirty: str) -> None:
    cleaned = clean_html(dirty).lower()
    for needle in FORBIDDEN:
        assert needle not in cleaned, (needle, cleaned)
    assert "hi" in cleaned


def test_clean_html_keeps_ordinary_text_and_safe_markup() -> None:
    text = 'Tom & Jerry say "hello" — Київ, Львів; 東京と大阪'
    cleaned = clean_html(
        f"<p>{html.escape(text, quote=False)}</p>"
        '<p><a href="https://example.org/a?b=1&amp;c=2">link</a> <em>x</em></p>'
    )
    assert html.unescape(cleaned).count(text) == 1
    assert "Київ, Львів" in cleaned
    assert "東京と大阪" in cleaned
    assert '"hello"' in cleaned
    assert "<em>x</em>" in cleaned
    assert 'href="https://example.org/a?b=1&amp;c=2"' in cleaned


def test_stored_summary_is_sanitised(session: Session) -> None:
    summary = (
        "<p onclick='steal()'>Київ &amp; 東京</p><script>alert(1)</script>"
        "<iframe src='https://evil.example/'></iframe>"
        "<a href='javascript:alert(2)'>bad</a> <a href='https://ok.example/'>good</a>"
        "<svg onload='alert(3)'></svg>"
    )
    result = upsert_article(
        session,
        ArticleInput(
            title="Hostile",
            url="https://feed.example.org/hostile",
            published_at=datetime(2026, 1, 1, tzinfo=UTC),
            summary=summary,
        ),
    )
    session.expire_all()
    stored = session.get_one(Article, result.article_id).summary
    for needle in FORBIDDEN:
        assert needle not in stored.lower()
    assert "<p>Київ &amp; 東京</p>" in stored
    assert 'href="https://ok.example/"' in stored


@pytest.mark.parametrize(
    "raw",
    [
        "Breaking\r\nBcc: victim@example.org",
        "Breaking\nnews\ttoday",
        "Breaking\x00 news",
        "Breaking\u2028news\u2029today",
        "Breaking\x85news\x0bto\x0cday\r",
        "  Breaking \r\n\r\n  news  ",
    ],
)
def test_titles_fold_into_one_line(raw: str, session: Session) -> None:
    line = clean_line(raw)
    assert line == line.strip()
    assert "  " not in line
    assert line.startswith("Breaking")
    for char in line:
        assert unicodedata.category(char) not in ("Cc", "Zl", "Zp"), repr(line)

    result = upsert_article(
        session,
        ArticleInput(
            title=raw,
            url="https://feed.example.org/one-line",
            published_at=datetime(2026, 1, 1, tzinfo=UTC),
        ),
    )
    session.expire_all()
    assert session.get_one(Article, result.article_id).title == line


def test_clean_line_keeps_words_apart() -> None:
    assert clean_line("One\r\nTwo\tThree\u2028Four") == "One Two Three Four"
    assert clean_line("Київ\n東京") == "Київ 東京"


def test_windows_1251_feed_yields_correct_cyrillic(session: Session) -> None:
    titles = ["Київ: нова лінія метро", "Їжак і ґава — «Щедрик» на є-ї"]
    document = rss(
        item(titles[0], "https://k.example.ua/1", "k-1", description="Опис & «лапки»"),
        item(titles[1], "https://k.example.ua/2", "k-2"),
        encoding="windows-1251",
    )
    assert "Київ".encode() not in document  # really not UTF-8 on the wire
    assert [i.title for i in parse_feed(document, "cp1251")] == titles

    result = ingest_document(session, document, "cp1251")
    assert result.added == 2
    stored = articles(session)
    assert [a.title for a in stored] == titles
    assert html.unescape(stored[0].summary) == "Опис & «лапки»"
