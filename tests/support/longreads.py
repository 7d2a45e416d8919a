"""A WordPress-like publisher of long reads in English, Ukrainian and Japanese.

Each language has a feed of ten posts of forty paragraphs, as WordPress writes them:
relative links (`<link>` too), a description ending in "[…]" (absent on some items,
so the excerpt must be made), content:encoded with figures and captions, a srcset, a
tracking pixel, a "The post … appeared first on …" footer, and on one post a table.
Some items announce media:content; some carry an https image in the post; the rest
have none, and their article page (served by the same loopback server) has og:image.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from xml.sax.saxutils import escape

from tests.support.feedserver import FeedServer

LANGUAGES = ("en", "uk", "ja")
POSTS = 10
PARAGRAPHS = 40
CDN = "https://cdn.example.org"

# One paragraph's sentences per language; {n} and {p} number the post and paragraph.
SENTENCES = {
    "en": (
        "Post {n}, paragraph {p}: the grid added 1,200 megawatts of storage this winter. "
        "Operators say the evening peak now arrives later and falls less steeply. "
        "Our brief looks at where batteries help most and where firm capacity is still "
        "needed, with figures from every regional operator."
    ),
    "uk": (
        "Допис {n}, абзац {p}: мережа додала 1 200 мегаватів накопичувачів цієї зими. "
        "Оператори кажуть, що вечірній пік тепер настає пізніше і спадає повільніше. "
        "Наш огляд показує, де батареї допомагають найбільше, а де ще потрібна "
        "стабільна потужність, з даними кожного регіонального оператора."
    ),
    "ja": (
        "記事{n}の第{p}段落：この冬、電力網は1,200メガワットの蓄電池を追加した。"
        "運用者によると、夕方のピークは以前より遅く訪れ、なだらかに下がるようになった。"
        "本報告では、蓄電池が最も役立つ地域と、安定した供給力がなお必要な地域を、"
        "各地域の運用者のデータとともに検討する。"
    ),
}
TITLES = {
    "en": "Long read {n}: what batteries can and cannot do for the evening peak",
    "uk": "Лонгрід {n}: що батареї можуть і чого не можуть зробити для вечірнього піку",
    "ja": "長編{n}：夕方のピークに蓄電池ができること、できないこと",
}
CAPTIONS = {
    "en": "Photo: Kyiv, November 2026",
    "uk": "Фото: Київ, листопад 2026",
    "ja": "写真：キーウ、2026年11月",
}
SITE_NAME = {"en": "Policy Lab", "uk": "Лабораторія політик", "ja": "政策ラボ"}
TABLE_POST = 8  # the post (0-based, with no description) that opens with a table
TABLE_ROWS = (("10:00", "Opening"), ("10:15", "Panel"), ("11:30", "Keynote"))


@dataclass(frozen=True)
class Post:
    """One post as the fixture publishes it, and what a test can expect of it."""

    language: str
    n: int
    path: str  # the article page, relative to the server
    title: str
    has_description: bool
    image_source: str  # "media", "post", or "og"
    image_url: str
    image_alt: str  # "" when the digest must fall back to the title


def posts(language: str) -> list[Post]:
    """The ten posts of ``language``: images from media:content, the post, or og:image."""
    made = []
    for n in range(POSTS):
        source = ("media", "media", "media", "post", "post", "post")[n] if n < 6 else "og"
        image = f"{CDN}/{language}/{source}-{n}.jpg"
        alt = {"media": "", "post": f"Grid control room {n}", "og": f"Substation {n}"}[source]
        made.append(
            Post(
                language=language,
                n=n,
                path=f"/{language}/2026/12/long-read-{n}/",
                title=TITLES[language].format(n=n),
                has_description=n % 3 != 2,
                image_source=source,
                image_url=image,
                image_alt=alt,
            )
        )
    return made


def paragraph(language: str, n: int, p: int) -> str:
    """The text of paragraph ``p`` of post ``n``."""
    return SENTENCES[language].format(n=n, p=p)


def _content(post: Post) -> str:
    """content:encoded of a post: forty paragraphs with links, figures and boilerplate."""
    language, n = post.language, post.n
    parts = []
    if n == TABLE_POST:
        rows = "".join(f"<tr><td>{t}</td><td>{e}</td></tr>" for t, e in TABLE_ROWS)
        head = "<tr><th>Time</th><th>Event</th></tr>"
        parts.append(f"<p>Programme {n}.</p><table>{head}{rows}</table>")
    for p in range(PARAGRAPHS):
        text = paragraph(language, n, p)
        if p == 1:
            text += ' See <a href="/research/grid-brief/">the grid brief</a>.'
        parts.append(f"<p>{text}</p>")
        if p == 2:
            src = post.image_url if post.image_source == "post" else "/wp-content/uploads/chart.png"
            parts.append(
                f'<figure class="wp-block-image"><img src="{src}" alt="{escape(post.image_alt)}" '
                f'srcset="{src} 1x, {src}?w=1600 2x" width="1200" height="800" />'
                f"<figcaption>{CAPTIONS[language]}</figcaption></figure>"
            )
    parts.append('<img src="https://stats.example.org/pixel.gif" width="1" height="1" alt="" />')
    parts.append(
        f'<p>The post <a href="{post.path}">{escape(post.title)}</a> appeared first on '
        f'<a href="/">{SITE_NAME[language]}</a>.</p>'
    )
    return "".join(parts)


def _item(post: Post, published: datetime) -> str:
    """One RSS item, WordPress style."""
    lines = [
        "<item>",
        f"<title>{escape(post.title)}</title>",
        f"<link>{post.path}</link>",  # relative: resolved against the feed's URL
        f'<guid isPermaLink="false">?p={post.language}-{post.n}</guid>',
        f"<pubDate>{format_datetime(published)}</pubDate>",
        "<dc:creator><![CDATA[Olena Marchenko]]></dc:creator>",
        "<category><![CDATA[Long read]]></category>",
    ]
    if post.has_description:
        first = paragraph(post.language, post.n, 0)
        lines.append(f"<description><![CDATA[{first} [&#8230;]]]></description>")
    lines.append(f"<content:encoded><![CDATA[{_content(post)}]]></content:encoded>")
    if post.image_source == "media":
        lines.append(f'<media:content url="{post.image_url}" medium="image" width="1200" />')
    lines.append("</item>")
    return "\n".join(lines)


def feed(language: str, now: datetime) -> bytes:
    """The RSS document of ``language``'s ten posts, the newest first."""
    items = "\n".join(_item(post, now - timedelta(hours=post.n + 1)) for post in posts(language))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"
 xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:media="http://search.yahoo.com/mrss/">
<channel>
<title>{SITE_NAME[language]}</title>
<link>/</link>
<description>Long reads</description>
<language>{language}</language>
<generator>https://wordpress.org/?v=6.7.1</generator>
{items}
</channel>
</rss>
""".encode()


def page(post: Post) -> bytes:
    """The article page: a head with og:image only for posts whose feed item has none."""
    meta = ""
    if post.image_source == "og":
        meta = (
            f'<meta property="og:image" content="{post.image_url}" />'
            f'<meta property="og:image:alt" content="{escape(post.image_alt)}" />'
        )
    return (
        f'<!DOCTYPE html><html lang="{post.language}"><head><meta charset="utf-8">'
        f"<title>{escape(post.title)}</title>{meta}</head><body><p>…</p></body></html>"
    ).encode()


def publish(server: FeedServer, now: datetime) -> dict[str, str]:
    """Serve every feed and article page; return each language's feed URL."""
    urls = {}
    for language in LANGUAGES:
        urls[language] = server.static(f"/{language}/feed/", feed(language, now))
        for post in posts(language):
            server.static(post.path, page(post), content_type="text/html")
    return urls
