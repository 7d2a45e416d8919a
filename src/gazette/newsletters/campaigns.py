"""Campaign tags: UTM parameters on a digest's article links.

They let the publisher's analytics tell the readers who came from the newsletter.

Only article links are tagged (the composer calls :func:`tag_url` where it builds
them): never the unsubscribe, preferences or archive links, which are Gazette's own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class Tagged(Protocol):
    """What tagging reads of a newsletter: its three optional UTM values."""

    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None


def tag_url(url: str, newsletter: Tagged, issue_date: datetime) -> str:
    """``url`` with the newsletter's UTM parameters added; unchanged when it sets none.

    ``{date}`` in the campaign becomes the issue's date (YYYY-MM-DD). A parameter the
    URL already carries is left as the author set it, and only http(s) links are
    tagged; the fragment stays last.
    """
    tags = {
        "utm_source": newsletter.utm_source,
        "utm_medium": newsletter.utm_medium,
        "utm_campaign": (newsletter.utm_campaign or "").replace(
            "{date}", issue_date.strftime("%Y-%m-%d")
        ),
    }
    wanted = [(key, value) for key, value in tags.items() if value]
    if not wanted:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.scheme not in ("http", "https"):
        return url
    present = {key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    added = urlencode([(key, value) for key, value in wanted if key not in present])
    if not added:
        return url
    query = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit(parts._replace(query=query))
