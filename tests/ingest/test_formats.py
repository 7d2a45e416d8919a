"""Feed formats: RSS, Atom and their encodings, dates and guids, stored as articles."""

from __future__ import annotations

import html
from datetime import UTC, datetime

import pytest

from gazette.articles.feeds import IngestResult, poll_feed
from gazette.runtime import Runtime
from tests.ingest.helpers import ATOM, ATOM_HTML_TITLE, RDF, WORDPRESS, parse_html, register, stored
from tests.support.feedserver import FeedServer, rss, rss_item


def test_wordpress_feed_summary_comes_from_content_encoded(
    runtime: Runtime, feeds: FeedServer
) -> None:
    url = feeds.static("/feed/", WORDPRESS.encode(), charset="UTF-8")
    feed_id = register(runtime, url)

    result = poll_feed(runtime.sessions, feed_id)

    assert result.error is None
    assert result.ingest == IngestResult(2, 0, 0, 0)
    [request] = feeds.requests("/feed/")
    assert request.headers["user-agent"].startswith("Gazette/")
    tides, moorings = stored(runtime)
    assert tides.title == "Tides & Timetables: The \u201cSpring\u201d Schedule"
    assert tides.author == "Mara Lind"
    assert tides.language == "en"
    assert tides.guid == "https://harbour.example.org/?p=1042"
    assert tides.feed_id == feed_id
    assert tides.published_at == datetime(2026, 11, 18, 10, 12, 45, tzinfo=UTC)
    assert {t.slug for t in tides.topics} == {"transport", "harbour-life"}
    # The teaser in description is the excerpt, WordPress's "Continue reading" tidied...
    assert tides.summary == "The spring timetable adds two early ferries …"
    # ...and the full text of content:encoded is kept beside it (issue 15)...
    assert "<strong>two early ferries</strong> &amp; a late one." in tides.content
    # ...cleaned to the allow-list; an absolute https image stays, and is the featured one.
    tags = parse_html(tides.content)
    assert {t for t, _ in tags} <= {"p", "strong", "a", "figure", "img"}
    [(_, link)] = [(t, a) for t, a in tags if t == "a"]
    assert link["href"] == "https://harbour.example.org/tickets/"
    assert set(link) == {"href", "rel"}
    [(_, image)] = [(t, a) for t, a in tags if t == "img"]
    assert set(image) <= {"src", "alt", "width", "height"}
    assert tides.image_url == "https://harbour.example.org/wp-content/uploads/ferry.jpg"
    assert tides.image_alt == "Ferry"
    for needle in ("<script", "track", "style=", "onclick", "target="):
        assert needle not in tides.content
        assert needle not in tides.summary
    # Without content:encoded the description is the summary.
    assert moorings.summary == "<p>Moorings move to the <em>inner basin</em> from December.</p>"
    assert moorings.published_at == datetime(2026, 11, 10, 7, 0, tzinfo=UTC)


def test_atom_feed(runtime: Runtime, feeds: FeedServer) -> None:
    url = feeds.static("/feed.atom", ATOM.encode(), content_type="application/atom+xml")
    feed_id = register(runtime, url)

    result = poll_feed(runtime.sessions, feed_id)

    assert result.ingest == IngestResult(2, 0, 0, 0), result
    metro, parks = stored(runtime)
    assert metro.title == "Нова лінія метро"
    assert metro.url == "https://atom.example.org/2026/metro"  # rel=alternate, not replies
    assert metro.guid == "tag:atom.example.org,2026:metro"
    # published wins over updated; the offset is folded into UTC.
    assert metro.published_at == datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
    assert metro.author == "Оксана Коваль"
    assert metro.language == "uk"
    assert {t.slug for t in metro.topics} == {"transport"}
    # summary is the excerpt; content type="html" is unescaped once, cleaned, kept beside it.
    assert metro.summary == "Коротко."
    assert metro.content == "<p>Повний <b>текст</b> &amp; більше.</p>"
    # Only updated: that is the date; a text title keeps its characters as text.
    assert parks.published_at == datetime(2026, 11, 19, 11, 30, tzinfo=UTC)
    assert parks.title == "Parks & <shade>"
    assert parks.summary == "<p>Shade <em>cools</em> streets.</p>"


def test_atom_html_title_is_stored_as_plain_text(runtime: Runtime, feeds: FeedServer) -> None:
    # type="html" means the title is markup: the reader's text is Tom & Jerry say "hi".
    url = feeds.static("/html-title.atom", ATOM_HTML_TITLE.encode())
    result = poll_feed(runtime.sessions, register(runtime, url))
    assert result.ingest is not None
    assert result.ingest.added == 1
    [article] = stored(runtime)
    assert article.title == 'Tom & Jerry say "hi"'


def test_rss_1_0_rdf_feed(runtime: Runtime, feeds: FeedServer) -> None:
    url = feeds.static("/index.rdf", RDF.encode(), content_type="application/rdf+xml")
    result = poll_feed(runtime.sessions, register(runtime, url))

    assert result.ingest == IngestResult(2, 0, 0, 0), result
    first, second = stored(runtime)
    assert (first.title, first.url) == ("Erste Nachricht", "https://rdf.example.org/eins")
    assert first.published_at == datetime(2026, 11, 5, 7, 0, tzinfo=UTC)
    assert first.author == "Karl Weber"
    assert first.language == "de"
    assert first.summary == "Die <b>erste</b> Meldung &amp; mehr."
    assert {t.slug for t in first.topics} == {"wissenschaft"}
    assert second.published_at == datetime(2026, 11, 6, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("encoding", "titles", "summary"),
    [
        pytest.param(
            "windows-1251",
            ["Київ: нова лінія метро", "Їжак і ґава — «Щедрик»"],
            "Опис & «лапки»",
            id="windows-1251",
        ),
        pytest.param(
            "shift_jis",
            ["地方鉄道の再生：乗客が戻る路線の条件", "在宅勤務は地方経済を変えるか"],
            "東京と大阪 & 「引用」",
            id="shift_jis",
        ),
    ],
)
def test_feed_in_a_legacy_encoding(
    runtime: Runtime, feeds: FeedServer, encoding: str, titles: list[str], summary: str
) -> None:
    document = rss(
        rss_item(1, titles[0], description=summary),
        rss_item(2, titles[1], date="Thu, 19 Nov 2026 10:00:00 +0000"),
        encoding=encoding,
    )
    assert titles[0].encode() not in document  # really not UTF-8 on the wire
    url = feeds.static(f"/{encoding}.xml", document, charset=encoding)

    result = poll_feed(runtime.sessions, register(runtime, url))

    assert result.ingest is not None
    assert result.ingest.added == 2
    articles = stored(runtime)
    assert [a.title for a in articles] == titles
    assert html.unescape(articles[0].summary) == summary
