"""Featured images from article pages: the og:image a post's own page declares.

Read for feed items that announce no image, on the feed's own site only and a few
pages a poll, so a slow or hostile site costs little.
"""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from gazette.articles.fetch import Fetched, FetchError, fetch_page
from gazette.articles.html import first_image
from gazette.articles.service import ArticleInput, clean_html, item_key
from gazette.store.models import Article

# At most this many article pages are read for their og:image in one poll.
MAX_PAGE_LOOKUPS = 20


class _PageImage(HTMLParser):
    """Reads a page's og:image (or twitter:image) and its alt text from <meta> tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Keep the first value of each image property a <meta> tag gives."""
        if tag != "meta":
            return
        values = {name: value or "" for name, value in attrs}
        key = (values.get("property") or values.get("name") or "").strip().lower()
        if key in ("og:image", "og:image:secure_url", "og:image:alt", "twitter:image"):
            self.found.setdefault(key, values.get("content", "").strip())


def page_image(document: bytes, page_url: str) -> tuple[str, str] | None:
    """The (absolute https URL, alt) of the image a page declares for sharing, if any."""
    finder = _PageImage()
    try:
        finder.feed(document.decode("utf-8", errors="replace"))
        finder.close()
    except AssertionError:  # html.parser gives up on some broken markup
        pass
    found = finder.found
    for key in ("og:image:secure_url", "og:image", "twitter:image"):
        if found.get(key):
            url = urljoin(page_url, found[key])
            if urlsplit(url).scheme == "https":
                return url, found.get("og:image:alt", "")
    return None


def _site(url: str) -> str:
    """A URL's host without "www.", to tell a feed's own pages from other sites'."""
    host = (urlsplit(url).hostname or "").lower()
    return host.removeprefix("www.")


def look_up_page_images(
    session: Session,
    items: list[ArticleInput],
    feed_id: int | None,
    feed_url: str,
    fetcher: Callable[[str], Fetched] = fetch_page,
) -> int:
    """Give items without a featured image their page's og:image; return pages read.

    Only pages on the feed's own site are read, at most MAX_PAGE_LOOKUPS a poll, and
    only for articles never looked up before: the answer (an image or "none") is stored
    on the article, so a page is fetched once. Run outside a write transaction.
    """
    read = 0
    for item in items:
        if item.image_url is not None or read >= MAX_PAGE_LOOKUPS:
            continue
        if any(first_image(clean_html(body, item.url)) for body in (item.content, item.summary)):
            continue  # the post's first (https) image will do
        if _site(item.url) != _site(feed_url):
            continue
        stored = session.scalar(
            select(Article.image_url).where(Article.identity_key == item_key(item, feed_id))
        )
        if stored is not None:
            continue
        read += 1
        try:
            page = fetcher(item.url)
        except FetchError:
            item.image_url = ""
            continue
        found = page_image(page.content or b"", page.url or item.url)
        item.image_url, item.image_alt = found if found else ("", "")
    return read
