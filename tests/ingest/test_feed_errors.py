"""Feed errors an operator can act on (issue 16, items 9, 10, 13 and 15).

Every feed here is served over real HTTP on loopback (tests/feedserver.py) or sits on a
port nothing listens on, and every command runs the real CLI in a subprocess against
SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from datetime import timedelta
from xml.sax.saxutils import escape

import pytest
from sqlalchemy import select

from gazette.articles.feed_documents import parse_feed
from gazette.articles.feed_registry import normalise_feed_url
from gazette.articles.feeds import due_feeds
from gazette.articles.service import topic_for
from gazette.errors import GazetteError
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Article, Feed, Newsletter, utcnow
from tests.support.cli import FeedCli
from tests.support.feedserver import FeedServer, Static, dead_port_url, rss, rss_item

HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Harbour News</title></head>"
    b"<body><h1>Welcome</h1><p>Our latest stories.</p></body></html>"
)
HTML_WITH_FEED_LINK = (
    b"<!DOCTYPE html><html><head><title>Harbour News</title>"
    b'<link rel="stylesheet" href="/style.css">'
    b'<link rel="alternate" type="application/rss+xml" title="RSS" href="/feeds/all.xml">'
    b"</head><body><p>Our latest stories.</p></body></html>"
)
JSON_FEED = (
    b'{"version": "https://jsonfeed.org/version/1.1", "title": "Harbour News",'
    b' "items": [{"id": "1", "url": "https://harbour.example.org/1", "title": "Ferries"}]}'
)
# An empty channel whose description uses an HTML entity, as WordPress writes it.
EMPTY_WITH_ENTITY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
    b"<title>Harbour News</title><link>https://harbour.example.org/</link>"
    b"<description>News&nbsp;from the harbour</description></channel></rss>\n"
)
DATE = "<pubDate>Wed, 18 Nov 2026 10:00:00 +0000</pubDate>"


def one_sentence(message: str) -> str:
    """The stderr line of a refused command, without the program's prefix."""
    assert message.startswith("gazette: "), message
    sentence = message.removeprefix("gazette: ").strip()
    assert "\n" not in sentence, sentence
    assert sentence.endswith("."), sentence
    assert len(re.findall(r"[.!?](?:\s|$)", sentence)) == 1, sentence
    return sentence


def refused(cli: FeedCli, *args: str, code: int = 1) -> str:
    """Run a command that must be refused with ``code`` and one sentence; return it."""
    result = cli(*args)
    assert result.returncode == code, f"{args}: exit {result.returncode}\n{result.stdout}"
    assert "Traceback" not in result.stderr, result.stderr
    return one_sentence(result.stderr)


def feed_rows(runtime: Runtime) -> list[Feed]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Feed).order_by(Feed.id)))


# --- item 9: unknown ids and names, partial failure -------------------------------------


def test_polling_an_unknown_feed_id_is_one_sentence(cli: FeedCli) -> None:
    assert refused(cli, "feeds", "poll", "999") == "There is no feed 999."


def test_poll_all_exits_non_zero_when_some_feeds_failed_after_polling_each(
    cli: FeedCli, feeds: FeedServer
) -> None:
    good = feeds.static("/good.xml", rss(rss_item(1, "Ferries")))
    bad = [feeds.url("/gone.xml"), feeds.url("/error"), dead_port_url()]
    cli.ok("feeds", "add", good)
    for url in bad:
        cli.ok("feeds", "add", url, "--no-check")

    result = cli("feeds", "poll", "--all")

    assert result.returncode == 1, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines == [
        f"{good}: 1 added, 0 updated, 0 unchanged, 0 rejected",
        f"Feed 2 failed: {bad[0]} answered HTTP 404.",
        f"Feed 3 failed: {bad[1]} answered HTTP 500.",
        f"Feed 4 failed: Connection refused on {bad[2]}.",
        "Polled 4 feed(s), 3 failed.",
    ]


