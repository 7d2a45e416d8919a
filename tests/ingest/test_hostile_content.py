"""Hostile feed content: markup, scripts and oversized fields come out clean or refused."""

from __future__ import annotations

import html
import re
import unicodedata

from gazette.articles.feeds import IngestResult, poll_feed
from gazette.articles.service import ALLOWED_TAGS
from gazette.runtime import Runtime
from tests.ingest.helpers import (
    PLAIN_TEXT,
    PLAIN_TITLE,
    parse_html,
    register,
    stored,
    xss_feed,
    xss_payloads,
)
from tests.support.feedserver import FeedServer


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
                       "<meta", "<base", "<link", "<math"):  # fmt: skip
            assert needle not in lowered, where
        for tag, attributes in parse_html(article.summary):
            assert tag in ALLOWED_TAGS, where
            assert not any(name.startswith("on") for name in attributes), where
            # Issue 15: an image stays when its source is an absolute https URL, inert.
            if tag == "img":
                assert set(attributes) <= {"src", "alt", "width", "height"}, where
                assert attributes["src"].startswith("https://"), where
                continue
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
