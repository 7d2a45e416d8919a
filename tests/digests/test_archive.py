"""The archive over HTTP: an issue's web version, per language, as the mail links to it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.digests.helpers import ARCHIVED, ATOM, RFC3339, Archive
from tests.support.digests import BASE_URL
from tests.support.http import Browser
from tests.support.messages import HtmlDocument


def test_the_archive_lists_sent_issues_newest_first_with_their_articles(archive: Archive) -> None:
    browser = Browser(archive.server, cookies=False)
    newest, oldest = archive.sent

    listing = browser.get("/archive")
    assert listing.status == 200
    doc = HtmlDocument(listing.text)
    issue_links = [href for href, _text in doc.links if href.startswith("/archive/")]
    assert issue_links == [f"/archive/{newest}", f"/archive/{oldest}"]
    assert f"{ARCHIVED[1].title} and 1 more" in doc.text  # newest article first
    assert ARCHIVED[2].title in doc.text
    assert ARCHIVED[3].title not in doc.text

    page = browser.get(f"/archive/{oldest}")
    assert page.status == 200
    doc = HtmlDocument(page.text)
    assert (ARCHIVED[0].url, ARCHIVED[0].title) in doc.links
    assert (ARCHIVED[1].url, ARCHIVED[1].title) in doc.links
    assert ARCHIVED[2].title not in doc.text
    assert "<beta>" not in page.text
    page = browser.get(f"/archive/{newest}")
    assert page.status == 200
    assert [(ARCHIVED[2].url, ARCHIVED[2].title)] == [
        link for link in HtmlDocument(page.text).links if "blog.example.com" in link[0]
    ]

    feed = browser.get("/archive.xml")
    assert feed.status == 200
    assert feed.headers["Content-Type"].startswith("application/atom+xml")
    root = ET.fromstring(feed.body)  # well-formed XML, or this raises
    assert root.tag == "{http://www.w3.org/2005/Atom}feed"
    entries = root.findall("atom:entry", ATOM)
    assert [e.findtext("atom:id", namespaces=ATOM) for e in entries] == [
        f"{BASE_URL}/archive/{newest}",
        f"{BASE_URL}/archive/{oldest}",
    ]
    assert [e.find("atom:link", ATOM).get("href") for e in entries] == [  # type: ignore[union-attr]
        f"{BASE_URL}/archive/{newest}",
        f"{BASE_URL}/archive/{oldest}",
    ]
    assert entries[1].findtext("atom:summary", namespaces=ATOM) == (
        f"{ARCHIVED[1].title} · {ARCHIVED[0].title}"
    )
    assert entries[0].findtext("atom:summary", namespaces=ATOM) == ARCHIVED[2].title

    for hidden in [*archive.not_published, "no-such-issue"]:
        missing = browser.get(f"/archive/{hidden}")
        assert missing.status == 404, hidden
        assert hidden not in browser.get("/archive").text
        assert hidden not in feed.text


def test_the_archive_feed_has_what_rfc_4287_requires(archive: Archive) -> None:
    feed = Browser(archive.server, cookies=False).get("/archive.xml")
    assert feed.status == 200
    root = ET.fromstring(feed.body)
    for name in ("id", "title", "updated"):
        assert root.findtext(f"atom:{name}", namespaces=ATOM), f"feed without atom:{name}"
    assert RFC3339.fullmatch(root.findtext("atom:updated", namespaces=ATOM) or "")
    entries = root.findall("atom:entry", ATOM)
    assert len(entries) == 2
    for entry in entries:
        for name in ("id", "title", "updated"):
            assert entry.findtext(f"atom:{name}", namespaces=ATOM), f"entry without atom:{name}"
        assert RFC3339.fullmatch(entry.findtext("atom:updated", namespaces=ATOM) or "")
    # RFC 4287 4.1.1: a feed has an author, unless every entry has one.
    feed_authors = root.findall("atom:author/atom:name", ATOM)
    entry_authors = [entry.findall("atom:author/atom:name", ATOM) for entry in entries]
    assert feed_authors or all(entry_authors), "no atom:author on the feed or its entries"