def test_a_failed_poll_of_one_feed_exits_non_zero(cli: FeedCli, feeds: FeedServer) -> None:
    url = feeds.url("/gone.xml")
    cli.ok("feeds", "add", url, "--no-check")

    result = cli("feeds", "poll", "1")

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"Feed 1 failed: {url} answered HTTP 404.",
        "Polled 1 feed(s), 1 failed.",
    ]


def test_newsletter_topic_filter_refuses_an_unknown_topic(cli: FeedCli, runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        create_newsletter(session, "weekly", "The Weekly")
        topic_for(session, "Energy")
        topic_for(session, "Cities")

    sentence = refused(cli, "newsletters", "edit", "weekly", "--topic", "NoSuchTopic", code=2)

    assert sentence == "There is no topic 'NoSuchTopic'; the known topics are Cities, Energy."
    with runtime.sessions() as session:
        weekly = session.scalars(select(Newsletter)).one()
        assert weekly.topics == []
    # A known topic, in any case, is still accepted.
    cli.ok("newsletters", "edit", "weekly", "--topic", "energy")
    with runtime.sessions() as session:
        weekly = session.scalars(select(Newsletter)).one()
        assert [t.slug for t in weekly.topics] == ["energy"]


# --- item 10: check and normalise when adding -------------------------------------------


def test_adding_a_dead_port_is_refused_unless_no_check(cli: FeedCli, runtime: Runtime) -> None:
    url = dead_port_url()

    assert refused(cli, "feeds", "add", url) == f"Connection refused on {url}."
    assert feed_rows(runtime) == []

    added = cli.ok("feeds", "add", url, "--no-check")
    assert added.stdout.strip() == f"Feed 1 added: {url}"


def test_adding_a_404_is_refused_with_its_status(
    cli: FeedCli, runtime: Runtime, feeds: FeedServer
) -> None:
    url = feeds.url("/feed.xml")

    assert refused(cli, "feeds", "add", url) == f"{url} answered HTTP 404."
    assert feed_rows(runtime) == []


def test_adding_an_html_page_is_refused_and_names_the_feed_it_links(
    cli: FeedCli, runtime: Runtime, feeds: FeedServer
) -> None:
    plain = feeds.static("/about", HTML_PAGE, content_type="text/html")
    linking = feeds.static("/blog/", HTML_WITH_FEED_LINK, content_type="text/html")

    assert refused(cli, "feeds", "add", plain) == f"{plain} is an HTML page, not a feed."
    assert refused(cli, "feeds", "add", linking) == (
        f"{linking} is an HTML page, not a feed; the page links the feed "
        f"{feeds.url('/feeds/all.xml')}."
    )
    assert feed_rows(runtime) == []


def test_adding_a_json_feed_says_json_feed_is_not_supported(
    cli: FeedCli, runtime: Runtime, feeds: FeedServer
) -> None:
    url = feeds.static("/feed.json", JSON_FEED, content_type="application/feed+json")

    sentence = refused(cli, "feeds", "add", url)

    assert sentence == f"{url} is a JSON document, not RSS or Atom (JSON Feed is not supported)."
    assert feed_rows(runtime) == []


def test_a_second_spelling_of_a_feed_is_refused_naming_the_first(
    cli: FeedCli, runtime: Runtime, feeds: FeedServer
) -> None:
    url = feeds.static("/Feed.xml", rss(rss_item(1, "Ferries")))
    cli.ok("feeds", "add", url)
    shouting = url.replace("http://", "HTTP://") + "#latest"

    sentence = refused(cli, "feeds", "add", shouting)

    assert sentence == f"The feed {url} is already registered (feed 1)."
    assert [f.url for f in feed_rows(runtime)] == [url]


def test_a_feed_url_is_stored_in_its_normal_form(
    cli: FeedCli, runtime: Runtime, feeds: FeedServer
) -> None:
    feeds.static("/", rss())
    given = f"HTTP://LocalHost:{feeds.port}"

    added = cli.ok("feeds", "add", given)

    normal = f"http://localhost:{feeds.port}/"
    assert added.stdout.strip() == f"Feed 1 added: {normal}"
    assert [f.url for f in feed_rows(runtime)] == [normal]


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("HTTP://Host.Example.ORG/feed", "http://host.example.org/feed"),
        ("http://host.example.org", "http://host.example.org/"),
        ("http://host.example.org:80/feed", "http://host.example.org/feed"),
        ("https://host.example.org:443/feed", "https://host.example.org/feed"),
        ("https://host.example.org:8443/feed", "https://host.example.org:8443/feed"),
        ("http://host.example.org:443/feed", "http://host.example.org:443/feed"),
        (
            "http://host.example.org/Feed.XML?Lang=EN#top",
            "http://host.example.org/Feed.XML?Lang=EN",
        ),
        ("  http://[2001:DB8::1]:80/rss  ", "http://[2001:db8::1]/rss"),
        ("http://User:Pass@Host.example.org/feed", "http://User:Pass@host.example.org/feed"),
    ],
)
def test_normal_form_of_a_feed_url(given: str, normal: str) -> None:
    assert normalise_feed_url(given) == normal


