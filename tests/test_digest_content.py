"""What a digest of long reads carries (issue 15): excerpts, absolute links, images, size.

A WordPress-like publisher (tests/longreads.py) serves ten long reads of forty
paragraphs in English, Ukrainian and Japanese over real HTTP on loopback; the feeds
are polled (article pages read once for og:image), an issue is planned in a real
database (SQLite, and PostgreSQL when configured) and sent by the tasks in-process to
the Maildir outbox. Every check reads the message bytes as they would arrive.
"""

from __future__ import annotations

import itertools
import re
import ssl
import struct
import subprocess
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from sqlalchemy import select

from gazette.articles.feed_registry import add_feed
from gazette.articles.feeds import poll_feed
from gazette.digests.content import HTML_BUDGET
from gazette.newsletters.service import NewsletterChanges, create_newsletter, update_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Article, utcnow
from gazette.text import display_width
from tests.support import longreads
from tests.support.digests import (
    SLUG,
    add_readers,
    artifacts_dir,
    js,
    maildir_messages,
    plan,
    require_chromium,
    send,
    start_chromium,
)
from tests.support.feedserver import FeedServer, Redirect, Static
from tests.support.messages import parse, parts

# Names near the longest a reader may have (subscriber.name is 200 characters).
READERS = [
    ("olena@example.org", ("Олена Марченко-Ковальська " * 7).strip(), "uk"),
    ("ken@example.org", "健" * 200, "ja"),
    ("ann@example.org", ("Ann Wetherington-Smythe " * 8).strip(), "en"),
]


class Elements(HTMLParser):
    """Every element of an HTML part with its attributes, and the text of its cells."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.elements if name == tag]


def ingest(runtime: Runtime, feeds: FeedServer) -> dict[str, int]:
    """Register and poll the three feeds; return their ids by language."""
    urls = longreads.publish(feeds, utcnow())
    ids = {}
    for language, url in urls.items():
        with transaction(runtime.sessions) as session:
            ids[language] = add_feed(session, url)
        result = poll_feed(runtime.sessions, ids[language])
        assert result.error is None, result.error
        assert result.ingest is not None
        assert (result.ingest.added, result.rejections) == (longreads.POSTS, ()), result
    return ids


def send_issue(runtime: Runtime, **changes: object) -> dict[str, EmailMessage]:
    """Plan and send one issue to the three readers; return their messages by address."""
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(
            session, SLUG, "Long Reads", max_articles=30, article_languages="own"
        )
        if changes:
            update_newsletter(session, SLUG, NewsletterChanges(**changes))  # type: ignore[arg-type]
    add_readers(runtime, READERS)
    issue_id, _public_id, _status = plan(runtime, newsletter_id)
    send(runtime, issue_id)
    messages = {}
    for data in maildir_messages(runtime):
        message = parse(data)
        messages[str(message["To"].addresses[0].addr_spec)] = message
    assert len(messages) == len(READERS)
    return messages


def html_part_bytes(message: EmailMessage) -> int:
    """Bytes of the HTML part's body as sent (still quoted-printable encoded)."""
    html = message.get_body(("html",))
    assert html is not None
    assert html["Content-Transfer-Encoding"] == "quoted-printable"
    payload = html.get_payload(decode=False)
    assert isinstance(payload, str)
    return len(payload.encode("ascii"))


def test_ten_long_reads_make_a_digest_under_the_size_limit_with_everything_absolute(
    runtime: Runtime, feeds: FeedServer
) -> None:
    ingest(runtime, feeds)
    messages = send_issue(runtime)

    for address, name, language in READERS:
        message = messages[address]
        text, html = parts(message)
        posts = {p.title: p for p in longreads.posts(language)}
        # Under Gmail's clipping limit as sent, with the footer (and its links) whole.
        size = html_part_bytes(message)
        assert size < HTML_BUDGET, (language, size)
        document = Elements(html)
        hrefs = [a["href"] for a in document.all("a")]
        assert any("/unsubscribe/" in h for h in hrefs), language
        assert any("/preferences/" in h for h in hrefs), language
        assert html.rstrip().endswith("</html>")
        assert name in html  # personalised with the longest name
        # Excerpts: the opening of every post, never its fortieth paragraph.
        for post in posts.values():
            assert longreads.paragraph(language, post.n, 0)[:30] in html, post.title
            last = longreads.paragraph(language, post.n, longreads.PARAGRAPHS - 1)
            assert last[:30] not in html, post.title
        # WordPress's boilerplate is gone.
        for needle in ("[…]", "[&#8230;]", "appeared first on", "pixel.gif", "srcset"):
            assert needle not in html, (language, needle)
        # Every link and image is absolute http(s).
        for attrs in document.all("a"):
            parts_ = urlsplit(attrs["href"])
            assert parts_.scheme in ("http", "https"), attrs["href"]
            assert parts_.netloc, attrs["href"]
        images = document.all("img")
        for attrs in images:
            assert attrs["src"].startswith("https://"), attrs["src"]
            assert "alt" in attrs, attrs
        # A featured image for each post with the feed's alt text, or alt="" when the feed
        # gives none: the image is then decorative, and repeating the title beside the
        # title would show it twice when images are blocked.
        featured = {i["src"]: i["alt"] for i in images if i.get("width") == "552"}
        assert len(featured) == longreads.POSTS, (language, featured)
        for post in posts.values():
            assert featured[post.image_url] == post.image_alt, post
            assert "max-width:552px" in next(
                i["style"] for i in images if i["src"] == post.image_url
            )
        assert "" in featured.values(), featured  # some posts give no alt text
        assert any(featured.values()), featured  # and some do
        # Each article declares its own language.
        languages = [t["lang"] for t in document.all("table") if "lang" in t]
        assert languages == [language] * longreads.POSTS
        # The programme table keeps its rows and cells, in HTML and in text.
        for time_, event in longreads.TABLE_ROWS:
            assert [time_, event] == document.cells[
                document.cells.index(time_) : document.cells.index(time_) + 2
            ]
            assert f"{time_} | {event}" in text.split("\n")
        # The text part: 78 columns by display width except where a URL is too long.
        for line in text.split("\n"):
            if "http" not in line:
                assert display_width(line) <= 78, (language, line)
        assert "1,200" in text or "1 200" in text