@pytest.mark.parametrize("given", ["ftp://host.example.org/feed", "host.example.org/feed"])
def test_a_feed_url_that_is_not_http_is_refused(given: str) -> None:
    with pytest.raises(GazetteError, match=re.escape(repr(given))):
        normalise_feed_url(given)


# --- item 13: feeds remove ---------------------------------------------------------------


def test_a_removed_feed_is_not_polled_keeps_its_articles_and_comes_back_when_added(
    cli: FeedCli, runtime: Runtime, feeds: FeedServer
) -> None:
    kept_url = feeds.static("/kept.xml", rss(rss_item(1, "Ferries", host="kept.example.org")))
    gone_url = feeds.static("/gone.xml", rss(rss_item(1, "Trams"), rss_item(2, "Buses")))
    cli.ok("feeds", "add", kept_url)
    cli.ok("feeds", "add", gone_url, "--interval", "30")
    cli.ok("feeds", "poll", "--all")
    with runtime.sessions() as session:
        before = {a.id: (a.guid, a.feed_id) for a in session.scalars(select(Article))}
    assert sorted(feed_id or 0 for _guid, feed_id in before.values()) == [1, 2, 2]

    removed = cli.ok("feeds", "remove", gone_url.replace("http://", "HTTP://"))

    assert removed.stdout.strip() == (
        f"Feed 2 removed: {gone_url} (no longer polled; its 2 article(s) are kept)."
    )
    with runtime.sessions() as session:
        assert due_feeds(session, utcnow() + timedelta(days=1)) == [1]
        assert {a.id: (a.guid, a.feed_id) for a in session.scalars(select(Article))} == before
    polled = cli.ok("feeds", "poll", "--all")
    assert polled.stdout.strip().splitlines()[-1] == "Polled 1 feed(s), 0 failed."
    assert gone_url not in polled.stdout
    sentence = refused(cli, "feeds", "poll", "2")
    assert sentence.startswith(f"Feed 2 ({gone_url}) was removed on ")
    assert sentence.endswith(f"`gazette feeds add {gone_url}` restores it.")
    listing = {row["id"]: row for row in cli.json("feeds", "list", "--json")["feeds"]}
    assert listing[1]["removed_at"] is None
    assert listing[2]["removed_at"] is not None
    table = cli.ok("feeds", "list").stdout
    assert "removed" in next(line for line in table.splitlines() if "/gone.xml" in line)
    # The check when it was added and the poll before the removal; none since.
    assert len(feeds.requests("/gone.xml")) == 2
    again = cli.ok("feeds", "remove", "2")
    assert "was already removed on" in again.stdout

    restored = cli.ok("feeds", "add", gone_url)

    assert restored.stdout.strip() == f"Feed 2 restored: {gone_url}"
    assert [(f.id, f.removed_at, f.poll_interval_seconds) for f in feed_rows(runtime)] == [
        (1, None, 15 * 60),
        (2, None, 30 * 60),
    ]
    repolled = cli.ok("feeds", "poll", "2")
    assert f"{gone_url}: 0 added, 0 updated, 2 unchanged, 0 rejected" in repolled.stdout
    with runtime.sessions() as session:
        assert {a.id: (a.guid, a.feed_id) for a in session.scalars(select(Article))} == before


def test_removing_an_unknown_feed_is_one_sentence(cli: FeedCli) -> None:
    assert refused(cli, "feeds", "remove", "7") == "There is no feed 7."
    assert refused(cli, "feeds", "remove", "https://nowhere.example.org/feed") == (
        "There is no feed 'https://nowhere.example.org/feed' (give its id or its URL)."
    )


# --- item 15: reasons an operator can act on ---------------------------------------------


def test_each_rejected_item_says_why_in_the_poll_and_in_feeds_list(
    cli: FeedCli, feeds: FeedServer
) -> None:
    items = [
        rss_item(1, "Ferries run again"),
        "<item><title>&lt;img src=&quot;https://news.example.org/a.png&quot;&gt;</title>"
        f"<link>https://news.example.org/2</link>{DATE}</item>",
        f"<item><title>Click me</title><link>javascript:alert(1)</link>{DATE}</item>",
        f"<item><title>Nowhere</title>{DATE}</item>",
        "<item><title>Undated</title><link>https://news.example.org/5</link></item>",
        f"<item><title>  </title><link>https://news.example.org/6</link>{DATE}</item>",
    ]
    url = feeds.static("/feed.xml", rss(*items))
    cli.ok("feeds", "add", url)

    polled = cli.ok("feeds", "poll", "1")

    reasons = [
        "item 2 '<img src=\"https://news.example.org/a.png\">': its title is only an image",
        "item 3 'Click me': its link 'javascript:alert(1)' is not an http(s) URL",
        "item 4 'Nowhere': it has no link and no guid",
        "item 5 'Undated': it has no date",
        "item 6 'https://news.example.org/6': it has no title",
    ]
    assert polled.stdout.splitlines() == [
        f"{url}: 1 added, 0 updated, 0 unchanged, 5 rejected",
        *(f"  rejected {reason}" for reason in reasons),
        "Polled 1 feed(s), 0 failed.",
    ]
    [row] = cli.json("feeds", "list", "--json")["feeds"]
    assert row["rejections"] == reasons
    assert row["last_error"] is None
    table = cli.ok("feeds", "list").stdout
    assert "its title is only an image" in table


def test_an_atom_entry_whose_html_title_is_only_an_image_is_rejected_with_the_reason() -> None:
    document = (
        b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        b"<title>Photos</title><id>urn:photos</id><updated>2026-11-18T10:00:00Z</updated>"
        b'<entry><title type="html">&lt;img src="https://photos.example.org/1.jpg"&gt;</title>'
        b'<id>urn:photo:1</id><link href="https://photos.example.org/1"/>'
        b"<updated>2026-11-18T10:00:00Z</updated></entry></feed>"
    )
    rejections: list[str] = []

    assert parse_feed(document, "photos", rejections=rejections) == []
    assert rejections == [
        "item 1 '<img src=\"https://photos.example.org/1.jpg\" />': its title is only an image"
    ]