def test_japanese_text_part_never_splits_a_number(runtime: Runtime, feeds: FeedServer) -> None:
    ingest(runtime, feeds)
    text, _html = parts(send_issue(runtime)["ken@example.org"])

    lines = text.split("\n")
    assert max(display_width(line) for line in lines if "http" not in line) <= 78
    for before, after in itertools.pairwise(lines):
        # A break between two digits (or around the comma of 1,200) would split a number.
        assert not (re.search(r"[\d,]$", before) and re.match(r"\s*[\d,]", after)), (before, after)
        # Closing punctuation never starts a line.
        assert not re.match(r"\s*[、。」』）]", after), after
    # Every number arrives whole: as many "1,200" as paragraphs carried that hold one.
    carried = text.count("メガワット")
    assert carried > 0
    assert text.count("1,200メガワット") == carried


def test_full_posts_are_shortened_to_fit_and_keep_the_footer(
    runtime: Runtime, feeds: FeedServer
) -> None:
    ingest(runtime, feeds)
    messages = send_issue(runtime, content_mode="full")

    for address, _name, language in READERS:
        message = messages[address]
        _text, html = parts(message)
        assert html_part_bytes(message) < HTML_BUDGET, language
        # Something beyond an excerpt is carried where it fits: a figure caption or a
        # later paragraph of some post survives the shortening.
        later = [
            p for p in longreads.posts(language)
            if longreads.paragraph(language, p.n, 3)[:30] in html
        ]  # fmt: skip
        assert later, language
        assert "/unsubscribe/" in html


def test_images_off_sends_no_image_and_reads_well(runtime: Runtime, feeds: FeedServer) -> None:
    ingest(runtime, feeds)
    messages = send_issue(runtime, images=False)

    for address, _name, language in READERS:
        _text, html = parts(messages[address])
        assert Elements(html).all("img") == [], language
        for post in longreads.posts(language):
            assert post.title in html


def test_article_pages_are_read_once_for_their_og_image(
    runtime: Runtime, feeds: FeedServer
) -> None:
    ids = ingest(runtime, feeds)
    # Polled again: the feed is re-read, the pages are not.
    for feed_id in ids.values():
        assert poll_feed(runtime.sessions, feed_id).error is None
    for language in longreads.LANGUAGES:
        for post in longreads.posts(language):
            read = len(feeds.requests(post.path))
            # Only posts with no image in the feed or in the post send anyone to the page.
            assert read == (1 if post.image_source == "og" else 0), (post.path, read)
    with runtime.sessions() as session:
        stored = {a.url: a for a in session.scalars(select(Article))}
    for language in longreads.LANGUAGES:
        for post in longreads.posts(language):
            article = stored[feeds.url(post.path)]  # the relative <link>, made absolute
            assert article.image_url == post.image_url, post
            assert article.content.count("<p>") >= longreads.PARAGRAPHS
            assert 'href="/' not in article.content
            assert 'src="/' not in article.content


# --- in Chromium: images on (served over local HTTPS) and blocked -----------------------