def test_the_rejection_summary_is_replaced_by_the_next_poll(
    cli: FeedCli, runtime: Runtime, feeds: FeedServer
) -> None:
    bad = f"<item><title>Nowhere</title>{DATE}</item>"
    url = feeds.static("/feed.xml", rss(rss_item(1, "Ferries"), bad))
    cli.ok("feeds", "add", url)
    cli.ok("feeds", "poll", "1")
    assert feed_rows(runtime)[0].last_rejections == "item 2 'Nowhere': it has no link and no guid"

    feeds.static("/feed.xml", rss(rss_item(1, "Ferries")))
    cli.ok("feeds", "poll", "1")

    assert feed_rows(runtime)[0].last_rejections is None


def test_a_malformed_feed_names_its_line_and_column_and_the_url_once(
    cli: FeedCli, runtime: Runtime, feeds: FeedServer
) -> None:
    # A stray "<" on the second line: the "<" after it is its 39th character.
    document = (
        b'<?xml version="1.0"?>\n<rss version="2.0"><channel><title>A <<b</title></channel></rss>\n'
    )
    url = feeds.static("/broken.xml", document)
    cli.ok("feeds", "add", url, "--no-check")

    polled = cli("feeds", "poll", "1")

    assert polled.returncode == 1
    line = polled.stdout.splitlines()[0]
    assert line == (
        f"Feed 1 failed: {url} is not a readable RSS or Atom feed "
        "(line 2, column 39: not well-formed (invalid token))."
    )
    assert line.count(url) == 1
    assert "<unknown>" not in line
    assert feed_rows(runtime)[0].last_error == line.removeprefix("Feed 1 failed: ")


def test_polling_a_json_feed_says_json_feed_is_not_supported(
    cli: FeedCli, runtime: Runtime, feeds: FeedServer
) -> None:
    # Served as application/json, the type most servers give it; the body decides.
    url = feeds.route("/feed.json", Static(JSON_FEED, content_type="application/json"))
    cli.ok("feeds", "add", url, "--no-check")

    polled = cli("feeds", "poll", "1")

    assert polled.returncode == 1
    expected = f"{url} is a JSON document, not RSS or Atom (JSON Feed is not supported)."
    assert polled.stdout.splitlines()[0] == f"Feed 1 failed: {expected}"
    assert "invalid token" not in polled.stdout
    assert feed_rows(runtime)[0].last_error == expected


def test_json_feed_is_recognised_without_a_content_type() -> None:
    with pytest.raises(GazetteError) as raised:
        parse_feed(b"\n  " + JSON_FEED, "https://harbour.example.org/feed")
    assert "JSON Feed is not supported" in str(raised.value)


def test_an_empty_rss_feed_with_an_html_entity_is_an_empty_feed(
    cli: FeedCli, runtime: Runtime, feeds: FeedServer
) -> None:
    assert parse_feed(EMPTY_WITH_ENTITY, "empty") == []
    url = feeds.static("/empty.xml", EMPTY_WITH_ENTITY)

    cli.ok("feeds", "add", url)
    polled = cli.ok("feeds", "poll", "1")

    assert polled.stdout.splitlines()[0] == f"{url}: 0 added, 0 updated, 0 unchanged, 0 rejected"
    assert feed_rows(runtime)[0].last_error is None


def test_an_rss_feed_cut_short_is_still_refused() -> None:
    """The entity allowance must not let a truncated document through as empty."""
    cut = EMPTY_WITH_ENTITY[: EMPTY_WITH_ENTITY.index(b"</channel>")]
    with pytest.raises(GazetteError, match=r"line 2, column \d+: no element found"):
        parse_feed(cut, "cut")


def test_the_title_of_a_rejected_item_is_printed_literally_in_feeds_list(
    cli: FeedCli, feeds: FeedServer
) -> None:
    title = "[bold red]Loud[/bold red] [link=https://evil.example.org]x[/link]"
    item = f"<item><title>{escape(title)}</title>{DATE}</item>"
    url = feeds.static("/feed.xml", rss(item))
    cli.ok("feeds", "add", url)
    cli.ok("feeds", "poll", "1")

    table = cli.ok("feeds", "list").stdout

    assert "[bold red]Loud" in table