def png(width: int, height: int, hue: int) -> bytes:
    """A gradient PNG of ``width`` x ``height``, tinted by ``hue`` (0-255)."""
    rows = b"".join(b"\x00" + bytes((hue, (y * 255) // height, 160)) * width for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


class _Images(BaseHTTPRequestHandler):
    """Answers every path with a PNG (the CDN of the fixture's featured images)."""

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: pytest shows what matters."""

    def do_GET(self) -> None:
        body = png(1200, 675, (sum(self.path.encode()) * 37) % 256)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def https_images(folder: Path) -> Iterator[int]:
    """An HTTPS server on loopback with a self-signed test certificate; yields its port."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", f"/CN={urlsplit(longreads.CDN).hostname}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def browser(profile: Path, cdn_port: int) -> WebDriver:
    """Headless Chromium that finds the fixture's CDN on ``cdn_port`` of loopback."""
    host = urlsplit(longreads.CDN).hostname
    return start_chromium(
        profile,
        f"--host-resolver-rules=MAP {host} 127.0.0.1:{cdn_port}",
        "--ignore-certificate-errors",
        window=None,
    )


def test_long_reads_digest_in_chromium_images_on_and_blocked(
    runtime: Runtime, feeds: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_chromium()
    monkeypatch.setenv("SE_OFFLINE", "true")
    ingest(runtime, feeds)
    messages = send_issue(runtime)
    pages = {}
    for address, _name, language in READERS:
        pages[language] = tmp_path / f"digest-{language}.html"
        pages[language].write_text(parts(messages[address])[1], encoding="utf-8")
    shots = artifacts_dir("content15")
    with https_images(tmp_path) as port:
        # A dead port stands for a client that blocks images: alt text shows instead.
        for images, cdn_port in (("on", port), ("off", 1)):
            driver = browser(tmp_path / f"profile-{images}", cdn_port)
            try:
                for language, width in itertools.product(("en", "uk", "ja"), (390, 1200)):
                    driver.set_window_size(width, 900)
                    driver.get(pages[language].as_uri())
                    js(driver, "return Promise.all([...document.images].map(i => i.decode()"
                               ".catch(() => null)))")  # fmt: skip
                    height = js(driver, "return document.documentElement.scrollHeight")
                    driver.set_window_size(width, min(int(height) + 200, 16000))
                    shot = shots / f"digest-{language}-{width}-images-{images}.png"
                    assert driver.save_screenshot(str(shot))
                    scroll = js(driver, "return document.documentElement.scrollWidth")
                    assert scroll <= js(driver, "return window.innerWidth"), (language, width)
                    featured = js(
                        driver,
                        "return [...document.images].filter(i => i.getAttribute('width') === "
                        "'552').map(i => [i.getBoundingClientRect().width, i.naturalWidth, i.alt])",
                    )
                    assert len(featured) == longreads.POSTS
                    for shown, natural, _alt in featured:
                        assert shown <= 552
                        assert (natural > 0) == (images == "on"), (language, images, natural)
                    assert sorted(alt for *_, alt in featured) == sorted(
                        p.image_alt for p in longreads.posts(language)
                    )
                    text = js(driver, "return document.body.innerText")
                    for post in longreads.posts(language):
                        # Each title shows once, images on or blocked.
                        assert text.count(post.title) == 1, (language, images, post.title)
            finally:
                driver.quit()


RELATIVE = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Lab</title><link>/</link>
<item><title>Relative</title><link>posts/relative/</link>
<guid isPermaLink="false">rel-1</guid><pubDate>Mon, 30 Nov 2026 10:00:00 +0000</pubDate>
<description><![CDATA[<p>See <a href="notes/">notes</a>.</p>]]></description></item>
<item xml:base="https://other.example.org/magazine/"><title>Based</title><link>issue-4/</link>
<guid isPermaLink="false">rel-2</guid><pubDate>Mon, 30 Nov 2026 11:00:00 +0000</pubDate>
</item>
</channel></rss>
"""


def stored_urls(runtime: Runtime) -> dict[str, tuple[str, str]]:
    with runtime.sessions() as session:
        return {a.title: (a.url, a.summary) for a in session.scalars(select(Article))}


def test_relative_links_resolve_against_the_url_the_feed_came_from(
    runtime: Runtime, feeds: FeedServer
) -> None:
    # Moved: the old address redirects, and links resolve against where the feed is now.
    feeds.static("/blog/feed/", RELATIVE)
    feeds.route("/old/feed/", Redirect("/blog/feed/"))
    with transaction(runtime.sessions) as session:
        feed_id = add_feed(session, feeds.url("/old/feed/"))
    result = poll_feed(runtime.sessions, feed_id)
    assert result.error is None
    assert result.rejections == ()
    stored = stored_urls(runtime)
    assert stored["Relative"][0] == feeds.url("/blog/feed/posts/relative/")
    # Links inside a post resolve against the post's own address.
    assert f'href="{feeds.url("/blog/feed/posts/relative/notes/")}"' in stored["Relative"][1]
    assert stored["Based"][0] == "https://other.example.org/magazine/issue-4/"  # xml:base


def test_content_location_names_the_base(runtime: Runtime, feeds: FeedServer) -> None:
    route = Static(RELATIVE, headers={"Content-Location": "/site/feed.xml"})
    feeds.route("/feed.xml", route)
    with transaction(runtime.sessions) as session:
        feed_id = add_feed(session, feeds.url("/feed.xml"))
    assert poll_feed(runtime.sessions, feed_id).error is None
    assert stored_urls(runtime)["Relative"][0] == feeds.url("/site/posts/relative/")
